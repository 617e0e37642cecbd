//! openraft's network over the peer client, with the commit-index gate
//! that keeps followers from learning a commit the leader's disk does not
//! hold yet.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{Snapshot, Vote};

use super::client::{CallError, PeerClient};
use super::{PeerRequest, PeerResponse};
use crate::log::Durable;
use crate::types::{PeerNode, TypeConfig};

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

/// openraft bounds every append by the heartbeat interval and every vote
/// by the election timeout, around this call; the call gets the same
/// deadline so the connection gives up at that moment too. A machine whose
/// round trip with fsync exceeds the heartbeat never completes an append:
/// it needs a longer one (the agent's `--heartbeat-interval`).
fn rpc_timeout(option: &RPCOption) -> Duration {
    option.hard_ttl()
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
