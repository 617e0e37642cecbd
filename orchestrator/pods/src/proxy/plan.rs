//! What the proxy must do for one service, parsed at the edge from its
//! Service and Endpoints: the virtual IP, each port with its node port and
//! the ready endpoints behind it, the affinity. Everything that ends up in
//! nft's input is a parsed number, address or a name checked to hold only
//! the characters Kubernetes allows, so nothing a store value says can
//! change the meaning of the rules around it.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::api::service::{DEFAULT_AFFINITY_TIMEOUT, MAX_AFFINITY_TIMEOUT};
use crate::api::{Endpoints, Service};

/// A transport protocol a service port may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    /// Kubernetes' spelling (empty: TCP).
    pub fn parse(s: &str) -> Option<Proto> {
        match s {
            "" | "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }

    /// nft's spelling.
    pub fn nft(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// One port of a service and where it leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPlan {
    /// The port's name (may be empty for a single-port service).
    pub name: String,
    pub proto: Proto,
    pub port: u16,
    pub node_port: Option<u16>,
    /// The ready endpoints, sorted, no duplicates.
    pub endpoints: Vec<SocketAddrV4>,
}

/// Everything the rules of one service need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePlan {
    /// `namespace/name`.
    pub id: String,
    pub vip: Ipv4Addr,
    pub ports: Vec<PortPlan>,
    /// ClientIP affinity's timeout in seconds, if the service has it.
    pub affinity: Option<u32>,
}

/// Why a service (or its endpoints) cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("service {id}: the name is not a Kubernetes namespace/name")]
    Name { id: String },
    #[error("service {id}: spec.clusterIP {value:?} is not an IPv4 address")]
    ClusterIp { id: String, value: String },
    #[error("service {id}: spec.clusterIP {ip} is outside the service range {range}")]
    OutOfRange {
        id: String,
        ip: Ipv4Addr,
        range: String,
    },
    #[error("service {id}: {field} {value:?} is invalid: {why}")]
    Field {
        id: String,
        field: String,
        value: String,
        why: &'static str,
    },
    #[error("service {id}: {what} is already used by service {other} (the first by name keeps it)")]
    Conflict {
        id: String,
        what: String,
        other: String,
    },
    #[error("endpoints {id}: {field} {value:?} is invalid: {why}")]
    Endpoints {
        id: String,
        field: String,
        value: String,
        why: &'static str,
    },
}

/// A planned service, or `None` for one without a virtual IP (headless).
pub type Planned = Option<ServicePlan>;

/// Whether `s` holds only what a DNS-1123 label or subdomain may (`a-z`,
/// `0-9`, `-`, `.`), starts and ends alphanumeric, and fits.
fn k8s_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// Whether `id` is `namespace/name` as the API would have written it.
pub fn valid_id(id: &str) -> bool {
    id.split_once('/')
        .is_some_and(|(ns, name)| k8s_name(ns, 63) && k8s_name(name, 63) && !ns.contains('.'))
}

/// A port number in 1–65535.
fn port_number(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|p| *p != 0)
}

