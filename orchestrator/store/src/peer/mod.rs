//! Member-to-member transport on `--listen-peer`: length-prefixed postcard
//! frames over mutual TLS (or, with `--insecure-plaintext`, over TCP with
//! a shared token).
//!
//! With TLS, every member presents its member certificate and the server
//! checks it before reading anything: the certificate must come from the
//! cluster CA, name the member the connection claims to be, and — once the
//! cluster has a membership — a current member (so a removed member's
//! certificate stops working). A connection without a certificate may do
//! exactly one thing: ask to join with a join token (`HERDJOIN` and one
//! [`JoinRequest`] frame); it is never handed a Raft message.
//!
//! A member connection opens with `b"HERDPEER" | sender id: u64 LE | token
//! hash (plaintext mode; zeros with TLS) | sender's cluster id: u64 LE`;
//! the server answers one byte `1` or logs the cause and closes. A cluster
//! id of 0 means "not in a cluster yet"; two members that both know theirs
//! must agree, so a member of a restored or otherwise different cluster is
//! turned away. Then each request frame (`len: u32 LE | postcard`) gets one
//! response frame. Clients keep a small pool of connections per peer. A
//! shared [`Partition`] switch drops traffic to and from chosen members
//! (fault injection for tests).

mod client;
mod network;
mod secure;
mod server;

use std::collections::HashSet;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;
use openraft::error::RaftError;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{SnapshotMeta, Vote};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::StoreError;
use super::types::{
    ApplyError, Command, CommandResponse, PeerNode, RangeRequest, RangeResponse, TypeConfig,
};

#[cfg(test)]
pub(crate) use client::CallError;
pub use client::{PeerClient, join};
pub use network::Network;
pub use secure::{ClientSecurity, ServerSecurity, Token};
pub use server::serve;

const MAGIC: &[u8; 8] = b"HERDPEER";
const JOIN_MAGIC: &[u8; 8] = b"HERDJOIN";
/// Magic, sender id, token hash, cluster id.
const HELLO: usize = 8 + 8 + 32 + 8;
const MAX_FRAME: usize = 512 << 20;
/// A join request is small; a connection without a certificate gets no more.
const MAX_JOIN_FRAME: usize = 64 << 10;
/// The handshake's answer byte when the peer is let in.
const ACCEPTED: u8 = 1;

/// Why a handshake was refused: the answer byte instead of [`ACCEPTED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Refusal {
    WrongToken = 2,
    NotAMember = 3,
    OtherCluster = 4,
}

impl Refusal {
    /// What the refusing side meant by `code` (`None`: it hung up).
    fn explain(code: Option<u8>) -> &'static str {
        match code {
            Some(2) => "wrong cluster token",
            Some(3) => "not a member of its cluster (removed, or a certificate of another member?)",
            Some(4) => {
                "it belongs to another cluster (a stale member of an old or restored cluster?)"
            }
            _ => "it hung up (not a herd peer, or TLS on one side only?)",
        }
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
pub(super) enum PeerRequest {
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
pub(super) enum PeerResponse {
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    Snapshot(Result<SnapshotResponse<u64>, String>),
    Forward(Result<ForwardResponse, WireError>),
}

/// What a machine without a certificate sends to join (TLS mode): who it
/// is, the join token's id and secret, and a certificate signing request
/// for the names and addresses it serves on. `Debug` hides the secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub id: u64,
    pub node: PeerNode,
    pub token_id: String,
    pub secret: String,
    pub csr: String,
    pub names: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRequest")
            .field("id", &format_args!("{:x}", self.id))
            .field("node", &self.node)
            .field("token_id", &self.token_id)
            .field("secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// What a joining machine receives: its cluster, its member certificate,
/// the CA certificate and the CA key (so it can admit machines in turn).
#[derive(Clone, Serialize, Deserialize)]
pub struct JoinGrant {
    pub cluster_id: u64,
    pub member_cert: String,
    pub ca_cert: String,
    pub ca_key: String,
}

impl std::fmt::Debug for JoinGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinGrant")
            .field("cluster_id", &format_args!("{:x}", self.cluster_id))
            .finish_non_exhaustive()
    }
}

/// Serves forwarded requests; implemented by the member.
pub type ForwardHandler =
    Arc<dyn Fn(Forward) -> BoxFuture<'static, Result<ForwardResponse, WireError>> + Send + Sync>;

/// Admits a joining machine (TLS mode); implemented by the member.
pub type JoinHandler =
    Arc<dyn Fn(JoinRequest) -> BoxFuture<'static, Result<JoinGrant, WireError>> + Send + Sync>;

/// Whether member `id` may talk to this member (it is in the membership,
/// or the membership is still empty); implemented by the member.
pub type MemberCheck = Arc<dyn Fn(u64) -> bool + Send + Sync>;

pub(super) async fn write_frame<S: AsyncWrite + Unpin>(
    stream: &mut S,
    payload: &[u8],
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(payload.len() + 4);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(payload);
    stream.write_all(&buf).await
}

pub(super) async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Vec<u8>> {
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
