//! Leader election on the KV API, as etcd's `concurrency.Election` and
//! v3election do: candidates queue as `<name>/<lease-hex>` keys; the one with
//! the lowest create revision leads and its value is the proclaimed one.

use crate::client::{Client, ClientError, prefix_end};
use crate::lock::{create_waiter, wait_deletes, waiter_key, waiter_prefix};
use crate::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, compare,
    range_request, request_op,
};
use crate::proto::mvccpb::KeyValue;
use crate::proto::v3electionpb::LeaderKey;

/// Why a leader operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error("election: not leader")]
    NotLeader,
    #[error("election: no leader")]
    NoLeader,
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Campaigns for `name` with `value` under `lease`; returns once leader.
pub async fn campaign(
    client: &Client,
    name: &[u8],
    lease: i64,
    value: &[u8],
) -> Result<LeaderKey, ElectionError> {
    let key = waiter_key(name, lease);
    let (create_revision, _, existing) = create_waiter(client, &key, value, lease).await?;
    let leader = LeaderKey {
        name: name.to_vec(),
        key: key.clone(),
        rev: create_revision,
        lease,
    };
    if existing != value {
        proclaim(client, &leader, value).await?;
    }
    if let Err(e) = wait_deletes(client, &waiter_prefix(name), create_revision - 1).await {
        let _ = resign(client, &leader).await;
        return Err(e.into());
    }
    Ok(leader)
}

/// Replaces the leader's value, if `leader` still leads.
pub async fn proclaim(
    client: &Client,
    leader: &LeaderKey,
    value: &[u8],
) -> Result<(), ElectionError> {
    let resp = client
        .kv()
        .txn(TxnRequest {
            compare: vec![still_leader(leader)],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: leader.key.clone(),
                    value: value.to_vec(),
                    lease: leader.lease,
                    ..Default::default()
                })),
            }],
            failure: Vec::new(),
        })
        .await
        .map_err(ClientError::from)?
        .into_inner();
    if resp.succeeded {
        Ok(())
    } else {
        Err(ElectionError::NotLeader)
    }
}

/// Gives up leadership (a no-op if `leader` no longer leads).
pub async fn resign(client: &Client, leader: &LeaderKey) -> Result<(), ElectionError> {
    client
        .kv()
        .txn(TxnRequest {
            compare: vec![still_leader(leader)],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestDeleteRange(
                    DeleteRangeRequest {
                        key: leader.key.clone(),
                        ..Default::default()
                    },
                )),
            }],
            failure: Vec::new(),
        })
        .await
        .map_err(ClientError::from)?;
    Ok(())
}

/// The current leader's key-value of election `name`.
pub async fn leader(client: &Client, name: &[u8]) -> Result<(KeyValue, i64), ElectionError> {
    let prefix = waiter_prefix(name);
    let resp = client
        .kv()
        .range(RangeRequest {
            key: prefix.clone(),
            range_end: prefix_end(&prefix),
            limit: 1,
            sort_order: range_request::SortOrder::Ascend as i32,
            sort_target: range_request::SortTarget::Create as i32,
            ..Default::default()
        })
        .await
        .map_err(ClientError::from)?
        .into_inner();
    let revision = resp.header.map(|h| h.revision).unwrap_or_default();
    resp.kvs
        .into_iter()
        .next()
        .map(|kv| (kv, revision))
        .ok_or(ElectionError::NoLeader)
}

fn still_leader(leader: &LeaderKey) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key: leader.key.clone(),
        target_union: Some(compare::TargetUnion::CreateRevision(leader.rev)),
        range_end: Vec::new(),
    }
}

/// Sends every new leader of election `name` to `tx` until the receiver is
/// dropped or the connection fails.
pub async fn observe(
    client: &Client,
    name: &[u8],
    tx: tokio::sync::mpsc::Sender<KeyValue>,
) -> Result<(), ElectionError> {
    let prefix = waiter_prefix(name);
    let mut current: Option<(Vec<u8>, i64)> = None;
    loop {
        let revision = match leader(client, name).await {
            Ok((kv, revision)) => {
                let id = (kv.key.clone(), kv.mod_revision);
                if current.as_ref() != Some(&id) {
                    current = Some(id);
                    if tx.send(kv).await.is_err() {
                        return Ok(());
                    }
                }
                revision
            }
            Err(ElectionError::NoLeader) => {
                current = None;
                client
                    .kv()
                    .range(RangeRequest {
                        key: prefix.clone(),
                        count_only: true,
                        ..Default::default()
                    })
                    .await
                    .map_err(ClientError::from)?
                    .into_inner()
                    .header
                    .map(|h| h.revision)
                    .unwrap_or_default()
            }
            Err(e) => return Err(e),
        };
        tokio::select! {
            r = super::lock::wait_change(client, &prefix, revision + 1) => r?,
            _ = tx.closed() => return Ok(()),
        }
    }
}
