//! The deployment controller: a Deployment owns one ReplicaSet per
//! template (named `<deployment>-<hash>`, with the `pod-template-hash`
//! label), numbered by the `deployment.kubernetes.io/revision`
//! annotation. A rolling update scales the new set up and the old ones
//! down within `maxSurge` and `maxUnavailable`; Recreate empties the old
//! sets first. Going back to an earlier template (`kubectl rollout
//! undo`) reuses its set under a new revision; a paused deployment only
//! reports; old sets beyond `revisionHistoryLimit` are deleted. One step
//! per reconcile: every write wakes the controller again once the caches
//! show it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_client::kit::{Action, Cache, Controller, Request, Scope};
use tokio_util::sync::CancellationToken;

use super::replication::controller_ref;
use super::{Elected, can_adopt, caught_up};
use crate::api::meta::{IntOrString, LabelSelector, now};
use crate::api::pod::PodTemplateSpec;
use crate::api::workloads::{DeploymentCondition, DeploymentStatus, ReplicaSetSpec};
use crate::api::{ApiError, ApiObject, Deployment, ObjectMeta, ReplicaSet};
use crate::registry::{DeleteOptions, Part, from_cache};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const HASH_LABEL: &str = "pod-template-hash";

struct Ctx {
    e: Elected,
    rss: Cache<ReplicaSet>,
    writes: Mutex<HashMap<String, i64>>,
}

pub async fn run(e: Elected, cancel: CancellationToken) {
    let mut controller =
        Controller::<Deployment>::new("pods-deployments", e.client.clone(), Scope::All);
    let deployments = controller.cache();
    let rss = controller.watches::<ReplicaSet>(Scope::All, move |before, after| {
        let mut names = Vec::new();
        for o in [before, after].into_iter().flatten() {
            let rs = &o.value;
            match rs
                .metadata
                .owner_references
                .iter()
                .find(|r| r.is_controller())
            {
                Some(r) if r.kind == "Deployment" => {
                    names.push(format!("{}/{}", rs.metadata.namespace, r.name));
                }
                Some(_) => {}
                None => names.extend(
                    deployments
                        .list()
                        .into_iter()
                        .filter(|d| {
                            d.value.metadata.namespace == rs.metadata.namespace
                                && d.value.spec.selector.matches(&rs.metadata.labels)
                        })
                        .map(|d| d.name),
                ),
            }
        }
        names.sort();
        names.dedup();
        names
    });
    let ctx = Arc::new(Ctx {
        e,
        rss,
        writes: Mutex::new(HashMap::new()),
    });
    controller.run(ctx, reconcile, cancel).await;
}

/// The `pod-template-hash` of a template (Kubernetes' shape: FNV-1a of
/// the template, its decimal digits spelled in a vowel-free alphabet).
pub fn template_hash(template: &PodTemplateSpec, collisions: i32) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let text = serde_json::to_string(template).expect("templates serialize");
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes().chain(collisions.to_string().bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// `template` without the hash label.
fn without_hash(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = template.clone();
    t.metadata.labels.remove(HASH_LABEL);
    t
}

pub fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(0)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.available_replicas)
}

/// `maxSurge` and `maxUnavailable` for `desired` pods.
fn limits(d: &Deployment, desired: i32) -> (i32, i32) {
    let ru = d
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default();
    let pct = |v: Option<IntOrString>, up: bool| {
        v.unwrap_or(IntOrString::String("25%".into()))
            .scaled(desired, up)
            .unwrap_or(0)
            .max(0)
    };
    let surge = pct(ru.max_surge, true);
    let mut unavailable = pct(ru.max_unavailable, false).min(desired);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

/// The replica set for `d`'s current template.
fn new_replica_set(d: &Deployment, hash: &str, revision: i64, replicas: i32) -> ReplicaSet {
    let mut template = d.spec.template.clone();
    template
        .metadata
        .labels
        .insert(HASH_LABEL.into(), hash.into());
    let mut selector: LabelSelector = d.spec.selector.clone();
    selector.match_labels.insert(HASH_LABEL.into(), hash.into());
    let desired = d.spec.replicas.unwrap_or(1);
    let annotations: BTreeMap<String, String> = [
        (REVISION.to_owned(), revision.to_string()),
        (
            "deployment.kubernetes.io/desired-replicas".to_owned(),
            desired.to_string(),
        ),
        (
            "deployment.kubernetes.io/max-replicas".to_owned(),
            (desired + limits(d, desired).0).to_string(),
        ),
    ]
    .into();
    ReplicaSet {
        metadata: ObjectMeta {
            name: format!("{}-{hash}", d.metadata.name),
            namespace: d.metadata.namespace.clone(),
            labels: template.metadata.labels.clone(),
            annotations,
            owner_references: vec![controller_ref(d)],
            ..Default::default()
        },
        spec: ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: d.spec.min_ready_seconds,
            selector,
            template,
        },
        ..Default::default()
    }
}

