//! A lease kept alive in the background for as long as its owner holds it
//! (etcd's `concurrency.Session`): locks, elections and registrations hang
//! off it.
//!
//! The session also says when it has *ended*: the store answered that the
//! lease is gone, or no renewal succeeded within the TTL — after which the
//! store may have expired the lease and given what hung off it to someone
//! else. A holder must stop acting on a session once [`Session::ended`]
//! resolves (a leader stops leading), even while the store is unreachable.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::StreamExt;

use crate::client::{Client, ClientError};
use crate::proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest};

/// A granted lease and the task that renews it; the task stops on drop.
#[derive(Debug)]
pub struct Session {
    client: Client,
    lease: i64,
    ttl: Duration,
    ended: watch::Receiver<bool>,
    keeper: JoinHandle<()>,
}

impl Session {
    /// Grants a lease of `ttl` (whole seconds, at least one) and starts
    /// renewing it every third of the TTL.
    pub async fn new(client: &Client, ttl: Duration) -> Result<Session, ClientError> {
        let ttl_secs = ttl.as_secs().max(1) as i64;
        let resp = client
            .lease()
            .lease_grant(LeaseGrantRequest {
                ttl: ttl_secs,
                id: 0,
            })
            .await?
            .into_inner();
        if !resp.error.is_empty() {
            return Err(ClientError::Protocol(resp.error));
        }
        Ok(Session::keep(client, resp.id, ttl_secs))
    }

    /// Keeps an existing lease alive.
    pub fn keep(client: &Client, lease: i64, ttl_secs: i64) -> Session {
        let ttl = Duration::from_secs(ttl_secs.max(1) as u64);
        let (ended_tx, ended) = watch::channel(false);
        let keeper = tokio::spawn(keep_alive(client.clone(), lease, ttl, ended_tx));
        Session {
            client: client.clone(),
            lease,
            ttl,
            ended,
            keeper,
        }
    }

    pub fn lease(&self) -> i64 {
        self.lease
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether the session has ended (see the module doc).
    pub fn has_ended(&self) -> bool {
        *self.ended.borrow()
    }

    /// Resolves once the session has ended (see the module doc).
    pub fn ended(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut ended = self.ended.clone();
        async move {
            let _ = ended.wait_for(|e| *e).await;
        }
    }

    /// Stops renewing and revokes the lease, deleting every key attached to it.
    pub async fn close(self) -> Result<(), ClientError> {
        self.keeper.abort();
        self.client
            .lease()
            .lease_revoke(LeaseRevokeRequest { id: self.lease })
            .await?;
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Renews `lease` until aborted, reconnecting the stream after errors;
/// marks the session ended when the store says the lease is gone or no
/// renewal succeeded for a whole TTL.
///
/// The requests come from a channel whose sender lives in this task: a
/// request stream handed to tonic is polled by the connection, not by this
/// task, so a stream with its own timer went on renewing after the task was
/// aborted (seen against etcd). Aborting the task drops the sender, which
/// ends the request stream and the renewals with it.
async fn keep_alive(client: Client, lease: i64, ttl: Duration, ended: watch::Sender<bool>) {
    let period = (ttl / 3).max(Duration::from_millis(200));
    let mut renewed = Instant::now();
    let end = |why: &str| {
        tracing::warn!(lease = format!("{lease:x}"), "session ended: {why}");
        ended.send_replace(true);
    };
    loop {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        // The first renewal is queued before the call: the store answers the
        // call only once a request arrived.
        tx.try_send(LeaseKeepAliveRequest { id: lease })
            .expect("a fresh channel has room");
        let mut leases = client.lease();
        let call = leases.lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut stream = match tokio::time::timeout_at(renewed + ttl, call).await {
            Err(_) => return end("no renewal succeeded within the TTL"),
            Ok(Err(status)) => {
                tracing::debug!(%status, "lease keep-alive failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Ok(Ok(resp)) => resp.into_inner(),
        };
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    // A full channel means the last renewal is still queued.
                    if let Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) =
                        tx.try_send(LeaseKeepAliveRequest { id: lease })
                    {
                        break;
                    }
                }
                item = tokio::time::timeout_at(renewed + ttl, stream.next()) => match item {
                    Err(_) => return end("no renewal succeeded within the TTL"),
                    Ok(Some(Ok(r))) if r.ttl <= 0 => {
                        return end("the store no longer knows the lease");
                    }
                    Ok(Some(Ok(_))) => renewed = Instant::now(),
                    Ok(Some(Err(status))) => {
                        tracing::debug!(%status, "lease keep-alive stream failed; retrying");
                        break;
                    }
                    Ok(None) => break,
                },
            }
        }
        if Instant::now() >= renewed + ttl {
            return end("no renewal succeeded within the TTL");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
