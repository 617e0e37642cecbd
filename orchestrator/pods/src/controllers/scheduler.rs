//! The scheduler: binds each pending pod to a node that is Ready and
//! schedulable, carries the pod's `nodeSelector` labels, has the
//! allocatable resources the pod requests (minus what its pods already
//! request) and no pod on the same host port — preferring the node with
//! the fewest pods of the same controller (spreading), then the fewest
//! pods. A pod that fits nowhere gets `PodScheduled=False` with the
//! reasons per node, as kube-scheduler writes them, and is tried again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use herd_client::kit::{Action, Cache, Controller, Request, Scope};
use tokio_util::sync::CancellationToken;

use super::{Elected, caught_up};
use crate::api::meta::now;
use crate::api::pod::PodCondition;
use crate::api::quantity::millis_of;
use crate::api::{ApiError, ApiObject, Node, Pod};
use crate::registry::{Part, from_cache};

/// How often a pod that fits nowhere is tried again (nodes changing also
/// wake it).
const RETRY: Duration = Duration::from_secs(5);

struct Ctx {
    e: Elected,
    pods: Cache<Pod>,
    nodes: Cache<Node>,
    /// The revision of this scheduler's last binding: the next decision
    /// waits until the cache shows it, so no node is filled twice.
    last_bind: AtomicI64,
}

pub async fn run(e: Elected, cancel: CancellationToken) {
    let mut controller =
        Controller::<Pod>::new("pods-scheduler", e.client.clone(), Scope::All).concurrency(1);
    let pods = controller.cache();
    let pending = pods.clone();
    let nodes = controller.watches::<Node>(Scope::All, move |_, _| {
        pending
            .list()
            .into_iter()
            .filter(|o| o.value.spec.node_name.is_empty() && o.value.is_active())
            .map(|o| o.name)
            .collect()
    });
    let ctx = Arc::new(Ctx {
        e,
        pods,
        nodes,
        last_bind: AtomicI64::new(0),
    });
    controller.run(ctx, reconcile, cancel).await;
}

async fn reconcile(ctx: Arc<Ctx>, req: Request<Pod>) -> Result<Action, ApiError> {
    let Some(object) = req.object else {
        return Ok(Action::AwaitChange);
    };
    let pod = from_cache(&object);
    if !pod.spec.node_name.is_empty() || !pod.is_active() {
        return Ok(Action::AwaitChange);
    }
    if !caught_up(
        &ctx.pods,
        ctx.last_bind.load(Ordering::SeqCst),
        Duration::from_secs(5),
    )
    .await
    {
        return Ok(Action::Requeue(Duration::from_millis(100)));
    }
    let nodes: Vec<Node> = ctx.nodes.list().iter().map(from_cache).collect();
    let pods: Vec<Pod> = ctx.pods.list().into_iter().map(|o| o.value).collect();
    match place(&pod, &nodes, &pods) {
        Ok(node) => {
            let bound = ctx.e.registry.bind(pod, &node).await?;
            ctx.last_bind.fetch_max(bound.revision(), Ordering::SeqCst);
            tracing::debug!(pod = %req.name, %node, "pod scheduled");
            ctx.e
                .events
                .normal(
                    &bound,
                    "Scheduled",
                    format!(
                        "Successfully assigned {}/{} to {node}",
                        bound.metadata.namespace, bound.metadata.name
                    ),
                )
                .await;
            Ok(Action::AwaitChange)
        }
        Err(message) => {
            let current = pod.condition("PodScheduled").map(|c| c.message.clone());
            if current.as_deref() != Some(message.as_str()) {
                let mut unschedulable = pod.clone();
                let status = unschedulable.status.get_or_insert_with(Default::default);
                status.conditions.retain(|c| c.kind != "PodScheduled");
                status.conditions.push(PodCondition {
                    kind: "PodScheduled".into(),
                    status: "False".into(),
                    reason: "Unschedulable".into(),
                    message: message.clone(),
                    last_transition_time: Some(now()),
                    ..Default::default()
                });
                let updated = ctx.e.registry.update(unschedulable, Part::Status).await?;
                ctx.e
                    .events
                    .warning(&updated, "FailedScheduling", message)
                    .await;
            }
            Ok(Action::Requeue(RETRY))
        }
    }
}

/// Why `node` cannot take `pod`, given the pods bound to it.
fn misfit(pod: &Pod, node: &Node, on_node: &[&Pod]) -> Option<String> {
    if !node.is_ready() {
        return Some("node(s) were not ready".into());
    }
    if node.spec.unschedulable == Some(true) {
        return Some("node(s) were unschedulable".into());
    }
    // Kubernetes taints such a node NoSchedule; nothing here tolerates it.
    if node.under_memory_pressure() {
        return Some("node(s) had memory pressure".into());
    }
    if !pod
        .spec
        .node_selector
        .iter()
        .all(|(k, v)| node.metadata.labels.get(k) == Some(v))
    {
        return Some("node(s) didn't match Pod's node affinity/selector".into());
    }
    let ports = pod.host_ports();
    if on_node
        .iter()
        .any(|p| p.host_ports().iter().any(|hp| ports.contains(hp)))
    {
        return Some("node(s) didn't have free ports for the requested pod ports".into());
    }
    let allocatable = node
        .status
        .as_ref()
        .map(|s| millis_of(&s.allocatable))
        .unwrap_or_default();
    if let Some(max) = allocatable.get("pods")
        && (on_node.len() as i128 + 1) * 1000 > *max
    {
        return Some("Too many pods".into());
    }
    let mut used: BTreeMap<String, i128> = BTreeMap::new();
    for p in on_node {
        for (k, v) in p.requests() {
            *used.entry(k).or_insert(0) += v;
        }
    }
    for (resource, want) in pod.requests() {
        if let Some(have) = allocatable.get(&resource)
            && used.get(&resource).copied().unwrap_or(0) + want > *have
        {
            return Some(format!("Insufficient {resource}"));
        }
    }
    None
}

