//! Member-to-member transport on `--listen-peer`: token-authenticated, length-prefixed postcard frames over TCP.
//!
//! A connection opens with `b"HERDPEER" | sender id: u64 LE | sha256(token) |
//! sender's cluster id: u64 LE`; the server answers one byte `1` or logs the
//! cause and closes. A cluster id of 0 means "not in a cluster yet" (a
//! joining or bootstrapping member); two members that both know theirs must
//! agree, so a member of a cluster restored from a snapshot, or of any other
//! cluster that happens to share the token, is turned away by the old one
//! (etcd checks its cluster id on peer traffic the same way). Then each
//! request frame (`len: u32 LE | postcard`) gets one response frame. Clients
//! keep a small pool of connections per peer so forwarded client requests run
//! concurrently. A shared [`Partition`] switch drops traffic to and from
//! chosen members (fault injection for tests).

use std::collections::{HashMap, HashSet};
use std::io::{self, Cursor};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{Raft, Snapshot, SnapshotMeta, Vote};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::StoreError;
use super::log::Durable;
use super::types::{
    ApplyError, Command, CommandResponse, PeerNode, RangeRequest, RangeResponse, TypeConfig,
};

const MAGIC: &[u8; 8] = b"HERDPEER";
/// Magic, sender id, token hash, cluster id.
const HELLO: usize = 8 + 8 + 32 + 8;
const MAX_FRAME: usize = 512 << 20;
const POOL_PER_PEER: usize = 64;
const MIN_RPC_TIMEOUT: Duration = Duration::from_secs(1);

/// The cluster token, kept only as its hash.
#[derive(Clone, PartialEq, Eq)]
pub struct Token([u8; 32]);

impl Token {
    pub fn new(secret: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"herd-peer-token:");
        h.update(secret.as_bytes());
        Token(h.finalize().into())
    }

    fn matches(&self, other: &[u8]) -> bool {
        // Constant-time: do not leak how many bytes matched.
        other.len() == 32
            && self
                .0
                .iter()
                .zip(other)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Fault injection: members listed here are cut off from this member, both ways.
#[derive(Clone, Default, Debug)]
pub struct Partition(Arc<RwLock<HashSet<u64>>>);

impl Partition {
    pub fn isolate(&self, peer: u64) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer);
    }

    pub fn heal(&self) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn blocks(&self, peer: u64) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&peer)
    }
}

/// Requests a member forwards to the leader (or, for `Join`, to any member).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Forward {
    Write(Command),
    /// A linearizable read, served by the leader after a read-index check.
    Read(RangeRequest),
    /// Wait until this member's state is as fresh as the leader's commit (read index).
    ReadIndex,
    Join {
        id: u64,
        node: PeerNode,
    },
    LeaseKeepAlive {
        id: i64,
    },
    LeaseTimeToLive {
        id: i64,
    },
    AddLearner {
        id: u64,
        node: PeerNode,
    },
    Promote {
        id: u64,
    },
    /// A member corrects its own addresses in the membership (e.g. its client address).
    UpdateNode {
        id: u64,
        node: PeerNode,
    },
    Remove {
        id: u64,
    },
    /// Leader-side: hand leadership to this voter.
    MoveLeader {
        target: u64,
    },
    /// To the transfer's target: call elections until you lead.
    Campaign,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardResponse {
    /// The leader's read index: the caller may read locally once it applied this far.
    ReadIndex(u64),
    Write(CommandResponse),
    Read(RangeResponse),
    Joined {
        cluster_id: u64,
    },
    /// Remaining TTL in seconds.
    Ttl(i64),
    Done,
}

/// A store error as it crosses the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireError {
    NoLeader,
    Apply(ApplyError),
    LeaseNotFound,
    MemberNotFound,
    Timeout,
    InvalidRequest(String),
    Other(String),
}

