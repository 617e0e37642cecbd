//! Whether this machine may go down without the store losing its quorum:
//! every other voter must answer with a leader, and those that answer
//! (minus any other lock holder, which may be rebooting) must still make
//! a majority of the voters. A learner or a machine outside the store can
//! always go; so can the only member of a one-member store (there is no
//! one to keep serving — an update means downtime there anyway).

use std::time::Duration;

use herd_client::proto::etcdserverpb::{MemberListRequest, StatusRequest};
use herd_client::{Client, Credentials};

use crate::lock::Holder;

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Safe(String),
    Unsafe(String),
}

/// Why the question could not be answered (retried later).
#[derive(Debug, thiserror::Error)]
#[error("checking the store's quorum: {0}")]
pub struct QuorumError(#[from] herd_client::ClientError);

/// Whether a member answers on one of its client URLs with a leader,
/// asked with `credentials` (the role's own).
async fn answers(urls: &[String], credentials: &Credentials, timeout: Duration) -> bool {
    for url in urls {
        let probe = async {
            let client = Client::connect_with(std::slice::from_ref(url), credentials)
                .await
                .ok()?;
            let s = client
                .maintenance()
                .status(StatusRequest {})
                .await
                .ok()?
                .into_inner();
            Some(s.leader != 0)
        };
        if let Ok(Some(true)) = tokio::time::timeout(timeout, probe).await {
            return true;
        }
    }
    false
}

/// Decides for the member `me` (0: not a store member), given the lock's
/// other holders.
pub async fn check(client: &Client, me: u64, others: &[Holder]) -> Result<Verdict, QuorumError> {
    let members = client
        .cluster()
        .member_list(MemberListRequest { linearizable: true })
        .await
        .map_err(|s| QuorumError(s.into()))?
        .into_inner()
        .members;
    let voters: Vec<_> = members.iter().filter(|m| !m.is_learner).collect();
    if !voters.iter().any(|m| m.id == me) {
        return Ok(Verdict::Safe(
            "not a voting store member: the store does not need it".into(),
        ));
    }
    if voters.len() == 1 {
        return Ok(Verdict::Safe(
            "the only store member: the store is down while it reboots, whatever the lock".into(),
        ));
    }
    let quorum = voters.len() / 2 + 1;
    let mut up = 0;
    let mut down = Vec::new();
    for m in voters.iter().filter(|m| m.id != me) {
        let holder = others.iter().any(|h| h.member_id == Some(m.id));
        if !holder && answers(&m.client_urls, client.credentials(), Duration::from_secs(2)).await {
            up += 1;
        } else {
            down.push(if holder {
                format!("{} (holds the reboot lock)", m.name)
            } else {
                m.name.clone()
            });
        }
    }
    Ok(if up >= quorum {
        Verdict::Safe(format!(
            "{up} other voters up, quorum is {quorum} of {}",
            voters.len()
        ))
    } else {
        Verdict::Unsafe(format!(
            "only {up} other voters would be up ({} down: {}); the store needs {quorum} of {}",
            down.len(),
            down.join(", "),
            voters.len()
        ))
    })
}
