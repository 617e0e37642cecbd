//! Work that runs once per cluster: only while this process holds a store
//! election (etcd's `concurrency.Election`), stopped the moment the
//! election's session ends.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use crate::client::Client;
use crate::election;
use crate::keys::ELECTIONS;
use crate::proto::etcdserverpb::{Compare, compare};
use crate::proto::v3electionpb::LeaderKey;
use crate::session::Session;

/// The compare that holds while `leader` still leads its election.
pub fn fence(leader: &LeaderKey) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key: leader.key.clone(),
        target_union: Some(compare::TargetUnion::CreateRevision(leader.rev)),
        range_end: Vec::new(),
    }
}

/// Campaigns for `election` as `candidate` (its value, for `herd kv elect
/// -l`-style observers) with a session of `ttl`; while elected, runs
/// `work(token)`. The work's token is cancelled and its future dropped when
/// the session ends (a lease this process can no longer prove it holds —
/// another candidate may lead by then) or `cancel` fires; then it
/// campaigns again, until `cancel`.
pub async fn run_elected<F, Fut>(
    client: &Client,
    election: &str,
    candidate: &str,
    ttl: Duration,
    cancel: &CancellationToken,
    mut work: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    run_elected_fenced(client, election, candidate, ttl, cancel, |token, _| {
        work(token)
    })
    .await
}

/// [`run_elected`], also handing the work the [`LeaderKey`] it holds: a
/// write that compares the key's create revision (see [`fence`]) lands
/// only while this process still leads, so a deposed leader whose
/// session ended mid-write cannot act after its successor started.
pub async fn run_elected_fenced<F, Fut>(
    client: &Client,
    election: &str,
    candidate: &str,
    ttl: Duration,
    cancel: &CancellationToken,
    mut work: F,
) where
    F: FnMut(CancellationToken, LeaderKey) -> Fut,
    Fut: Future<Output = ()>,
{
    let name = ELECTIONS.key(election);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    while !cancel.is_cancelled() {
        let session = tokio::select! {
            _ = cancel.cancelled() => return,
            s = Session::new(client, ttl) => s,
        };
        let session = match session {
            Ok(s) => s,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(election, error = %e, ?delay, "cannot open an election session; retrying");
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        let won = tokio::select! {
            _ = cancel.cancelled() => None,
            _ = session.ended() => None,
            r = election::campaign(client, name.as_bytes(), session.lease(), candidate.as_bytes()) => Some(r),
        };
        let leader = match won {
            None => {
                let _ = session.close().await;
                continue;
            }
            Some(Err(e)) => {
                let delay = backoff.next_delay();
                tracing::warn!(election, error = %e, ?delay, "campaign failed; retrying");
                drop(session);
                tokio::time::sleep(delay).await;
                continue;
            }
            Some(Ok(leader)) => leader,
        };
        backoff.reset();
        tracing::info!(election, candidate, "elected");
        let token = cancel.child_token();
        tokio::select! {
            () = work(token.clone(), leader.clone()) => tracing::info!(election, "elected work finished"),
            () = session.ended() => tracing::warn!(election, "the election's session ended; stepping down"),
            _ = cancel.cancelled() => {}
        }
        token.cancel();
        let _ = election::resign(client, &leader).await;
        let _ = session.close().await;
    }
}
