//! The replicated key-value store (etcd's role): Raft via openraft, an MVCC key space, watches and leases.
//!
//! Entry point: [`Member::start`] with a [`Config`]; the returned [`Member`]
//! serves etcd-shaped requests ([`types`]) that the gRPC layer maps to the
//! etcd v3 protobuf messages.

pub mod backup;
pub mod engine;
mod error;
pub mod log;
pub mod member;
pub mod mvcc;
pub mod peer;
mod propose;
mod read_index;
pub mod restore;
pub mod sm;
pub mod types;

pub use engine::{StorageKind, disk_size};
pub use error::StoreError;
pub use member::{Config, Limits, Member, has_state, member_id};
pub use peer::Partition;
pub use sm::Watch;

#[cfg(test)]
mod tests;
