//! The registry: Kubernetes objects in the store, with Kubernetes'
//! semantics. `resourceVersion` is the store's mod revision; updates and
//! deletes compare it in the same transaction that writes, so a stale
//! writer gets 409 and nothing is half-written; creation stamps `uid`,
//! `creationTimestamp` and `generation`, defaults and validates; deletion
//! honours finalizers and propagation. The API server and the controllers
//! both write through here, so the rules hold whoever writes.

mod allocate;
mod delete;
pub mod hub;
pub mod patch;
mod scale;
pub mod txn;
pub mod watch;

use std::any::Any;
use std::sync::Arc;

use herd_client::Client;
use herd_client::proto::etcdserverpb::Compare;
use herd_client::proto::mvccpb::KeyValue;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::api::meta::{name_suffix, new_uid, now};
use crate::api::{ApiConfig, ApiError, ApiObject, Namespace, Service};

pub use delete::{DeleteOptions, Deletion, Propagation};
pub use scale::{ScaleTarget, scale_of};

/// Which part of an object an update writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Everything but the status (the main resource).
    Main,
    /// Only the status (the `status` subresource).
    Status,
}

/// A lease events hang off, so they expire by themselves after an hour
/// (as Kubernetes' `--event-ttl`), shared by the events of one minute.
struct EventLease {
    lease: i64,
    granted: tokio::time::Instant,
}

/// How long events live.
pub const EVENT_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Typed access to the objects under `/registry`. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    client: Client,
    config: Arc<ApiConfig>,
    /// Added to every write: the election a controller holds, so a
    /// deposed leader's late writes fail instead of landing.
    fence: Option<Compare>,
    events: Arc<Mutex<Option<EventLease>>>,
    hubs: Arc<hub::Hubs>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Decodes a stored object; its resourceVersion is the key's mod revision.
pub fn decode<T: ApiObject>(kv: &KeyValue) -> Result<T, ApiError> {
    let mut object: T = serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::internal(format!(
            "{}: the stored object does not decode: {e}",
            String::from_utf8_lossy(&kv.key)
        ))
    })?;
    object.meta_mut().resource_version = kv.mod_revision.to_string();
    object.set_type_meta();
    Ok(object)
}

/// An object from a controller's cache, with its resourceVersion.
pub fn from_cache<T: ApiObject>(o: &herd_client::kit::Object<T>) -> T {
    let mut v = o.value.clone();
    v.meta_mut().resource_version = o.mod_revision.to_string();
    v.set_type_meta();
    v
}

fn encode<T: ApiObject>(object: &T) -> Vec<u8> {
    let mut stored = object.clone();
    stored.meta_mut().resource_version.clear();
    serde_json::to_vec(&stored).expect("API objects serialize")
}

/// `target` with the status of `source` (absent if `source` has none).
fn with_status_of<T: ApiObject>(target: &T, source: &T) -> Result<T, ApiError> {
    let mut v = serde_json::to_value(target).expect("API objects serialize");
    match serde_json::to_value(source)
        .expect("API objects serialize")
        .get("status")
    {
        Some(s) => v["status"] = s.clone(),
        None => {
            if let Some(m) = v.as_object_mut() {
                m.remove("status");
            }
        }
    }
    serde_json::from_value(v).map_err(|e| ApiError::internal(format!("merging status: {e}")))
}

fn spec_of<T: ApiObject>(object: &T) -> Value {
    let mut v = serde_json::to_value(object).expect("API objects serialize");
    match v.as_object_mut() {
        Some(m) => {
            m.remove("metadata");
            m.remove("status");
            v
        }
        None => v,
    }
}

impl Registry {
    pub fn new(client: Client, config: ApiConfig) -> Registry {
        Registry {
            client,
            config: Arc::new(config),
            fence: None,
            events: Arc::new(Mutex::new(None)),
            hubs: Arc::new(hub::Hubs::default()),
        }
    }

