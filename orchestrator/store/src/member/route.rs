//! Getting a request to the leader: writes are proposed there (locally or
//! forwarded over the peer link), linearizable reads wait for a read index
//! from there, and the leader serves what followers forward to it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use openraft::ChangeMembers;

use super::{Inner, read_err, unexpected};
use crate::StoreError;
use crate::peer::{Forward, ForwardResponse, WireError};
use crate::types::{Command, CommandResponse, PeerNode};

impl Inner {
    /// Proposes on this member (must be the leader), grouped with concurrent
    /// writes; bounded so a leader cut off from its quorum answers "timed
    /// out" instead of hanging.
    pub(super) async fn write(&self, cmd: Command) -> Result<CommandResponse, StoreError> {
        let _no_transfer = self.transfer.read().await;
        self.proposer.propose(cmd).await
    }

    /// Confirms with a quorum that this member still leads and waits until
    /// it applied everything committed before now; returns that index.
    pub(super) async fn confirm_leader(&self) -> Result<u64, StoreError> {
        tokio::time::timeout(self.config.request_timeout, self.raft.ensure_linearizable())
            .await
            .map_err(|_| StoreError::Timeout)?
            .map(|id| id.map_or(0, |l| l.index))
            .map_err(read_err)
    }

    /// An index a linearizable read may be served at once this member has
    /// applied it, from a round shared with concurrent reads
    /// (`store::read_index`).
    pub(super) async fn read_index(&self) -> Result<u64, StoreError> {
        self.reads.get().await
    }

    /// Waits until this member applied everything committed before now.
    pub(super) async fn catch_up_for_read(&self) -> Result<(), StoreError> {
        let index = self.read_index().await?;
        self.wait_applied(index).await
    }

    /// One read-index round: as leader, [`Inner::confirm_leader`]; as a
    /// follower, the leader's read index (forwarded; the leader batches
    /// those too). Retries while there is no leader, up to the request
    /// timeout. Never goes through [`Inner::route`]'s local path, which
    /// would wait on the round it is part of.
    pub(super) async fn read_index_round(&self) -> Result<u64, StoreError> {
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
    pub(super) async fn wait_applied(&self, index: u64) -> Result<(), StoreError> {
        self.raft
            .wait(Some(self.config.request_timeout))
            .applied_index_at_least(Some(index), "read index")
            .await
            .map(|_| ())
            .map_err(|_| StoreError::Timeout)
    }

    pub(super) fn leader_node(&self) -> Option<(u64, PeerNode)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader)?.clone();
        Some((leader, node))
    }

    /// Writes go through the leader: locally if we are it, else forwarded.
    pub(super) async fn propose(&self, cmd: Command) -> Result<CommandResponse, StoreError> {
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
    pub(super) async fn route(&self, req: Forward) -> Result<ForwardResponse, StoreError> {
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

    pub(super) async fn handle_forward(&self, req: Forward) -> Result<ForwardResponse, StoreError> {
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
    pub(super) async fn serve_local(&self, req: Forward) -> Result<ForwardResponse, StoreError> {
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
                self.change_membership(ChangeMembers::AddNodes(BTreeMap::from([(id, node)])), true)
                    .await?;
                Ok(ForwardResponse::Done)
            }
            Forward::Promote { id } => {
                self.ensure_member(id)?;
                self.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
                    .await?;
                Ok(ForwardResponse::Done)
            }
            Forward::UpdateNode { id, node } => {
                self.ensure_member(id)?;
                self.change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, node)])), true)
                    .await?;
                Ok(ForwardResponse::Done)
            }
            Forward::MoveLeader { target } => self.transfer_leadership(target).await,
            Forward::Campaign => self.campaign().await,
            Forward::Remove { id } => {
                let ids = BTreeSet::from([id]);
                let change = match self.ensure_member(id)? {
                    true => ChangeMembers::RemoveVoters(ids),
                    false => ChangeMembers::RemoveNodes(ids),
                };
                self.change_membership(change, false).await?;
                Ok(ForwardResponse::Done)
            }
        }
    }
}
