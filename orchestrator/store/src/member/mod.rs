//! One running store member: Raft and the peer listener, bootstrap, and the
//! etcd-shaped API, one job per module.

mod access;
mod bootstrap;
mod kv;
mod lease;
mod membership;
mod meta;
mod renew;
mod route;
mod security;
mod transfer;

pub use security::{Security, TlsSettings, TokenRecord, token_key};

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::Raft;
use openraft::error::{CheckIsLeaderError, RaftError};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use super::StoreError;
use super::engine::StorageKind;
use super::log::LogStore;
use super::peer::{ForwardResponse, Partition, PeerClient};
use super::propose::Proposer;
use super::read_index::ReadIndex;
use super::sm::{StateMachine, Watch};
use crate::types::{CommandResponse, PeerNode, ResponseHeader, TypeConfig, WatchRequest};

/// Request size limits (etcd's `--max-request-bytes` is 1.5 MiB).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_request_bytes: usize,
    /// Largest lease TTL in seconds (etcd: 9_000_000_000).
    pub max_lease_ttl: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 1536,
            max_request_bytes: 1536 * 1024,
            max_lease_ttl: 9_000_000_000,
        }
    }
}

/// How a member with a new data dir enters a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// Found a cluster of these members, `(name, peer address)`, this one
    /// included (the one with the smallest name initializes it). Empty: a
    /// single-member cluster of this member.
    Found(Vec<(String, String)>),
    /// Join a running cluster through any member's peer address.
    Join(String),
    /// Only resume: a data dir without a member is an error.
    Resume,
}

/// How a member starts. Build with [`Config::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    /// Address the peer listener binds.
    pub listen_peer: std::net::SocketAddr,
    /// Address other members use to reach this one (default: `listen_peer`).
    pub advertise_peer: Option<String>,
    /// Client (gRPC) address shown by `member list`.
    pub advertise_client: Option<String>,
    /// How members and clients prove who they are.
    pub security: Security,
    /// How the member enters a cluster when its data dir holds none yet
    /// (a data dir that does is always resumed, whatever this says).
    pub bootstrap: Bootstrap,
    /// Joiners are promoted to voter while the cluster has fewer voters.
    pub max_voters: usize,
    pub limits: Limits,
    pub heartbeat: Duration,
    pub election_timeout: (Duration, Duration),
    /// Build a snapshot (and purge the log) after this many entries.
    pub snapshot_threshold: u64,
    /// Entries kept in the log behind a snapshot, for followers slightly behind.
    pub keep_logs_after_snapshot: u64,
    pub join_timeout: Duration,
    pub request_timeout: Duration,
    /// The engine keeping the Raft log; fixed for a data dir's lifetime.
    /// `None`: the one recorded in `member.json`, [`StorageKind::DEFAULT`]
    /// for a new data dir. A different explicit choice is refused.
    pub storage: Option<StorageKind>,
}

impl Config {
    pub fn new(
        name: impl Into<String>,
        data_dir: impl Into<PathBuf>,
        listen_peer: std::net::SocketAddr,
        token: impl Into<String>,
    ) -> Self {
        Config {
            name: name.into(),
            data_dir: data_dir.into(),
            listen_peer,
            advertise_peer: None,
            advertise_client: None,
            security: Security::Insecure {
                token: token.into(),
            },
            bootstrap: Bootstrap::Found(Vec::new()),
            max_voters: 5,
            limits: Limits::default(),
            heartbeat: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(800), Duration::from_millis(1600)),
            snapshot_threshold: 20_000,
            keep_logs_after_snapshot: 1_000,
            join_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            storage: None,
        }
    }
}

/// Derived member id: stable per name, never 0.
pub fn member_id(name: &str) -> u64 {
    let h = Sha256::digest(format!("herd-member:{name}").as_bytes());
    u64::from_le_bytes(h[..8].try_into().expect("8 bytes")).max(1)
}

