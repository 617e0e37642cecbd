//! The `etcdserverpb.Watch` service: one bidirectional stream carries any
//! number of watches; each store watch is forwarded by a task that the
//! stream's own task owns, so closing the stream stops them all.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use crate::proto::etcdserverpb::{
    self as pb, watch_create_request::FilterType, watch_request::RequestUnion, watch_server::Watch,
};
use crate::store::Member;
use crate::store::types::{WatchBatch, WatchRequest};

pub struct WatchService {
    pub member: Arc<Member>,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

/// Responses queued per stream before a slow client applies back-pressure.
const QUEUE: usize = 256;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        req: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut requests = req.into_inner();
        let (tx, rx) = mpsc::channel(QUEUE);
        let member = Arc::clone(&self.member);
        tokio::spawn(async move {
            let mut watches: HashMap<i64, JoinHandle<()>> = HashMap::new();
            let mut next_id = 0i64;
            while let Some(Ok(request)) = requests.next().await {
                let reply = match request.request_union {
                    Some(RequestUnion::CreateRequest(create)) => {
                        let id = if create.watch_id != 0 {
                            create.watch_id
                        } else {
                            while watches.contains_key(&next_id) {
                                next_id += 1;
                            }
                            next_id
                        };
                        match watches.entry(id) {
                            Entry::Occupied(_) => {
                                canceled(&member, id, "etcdserver: duplicate watch ID")
                            }
                            Entry::Vacant(slot) => match start(&member, id, create, tx.clone()) {
                                Ok(task) => {
                                    slot.insert(task);
                                    continue;
                                }
                                Err(status) => canceled(&member, id, status.message()),
                            },
                        }
                    }
                    Some(RequestUnion::CancelRequest(cancel)) => {
                        if let Some(task) = watches.remove(&cancel.watch_id) {
                            task.abort();
                        }
                        canceled(&member, cancel.watch_id, "")
                    }
                    Some(RequestUnion::ProgressRequest(_)) => pb::WatchResponse {
                        header: convert::header(member.header(member.revision())),
                        watch_id: -1,
                        ..Default::default()
                    },
                    None => continue,
                };
                if tx.send(Ok(reply)).await.is_err() {
                    break;
                }
            }
            for (_, task) in watches {
                task.abort();
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

fn canceled(member: &Member, watch_id: i64, reason: &str) -> pb::WatchResponse {
    pb::WatchResponse {
        header: convert::header(member.header(member.revision())),
        watch_id,
        canceled: true,
        cancel_reason: reason.to_owned(),
        ..Default::default()
    }
}

/// Registers the store watch, sends the `created` reply, and spawns its forwarder.
fn start(
    member: &Arc<Member>,
    id: i64,
    create: pb::WatchCreateRequest,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
) -> Result<JoinHandle<()>, Status> {
    let filters = &create.filters;
    let request = WatchRequest {
        key: create.key,
        range_end: create.range_end,
        start_revision: create.start_revision,
        prev_kv: create.prev_kv,
        no_put: filters.contains(&(FilterType::Noput as i32)),
        no_delete: filters.contains(&(FilterType::Nodelete as i32)),
    };
    // The created reply's revision must not be newer than the watch's start,
    // so read it before registering.
    let created = pb::WatchResponse {
        header: convert::header(member.header(member.revision())),
        watch_id: id,
        created: true,
        ..Default::default()
    };
    let mut watch = member.watch(request).map_err(convert::status)?;
    let member = Arc::clone(member);
    Ok(tokio::spawn(async move {
        if tx.send(Ok(created)).await.is_err() {
            return;
        }
        while let Some(batch) = watch.recv().await {
            let reply = match batch {
                WatchBatch::Events { revision, events } => pb::WatchResponse {
                    header: convert::header(member.header(revision)),
                    watch_id: id,
                    events: events.iter().map(convert::event).collect(),
                    ..Default::default()
                },
                WatchBatch::Compacted { compact_revision } => pb::WatchResponse {
                    header: convert::header(member.header(member.revision())),
                    watch_id: id,
                    canceled: true,
                    compact_revision,
                    cancel_reason: "etcdserver: mvcc: required revision has been compacted".into(),
                    ..Default::default()
                },
            };
            let last = reply.canceled;
            if tx.send(Ok(reply)).await.is_err() || last {
                return;
            }
        }
    }))
}
