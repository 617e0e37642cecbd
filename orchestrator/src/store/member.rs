//! One running store member: starts Raft and the peer listener, bootstraps/joins/restarts, and serves the etcd-shaped API.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use openraft::error::{
    ChangeMembershipError, CheckIsLeaderError, ClientWriteError, InitializeError, RaftError,
};
use openraft::{ChangeMembers, Raft, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::StoreError;
use super::engine::StorageKind;
use super::log::LogStore;
use super::peer::{
    self, Forward, ForwardHandler, ForwardResponse, Network, Partition, PeerClient, Token,
    WireError,
};
use super::propose::{Proposer, write_err};
use super::read_index::ReadIndex;
use super::sm::{StateMachine, Watch};
use super::types::{
    Command, CommandResponse, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantResponse, LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseRevokeResponse,
    LeaseTimeToLiveResponse, MemberInfo, MemberListResponse, PeerNode, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp, StatusResponse, TxnRequest,
    TxnResponse, TypeConfig, WatchRequest,
};

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
    /// The cluster token: gates joining and all peer traffic.
    pub token: String,
    /// Bootstrap a fixed set: `(name, peer address)`, this member included.
    pub initial_cluster: Option<Vec<(String, String)>>,
    /// Join a running cluster through any member's peer address.
    pub join: Option<String>,
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
            token: token.into(),
            initial_cluster: None,
            join: None,
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

fn cluster_id_of(names: &[&str]) -> u64 {
    let mut sorted: Vec<&str> = names.to_vec();
    sorted.sort();
    let h = Sha256::digest(format!("herd-cluster:{}", sorted.join(",")).as_bytes());
    u64::from_le_bytes(h[..8].try_into().expect("8 bytes")).max(1)
}

/// What a member remembers about itself (`member.json`).
#[derive(Debug, Serialize, Deserialize)]
struct MemberMeta {
    id: u64,
    name: String,
    cluster_id: u64,
    /// Absent in data dirs written before the engine was recorded.
    #[serde(default = "legacy_storage")]
    storage: StorageKind,
}

fn legacy_storage() -> StorageKind {
    StorageKind::LEGACY
}

const META_FILE: &str = "member.json";

/// Records `name` in a data dir built offline (`store::restore`) as a member
/// of `cluster_id` already: [`Member::start`] then resumes it and never
/// initializes or joins.
pub(crate) fn write_member_file(
    dir: &Path,
    name: &str,
    cluster_id: u64,
    storage: StorageKind,
) -> Result<(), StoreError> {
    write_meta(
        dir,
        &MemberMeta {
            id: member_id(name),
            name: name.to_owned(),
            cluster_id,
            storage,
        },
    )
}

/// Whether `dir` holds a member that started before (it resumes from its
/// own state and ignores `initial_cluster`/`join`).
pub fn has_state(dir: &Path) -> bool {
    dir.join(META_FILE).is_file()
}

fn read_meta(dir: &Path) -> Result<Option<MemberMeta>, StoreError> {
    let path = dir.join(META_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&path).map_err(|e| StoreError::io(&path, e))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            path,
            detail: e.to_string(),
        })
}

fn write_meta(dir: &Path, meta: &MemberMeta) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(meta).expect("meta serializes");
    let tmp = dir.join("member.json.tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(META_FILE))?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| StoreError::io(dir, e))
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

fn raft_err<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Raft(e.to_string())
}

fn read_err(e: RaftError<u64, CheckIsLeaderError<u64, PeerNode>>) -> StoreError {
    match e {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))
        | RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)) => StoreError::NoLeader,
        other => raft_err(other),
    }
}

fn request_size(op: &RequestOp) -> usize {
    match op {
        RequestOp::Range(r) => r.key.len() + r.range_end.len() + 64,
        RequestOp::Put(p) => p.key.len() + p.value.len() + 32,
        RequestOp::DeleteRange(d) => d.key.len() + d.range_end.len() + 16,
        RequestOp::Txn(t) => txn_size(t),
    }
}

fn txn_size(t: &TxnRequest) -> usize {
    t.compare
        .iter()
        .map(|c| {
            c.key.len()
                + c.range_end.len()
                + match &c.target {
                    super::types::CompareTarget::Value(v) => v.len(),
                    _ => 8,
                }
        })
        .sum::<usize>()
        + t.success
            .iter()
            .chain(&t.failure)
            .map(request_size)
            .sum::<usize>()
}

