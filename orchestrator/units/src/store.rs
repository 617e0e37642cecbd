//! The units role's store calls, counted: the benchmark reports reads and
//! writes per scheduling event from these counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use herd_client::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse,
    compare, request_op,
};
use herd_client::proto::mvccpb::KeyValue;
use herd_client::{Client, ClientError};

/// Calls made, by kind (watch streams and their listings are not counted:
/// they are the kit's, once per controller start).
#[derive(Debug, Default)]
pub struct Stats {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
}

impl Stats {
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.reads.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
        )
    }
}

/// A client whose calls are counted in `stats`.
#[derive(Debug, Clone)]
pub struct Store {
    pub client: Client,
    pub stats: Arc<Stats>,
}

impl Store {
    pub fn new(client: Client) -> Store {
        Store {
            client,
            stats: Arc::default(),
        }
    }

    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, ClientError> {
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        Ok(self.client.kv().txn(req).await?.into_inner())
    }

    pub async fn put(&self, key: String, value: Vec<u8>, lease: i64) -> Result<(), ClientError> {
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        self.client
            .kv()
            .put(PutRequest {
                key: key.into_bytes(),
                value,
                lease,
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    pub async fn delete(&self, key: String) -> Result<(), ClientError> {
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        self.client
            .kv()
            .delete_range(DeleteRangeRequest {
                key: key.into_bytes(),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>, ClientError> {
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        Ok(self
            .client
            .kv()
            .range(RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .kvs
            .into_iter()
            .next())
    }
}

pub fn put_op(key: String, value: Vec<u8>, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.into_bytes(),
            value,
            lease,
            ..Default::default()
        })),
    }
}

pub fn delete_op(key: String) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: key.into_bytes(),
                ..Default::default()
            },
        )),
    }
}

/// `mod_revision(key) == rev` (0: the key does not exist).
pub fn mod_is(key: String, rev: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Mod as i32,
        key: key.into_bytes(),
        target_union: Some(compare::TargetUnion::ModRevision(rev)),
        range_end: Vec::new(),
    }
}
