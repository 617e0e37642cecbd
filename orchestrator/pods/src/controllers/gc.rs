//! The garbage collector, by `ownerReferences`: a dependent (pod, replica
//! set) whose owners are all gone is deleted; one whose owner asked for
//! orphaning loses that reference. An owner deleted in the foreground
//! (finalizer `foregroundDeletion`) waits until its dependents are gone;
//! one deleted with orphaning (`orphan`) until they no longer name it;
//! then its finalizer is removed and the registry removes it. An owner a
//! cache does not show is looked up in the store before anything is
//! deleted: a cache that lags never costs a pod.

use std::sync::Arc;
use std::time::Duration;

use herd_client::kit::{Action, Cache, Controller, Request, Scope};
use tokio_util::sync::CancellationToken;

use super::Elected;
use crate::api::{
    ApiError, ApiObject, Deployment, OwnerReference, Pod, ReplicaSet, ReplicationController,
};
use crate::registry::{DeleteOptions, Part, Propagation, from_cache};

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";

/// The owner kinds' caches.
#[derive(Clone)]
struct Owners {
    rcs: Cache<ReplicationController>,
    rss: Cache<ReplicaSet>,
    deployments: Cache<Deployment>,
}

/// What is known of an owner.
enum OwnerState {
    Gone,
    Alive {
        deleting: bool,
        foreground: bool,
        orphan: bool,
    },
}

pub async fn run(e: Elected, cancel: CancellationToken) {
    tokio::join!(
        dependents::<Pod>("gc-pods", e.clone(), cancel.clone()),
        dependents::<ReplicaSet>("gc-replicasets", e.clone(), cancel.clone()),
        owners::<ReplicationController>("gc-replicationcontrollers", e.clone(), cancel.clone()),
        owners::<ReplicaSet>("gc-replicaset-owners", e.clone(), cancel.clone()),
        owners::<Deployment>("gc-deployments", e, cancel),
    );
}

fn refs_to(uid: &str, refs: &[OwnerReference]) -> bool {
    refs.iter().any(|r| r.uid == uid)
}

/// Names of the objects in `cache` that name `uid` as an owner.
fn naming<D: ApiObject>(cache: &Cache<D>, uid: &str) -> Vec<String> {
    cache
        .list()
        .into_iter()
        .filter(|o| refs_to(uid, &o.value.meta().owner_references))
        .map(|o| o.name)
        .collect()
}

struct DependentCtx<D> {
    e: Elected,
    owners: Owners,
    _kind: std::marker::PhantomData<fn() -> D>,
}

async fn dependents<D: ApiObject>(name: &'static str, e: Elected, cancel: CancellationToken) {
    let mut controller = Controller::<D>::new(name, e.client.clone(), Scope::All);
    let deps = controller.cache();
    macro_rules! owner_cache {
        ($t:ty) => {{
            let deps = deps.clone();
            controller.watches::<$t>(Scope::All, move |before, after| {
                let mut names: Vec<String> = [before, after]
                    .into_iter()
                    .flatten()
                    .flat_map(|o| naming(&deps, &o.value.metadata.uid))
                    .collect();
                names.sort();
                names.dedup();
                names
            })
        }};
    }
    let owners = Owners {
        rcs: owner_cache!(ReplicationController),
        rss: owner_cache!(ReplicaSet),
        deployments: owner_cache!(Deployment),
    };
    let ctx = Arc::new(DependentCtx::<D> {
        e,
        owners,
        _kind: std::marker::PhantomData,
    });
    controller.run(ctx, reconcile_dependent::<D>, cancel).await;
}

fn state_of<T: ApiObject>(o: &T) -> OwnerState {
    let m = o.meta();
    OwnerState::Alive {
        deleting: m.deletion_timestamp.is_some(),
        foreground: m.finalizers.iter().any(|f| f == FOREGROUND),
        orphan: m.finalizers.iter().any(|f| f == ORPHAN),
    }
}

/// The owner `r` (in namespace `ns`): from the cache, else from the store.
async fn owner_state(
    e: &Elected,
    owners: &Owners,
    ns: &str,
    r: &OwnerReference,
) -> Result<OwnerState, ApiError> {
    async fn look<T: ApiObject>(
        e: &Elected,
        cache: &Cache<T>,
        ns: &str,
        r: &OwnerReference,
    ) -> Result<OwnerState, ApiError> {
        let cached = cache.get(&T::INFO.store_name(ns, &r.name)).map(|o| o.value);
        let found = match cached {
            Some(o) if o.meta().uid == r.uid => Some(o),
            // Not in the cache (or another object of that name): ask the store.
            _ => match e.registry.get::<T>(ns, &r.name).await {
                Ok(o) if o.meta().uid == r.uid => Some(o),
                Ok(_) => None,
                Err(err) if err.is_not_found() => None,
                Err(err) => return Err(err),
            },
        };
        Ok(found.map_or(OwnerState::Gone, |o| state_of(&o)))
    }
    match r.kind.as_str() {
        "ReplicationController" => look(e, &owners.rcs, ns, r).await,
        "ReplicaSet" => look(e, &owners.rss, ns, r).await,
        "Deployment" => look(e, &owners.deployments, ns, r).await,
        // Owners of kinds herd does not serve are never judged gone.
        _ => Ok(OwnerState::Alive {
            deleting: false,
            foreground: false,
            orphan: false,
        }),
    }
}

