//! The `etcdserverpb.KV` service: range, put, delete, txn and compaction on the store.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use crate::Member;
use herd_client::proto::etcdserverpb::{self as pb, kv_server::Kv};

pub struct KvService {
    pub member: Arc<Member>,
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let req = convert::range_request(req.into_inner())?;
        let resp = self.member.range(req).await.map_err(convert::status)?;
        Ok(Response::new(convert::range_response(resp)))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
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
        let resp = self
            .member
            .delete_range(convert::delete_request(req.into_inner()))
            .await
            .map_err(convert::status)?;
        Ok(Response::new(convert::delete_response(resp)))
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let req = convert::txn_request(req.into_inner())?;
        let resp = self.member.txn(req).await.map_err(convert::status)?;
        Ok(Response::new(convert::txn_response(resp)))
    }

    async fn compact(
        &self,
        req: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
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
