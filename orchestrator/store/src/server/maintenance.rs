//! The `etcdserverpb.Maintenance` service: status and alarms (what etcdctl's
//! `endpoint status/health` use), key space hashes, snapshot download and
//! leadership transfer; defragmentation is a no-op because the store has no
//! free-page file to compact.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::access::Access;
use super::convert;
use crate::Member;
use crate::auth::Need;
use herd_client::proto::etcdserverpb::{self as pb, maintenance_server::Maintenance};

pub struct MaintenanceService {
    pub member: Arc<Member>,
    pub access: Access,
}

/// Bytes per `SnapshotResponse` message (etcd sends 32 KiB too).
const SNAPSHOT_CHUNK: usize = 32 * 1024;

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        req: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        self.access.check(&req, &[Need::Authenticated])?;
        // herd raises no etcd-style alarms (no space quota; corruption stops the member).
        Ok(Response::new(pb::AlarmResponse {
            header: convert::header(self.member.header(self.member.revision())),
            alarms: Vec::new(),
        }))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.access.check(&req, &[Need::Authenticated])?;
        let s = self.member.status().await.map_err(convert::status)?;
        Ok(Response::new(pb::StatusResponse {
            header: convert::header(s.header),
            version: s.version,
            db_size: s.db_size,
            leader: s.leader,
            raft_index: s.raft_index,
            raft_term: s.raft_term,
            raft_applied_index: s.raft_applied_index,
            errors: Vec::new(),
            db_size_in_use: s.db_size,
            is_learner: s.is_learner,
        }))
    }

    async fn defragment(
        &self,
        req: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.access.check(&req, &[Need::Root])?;
        Ok(Response::new(pb::DefragmentResponse {
            header: convert::header(self.member.header(self.member.revision())),
        }))
    }

    async fn hash(
        &self,
        req: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        self.access.check(&req, &[Need::Root])?;
        // etcd hashes its whole backend file; herd's durable state is the
        // Raft log, so this is the key space hash at the current revision.
        let h = self.member.hash_kv(0).await.map_err(convert::status)?;
        Ok(Response::new(pb::HashResponse {
            header: convert::header(self.member.header(h.revision)),
            hash: h.hash,
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        self.access.check(&req, &[Need::Root])?;
        let h = self
            .member
            .hash_kv(req.into_inner().revision)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::HashKvResponse {
            header: convert::header(self.member.header(h.revision)),
            hash: h.hash,
            compact_revision: h.compact_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.access.check(&req, &[Need::Root])?;
        let (revision, bytes) = self.member.backup().await.map_err(convert::status)?;
        let header = convert::header(self.member.header(revision));
        let total = bytes.len();
        let chunks = (0..total.div_ceil(SNAPSHOT_CHUNK)).map(move |i| {
            let start = i * SNAPSHOT_CHUNK;
            let end = (start + SNAPSHOT_CHUNK).min(total);
            Ok(pb::SnapshotResponse {
                header,
                remaining_bytes: (total - end) as u64,
                blob: bytes[start..end].to_vec(),
            })
        });
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn move_leader(
        &self,
        req: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.access.check(&req, &[Need::Root])?;
        self.member
            .move_leader(req.into_inner().target_id)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::MoveLeaderResponse {
            header: convert::header(self.member.header(self.member.revision())),
        }))
    }
}
