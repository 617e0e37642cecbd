//! The `etcdserverpb.Cluster` service: member list, add, remove, update, promote.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::access::Access;
use super::convert;
use crate::Member;
use crate::auth::Need;
use herd_client::proto::etcdserverpb::{self as pb, cluster_server::Cluster};

pub struct ClusterService {
    pub member: Arc<Member>,
    pub access: Access,
}

impl ClusterService {
    fn scheme(&self) -> &'static str {
        if self.member.pki().is_some() {
            "https"
        } else {
            "http"
        }
    }

    async fn members(&self) -> Result<(Option<pb::ResponseHeader>, Vec<pb::Member>), Status> {
        let list = self.member.member_list().await.map_err(convert::status)?;
        Ok((
            convert::header(list.header),
            list.members
                .iter()
                .map(|m| convert::member(m, self.scheme()))
                .collect(),
        ))
    }
}

/// `http(s)://HOST:PORT` (etcd's peer URL form) to the `HOST:PORT` herd
/// uses (whether peers speak TLS is the cluster's setting, not the URL's).
fn peer_addr(url: &str) -> Result<String, Status> {
    let addr = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    addr.parse::<std::net::SocketAddr>().map_err(|_| {
        Status::invalid_argument(format!(
            "etcdserver: bad peer URL {url:?} (want https://IP:PORT)"
        ))
    })?;
    Ok(addr.to_owned())
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        req: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        self.access.check(&req, &[Need::Root])?;
        let req = req.into_inner();
        let [url] = req.peer_urls.as_slice() else {
            return Err(Status::invalid_argument(
                "etcdserver: a herd member has exactly one peer URL",
            ));
        };
        let addr = peer_addr(url)?;
        // etcd's MemberAdd carries no name; herd derives ids from names, so
        // the member's name is its peer address until it starts.
        let info = self
            .member
            .member_add(&addr, &addr)
            .await
            .map_err(convert::status)?;
        let (header, members) = self.members().await?;
        Ok(Response::new(pb::MemberAddResponse {
            header,
            member: Some(convert::member(&info, self.scheme())),
            members,
        }))
    }

    async fn member_remove(
        &self,
        req: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        self.access.check(&req, &[Need::Root])?;
        self.member
            .member_remove(req.into_inner().id)
            .await
            .map_err(convert::status)?;
        let (header, members) = self.members().await?;
        Ok(Response::new(pb::MemberRemoveResponse { header, members }))
    }

    async fn member_update(
        &self,
        req: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        self.access.check(&req, &[Need::Root])?;
        let req = req.into_inner();
        let [url] = req.peer_urls.as_slice() else {
            return Err(Status::invalid_argument(
                "etcdserver: a herd member has exactly one peer URL",
            ));
        };
        let addr = peer_addr(url)?;
        self.member
            .member_update(req.id, &addr)
            .await
            .map_err(convert::status)?;
        let (header, members) = self.members().await?;
        Ok(Response::new(pb::MemberUpdateResponse { header, members }))
    }

    async fn member_list(
        &self,
        req: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        self.access.check(&req, &[Need::Authenticated])?;
        let (header, members) = self.members().await?;
        Ok(Response::new(pb::MemberListResponse { header, members }))
    }

    async fn member_promote(
        &self,
        req: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        self.access.check(&req, &[Need::Root])?;
        self.member
            .member_promote(req.into_inner().id)
            .await
            .map_err(convert::status)?;
        let (header, members) = self.members().await?;
        Ok(Response::new(pb::MemberPromoteResponse { header, members }))
    }
}