impl Member {
    /// Opens the data dir, starts Raft and the peer listener, then bootstraps,
    /// joins, or simply resumes (a data dir that already belongs to a cluster
    /// is never re-initialized nor re-joined).
    pub async fn start(config: Config) -> Result<Member, StoreError> {
        if config.name.is_empty() {
            return Err(StoreError::Config("member name is empty".into()));
        }
        if config.token.is_empty() {
            return Err(StoreError::Config("cluster token is empty".into()));
        }
        if config.advertise_peer.is_none() && config.listen_peer.ip().is_unspecified() {
            return Err(StoreError::Config(format!(
                "--listen-peer {} is a wildcard address other members cannot dial; \
                 listen on a concrete address or set an advertised peer address",
                config.listen_peer
            )));
        }
        if config.initial_cluster.is_some() && config.join.is_some() {
            return Err(StoreError::Config(
                "--initial-cluster and --join are mutually exclusive".into(),
            ));
        }
        if let Some(ic) = &config.initial_cluster
            && !ic.iter().any(|(n, _)| *n == config.name)
        {
            return Err(StoreError::Config(format!(
                "--initial-cluster does not list this member's name {:?}",
                config.name
            )));
        }
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StoreError::io(&config.data_dir, e))?;
        // One process per data dir: a second member on it would corrupt it.
        // The OS drops the lock when the process dies, even on SIGKILL.
        let lock_path = config.data_dir.join("LOCK");
        let lock = std::fs::File::create(&lock_path).map_err(|e| StoreError::io(&lock_path, e))?;
        lock.try_lock().map_err(|_| {
            StoreError::Config(format!(
                "data dir {} is in use by another running member",
                config.data_dir.display()
            ))
        })?;
        let meta = read_meta(&config.data_dir)?;
        if let Some(m) = &meta
            && m.name != config.name
        {
            return Err(StoreError::Config(format!(
                "data dir {} belongs to member {:?}, not {:?}",
                config.data_dir.display(),
                m.name,
                config.name
            )));
        }
        let storage = match (config.storage, &meta) {
            (Some(asked), Some(m)) if asked != m.storage => {
                return Err(StoreError::Config(format!(
                    "data dir {} was created with --storage {}; it cannot be opened with --storage {asked}",
                    config.data_dir.display(),
                    m.storage,
                )));
            }
            (Some(asked), _) => asked,
            (None, Some(m)) => m.storage,
            (None, None) => StorageKind::DEFAULT,
        };
        let id = meta
            .as_ref()
            .map_or_else(|| member_id(&config.name), |m| m.id);
        let raft_dir = config.data_dir.join("raft");
        // The leader's fsync overlaps replication; the state machine and the
        // peer transport wait on the log's durable end (`store::log`).
        let log = LogStore::open_with(storage, &raft_dir)?
            .step_down_on_restart(id)
            .overlap_leader_flush(id);
        let sm = StateMachine::open_gated(&raft_dir, Some(log.durable()))?;

        let raft_config = openraft::Config {
            cluster_name: "herd".into(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: config.election_timeout.0.as_millis() as u64,
            election_timeout_max: config.election_timeout.1.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_threshold),
            max_in_snapshot_log_to_keep: config.keep_logs_after_snapshot,
            max_payload_entries: 1000,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| StoreError::Config(e.to_string()))?;

        let listener = TcpListener::bind(config.listen_peer).await.map_err(|e| {
            StoreError::Config(format!("--listen-peer {}: {e}", config.listen_peer))
        })?;
        let partition = Partition::default();
        let token = Token::new(&config.token);
        let cluster_id = Arc::new(AtomicU64::new(meta.as_ref().map_or(0, |m| m.cluster_id)));
        let client = Arc::new(PeerClient::new(
            id,
            token.clone(),
            cluster_id.clone(),
            partition.clone(),
        ));
        let raft = Raft::new(
            id,
            Arc::new(raft_config),
            Network {
                client: client.clone(),
                durable: log.durable(),
            },
            log.clone(),
            sm.clone(),
        )
        .await
        .map_err(raft_err)?;

