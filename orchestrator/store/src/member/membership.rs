//! Membership: listing, adding (learner, then voter while the cluster has
//! fewer than `max_voters`), removing, promoting and updating members, and
//! the loops that keep the membership current (members publish their
//! addresses, the leader promotes caught-up learners).

use std::collections::BTreeSet;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};

use super::{Inner, Member, member_id};
use crate::StoreError;
use crate::peer::{Forward, ForwardResponse};
use crate::propose::write_err;
use crate::types::{MemberInfo, MemberListResponse, PeerNode, StatusResponse};

#[cfg(test)]
mod tests;

impl Member {
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

impl Inner {
    /// Is `id` a member; `Ok(true)` for a voter.
    pub(super) fn ensure_member(&self, id: u64) -> Result<bool, StoreError> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        if m.membership().get_node(&id).is_none() {
            return Err(StoreError::MemberNotFound);
        }
        Ok(m.membership().voter_ids().any(|v| v == id))
    }

    /// Waits, as leader, until peer `id` holds the log up to `index` (`None`:
    /// up to the leader's last entry, as it is at each check). `Ok(false)` when
    /// this member stopped leading; `Err` when `deadline` passed first.
    pub(super) async fn replicated_to(
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
    pub(super) async fn add_member(
        &self,
        id: u64,
        node: PeerNode,
    ) -> Result<ForwardResponse, StoreError> {
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
            self.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
                .await?;
            tracing::info!(member = %format!("{id:x}"), %node, "promoted to voter");
        }
        Ok(ForwardResponse::Joined {
            cluster_id: self.cluster_id.load(Ordering::SeqCst),
        })
    }
    /// A membership change that waits its turn: openraft refuses one while
    /// another (say, `promote_loop`'s or a member publishing its address)
    /// is still uncommitted, so retry until the request deadline.
    ///
    /// openraft changes voters in two steps (joint, then uniform) inside one
    /// call; a caller dropped between them would leave the cluster in joint
    /// consensus, where every later change waits and losing one old voter
    /// loses the quorum. So the call runs in a task of its own that a
    /// caller's timeout never cuts short, and `promote_loop` finishes any
    /// joint configuration that is left over all the same.
    pub(super) async fn change_membership(
        &self,
        change: ChangeMembers<u64, PeerNode>,
        retain: bool,
    ) -> Result<(), StoreError> {
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            let raft = self.raft.clone();
            let call = tokio::spawn({
                let change = change.clone();
                async move { raft.change_membership(change, retain).await }
            });
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, call).await {
                Err(_) => return Err(StoreError::Timeout),
                Ok(Err(join)) => {
                    return Err(StoreError::Task {
                        what: "a membership change",
                        source: std::sync::Arc::new(join),
                    });
                }
                Ok(Ok(Ok(_))) => return Ok(()),
                Ok(Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                )))))
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(self.config.heartbeat).await;
                }
                Ok(Ok(Err(e))) => return Err(write_err(e)),
            }
        }
    }
}

/// Members bootstrapped from `--initial-cluster` are known to the others
/// only by name and peer address; once a leader exists, each member puts its
/// own advertised addresses (client address included) into the membership.
pub(super) async fn advertise_loop(inner: Weak<Inner>) {
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
pub(super) const CAUGHT_UP_LAG: u64 = 100;

/// Leader-side: finish a membership change left in joint consensus, and
/// while the cluster has fewer voters than `max_voters` (say, after a voter
/// was removed), promote a caught-up learner, one at a time.
pub(super) async fn promote_loop(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // The committed joint configuration seen on the last tick: one that is
    // still there a tick later has no second step coming.
    let mut joint_seen: Option<u64> = None;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let next = {
            let metrics = inner.raft.metrics();
            let m = metrics.borrow();
            next_step(&m, inner.config.max_voters, &mut joint_seen)
        };
        let Some(step) = next else {
            continue;
        };
        let (change, what) = match step {
            Step::FinishJoint(voters) => {
                tracing::warn!(
                    ?voters,
                    "finishing a membership change left in joint consensus"
                );
                (
                    ChangeMembers::ReplaceAllVoters(voters),
                    "finishing the joint configuration",
                )
            }
            Step::Promote(id) => (
                ChangeMembers::AddVoterIds(BTreeSet::from([id])),
                "promoting a learner",
            ),
        };
        // Removed voters (a removal cut short) leave; promotions remove none.
        let retain = matches!(change, ChangeMembers::AddVoterIds(_));
        match inner.change_membership(change.clone(), retain).await {
            Ok(()) => match change {
                ChangeMembers::AddVoterIds(ids) => {
                    tracing::info!(member = ?ids, "promoted a learner: the cluster had fewer voters than max_voters")
                }
                _ => tracing::info!("the joint configuration is finished"),
            },
            // The change goes on in its task; the next tick sees its outcome.
            Err(StoreError::Timeout) => {
                tracing::info!("{what} is taking long; it goes on in the background")
            }
            Err(e) => tracing::warn!(error = %e, "{what} failed"),
        }
    }
}

/// What the leader's membership loop does next.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Move from a joint configuration to its last (the new) voter set.
    FinishJoint(BTreeSet<u64>),
    Promote(u64),
}

/// Decides the membership loop's next step from this member's metrics.
fn next_step(
    m: &openraft::RaftMetrics<u64, PeerNode>,
    max_voters: usize,
    joint_seen: &mut Option<u64>,
) -> Option<Step> {
    if m.state != ServerState::Leader {
        *joint_seen = None;
        return None;
    }
    let stored = &m.membership_config;
    let membership = stored.membership();
    let joint = membership.get_joint_config();
    if joint.len() > 1 {
        // Only a committed joint configuration (applied here) that stayed
        // put for a whole tick: otherwise its second step may be on its way.
        let at = stored.log_id().map(|l| l.index);
        let committed = at <= m.last_applied.map(|l| l.index);
        if committed && at.is_some() && *joint_seen == at {
            *joint_seen = None;
            return joint.last().cloned().map(Step::FinishJoint);
        }
        *joint_seen = if committed { at } else { None };
        return None;
    }
    *joint_seen = None;
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    if voters.len() >= max_voters {
        return None;
    }
    let last = m.last_log_index.unwrap_or(0);
    membership
        .learner_ids()
        .find(|id| {
            m.replication
                .as_ref()
                .and_then(|r| r.get(id).copied().flatten())
                .is_some_and(|l| l.index + CAUGHT_UP_LAG >= last)
        })
        .map(Step::Promote)
}
