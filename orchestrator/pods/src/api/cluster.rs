//! The cluster's own kinds: `v1` Namespace, Node (a machine that runs
//! pods) and Event (what controllers report about objects).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::meta::ObjectMeta;
use super::quantity::Quantity;

/// A scope for names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.Namespace")]
pub struct Namespace {
    /// API version of this representation (v1).
    #[serde(default)]
    pub api_version: String,
    /// Kind of this representation (Namespace).
    #[serde(default)]
    pub kind: String,
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Finalizers of the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<NamespaceSpec>,
    /// Active or Terminating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<NamespaceStatus>,
}

/// What must happen before a namespace goes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.NamespaceSpec")]
pub struct NamespaceSpec {
    /// Emptied by the controllers that clean the namespace up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
}

/// Lifecycle of a namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.NamespaceStatus")]
pub struct NamespaceStatus {
    /// Active or Terminating.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
}

/// A machine that runs pods.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.Node")]
pub struct Node {
    /// API version of this representation (v1).
    #[serde(default)]
    pub api_version: String,
    /// Kind of this representation (Node).
    #[serde(default)]
    pub kind: String,
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Desired behaviour.
    #[serde(default)]
    pub spec: NodeSpec,
    /// Observed state, posted by the node and the node lifecycle controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<NodeStatus>,
}

/// What is set on a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.NodeSpec")]
pub struct NodeSpec {
    /// The node's pod subnet.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[serde(rename = "podCIDR")]
    pub pod_cidr: String,
    /// The node's pod subnets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[serde(rename = "podCIDRs")]
    pub pod_cidrs: Vec<String>,
    /// `herd://<machine-id>`: the machine whose lease says whether the node lives.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[serde(rename = "providerID")]
    pub provider_id: String,
    /// Cordoned: no new pods are scheduled here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unschedulable: Option<bool>,
}

/// What a node reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.NodeStatus")]
pub struct NodeStatus {
    /// Total resources of the node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capacity: BTreeMap<String, Quantity>,
    /// Resources available to pods (what the scheduler fills).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allocatable: BTreeMap<String, Quantity>,
    /// Ready and others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "type", "x-kubernetes-patch-strategy" = "merge"))]
    pub conditions: Vec<NodeCondition>,
    /// InternalIP, Hostname…
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "type", "x-kubernetes-patch-strategy" = "merge"))]
    pub addresses: Vec<NodeAddress>,
    /// Versions and ids of the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_info: Option<NodeSystemInfo>,
    /// Where the node's daemons listen (the kubelet's logs endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_endpoints: Option<NodeDaemonEndpoints>,
}

/// Ports of the daemons of a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.NodeDaemonEndpoints")]
pub struct NodeDaemonEndpoints {
    /// The kubelet's endpoint (logs), on the node's InternalIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_endpoint: Option<DaemonEndpoint>,
}

/// A daemon's port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.DaemonEndpoint")]
pub struct DaemonEndpoint {
    /// Port number.
    #[serde(rename = "Port")]
    pub port: i32,
}

/// A condition of a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.NodeCondition")]
pub struct NodeCondition {
    /// Ready, MemoryPressure, DiskPressure, …
    #[serde(rename = "type")]
    pub kind: String,
    /// True, False or Unknown.
    pub status: String,
    /// Last time the node reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<String>,
    /// Last time the status changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// Machine-readable reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Details for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// An address of a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.NodeAddress")]
pub struct NodeAddress {
    /// InternalIP, ExternalIP or Hostname.
    #[serde(rename = "type")]
    pub kind: String,
    /// The address.
    pub address: String,
}

/// Versions and ids of a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.NodeSystemInfo")]
pub struct NodeSystemInfo {
    /// The machine id.
    #[serde(default, rename = "machineID")]
    pub machine_id: String,
    /// The system UUID.
    #[serde(default, rename = "systemUUID")]
    pub system_uuid: String,
    /// The boot id.
    #[serde(default, rename = "bootID")]
    pub boot_id: String,
    /// Kernel version.
    #[serde(default)]
    pub kernel_version: String,
    /// OS image.
    #[serde(default)]
    pub os_image: String,
    /// Container runtime and version (docker://…).
    #[serde(default)]
    pub container_runtime_version: String,
    /// Version of the node agent.
    #[serde(default)]
    pub kubelet_version: String,
    /// Version of the service proxy.
    #[serde(default)]
    pub kube_proxy_version: String,
    /// linux.
    #[serde(default)]
    pub operating_system: String,
    /// amd64, arm64…
    #[serde(default)]
    pub architecture: String,
}

impl Node {
    /// The Ready condition's status (`True`, `False`, `Unknown`), if any.
    pub fn ready(&self) -> Option<&NodeCondition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.kind == "Ready")
    }

    pub fn is_ready(&self) -> bool {
        self.ready().is_some_and(|c| c.status == "True")
    }

    /// Whether its kubelet reports MemoryPressure.
    pub fn under_memory_pressure(&self) -> bool {
        self.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.kind == "MemoryPressure" && c.status == "True")
        })
    }

    /// The port of the node's kubelet endpoint, if it posted one.
    pub fn kubelet_port(&self) -> Option<u16> {
        let port = self
            .status
            .as_ref()?
            .daemon_endpoints
            .as_ref()?
            .kubelet_endpoint
            .as_ref()?
            .port;
        u16::try_from(port).ok().filter(|p| *p > 0)
    }

    /// The machine id of `herd://<id>`.
    pub fn machine_id(&self) -> Option<&str> {
        self.spec.provider_id.strip_prefix("herd://")
    }

    /// The node's first InternalIP.
    pub fn internal_ip(&self) -> Option<&str> {
        self.status
            .as_ref()?
            .addresses
            .iter()
            .find(|a| a.kind == "InternalIP")
            .map(|a| a.address.as_str())
    }
}

/// A reference to an object.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.ObjectReference")]
pub struct ObjectReference {
    /// Kind of the object.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Its namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Its name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Its UID.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Its API version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// The version referred to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    /// A part of the object (a container: `spec.containers{name}`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field_path: String,
}

/// Something that happened to an object; kept for an hour.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.Event")]
pub struct Event {
    /// API version of this representation (v1).
    #[serde(default)]
    pub api_version: String,
    /// Kind of this representation (Event).
    #[serde(default)]
    pub kind: String,
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The object it is about.
    #[serde(default)]
    pub involved_object: ObjectReference,
    /// Machine-readable reason (Scheduled, SuccessfulCreate, …).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Details for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Who reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<EventSource>,
    /// First time it was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_timestamp: Option<String>,
    /// Last time it was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_timestamp: Option<String>,
    /// How many times it was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i32>,
    /// Normal or Warning.
    #[serde(default, skip_serializing_if = "String::is_empty", rename = "type")]
    pub kind_of_event: String,
    /// When it happened, with microseconds (newer reporters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
    /// The controller that reported it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reporting_component: String,
    /// The instance of the controller.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reporting_instance: String,
    /// What was done.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
}

/// Who reported an event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.EventSource")]
pub struct EventSource {
    /// The component.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub component: String,
    /// The host.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
}