        let mut read_rounds = None;
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            let weak = weak.clone();
            let (reads, rounds) = ReadIndex::new(move || {
                let inner = weak.upgrade();
                async move {
                    match inner {
                        Some(inner) => inner.read_index_round().await,
                        None => Err(StoreError::Stopped),
                    }
                }
            });
            read_rounds = Some(rounds);
            Inner {
                id,
                name: config.name.clone(),
                cluster_id: cluster_id.clone(),
                raft: raft.clone(),
                sm,
                log,
                client,
                partition: partition.clone(),
                config: config.clone(),
                proposer: Proposer::start(raft.clone(), config.request_timeout),
                reads,
                transfer: tokio::sync::RwLock::new(()),
                _lock: lock,
            }
        });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        let handler: ForwardHandler = Arc::new(move |f: Forward| {
            let weak = weak.clone();
            Box::pin(async move {
                let Some(inner) = weak.upgrade() else {
                    return Err(WireError::Other("member is stopping".into()));
                };
                inner.handle_forward(f).await.map_err(WireError::from)
            })
        });
        let mut member = Member {
            inner: inner.clone(),
            tasks: Vec::new(),
        };
        member.tasks.push(tokio::spawn(peer::serve(
            listener,
            raft.clone(),
            token,
            cluster_id,
            partition,
            handler,
        )));
        member
            .tasks
            .push(tokio::spawn(lease_loop(Arc::downgrade(&inner))));
        member.tasks.extend(read_rounds.map(tokio::spawn));

        if meta.is_none() {
            let me = inner.self_node();
            let cluster_id = if let Some(ic) = &config.initial_cluster {
                let names: Vec<&str> = ic.iter().map(|(n, _)| n.as_str()).collect();
                let bootstrapper = names.iter().min().copied();
                if bootstrapper == Some(config.name.as_str()) {
                    let nodes: BTreeMap<u64, PeerNode> = ic
                        .iter()
                        .map(|(n, addr)| {
                            let node = if *n == config.name {
                                me.clone()
                            } else {
                                PeerNode {
                                    name: n.clone(),
                                    peer_addr: addr.clone(),
                                    client_addr: None,
                                }
                            };
                            (member_id(n), node)
                        })
                        .collect();
                    inner.initialize(nodes).await?;
                }
                cluster_id_of(&names)
            } else if let Some(join) = &config.join {
                inner.join(join).await?
            } else {
                inner.initialize(BTreeMap::from([(id, me)])).await?;
                cluster_id_of(&[config.name.as_str()])
            };
            inner.cluster_id.store(cluster_id, Ordering::SeqCst);
            write_meta(
                &config.data_dir,
                &MemberMeta {
                    id,
                    name: config.name.clone(),
                    cluster_id,
                    storage,
                },
            )?;
        }
        member
            .tasks
            .push(tokio::spawn(advertise_loop(Arc::downgrade(&inner))));
        member
            .tasks
            .push(tokio::spawn(promote_loop(Arc::downgrade(&inner))));
        tracing::info!(member = %format!("{id:x}"), name = %config.name, peer = %config.listen_peer, "store member started");
        Ok(member)
    }

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

    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        self.inner.check_key(&req.key)?;
        if !req.serializable {
            self.inner.catch_up_for_read().await?;
        }
        let mut resp = self.inner.local_range(&req)?;
        resp.header = self.inner.header(resp.header.revision);
        Ok(resp)
    }

    pub async fn put(&self, req: PutRequest) -> Result<PutResponse, StoreError> {
        self.inner.check_key(&req.key)?;
        self.inner.check_size(req.key.len() + req.value.len())?;
        match self.inner.propose(Command::Put(req)).await? {
            CommandResponse::Put(mut r) => {
                r.header = self.inner.header(r.header.revision);
                Ok(r)
            }
            other => Err(unexpected_cmd(other)),
        }
    }

    pub async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, StoreError> {
        self.inner.check_key(&req.key)?;
        match self.inner.propose(Command::DeleteRange(req)).await? {
            CommandResponse::DeleteRange(mut r) => {
                r.header = self.inner.header(r.header.revision);
                Ok(r)
            }
            other => Err(unexpected_cmd(other)),
        }
    }

    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, StoreError> {
        for c in &req.compare {
            self.inner.check_key(&c.key)?;
        }
        self.inner.check_ops(&req)?;
        self.inner.check_size(txn_size(&req))?;
        let read_only = is_read_only(&req);
        if read_only {
            // A read-only txn needs no log entry: read locally once this member
            // has applied up to the leader's read index.
            self.inner.catch_up_for_read().await?;
        }
        let resp = if read_only {
            match self.inner.sm.read().kv.read_txn(&req) {
                Ok(r) => CommandResponse::Txn(r),
                Err(e) => CommandResponse::Failed(e),
            }
        } else {
            self.inner.propose(Command::Txn(req)).await?
        };
        match resp {
            CommandResponse::Txn(mut r) => {
                let h = self.inner.header(r.header.revision);
                fill_headers(&mut r, h);
                Ok(r)
            }
            other => Err(unexpected_cmd(other)),
        }
    }

    /// Compacts history up to `revision` (etcd's `physical` makes no difference here:
    /// compaction is applied in memory before the call returns).
    pub async fn compact(&self, revision: i64) -> Result<CompactionResponse, StoreError> {
        match self.inner.propose(Command::Compact { revision }).await? {
            CommandResponse::Compact(mut r) => {
                r.header = self.inner.header(r.header.revision);
                Ok(r)
            }
            other => Err(unexpected_cmd(other)),
        }
    }

    /// Grants a lease; `id == 0` lets the store choose one.
    pub async fn lease_grant(&self, ttl: i64, id: i64) -> Result<LeaseGrantResponse, StoreError> {
        if ttl <= 0 || ttl > self.inner.config.limits.max_lease_ttl {
            return Err(StoreError::InvalidRequest(
                "etcdserver: too large lease TTL or not positive".into(),
            ));
        }
        if id < 0 {
            return Err(StoreError::InvalidRequest(
                "lease id must not be negative".into(),
            ));
        }
        let id = if id == 0 {
            (rand::random::<u64>() >> 1).max(1) as i64
        } else {
            id
        };
        match self.inner.propose(Command::LeaseGrant { id, ttl }).await? {
            CommandResponse::LeaseGrant(mut r) => {
                r.header = self.inner.header(r.header.revision);
                Ok(r)
            }
            other => Err(unexpected_cmd(other)),
        }
    }

    pub async fn lease_revoke(&self, id: i64) -> Result<LeaseRevokeResponse, StoreError> {
        match self.inner.propose(Command::LeaseRevoke { id }).await? {
            CommandResponse::LeaseRevoke(mut r) => {
                r.header = self.inner.header(r.header.revision);
                Ok(r)
            }
            other => Err(unexpected_cmd(other)),
        }
    }

    /// Refreshes a lease on the leader; returns its TTL.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<LeaseKeepAliveResponse, StoreError> {
        match self.inner.route(Forward::LeaseKeepAlive { id }).await? {
            ForwardResponse::Ttl(ttl) => Ok(LeaseKeepAliveResponse {
                header: self.inner.header(self.inner.revision()),
                id,
                ttl,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Remaining TTL as the leader sees it; `ttl == -1` when the lease does not exist.
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, StoreError> {
        let ttl = match self.inner.route(Forward::LeaseTimeToLive { id }).await {
            Ok(ForwardResponse::Ttl(ttl)) => ttl,
            Ok(other) => return Err(unexpected(other)),
            Err(StoreError::LeaseNotFound) => -1,
            Err(e) => return Err(e),
        };
        let data = self.inner.sm.read();
        let lease = data.kv.lease(id);
        Ok(LeaseTimeToLiveResponse {
            header: self.inner.header(data.kv.revision()),
            id,
            ttl,
            granted_ttl: lease.map_or(0, |l| l.ttl),
            keys: match (keys, lease) {
                (true, Some(l)) => l.keys.iter().cloned().collect(),
                _ => Vec::new(),
            },
        })
    }

    pub async fn lease_leases(&self) -> Result<LeaseLeasesResponse, StoreError> {
        let data = self.inner.sm.read();
        Ok(LeaseLeasesResponse {
            header: self.inner.header(data.kv.revision()),
            leases: data.kv.lease_ids(),
        })
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

    pub async fn member_list(&self) -> Result<MemberListResponse, StoreError> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| MemberInfo {
                id: *id,
                name: node.name.clone(),
                peer_addr: node.peer_addr.clone(),
                client_addr: node.client_addr.clone(),
                is_learner: !voters.contains(id),
            })
            .collect();
        Ok(MemberListResponse {
            header: self.inner.header(self.inner.revision()),
            members,
        })
    }

    /// Registers a member-to-be as a learner (it then starts with `--join`).
    pub async fn member_add(&self, name: &str, peer_addr: &str) -> Result<MemberInfo, StoreError> {
        let id = member_id(name);
        let node = PeerNode {
            name: name.into(),
            peer_addr: peer_addr.into(),
            client_addr: None,
        };
        self.inner
            .route(Forward::AddLearner {
                id,
                node: node.clone(),
            })
            .await?;
        Ok(MemberInfo {
            id,
            name: node.name,
            peer_addr: node.peer_addr,
            client_addr: None,
            is_learner: true,
        })
    }

    pub async fn member_remove(&self, id: u64) -> Result<(), StoreError> {
        self.inner.route(Forward::Remove { id }).await.map(|_| ())
    }

    pub async fn member_promote(&self, id: u64) -> Result<(), StoreError> {
        self.inner.route(Forward::Promote { id }).await.map(|_| ())
    }

    /// Changes a member's peer address in the membership (etcd's
    /// `MemberUpdate`); the member itself must listen there.
    pub async fn member_update(&self, id: u64, peer_addr: &str) -> Result<MemberInfo, StoreError> {
        let node = self
            .inner
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .cloned()
            .ok_or(StoreError::MemberNotFound)?;
        let node = PeerNode {
            peer_addr: peer_addr.into(),
            ..node
        };
        self.inner
            .route(Forward::UpdateNode {
                id,
                node: node.clone(),
            })
            .await?;
        let is_learner = !self.inner.ensure_member(id)?;
        Ok(MemberInfo {
            id,
            name: node.name,
            peer_addr: node.peer_addr,
            client_addr: node.client_addr,
            is_learner,
        })
    }

    /// Hash of the key space at `revision` (0 = current), after this member
    /// applied everything committed before the call (etcd's `HashKV`).
    pub async fn hash_kv(&self, revision: i64) -> Result<super::mvcc::KvHash, StoreError> {
        self.inner.catch_up_for_read().await?;
        // Hashing walks the whole history: off the runtime.
        let sm = self.inner.sm.clone();
        tokio::task::spawn_blocking(move || sm.read().kv.hash_kv(revision))
            .await
            .map_err(|e| StoreError::Raft(format!("hashing the key space: {e}")))?
            .map_err(StoreError::Apply)
    }

    /// This member's key space as a snapshot file ([`super::backup`]), and
    /// the revision it holds.
    pub async fn backup(&self) -> Result<(i64, Vec<u8>), StoreError> {
        // The clone (values are shared `Arc`s) holds the lock only briefly;
        // both it and the encoding run off the runtime.
        let sm = self.inner.sm.clone();
        tokio::task::spawn_blocking(move || {
            let kv = sm.read().kv.clone();
            (kv.revision(), super::backup::encode(&kv))
        })
        .await
        .map_err(|e| StoreError::Raft(format!("encoding the snapshot: {e}")))
    }

    /// Hands leadership to voter `target` (etcd's `MoveLeader`) and returns
    /// once it leads.
    pub async fn move_leader(&self, target: u64) -> Result<(), StoreError> {
        self.inner
            .route(Forward::MoveLeader { target })
            .await
            .map(|_| ())
    }

    pub async fn status(&self) -> Result<StatusResponse, StoreError> {
        let m = self.inner.raft.metrics().borrow().clone();
        let is_learner = !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.inner.id);
        Ok(StatusResponse {
            header: self.inner.header(self.inner.revision()),
            leader: m.current_leader.unwrap_or(0),
            raft_index: m.last_log_index.unwrap_or(0),
            raft_applied_index: m.last_applied.map_or(0, |l| l.index),
            raft_term: m.current_term,
            db_size: (self.inner.log.file_size() + self.inner.sm.snapshot_size()) as i64,
            is_learner,
            version: env!("CARGO_PKG_VERSION").into(),
        })
    }
}

