//! The replicated key-value store (etcd's role): Raft via openraft, an
//! MVCC key space, watches and leases, served over the etcd v3 gRPC API.
//!
//! Entry point: [`Member::start`] with a [`Config`]; the returned [`Member`]
//! serves etcd-shaped requests ([`types`]) that [`server`] maps to the etcd
//! v3 protobuf messages. Offline: [`backup`] (snapshot files) and
//! [`restore`] (a new cluster's data dirs from one). `herd kv` ([`cli`])
//! and `herd bench kv` ([`bench`]) are the store's command line.
//!
//! Private to this crate: the storage engines, the Raft log and state
//! machine, the MVCC key space and the peer transport. Other crates reach
//! the store only through its API (the `herd-client` crate).

pub mod admin;
pub mod auth;
pub mod backup;
pub mod bench;
pub mod cli;
mod engine;
mod error;
pub mod launch;
mod log;
mod member;
mod mvcc;
mod peer;
mod propose;
mod read_index;
pub mod restore;
pub mod server;
mod sm;
pub mod types;

pub use engine::{StorageKind, disk_size};
pub use error::{ConfigError, StoreError};
pub use member::{
    Bootstrap, Config, Limits, Member, Security, TlsSettings, TokenRecord, has_state, member_id,
    token_key,
};
pub use mvcc::KvHash;
pub use peer::Partition;
pub use sm::Watch;

#[cfg(test)]
mod security_tests;
#[cfg(test)]
mod tests;