/// The plan of service `id` (`namespace/name`) with its Endpoints
/// (`None`: none yet), its cluster IP required inside `range`.
/// A broken Endpoints object is an error of its own: the caller may still
/// render the service without endpoints (so it rejects rather than
/// black-holes) by passing `None`.
pub fn plan(
    id: &str,
    svc: &Service,
    endpoints: Option<&Endpoints>,
    range: (Ipv4Addr, u8),
) -> Result<Planned, PlanError> {
    if !valid_id(id) {
        return Err(PlanError::Name { id: id.to_owned() });
    }
    let field = |field: String, value: String, why| PlanError::Field {
        id: id.to_owned(),
        field,
        value,
        why,
    };
    let ip = svc.spec.cluster_ip.as_str();
    if ip.is_empty() || ip == "None" {
        return Ok(None);
    }
    let vip: Ipv4Addr = ip.parse().map_err(|_| PlanError::ClusterIp {
        id: id.to_owned(),
        value: ip.to_owned(),
    })?;
    if !crate::api::validation::in_cidr(vip, range) {
        return Err(PlanError::OutOfRange {
            id: id.to_owned(),
            ip: vip,
            range: format!("{}/{}", range.0, range.1),
        });
    }
    let uses_node_ports = matches!(svc.spec.kind.as_str(), "NodePort" | "LoadBalancer");
    let mut ports = Vec::new();
    for (i, p) in svc.spec.ports.iter().enumerate() {
        let path = |f: &str| format!("spec.ports[{i}].{f}");
        if !p.name.is_empty() && !k8s_name(&p.name, 63) {
            return Err(field(path("name"), p.name.clone(), "not a DNS-1123 label"));
        }
        let proto = Proto::parse(&p.protocol).ok_or_else(|| {
            field(
                path("protocol"),
                p.protocol.clone(),
                "must be TCP, UDP or SCTP",
            )
        })?;
        let port = port_number(p.port)
            .ok_or_else(|| field(path("port"), p.port.to_string(), "must be 1–65535"))?;
        let node_port = match (uses_node_ports, p.node_port) {
            (true, Some(n)) if n != 0 => Some(
                port_number(n)
                    .ok_or_else(|| field(path("nodePort"), n.to_string(), "must be 1–65535"))?,
            ),
            _ => None,
        };
        if ports
            .iter()
            .any(|q: &PortPlan| q.port == port && q.proto == proto)
        {
            return Err(field(
                path("port"),
                p.port.to_string(),
                "listed twice for one protocol",
            ));
        }
        ports.push(PortPlan {
            name: p.name.clone(),
            proto,
            port,
            node_port,
            endpoints: Vec::new(),
        });
    }
    let affinity = match svc.spec.session_affinity.as_str() {
        "" | "None" => None,
        "ClientIP" => {
            let t = svc
                .spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT);
            if !(1..=MAX_AFFINITY_TIMEOUT).contains(&t) {
                return Err(field(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds".into(),
                    t.to_string(),
                    "must be 1–86400",
                ));
            }
            Some(t as u32)
        }
        other => {
            return Err(field(
                "spec.sessionAffinity".into(),
                other.to_owned(),
                "must be None or ClientIP",
            ));
        }
    };
    let mut plan = ServicePlan {
        id: id.to_owned(),
        vip,
        ports,
        affinity,
    };
    if let Some(eps) = endpoints {
        fill_endpoints(&mut plan, eps)?;
    }
    Ok(Some(plan))
}