fn is_read_only(t: &TxnRequest) -> bool {
    t.success.iter().chain(&t.failure).all(|op| match op {
        RequestOp::Range(_) => true,
        RequestOp::Txn(t) => is_read_only(t),
        _ => false,
    })
}

fn fill_headers(t: &mut TxnResponse, h: ResponseHeader) {
    t.header = h;
    for r in &mut t.responses {
        match r {
            ResponseOp::Range(x) => {
                x.header = ResponseHeader {
                    revision: x.header.revision,
                    ..h
                }
            }
            ResponseOp::Put(x) => x.header = h,
            ResponseOp::DeleteRange(x) => x.header = h,
            ResponseOp::Txn(x) => fill_headers(x, h),
        }
    }
}

fn unexpected(r: ForwardResponse) -> StoreError {
    StoreError::Raft(format!("unexpected forwarded response {r:?}"))
}

fn unexpected_cmd(r: CommandResponse) -> StoreError {
    match r {
        CommandResponse::Failed(e) => StoreError::Apply(e),
        other => StoreError::Raft(format!("unexpected apply result {other:?}")),
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

    fn check_key(&self, key: &[u8]) -> Result<(), StoreError> {
        if key.is_empty() {
            return Err(StoreError::InvalidRequest(
                "etcdserver: key is not provided".into(),
            ));
        }
        if key.len() > self.config.limits.max_key_bytes {
            return Err(StoreError::InvalidRequest(format!(
                "etcdserver: key is too long ({} bytes, limit {})",
                key.len(),
                self.config.limits.max_key_bytes
            )));
        }
        Ok(())
    }

    fn check_size(&self, n: usize) -> Result<(), StoreError> {
        if n > self.config.limits.max_request_bytes {
            return Err(StoreError::InvalidRequest(format!(
                "etcdserver: request is too large ({n} bytes, limit {})",
                self.config.limits.max_request_bytes
            )));
        }
        Ok(())
    }

    fn check_ops(&self, t: &TxnRequest) -> Result<(), StoreError> {
        for op in t.success.iter().chain(&t.failure) {
            match op {
                RequestOp::Range(r) => self.check_key(&r.key)?,
                RequestOp::Put(p) => self.check_key(&p.key)?,
                RequestOp::DeleteRange(d) => self.check_key(&d.key)?,
                RequestOp::Txn(t) => self.check_ops(t)?,
            }
        }
        Ok(())
    }

    fn local_range(&self, req: &RangeRequest) -> Result<RangeResponse, StoreError> {
        Ok(self.sm.read().kv.range(req)?)
    }

    async fn initialize(&self, nodes: BTreeMap<u64, PeerNode>) -> Result<(), StoreError> {
        match self.raft.initialize(nodes).await {
            Ok(()) => Ok(()),
            // Already initialized (e.g. crashed after initialize, before member.json): fine.
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(raft_err(e)),
        }
    }

    /// Asks the member at `addr` to add us; retries until `join_timeout`.
    async fn join(&self, addr: &str) -> Result<u64, StoreError> {
        let deadline = Instant::now() + self.config.join_timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let req = Forward::Join {
                id: self.id,
                node: self.self_node(),
            };
            match self.client.forward(0, addr, req, left).await {
                Ok(Ok(ForwardResponse::Joined { cluster_id })) => {
                    tracing::info!(via = %addr, "joined the cluster");
                    return Ok(cluster_id);
                }
                Ok(Ok(other)) => last = format!("unexpected answer {other:?}"),
                Ok(Err(e)) => last = StoreError::from(e).to_string(),
                Err(e) => last = e.to_string(),
            }
            tracing::warn!(via = %addr, error = %last, "join attempt failed; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(StoreError::Join {
            addr: addr.into(),
            detail: last,
        })
    }

    /// Proposes on this member (must be the leader), grouped with concurrent
    /// writes; bounded so a leader cut off from its quorum answers "timed
    /// out" instead of hanging.
    async fn write(&self, cmd: Command) -> Result<CommandResponse, StoreError> {
        let _no_transfer = self.transfer.read().await;
        self.proposer.propose(cmd).await
    }

    /// Confirms with a quorum that this member still leads and waits until
    /// it applied everything committed before now; returns that index.
    async fn confirm_leader(&self) -> Result<u64, StoreError> {
        tokio::time::timeout(self.config.request_timeout, self.raft.ensure_linearizable())
            .await
            .map_err(|_| StoreError::Timeout)?
            .map(|id| id.map_or(0, |l| l.index))
            .map_err(read_err)
    }

    /// An index a linearizable read may be served at once this member has
    /// applied it, from a round shared with concurrent reads
    /// (`store::read_index`).
    async fn read_index(&self) -> Result<u64, StoreError> {
        self.reads.get().await
    }

    /// Waits until this member applied everything committed before now.
    async fn catch_up_for_read(&self) -> Result<(), StoreError> {
        let index = self.read_index().await?;
        self.wait_applied(index).await
    }

    /// One read-index round: as leader, [`Inner::confirm_leader`]; as a
    /// follower, the leader's read index (forwarded; the leader batches
    /// those too). Retries while there is no leader, up to the request
    /// timeout. Never goes through [`Inner::route`]'s local path, which
    /// would wait on the round it is part of.
    async fn read_index_round(&self) -> Result<u64, StoreError> {
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.leader_node() {
                Some((leader, _)) if leader == self.id => match self.confirm_leader().await {
                    Err(StoreError::NoLeader) => {}
                    other => return other,
                },
                Some((leader, node)) => {
                    match self
                        .client
                        .forward(leader, &node.peer_addr, Forward::ReadIndex, left)
                        .await
                    {
                        Ok(Ok(ForwardResponse::ReadIndex(index))) => return Ok(index),
                        Ok(Ok(other)) => return Err(unexpected(other)),
                        Ok(Err(WireError::NoLeader)) => {}
                        Ok(Err(e)) => return Err(e.into()),
                        Err(e) => {
                            tracing::debug!(error = %e, "asking the leader for a read index failed; retrying")
                        }
                    }
                }
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(StoreError::NoLeader);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until this member applied the log up to `index`.
    async fn wait_applied(&self, index: u64) -> Result<(), StoreError> {
        self.raft
            .wait(Some(self.config.request_timeout))
            .applied_index_at_least(Some(index), "read index")
            .await
            .map(|_| ())
            .map_err(|_| StoreError::Timeout)
    }

    fn leader_node(&self) -> Option<(u64, PeerNode)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader)?.clone();
        Some((leader, node))
    }

    /// Writes go through the leader: locally if we are it, else forwarded.
    async fn propose(&self, cmd: Command) -> Result<CommandResponse, StoreError> {
        if self.raft.metrics().borrow().current_leader == Some(self.id) {
            match self.write(cmd.clone()).await {
                Ok(r) => return Ok(r),
                Err(StoreError::NoLeader) => {}
                Err(other) => return Err(other),
            }
        }
        match self.route(Forward::Write(cmd)).await? {
            ForwardResponse::Write(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Sends `req` to the leader (or serves it if we are the leader), retrying
    /// while there is no leader, up to `request_timeout`.
    async fn route(&self, req: Forward) -> Result<ForwardResponse, StoreError> {
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.leader_node() {
                Some((leader, _)) if leader == self.id => match self.serve_local(req.clone()).await
                {
                    Err(StoreError::NoLeader) => {}
                    other => return other,
                },
                Some((leader, node)) => {
                    match self
                        .client
                        .forward(leader, &node.peer_addr, req.clone(), left)
                        .await
                    {
                        Ok(Ok(resp)) => return Ok(resp),
                        Ok(Err(WireError::NoLeader)) => {}
                        Ok(Err(e)) => return Err(e.into()),
                        // A write may or may not have been applied: say so, don't retry.
                        Err(e) if matches!(req, Forward::Write(_)) => {
                            return Err(StoreError::Peer {
                                addr: node.peer_addr,
                                detail: format!("forwarding the write to the leader failed: {e}"),
                            });
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "forward to leader failed; retrying");
                        }
                    }
                }
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(StoreError::NoLeader);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn handle_forward(&self, req: Forward) -> Result<ForwardResponse, StoreError> {
        match req {
            // Joins may arrive at any member; route them on to the leader.
            Forward::Join { .. } if self.leader_node().is_none_or(|(l, _)| l != self.id) => {
                self.route(req).await
            }
            Forward::Campaign => self.campaign().await,
            other => self.serve_local(other).await,
        }
    }

    /// Serves a leader-only request here; `NoLeader` when we are not the leader.
    async fn serve_local(&self, req: Forward) -> Result<ForwardResponse, StoreError> {
        match req {
            Forward::Write(cmd) => self.write(cmd).await.map(ForwardResponse::Write),
            // Sent by members before read-index rounds; still served.
            Forward::Read(r) => {
                self.catch_up_for_read().await?;
                self.local_range(&r).map(ForwardResponse::Read)
            }
            // Only a leader answers: a follower's round would forward it on.
            Forward::ReadIndex if self.leader_node().is_none_or(|(l, _)| l != self.id) => {
                Err(StoreError::NoLeader)
            }
            Forward::ReadIndex => self.read_index().await.map(ForwardResponse::ReadIndex),
            Forward::LeaseKeepAlive { id } => {
                self.confirm_leader().await?;
                let ttl = self
                    .sm
                    .read()
                    .kv
                    .lease(id)
                    .map(|l| l.ttl)
                    .ok_or(StoreError::LeaseNotFound)?;
                self.sm.0.leases.set(id, ttl);
                Ok(ForwardResponse::Ttl(ttl))
            }
            Forward::LeaseTimeToLive { id } => {
                self.confirm_leader().await?;
                self.sm
                    .0
                    .leases
                    .remaining(id)
                    .filter(|_| self.sm.read().kv.lease(id).is_some())
                    .map(ForwardResponse::Ttl)
                    .ok_or(StoreError::LeaseNotFound)
            }
            Forward::Join { id, node } => self.add_member(id, node).await,
            Forward::AddLearner { id, node } => {
                self.raft
                    .add_learner(id, node, false)
                    .await
                    .map_err(write_err)?;
                Ok(ForwardResponse::Done)
            }
            Forward::Promote { id } => {
                self.ensure_member(id)?;
                self.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
                    .await?;
                Ok(ForwardResponse::Done)
            }
            Forward::UpdateNode { id, node } => {
                self.ensure_member(id)?;
                self.change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, node)])))
                    .await?;
                Ok(ForwardResponse::Done)
            }
            Forward::MoveLeader { target } => self.transfer_leadership(target).await,
            Forward::Campaign => self.campaign().await,
            Forward::Remove { id } => {
                let voter = self.ensure_member(id)?;
                if voter {
                    self.raft
                        .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                        .await
                        .map_err(write_err)?;
                } else {
                    self.raft
                        .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                        .await
                        .map_err(write_err)?;
                }
                Ok(ForwardResponse::Done)
            }
        }
    }

    /// Is `id` a member; `Ok(true)` for a voter.
    fn ensure_member(&self, id: u64) -> Result<bool, StoreError> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        if m.membership().get_node(&id).is_none() {
            return Err(StoreError::MemberNotFound);
        }
        Ok(m.membership().voter_ids().any(|v| v == id))
    }

    /// Waits, as leader, until peer `id` holds the log up to `index` (`None`:
    /// up to the leader's last entry, as it is at each check). `Ok(false)` when
    /// this member stopped leading; `Err` when `deadline` passed first.
    async fn replicated_to(
        &self,
        id: u64,
        index: Option<u64>,
        deadline: Instant,
    ) -> Result<bool, tokio::time::error::Elapsed> {
        let mut metrics = self.raft.metrics();
        tokio::time::timeout_at(deadline.into(), async {
            loop {
                {
                    let m = metrics.borrow_and_update();
                    if m.state != ServerState::Leader {
                        return false;
                    }
                    let matched = m
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(&id).copied().flatten())
                        .map(|l| l.index);
                    let wanted = index.or(m.last_log_index);
                    if matched.is_some() && matched >= wanted {
                        return true;
                    }
                }
                if metrics.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await
    }

    /// Learner first (blocking until it caught up, bounded by `join_timeout`),
    /// then voter while the cluster has fewer than `max_voters`.
    async fn add_member(&self, id: u64, node: PeerNode) -> Result<ForwardResponse, StoreError> {
        if self.raft.metrics().borrow().state != ServerState::Leader {
            return Err(StoreError::NoLeader);
        }
        let deadline = Instant::now() + self.config.join_timeout;
        // openraft's own blocking add_learner can report success before the
        // learner received anything (e.g. it is unreachable); promoting such a
        // learner would stall the cluster, so wait for its progress ourselves.
        let added = tokio::time::timeout(
            self.config.join_timeout,
            self.raft.add_learner(id, node.clone(), false),
        )
        .await
        .map_err(|_| StoreError::Timeout)?
        .map_err(write_err)?;
        let target = added.log_id.index;
        match self.replicated_to(id, Some(target), deadline).await {
            Ok(true) => {}
            Ok(false) => return Err(StoreError::NoLeader),
            Err(_) => {
                tracing::warn!(member = %format!("{id:x}"), %node, "new learner did not catch up; not promoting it");
                return Err(StoreError::Join {
                    addr: node.peer_addr,
                    detail: format!(
                        "adding the learner did not complete within {:?}: it did not catch up with the log",
                        self.config.join_timeout
                    ),
                });
            }
        }
        let voters = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .count();
        let already_voter = self.ensure_member(id)?;
        if !already_voter && voters < self.config.max_voters {
            tokio::time::timeout(
                self.config.request_timeout,
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true),
            )
            .await
            .map_err(|_| StoreError::Timeout)?
            .map_err(write_err)?;
            tracing::info!(member = %format!("{id:x}"), %node, "promoted to voter");
        }
        Ok(ForwardResponse::Joined {
            cluster_id: self.cluster_id.load(Ordering::SeqCst),
        })
    }
}