async fn reconcile_dependent<D: ApiObject>(
    ctx: Arc<DependentCtx<D>>,
    req: Request<D>,
) -> Result<Action, ApiError> {
    let Some(object) = req.object else {
        return Ok(Action::AwaitChange);
    };
    let dep = from_cache(&object);
    let m = dep.meta();
    if m.owner_references.is_empty() || m.deletion_timestamp.is_some() {
        return Ok(Action::AwaitChange);
    }
    let mut dangling = Vec::new();
    let mut orphaned = Vec::new();
    let mut foreground = false;
    for r in &m.owner_references {
        match owner_state(&ctx.e, &ctx.owners, &m.namespace, r).await? {
            OwnerState::Gone => dangling.push(r.uid.clone()),
            OwnerState::Alive {
                deleting: true,
                orphan: true,
                ..
            } => orphaned.push(r.uid.clone()),
            OwnerState::Alive {
                deleting: true,
                foreground: true,
                ..
            } => foreground = true,
            OwnerState::Alive { .. } => {}
        }
    }
    let registry = &ctx.e.registry;
    let remaining = m.owner_references.len() - dangling.len() - orphaned.len();
    if (remaining == 0 && !dangling.is_empty()) || foreground {
        let propagation = if foreground {
            Propagation::Foreground
        } else {
            Propagation::Background
        };
        let options = DeleteOptions {
            propagation,
            precondition_uid: Some(m.uid.clone()),
            ..Default::default()
        };
        tracing::info!(kind = D::INFO.kind, object = %req.name, "garbage collecting: its owners are gone");
        match registry.delete::<D>(&m.namespace, &m.name, &options).await {
            Err(e) if !e.is_not_found() => return Err(e),
            _ => {}
        }
    } else if !dangling.is_empty() || !orphaned.is_empty() {
        let mut kept = dep.clone();
        kept.meta_mut()
            .owner_references
            .retain(|r| !dangling.contains(&r.uid) && !orphaned.contains(&r.uid));
        registry.update(kept, Part::Main).await?;
    }
    Ok(Action::AwaitChange)
}

struct OwnerCtx<O> {
    e: Elected,
    pods: Cache<Pod>,
    rss: Cache<ReplicaSet>,
    _kind: std::marker::PhantomData<fn() -> O>,
}

async fn owners<O: ApiObject>(name: &'static str, e: Elected, cancel: CancellationToken) {
    let mut controller = Controller::<O>::new(name, e.client.clone(), Scope::All);
    let owner_names = |refs: &[OwnerReference], ns: &str| -> Vec<String> {
        refs.iter()
            .filter(|r| r.kind == O::INFO.kind)
            .map(|r| O::INFO.store_name(ns, &r.name))
            .collect()
    };
    let pods = controller.watches::<Pod>(Scope::All, move |before, after| {
        [before, after]
            .into_iter()
            .flatten()
            .flat_map(|o| {
                owner_names(
                    &o.value.metadata.owner_references,
                    &o.value.metadata.namespace,
                )
            })
            .collect()
    });
    let rss = controller.watches::<ReplicaSet>(Scope::All, move |before, after| {
        [before, after]
            .into_iter()
            .flatten()
            .flat_map(|o| {
                owner_names(
                    &o.value.metadata.owner_references,
                    &o.value.metadata.namespace,
                )
            })
            .collect()
    });
    let ctx = Arc::new(OwnerCtx::<O> {
        e,
        pods,
        rss,
        _kind: std::marker::PhantomData,
    });
    controller.run(ctx, reconcile_owner::<O>, cancel).await;
}

async fn reconcile_owner<O: ApiObject>(
    ctx: Arc<OwnerCtx<O>>,
    req: Request<O>,
) -> Result<Action, ApiError> {
    let Some(object) = req.object else {
        return Ok(Action::AwaitChange);
    };
    let owner = from_cache(&object);
    let m = owner.meta();
    let (foreground, orphan) = (
        m.finalizers.iter().any(|f| f == FOREGROUND),
        m.finalizers.iter().any(|f| f == ORPHAN),
    );
    if m.deletion_timestamp.is_none() || !(foreground || orphan) {
        return Ok(Action::AwaitChange);
    }
    let registry = &ctx.e.registry;
    let mut remaining = 0;
    let mut orphaned = 0;
    macro_rules! each_dependent {
        ($cache:expr, $t:ty) => {
            for name in naming(&$cache, &m.uid) {
                let Some(o) = $cache.get(&name) else { continue };
                let mut dep = from_cache(&o);
                if orphan {
                    dep.metadata.owner_references.retain(|r| r.uid != m.uid);
                    registry.update(dep, Part::Main).await?;
                    orphaned += 1;
                } else {
                    remaining += 1;
                    if dep.metadata.deletion_timestamp.is_none() {
                        let options = DeleteOptions {
                            propagation: Propagation::Foreground,
                            precondition_uid: Some(dep.metadata.uid.clone()),
                            ..Default::default()
                        };
                        match registry
                            .delete::<$t>(&dep.metadata.namespace, &dep.metadata.name, &options)
                            .await
                        {
                            Err(e) if !e.is_not_found() => return Err(e),
                            _ => {}
                        }
                    }
                }
            }
        };
    }
    each_dependent!(ctx.pods, Pod);
    each_dependent!(ctx.rss, ReplicaSet);
    if remaining > 0 {
        // Their deletions wake this owner again.
        return Ok(Action::AwaitChange);
    }
    if orphaned > 0 {
        // The finalizer goes only on a pass that finds no dependent left
        // naming the owner, once the cache shows these writes: one taken
        // back meanwhile would be collected with the owner gone.
        return Ok(Action::Requeue(Duration::from_millis(200)));
    }
    let mut done = owner.clone();
    done.meta_mut()
        .finalizers
        .retain(|f| f != FOREGROUND && f != ORPHAN);
    registry.update(done, Part::Main).await?;
    tracing::info!(kind = O::INFO.kind, object = %req.name, "dependents handled; finalizer removed");
    Ok(Action::AwaitChange)
}
