//! Join tokens from the operator's side: made here (the secret is shown
//! once and only its hash is stored), listed and revoked through the
//! store's API at `/herd/pki/tokens/<id>`, where members check and use
//! them up when a machine joins.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use herd_client::Client;
use herd_client::proto::etcdserverpb::{DeleteRangeRequest, RangeRequest};
use herd_pki::JoinToken;
use serde::Serialize;

use crate::member::{TokenRecord, token_key};

/// A registered token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub machine: Option<String>,
    /// Joins left (`None`: unlimited).
    pub uses: Option<u32>,
    /// Unix seconds.
    pub expires: Option<i64>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Makes a token pinned to the CA in `ca_pem` and registers it, only if no
/// token has its id (ids are random; a clash is refused, not overwritten).
pub async fn create_token(
    client: &Client,
    ca_pem: &str,
    machine: Option<String>,
    uses: Option<u32>,
    ttl: Option<Duration>,
) -> anyhow::Result<JoinToken> {
    if uses == Some(0) {
        bail!("--uses 0 would make a token nobody can use");
    }
    let token = JoinToken::generate(herd_pki::ca::fingerprint(ca_pem)?);
    let record = TokenRecord {
        secret_hash: token.secret_hash(),
        machine,
        uses,
        expires: ttl.map(|t| now() + t.as_secs() as i64),
    };
    let resp = client
        .kv()
        .txn(record.register_txn(&token.id))
        .await
        .context("registering the token")?
        .into_inner();
    if !resp.succeeded {
        bail!("a token with id {} exists already; try again", token.id);
    }
    Ok(token)
}

/// Every registered token, by id.
pub async fn list_tokens(client: &Client) -> anyhow::Result<Vec<TokenInfo>> {
    let prefix = token_key("");
    let resp = client
        .kv()
        .range(RangeRequest {
            key: prefix.clone().into_bytes(),
            range_end: herd_client::prefix_end(prefix.as_bytes()),
            ..Default::default()
        })
        .await
        .context("listing tokens")?
        .into_inner();
    resp.kvs
        .into_iter()
        .map(|kv| {
            let key = String::from_utf8_lossy(&kv.key).into_owned();
            let record: TokenRecord = serde_json::from_slice(&kv.value)
                .with_context(|| format!("the record at {key} is damaged"))?;
            Ok(TokenInfo {
                id: key[prefix.len()..].to_owned(),
                machine: record.machine,
                uses: record.uses,
                expires: record.expires,
            })
        })
        .collect()
}

/// Deletes token `id`; an unknown id is an error (a typo should not look
/// like a revocation).
pub async fn revoke_token(client: &Client, id: &str) -> anyhow::Result<()> {
    let deleted = client
        .kv()
        .delete_range(DeleteRangeRequest {
            key: token_key(id).into_bytes(),
            ..Default::default()
        })
        .await
        .context("revoking the token")?
        .into_inner()
        .deleted;
    if deleted == 0 {
        bail!("no token with id {id}");
    }
    Ok(())
}

/// The `herd admin token list` table.
pub fn table(tokens: &[TokenInfo]) -> String {
    let mut t = herd_cli::Table::new(["ID", "MACHINE", "USES LEFT", "EXPIRES"]);
    let now = now();
    for token in tokens {
        t.row([
            token.id.clone(),
            token.machine.clone().unwrap_or_else(|| "any".into()),
            token
                .uses
                .map_or_else(|| "unlimited".into(), |u| u.to_string()),
            match token.expires {
                None => "never".into(),
                Some(at) if at <= now => "expired".into(),
                Some(at) => format!(
                    "in {}",
                    humantime::format_duration(Duration::from_secs((at - now) as u64))
                ),
            },
        ]);
    }
    t.render()
}