impl From<StoreError> for WireError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoLeader => WireError::NoLeader,
            StoreError::Apply(a) => WireError::Apply(a),
            StoreError::LeaseNotFound => WireError::LeaseNotFound,
            StoreError::MemberNotFound => WireError::MemberNotFound,
            StoreError::Timeout => WireError::Timeout,
            StoreError::InvalidRequest(s) => WireError::InvalidRequest(s),
            other => WireError::Other(other.to_string()),
        }
    }
}

impl From<WireError> for StoreError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::NoLeader => StoreError::NoLeader,
            WireError::Apply(a) => StoreError::Apply(a),
            WireError::LeaseNotFound => StoreError::LeaseNotFound,
            WireError::MemberNotFound => StoreError::MemberNotFound,
            WireError::Timeout => StoreError::Timeout,
            WireError::InvalidRequest(s) => StoreError::InvalidRequest(s),
            WireError::Other(s) => StoreError::Remote(s),
        }
    }
}

#[derive(Serialize, Deserialize)]
enum PeerRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    Snapshot {
        vote: Vote<u64>,
        meta: SnapshotMeta<u64, PeerNode>,
        data: Vec<u8>,
    },
    Forward(Forward),
}

#[derive(Serialize, Deserialize)]
enum PeerResponse {
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    Snapshot(Result<SnapshotResponse<u64>, String>),
    Forward(Result<ForwardResponse, WireError>),
}

async fn write_frame(stream: &mut TcpStream, payload: &[u8]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(payload.len() + 4);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(payload);
    stream.write_all(&buf).await
}

async fn read_frame(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let len = stream.read_u32_le().await? as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the {MAX_FRAME}-byte limit"),
        ));
    }
    let mut buf = vec![0; len];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Why a peer call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("partitioned from member {0:x} (fault injection)")]
    Partitioned(u64),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("unexpected response kind")]
    Protocol,
}

/// Outgoing side: connection pools per peer address.
pub struct PeerClient {
    my_id: u64,
    token: Token,
    cluster: Arc<AtomicU64>,
    partition: Partition,
    pool: Mutex<HashMap<String, Vec<TcpStream>>>,
}

impl PeerClient {
    /// `cluster` is this member's cluster id (0 until it has one), read at
    /// every new connection.
    pub fn new(my_id: u64, token: Token, cluster: Arc<AtomicU64>, partition: Partition) -> Self {
        PeerClient {
            my_id,
            token,
            cluster,
            partition,
            pool: Mutex::new(HashMap::new()),
        }
    }

    async fn connect(&self, addr: &str) -> io::Result<TcpStream> {
        let mut s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let mut hello = Vec::with_capacity(HELLO);
        hello.extend_from_slice(MAGIC);
        hello.extend_from_slice(&self.my_id.to_le_bytes());
        hello.extend_from_slice(&self.token.0);
        hello.extend_from_slice(&self.cluster.load(Ordering::SeqCst).to_le_bytes());
        s.write_all(&hello).await?;
        match s.read_u8().await {
            Ok(1) => Ok(s),
            Ok(_) | Err(_) => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "peer rejected the handshake (wrong cluster token, or another cluster?)",
            )),
        }
    }

    async fn call(
        &self,
        target: u64,
        addr: &str,
        req: &PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, CallError> {
        if self.partition.blocks(target) {
            return Err(CallError::Partitioned(target));
        }
        let payload = postcard::to_allocvec(req).map_err(|e| io::Error::other(e.to_string()))?;
        let pooled = self
            .pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(addr)
            .and_then(Vec::pop);
        let work = async {
            let mut stream = match pooled {
                Some(s) => s,
                None => self.connect(addr).await?,
            };
            write_frame(&mut stream, &payload).await?;
            let bytes = read_frame(&mut stream).await?;
            let resp: PeerResponse = postcard::from_bytes(&bytes)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            Ok::<_, io::Error>((stream, resp))
        };
        let (stream, resp) = tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| CallError::Timeout(timeout))??;
        if self.partition.blocks(target) {
            return Err(CallError::Partitioned(target));
        }
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        let conns = pool.entry(addr.to_string()).or_default();
        if conns.len() < POOL_PER_PEER {
            conns.push(stream);
        }
        Ok(resp)
    }

    /// Sends a forwarded request to the member at `addr`.
    pub async fn forward(
        &self,
        target: u64,
        addr: &str,
        req: Forward,
        timeout: Duration,
    ) -> Result<Result<ForwardResponse, WireError>, CallError> {
        match self
            .call(target, addr, &PeerRequest::Forward(req), timeout)
            .await?
        {
            PeerResponse::Forward(r) => Ok(r),
            _ => Err(CallError::Protocol),
        }
    }
}