struct Inner {
    id: u64,
    name: String,
    /// Shared with the peer transport, which checks it in every handshake.
    cluster_id: Arc<AtomicU64>,
    raft: Raft<TypeConfig>,
    sm: StateMachine,
    log: LogStore,
    client: Arc<PeerClient>,
    partition: Partition,
    config: Config,
    /// Groups concurrent writes into one Raft entry.
    proposer: Proposer,
    /// Lets concurrent linearizable reads share read-index rounds.
    reads: ReadIndex,
    /// Writes hold it shared; a leadership transfer holds it exclusively so
    /// the log stands still while the target catches up and campaigns.
    transfer: tokio::sync::RwLock<()>,
    /// Its certificates and the cluster CA (TLS mode).
    pki: Option<herd_pki::files::MemberPki>,
    /// Its certificate now (renewed in place by `renew`).
    identity: Option<Arc<herd_pki::LiveIdentity>>,
    /// Held for the member's lifetime (exclusive lock on `data_dir/LOCK`).
    _lock: std::fs::File,
}

/// A running member. Dropping it stops its tasks; call [`Member::shutdown`] for a clean stop.
pub struct Member {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Member {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let raft = self.inner.raft.clone();
            handle.spawn(async move {
                let _ = raft.shutdown().await;
            });
        }
    }
}

fn raft_err<E: std::error::Error + Send + Sync + 'static>(e: E) -> StoreError {
    StoreError::raft("raft", e)
}

fn read_err(e: RaftError<u64, CheckIsLeaderError<u64, PeerNode>>) -> StoreError {
    match e {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))
        | RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)) => StoreError::NoLeader,
        other => raft_err(other),
    }
}

fn unexpected(r: ForwardResponse) -> StoreError {
    StoreError::Unexpected(format!("forwarded response {r:?}"))
}

fn unexpected_cmd(r: CommandResponse) -> StoreError {
    match r {
        CommandResponse::Failed(e) => StoreError::Apply(e),
        other => StoreError::Unexpected(format!("apply result {other:?}")),
    }
}

impl Member {
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn cluster_id(&self) -> u64 {
        self.inner.cluster_id.load(Ordering::SeqCst)
    }

    /// The fault-injection switch of this member's peer transport.
    pub fn partition(&self) -> Partition {
        self.inner.partition.clone()
    }

    /// The underlying openraft handle (metrics, waiting in tests).
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.inner.raft
    }

    /// Fault injection for tests: this member's disk stops (or resumes) writing.
    #[cfg(test)]
    pub(crate) fn stall_log_writes(&self, on: bool) {
        self.inner.log.stall_writes(on);
    }

    /// The current leader's id, if known.
    pub fn leader(&self) -> Option<u64> {
        self.inner.raft.metrics().borrow().current_leader
    }

    /// Its certificates and the cluster CA as it started (`None` in
    /// plaintext mode); its certificate now is [`Member::identity`]'s.
    pub fn pki(&self) -> Option<&herd_pki::files::MemberPki> {
        self.inner.pki.as_ref()
    }

    /// Its certificate, renewed in place before it expires: what its own
    /// clients should present ([`herd_client::Credentials::Renewing`]).
    pub fn identity(&self) -> Option<Arc<herd_pki::LiveIdentity>> {
        self.inner.identity.clone()
    }

    /// A response header as of `revision`.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        self.inner.header(revision)
    }

    /// Stops Raft and the member's tasks. Acknowledged writes are already on disk.
    pub async fn shutdown(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let _ = self.inner.raft.shutdown().await;
    }

    /// Watches a key or range from a revision; served from this member's applied
    /// state, so it survives leader changes. Drop the [`Watch`] to cancel.
    pub fn watch(&self, req: WatchRequest) -> Result<Watch, StoreError> {
        self.inner.check_key(&req.key)?;
        Ok(self.inner.sm.watch(req))
    }

    /// Watch batches queued in this member's store (see `sm::WATCH_QUEUE`).
    pub fn watch_backlog(&self) -> usize {
        self.inner.sm.watch_backlog()
    }

    /// The current revision of this member's applied state.
    pub fn revision(&self) -> i64 {
        self.inner.revision()
    }
}

impl Inner {
    fn self_node(&self) -> PeerNode {
        PeerNode {
            name: self.name.clone(),
            peer_addr: self
                .config
                .advertise_peer
                .clone()
                .unwrap_or_else(|| self.config.listen_peer.to_string()),
            client_addr: self.config.advertise_client.clone(),
        }
    }

    fn revision(&self) -> i64 {
        self.sm.read().kv.revision()
    }

    fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id.load(Ordering::Relaxed),
            member_id: self.id,
            revision,
            raft_term: self.raft.metrics().borrow().current_term,
        }
    }
}

pub use meta::has_state;
pub(crate) use meta::write_member_file;
