//! `v1` Pod: the containers that run together on one node, as Kubernetes
//! defines them, for the fields herd implements.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::meta::{IntOrString, ObjectMeta};
use super::quantity::Quantity;

/// A group of containers scheduled together onto one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.Pod")]
pub struct Pod {
    /// API version of this representation (v1).
    #[serde(default)]
    pub api_version: String,
    /// Kind of this representation (Pod).
    #[serde(default)]
    pub kind: String,
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Desired behaviour of the pod.
    #[serde(default)]
    pub spec: PodSpec,
    /// Most recently observed state of the pod, written by the scheduler and the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PodStatus>,
}

/// What a pod runs and where it may run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.PodSpec")]
pub struct PodSpec {
    /// The pod's containers; at least one.
    #[schemars(extend("x-kubernetes-patch-merge-key" = "name", "x-kubernetes-patch-strategy" = "merge"))]
    pub containers: Vec<Container>,
    /// Containers run to completion, in order, before the others start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "name", "x-kubernetes-patch-strategy" = "merge"))]
    pub init_containers: Vec<Container>,
    /// Volumes the containers can mount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "name", "x-kubernetes-patch-strategy" = "merge,retainKeys"))]
    pub volumes: Vec<Volume>,
    /// The node the pod is bound to; set by the scheduler unless given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    /// Labels a node must carry for the pod to be scheduled there.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Always, OnFailure or Never (default Always).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub restart_policy: String,
    /// Seconds the pod gets to stop gracefully (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    /// Seconds the pod may run before it is failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    /// ClusterFirst, Default or None (default ClusterFirst).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dns_policy: String,
    /// Use the node's network namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
    /// The pod's hostname (default: its name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
}

/// One container of a pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.Container")]
pub struct Container {
    /// Name, unique in the pod (a DNS label).
    pub name: String,
    /// Image reference.
    #[serde(default)]
    pub image: String,
    /// Entrypoint (replaces the image's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    /// Ports the container listens on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "containerPort", "x-kubernetes-patch-strategy" = "merge"))]
    pub ports: Vec<ContainerPort>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "name", "x-kubernetes-patch-strategy" = "merge"))]
    pub env: Vec<EnvVar>,
    /// Compute resources the container requests and is limited to.
    #[serde(default, skip_serializing_if = "ResourceRequirements::is_empty")]
    pub resources: ResourceRequirements,
    /// Volumes mounted into the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "mountPath", "x-kubernetes-patch-strategy" = "merge"))]
    pub volume_mounts: Vec<VolumeMount>,
    /// Always, IfNotPresent or Never.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_pull_policy: String,
    /// Restarts the container when it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    /// Takes the pod out of service endpoints while it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// Security options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
}

/// A port of a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.ContainerPort")]
pub struct ContainerPort {
    /// A name services can refer to (an IANA service name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Port number in the pod's network namespace.
    pub container_port: i32,
    /// Port on the node that forwards to it; at most one pod per node may use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i32>,
    /// Node address the host port binds.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[serde(rename = "hostIP")]
    pub host_ip: String,
    /// TCP, UDP or SCTP (default TCP).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
}

/// An environment variable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.EnvVar")]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Value; `$(VAR)` refers to earlier variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Value taken from the pod's own fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// Where an environment variable's value comes from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.EnvVarSource")]
pub struct EnvVarSource {
    /// A field of the pod (metadata.name, metadata.namespace, status.podIP, spec.nodeName…).
    pub field_ref: ObjectFieldSelector,
}

/// Selects a field of the pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.ObjectFieldSelector")]
pub struct ObjectFieldSelector {
    /// Version of the schema the path is written in (v1).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// Path of the field.
    pub field_path: String,
}

/// Requests (what the scheduler reserves) and limits (what the node enforces).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.ResourceRequirements")]
pub struct ResourceRequirements {
    /// Most the container may use (cpu, memory).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, Quantity>,
    /// What the scheduler reserves on the node (default: the limits).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Quantity>,
}

