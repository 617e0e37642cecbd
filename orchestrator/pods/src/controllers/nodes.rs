//! Node lifecycle: a node whose machine (`spec.providerID:
//! herd://<machine-id>`) no longer holds its lease under `/herd/machines`
//! goes NotReady (`Ready=Unknown`); if it stays so for the eviction
//! timeout, its pods are deleted and their controllers recreate them
//! elsewhere. The grace period is the lesson fleet paid for: a short
//! blip moves nothing. Pods bound to a node that no longer exists are
//! deleted too (Kubernetes' pod garbage collector).

use std::sync::Arc;
use std::time::Duration;

use herd_client::keys::MachineRecord;
use herd_client::kit::{Action, Cache, Controller, Request, Scope};
use tokio_util::sync::CancellationToken;

use super::Elected;
use crate::api::cluster::NodeCondition;
use crate::api::meta::{now, since};
use crate::api::{ApiError, Node, Pod};
use crate::registry::{Part, from_cache};

/// The Ready reason of a node whose machine lease expired.
pub const LEASE_EXPIRED: &str = "NodeStatusUnknown";

struct Ctx {
    e: Elected,
    machines: Cache<MachineRecord>,
    pods: Cache<Pod>,
}

pub async fn run(e: Elected, cancel: CancellationToken) {
    let mut controller =
        Controller::<Node>::new("pods-node-lifecycle", e.client.clone(), Scope::All);
    let nodes = controller.cache();
    let machines = controller.watches::<MachineRecord>(Scope::All, move |before, after| {
        let ids: Vec<String> = [before, after]
            .into_iter()
            .flatten()
            .map(|m| m.name.clone())
            .collect();
        nodes
            .list()
            .into_iter()
            .filter(|n| {
                n.value
                    .machine_id()
                    .is_some_and(|id| ids.iter().any(|i| i == id))
            })
            .map(|n| n.name)
            .collect()
    });
    let pods = controller.watches::<Pod>(Scope::All, |_, _| Vec::new());
    let ctx = Arc::new(Ctx { e, machines, pods });
    controller.run(ctx, reconcile, cancel).await;
}

/// Deletes the pods bound to `node`; returns how many.
async fn evict(ctx: &Ctx, node: &str, why: &str) -> Result<usize, ApiError> {
    let bound: Vec<Pod> = ctx
        .pods
        .list()
        .into_iter()
        .map(|o| from_cache(&o))
        .filter(|p| p.spec.node_name == node && p.metadata.deletion_timestamp.is_none())
        .collect();
    for pod in &bound {
        super::evict(&ctx.e, pod, "TaintManagerEviction", why).await?;
    }
    Ok(bound.len())
}

async fn reconcile(ctx: Arc<Ctx>, req: Request<Node>) -> Result<Action, ApiError> {
    let Some(object) = req.object else {
        evict(&ctx, &req.name, "its node was deleted").await?;
        return Ok(Action::AwaitChange);
    };
    let node = from_cache(&object);
    let Some(machine) = node.machine_id().map(str::to_owned) else {
        return Ok(Action::AwaitChange);
    };
    if ctx.machines.get(&machine).is_some() {
        return Ok(Action::AwaitChange);
    }
    let ready = node.ready().cloned();
    if ready.as_ref().is_none_or(|c| c.status != "Unknown") {
        let mut lost = node.clone();
        let status = lost.status.get_or_insert_with(Default::default);
        status.conditions.retain(|c| c.kind != "Ready");
        status.conditions.push(NodeCondition {
            kind: "Ready".into(),
            status: "Unknown".into(),
            reason: LEASE_EXPIRED.into(),
            message: format!(
                "The lease of machine {machine} expired: its agent stopped renewing it."
            ),
            last_heartbeat_time: ready.as_ref().and_then(|c| c.last_heartbeat_time.clone()),
            last_transition_time: Some(now()),
        });
        let updated = ctx.e.registry.update(lost, Part::Status).await?;
        tracing::warn!(node = %req.name, %machine, "node is NotReady: its machine's lease expired");
        ctx.e
            .events
            .normal(
                &updated,
                "NodeNotReady",
                format!("Node {} status is now: NodeNotReady", req.name),
            )
            .await;
        return Ok(Action::Requeue(ctx.e.config.eviction_timeout));
    }
    let unready_for = ready
        .and_then(|c| c.last_transition_time)
        .as_deref()
        .and_then(since)
        .unwrap_or_default();
    let timeout = ctx.e.config.eviction_timeout;
    if unready_for < timeout {
        return Ok(Action::Requeue(
            timeout - unready_for + Duration::from_millis(100),
        ));
    }
    let evicted = evict(&ctx, &req.name, "its node is not ready").await?;
    Ok(if evicted > 0 {
        Action::Requeue(Duration::from_secs(1))
    } else {
        Action::Requeue(Duration::from_secs(10))
    })
}
