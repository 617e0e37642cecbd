//! Leadership transfer (etcd's `MoveLeader`).

use std::time::Instant;

use openraft::ServerState;

use super::{Inner, Member, raft_err};
use crate::StoreError;
use crate::peer::{Forward, ForwardResponse};

impl Member {
    /// Hands leadership to voter `target` (etcd's `MoveLeader`) and returns
    /// once it leads.
    pub async fn move_leader(&self, target: u64) -> Result<(), StoreError> {
        self.inner
            .route(Forward::MoveLeader { target })
            .await
            .map(|_| ())
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
    pub(super) async fn transfer_leadership(
        &self,
        target: u64,
    ) -> Result<ForwardResponse, StoreError> {
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
    pub(super) async fn campaign(&self) -> Result<ForwardResponse, StoreError> {
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