impl Inner {
    /// A membership change that waits its turn: openraft refuses one while
    /// another (say, `promote_loop`'s or a member publishing its address)
    /// is still uncommitted, so retry until the request deadline.
    async fn change_membership(
        &self,
        change: ChangeMembers<u64, PeerNode>,
    ) -> Result<(), StoreError> {
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.raft.change_membership(change.clone(), true))
                .await
            {
                Err(_) => return Err(StoreError::Timeout),
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                )))) if Instant::now() < deadline => {
                    tokio::time::sleep(self.config.heartbeat).await;
                }
                Ok(Err(e)) => return Err(write_err(e)),
            }
        }
    }
}

/// Leadership transfer. openraft 0.9 has no transfer API, and a follower
/// refuses votes while its leader lease (the longest election timeout since
/// the last heartbeat) runs. So the leader holds new writes back, waits
/// until the target has its whole log, stops heartbeats, and asks the
/// target to campaign; the target calls for an election until it wins: the
/// old leader steps down as soon as it sees the target's higher term, and
/// the other followers grant their vote once their lease ran out, before
/// their own election timer (lease + election timeout) fires.
impl Inner {
    async fn transfer_leadership(&self, target: u64) -> Result<ForwardResponse, StoreError> {
        if target == self.id {
            return Ok(ForwardResponse::Done);
        }
        if !self.ensure_member(target)? {
            return Err(StoreError::InvalidRequest(
                "etcdserver: bad leader transferee (a learner cannot lead)".into(),
            ));
        }
        let (node, deadline) = {
            let m = self.raft.metrics().borrow().clone();
            let node = m.membership_config.membership().get_node(&target).cloned();
            (node, Instant::now() + self.config.request_timeout)
        };
        let node = node.ok_or(StoreError::MemberNotFound)?;
        // Writes wait (and then go to the new leader): with the log standing
        // still, the target can hold the longest log, which voters require.
        let _no_writes = tokio::time::timeout_at(deadline.into(), self.transfer.write())
            .await
            .map_err(|_| StoreError::Timeout)?;
        match self.replicated_to(target, None, deadline).await {
            Ok(true) => {}
            Ok(false) => return Err(StoreError::NoLeader),
            Err(_) => return Err(StoreError::Timeout),
        }
        let runtime = self.raft.runtime_config();
        runtime.heartbeat(false);
        let left = deadline.saturating_duration_since(Instant::now());
        let result = self
            .client
            .forward(target, &node.peer_addr, Forward::Campaign, left)
            .await;
        // Also when this member leads again later: heartbeats are its lease.
        runtime.heartbeat(true);
        match result {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(StoreError::Peer {
                addr: node.peer_addr,
                detail: format!("asking the new leader to campaign: {e}"),
            }),
        }
    }

