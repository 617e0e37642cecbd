//! The store operations the registry is built from: reads, and
//! transactions of compares and writes that land together or not at all.

use herd_client::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse,
    compare, request_op,
};
use herd_client::proto::mvccpb::KeyValue;
use herd_client::{Client, ClientError};

use crate::api::ApiError;

/// A store failure, as the API reports it.
pub fn store_error(e: impl Into<ClientError>) -> ApiError {
    let e: ClientError = e.into();
    match &e {
        ClientError::Status(s)
            if matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
            ) =>
        {
            ApiError::unavailable(format!("the store is unavailable: {}", s.message()))
        }
        _ => ApiError::internal(format!("the store failed: {e}")),
    }
}

/// `key`'s mod revision equals `revision` (0: the key does not exist).
pub fn mod_is(key: &str, revision: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Mod as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(compare::TargetUnion::ModRevision(revision)),
        range_end: Vec::new(),
    }
}

/// `key` does not exist.
pub fn absent(key: &str) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Version as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(compare::TargetUnion::Version(0)),
        range_end: Vec::new(),
    }
}

/// `key` exists.
pub fn present(key: &str) -> Compare {
    Compare {
        result: compare::CompareResult::Greater as i32,
        target: compare::CompareTarget::Version as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(compare::TargetUnion::Version(0)),
        range_end: Vec::new(),
    }
}

pub fn put(key: &str, value: Vec<u8>, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            lease,
            ..Default::default()
        })),
    }
}

pub fn delete(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            },
        )),
    }
}

/// Runs `compare` → `success`; the answer says whether it applied.
pub async fn txn(
    client: &Client,
    compare: Vec<Compare>,
    success: Vec<RequestOp>,
) -> Result<TxnResponse, ApiError> {
    Ok(client
        .kv()
        .txn(TxnRequest {
            compare,
            success,
            failure: Vec::new(),
        })
        .await
        .map_err(store_error)?
        .into_inner())
}

/// The key-value at `key`, and the store's revision.
pub async fn get(client: &Client, key: &str) -> Result<(Option<KeyValue>, i64), ApiError> {
    let resp = client
        .kv()
        .range(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .map_err(store_error)?
        .into_inner();
    let revision = resp.header.map_or(0, |h| h.revision);
    Ok((resp.kvs.into_iter().next(), revision))
}

/// Every key-value under `prefix`, and the store's revision.
pub async fn range(client: &Client, prefix: &str) -> Result<(Vec<KeyValue>, i64), ApiError> {
    let resp = client
        .kv()
        .range(RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: herd_client::prefix_end(prefix.as_bytes()),
            ..Default::default()
        })
        .await
        .map_err(store_error)?
        .into_inner();
    let revision = resp.header.map_or(0, |h| h.revision);
    Ok((resp.kvs, revision))
}

/// How many keys are under `prefix`.
pub async fn count(client: &Client, prefix: &str) -> Result<i64, ApiError> {
    Ok(client
        .kv()
        .range(RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: herd_client::prefix_end(prefix.as_bytes()),
            count_only: true,
            ..Default::default()
        })
        .await
        .map_err(store_error)?
        .into_inner()
        .count)
}