impl ResourceRequirements {
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty() && self.requests.is_empty()
    }
}

/// A volume mount.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.VolumeMount")]
pub struct VolumeMount {
    /// Name of a volume of the pod.
    pub name: String,
    /// Where in the container.
    pub mount_path: String,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// A volume of the pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.Volume")]
pub struct Volume {
    /// Name, unique in the pod.
    pub name: String,
    /// A directory that lives as long as the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirVolumeSource>,
    /// A directory of the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPathVolumeSource>,
}

/// An empty directory for the pod's lifetime.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.EmptyDirVolumeSource")]
pub struct EmptyDirVolumeSource {
    /// "" (disk) or Memory.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub medium: String,
    /// Size limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<Quantity>,
}

/// A path on the node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.HostPathVolumeSource")]
pub struct HostPathVolumeSource {
    /// Path on the node.
    pub path: String,
    /// "", Directory, DirectoryOrCreate, File, FileOrCreate.
    #[serde(default, skip_serializing_if = "String::is_empty", rename = "type")]
    pub kind: String,
}

/// A health check of a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.Probe")]
pub struct Probe {
    /// Run a command; exit 0 is success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    /// An HTTP GET; 2xx and 3xx are success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    /// A TCP connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    /// Seconds after start before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i32>,
    /// Seconds a probe may take (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    /// Seconds between probes (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i32>,
    /// Successes in a row that count as success (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i32>,
    /// Failures in a row that count as failure (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i32>,
}

/// A command to run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.ExecAction")]
pub struct ExecAction {
    /// The command and its arguments.
    #[serde(default)]
    pub command: Vec<String>,
}

/// An HTTP GET.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.HTTPGetAction")]
pub struct HttpGetAction {
    /// Path to request.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// Port number or name.
    pub port: IntOrString,
    /// Host to connect to (default: the pod IP).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// HTTP (HTTPS is not implemented).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scheme: String,
}

/// A TCP connect.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.TCPSocketAction")]
pub struct TcpSocketAction {
    /// Port number or name.
    pub port: IntOrString,
    /// Host to connect to (default: the pod IP).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
}

/// Security options of a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.SecurityContext")]
pub struct SecurityContext {
    /// Run the container privileged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
}

/// What the scheduler and the node observed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.PodStatus")]
pub struct PodStatus {
    /// Pending, Running, Succeeded, Failed or Unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// PodScheduled, Initialized, ContainersReady, Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "type", "x-kubernetes-patch-strategy" = "merge"))]
    pub conditions: Vec<PodCondition>,
    /// Why the pod is in this state (e.g. Evicted).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Details for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Address of the node.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[serde(rename = "hostIP")]
    pub host_ip: String,
    /// Address of the pod.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[serde(rename = "podIP")]
    pub pod_ip: String,
    /// Addresses of the pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[serde(rename = "podIPs")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "ip", "x-kubernetes-patch-strategy" = "merge"))]
    pub pod_ips: Vec<PodIp>,
    /// When the node accepted the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// Guaranteed, Burstable or BestEffort.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub qos_class: String,
    /// One entry per container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_statuses: Vec<ContainerStatus>,
    /// One entry per init container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_container_statuses: Vec<ContainerStatus>,
}

/// An address of a pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.PodIP")]
pub struct PodIp {
    /// The address.
    pub ip: String,
}

/// A condition of a pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.PodCondition")]
pub struct PodCondition {
    /// PodScheduled, Initialized, ContainersReady or Ready.
    #[serde(rename = "type")]
    pub kind: String,
    /// True, False or Unknown.
    pub status: String,
    /// Last time the condition was probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<String>,
    /// Last time the status changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// Machine-readable reason of the last transition.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Details for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// The state of one container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.ContainerStatus")]
pub struct ContainerStatus {
    /// The container's name.
    pub name: String,
    /// Whether its readiness probe passes.
    #[serde(default)]
    pub ready: bool,
    /// Times the container was restarted.
    #[serde(default)]
    pub restart_count: i32,
    /// The image it runs.
    #[serde(default)]
    pub image: String,
    /// The image's id.
    #[serde(default, rename = "imageID")]
    pub image_id: String,
    /// `docker://<id>`.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        rename = "containerID"
    )]
    pub container_id: String,
    /// Whether it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<bool>,
    /// Current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ContainerState>,
    /// State of the previous run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_state: Option<ContainerState>,
}

