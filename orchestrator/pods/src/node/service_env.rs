//! Kubernetes' service environment: for every service of the pod's
//! namespace that exists when a container starts, `{NAME}_SERVICE_HOST`,
//! `{NAME}_SERVICE_PORT` (and `_SERVICE_PORT_{PORTNAME}`), and the
//! docker-link forms `{NAME}_PORT`, `{NAME}_PORT_{port}_{PROTO}` with its
//! `_PROTO`, `_PORT` and `_ADDR` — what the seed's 2015 apps read to find
//! their peers before cluster DNS.

use crate::api::Service;

/// `redis-master` → `REDIS_MASTER`.
fn env_name(service: &str) -> String {
    service.to_ascii_uppercase().replace('-', "_")
}

/// The variables `services` give a container (headless and IP-less
/// services give none), sorted by service name so a restart sees them in
/// the same order.
pub fn service_env(services: &[Service]) -> Vec<(String, String)> {
    let mut services: Vec<&Service> = services
        .iter()
        .filter(|s| {
            let ip = &s.spec.cluster_ip;
            !ip.is_empty() && ip != "None" && !s.spec.ports.is_empty()
        })
        .collect();
    services.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut env = Vec::new();
    for s in services {
        let name = env_name(&s.metadata.name);
        let ip = &s.spec.cluster_ip;
        let first = &s.spec.ports[0];
        env.push((format!("{name}_SERVICE_HOST"), ip.clone()));
        env.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for p in &s.spec.ports {
            if !p.name.is_empty() {
                env.push((
                    format!("{name}_SERVICE_PORT_{}", env_name(&p.name)),
                    p.port.to_string(),
                ));
            }
        }
        let proto_of = |p: &crate::api::service::ServicePort| {
            if p.protocol.is_empty() {
                "tcp".to_owned()
            } else {
                p.protocol.to_ascii_lowercase()
            }
        };
        env.push((
            format!("{name}_PORT"),
            format!("{}://{ip}:{}", proto_of(first), first.port),
        ));
        for p in &s.spec.ports {
            let proto = proto_of(p);
            let prefix = format!("{name}_PORT_{}_{}", p.port, proto.to_ascii_uppercase());
            env.push((prefix.clone(), format!("{proto}://{ip}:{}", p.port)));
            env.push((format!("{prefix}_PROTO"), proto.clone()));
            env.push((format!("{prefix}_PORT"), p.port.to_string()));
            env.push((format!("{prefix}_ADDR"), ip.clone()));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::service::ServicePort;

    fn service(name: &str, ip: &str, ports: &[(&str, i32, &str)]) -> Service {
        let mut s = Service::default();
        s.metadata.name = name.into();
        s.spec.cluster_ip = ip.into();
        s.spec.ports = ports
            .iter()
            .map(|(n, p, proto)| ServicePort {
                name: (*n).into(),
                port: *p,
                protocol: (*proto).into(),
                ..Default::default()
            })
            .collect();
        s
    }

    #[test]
    fn variables_follow_kubernetes_names() {
        let env = service_env(&[service("redis-master", "10.0.0.11", &[("", 6379, "TCP")])]);
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{k} missing from {env:?}"))
        };
        assert_eq!(get("REDIS_MASTER_SERVICE_HOST"), "10.0.0.11");
        assert_eq!(get("REDIS_MASTER_SERVICE_PORT"), "6379");
        assert_eq!(get("REDIS_MASTER_PORT"), "tcp://10.0.0.11:6379");
        assert_eq!(get("REDIS_MASTER_PORT_6379_TCP"), "tcp://10.0.0.11:6379");
        assert_eq!(get("REDIS_MASTER_PORT_6379_TCP_PROTO"), "tcp");
        assert_eq!(get("REDIS_MASTER_PORT_6379_TCP_PORT"), "6379");
        assert_eq!(get("REDIS_MASTER_PORT_6379_TCP_ADDR"), "10.0.0.11");
    }

    #[test]
    fn named_ports_headless_and_order() {
        let env = service_env(&[
            service("web", "10.0.0.9", &[("http", 80, ""), ("dns", 53, "UDP")]),
            service("headless", "None", &[("", 80, "")]),
            service("a", "10.0.0.2", &[("", 1, "")]),
        ]);
        assert!(env.iter().all(|(k, _)| !k.starts_with("HEADLESS")));
        assert_eq!(env[0].0, "A_SERVICE_HOST");
        assert!(env.contains(&("WEB_SERVICE_PORT_HTTP".into(), "80".into())));
        assert!(env.contains(&("WEB_PORT_53_UDP".into(), "udp://10.0.0.9:53".into())));
        assert!(env.contains(&("WEB_PORT".into(), "tcp://10.0.0.9:80".into())));
    }
}
