//! The store's error type.

use std::path::{Path, PathBuf};

use super::types::ApplyError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupted data file {path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An etcd-compatible request error (bad key, too large, unknown lease, …).
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("peer {addr}: {detail}")]
    Peer { addr: String, detail: String },
    #[error("raft: {0}")]
    Raft(String),
    #[error("join via {addr} failed: {detail}")]
    Join { addr: String, detail: String },
    #[error("the store is shutting down")]
    Stopped,
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