    /// Calls for elections until this member leads (see `transfer_leadership`).
    async fn campaign(&self) -> Result<ForwardResponse, StoreError> {
        let deadline = Instant::now() + self.config.request_timeout;
        let mut metrics = self.raft.metrics();
        loop {
            {
                let m = metrics.borrow_and_update();
                if m.state == ServerState::Leader {
                    return Ok(ForwardResponse::Done);
                }
                if m.state == ServerState::Learner {
                    return Err(StoreError::InvalidRequest(
                        "etcdserver: bad leader transferee (a learner cannot lead)".into(),
                    ));
                }
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Timeout);
            }
            // Votes are refused until the followers' leases ran out; calling
            // again (next term) beats their own election timers.
            self.raft.trigger().elect().await.map_err(raft_err)?;
            let _ = tokio::time::timeout(self.config.heartbeat * 3, async {
                while metrics.changed().await.is_ok() {
                    if metrics.borrow().state == ServerState::Leader {
                        return;
                    }
                }
            })
            .await;
        }
    }
}

/// Members bootstrapped from `--initial-cluster` are known to the others
/// only by name and peer address; once a leader exists, each member puts its
/// own advertised addresses (client address included) into the membership.
async fn advertise_loop(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let me = inner.self_node();
        let known = {
            let metrics = inner.raft.metrics();
            let m = metrics.borrow();
            if m.current_leader.is_none() {
                continue;
            }
            m.membership_config
                .membership()
                .get_node(&inner.id)
                .cloned()
        };
        match known {
            // Not (or no longer) a member: nothing to correct.
            None => continue,
            Some(node) if node == me => return,
            Some(_) => {}
        }
        match inner
            .route(Forward::UpdateNode {
                id: inner.id,
                node: me,
            })
            .await
        {
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(error = %e, "advertising this member's addresses failed; retrying")
            }
        }
    }
}

