//! The replication manager, for ReplicationControllers (the seed's) and
//! ReplicaSets alike: level-triggered, it counts the active pods a
//! controller owns (its `ownerReferences`), adopts orphans its selector
//! matches, releases pods that no longer match, creates the missing pods
//! from the template in one transaction, deletes the surplus (unbound,
//! pending, not-ready and newest first) and writes the status.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_client::kit::{Action, Cache, Controller, Request, Scope};
use tokio_util::sync::CancellationToken;

use super::{Elected, can_adopt, caught_up};
use crate::api::meta::{OwnerReference, map_selects};
use crate::api::pod::PodTemplateSpec;
use crate::api::workloads::{ReplicaSetStatus, ReplicaStatus};
use crate::api::{ApiError, ApiObject, ObjectMeta, Pod, ReplicaSet, ReplicationController};
use crate::registry::{DeleteOptions, Deletion, Part, from_cache};

/// Pods created in one transaction at most.
const BATCH: usize = 100;

/// A kind that keeps a number of pods running.
pub trait Replicated: ApiObject {
    fn desired(&self) -> i32;
    fn selects(&self, labels: &BTreeMap<String, String>) -> bool;
    fn template(&self) -> Option<&PodTemplateSpec>;
    fn min_ready(&self) -> Duration;
    fn replica_status(&self) -> ReplicaStatus;
    fn set_replica_status(&mut self, status: ReplicaStatus);
}

impl Replicated for ReplicationController {
    fn desired(&self) -> i32 {
        self.spec.replicas.unwrap_or(1)
    }
    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        map_selects(&self.spec.selector, labels)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.template.as_ref()
    }
    fn min_ready(&self) -> Duration {
        Duration::from_secs(self.spec.min_ready_seconds.unwrap_or(0).max(0) as u64)
    }
    fn replica_status(&self) -> ReplicaStatus {
        self.status.clone().unwrap_or_default()
    }
    fn set_replica_status(&mut self, status: ReplicaStatus) {
        self.status = Some(status);
    }
}

impl Replicated for ReplicaSet {
    fn desired(&self) -> i32 {
        self.spec.replicas.unwrap_or(1)
    }
    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.spec.selector.matches(labels)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        Some(&self.spec.template)
    }
    fn min_ready(&self) -> Duration {
        Duration::from_secs(self.spec.min_ready_seconds.unwrap_or(0).max(0) as u64)
    }
    fn replica_status(&self) -> ReplicaStatus {
        self.status.clone().unwrap_or_default().into()
    }
    fn set_replica_status(&mut self, status: ReplicaStatus) {
        self.status = Some(ReplicaSetStatus::from(status));
    }
}

struct Ctx<R> {
    e: Elected,
    pods: Cache<Pod>,
    /// Per controller, the revision of the last pods it created or deleted.
    writes: Mutex<HashMap<String, i64>>,
    _kind: std::marker::PhantomData<fn() -> R>,
}

pub async fn run(e: Elected, cancel: CancellationToken) {
    tokio::join!(
        manage::<ReplicationController>("replicationcontrollers", e.clone(), cancel.clone()),
        manage::<ReplicaSet>("replicasets", e, cancel),
    );
}

/// The owner names a pod change concerns.
fn owners_of<R: Replicated>(pod: &Pod, owners: &Cache<R>) -> Vec<String> {
    match pod.controller_ref() {
        Some(r) if r.kind == R::INFO.kind => vec![format!("{}/{}", pod.metadata.namespace, r.name)],
        Some(_) => Vec::new(),
        None => owners
            .list()
            .into_iter()
            .filter(|o| {
                o.value.meta().namespace == pod.metadata.namespace
                    && o.value.selects(&pod.metadata.labels)
            })
            .map(|o| o.name)
            .collect(),
    }
}

async fn manage<R: Replicated>(name: &'static str, e: Elected, cancel: CancellationToken) {
    let mut controller = Controller::<R>::new(name, e.client.clone(), Scope::All);
    let owners = controller.cache();
    let pods = controller.watches::<Pod>(Scope::All, move |before, after| {
        let mut names: Vec<String> = [before, after]
            .into_iter()
            .flatten()
            .flat_map(|o| owners_of(&o.value, &owners))
            .collect();
        names.sort();
        names.dedup();
        names
    });
    let ctx = Arc::new(Ctx::<R> {
        e,
        pods,
        writes: Mutex::new(HashMap::new()),
        _kind: std::marker::PhantomData,
    });
    controller.run(ctx, reconcile::<R>, cancel).await;
}