/// The status `d` has with replica sets `all` (the new one: `new`).
fn status_of(d: &Deployment, all: &[ReplicaSet], new: Option<&ReplicaSet>) -> DeploymentStatus {
    let desired = d.spec.replicas.unwrap_or(1);
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| all.iter().map(f).sum::<i32>();
    let replicas = sum(&|rs| rs.status.as_ref().map_or(0, |s| s.replicas));
    let ready = sum(&|rs| rs.status.as_ref().map_or(0, |s| s.ready_replicas));
    let avail = sum(&available);
    let updated = new.map_or(0, |rs| rs.status.as_ref().map_or(0, |s| s.replicas));
    let (_, max_unavailable) = limits(d, desired);
    let old = d.status.clone().unwrap_or_default();
    let condition = |kind: &str, status: &str, reason: &str, message: String| {
        let previous = old.condition(kind);
        let same = previous
            .is_some_and(|p| p.status == status && p.reason == reason && p.message == message);
        match previous {
            Some(p) if same => p.clone(),
            _ => DeploymentCondition {
                kind: kind.into(),
                status: status.into(),
                last_update_time: Some(now()),
                last_transition_time: match previous {
                    Some(p) if p.status == status => p.last_transition_time.clone(),
                    _ => Some(now()),
                },
                reason: reason.into(),
                message,
            },
        }
    };
    let available = if avail >= desired - max_unavailable {
        condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        )
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    };
    let new_name = new.map_or(String::new(), |rs| rs.metadata.name.clone());
    let complete = new.is_some() && updated == desired && replicas == updated && avail >= desired;
    let progressing = if d.spec.paused == Some(true) {
        condition(
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
        )
    } else if complete {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet {new_name:?} has successfully progressed."),
        )
    } else {
        condition(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet {new_name:?} is progressing."),
        )
    };
    DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas,
        updated_replicas: updated,
        ready_replicas: ready,
        available_replicas: avail,
        unavailable_replicas: (desired - avail).max(0),
        conditions: vec![available, progressing],
        collision_count: old.collision_count,
    }
}

impl Ctx {
    fn wrote(&self, deployment: &str, revision: i64) {
        self.writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(deployment.to_owned(), revision);
    }

    /// Sets the replicas of `rs` and records the write.
    async fn scale(
        &self,
        d: &Deployment,
        key: &str,
        mut rs: ReplicaSet,
        to: i32,
    ) -> Result<(), ApiError> {
        let from = replicas(&rs);
        rs.spec.replicas = Some(to);
        let updated = self.e.registry.update(rs, Part::Main).await?;
        self.wrote(key, updated.revision());
        let how = if to > from { "up" } else { "down" };
        self.e
            .events
            .normal(
                d,
                "ScalingReplicaSet",
                format!(
                    "Scaled {how} replica set {} to {to} from {from}",
                    updated.metadata.name
                ),
            )
            .await;
        Ok(())
    }
}

