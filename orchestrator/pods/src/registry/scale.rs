//! The `scale` subresource: a ReplicationController's, ReplicaSet's or
//! Deployment's replica count seen as an `autoscaling/v1` Scale.

use super::{Part, Registry, patch};
use crate::api::meta::{ObjectMeta, map_query};
use crate::api::workloads::{ScaleSpec, ScaleStatus};
use crate::api::{
    ApiError, ApiObject, Cause, Deployment, ReplicaSet, ReplicationController, Scale,
};

/// A kind with a replica count.
pub trait ScaleTarget: ApiObject {
    fn replicas(&self) -> i32;
    fn set_replicas(&mut self, n: i32);
    fn observed_replicas(&self) -> i32;
    /// The pods' selector in query syntax.
    fn selector_query(&self) -> String;
}

impl ScaleTarget for ReplicationController {
    fn replicas(&self) -> i32 {
        self.spec.replicas.unwrap_or(1)
    }
    fn set_replicas(&mut self, n: i32) {
        self.spec.replicas = Some(n);
    }
    fn observed_replicas(&self) -> i32 {
        self.status.as_ref().map_or(0, |s| s.replicas)
    }
    fn selector_query(&self) -> String {
        map_query(&self.spec.selector)
    }
}

impl ScaleTarget for ReplicaSet {
    fn replicas(&self) -> i32 {
        self.spec.replicas.unwrap_or(1)
    }
    fn set_replicas(&mut self, n: i32) {
        self.spec.replicas = Some(n);
    }
    fn observed_replicas(&self) -> i32 {
        self.status.as_ref().map_or(0, |s| s.replicas)
    }
    fn selector_query(&self) -> String {
        self.spec.selector.to_query()
    }
}

impl ScaleTarget for Deployment {
    fn replicas(&self) -> i32 {
        self.spec.replicas.unwrap_or(1)
    }
    fn set_replicas(&mut self, n: i32) {
        self.spec.replicas = Some(n);
    }
    fn observed_replicas(&self) -> i32 {
        self.status.as_ref().map_or(0, |s| s.replicas)
    }
    fn selector_query(&self) -> String {
        self.spec.selector.to_query()
    }
}

/// The Scale of `object`.
pub fn scale_of<T: ScaleTarget>(object: &T) -> Scale {
    let m = object.meta();
    Scale {
        api_version: "autoscaling/v1".into(),
        kind: "Scale".into(),
        metadata: ObjectMeta {
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            uid: m.uid.clone(),
            resource_version: m.resource_version.clone(),
            creation_timestamp: m.creation_timestamp.clone(),
            ..Default::default()
        },
        spec: ScaleSpec {
            replicas: object.replicas(),
        },
        status: Some(ScaleStatus {
            replicas: object.observed_replicas(),
            selector: object.selector_query(),
        }),
    }
}

impl Registry {
    /// The `scale` of `name`.
    pub async fn get_scale<T: ScaleTarget>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Scale, ApiError> {
        Ok(scale_of(&self.get::<T>(namespace, name).await?))
    }

    /// Sets the replicas of `name` from `scale` (its resourceVersion, if
    /// any, must be current).
    pub async fn set_scale<T: ScaleTarget>(
        &self,
        namespace: &str,
        name: &str,
        scale: Scale,
    ) -> Result<Scale, ApiError> {
        if scale.spec.replicas < 0 {
            return Err(ApiError::invalid(
                T::INFO.what(),
                name,
                vec![Cause::invalid(
                    "spec.replicas",
                    scale.spec.replicas,
                    "must be greater than or equal to 0",
                )],
            ));
        }
        let expected: i64 = scale.metadata.resource_version.parse().unwrap_or(0);
        let updated = self
            .modify::<T>(namespace, name, Part::Main, |o| {
                if expected != 0 && o.revision() != expected {
                    return Err(ApiError::conflict(T::INFO.what(), name));
                }
                o.set_replicas(scale.spec.replicas);
                Ok(())
            })
            .await?;
        Ok(scale_of(&updated))
    }

    /// Patches the `scale` of `name`.
    pub async fn patch_scale<T: ScaleTarget>(
        &self,
        namespace: &str,
        name: &str,
        kind: patch::PatchKind,
        body: &[u8],
    ) -> Result<Scale, ApiError> {
        let current = self.get_scale::<T>(namespace, name).await?;
        let mut doc = serde_json::to_value(&current).expect("a scale serializes");
        let root = crate::api::schema::definitions().get("io.k8s.api.autoscaling.v1.Scale");
        patch::apply_value(&mut doc, kind, body, root)?;
        crate::api::decode::strip_nulls(&mut doc);
        let mut scale: Scale = serde_json::from_value(doc).map_err(|e| {
            ApiError::bad_request(format!("the patched scale does not decode: {e}"))
        })?;
        if scale.metadata.resource_version == current.metadata.resource_version {
            scale.metadata.resource_version.clear();
        }
        self.set_scale::<T>(namespace, name, scale).await
    }
}
