//! The controllers of the pods role, each once per cluster under its own
//! election, each written with the kit: list at a revision, watch, keep a
//! cache, reconcile by name, requeue with backoff. Every write goes
//! through the [`Registry`] fenced by the controller's election, so a
//! controller that lost its election mid-write changes nothing after its
//! successor started — nothing is lost or doubled when leaders move.

mod deployment;
pub mod drain;
mod endpoints;
pub mod events;
mod gc;
mod namespaces;
mod nodes;
mod replication;
mod scheduler;

use std::future::Future;
use std::time::Duration;

use herd_client::Client;
use herd_client::kit::{Cache, run_elected_fenced};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::registry::Registry;
use crate::role::PodsConfig;

/// TTL of a controller's election session: a dead leader is replaced
/// within about this long.
pub const ELECTION_TTL: Duration = Duration::from_secs(10);

/// What every controller gets when elected.
#[derive(Clone)]
pub struct Elected {
    pub client: Client,
    /// The registry, fenced by this election.
    pub registry: Registry,
    pub config: PodsConfig,
    pub events: events::Recorder,
}

/// Whether `owner` may adopt orphans now: a fresh read (not the cache)
/// finds the same object, not being deleted. Kubernetes rechecks the same
/// way: an owner adopting from a stale cache while the garbage collector
/// orphans its dependents takes them back just before it goes, and the
/// collector then deletes them as dependents of a gone owner.
pub(crate) async fn can_adopt<T: crate::api::ApiObject>(
    registry: &Registry,
    owner: &T,
) -> Result<bool, crate::api::ApiError> {
    let m = owner.meta();
    match registry.get::<T>(&m.namespace, &m.name).await {
        Ok(fresh) => Ok(fresh.meta().uid == m.uid && fresh.meta().deletion_timestamp.is_none()),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes `pod` — only that incarnation: its uid is the precondition —
/// so its controller recreates it elsewhere, and records `reason` on it.
/// A pod already gone or replaced counts as evicted.
pub(crate) async fn evict(
    e: &Elected,
    pod: &crate::api::Pod,
    reason: &str,
    why: &str,
) -> Result<(), crate::api::ApiError> {
    let options = crate::registry::DeleteOptions {
        precondition_uid: Some(pod.metadata.uid.clone()),
        ..Default::default()
    };
    let (namespace, name) = (&pod.metadata.namespace, &pod.metadata.name);
    match e
        .registry
        .delete::<crate::api::Pod>(namespace, name, &options)
        .await
    {
        Ok(_) => {
            tracing::info!(pod = %name, node = %pod.spec.node_name, "pod evicted: {why}");
            e.events
                .normal(
                    pod,
                    reason,
                    format!("Marking for deletion Pod {namespace}/{name}: {why}"),
                )
                .await;
            Ok(())
        }
        Err(err) if err.is_not_found() || err.is_conflict() => Ok(()),
        Err(err) => Err(err),
    }
}

/// Runs `run` whenever this process holds election `name`.
fn spawn_elected<F, Fut>(
    tasks: &mut JoinSet<()>,
    name: &'static str,
    client: &Client,
    registry: &Registry,
    config: &PodsConfig,
    cancel: &CancellationToken,
    run: F,
) where
    F: Fn(Elected, CancellationToken) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (client, registry, config, cancel) = (
        client.clone(),
        registry.clone(),
        config.clone(),
        cancel.clone(),
    );
    tasks.spawn(async move {
        let candidate = config.candidate.clone();
        run_elected_fenced(
            &client,
            name,
            &candidate,
            ELECTION_TTL,
            &cancel,
            |token, leader| {
                let registry = registry.fenced(herd_client::kit::fence(&leader));
                let elected = Elected {
                    client: client.clone(),
                    events: events::Recorder::new(registry.clone(), name, &candidate),
                    registry,
                    config: config.clone(),
                };
                run(elected, token)
            },
        )
        .await;
    });
}

/// Starts every controller on `tasks`; they stop when `cancel` fires.
pub fn spawn_all(
    tasks: &mut JoinSet<()>,
    client: &Client,
    registry: &Registry,
    config: &PodsConfig,
    cancel: &CancellationToken,
) {
    spawn_elected(
        tasks,
        "pods-scheduler",
        client,
        registry,
        config,
        cancel,
        scheduler::run,
    );
    spawn_elected(
        tasks,
        "pods-replication",
        client,
        registry,
        config,
        cancel,
        replication::run,
    );
    spawn_elected(
        tasks,
        "pods-deployments",
        client,
        registry,
        config,
        cancel,
        deployment::run,
    );
    spawn_elected(
        tasks,
        "pods-endpoints",
        client,
        registry,
        config,
        cancel,
        endpoints::run,
    );
    spawn_elected(
        tasks,
        "pods-node-lifecycle",
        client,
        registry,
        config,
        cancel,
        nodes::run,
    );
    spawn_elected(
        tasks,
        "pods-drain",
        client,
        registry,
        config,
        cancel,
        drain::run,
    );
    spawn_elected(
        tasks,
        "pods-garbage-collector",
        client,
        registry,
        config,
        cancel,
        gc::run,
    );
    spawn_elected(
        tasks,
        "pods-namespaces",
        client,
        registry,
        config,
        cancel,
        namespaces::run,
    );
}

/// Waits until `cache` reflects `revision` (a controller's own last
/// write), so a reconcile never acts on a view older than what it did
/// itself — the kit's answer to Kubernetes' "expectations". `false` if it
/// did not within `limit` (the caller requeues).
pub async fn caught_up<T: Clone>(cache: &Cache<T>, revision: i64, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while cache.revision() < revision {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}