/// A learner is "caught up" when it is at most this many entries behind.
const CAUGHT_UP_LAG: u64 = 100;

/// Leader-side: while the cluster has fewer voters than `max_voters` (say,
/// after a voter was removed), promote a caught-up learner, one at a time.
async fn promote_loop(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let candidate = {
            let metrics = inner.raft.metrics();
            let m = metrics.borrow();
            if m.state != ServerState::Leader {
                continue;
            }
            let membership = m.membership_config.membership();
            // Mid joint-consensus: wait for the change in flight to settle.
            if membership.get_joint_config().len() > 1 {
                continue;
            }
            let voters: BTreeSet<u64> = membership.voter_ids().collect();
            if voters.len() >= inner.config.max_voters {
                continue;
            }
            let last = m.last_log_index.unwrap_or(0);
            membership.learner_ids().find(|id| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(id).copied().flatten())
                    .is_some_and(|l| l.index + CAUGHT_UP_LAG >= last)
            })
        };
        let Some(id) = candidate else {
            continue;
        };
        match inner.serve_local(Forward::Promote { id }).await {
            Ok(_) => {
                tracing::info!(member = %format!("{id:x}"), "promoted a learner: the cluster had fewer voters than max_voters")
            }
            Err(e) => {
                tracing::warn!(member = %format!("{id:x}"), error = %e, "promoting a learner failed")
            }
        }
    }
}

/// Leader-side lease expiry: refreshes all deadlines on taking over, and
/// revokes expired leases through the log (one entry deletes the lease's keys).
async fn lease_loop(inner: Weak<Inner>) {
    let mut was_leader = false;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let is_leader = inner.raft.metrics().borrow().state == ServerState::Leader;
        if is_leader && !was_leader {
            let data = inner.sm.read();
            let leases: Vec<(i64, i64)> = data
                .kv
                .lease_ids()
                .into_iter()
                .filter_map(|id| data.kv.lease(id).map(|l| (id, l.ttl)))
                .collect();
            drop(data);
            inner.sm.0.leases.refresh_all(leases);
        }
        was_leader = is_leader;
        if !is_leader {
            continue;
        }
        for id in inner.sm.0.leases.expired() {
            inner.sm.0.leases.remove(id);
            match inner.write(Command::LeaseRevoke { id }).await {
                Ok(_) => tracing::info!(lease = %format!("{id:x}"), "lease expired and revoked"),
                Err(e) => {
                    tracing::warn!(lease = %format!("{id:x}"), error = %e, "revoking an expired lease failed")
                }
            }
        }
    }
}
