//! The join token a founding member was given: registered in the store
//! (its secret's hash only, unlimited uses) so machines can join with it,
//! once per data dir.

use std::path::Path;
use std::time::Duration;

use herd_client::Client;
use herd_pki::JoinToken;
use herd_store::TokenRecord;
use tokio_util::sync::CancellationToken;

const MARKER: &str = "join-token-registered";

/// Whether this data dir's member registered its token already.
pub fn registered(data_dir: &Path) -> bool {
    data_dir.join(MARKER).exists()
}

/// Registers `token` unless a token with its id exists, retrying until it
/// succeeds or `cancel` fires (the store may still be electing its first
/// leader), then leaves the marker.
pub async fn register(
    client: &Client,
    token: &JoinToken,
    data_dir: &Path,
    cancel: &CancellationToken,
) -> Result<(), herd_pki::PkiError> {
    let record = TokenRecord {
        secret_hash: token.secret_hash(),
        machine: None,
        uses: None,
        expires: None,
    };
    let txn = record.register_txn(&token.id);
    let mut delay = Duration::from_millis(200);
    let mut kv = client.kv();
    loop {
        let attempt = kv.txn(txn.clone());
        let result = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = tokio::time::timeout(Duration::from_secs(10), attempt) => r,
        };
        match result {
            Ok(Ok(_)) => {
                tracing::info!(token = %token, "join token registered");
                return herd_pki::files::write_atomic(&data_dir.join(MARKER), b"", 0o644);
            }
            Ok(Err(status)) => tracing::debug!(%status, "registering the join token; retrying"),
            Err(_) => tracing::debug!("registering the join token timed out; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
