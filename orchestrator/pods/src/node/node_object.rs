//! This machine's Node object: registered by the kubelet with the
//! machine's capacity (CPUs, memory, pods), labels (its metadata plus
//! `kubernetes.io/hostname|os|arch`), addresses, the kubelet's endpoint
//! (for logs) and its conditions — Ready when dockerd answers and the pod
//! network is set up, NotReady with the reason otherwise; MemoryPressure
//! as [`super::eviction`] last saw it — kept so by a controller of this
//! one Node that also posts a heartbeat. Allocatable memory is capacity
//! less `--system-reserved` and the eviction threshold.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use herd_client::kit::{Action, Controller, Request, Scope};
use tokio_util::sync::CancellationToken;

use super::Kubelet;
use super::network::PodSubnet;
use crate::api::cluster::{
    DaemonEndpoint, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use crate::api::meta::{now, since};
use crate::api::quantity::Quantity;
use crate::api::{ApiError, Node, ObjectMeta};
use crate::registry::{Part, from_cache};

/// How often the Node's status is looked at (dockerd's health) and the
/// longest a heartbeat waits.
const CHECK: Duration = Duration::from_secs(10);
const HEARTBEAT: Duration = Duration::from_secs(40);

/// What the machine has, read once at start.
#[derive(Debug, Clone)]
pub struct Capacity {
    pub cpus: usize,
    pub memory_kib: u64,
}

impl Capacity {
    /// From the running machine (`/proc/meminfo`, the CPUs the agent may use).
    pub fn of_machine() -> Capacity {
        let memory_kib = meminfo_kib("MemTotal").unwrap_or(0);
        Capacity {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_kib,
        }
    }
}

/// A `/proc/meminfo` figure (`MemTotal`, `MemAvailable`…), in KiB.
pub fn meminfo_kib(key: &str) -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn quantity(s: String) -> Quantity {
    serde_json::from_value(serde_json::Value::String(s)).expect("a quantity")
}

/// The Ready condition and what it says.
async fn readiness(k: &Kubelet) -> (bool, String, String) {
    if let Err(e) = k.docker.check().await {
        return (
            false,
            "KubeletNotReady".into(),
            format!("container runtime is down: {e}"),
        );
    }
    if let Err(e) = PodSubnet::read(&k.settings.subnet_env).await {
        return (
            false,
            "KubeletNotReady".into(),
            format!("network is not ready: {e}"),
        );
    }
    (
        true,
        "KubeletReady".into(),
        "kubelet is posting ready status".into(),
    )
}

/// The Node as this kubelet describes it; conditions keep their times
/// from `old` unless their status changed.
async fn desired(k: &Kubelet, old: Option<&Node>) -> Node {
    let s = &k.settings;
    let mut labels: BTreeMap<String, String> =
        old.map(|n| n.metadata.labels.clone()).unwrap_or_default();
    labels.extend(s.labels.clone());
    labels.insert("kubernetes.io/hostname".into(), s.node_name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), go_arch().into());
    let (ready, reason, message) = readiness(k).await;
    let ready = condition(old, "Ready", ready, reason, message);
    let pressure = match k.pressure.current(s.eviction.transition) {
        Some(seen) => (
            true,
            "KubeletHasInsufficientMemory".to_owned(),
            format!("kubelet has insufficient memory available: {seen}"),
        ),
        None => (
            false,
            "KubeletHasSufficientMemory".to_owned(),
            "kubelet has sufficient memory available".to_owned(),
        ),
    };
    let pressure = condition(old, "MemoryPressure", pressure.0, pressure.1, pressure.2);
    let cap = &k.capacity;
    let resources = |memory_kib: u64| -> BTreeMap<String, Quantity> {
        [
            ("cpu".to_owned(), quantity(cap.cpus.to_string())),
            ("memory".to_owned(), quantity(format!("{memory_kib}Ki"))),
            ("pods".to_owned(), quantity("110".into())),
        ]
        .into()
    };
    // Kubernetes' allocatable: capacity less what is reserved for the
    // system and the eviction threshold.
    let kept = (s.eviction.reserved + s.eviction.threshold) / 1024;
    let pod_cidr = PodSubnet::read(&s.subnet_env)
        .await
        .ok()
        .map(|p| p.cidr())
        .unwrap_or_default();
    let runtime = k.docker.version().unwrap_or_default();
    Node {
        metadata: ObjectMeta {
            name: s.node_name.clone(),
            labels,
            ..old.map(|n| n.metadata.clone()).unwrap_or_default()
        },
        spec: NodeSpec {
            pod_cidrs: if pod_cidr.is_empty() {
                Vec::new()
            } else {
                vec![pod_cidr.clone()]
            },
            pod_cidr,
            provider_id: format!("herd://{}", s.machine_id),
            unschedulable: old.and_then(|n| n.spec.unschedulable),
        },
        status: Some(NodeStatus {
            capacity: resources(cap.memory_kib),
            allocatable: resources(cap.memory_kib.saturating_sub(kept)),
            conditions: vec![ready, pressure],
            addresses: vec![
                NodeAddress {
                    kind: "InternalIP".into(),
                    address: s.host_ip.to_string(),
                },
                NodeAddress {
                    kind: "Hostname".into(),
                    address: s.hostname.clone(),
                },
            ],
            node_info: Some(NodeSystemInfo {
                machine_id: s.machine_id.clone(),
                boot_id: s.boot_id.clone(),
                kernel_version: kernel_version(),
                os_image: "herd".into(),
                container_runtime_version: runtime,
                kubelet_version: format!("v1.32.0-herd-{}", s.version),
                operating_system: "linux".into(),
                architecture: go_arch().into(),
                ..Default::default()
            }),
            daemon_endpoints: s.daemon_port.map(|port| NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: i32::from(port),
                }),
            }),
        }),
        ..Default::default()
    }
}

