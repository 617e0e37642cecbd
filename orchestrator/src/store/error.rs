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

/// Batches (of writes, of reads sharing a read index) hand every waiter the
/// same answer. `std::io::Error` is not `Clone`; its copy keeps the kind and
/// the message.
impl Clone for StoreError {
    fn clone(&self) -> Self {
        match self {
            StoreError::Io { path, source } => StoreError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            StoreError::Corrupt { path, detail } => StoreError::Corrupt {
                path: path.clone(),
                detail: detail.clone(),
            },
            StoreError::Config(s) => StoreError::Config(s.clone()),
            StoreError::InvalidRequest(s) => StoreError::InvalidRequest(s.clone()),
            StoreError::Apply(e) => StoreError::Apply(e.clone()),
            StoreError::NoLeader => StoreError::NoLeader,
            StoreError::Timeout => StoreError::Timeout,
            StoreError::LeaseNotFound => StoreError::LeaseNotFound,
            StoreError::MemberNotFound => StoreError::MemberNotFound,
            StoreError::Peer { addr, detail } => StoreError::Peer {
                addr: addr.clone(),
                detail: detail.clone(),
            },
            StoreError::Raft(s) => StoreError::Raft(s.clone()),
            StoreError::Join { addr, detail } => StoreError::Join {
                addr: addr.clone(),
                detail: detail.clone(),
            },
            StoreError::Stopped => StoreError::Stopped,
        }
    }
}
