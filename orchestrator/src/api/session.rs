//! A lease kept alive in the background for as long as its owner holds it
//! (etcd's `concurrency.Session`): locks and elections hang off it.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_stream::StreamExt;

use super::client::{Client, ClientError};
use crate::proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest};

/// A granted lease and the task that renews it; the task stops on drop.
#[derive(Debug)]
pub struct Session {
    client: Client,
    lease: i64,
    keeper: JoinHandle<()>,
}

impl Session {
    /// Grants a lease of `ttl` and starts renewing it every third of the TTL.
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
        let keeper = tokio::spawn(keep_alive(client.clone(), lease, ttl_secs));
        Session {
            client: client.clone(),
            lease,
            keeper,
        }
    }

    pub fn lease(&self) -> i64 {
        self.lease
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

/// Renews `lease` until aborted, reconnecting the stream after errors.
async fn keep_alive(client: Client, lease: i64, ttl_secs: i64) {
    let period = Duration::from_millis((ttl_secs as u64 * 1000 / 3).max(200));
    loop {
        // First renewal at once, then one per period.
        let requests = futures::stream::unfold(true, move |first| async move {
            if !first {
                tokio::time::sleep(period).await;
            }
            Some((LeaseKeepAliveRequest { id: lease }, false))
        });
        match client.lease().lease_keep_alive(requests).await {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(r) if r.ttl <= 0 => {
                            tracing::warn!(
                                lease = format!("{lease:x}"),
                                "lease expired; no longer renewing"
                            );
                            return;
                        }
                        Ok(_) => {}
                        Err(status) => {
                            tracing::debug!(%status, "lease keep-alive stream failed; retrying");
                            break;
                        }
                    }
                }
            }
            Err(status) => tracing::debug!(%status, "lease keep-alive failed; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