/// Condition `kind` as it is now; its times kept from `old` unless its
/// status changed (transition) or a heartbeat is due.
fn condition(
    old: Option<&Node>,
    kind: &str,
    status: bool,
    reason: String,
    message: String,
) -> NodeCondition {
    let status = if status { "True" } else { "False" };
    let before = old
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.iter().find(|c| c.kind == kind));
    let same =
        before.is_some_and(|c| c.status == status && c.reason == reason && c.message == message);
    let beat_due = before
        .and_then(|c| c.last_heartbeat_time.as_deref())
        .and_then(since)
        .is_none_or(|d| d >= HEARTBEAT);
    NodeCondition {
        kind: kind.into(),
        status: status.into(),
        last_heartbeat_time: if same && !beat_due {
            before.and_then(|c| c.last_heartbeat_time.clone())
        } else {
            Some(now())
        },
        last_transition_time: if before.is_some_and(|c| c.status == status) {
            before.and_then(|c| c.last_transition_time.clone())
        } else {
            Some(now())
        },
        reason,
        message,
    }
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

async fn reconcile(k: Arc<Kubelet>, req: Request<Node>) -> Result<Action, ApiError> {
    let old = req.object.as_ref().map(from_cache);
    let want = desired(&k, old.as_ref()).await;
    match old {
        None => match k.registry.create(want, false).await {
            Ok(n) => {
                tracing::info!(node = %n.metadata.name, ready = n.is_ready(), "node registered")
            }
            Err(e) if e.is_already_exists() => {}
            Err(e) => return Err(e),
        },
        Some(old) => {
            if old.metadata.labels != want.metadata.labels || old.spec != want.spec {
                let mut main = want.clone();
                main.metadata.resource_version = old.metadata.resource_version.clone();
                k.registry.update(main, Part::Main).await?;
            }
            if old.status != want.status {
                let was = old.is_ready();
                let mut status = want.clone();
                status.metadata.resource_version.clear();
                let n = k.registry.update(status, Part::Status).await?;
                if was != n.is_ready() {
                    let c = n.ready().cloned().unwrap_or_default();
                    tracing::info!(node = %n.metadata.name, ready = n.is_ready(), reason = %c.reason, "{}", c.message);
                }
            }
        }
    }
    Ok(Action::Requeue(CHECK))
}

/// Keeps this machine's Node registered and its status current until `cancel`.
pub async fn run(k: Arc<Kubelet>, cancel: CancellationToken) {
    let name = k.settings.node_name.clone();
    let controller =
        Controller::<Node>::new("kubelet-node", k.client.clone(), Scope::Name(name.clone()))
            .seed([name])
            .concurrency(1);
    controller.run(k, reconcile, cancel).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_has_cpus_and_memory() {
        let c = Capacity::of_machine();
        assert!(c.cpus >= 1);
        assert!(c.memory_kib > 0);
        assert_eq!(
            quantity(format!("{}Ki", 1024)).millis(),
            Some(1024 * 1024 * 1000)
        );
    }
}
