//! Renews the member's certificate before it expires: with a third of its
//! validity left, the member issues itself a new one from the cluster CA
//! it holds (every member holds it, to admit joiners), saves it, and puts
//! it under every TLS configuration at once ([`herd_pki::LiveIdentity`]).
//! A member that was down past that point renews as it starts.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herd_pki::files::MemberPki;

use super::Inner;
use super::security::{Security, issue_member, pki_dir, sans};
use crate::StoreError;
use crate::error::ConfigError;

/// Longest sleep between looks: the loop notices a stopped member, and a
/// clock that jumped, within it.
const MAX_NAP: Duration = Duration::from_secs(60);
/// After a failed renewal (a full disk, say).
const RETRY: Duration = Duration::from_secs(10);

/// Runs until the member is gone (or has nothing to renew).
pub(super) async fn renew_loop(inner: Weak<Inner>) {
    loop {
        let wait = {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            match inner.renew_if_due().await {
                Ok(Some(wait)) => wait,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the member certificate failed; retrying");
                    RETRY
                }
            }
        };
        tokio::time::sleep(wait.min(MAX_NAP)).await;
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn renewal_err(reason: String) -> StoreError {
    ConfigError::Pki {
        what: "renewing the member certificate",
        reason,
    }
    .into()
}

impl Inner {
    /// Renews when due; how long until the next look, `None` in plaintext.
    async fn renew_if_due(self: &Arc<Self>) -> Result<Option<Duration>, StoreError> {
        let (Some(identity), Some(pki), Security::Tls(tls)) =
            (&self.identity, &self.pki, &self.config.security)
        else {
            return Ok(None);
        };
        let validity = tls.member_validity();
        let current = identity.cert_key();
        let until = herd_pki::tls::certs_from_pem(&current.cert_pem, "member certificate")
            .ok()
            .and_then(|c| c.first().and_then(|d| herd_pki::identity::not_after(d)))
            .ok_or_else(|| renewal_err("the current certificate cannot be read".into()))?;
        let due = herd_pki::live::renew_at(until, validity);
        let now = now();
        if now < due {
            return Ok(Some(Duration::from_secs((due - now) as u64)));
        }
        let ca = pki.ca().ok_or_else(|| {
            renewal_err(
                "this member holds no CA key; rejoin it before its certificate expires".into(),
            )
        })?;
        let (names, ips) = sans(&self.config, tls);
        let renewed = issue_member(&ca, &self.name, (&names, &ips), validity)?;
        let dir = pki_dir(&self.config.data_dir);
        let to_save = MemberPki {
            ca_cert: renewed.ca_cert.clone(),
            ca_key: renewed.ca_key.clone(),
            member: renewed.member.clone(),
        };
        // Saved before it is used: a member that restarts presents what
        // its peers last saw from it, or a newer one.
        tokio::task::spawn_blocking(move || to_save.save(&dir))
            .await
            .map_err(|e| renewal_err(e.to_string()))?
            .map_err(|e| renewal_err(e.to_string()))?;
        identity
            .set(&renewed.member)
            .map_err(|e| renewal_err(e.to_string()))?;
        tracing::info!(
            member = %self.name,
            expired_at = until,
            valid_for = ?validity,
            "renewed the member certificate"
        );
        Ok(Some(Duration::from_secs(1)))
    }
}
