//! Cluster IPs and node ports of services: one key per allocated address
//! or port (`/registry/ranges/serviceips/<ip>`,
//! `/registry/ranges/servicenodeports/<port>`), created in the same
//! transaction as the service, so two services never get the same one and
//! a failed create leaks none.

use std::net::Ipv4Addr;

use herd_client::Client;
use herd_client::proto::etcdserverpb::{Compare, RequestOp};

use super::txn;
use crate::api::{ApiConfig, ApiError, ApiObject, Cause, Service};

pub const SERVICE_IPS: &str = "/registry/ranges/serviceips/";
pub const NODE_PORTS: &str = "/registry/ranges/servicenodeports/";

fn uses_node_ports(svc: &Service) -> bool {
    matches!(svc.spec.kind.as_str(), "NodePort" | "LoadBalancer")
}

fn owner(svc: &Service) -> Vec<u8> {
    format!("{}/{}", svc.metadata.namespace, svc.metadata.name).into_bytes()
}

fn invalid(svc: &Service, cause: Cause) -> ApiError {
    ApiError::invalid(Service::INFO.what(), &svc.metadata.name, vec![cause])
}

/// A free key among `candidates()` under `prefix` (random tries, then
/// one listing).
async fn pick<I: std::fmt::Display>(
    client: &Client,
    prefix: &str,
    mut random: impl FnMut() -> I,
    all: impl Iterator<Item = I>,
) -> Result<Option<String>, ApiError> {
    for _ in 0..16 {
        let key = format!("{prefix}{}", random());
        if txn::get(client, &key).await?.0.is_none() {
            return Ok(Some(key));
        }
    }
    let (taken, _) = txn::range(client, prefix).await?;
    let taken: std::collections::HashSet<Vec<u8>> = taken.into_iter().map(|kv| kv.key).collect();
    Ok(all
        .map(|i| format!("{prefix}{i}"))
        .find(|k| !taken.contains(k.as_bytes())))
}

/// Allocates what `svc` needs (keeping what `old` had) and returns the
/// compares and writes that claim it and release what is no longer used.
pub async fn service(
    client: &Client,
    config: &ApiConfig,
    old: Option<&Service>,
    svc: &mut Service,
) -> Result<(Vec<Compare>, Vec<RequestOp>), ApiError> {
    let (mut compares, mut ops) = (Vec::new(), Vec::new());
    let (net, bits) = config.service_cidr;
    let size = 1u64 << (32 - u32::from(bits));
    match old {
        Some(o) => {
            if svc.spec.cluster_ip.is_empty() {
                svc.spec.cluster_ip = o.spec.cluster_ip.clone();
            }
        }
        None if svc.spec.cluster_ip == "None" => {}
        None => {
            let key = if svc.spec.cluster_ip.is_empty() {
                let base = u32::from(net);
                // Skip the network address and the first host (kept for
                // the API's own service, as Kubernetes does).
                let host = |i: u64| Ipv4Addr::from(base + i as u32);
                let picked = pick(
                    client,
                    SERVICE_IPS,
                    || host(rand::random_range(2..size.saturating_sub(1).max(3))),
                    (2..size.saturating_sub(1)).map(host),
                )
                .await?;
                let Some(key) = picked else {
                    return Err(ApiError::internal(format!(
                        "failed to allocate a serviceIP: the range {net}/{bits} is full"
                    )));
                };
                svc.spec.cluster_ip = key[SERVICE_IPS.len()..].to_owned();
                key
            } else {
                let key = format!("{SERVICE_IPS}{}", svc.spec.cluster_ip);
                if txn::get(client, &key).await?.0.is_some() {
                    return Err(invalid(
                        svc,
                        Cause::invalid(
                            "spec.clusterIP",
                            &svc.spec.cluster_ip,
                            "provided IP is already allocated",
                        ),
                    ));
                }
                key
            };
            compares.push(txn::absent(&key));
            ops.push(txn::put(&key, owner(svc), 0));
        }
    }
    let old_ports: Vec<i32> = old
        .filter(|o| uses_node_ports(o))
        .map(|o| o.spec.ports.iter().filter_map(|p| p.node_port).collect())
        .unwrap_or_default();
    let mut kept = Vec::new();
    if uses_node_ports(svc) {
        let range = config.node_ports.clone();
        for i in 0..svc.spec.ports.len() {
            let p = &svc.spec.ports[i];
            let previous = old
                .and_then(|o| {
                    o.spec
                        .ports
                        .iter()
                        .find(|q| q.port == p.port && q.protocol == p.protocol)
                })
                .and_then(|q| q.node_port);
            let wanted = p.node_port.filter(|n| *n != 0).or(previous);
            let port = match wanted {
                Some(n) if old_ports.contains(&n) => n,
                Some(n) => {
                    let key = format!("{NODE_PORTS}{n}");
                    if txn::get(client, &key).await?.0.is_some() {
                        return Err(invalid(
                            svc,
                            Cause::invalid(
                                format!("spec.ports[{i}].nodePort"),
                                n,
                                "provided port is already allocated",
                            ),
                        ));
                    }
                    compares.push(txn::absent(&key));
                    ops.push(txn::put(&key, owner(svc), 0));
                    n
                }
                None => {
                    let (lo, hi) = (*range.start(), *range.end());
                    let Some(key) =
                        pick(client, NODE_PORTS, || rand::random_range(lo..=hi), lo..=hi).await?
                    else {
                        return Err(ApiError::internal(
                            "failed to allocate a nodePort: the range is full",
                        ));
                    };
                    compares.push(txn::absent(&key));
                    ops.push(txn::put(&key, owner(svc), 0));
                    key[NODE_PORTS.len()..].parse().expect("a port number")
                }
            };
            svc.spec.ports[i].node_port = Some(port);
            kept.push(port);
        }
    }
    for p in old_ports {
        if !kept.contains(&p) {
            ops.push(txn::delete(&format!("{NODE_PORTS}{p}")));
        }
    }
    Ok((compares, ops))
}

/// The writes that free what `svc` holds.
pub fn release(svc: &Service) -> Vec<RequestOp> {
    let mut ops = Vec::new();
    if !svc.spec.cluster_ip.is_empty() && svc.spec.cluster_ip != "None" {
        ops.push(txn::delete(&format!(
            "{SERVICE_IPS}{}",
            svc.spec.cluster_ip
        )));
    }
    if uses_node_ports(svc) {
        for p in svc.spec.ports.iter().filter_map(|p| p.node_port) {
            ops.push(txn::delete(&format!("{NODE_PORTS}{p}")));
        }
    }
    ops
}
