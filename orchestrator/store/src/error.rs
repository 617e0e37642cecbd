//! The store's error types.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::engine::StorageKind;
use super::types::ApplyError;

/// Why a member's configuration or data dir cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    #[error("the member name is empty")]
    EmptyName,
    #[error("the cluster token is empty")]
    EmptyToken,
    #[error(
        "--listen-peer {0} is a wildcard address other members cannot dial; listen on a \
         concrete address or set an advertised peer address"
    )]
    WildcardPeer(SocketAddr),
    #[error("--initial-cluster does not list this member's name {0:?}")]
    NotInInitialCluster(String),
    #[error("data dir {0} holds no member to resume")]
    NothingToResume(PathBuf),
    #[error("data dir {0} is in use by another running member")]
    DataDirInUse(PathBuf),
    #[error("data dir {dir} belongs to member {owner:?}, not {name:?}")]
    DataDirOfAnother {
        dir: PathBuf,
        owner: String,
        name: String,
    },
    #[error(
        "data dir {dir} was created with --storage {recorded}; it cannot be opened with --storage {asked}"
    )]
    StorageMismatch {
        dir: PathBuf,
        recorded: StorageKind,
        asked: StorageKind,
    },
    #[error(
        "{dir} holds a Raft log of the {found} storage engine, but this member was started \
         with --storage {asked}; start it with --storage {found}"
    )]
    ForeignLog {
        dir: PathBuf,
        found: StorageKind,
        asked: StorageKind,
    },
    #[error("unknown storage engine {0:?} (expected \"file\", \"redb\" or \"fjall\")")]
    UnknownStorage(String),
    #[error("--listen-peer {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("{what}: {reason}")]
    Pki { what: &'static str, reason: String },
    #[error("joining needs a join token (herd1.<CA hash>.<id>.<secret>)")]
    NoJoinToken,
    #[error(
        "members that found a cluster together need its CA (--ca-cert and --ca-key); only a \
         member founding alone creates one"
    )]
    FoundingWithoutCa,
    #[error("raft timing: {0}")]
    Raft(#[source] Arc<openraft::ConfigError>),
}

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
    Config(#[from] ConfigError),
    /// An etcd-compatible request error (bad key, too large, unknown lease, …).
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The caller did not say who it is in a way this member accepts.
    #[error("{0}")]
    Unauthenticated(String),
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("peer {addr}: {detail}")]
    Peer { addr: String, detail: String },
    /// Raft refused or failed an operation (`op` says which).
    #[error("raft: {op}: {source}")]
    Raft {
        op: &'static str,
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The member a request was forwarded to failed it with this error.
    #[error("{0}")]
    Remote(String),
    /// A peer or the state machine answered something this version does
    /// not expect (a bug, or members of different versions).
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    #[error("{what}: the task failed: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: Arc<tokio::task::JoinError>,
    },
    #[error("join via {addr} failed: {detail}")]
    Join { addr: String, detail: String },
    #[error("the store is shutting down")]
    Stopped,
}

impl StoreError {
    /// A Raft error from operation `op`.
    pub(crate) fn raft(
        op: &'static str,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Raft {
            op,
            source: Arc::new(e),
        }
    }

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
            StoreError::Config(e) => StoreError::Config(e.clone()),
            StoreError::InvalidRequest(s) => StoreError::InvalidRequest(s.clone()),
            StoreError::Apply(e) => StoreError::Apply(e.clone()),
            StoreError::NoLeader => StoreError::NoLeader,
            StoreError::Timeout => StoreError::Timeout,
            StoreError::Unauthenticated(s) => StoreError::Unauthenticated(s.clone()),
            StoreError::LeaseNotFound => StoreError::LeaseNotFound,
            StoreError::MemberNotFound => StoreError::MemberNotFound,
            StoreError::Peer { addr, detail } => StoreError::Peer {
                addr: addr.clone(),
                detail: detail.clone(),
            },
            StoreError::Raft { op, source } => StoreError::Raft {
                op,
                source: Arc::clone(source),
            },
            StoreError::Unexpected(s) => StoreError::Unexpected(s.clone()),
            StoreError::Remote(s) => StoreError::Remote(s.clone()),
            StoreError::Task { what, source } => StoreError::Task {
                what,
                source: Arc::clone(source),
            },
            StoreError::Join { addr, detail } => StoreError::Join {
                addr: addr.clone(),
                detail: detail.clone(),
            },
            StoreError::Stopped => StoreError::Stopped,
        }
    }
}
