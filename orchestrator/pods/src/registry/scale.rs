//! The `scale` subresource: a ReplicationController's, ReplicaSet's or
//! Deployment's replica count seen as an `autoscaling/v1` Scale.

use crate::api::meta::{ObjectMeta, map_query};
use crate::api::workloads::{ScaleSpec, ScaleStatus};
use crate::api::{ApiObject, Deployment, ReplicaSet, ReplicationController, Scale};

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
