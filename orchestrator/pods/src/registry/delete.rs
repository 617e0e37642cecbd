//! Deletion as Kubernetes does it: preconditions, finalizers for
//! foreground and orphan propagation, namespaces that terminate first,
//! and a service's cluster IP and node ports released with it.

use std::any::Any;

use super::{Registry, allocate, encode, txn};
use crate::api::meta::now;
use crate::api::{ApiError, ApiObject, Namespace, Service};

/// How a delete treats the objects owned by the deleted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    /// Delete now; the garbage collector deletes dependents afterwards.
    #[default]
    Background,
    /// Delete dependents first; the owner waits with a finalizer.
    Foreground,
    /// Keep dependents, removing their owner references.
    Orphan,
}

/// `DeleteOptions` as far as herd implements them.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub propagation: Propagation,
    pub precondition_uid: Option<String>,
    pub precondition_revision: Option<i64>,
}

/// What a delete did.
#[derive(Debug, Clone)]
pub enum Deletion<T> {
    /// Gone from the store; its resourceVersion is the deletion's revision.
    Deleted(T),
    /// Marked for deletion; finalizers still have work to do.
    Pending(T),
}

impl Registry {
    /// Deletes `name`, as `options` say (see [`Deletion`]).
    pub async fn delete<T: ApiObject>(
        &self,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Deletion<T>, ApiError> {
        let info = T::INFO;
        let key = info.key(namespace, name);
        loop {
            let old: T = self.get(namespace, name).await?;
            let m = old.meta();
            if let Some(uid) = &options.precondition_uid
                && *uid != m.uid
            {
                return Err(ApiError {
                    details: Box::new(crate::api::status::Details {
                        name: name.into(),
                        kind: info.plural.into(),
                        ..Default::default()
                    }),
                    ..ApiError::new(
                        409,
                        "Conflict",
                        format!(
                            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                            m.uid
                        ),
                    )
                });
            }
            if let Some(rv) = options.precondition_revision
                && rv != old.revision()
            {
                return Err(ApiError::conflict(info.what(), name));
            }
            let mut new = old.clone();
            if let Some(ns) = (&mut new as &mut dyn Any).downcast_mut::<Namespace>() {
                if matches!(name, "default" | "kube-system" | "kube-public") {
                    return Err(ApiError::forbidden(
                        info.what(),
                        name,
                        "this namespace may not be deleted",
                    ));
                }
                // The namespace controller empties it, then removes it.
                ns.status.get_or_insert_with(Default::default).phase = "Terminating".into();
            }
            let owner_kind = matches!(
                info.kind,
                "ReplicationController" | "ReplicaSet" | "Deployment"
            );
            let finalizer = match options.propagation {
                Propagation::Foreground if owner_kind => Some("foregroundDeletion"),
                Propagation::Orphan if owner_kind => Some("orphan"),
                _ => None,
            };
            let nm = new.meta_mut();
            if let Some(f) = finalizer
                && !nm.finalizers.iter().any(|x| x == f)
            {
                nm.finalizers.push(f.to_owned());
            }
            let namespace_kind = info.kind == "Namespace";
            let pending = !nm.finalizers.is_empty() || namespace_kind;
            let mut ops = Vec::new();
            if pending {
                if nm.deletion_timestamp.is_none() {
                    nm.deletion_timestamp = Some(now());
                    nm.deletion_grace_period_seconds = Some(0);
                }
                if encode(&new) == encode(&old) {
                    return Ok(Deletion::Pending(old));
                }
                ops.push(txn::put(&key, encode(&new), 0));
            } else {
                ops.push(txn::delete(&key));
                if let Some(svc) = (&old as &dyn Any).downcast_ref::<Service>() {
                    ops.extend(allocate::release(svc));
                }
            }
            let compares = self.compares(vec![txn::mod_is(&key, old.revision())]);
            let resp = txn::txn(&self.client, compares, ops).await?;
            if resp.succeeded {
                let rev = resp.header.map_or(0, |h| h.revision).to_string();
                return Ok(if pending {
                    new.meta_mut().resource_version = rev;
                    Deletion::Pending(new)
                } else {
                    // The revision it went at (as a watch's DELETED event says).
                    let mut gone = old;
                    gone.meta_mut().resource_version = rev;
                    Deletion::Deleted(gone)
                });
            }
            if self.fence_failed().await {
                return Err(self.fence_lost());
            }
            if options.precondition_revision.is_some() {
                return Err(ApiError::conflict(info.what(), name));
            }
        }
    }

    /// Removes an object whatever its finalizers say (the namespace
    /// controller's last step), if it is still at `revision`.
    pub async fn remove<T: ApiObject>(&self, object: &T) -> Result<(), ApiError> {
        let key = T::INFO.key(&object.meta().namespace, &object.meta().name);
        let resp = txn::txn(
            &self.client,
            self.compares(vec![txn::mod_is(&key, object.revision())]),
            vec![txn::delete(&key)],
        )
        .await?;
        if resp.succeeded {
            Ok(())
        } else if self.fence_failed().await {
            Err(self.fence_lost())
        } else {
            Err(ApiError::conflict(T::INFO.what(), &object.meta().name))
        }
    }
}
