//! Drains for OS updates: while a machine holds a
//! `herd_client::keys::DrainRecord` (its update agent is about to reboot
//! it), its node is cordoned (`spec.unschedulable`, marked with
//! [`CORDONED_FOR`] so that only a cordon of ours is ever lifted) and the
//! pods a controller manages are evicted — deleted, so their controllers
//! recreate them on other nodes — as `kubectl drain` does. Pods nobody
//! manages stay, as `kubectl drain` leaves them without `--force`: they
//! stay bound and run again when the node is back. When the record goes
//! (the new slot was marked good, or the update's lease ran out), the node
//! is uncordoned.

use std::sync::Arc;

use herd_client::keys::DrainRecord;
use herd_client::kit::{Action, Cache, Controller, Request, Scope};
use tokio_util::sync::CancellationToken;

use super::Elected;
use crate::api::{ApiError, Node, Pod};
use crate::registry::{Part, from_cache};

/// The annotation on a node this controller cordoned; its value is the
/// OS version the machine is updating to.
pub const CORDONED_FOR: &str = "herd.io/cordoned-for-update";

struct Ctx {
    e: Elected,
    drains: Cache<DrainRecord>,
    pods: Cache<Pod>,
}

pub async fn run(e: Elected, cancel: CancellationToken) {
    let mut controller = Controller::<Node>::new("pods-drain", e.client.clone(), Scope::All);
    let nodes = controller.cache();
    let by_machine = move |machine: &str| -> Vec<String> {
        nodes
            .list()
            .into_iter()
            .filter(|n| n.value.machine_id() == Some(machine))
            .map(|n| n.name)
            .collect()
    };
    let drains = controller.watches::<DrainRecord>(Scope::All, move |before, after| {
        [before, after]
            .into_iter()
            .flatten()
            .flat_map(|d| by_machine(&d.value.machine_id))
            .collect()
    });
    // A pod scheduled onto the node just before the cordon landed.
    let pods = controller.watches::<Pod>(Scope::All, |_, after| {
        after
            .map(|p| p.value.spec.node_name.clone())
            .filter(|n| !n.is_empty())
            .into_iter()
            .collect()
    });
    let ctx = Arc::new(Ctx { e, drains, pods });
    controller.run(ctx, reconcile, cancel).await;
}

async fn reconcile(ctx: Arc<Ctx>, req: Request<Node>) -> Result<Action, ApiError> {
    let Some(object) = req.object else {
        return Ok(Action::AwaitChange);
    };
    let node = from_cache(&object);
    let Some(machine) = node.machine_id() else {
        return Ok(Action::AwaitChange);
    };
    match ctx.drains.get(machine) {
        Some(drain) => {
            if node.spec.unschedulable != Some(true) {
                cordon(&ctx, node.clone(), &drain.value.version).await?;
            }
            evict(&ctx, &node).await?;
        }
        None if node.metadata.annotations.contains_key(CORDONED_FOR) => {
            uncordon(&ctx, node).await?;
        }
        None => {}
    }
    Ok(Action::AwaitChange)
}

async fn cordon(ctx: &Ctx, mut node: Node, version: &str) -> Result<(), ApiError> {
    node.spec.unschedulable = Some(true);
    node.metadata
        .annotations
        .insert(CORDONED_FOR.into(), version.to_owned());
    let node = ctx.e.registry.update(node, Part::Main).await?;
    tracing::info!(node = %node.metadata.name, version, "node cordoned: its machine drains for an OS update");
    ctx.e
        .events
        .normal(
            &node,
            "NodeNotSchedulable",
            format!(
                "Node {} status is now: NodeNotSchedulable (draining for OS {version})",
                node.metadata.name
            ),
        )
        .await;
    Ok(())
}

async fn uncordon(ctx: &Ctx, mut node: Node) -> Result<(), ApiError> {
    node.metadata.annotations.remove(CORDONED_FOR);
    node.spec.unschedulable = None;
    let node = ctx.e.registry.update(node, Part::Main).await?;
    tracing::info!(node = %node.metadata.name, "node uncordoned: its OS update is over");
    ctx.e
        .events
        .normal(
            &node,
            "NodeSchedulable",
            format!("Node {} status is now: NodeSchedulable", node.metadata.name),
        )
        .await;
    Ok(())
}

/// Deletes the controller-managed pods bound to `node`.
async fn evict(ctx: &Ctx, node: &Node) -> Result<(), ApiError> {
    let name = &node.metadata.name;
    let managed = ctx
        .pods
        .list()
        .into_iter()
        .map(|o| from_cache(&o))
        .filter(|p: &Pod| {
            &p.spec.node_name == name
                && p.metadata.deletion_timestamp.is_none()
                && p.metadata
                    .owner_references
                    .iter()
                    .any(|o| o.is_controller())
        });
    for pod in managed {
        super::evict(&ctx.e, &pod, "Evicted", "its node drains for an OS update").await?;
    }
    Ok(())
}