/// Adds the ready addresses of `eps` to the ports of `plan` they serve (a
/// service port matches an endpoint port of the same name and protocol,
/// as in Kubernetes).
fn fill_endpoints(plan: &mut ServicePlan, eps: &Endpoints) -> Result<(), PlanError> {
    let bad = |field: String, value: String, why| PlanError::Endpoints {
        id: plan.id.clone(),
        field,
        value,
        why,
    };
    for (i, subset) in eps.subsets.iter().enumerate() {
        let mut ips = Vec::new();
        for (j, a) in subset.addresses.iter().enumerate() {
            let ip: Ipv4Addr = a.ip.parse().map_err(|_| {
                bad(
                    format!("subsets[{i}].addresses[{j}].ip"),
                    a.ip.clone(),
                    "not an IPv4 address",
                )
            })?;
            ips.push(ip);
        }
        for (j, ep) in subset.ports.iter().enumerate() {
            let proto = Proto::parse(&ep.protocol).ok_or_else(|| {
                bad(
                    format!("subsets[{i}].ports[{j}].protocol"),
                    ep.protocol.clone(),
                    "must be TCP, UDP or SCTP",
                )
            })?;
            let port = port_number(ep.port).ok_or_else(|| {
                bad(
                    format!("subsets[{i}].ports[{j}].port"),
                    ep.port.to_string(),
                    "must be 1–65535",
                )
            })?;
            for sp in plan
                .ports
                .iter_mut()
                .filter(|sp| sp.name == ep.name && sp.proto == proto)
            {
                sp.endpoints
                    .extend(ips.iter().map(|ip| SocketAddrV4::new(*ip, port)));
            }
        }
    }
    for p in &mut plan.ports {
        p.endpoints.sort();
        p.endpoints.dedup();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANGE: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 0, 0, 0), 16);

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn eps(v: serde_json::Value) -> Endpoints {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ports_match_endpoints_by_name_and_protocol() {
        let s = svc(
            serde_json::json!({"spec": {"clusterIP": "10.0.0.7", "type": "NodePort",
            "ports": [{"name": "http", "port": 80, "nodePort": 30080},
                      {"name": "dns", "port": 53, "protocol": "UDP"}],
            "sessionAffinity": "ClientIP"}}),
        );
        let e = eps(serde_json::json!({"subsets": [
            {"addresses": [{"ip": "10.244.1.3"}, {"ip": "10.244.1.2"}],
             "notReadyAddresses": [{"ip": "10.244.1.9"}],
             "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}]},
            {"addresses": [{"ip": "10.244.2.2"}], "ports": [{"name": "http", "port": 8081}]}]}));
        let p = plan("default/web", &s, Some(&e), RANGE).unwrap().unwrap();
        assert_eq!(p.vip, Ipv4Addr::new(10, 0, 0, 7));
        assert_eq!(p.affinity, Some(10800));
        let http = &p.ports[0];
        assert_eq!(http.node_port, Some(30080));
        let want: Vec<SocketAddrV4> = ["10.244.1.2:8080", "10.244.1.3:8080", "10.244.2.2:8081"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(http.endpoints, want, "only ready addresses, sorted");
        assert_eq!(p.ports[1].proto, Proto::Udp);
        assert_eq!(
            p.ports[1].endpoints,
            vec![
                "10.244.1.2:5353".parse().unwrap(),
                "10.244.1.3:5353".parse().unwrap()
            ]
        );
    }

    #[test]
    fn headless_services_have_no_plan_and_bad_input_names_its_field() {
        let headless =
            svc(serde_json::json!({"spec": {"clusterIP": "None", "ports": [{"port": 80}]}}));
        assert_eq!(plan("default/h", &headless, None, RANGE), Ok(None));
        let outside =
            svc(serde_json::json!({"spec": {"clusterIP": "192.168.0.1", "ports": [{"port": 80}]}}));
        assert!(matches!(
            plan("default/o", &outside, None, RANGE),
            Err(PlanError::OutOfRange { .. })
        ));
        let bad_port =
            svc(serde_json::json!({"spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 70000}]}}));
        let err = plan("default/p", &bad_port, None, RANGE).unwrap_err();
        assert!(err.to_string().contains("spec.ports[0].port"), "{err}");
        let ok =
            svc(serde_json::json!({"spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}}));
        // Names that could smuggle nft syntax are refused.
        assert!(matches!(
            plan("default/x;flush ruleset", &ok, None, RANGE),
            Err(PlanError::Name { .. })
        ));
        assert!(matches!(
            plan("default/x y", &ok, None, RANGE),
            Err(PlanError::Name { .. })
        ));
        let bad_ep = eps(
            serde_json::json!({"subsets": [{"addresses": [{"ip": "fe80::1"}], "ports": [{"port": 80}]}]}),
        );
        let err = plan("default/ok", &ok, Some(&bad_ep), RANGE).unwrap_err();
        assert!(
            err.to_string().contains("subsets[0].addresses[0].ip"),
            "{err}"
        );
        let affinity = svc(
            serde_json::json!({"spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}],
            "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}}}),
        );
        assert!(plan("default/a", &affinity, None, RANGE).is_err());
    }
}
