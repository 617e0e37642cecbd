//! Service (cluster IP, ports, session affinity defaults) and Endpoints.

use herd_client::keys::Prefix;

use super::{AGE, NAME, col};
use crate::api::kind::{ApiConfig, ApiObject, KindInfo, kind_basics, meta_methods};
use crate::api::meta::IntOrString;
use crate::api::printers;
use crate::api::service::{DEFAULT_AFFINITY_TIMEOUT, Endpoints, Service, ServiceStatus};
use crate::api::status::Cause;
use crate::api::validation as v;

impl ApiObject for Service {
    const INFO: &'static KindInfo = &KindInfo {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        short_names: &["svc"],
        namespaced: true,
        prefix: Prefix::new("/registry/services/specs/"),
        status: true,
        scale: false,
        generation: false,
        categories: &["all"],
        fields: &["spec.clusterIP", "spec.type"],
        columns: &[
            NAME,
            col("Type", "string", 0, "The type of the service."),
            col("Cluster-IP", "string", 0, "The IP address of the service."),
            col(
                "External-IP",
                "string",
                0,
                "The external IPs of the service.",
            ),
            col("Port(s)", "string", 0, "The ports of the service."),
            AGE,
            col(
                "Selector",
                "string",
                1,
                "The label selector of the service.",
            ),
        ],
    };
    meta_methods!();

    fn apply_defaults(&mut self) {
        let s = &mut self.spec;
        if s.kind.is_empty() {
            s.kind = "ClusterIP".into();
        }
        if s.session_affinity.is_empty() {
            s.session_affinity = "None".into();
        }
        if s.session_affinity == "ClientIP" {
            s.session_affinity_config
                .get_or_insert_with(Default::default)
                .client_ip
                .get_or_insert_with(Default::default)
                .timeout_seconds
                .get_or_insert(DEFAULT_AFFINITY_TIMEOUT);
        }
        for p in &mut s.ports {
            if p.protocol.is_empty() {
                p.protocol = "TCP".into();
            }
            if p.target_port.is_none() {
                p.target_port = Some(IntOrString::Int(p.port));
            }
        }
    }

    fn validate(&self, config: &ApiConfig) -> Vec<Cause> {
        let mut errs = v::meta(&self.metadata, true, v::dns1035_label);
        errs.extend(v::service_spec(&self.spec, config));
        errs
    }

    fn validate_update(&self, old: &Self) -> Vec<Cause> {
        let (new_ip, old_ip) = (&self.spec.cluster_ip, &old.spec.cluster_ip);
        if !new_ip.is_empty() && new_ip != old_ip {
            return vec![Cause::invalid(
                "spec.clusterIP",
                new_ip,
                "field is immutable",
            )];
        }
        Vec::new()
    }

    fn reset_status(&mut self) {
        self.status = Some(ServiceStatus::default());
    }

    fn row(&self) -> Vec<serde_json::Value> {
        printers::service(self)
    }
}
kind_basics!(Service);

impl ApiObject for Endpoints {
    const INFO: &'static KindInfo = &KindInfo {
        group: "",
        version: "v1",
        kind: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        short_names: &["ep"],
        namespaced: true,
        prefix: Prefix::new("/registry/services/endpoints/"),
        status: false,
        scale: false,
        generation: false,
        categories: &[],
        fields: &[],
        columns: &[
            NAME,
            col("Endpoints", "string", 0, "Endpoints of the service."),
            AGE,
        ],
    };
    meta_methods!();

    fn validate(&self, _: &ApiConfig) -> Vec<Cause> {
        let mut errs = v::meta(&self.metadata, true, v::dns1123_subdomain);
        for (i, s) in self.subsets.iter().enumerate() {
            for (j, a) in s.addresses.iter().chain(&s.not_ready_addresses).enumerate() {
                if a.ip.parse::<std::net::IpAddr>().is_err() {
                    errs.push(Cause::invalid(
                        format!("subsets[{i}].addresses[{j}].ip"),
                        &a.ip,
                        "must be a valid IP address",
                    ));
                }
            }
            for (j, p) in s.ports.iter().enumerate() {
                if !(1..=65535).contains(&p.port) {
                    errs.push(Cause::invalid(
                        format!("subsets[{i}].ports[{j}].port"),
                        p.port,
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
        errs
    }

    fn row(&self) -> Vec<serde_json::Value> {
        printers::endpoints(self)
    }
}
kind_basics!(Endpoints);
