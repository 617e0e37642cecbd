//! The `etcdserverpb.KV` service: range, put, delete, txn and compaction on the store.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::access::{Access, read, write};
use super::convert;
use crate::Member;
use crate::auth::Need;
use herd_client::proto::etcdserverpb::{self as pb, kv_server::Kv};

pub struct KvService {
    pub member: Arc<Member>,
    pub access: Access,
}

/// What a request op needs (recursively for nested txns).
fn op_needs(op: &pb::RequestOp, needs: &mut Vec<Need>) {
    use pb::request_op::Request as R;
    match &op.request {
        Some(R::RequestRange(r)) => needs.push(read(&r.key, &r.range_end)),
        Some(R::RequestPut(p)) => {
            needs.push(write(&p.key, &[]));
            if p.prev_kv {
                needs.push(read(&p.key, &[]));
            }
        }
        Some(R::RequestDeleteRange(d)) => {
            needs.push(write(&d.key, &d.range_end));
            if d.prev_kv {
                needs.push(read(&d.key, &d.range_end));
            }
        }
        Some(R::RequestTxn(t)) => txn_needs(t, needs),
        None => {}
    }
}

fn txn_needs(t: &pb::TxnRequest, needs: &mut Vec<Need>) {
    for c in &t.compare {
        needs.push(read(&c.key, &c.range_end));
    }
    for op in t.success.iter().chain(&t.failure) {
        op_needs(op, needs);
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let need = read(&req.get_ref().key, &req.get_ref().range_end);
        self.access.check(&req, &[need])?;
        let req = convert::range_request(req.into_inner())?;
        let resp = self.member.range(req).await.map_err(convert::status)?;
        Ok(Response::new(convert::range_response(resp)))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let mut needs = vec![write(&req.get_ref().key, &[])];
        if req.get_ref().prev_kv {
            needs.push(read(&req.get_ref().key, &[]));
        }
        self.access.check(&req, &needs)?;
        let resp = self
            .member
            .put(convert::put_request(req.into_inner()))
            .await
            .map_err(convert::status)?;
        Ok(Response::new(convert::put_response(resp)))
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let d = req.get_ref();
        let mut needs = vec![write(&d.key, &d.range_end)];
        if d.prev_kv {
            needs.push(read(&d.key, &d.range_end));
        }
        self.access.check(&req, &needs)?;
        let resp = self
            .member
            .delete_range(convert::delete_request(req.into_inner()))
            .await
            .map_err(convert::status)?;
        Ok(Response::new(convert::delete_response(resp)))
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let mut needs = Vec::new();
        txn_needs(req.get_ref(), &mut needs);
        self.access.check(&req, &needs)?;
        let req = convert::txn_request(req.into_inner())?;
        let resp = self.member.txn(req).await.map_err(convert::status)?;
        Ok(Response::new(convert::txn_response(resp)))
    }

    async fn compact(
        &self,
        req: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        self.access.check(&req, &[Need::Root])?;
        let resp = self
            .member
            .compact(req.into_inner().revision)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::CompactionResponse {
            header: convert::header(resp.header),
        }))
    }
}
