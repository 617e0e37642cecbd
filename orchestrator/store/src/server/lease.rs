//! The `etcdserverpb.Lease` service: grant, revoke, keep-alive, time-to-live, list.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::access::{Access, write};
use super::convert;
use crate::auth::Need;
use crate::types::ApplyError;
use crate::{Member, StoreError};
use herd_client::proto::etcdserverpb::{self as pb, lease_server::Lease};

pub struct LeaseService {
    pub member: Arc<Member>,
    pub access: Access,
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        self.access.check(&req, &[Need::Authenticated])?;
        let req = req.into_inner();
        let resp = self
            .member
            .lease_grant(req.ttl, req.id)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::LeaseGrantResponse {
            header: convert::header(resp.header),
            id: resp.id,
            ttl: resp.ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        // Revoking deletes the lease's keys: the caller must be allowed to
        // delete each of them (as etcd requires).
        let id = req.get_ref().id;
        let keys = self
            .member
            .lease_time_to_live(id, true)
            .await
            .map_err(convert::status)?
            .keys;
        let mut needs = vec![Need::Authenticated];
        needs.extend(keys.iter().map(|k| write(k, &[])));
        self.access.check(&req, &needs)?;
        let resp = self
            .member
            .lease_revoke(req.into_inner().id)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: convert::header(resp.header),
        }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        self.access.check(&req, &[Need::Authenticated])?;
        let member = Arc::clone(&self.member);
        let responses = req.into_inner().then(move |item| {
            let member = Arc::clone(&member);
            async move {
                let id = item?.id;
                match member.lease_keep_alive(id).await {
                    Ok(r) => Ok(pb::LeaseKeepAliveResponse {
                        header: convert::header(r.header),
                        id: r.id,
                        ttl: r.ttl,
                    }),
                    // etcd answers an unknown lease with TTL 0 on the stream,
                    // and clients take that as "expired".
                    Err(
                        StoreError::LeaseNotFound | StoreError::Apply(ApplyError::LeaseNotFound),
                    ) => Ok(pb::LeaseKeepAliveResponse {
                        header: convert::header(member.header(member.revision())),
                        id,
                        ttl: 0,
                    }),
                    Err(e) => Err(convert::status(e)),
                }
            }
        });
        Ok(Response::new(Box::pin(responses)))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        self.access.check(&req, &[Need::Authenticated])?;
        let req = req.into_inner();
        let r = self
            .member
            .lease_time_to_live(req.id, req.keys)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            header: convert::header(r.header),
            id: r.id,
            ttl: r.ttl,
            granted_ttl: r.granted_ttl,
            keys: r.keys,
        }))
    }

    async fn lease_leases(
        &self,
        req: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        self.access.check(&req, &[Need::Authenticated])?;
        let r = self.member.lease_leases().await.map_err(convert::status)?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: convert::header(r.header),
            leases: r
                .leases
                .into_iter()
                .map(|id| pb::LeaseStatus { id })
                .collect(),
        }))
    }
}
