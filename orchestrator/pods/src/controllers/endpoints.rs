//! The endpoints controller: for each service with a selector, an
//! Endpoints object of the same name listing the pods it selects — ready
//! ones as `addresses`, the others as `notReadyAddresses` — with the
//! service's ports resolved against each pod (a named `targetPort` is
//! looked up in the pod's container ports), grouped by port set as
//! Kubernetes does.

use std::collections::BTreeMap;
use std::sync::Arc;

use herd_client::kit::{Action, Cache, Controller, Request, Scope};
use tokio_util::sync::CancellationToken;

use super::Elected;
use crate::api::cluster::ObjectReference;
use crate::api::meta::{IntOrString, map_selects};
use crate::api::service::{EndpointAddress, EndpointPort, EndpointSubset};
use crate::api::{ApiError, Endpoints, ObjectMeta, Pod, Service};
use crate::registry::{DeleteOptions, Part, from_cache};

struct Ctx {
    e: Elected,
    pods: Cache<Pod>,
    endpoints: Cache<Endpoints>,
}

fn services_selecting(pod: &Pod, services: &Cache<Service>) -> Vec<String> {
    services
        .list()
        .into_iter()
        .filter(|s| {
            s.value.metadata.namespace == pod.metadata.namespace
                && map_selects(&s.value.spec.selector, &pod.metadata.labels)
        })
        .map(|s| s.name)
        .collect()
}

pub async fn run(e: Elected, cancel: CancellationToken) {
    let mut controller = Controller::<Service>::new("pods-endpoints", e.client.clone(), Scope::All);
    let services = controller.cache();
    let pods = controller.watches::<Pod>(Scope::All, move |before, after| {
        let mut names: Vec<String> = [before, after]
            .into_iter()
            .flatten()
            .flat_map(|p| services_selecting(&p.value, &services))
            .collect();
        names.sort();
        names.dedup();
        names
    });
    // An Endpoints object changed by hand is put back.
    let endpoints = controller.watches::<Endpoints>(Scope::All, |before, after| {
        [before, after]
            .into_iter()
            .flatten()
            .map(|o| o.name.clone())
            .take(1)
            .collect()
    });
    let ctx = Arc::new(Ctx { e, pods, endpoints });
    controller.run(ctx, reconcile, cancel).await;
}

/// The port on `pod` that `target` names, if it has it.
fn resolve(pod: &Pod, target: &IntOrString, protocol: &str) -> Option<i32> {
    match target {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(name) => pod
            .spec
            .containers
            .iter()
            .flat_map(|c| &c.ports)
            .find(|p| p.name == *name && (p.protocol.is_empty() || p.protocol == protocol))
            .map(|p| p.container_port),
    }
}

/// The subsets of `service` given the pods of its namespace.
pub fn subsets(service: &Service, pods: &[Pod]) -> Vec<EndpointSubset> {
    let mut groups: BTreeMap<Vec<EndpointPort>, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    for pod in pods {
        let ip = pod.status.as_ref().map_or("", |s| s.pod_ip.as_str());
        if ip.is_empty()
            || pod.metadata.namespace != service.metadata.namespace
            || !map_selects(&service.spec.selector, &pod.metadata.labels)
            || !pod.is_active()
        {
            continue;
        }
        let mut ports: Vec<EndpointPort> = service
            .spec
            .ports
            .iter()
            .filter_map(|sp| {
                let target = sp.target_port.clone().unwrap_or(IntOrString::Int(sp.port));
                Some(EndpointPort {
                    name: sp.name.clone(),
                    port: resolve(pod, &target, &sp.protocol)?,
                    protocol: sp.protocol.clone(),
                })
            })
            .collect();
        ports.sort();
        let address = EndpointAddress {
            ip: ip.to_owned(),
            hostname: String::new(),
            node_name: pod.spec.node_name.clone(),
            target_ref: Some(ObjectReference {
                kind: "Pod".into(),
                namespace: pod.metadata.namespace.clone(),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            }),
        };
        let group = groups.entry(ports).or_default();
        if pod.is_ready() {
            group.0.push(address);
        } else {
            group.1.push(address);
        }
    }
    groups
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            ready.sort();
            not_ready.sort();
            EndpointSubset {
                addresses: ready,
                not_ready_addresses: not_ready,
                ports,
            }
        })
        .collect()
}

async fn reconcile(ctx: Arc<Ctx>, req: Request<Service>) -> Result<Action, ApiError> {
    let registry = &ctx.e.registry;
    let (ns, name) = req.name.split_once('/').unwrap_or(("default", &req.name));
    let existing = ctx.endpoints.get(&req.name).map(|o| from_cache(&o));
    let Some(object) = req.object else {
        if existing.is_some() {
            match registry
                .delete::<Endpoints>(ns, name, &DeleteOptions::default())
                .await
            {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        return Ok(Action::AwaitChange);
    };
    let service = from_cache(&object);
    if service.spec.selector.is_empty() {
        // Endpoints of a service without a selector are kept by hand.
        return Ok(Action::AwaitChange);
    }
    let prefix = format!("{ns}/");
    let pods: Vec<Pod> = ctx
        .pods
        .list()
        .into_iter()
        .filter(|o| o.name.starts_with(&prefix))
        .map(|o| o.value)
        .collect();
    let desired = Endpoints {
        metadata: ObjectMeta {
            name: name.to_owned(),
            namespace: ns.to_owned(),
            labels: service.metadata.labels.clone(),
            ..Default::default()
        },
        subsets: subsets(&service, &pods),
        ..Default::default()
    };
    match existing {
        None => match registry.create(desired, false).await {
            Err(e) if e.is_already_exists() => Err(e),
            other => other.map(|_| Action::AwaitChange),
        },
        Some(current)
            if current.subsets == desired.subsets
                && current.metadata.labels == desired.metadata.labels =>
        {
            Ok(Action::AwaitChange)
        }
        Some(mut current) => {
            current.subsets = desired.subsets;
            current.metadata.labels = desired.metadata.labels;
            registry.update(current, Part::Main).await?;
            Ok(Action::AwaitChange)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, port: i32) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "db"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x",
                "ports": [{"name": port_name, "containerPort": port}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    #[test]
    fn ready_and_unready_pods_grouped_by_resolved_ports() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"selector": {"app": "db"}, "ports": [{"port": 5432, "targetPort": "pg", "protocol": "TCP"}]}
        }))
        .unwrap();
        let pods = vec![
            pod("a", "10.1.0.2", true, "pg", 5432),
            pod("b", "10.1.0.3", false, "pg", 5432),
            pod("c", "10.1.0.4", true, "pg", 6432),
            pod("d", "", true, "pg", 5432),
        ];
        let s = subsets(&svc, &pods);
        assert_eq!(s.len(), 2, "{s:?}");
        let first = s.iter().find(|x| x.ports[0].port == 5432).unwrap();
        assert_eq!(first.addresses[0].ip, "10.1.0.2");
        assert_eq!(first.not_ready_addresses[0].ip, "10.1.0.3");
        let second = s.iter().find(|x| x.ports[0].port == 6432).unwrap();
        assert_eq!(second.addresses[0].ip, "10.1.0.4");
    }
}
