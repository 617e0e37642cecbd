//! Leases: grant, revoke, keep-alive and time-to-live through the leader,
//! and the leader-side expiry loop.

use std::sync::Weak;
use std::time::Duration;

use openraft::ServerState;

use super::{Inner, Member, unexpected, unexpected_cmd};
use crate::StoreError;
use crate::peer::{Forward, ForwardResponse};
use crate::types::{
    Command, CommandResponse, LeaseGrantResponse, LeaseKeepAliveResponse, LeaseLeasesResponse,
    LeaseRevokeResponse, LeaseTimeToLiveResponse,
};

impl Member {
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
}

/// Leader-side lease expiry: refreshes all deadlines on taking over, and
/// revokes expired leases through the log (one entry deletes the lease's keys).
pub(super) async fn lease_loop(inner: Weak<Inner>) {
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
