//! `v1` Service (a stable virtual IP in front of the pods a selector
//! picks) and Endpoints (the ready addresses behind it, kept by the
//! endpoints controller).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cluster::ObjectReference;
use super::meta::{IntOrString, ObjectMeta};

/// A named set of pods behind one virtual IP.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.Service")]
pub struct Service {
    /// API version of this representation (v1).
    #[serde(default)]
    pub api_version: String,
    /// Kind of this representation (Service).
    #[serde(default)]
    pub kind: String,
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Desired behaviour.
    #[serde(default)]
    pub spec: ServiceSpec,
    /// Observed state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ServiceStatus>,
}

/// What a service exposes and how.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.ServiceSpec")]
pub struct ServiceSpec {
    /// Ports the service exposes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "port", "x-kubernetes-patch-strategy" = "merge"))]
    pub ports: Vec<ServicePort>,
    /// Labels of the pods behind it; without one, Endpoints are kept by hand.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// The virtual IP, from the service range; allocated when empty; None for a headless service.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[serde(rename = "clusterIP")]
    pub cluster_ip: String,
    /// ClusterIP (default), NodePort or LoadBalancer.
    #[serde(default, skip_serializing_if = "String::is_empty", rename = "type")]
    pub kind: String,
    /// Node addresses that also accept the service's ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[serde(rename = "externalIPs")]
    pub external_ips: Vec<String>,
    /// None (default) or ClientIP: a client keeps reaching the same pod.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session_affinity: String,
    /// Settings of the session affinity (ClientIP's timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_config: Option<SessionAffinityConfig>,
}

/// Settings of a service's session affinity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.SessionAffinityConfig")]
pub struct SessionAffinityConfig {
    /// ClientIP affinity's settings.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "clientIP")]
    pub client_ip: Option<ClientIpConfig>,
}

/// ClientIP affinity's settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.ClientIPConfig")]
pub struct ClientIpConfig {
    /// Seconds a client sticks to its pod after its last connection (1–86400; default 10800).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
}

/// ClientIP affinity's timeout when none is given (3 hours, as Kubernetes).
pub const DEFAULT_AFFINITY_TIMEOUT: i32 = 10800;
/// The longest ClientIP affinity timeout (a day).
pub const MAX_AFFINITY_TIMEOUT: i32 = 86400;

/// A port of a service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.ServicePort")]
pub struct ServicePort {
    /// Name, required when there are several ports.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// TCP (default), UDP or SCTP.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// Port of the virtual IP.
    pub port: i32,
    /// Port (number or container port name) on the pods (default: port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    /// Port on every node, for NodePort and LoadBalancer services (30000–32767; allocated when empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<i32>,
}

/// Observed state of a service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.ServiceStatus")]
pub struct ServiceStatus {
    /// The load balancer in front of it, if any.
    #[serde(default)]
    pub load_balancer: LoadBalancerStatus,
}

/// Addresses of a load balancer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.LoadBalancerStatus")]
pub struct LoadBalancerStatus {
    /// Its ingress points.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<LoadBalancerIngress>,
}

/// One ingress point of a load balancer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.LoadBalancerIngress")]
pub struct LoadBalancerIngress {
    /// IP address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip: String,
    /// Host name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
}

/// The addresses behind a service (same name as the service).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.Endpoints")]
pub struct Endpoints {
    /// API version of this representation (v1).
    #[serde(default)]
    pub api_version: String,
    /// Kind of this representation (Endpoints).
    #[serde(default)]
    pub kind: String,
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Groups of addresses that share a set of ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<EndpointSubset>,
}

/// Addresses that share the same ports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.EndpointSubset")]
pub struct EndpointSubset {
    /// Ready addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<EndpointAddress>,
    /// Addresses of pods that are not ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ready_addresses: Vec<EndpointAddress>,
    /// Their ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
}

/// One address behind a service.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.EndpointAddress")]
pub struct EndpointAddress {
    /// The pod's IP.
    pub ip: String,
    /// The pod's hostname.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// The node it runs on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    /// The pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<ObjectReference>,
}

/// A port behind a service.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.EndpointPort")]
pub struct EndpointPort {
    /// The service port's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The port on the pod.
    pub port: i32,
    /// TCP, UDP or SCTP.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
}