/// openraft's network factory over [`PeerClient`].
#[derive(Clone)]
/// openraft's connection factory. `durable` holds back commit indexes the
/// local log has not yet made durable (see `store::log`, the leader's flush
/// overlapping replication).
pub struct Network {
    pub client: Arc<PeerClient>,
    pub durable: Durable,
}

pub struct PeerConn {
    client: Arc<PeerClient>,
    durable: Durable,
    target: u64,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConn;

    async fn new_client(&mut self, target: u64, node: &PeerNode) -> PeerConn {
        PeerConn {
            client: self.client.clone(),
            durable: self.durable.clone(),
            target,
            addr: node.peer_addr.clone(),
        }
    }
}

fn unreachable(e: CallError) -> Unreachable {
    Unreachable::new(&e)
}

/// A slow peer (a long fsync on a loaded machine) is retried at once; only a
/// peer we cannot reach at all makes openraft back off.
fn rpc_error(e: CallError) -> RPCError<u64, PeerNode, RaftError<u64>> {
    match e {
        CallError::Timeout(_) => RPCError::Network(NetworkError::new(&e)),
        other => RPCError::Unreachable(unreachable(other)),
    }
}

/// openraft's per-RPC deadline is the heartbeat interval; an append that
/// carries entries waits for the follower's fsync, which can take longer.
/// Timing out early would only resend the same entries.
fn rpc_timeout(option: &RPCOption) -> Duration {
    option.hard_ttl().max(MIN_RPC_TIMEOUT)
}

