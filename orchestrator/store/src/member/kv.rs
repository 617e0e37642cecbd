//! The key-value API of a member: range, put, delete, txn, compaction,
//! hash and backup, with the checks etcd makes on keys and sizes.

use std::sync::Arc;

use super::{Inner, Member, unexpected_cmd};
use crate::StoreError;
use crate::types::{
    Command, CommandResponse, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp,
    TxnRequest, TxnResponse,
};

impl Member {
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        self.inner.check_key(&req.key)?;
        if !req.serializable {
            self.inner.catch_up_for_read().await?;
        }
        let mut resp = self.inner.local_range(&req)?;
        resp.header = self.inner.header(resp.header.revision);
        Ok(resp)
    }

    pub async fn put(&self, req: PutRequest) -> Result<PutResponse, StoreError> {
        self.inner.check_key(&req.key)?;
        self.inner.check_size(req.key.len() + req.value.len())?;
        match self.inner.propose(Command::Put(req)).await? {
            CommandResponse::Put(mut r) => {
                r.header = self.inner.header(r.header.revision);
                Ok(r)
            }
            other => Err(unexpected_cmd(other)),
        }
    }

    pub async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, StoreError> {
        self.inner.check_key(&req.key)?;
        match self.inner.propose(Command::DeleteRange(req)).await? {
            CommandResponse::DeleteRange(mut r) => {
                r.header = self.inner.header(r.header.revision);
                Ok(r)
            }
            other => Err(unexpected_cmd(other)),
        }
    }

    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, StoreError> {
        for c in &req.compare {
            self.inner.check_key(&c.key)?;
        }
        self.inner.check_ops(&req)?;
        self.inner.check_size(txn_size(&req))?;
        let read_only = is_read_only(&req);
        if read_only {
            // A read-only txn needs no log entry: read locally once this member
            // has applied up to the leader's read index.
            self.inner.catch_up_for_read().await?;
        }
        let resp = if read_only {
            match self.inner.sm.read().kv.read_txn(&req) {
                Ok(r) => CommandResponse::Txn(r),
                Err(e) => CommandResponse::Failed(e),
            }
        } else {
            self.inner.propose(Command::Txn(req)).await?
        };
        match resp {
            CommandResponse::Txn(mut r) => {
                let h = self.inner.header(r.header.revision);
                fill_headers(&mut r, h);
                Ok(r)
            }
            other => Err(unexpected_cmd(other)),
        }
    }

    /// Compacts history up to `revision` (etcd's `physical` makes no difference here:
    /// compaction is applied in memory before the call returns).
    pub async fn compact(&self, revision: i64) -> Result<CompactionResponse, StoreError> {
        match self.inner.propose(Command::Compact { revision }).await? {
            CommandResponse::Compact(mut r) => {
                r.header = self.inner.header(r.header.revision);
                Ok(r)
            }
            other => Err(unexpected_cmd(other)),
        }
    }

    /// Hash of the key space at `revision` (0 = current), after this member
    /// applied everything committed before the call (etcd's `HashKV`).
    pub async fn hash_kv(&self, revision: i64) -> Result<crate::mvcc::KvHash, StoreError> {
        self.inner.catch_up_for_read().await?;
        // Hashing walks the whole history: off the runtime.
        let sm = self.inner.sm.clone();
        tokio::task::spawn_blocking(move || sm.read().kv.hash_kv(revision))
            .await
            .map_err(|e| StoreError::Task {
                what: "hashing the key space",
                source: Arc::new(e),
            })?
            .map_err(StoreError::Apply)
    }

    /// This member's key space as a snapshot file ([`super::backup`]), and
    /// the revision it holds.
    pub async fn backup(&self) -> Result<(i64, Vec<u8>), StoreError> {
        // The clone (values are shared `Arc`s) holds the lock only briefly;
        // both it and the encoding run off the runtime.
        let sm = self.inner.sm.clone();
        tokio::task::spawn_blocking(move || {
            let kv = sm.read().kv.clone();
            (kv.revision(), crate::backup::encode(&kv))
        })
        .await
        .map_err(|e| StoreError::Task {
            what: "encoding the snapshot",
            source: Arc::new(e),
        })
    }
}

impl Inner {
    pub(super) fn check_key(&self, key: &[u8]) -> Result<(), StoreError> {
        if key.is_empty() {
            return Err(StoreError::InvalidRequest(
                "etcdserver: key is not provided".into(),
            ));
        }
        if key.len() > self.config.limits.max_key_bytes {
            return Err(StoreError::InvalidRequest(format!(
                "etcdserver: key is too long ({} bytes, limit {})",
                key.len(),
                self.config.limits.max_key_bytes
            )));
        }
        Ok(())
    }

    pub(super) fn check_size(&self, n: usize) -> Result<(), StoreError> {
        if n > self.config.limits.max_request_bytes {
            return Err(StoreError::InvalidRequest(format!(
                "etcdserver: request is too large ({n} bytes, limit {})",
                self.config.limits.max_request_bytes
            )));
        }
        Ok(())
    }

    pub(super) fn check_ops(&self, t: &TxnRequest) -> Result<(), StoreError> {
        for op in t.success.iter().chain(&t.failure) {
            match op {
                RequestOp::Range(r) => self.check_key(&r.key)?,
                RequestOp::Put(p) => self.check_key(&p.key)?,
                RequestOp::DeleteRange(d) => self.check_key(&d.key)?,
                RequestOp::Txn(t) => self.check_ops(t)?,
            }
        }
        Ok(())
    }

    pub(super) fn local_range(&self, req: &RangeRequest) -> Result<RangeResponse, StoreError> {
        Ok(self.sm.read().kv.range(req)?)
    }
}

pub(super) fn request_size(op: &RequestOp) -> usize {
    match op {
        RequestOp::Range(r) => r.key.len() + r.range_end.len() + 64,
        RequestOp::Put(p) => p.key.len() + p.value.len() + 32,
        RequestOp::DeleteRange(d) => d.key.len() + d.range_end.len() + 16,
        RequestOp::Txn(t) => txn_size(t),
    }
}

pub(super) fn txn_size(t: &TxnRequest) -> usize {
    t.compare
        .iter()
        .map(|c| {
            c.key.len()
                + c.range_end.len()
                + match &c.target {
                    crate::types::CompareTarget::Value(v) => v.len(),
                    _ => 8,
                }
        })
        .sum::<usize>()
        + t.success
            .iter()
            .chain(&t.failure)
            .map(request_size)
            .sum::<usize>()
}

pub(super) fn is_read_only(t: &TxnRequest) -> bool {
    t.success.iter().chain(&t.failure).all(|op| match op {
        RequestOp::Range(_) => true,
        RequestOp::Txn(t) => is_read_only(t),
        _ => false,
    })
}

pub(super) fn fill_headers(t: &mut TxnResponse, h: ResponseHeader) {
    t.header = h;
    for r in &mut t.responses {
        match r {
            ResponseOp::Range(x) => {
                x.header = ResponseHeader {
                    revision: x.header.revision,
                    ..h
                }
            }
            ResponseOp::Put(x) => x.header = h,
            ResponseOp::DeleteRange(x) => x.header = h,
            ResponseOp::Txn(x) => fill_headers(x, h),
        }
    }
}