/// The node `pod` goes to, or the message saying why none fits.
pub fn place(pod: &Pod, nodes: &[Node], pods: &[Pod]) -> Result<String, String> {
    let owner = pod.controller_ref().map(|r| r.uid.clone());
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<((usize, usize, String), String)> = None;
    for node in nodes {
        let on_node: Vec<&Pod> = pods
            .iter()
            .filter(|p| p.spec.node_name == node.metadata.name && !p.is_terminal())
            .collect();
        if let Some(why) = misfit(pod, node, &on_node) {
            *reasons.entry(why).or_insert(0) += 1;
            continue;
        }
        let siblings = owner.as_ref().map_or(0, |uid| {
            on_node
                .iter()
                .filter(|p| p.controller_ref().is_some_and(|r| &r.uid == uid))
                .count()
        });
        let score = (siblings, on_node.len(), node.metadata.name.clone());
        if best.as_ref().is_none_or(|(s, _)| score < *s) {
            best = Some((score, node.metadata.name.clone()));
        }
    }
    match best {
        Some((_, node)) => Ok(node),
        None => {
            let detail: Vec<String> = reasons
                .iter()
                .map(|(why, n)| format!("{n} {why}"))
                .collect();
            Err(if nodes.is_empty() {
                "0/0 nodes are available: no nodes registered.".into()
            } else {
                format!(
                    "0/{} nodes are available: {}.",
                    nodes.len(),
                    detail.join(", ")
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::cluster::{NodeCondition, NodeStatus};
    use crate::api::meta::OwnerReference;
    use crate::api::quantity::Quantity;

    fn node(name: &str, ready: bool, labels: &[(&str, &str)], cpu: &str) -> Node {
        let mut n = Node::default();
        n.metadata.name = name.into();
        n.metadata.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        n.status = Some(NodeStatus {
            allocatable: [
                ("cpu".to_string(), Quantity(cpu.into())),
                ("pods".into(), Quantity("110".into())),
            ]
            .into(),
            conditions: vec![NodeCondition {
                kind: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        n
    }

    fn pod(name: &str, cpu: &str, node: &str, owner: Option<&str>) -> Pod {
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x",
                "resources": {"requests": {"cpu": cpu}}}]}
        }))
        .unwrap();
        if let Some(uid) = owner {
            p.metadata.owner_references.push(OwnerReference {
                uid: uid.into(),
                controller: Some(true),
                ..Default::default()
            });
        }
        p
    }

    #[test]
    fn selectors_readiness_and_resources_decide() {
        let nodes = vec![
            node("a", true, &[("disk", "ssd")], "1"),
            node("b", true, &[], "4"),
            node("c", false, &[("disk", "ssd")], "4"),
        ];
        let mut p = pod("p", "500m", "", None);
        p.spec.node_selector.insert("disk".into(), "ssd".into());
        assert_eq!(place(&p, &nodes, &[]), Ok("a".into()));
        let busy = vec![pod("q", "800m", "a", None)];
        let e = place(&p, &nodes, &busy).unwrap_err();
        assert_eq!(
            e,
            "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) were not ready."
        );
    }

    #[test]
    fn pods_of_one_controller_spread_and_host_ports_conflict() {
        let nodes = vec![node("a", true, &[], "8"), node("b", true, &[], "8")];
        let pods = vec![
            pod("r1", "1", "a", Some("rc")),
            pod("x1", "1", "b", None),
            pod("x2", "1", "b", None),
        ];
        // b has more pods, but none of this controller's.
        assert_eq!(
            place(&pod("r2", "1", "", Some("rc")), &nodes, &pods),
            Ok("b".into())
        );
        let mut hp = pod("h", "1", "", None);
        hp.spec.containers[0]
            .ports
            .push(crate::api::pod::ContainerPort {
                container_port: 80,
                host_port: Some(8080),
                ..Default::default()
            });
        let mut taken = hp.clone();
        taken.spec.node_name = "a".into();
        assert_eq!(place(&hp, &nodes, &[taken.clone()]), Ok("b".into()));
        let mut taken_b = taken.clone();
        taken_b.spec.node_name = "b".into();
        assert!(
            place(&hp, &nodes, &[taken, taken_b])
                .unwrap_err()
                .contains("free ports")
        );
    }
}
