//! The Kubernetes API's types and rules, independent of where objects are
//! stored or how they travel: the typed kinds (`v1` Pod,
//! ReplicationController, Service, Endpoints, Namespace, Node, Event;
//! `apps/v1` ReplicaSet, Deployment), their metadata, validation,
//! defaults, selectors, tables and the `Status` errors.

pub mod cluster;
pub mod decode;
pub mod kind;
mod kinds;
pub mod meta;
pub mod pod;
pub mod printers;
pub mod protobuf;
pub mod quantity;
pub mod schema;
pub mod selector;
pub mod service;
pub mod status;
pub mod table;
pub mod validation;
pub mod workloads;

pub use cluster::{Event, Namespace, Node};
pub use kind::{ApiConfig, ApiObject, KindInfo};
pub use meta::{ObjectMeta, OwnerReference};
pub use pod::Pod;
pub use service::{Endpoints, Service};
pub use status::{ApiError, Cause};
pub use workloads::{Deployment, ReplicaSet, ReplicationController, Scale};
