//! Service specs: type, ports, cluster IP in the service range, session
//! affinity.

use std::collections::HashSet;

use super::ports::{int_or_port_name, port_number, protocol};
use super::{dns1123_label, labels};
use crate::api::kind::ApiConfig;
use crate::api::service::{MAX_AFFINITY_TIMEOUT, ServiceSpec};
use crate::api::status::Cause;

/// Whether `ip` is inside the service range.
pub fn in_cidr(ip: std::net::Ipv4Addr, (net, bits): (std::net::Ipv4Addr, u8)) -> bool {
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(bits))
    };
    u32::from(ip) & mask == u32::from(net) & mask
}

/// Errors of a service spec.
pub fn service_spec(spec: &ServiceSpec, config: &ApiConfig) -> Vec<Cause> {
    let mut errs = Vec::new();
    let kind = if spec.kind.is_empty() {
        "ClusterIP"
    } else {
        spec.kind.as_str()
    };
    if !matches!(kind, "ClusterIP" | "NodePort" | "LoadBalancer") {
        errs.push(Cause::not_supported(
            "spec.type",
            kind,
            &["ClusterIP", "NodePort", "LoadBalancer"],
        ));
    }
    let headless = spec.cluster_ip == "None";
    if spec.ports.is_empty() && !headless {
        errs.push(Cause::required("spec.ports"));
    }
    let mut names = HashSet::new();
    let mut seen = HashSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        if spec.ports.len() > 1 && p.name.is_empty() {
            errs.push(Cause::required(format!("{pp}.name")));
        }
        if !p.name.is_empty() {
            if let Some(why) = dns1123_label(&p.name) {
                errs.push(Cause::invalid(format!("{pp}.name"), &p.name, &why));
            } else if !names.insert(p.name.as_str()) {
                errs.push(Cause::duplicate(format!("{pp}.name"), &p.name));
            }
        }
        port_number(&format!("{pp}.port"), p.port, &mut errs);
        protocol(&format!("{pp}.protocol"), &p.protocol, &mut errs);
        let proto = if p.protocol.is_empty() {
            "TCP"
        } else {
            p.protocol.as_str()
        };
        if !seen.insert((p.port, proto.to_owned())) {
            errs.push(Cause::duplicate(
                pp.to_string(),
                &format!("{}/{proto}", p.port),
            ));
        }
        if let Some(t) = &p.target_port {
            int_or_port_name(&format!("{pp}.targetPort"), t, &mut errs);
        }
        if let Some(np) = p.node_port
            && np != 0
        {
            if kind == "ClusterIP" {
                errs.push(Cause::forbidden(
                    format!("{pp}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else if !config.node_ports.contains(&np) {
                errs.push(Cause::invalid(
                    format!("{pp}.nodePort"),
                    np,
                    &format!(
                        "provided port is not in the valid range. The range of valid ports is {}-{}",
                        config.node_ports.start(),
                        config.node_ports.end()
                    ),
                ));
            }
        }
    }
    if !spec.cluster_ip.is_empty() && !headless {
        match spec.cluster_ip.parse::<std::net::Ipv4Addr>() {
            Err(_) => errs.push(Cause::invalid(
                "spec.clusterIP",
                &spec.cluster_ip,
                "must be empty, 'None', or a valid IP address",
            )),
            Ok(ip) if !in_cidr(ip, config.service_cidr) => errs.push(Cause::invalid(
                "spec.clusterIP",
                &spec.cluster_ip,
                &format!(
                    "provided IP is not in the valid range. The range of valid IPs is {}/{}",
                    config.service_cidr.0, config.service_cidr.1
                ),
            )),
            Ok(_) => {}
        }
    }
    if headless && kind != "ClusterIP" {
        errs.push(Cause::invalid(
            "spec.clusterIP",
            "None",
            "may not be set to 'None' for LoadBalancer or NodePort services",
        ));
    }
    if !spec.session_affinity.is_empty()
        && !matches!(spec.session_affinity.as_str(), "None" | "ClientIP")
    {
        errs.push(Cause::not_supported(
            "spec.sessionAffinity",
            &spec.session_affinity,
            &["ClientIP", "None"],
        ));
    }
    let timeout = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds);
    if let Some(t) = timeout {
        if spec.session_affinity != "ClientIP" {
            errs.push(Cause::invalid(
                "spec.sessionAffinityConfig",
                t,
                "must not be set when `sessionAffinity` is None",
            ));
        } else if !(1..=MAX_AFFINITY_TIMEOUT).contains(&t) {
            errs.push(Cause::invalid(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                t,
                "must be greater than 0 and less than 86400",
            ));
        }
    }
    for (i, ip) in spec.external_ips.iter().enumerate() {
        if ip.parse::<std::net::IpAddr>().is_err() {
            errs.push(Cause::invalid(
                format!("spec.externalIPs[{i}]"),
                ip,
                "must be a valid IP address",
            ));
        }
    }
    errs.extend(labels("spec.selector", &spec.selector));
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::service::{ClientIpConfig, ServicePort, SessionAffinityConfig};

    #[test]
    fn affinity_timeouts_need_client_ip_and_a_range() {
        let config = ApiConfig::default();
        let with = |affinity: &str, t: i32| ServiceSpec {
            ports: vec![ServicePort {
                port: 80,
                ..Default::default()
            }],
            session_affinity: affinity.into(),
            session_affinity_config: Some(SessionAffinityConfig {
                client_ip: Some(ClientIpConfig {
                    timeout_seconds: Some(t),
                }),
            }),
            ..Default::default()
        };
        assert!(service_spec(&with("ClientIP", 600), &config).is_empty());
        let errs = service_spec(&with("ClientIP", 0), &config);
        assert_eq!(
            errs[0].field,
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds"
        );
        let errs = service_spec(&with("None", 600), &config);
        assert_eq!(errs[0].field, "spec.sessionAffinityConfig");
    }

    #[test]
    fn cluster_ips_must_be_in_the_range() {
        let config = ApiConfig::default();
        let mut spec = ServiceSpec {
            ports: vec![ServicePort {
                port: 80,
                ..Default::default()
            }],
            cluster_ip: "10.0.3.4".into(),
            ..Default::default()
        };
        assert!(service_spec(&spec, &config).is_empty());
        spec.cluster_ip = "192.168.1.1".into();
        let errs = service_spec(&spec, &config);
        assert_eq!(errs[0].field, "spec.clusterIP");
        assert!(
            errs[0].message.contains("not in the valid range"),
            "{errs:?}"
        );
    }
}