    /// A registry whose writes also require `fence` to hold.
    pub fn fenced(&self, fence: Compare) -> Registry {
        Registry {
            fence: Some(fence),
            ..self.clone()
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn config(&self) -> &ApiConfig {
        &self.config
    }

    fn compares(&self, mut own: Vec<Compare>) -> Vec<Compare> {
        own.extend(self.fence.clone());
        own
    }

    /// The error of a write whose fence failed.
    fn fence_lost(&self) -> ApiError {
        ApiError::unavailable("this controller lost its election; the write was not made")
    }

    /// Whether a failed transaction failed on the fence.
    async fn fence_failed(&self) -> bool {
        let Some(f) = &self.fence else { return false };
        let key = String::from_utf8_lossy(&f.key).into_owned();
        let want = match f.target_union {
            Some(herd_client::proto::etcdserverpb::compare::TargetUnion::CreateRevision(r)) => r,
            _ => return false,
        };
        match txn::get(&self.client, &key).await {
            Ok((Some(kv), _)) => kv.create_revision != want,
            Ok((None, _)) => true,
            Err(_) => false,
        }
    }

    /// The object `name` in `namespace` (ignored for cluster-scoped kinds).
    pub async fn get<T: ApiObject>(&self, namespace: &str, name: &str) -> Result<T, ApiError> {
        let key = T::INFO.key(namespace, name);
        match txn::get(&self.client, &key).await? {
            (Some(kv), _) => decode(&kv),
            (None, _) => Err(ApiError::not_found(T::INFO.what(), name)),
        }
    }

    /// Every object of `T` in `namespace` (all namespaces with `None`),
    /// and the revision the list is at.
    pub async fn list<T: ApiObject>(
        &self,
        namespace: Option<&str>,
    ) -> Result<(Vec<T>, i64), ApiError> {
        let (kvs, revision) = txn::range(&self.client, &T::INFO.scope_prefix(namespace)).await?;
        let objects = kvs.iter().map(decode).collect::<Result<Vec<T>, _>>()?;
        Ok((objects, revision))
    }

    /// Checks that `namespace` exists and takes new objects; the compare
    /// that keeps it so until the write lands.
    async fn namespace_open<T: ApiObject>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<Compare>, ApiError> {
        if !T::INFO.namespaced {
            return Ok(Vec::new());
        }
        let key = Namespace::INFO.key("", namespace);
        let (kv, _) = txn::get(&self.client, &key).await?;
        let Some(kv) = kv else {
            return Err(ApiError::not_found(Namespace::INFO.what(), namespace));
        };
        let ns: Namespace = decode(&kv)?;
        if ns.metadata.deletion_timestamp.is_some() {
            return Err(ApiError::forbidden(
                T::INFO.what(),
                name,
                &format!(
                    "unable to create new content in namespace {namespace} because it is being terminated"
                ),
            ));
        }
        Ok(vec![txn::mod_is(&key, kv.mod_revision)])
    }

    /// Stamps, defaults and validates a new object.
    fn prepare_create<T: ApiObject>(&self, object: &mut T) -> Result<(), ApiError> {
        let info = T::INFO;
        object.set_type_meta();
        let m = object.meta_mut();
        if !info.namespaced {
            m.namespace.clear();
        } else if m.namespace.is_empty() {
            m.namespace = "default".into();
        }
        if m.name.is_empty() && !m.generate_name.is_empty() {
            m.name = format!("{}{}", m.generate_name, name_suffix());
        }
        m.uid = new_uid();
        m.creation_timestamp = Some(now());
        m.resource_version.clear();
        m.deletion_timestamp = None;
        m.deletion_grace_period_seconds = None;
        m.generation = if info.generation { 1 } else { 0 };
        // Nodes arrive with the status their node reports; for every other
        // kind the server decides the first status.
        if info.status && info.kind != "Node" {
            object.reset_status();
        }
        object.apply_defaults();
        let errs = object.validate(&self.config);
        if !errs.is_empty() {
            return Err(ApiError::invalid(info.what(), &object.meta().name, errs));
        }
        Ok(())
    }

    fn check_size<T: ApiObject>(&self, object: &T, bytes: usize) -> Result<(), ApiError> {
        if bytes > self.config.max_object_bytes {
            return Err(ApiError {
                details: Box::new(crate::api::status::Details {
                    name: object.meta().name.clone(),
                    kind: T::INFO.plural.into(),
                    ..Default::default()
                }),
                ..ApiError::too_large(self.config.max_object_bytes)
            });
        }
        Ok(())
    }

    /// Creates `object` (`dry_run`: validates and answers, writes nothing).
    pub async fn create<T: ApiObject>(&self, mut object: T, dry_run: bool) -> Result<T, ApiError> {
        self.prepare_create(&mut object)?;
        let info = T::INFO;
        let namespace = object.meta().namespace.clone();
        // A few attempts: a generated name or an allocated IP may collide.
        for _ in 0..5 {
            let name = object.meta().name.clone();
            let key = info.key(&namespace, &name);
            let mut compares = vec![txn::absent(&key)];
            compares.extend(self.namespace_open::<T>(&namespace, &name).await?);
            let mut ops = Vec::new();
            if let Some(svc) = (&mut object as &mut dyn Any).downcast_mut::<Service>() {
                let (c, o) = allocate::service(&self.client, &self.config, None, svc).await?;
                compares.extend(c);
                ops.extend(o);
            }
            let lease = if info.kind == "Event" {
                self.event_lease().await?
            } else {
                0
            };
            let value = encode(&object);
            self.check_size(&object, value.len())?;
            if dry_run {
                return Ok(object);
            }
            ops.push(txn::put(&key, value, lease));
            let resp = txn::txn(&self.client, self.compares(compares), ops).await?;
            if resp.succeeded {
                object.meta_mut().resource_version =
                    resp.header.map_or(0, |h| h.revision).to_string();
                return Ok(object);
            }
            if self.fence_failed().await {
                return Err(self.fence_lost());
            }
            if txn::get(&self.client, &key).await?.0.is_some() {
                if !object.meta().generate_name.is_empty() {
                    let generated = format!("{}{}", object.meta().generate_name, name_suffix());
                    object.meta_mut().name = generated;
                    continue;
                }
                return Err(ApiError::already_exists(info.what(), &name));
            }
            // The namespace changed or an allocation collided: try again.
        }
        Err(ApiError::unavailable(format!(
            "could not create {} {:?}: the store kept changing underneath",
            info.plural,
            object.meta().name
        )))
    }

    /// Creates many objects of one kind in one transaction: all or none
    /// (a controller's batch of pods). Names must be given or generated.
    pub async fn create_all<T: ApiObject>(&self, mut objects: Vec<T>) -> Result<Vec<T>, ApiError> {
        if objects.is_empty() {
            return Ok(objects);
        }
        let mut compares = Vec::new();
        let mut ops = Vec::new();
        let mut namespaces = std::collections::BTreeSet::new();
        for o in &mut objects {
            self.prepare_create(o)?;
            let key = T::INFO.key(&o.meta().namespace, &o.meta().name);
            compares.push(txn::absent(&key));
            let value = encode(o);
            self.check_size(o, value.len())?;
            ops.push(txn::put(&key, value, 0));
            namespaces.insert(o.meta().namespace.clone());
        }
        for ns in &namespaces {
            compares.extend(self.namespace_open::<T>(ns, "").await?);
        }
        let resp = txn::txn(&self.client, self.compares(compares), ops).await?;
        if !resp.succeeded {
            if self.fence_failed().await {
                return Err(self.fence_lost());
            }
            return Err(ApiError::conflict(T::INFO.what(), &objects[0].meta().name));
        }
        let rev = resp.header.map_or(0, |h| h.revision).to_string();
        for o in &mut objects {
            o.meta_mut().resource_version = rev.clone();
        }
        Ok(objects)
    }

    /// The object an update of `old` to `new` writes, checked.
    fn prepare_update<T: ApiObject>(&self, old: &T, new: T, part: Part) -> Result<T, ApiError> {
        let info = T::INFO;
        let mut new = match part {
            Part::Main if info.status => with_status_of(&new, old)?,
            Part::Main => new,
            Part::Status => with_status_of(old, &new)?,
        };
        new.set_type_meta();
        let (o, n) = (old.meta(), new.meta_mut());
        n.name = o.name.clone();
        n.namespace = o.namespace.clone();
        n.uid = o.uid.clone();
        n.creation_timestamp = o.creation_timestamp.clone();
        n.deletion_timestamp = o.deletion_timestamp.clone();
        n.deletion_grace_period_seconds = o.deletion_grace_period_seconds;
        n.generation = o.generation;
        n.generate_name = o.generate_name.clone();
        n.resource_version = o.resource_version.clone();
        new.apply_defaults();
        let mut errs = new.validate(&self.config);
        errs.extend(new.validate_update(old));
        if !errs.is_empty() {
            return Err(ApiError::invalid(info.what(), &old.meta().name, errs));
        }
        if info.generation && spec_of(&new) != spec_of(old) {
            new.meta_mut().generation = old.meta().generation + 1;
        }
        Ok(new)
    }

    /// Replaces the object (its main part or its status). A non-empty
    /// resourceVersion must be current (else 409); an empty one updates
    /// whatever is current.
    pub async fn update<T: ApiObject>(&self, object: T, part: Part) -> Result<T, ApiError> {
        let info = T::INFO;
        let (namespace, name) = (object.meta().namespace.clone(), object.meta().name.clone());
        let key = info.key(&namespace, &name);
        let expected = object.revision();
        loop {
            let old: T = self.get(&namespace, &name).await?;
            if expected != 0 && expected != old.revision() {
                return Err(ApiError::conflict(info.what(), &name));
            }
            let mut new = self.prepare_update(&old, object.clone(), part)?;
            let unchanged = encode(&new) == encode(&old);
            if unchanged {
                return Ok(old);
            }
            let mut compares = vec![txn::mod_is(&key, old.revision())];
            let mut ops = Vec::new();
            // Namespaces go only when the namespace controller emptied them.
            let finished = new.meta().deletion_timestamp.is_some()
                && new.meta().finalizers.is_empty()
                && info.kind != "Namespace";
            if finished {
                // The last finalizer is gone: the object goes.
                ops.push(txn::delete(&key));
                if let Some(svc) = (&old as &dyn Any).downcast_ref::<Service>() {
                    ops.extend(allocate::release(svc));
                }
            } else {
                if let (Some(old_svc), Some(svc)) = (
                    (&old as &dyn Any).downcast_ref::<Service>(),
                    (&mut new as &mut dyn Any).downcast_mut::<Service>(),
                ) {
                    let (c, o) =
                        allocate::service(&self.client, &self.config, Some(old_svc), svc).await?;
                    compares.extend(c);
                    ops.extend(o);
                }
                let value = encode(&new);
                self.check_size(&new, value.len())?;
                ops.push(txn::put(&key, value, 0));
            }
            let resp = txn::txn(&self.client, self.compares(compares), ops).await?;
            if resp.succeeded {
                new.meta_mut().resource_version = resp.header.map_or(0, |h| h.revision).to_string();
                return Ok(new);
            }
            if self.fence_failed().await {
                return Err(self.fence_lost());
            }
            if expected != 0 {
                return Err(ApiError::conflict(info.what(), &name));
            }
        }
    }

    /// Reads, changes with `change` and writes back, retrying on
    /// conflicts (a `GuaranteedUpdate`).
    pub async fn modify<T: ApiObject>(
        &self,
        namespace: &str,
        name: &str,
        part: Part,
        mut change: impl FnMut(&mut T) -> Result<(), ApiError>,
    ) -> Result<T, ApiError> {
        for _ in 0..16 {
            let mut object: T = self.get(namespace, name).await?;
            change(&mut object)?;
            match self.update(object, part).await {
                Err(e) if e.is_conflict() => continue,
                other => return other,
            }
        }
        Err(ApiError::conflict(T::INFO.what(), name))
    }

    /// The lease of events created now.
    async fn event_lease(&self) -> Result<i64, ApiError> {
        let mut current = self.events.lock().await;
        if let Some(l) = current.as_ref()
            && l.granted.elapsed() < std::time::Duration::from_secs(60)
        {
            return Ok(l.lease);
        }
        let resp = self
            .client
            .lease()
            .lease_grant(herd_client::proto::etcdserverpb::LeaseGrantRequest {
                ttl: (EVENT_TTL.as_secs() + 60) as i64,
                id: 0,
            })
            .await
            .map_err(txn::store_error)?
            .into_inner();
        *current = Some(EventLease {
            lease: resp.id,
            granted: tokio::time::Instant::now(),
        });
        Ok(resp.id)
    }

    /// Creates the namespaces every cluster has (`default`, `kube-system`,
    /// `kube-public`) if they are missing; any API server may do it, the
    /// store keeps one of each.
    pub async fn ensure_namespaces(&self) -> Result<(), ApiError> {
        for name in ["default", "kube-system", "kube-public"] {
            let ns = Namespace {
                metadata: crate::api::ObjectMeta {
                    name: name.into(),
                    ..Default::default()
                },
                ..Default::default()
            };
            match self.create(ns, false).await {
                Ok(_) => tracing::info!(namespace = name, "namespace created"),
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Patches `name` (see [`patch::PatchKind`]); retried on conflicts
    /// unless the patch itself names a resourceVersion.
    pub async fn patch<T: ApiObject>(
        &self,
        namespace: &str,
        name: &str,
        kind: patch::PatchKind,
        body: &[u8],
        part: Part,
    ) -> Result<T, ApiError> {
        for _ in 0..16 {
            let current: T = self.get(namespace, name).await?;
            let (new, precondition) = patch::apply_for_update(&current, kind, body)?;
            match self.update(new, part).await {
                Err(e) if e.is_conflict() && !precondition => continue,
                other => return other,
            }
        }
        Err(ApiError::conflict(T::INFO.what(), name))
    }

    /// Writes `object` as it is if it is still at its resourceVersion: a
    /// trusted write of a controller that sets what clients may not in
    /// one go (a binding with its condition, a status with its spec).
    pub async fn put<T: ApiObject>(&self, mut object: T) -> Result<T, ApiError> {
        let key = T::INFO.key(&object.meta().namespace, &object.meta().name);
        let value = encode(&object);
        self.check_size(&object, value.len())?;
        let resp = txn::txn(
            &self.client,
            self.compares(vec![txn::mod_is(&key, object.revision())]),
            vec![txn::put(&key, value, 0)],
        )
        .await?;
        if resp.succeeded {
            object.meta_mut().resource_version = resp.header.map_or(0, |h| h.revision).to_string();
            Ok(object)
        } else if self.fence_failed().await {
            Err(self.fence_lost())
        } else {
            Err(ApiError::conflict(T::INFO.what(), &object.meta().name))
        }
    }

    /// Binds an unbound `pod` (at its resourceVersion) to `node`, with its
    /// PodScheduled condition, in one write.
    pub async fn bind(
        &self,
        mut pod: crate::api::Pod,
        node: &str,
    ) -> Result<crate::api::Pod, ApiError> {
        if !pod.spec.node_name.is_empty() {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "pod {} is already assigned to node {:?}",
                    pod.metadata.name, pod.spec.node_name
                ),
            ));
        }
        pod.spec.node_name = node.to_owned();
        let status = pod.status.get_or_insert_with(Default::default);
        status.conditions.retain(|c| c.kind != "PodScheduled");
        status.conditions.push(crate::api::pod::PodCondition {
            kind: "PodScheduled".into(),
            status: "True".into(),
            last_transition_time: Some(now()),
            ..Default::default()
        });
        self.put(pod).await
    }
}
