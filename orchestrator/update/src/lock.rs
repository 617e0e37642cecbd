//! The cluster's reboot lock (locksmith's semaphore, on the store): a
//! machine holds it from before it drains until its new slot is marked
//! good, so no more than `max` machines (default 1) are ever down for an
//! update at once. Each holder is a key `holders/<n>` (n < max) attached
//! to the holder's lease: a holder that dies drops out when its lease
//! expires — its TTL outlives a reboot, since the holder keeps the lock
//! across one. Taking a slot is a create-if-absent transaction; holding
//! is idempotent for the same machine (locksmith #58). `max` is read from
//! `config` (`{"max": N}`) when present.

use herd_client::keys::{Prefix, UPDATE};
use herd_client::kit::{Object, Resource};
use herd_client::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, compare,
    request_op,
};
use herd_client::{Client, ClientError};
use serde::{Deserialize, Serialize};

/// The lock's holders.
pub const HOLDERS: Prefix = Prefix::new("/herd/update/reboot-lock/holders/");

/// The lock's configuration key.
pub fn config_key() -> String {
    UPDATE.key("reboot-lock/config")
}

/// Who holds a slot of the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub machine_id: String,
    pub hostname: String,
    /// Its store member (for the quorum check), if it is one.
    pub member_id: Option<u64>,
    /// The version it updates to.
    pub version: String,
    /// Unix seconds when it took the lock.
    pub since: u64,
}

impl Resource for Holder {
    const PREFIX: Prefix = HOLDERS;
    const KIND: &'static str = "reboot-lock holder";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockConfig {
    pub max: u32,
}

/// Why the lock could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the reboot lock: {0}")]
    Client(#[from] ClientError),
    #[error("{key}: {reason}")]
    Bad { key: String, reason: String },
}

/// The outcome of trying to take the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    Held,
    /// Every slot is taken, by these.
    Busy(Vec<Holder>),
}

fn status(e: tonic::Status) -> LockError {
    LockError::Client(e.into())
}

/// Every holder, with its lease.
pub async fn holders(client: &Client) -> Result<Vec<Object<Holder>>, LockError> {
    let (objects, _) = herd_client::kit::list::<Holder>(client, &herd_client::kit::Scope::All)
        .await
        .map_err(|e| match e {
            herd_client::kit::ListError::Client(c) => LockError::Client(c),
            herd_client::kit::ListError::Decode(d) => LockError::Bad {
                key: d.key.clone(),
                reason: d.to_string(),
            },
        })?;
    Ok(objects)
}

/// How many may hold the lock at once.
pub async fn max(client: &Client) -> Result<u32, LockError> {
    let key = config_key();
    let resp = client
        .kv()
        .range(RangeRequest {
            key: key.clone().into_bytes(),
            ..Default::default()
        })
        .await
        .map_err(status)?
        .into_inner();
    match resp.kvs.first() {
        None => Ok(1),
        Some(kv) => serde_json::from_slice::<LockConfig>(&kv.value)
            .map(|c| c.max.max(1))
            .map_err(|e| LockError::Bad {
                key,
                reason: format!("not {{\"max\": N}}: {e}"),
            }),
    }
}

/// Takes a slot of the lock for `me` under `lease`, or says who holds them.
pub async fn acquire(client: &Client, me: &Holder, lease: i64) -> Result<Acquire, LockError> {
    let current = holders(client).await?;
    if let Some(mine) = current.iter().find(|o| o.value.machine_id == me.machine_id) {
        if mine.lease == lease {
            return Ok(Acquire::Held);
        }
        // Ours under an older lease (a restart): move it to this one.
        let moved = client
            .kv()
            .txn(TxnRequest {
                compare: vec![Compare {
                    result: compare::CompareResult::Equal as i32,
                    target: compare::CompareTarget::Mod as i32,
                    key: HOLDERS.key(&mine.name).into_bytes(),
                    target_union: Some(compare::TargetUnion::ModRevision(mine.mod_revision)),
                    range_end: Vec::new(),
                }],
                success: vec![put(&HOLDERS.key(&mine.name), me, lease)],
                failure: vec![],
            })
            .await
            .map_err(status)?
            .into_inner();
        if moved.succeeded {
            return Ok(Acquire::Held);
        }
        return Box::pin(acquire(client, me, lease)).await;
    }
    for n in 0..max(client).await? {
        let key = HOLDERS.key(&n.to_string());
        let taken = client
            .kv()
            .txn(TxnRequest {
                compare: vec![Compare {
                    result: compare::CompareResult::Equal as i32,
                    target: compare::CompareTarget::Create as i32,
                    key: key.clone().into_bytes(),
                    target_union: Some(compare::TargetUnion::CreateRevision(0)),
                    range_end: Vec::new(),
                }],
                success: vec![put(&key, me, lease)],
                failure: vec![],
            })
            .await
            .map_err(status)?
            .into_inner();
        if taken.succeeded {
            return Ok(Acquire::Held);
        }
    }
    Ok(Acquire::Busy(
        holders(client)
            .await?
            .into_iter()
            .map(|o| o.value)
            .collect(),
    ))
}

fn put(key: &str, holder: &Holder, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value: holder.encode(),
            lease,
            ..Default::default()
        })),
    }
}

/// Gives up every slot `machine_id` holds.
pub async fn release(client: &Client, machine_id: &str) -> Result<(), LockError> {
    for o in holders(client).await? {
        if o.value.machine_id == machine_id {
            let key = HOLDERS.key(&o.name).into_bytes();
            client
                .kv()
                .txn(TxnRequest {
                    compare: vec![Compare {
                        result: compare::CompareResult::Equal as i32,
                        target: compare::CompareTarget::Mod as i32,
                        key: key.clone(),
                        target_union: Some(compare::TargetUnion::ModRevision(o.mod_revision)),
                        range_end: Vec::new(),
                    }],
                    success: vec![RequestOp {
                        request: Some(request_op::Request::RequestDeleteRange(
                            DeleteRangeRequest {
                                key,
                                ..Default::default()
                            },
                        )),
                    }],
                    failure: vec![],
                })
                .await
                .map_err(status)?;
        }
    }
    Ok(())
}