/// Exactly one of waiting, running, terminated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.ContainerState")]
pub struct ContainerState {
    /// Not running yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<ContainerStateWaiting>,
    /// Running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<ContainerStateRunning>,
    /// Ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminated: Option<ContainerStateTerminated>,
}

/// A container waiting to run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.ContainerStateWaiting")]
pub struct ContainerStateWaiting {
    /// ContainerCreating, ImagePullBackOff, CrashLoopBackOff…
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A running container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.ContainerStateRunning")]
pub struct ContainerStateRunning {
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
}

/// A container that ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.ContainerStateTerminated")]
pub struct ContainerStateTerminated {
    /// Exit code.
    pub exit_code: i32,
    /// Signal that ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Completed, Error, OOMKilled…
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// `docker://<id>`.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        rename = "containerID"
    )]
    pub container_id: String,
}

/// The template controllers stamp pods from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "io.k8s.api.core.v1.PodTemplateSpec")]
pub struct PodTemplateSpec {
    /// Metadata of the pods (labels, annotations).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Spec of the pods.
    #[serde(default)]
    pub spec: PodSpec,
}

impl Pod {
    /// The condition of `kind`, if the pod has one.
    pub fn condition(&self, kind: &str) -> Option<&PodCondition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.kind == kind)
    }

    /// Whether the Ready condition is True.
    pub fn is_ready(&self) -> bool {
        self.condition("Ready").is_some_and(|c| c.status == "True")
    }

    /// Ready for at least `min_ready` (Kubernetes' "available").
    pub fn is_available(&self, min_ready: std::time::Duration) -> bool {
        let Some(c) = self.condition("Ready").filter(|c| c.status == "True") else {
            return false;
        };
        min_ready.is_zero()
            || c.last_transition_time
                .as_deref()
                .and_then(super::meta::since)
                .is_some_and(|d| d >= min_ready)
    }

    pub fn phase(&self) -> &str {
        self.status.as_ref().map_or("", |s| s.phase.as_str())
    }

    /// Succeeded or Failed: it will not run again.
    pub fn is_terminal(&self) -> bool {
        matches!(self.phase(), "Succeeded" | "Failed")
    }

    /// Neither terminal nor being deleted: it counts for its controller.
    pub fn is_active(&self) -> bool {
        !self.is_terminal() && self.metadata.deletion_timestamp.is_none()
    }

    /// The owner reference of its managing controller.
    pub fn controller_ref(&self) -> Option<&super::meta::OwnerReference> {
        self.metadata
            .owner_references
            .iter()
            .find(|r| r.is_controller())
    }

    /// What the pod's containers request, in thousandths per resource
    /// (requests, or limits where no request is given).
    pub fn requests(&self) -> BTreeMap<String, i128> {
        let mut total = BTreeMap::new();
        for c in &self.spec.containers {
            let mut own = super::quantity::millis_of(&c.resources.limits);
            own.extend(super::quantity::millis_of(&c.resources.requests));
            for (k, v) in own {
                *total.entry(k).or_insert(0) += v;
            }
        }
        total
    }

    /// The host ports the pod takes (`port/protocol`).
    pub fn host_ports(&self) -> Vec<(i32, String)> {
        self.spec
            .containers
            .iter()
            .flat_map(|c| &c.ports)
            .filter_map(|p| {
                let hp = p.host_port.filter(|hp| *hp > 0)?;
                let proto = if p.protocol.is_empty() {
                    "TCP".to_owned()
                } else {
                    p.protocol.clone()
                };
                Some((hp, proto))
            })
            .collect()
    }
}