impl RaftNetwork<TypeConfig> for PeerConn {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, PeerNode, RaftError<u64>>> {
        // openraft may count this leader's entry committed before its own
        // fsync finished; followers must not learn (and apply) that commit
        // until it has. The wait is usually the rest of an fsync that began
        // when the entry was appended, before the follower's round trip that
        // committed it. It is bounded: a leader whose disk is slow still
        // heartbeats, telling followers the commit only as far as its disk
        // holds it — holding heartbeats back would make them elect another
        // leader for nothing (issue 18).
        if let Some(commit) = rpc.leader_commit
            && !self.durable.covers(commit)
        {
            let mut durable = self.durable.clone();
            let bound = option.hard_ttl() / 2;
            match tokio::time::timeout(bound, durable.wait_for(commit)).await {
                Ok(r) => r.map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?,
                // Not yet durable: the leader's durable tip is an entry of its
                // own log below `commit`, hence committed too.
                Err(_) if !self.durable.covers(commit) => {
                    rpc.leader_commit = self
                        .durable
                        .tip()
                        .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
                }
                Err(_) => {}
            }
        }
        let resp = self
            .client
            .call(
                self.target,
                &self.addr,
                &PeerRequest::Append(rpc),
                rpc_timeout(&option),
            )
            .await
            .map_err(rpc_error)?;
        match resp {
            PeerResponse::Append(Ok(r)) => Ok(r),
            PeerResponse::Append(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(RPCError::Unreachable(unreachable(CallError::Protocol))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, PeerNode, RaftError<u64>>> {
        let resp = self
            .client
            .call(
                self.target,
                &self.addr,
                &PeerRequest::Vote(rpc),
                rpc_timeout(&option),
            )
            .await
            .map_err(rpc_error)?;
        match resp {
            PeerResponse::Vote(Ok(r)) => Ok(r),
            PeerResponse::Vote(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(RPCError::Unreachable(unreachable(CallError::Protocol))),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<u64>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<u64>, StreamingError<TypeConfig, Fatal<u64>>> {
        let req = PeerRequest::Snapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        // Snapshots can be large: give them more time than a heartbeat.
        let timeout = option.hard_ttl().max(Duration::from_secs(30));
        let call = self.client.call(self.target, &self.addr, &req, timeout);
        let resp = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = call => r.map_err(|e| StreamingError::Unreachable(unreachable(e)))?,
        };
        match resp {
            PeerResponse::Snapshot(Ok(r)) => Ok(r),
            PeerResponse::Snapshot(Err(e)) => Err(StreamingError::Network(NetworkError::new(
                &io::Error::other(e),
            ))),
            _ => Err(StreamingError::Unreachable(unreachable(
                CallError::Protocol,
            ))),
        }
    }
}

/// Serves forwarded requests; implemented by the member.
pub type ForwardHandler =
    Arc<dyn Fn(Forward) -> BoxFuture<'static, Result<ForwardResponse, WireError>> + Send + Sync>;

/// Accepts peer connections until dropped/aborted; owns its connection tasks.
pub async fn serve(
    listener: TcpListener,
    raft: Raft<TypeConfig>,
    token: Token,
    cluster: Arc<AtomicU64>,
    partition: Partition,
    forward: ForwardHandler,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let raft = raft.clone();
                    let token = token.clone();
                    let cluster = cluster.clone();
                    let partition = partition.clone();
                    let forward = forward.clone();
                    conns.spawn(async move {
                        let served = serve_conn(stream, raft, token, cluster, partition, forward);
                        if let Err(e) = served.await {
                            tracing::warn!(%remote, error = %e, "peer connection rejected or failed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "peer accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve_conn(
    mut stream: TcpStream,
    raft: Raft<TypeConfig>,
    token: Token,
    cluster: Arc<AtomicU64>,
    partition: Partition,
    forward: ForwardHandler,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut hello = [0u8; HELLO];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut hello))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no handshake within 5 s"))??;
    if &hello[..8] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "garbage instead of a herd peer handshake",
        ));
    }
    let sender = u64::from_le_bytes(hello[8..16].try_into().expect("8 bytes"));
    if !token.matches(&hello[16..48]) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("member {sender:x} presented a wrong cluster token"),
        ));
    }
    let theirs = u64::from_le_bytes(hello[48..56].try_into().expect("8 bytes"));
    let ours = cluster.load(Ordering::SeqCst);
    if theirs != 0 && ours != 0 && theirs != ours {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "member {sender:x} belongs to cluster {theirs:x}, this member to cluster {ours:x} \
                 (a stale member of an old or restored cluster?)"
            ),
        ));
    }
    stream.write_u8(1).await?;
    loop {
        let bytes = match read_frame(&mut stream).await {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        if partition.blocks(sender) {
            return Ok(());
        }
        let req: PeerRequest = postcard::from_bytes(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("undecodable request from member {sender:x}: {e}"),
            )
        })?;
        let resp = match req {
            PeerRequest::Append(r) => PeerResponse::Append(raft.append_entries(r).await),
            PeerRequest::Vote(r) => PeerResponse::Vote(raft.vote(r).await),
            PeerRequest::Snapshot { vote, meta, data } => PeerResponse::Snapshot(
                raft.install_full_snapshot(
                    vote,
                    Snapshot {
                        meta,
                        snapshot: Box::new(Cursor::new(data)),
                    },
                )
                .await
                .map_err(|e| e.to_string()),
            ),
            PeerRequest::Forward(f) => PeerResponse::Forward(forward(f).await),
        };
        if partition.blocks(sender) {
            return Ok(());
        }
        let payload = postcard::to_allocvec(&resp).map_err(|e| io::Error::other(e.to_string()))?;
        write_frame(&mut stream, &payload).await?;
    }
}