/// The reference a controller puts on its pods.
pub fn controller_ref<T: ApiObject>(owner: &T) -> OwnerReference {
    OwnerReference {
        api_version: T::INFO.api_version(),
        kind: T::INFO.kind.into(),
        name: owner.meta().name.clone(),
        uid: owner.meta().uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A new pod of `owner` from `template`.
pub fn pod_from<T: ApiObject>(owner: &T, template: &PodTemplateSpec) -> Pod {
    Pod {
        metadata: ObjectMeta {
            generate_name: format!("{}-", owner.meta().name),
            namespace: owner.meta().namespace.clone(),
            labels: template.metadata.labels.clone(),
            annotations: template.metadata.annotations.clone(),
            owner_references: vec![controller_ref(owner)],
            ..Default::default()
        },
        spec: template.spec.clone(),
        ..Default::default()
    }
}

/// The order surplus pods go in: unbound, then pending, then not ready,
/// then newest first.
fn deletion_rank(p: &Pod) -> (bool, u8, bool, std::cmp::Reverse<String>) {
    let phase = match p.phase() {
        "Pending" | "" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    (
        !p.spec.node_name.is_empty(),
        phase,
        p.is_ready(),
        std::cmp::Reverse(p.metadata.creation_timestamp.clone().unwrap_or_default()),
    )
}

/// The status `pods` (the active pods of `owner`) amount to.
fn status_of<R: Replicated>(owner: &R, pods: &[&Pod]) -> ReplicaStatus {
    let template_labels = owner
        .template()
        .map(|t| t.metadata.labels.clone())
        .unwrap_or_default();
    ReplicaStatus {
        replicas: pods.len() as i32,
        fully_labeled_replicas: pods
            .iter()
            .filter(|p| {
                template_labels
                    .iter()
                    .all(|(k, v)| p.metadata.labels.get(k) == Some(v))
            })
            .count() as i32,
        ready_replicas: pods.iter().filter(|p| p.is_ready()).count() as i32,
        available_replicas: pods
            .iter()
            .filter(|p| p.is_available(owner.min_ready()))
            .count() as i32,
        observed_generation: owner.meta().generation,
    }
}

async fn reconcile<R: Replicated>(ctx: Arc<Ctx<R>>, req: Request<R>) -> Result<Action, ApiError> {
    let Some(object) = req.object else {
        ctx.writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&req.name);
        return Ok(Action::AwaitChange);
    };
    let owner = from_cache(&object);
    let last = ctx
        .writes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&req.name)
        .copied()
        .unwrap_or(0);
    if !caught_up(&ctx.pods, last, Duration::from_secs(5)).await {
        return Ok(Action::Requeue(Duration::from_millis(100)));
    }
    let registry = &ctx.e.registry;
    let (ns, uid) = (owner.meta().namespace.clone(), owner.meta().uid.clone());
    let deleting = owner.meta().deletion_timestamp.is_some();
    let prefix = format!("{ns}/");
    let mut mine: Vec<Pod> = Vec::new();
    // Asked once, at the first orphan this pass could adopt.
    let mut may_adopt: Option<bool> = None;
    for o in ctx
        .pods
        .list()
        .iter()
        .filter(|o| o.name.starts_with(&prefix))
    {
        let mut pod = from_cache(o);
        match pod.controller_ref().map(|r| r.uid.clone()) {
            Some(owner_uid) if owner_uid == uid => {
                if owner.selects(&pod.metadata.labels) {
                    mine.push(pod);
                } else if !deleting {
                    pod.metadata.owner_references.retain(|r| r.uid != uid);
                    registry.update(pod, Part::Main).await?;
                }
            }
            Some(_) => {}
            None if !deleting && pod.is_active() && owner.selects(&pod.metadata.labels) => {
                if may_adopt.is_none() {
                    may_adopt = Some(can_adopt(registry, &owner).await?);
                }
                if may_adopt == Some(false) {
                    continue;
                }
                pod.metadata.owner_references.push(controller_ref(&owner));
                let adopted = registry.update(pod, Part::Main).await?;
                mine.push(adopted);
            }
            None => {}
        }
    }
    let mut active: Vec<&Pod> = mine.iter().filter(|p| p.is_active()).collect();
    let desired = owner.desired().max(0) as usize;
    let mut wrote = 0;
    if !deleting && active.len() < desired {
        if let Some(template) = owner.template() {
            let missing = (desired - active.len()).min(BATCH);
            let pods: Vec<Pod> = (0..missing).map(|_| pod_from(&owner, template)).collect();
            let created = registry.create_all(pods).await?;
            wrote = created.first().map_or(0, |p| p.revision());
            let names: Vec<&str> = created.iter().map(|p| p.metadata.name.as_str()).collect();
            let message = match names.as_slice() {
                [one] => format!("Created pod: {one}"),
                many => format!("Created {} pods: {}", many.len(), many.join(", ")),
            };
            ctx.e
                .events
                .normal(&owner, "SuccessfulCreate", message)
                .await;
        }
    } else if !deleting && active.len() > desired {
        active.sort_by_key(|p| deletion_rank(p));
        let surplus: Vec<&Pod> = active[..active.len() - desired].to_vec();
        for p in &surplus {
            let options = DeleteOptions {
                precondition_uid: Some(p.metadata.uid.clone()),
                ..Default::default()
            };
            match registry
                .delete::<Pod>(&ns, &p.metadata.name, &options)
                .await
            {
                Ok(Deletion::Deleted(gone) | Deletion::Pending(gone)) => {
                    wrote = wrote.max(gone.revision())
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
            ctx.e
                .events
                .normal(
                    &owner,
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", p.metadata.name),
                )
                .await;
        }
    }
    if wrote > 0 {
        ctx.writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(req.name.clone(), wrote);
    }
    let status = status_of(&owner, &active);
    if status != owner.replica_status() {
        let mut updated = owner.clone();
        updated.set_replica_status(status);
        registry.update(updated, Part::Status).await?;
    }
    // Ready pods become available after minReadySeconds without any change.
    let waiting = active
        .iter()
        .any(|p| p.is_ready() && !p.is_available(owner.min_ready()));
    Ok(if waiting {
        Action::Requeue(Duration::from_secs(1))
    } else {
        Action::AwaitChange
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surplus_goes_unbound_pending_unready_newest_first() {
        let mk = |name: &str, node: &str, phase: &str, created: &str| {
            let mut p = Pod::default();
            p.metadata.name = name.into();
            p.metadata.creation_timestamp = Some(created.into());
            p.spec.node_name = node.into();
            p.status = Some(crate::api::pod::PodStatus {
                phase: phase.into(),
                ..Default::default()
            });
            p
        };
        let mut pods = [
            mk("running-old", "n", "Running", "2020-01-01T00:00:00Z"),
            mk("running-new", "n", "Running", "2021-01-01T00:00:00Z"),
            mk("unbound", "", "Pending", "2019-01-01T00:00:00Z"),
            mk("pending", "n", "Pending", "2019-01-01T00:00:00Z"),
        ];
        pods.sort_by_key(deletion_rank);
        let order: Vec<&str> = pods.iter().map(|p| p.metadata.name.as_str()).collect();
        assert_eq!(order, ["unbound", "pending", "running-new", "running-old"]);
    }

    #[test]
    fn template_pods_carry_the_controller_reference() {
        let mut rc = ReplicationController::default();
        rc.metadata.name = "redis".into();
        rc.metadata.namespace = "default".into();
        rc.metadata.uid = "u1".into();
        rc.set_type_meta();
        let mut t = PodTemplateSpec::default();
        t.metadata.labels.insert("name".into(), "redis".into());
        let p = pod_from(&rc, &t);
        assert_eq!(p.metadata.generate_name, "redis-");
        assert_eq!(p.controller_ref().unwrap().uid, "u1");
        assert_eq!(p.controller_ref().unwrap().kind, "ReplicationController");
        assert_eq!(p.metadata.labels["name"], "redis");
    }
}
