//! The `v3lockpb.Lock` and `v3electionpb.Election` services. As etcd's
//! v3lock/v3election do, they run the client-side algorithms of
//! [`super::lock`] and [`super::election`] through a client of this very
//! member, so there is one implementation of each protocol.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::access::{Access, read, write};
use crate::auth::Need;
use herd_client::election::{self, ElectionError};
use herd_client::lock;
use herd_client::proto::etcdserverpb::ResponseHeader;
use herd_client::proto::v3electionpb::{self as epb, election_server::Election};
use herd_client::proto::v3lockpb::{self as lpb, lock_server::Lock};
use herd_client::{Client, ClientError};

pub struct LockService {
    pub client: Client,
    pub access: Access,
}

pub struct ElectionService {
    pub client: Client,
    pub access: Access,
}

/// The keys a lock or election `name` uses: `name/…`.
fn under(name: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    let end = herd_client::prefix_end(&prefix);
    (prefix, end)
}

fn write_under(name: &[u8]) -> Need {
    let (k, e) = under(name);
    write(&k, &e)
}

fn read_under(name: &[u8]) -> Need {
    let (k, e) = under(name);
    read(&k, &e)
}

fn client_status(e: ClientError) -> Status {
    match e {
        ClientError::Status(s) => s,
        other => Status::unavailable(other.to_string()),
    }
}

fn election_status(e: ElectionError) -> Status {
    match e {
        ElectionError::NotLeader => Status::failed_precondition(e.to_string()),
        ElectionError::NoLeader => Status::not_found(e.to_string()),
        ElectionError::Client(c) => client_status(c),
    }
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(
        &self,
        req: Request<lpb::LockRequest>,
    ) -> Result<Response<lpb::LockResponse>, Status> {
        self.access
            .check(&req, &[write_under(&req.get_ref().name)])?;
        let req = req.into_inner();
        if req.name.is_empty() {
            return Err(Status::invalid_argument("etcdserver: lock name is empty"));
        }
        let held = lock::lock(&self.client, &req.name, req.lease)
            .await
            .map_err(client_status)?;
        Ok(Response::new(lpb::LockResponse {
            header: header(held.revision),
            key: held.key,
        }))
    }

    async fn unlock(
        &self,
        req: Request<lpb::UnlockRequest>,
    ) -> Result<Response<lpb::UnlockResponse>, Status> {
        self.access.check(&req, &[write(&req.get_ref().key, &[])])?;
        let revision = lock::unlock(&self.client, &req.into_inner().key)
            .await
            .map_err(client_status)?;
        Ok(Response::new(lpb::UnlockResponse {
            header: header(revision),
        }))
    }
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<epb::LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        req: Request<epb::CampaignRequest>,
    ) -> Result<Response<epb::CampaignResponse>, Status> {
        self.access
            .check(&req, &[write_under(&req.get_ref().name)])?;
        let req = req.into_inner();
        if req.name.is_empty() {
            return Err(Status::invalid_argument(
                "etcdserver: election name is empty",
            ));
        }
        let leader = election::campaign(&self.client, &req.name, req.lease, &req.value)
            .await
            .map_err(election_status)?;
        Ok(Response::new(epb::CampaignResponse {
            header: header(leader.rev),
            leader: Some(leader),
        }))
    }

    async fn proclaim(
        &self,
        req: Request<epb::ProclaimRequest>,
    ) -> Result<Response<epb::ProclaimResponse>, Status> {
        self.access.check(
            &req,
            &[write(
                &req.get_ref()
                    .leader
                    .as_ref()
                    .map(|l| l.key.clone())
                    .unwrap_or_default(),
                &[],
            )],
        )?;
        let req = req.into_inner();
        let leader = req
            .leader
            .ok_or_else(|| Status::invalid_argument("etcdserver: proclaim without a leader key"))?;
        election::proclaim(&self.client, &leader, &req.value)
            .await
            .map_err(election_status)?;
        Ok(Response::new(epb::ProclaimResponse { header: header(0) }))
    }

    async fn leader(
        &self,
        req: Request<epb::LeaderRequest>,
    ) -> Result<Response<epb::LeaderResponse>, Status> {
        self.access
            .check(&req, &[read_under(&req.get_ref().name)])?;
        let (kv, revision) = election::leader(&self.client, &req.into_inner().name)
            .await
            .map_err(election_status)?;
        Ok(Response::new(epb::LeaderResponse {
            header: header(revision),
            kv: Some(kv),
        }))
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        req: Request<epb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        self.access
            .check(&req, &[read_under(&req.get_ref().name)])?;
        let name = req.into_inner().name;
        let (kv_tx, mut kv_rx) = tokio::sync::mpsc::channel(16);
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let client = self.client.clone();
        // The observer ends when the caller goes away (kv_rx/rx dropped).
        tokio::spawn(async move {
            let observer = election::observe(&client, &name, kv_tx);
            tokio::pin!(observer);
            loop {
                tokio::select! {
                    done = &mut observer => {
                        if let Err(e) = done {
                            let _ = tx.send(Err(election_status(e))).await;
                        }
                        return;
                    }
                    kv = kv_rx.recv() => match kv {
                        Some(kv) => {
                            let resp = epb::LeaderResponse { header: header(kv.mod_revision), kv: Some(kv) };
                            if tx.send(Ok(resp)).await.is_err() {
                                return;
                            }
                        }
                        None => return,
                    },
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn resign(
        &self,
        req: Request<epb::ResignRequest>,
    ) -> Result<Response<epb::ResignResponse>, Status> {
        self.access.check(
            &req,
            &[write(
                &req.get_ref()
                    .leader
                    .as_ref()
                    .map(|l| l.key.clone())
                    .unwrap_or_default(),
                &[],
            )],
        )?;
        let leader = req
            .into_inner()
            .leader
            .ok_or_else(|| Status::invalid_argument("etcdserver: resign without a leader key"))?;
        election::resign(&self.client, &leader)
            .await
            .map_err(election_status)?;
        Ok(Response::new(epb::ResignResponse { header: header(0) }))
    }
}
