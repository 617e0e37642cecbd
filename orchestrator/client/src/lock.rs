//! Distributed locks on the KV API, as etcd's `concurrency.Mutex` and v3lock
//! do: a waiter writes `<name>/<lease-hex>` under its lease, and owns the lock
//! once every key under `<name>/` with a lower create revision is gone.

use tokio_stream::StreamExt;

use crate::client::{Client, ClientError, prefix_end};
use crate::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchRequest, compare, range_request, request_op, response_op,
    watch_request,
};
use crate::proto::mvccpb::event::EventType;

/// A held lock: its key and the revision at which it was acquired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub key: Vec<u8>,
    pub revision: i64,
    pub create_revision: i64,
}

/// `name` plus the separator etcd puts between a lock name and waiter ids.
pub fn waiter_prefix(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// Key of the waiter that holds `lease` on the lock/election `name`.
pub fn waiter_key(name: &[u8], lease: i64) -> Vec<u8> {
    let mut key = waiter_prefix(name);
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

/// Creates `key` (value `value`, under `lease`) unless it exists, and returns
/// its create revision and the store revision.
pub(crate) async fn create_waiter(
    client: &Client,
    key: &[u8],
    value: &[u8],
    lease: i64,
) -> Result<(i64, i64, Vec<u8>), ClientError> {
    let get = RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })),
    };
    let txn = TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Create as i32,
            key: key.to_vec(),
            target_union: Some(compare::TargetUnion::CreateRevision(0)),
            range_end: Vec::new(),
        }],
        success: vec![
            RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: key.to_vec(),
                    value: value.to_vec(),
                    lease,
                    ..Default::default()
                })),
            },
            get.clone(),
        ],
        failure: vec![get],
    };
    let resp = client.kv().txn(txn).await?.into_inner();
    let revision = resp.header.map(|h| h.revision).unwrap_or_default();
    let kv = resp
        .responses
        .into_iter()
        .find_map(|r| match r.response {
            Some(response_op::Response::ResponseRange(range)) => range.kvs.into_iter().next(),
            _ => None,
        })
        .ok_or_else(|| {
            ClientError::Protocol("waiter key vanished right after its creation".into())
        })?;
    Ok((kv.create_revision, revision, kv.value))
}

/// Waits until no key under `prefix` has a create revision below `max_create + 1`.
pub(crate) async fn wait_deletes(
    client: &Client,
    prefix: &[u8],
    max_create: i64,
) -> Result<i64, ClientError> {
    // No key is older than revision 1; and 0 would mean "no filter" to the
    // server, which would find the waiter's own key and wait for ever.
    if max_create < 1 {
        return Ok(0);
    }
    loop {
        let resp = client
            .kv()
            .range(RangeRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                limit: 1,
                sort_order: range_request::SortOrder::Descend as i32,
                sort_target: range_request::SortTarget::Create as i32,
                max_create_revision: max_create,
                ..Default::default()
            })
            .await?
            .into_inner();
        let revision = resp.header.map(|h| h.revision).unwrap_or_default();
        let Some(last) = resp.kvs.into_iter().next() else {
            return Ok(revision);
        };
        wait_delete(client, &last.key, revision + 1).await?;
    }
}

/// Waits for the deletion of `key`, watching from `from_revision`.
async fn wait_delete(client: &Client, key: &[u8], from_revision: i64) -> Result<(), ClientError> {
    wait_event(client, key, Vec::new(), from_revision, true).await
}

/// Waits for any change under `prefix` from `from_revision` on.
pub(crate) async fn wait_change(
    client: &Client,
    prefix: &[u8],
    from_revision: i64,
) -> Result<(), ClientError> {
    wait_event(client, prefix, prefix_end(prefix), from_revision, false).await
}

async fn wait_event(
    client: &Client,
    key: &[u8],
    range_end: Vec<u8>,
    from_revision: i64,
    deletes_only: bool,
) -> Result<(), ClientError> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: key.to_vec(),
                range_end,
                start_revision: from_revision,
                ..Default::default()
            },
        )),
    })
    .await
    .map_err(|_| ClientError::Protocol("watch request channel closed".into()))?;
    let mut stream = client
        .watch()
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    while let Some(resp) = stream.next().await {
        let resp = resp?;
        if resp.canceled {
            return Err(ClientError::Protocol(format!(
                "watch on {} canceled: {}",
                String::from_utf8_lossy(key),
                resp.cancel_reason
            )));
        }
        if resp
            .events
            .iter()
            .any(|e| !deletes_only || e.r#type == EventType::Delete as i32)
        {
            return Ok(());
        }
    }
    // The stream ended (server shutting down): keep `tx` alive until here so
    // the server did not see the request side close early.
    drop(tx);
    Err(ClientError::Protocol("watch stream ended".into()))
}

/// Acquires the lock `name` for `lease`, waiting as long as it takes.
pub async fn lock(client: &Client, name: &[u8], lease: i64) -> Result<Held, ClientError> {
    let key = waiter_key(name, lease);
    let (create_revision, mut revision, _) = create_waiter(client, &key, b"", lease).await?;
    let waited = wait_deletes(client, &waiter_prefix(name), create_revision - 1).await;
    match waited {
        Ok(rev) => {
            revision = revision.max(rev);
            Ok(Held {
                key,
                revision,
                create_revision,
            })
        }
        Err(e) => {
            // Give up our place in the queue so others are not blocked by it.
            let _ = unlock(client, &key).await;
            Err(e)
        }
    }
}

/// Releases a lock by deleting its key.
pub async fn unlock(client: &Client, key: &[u8]) -> Result<i64, ClientError> {
    let resp = client
        .kv()
        .delete_range(DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(resp.header.map(|h| h.revision).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiter_keys_are_name_slash_lease_hex() {
        assert_eq!(
            waiter_key(b"reboot", 0x694d7ab1c3e8f00a),
            b"reboot/694d7ab1c3e8f00a"
        );
        assert_eq!(waiter_prefix(b"x"), b"x/");
    }
}