async fn reconcile(ctx: Arc<Ctx>, req: Request<Deployment>) -> Result<Action, ApiError> {
    let Some(object) = req.object else {
        ctx.writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&req.name);
        return Ok(Action::AwaitChange);
    };
    let last = ctx
        .writes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&req.name)
        .copied()
        .unwrap_or(0);
    if !caught_up(&ctx.rss, last, Duration::from_secs(5)).await {
        return Ok(Action::Requeue(Duration::from_millis(100)));
    }
    let d = from_cache(&object);
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::AwaitChange);
    }
    let registry = &ctx.e.registry;
    let (ns, uid) = (d.metadata.namespace.clone(), d.metadata.uid.clone());
    let prefix = format!("{ns}/");
    let mut owned: Vec<ReplicaSet> = Vec::new();
    for o in ctx
        .rss
        .list()
        .iter()
        .filter(|o| o.name.starts_with(&prefix))
    {
        let mut rs = from_cache(o);
        match rs
            .metadata
            .owner_references
            .iter()
            .find(|r| r.is_controller())
            .map(|r| r.uid.clone())
        {
            Some(u) if u == uid => {
                if d.spec.selector.matches(&rs.metadata.labels) {
                    owned.push(rs);
                } else {
                    rs.metadata.owner_references.retain(|r| r.uid != uid);
                    registry.update(rs, Part::Main).await?;
                }
            }
            None if d.spec.selector.matches(&rs.metadata.labels)
                && rs.metadata.deletion_timestamp.is_none() =>
            {
                if !can_adopt(registry, &d).await? {
                    return Ok(Action::AwaitChange);
                }
                rs.metadata.owner_references.push(controller_ref(&d));
                let adopted = registry.update(rs, Part::Main).await?;
                ctx.wrote(&req.name, adopted.revision());
                return Ok(Action::AwaitChange);
            }
            _ => {}
        }
    }
    owned.sort_by_key(revision_of);
    let target = without_hash(&d.spec.template);
    let new = owned
        .iter()
        .position(|rs| without_hash(&rs.spec.template) == target);
    let max_revision = owned.iter().map(revision_of).max().unwrap_or(0);
    let desired = d.spec.replicas.unwrap_or(1);
    let paused = d.spec.paused == Some(true);
    let recreate = d
        .spec
        .strategy
        .as_ref()
        .is_some_and(|s| s.kind == "Recreate");
    // Report first: one write per reconcile, and `kubectl rollout status`
    // sees every step.
    let status = status_of(&d, &owned, new.map(|i| &owned[i]));
    if d.status.as_ref() != Some(&status) {
        let mut updated = d.clone();
        updated.status = Some(status);
        registry.update(updated, Part::Status).await?;
        return Ok(Action::AwaitChange);
    }

    if !paused {
        let Some(new_index) = new else {
            // A template not seen before: its replica set, under the next revision.
            let collisions = d
                .status
                .as_ref()
                .and_then(|s| s.collision_count)
                .unwrap_or(0);
            let hash = template_hash(&target, collisions);
            let all: i32 = owned.iter().map(replicas).sum();
            let (surge, _) = limits(&d, desired);
            let start = if owned.iter().all(|rs| replicas(rs) == 0) && !recreate {
                desired
            } else if recreate {
                0
            } else {
                (desired + surge - all).clamp(0, desired)
            };
            let rs = new_replica_set(&d, &hash, max_revision + 1, start);
            match registry.create(rs, false).await {
                Ok(created) => {
                    ctx.wrote(&req.name, created.revision());
                    ctx.e
                        .events
                        .normal(
                            &d,
                            "ScalingReplicaSet",
                            format!("Scaled up replica set {} to {start}", created.metadata.name),
                        )
                        .await;
                }
                Err(e) if e.is_already_exists() => {
                    // Another template hashed to that name: count the collision.
                    let mut bumped = d.clone();
                    bumped
                        .status
                        .get_or_insert_with(Default::default)
                        .collision_count = Some(collisions + 1);
                    registry.update(bumped, Part::Status).await?;
                }
                Err(e) => return Err(e),
            }
            return Ok(Action::AwaitChange);
        };
        let new_rs = owned[new_index].clone();
        let new_revision = revision_of(&new_rs);
        if new_revision < max_revision || new_revision == 0 {
            // Rolled back to this template: it becomes the newest revision.
            let mut rs = new_rs.clone();
            rs.metadata.annotations.insert(
                REVISION.into(),
                (max_revision.max(new_revision) + 1).to_string(),
            );
            let updated = registry.update(rs, Part::Main).await?;
            ctx.wrote(&req.name, updated.revision());
            return Ok(Action::AwaitChange);
        }
        if d.metadata.annotations.get(REVISION) != Some(&new_revision.to_string()) {
            let mut annotated = d.clone();
            annotated
                .metadata
                .annotations
                .insert(REVISION.into(), new_revision.to_string());
            registry.update(annotated, Part::Main).await?;
            return Ok(Action::AwaitChange);
        }
        let old: Vec<ReplicaSet> = owned
            .iter()
            .filter(|rs| rs.metadata.uid != new_rs.metadata.uid)
            .cloned()
            .collect();
        if let Some(action) = roll(&ctx, &req.name, &d, &new_rs, &old, recreate).await? {
            return Ok(action);
        }
        // Done rolling: forget sets beyond the history limit.
        let limit = d.spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let idle: Vec<&ReplicaSet> = old
            .iter()
            .filter(|rs| replicas(rs) == 0 && rs.status.as_ref().is_none_or(|s| s.replicas == 0))
            .collect();
        for rs in idle.iter().take(idle.len().saturating_sub(limit)) {
            match registry
                .delete::<ReplicaSet>(&ns, &rs.metadata.name, &DeleteOptions::default())
                .await
            {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
    } else if let Some(i) = new {
        // Paused: keep scaling the current set when it is the only active one.
        let rs = &owned[i];
        let others_active = owned
            .iter()
            .any(|o| o.metadata.uid != rs.metadata.uid && replicas(o) > 0);
        if !others_active && replicas(rs) != desired {
            ctx.scale(&d, &req.name, rs.clone(), desired).await?;
            return Ok(Action::AwaitChange);
        }
    }
    Ok(Action::AwaitChange)
}

/// One step of the rollout; `None` when there is nothing left to do.
async fn roll(
    ctx: &Ctx,
    key: &str,
    d: &Deployment,
    new: &ReplicaSet,
    old: &[ReplicaSet],
    recreate: bool,
) -> Result<Option<Action>, ApiError> {
    let desired = d.spec.replicas.unwrap_or(1);
    if recreate {
        if let Some(rs) = old.iter().find(|rs| replicas(rs) > 0) {
            ctx.scale(d, key, rs.clone(), 0).await?;
            return Ok(Some(Action::AwaitChange));
        }
        if old
            .iter()
            .any(|rs| rs.status.as_ref().is_some_and(|s| s.replicas > 0))
        {
            return Ok(None);
        }
        if replicas(new) != desired {
            ctx.scale(d, key, new.clone(), desired).await?;
            return Ok(Some(Action::AwaitChange));
        }
        return Ok(None);
    }
    let (surge, max_unavailable) = limits(d, desired);
    let all: i32 = replicas(new) + old.iter().map(replicas).sum::<i32>();
    if replicas(new) < desired {
        let up = (desired + surge - all).min(desired - replicas(new));
        if up > 0 {
            ctx.scale(d, key, new.clone(), replicas(new) + up).await?;
            return Ok(Some(Action::AwaitChange));
        }
    } else if replicas(new) > desired {
        ctx.scale(d, key, new.clone(), desired).await?;
        return Ok(Some(Action::AwaitChange));
    }
    let min_available = desired - max_unavailable;
    let new_unavailable = (replicas(new) - available(new)).max(0);
    let mut budget = all - min_available - new_unavailable;
    // Unhealthy old pods go first: they count for nothing.
    for rs in old.iter().filter(|rs| replicas(rs) > 0) {
        if budget <= 0 {
            break;
        }
        let unhealthy = replicas(rs) - available(rs);
        if unhealthy > 0 {
            let down = unhealthy.min(budget);
            ctx.scale(d, key, rs.clone(), replicas(rs) - down).await?;
            return Ok(Some(Action::AwaitChange));
        }
    }
    let available_total: i32 = available(new) + old.iter().map(available).sum::<i32>();
    budget = available_total - min_available;
    // One step at a time: the oldest set with replicas goes down first.
    if budget > 0
        && let Some(rs) = old.iter().find(|rs| replicas(rs) > 0)
    {
        let down = replicas(rs).min(budget);
        ctx.scale(d, key, rs.clone(), replicas(rs) - down).await?;
        return Ok(Some(Action::AwaitChange));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_and_template_specific() {
        let mut t = PodTemplateSpec::default();
        t.metadata.labels.insert("app".into(), "web".into());
        let a = template_hash(&t, 0);
        assert_eq!(a, template_hash(&t, 0));
        assert_ne!(a, template_hash(&t, 1));
        t.metadata.labels.insert("v".into(), "2".into());
        assert_ne!(a, template_hash(&t, 0));
        assert!(a.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }

    #[test]
    fn surge_and_unavailability_round_as_kubernetes() {
        let mut d = Deployment::default();
        d.spec.replicas = Some(4);
        assert_eq!(limits(&d, 4), (1, 1));
        assert_eq!(limits(&d, 10), (3, 2));
        d.spec.strategy = Some(crate::api::workloads::DeploymentStrategy {
            kind: "RollingUpdate".into(),
            rolling_update: Some(crate::api::workloads::RollingUpdateDeployment {
                max_unavailable: Some(IntOrString::Int(0)),
                max_surge: Some(IntOrString::Int(0)),
            }),
        });
        assert_eq!(limits(&d, 4), (0, 1));
    }
}
