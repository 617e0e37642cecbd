//! The `etcdserverpb.Watch` service: one bidirectional stream carries any
//! number of watches; each store watch is forwarded by a task that the
//! stream's own task owns, so closing the stream stops them all.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::access::{Access, read};
use super::convert;
use crate::Member;
use crate::auth::Need;
use crate::types::{WatchBatch, WatchRequest};
use herd_client::proto::etcdserverpb::{
    self as pb, watch_create_request::FilterType, watch_request::RequestUnion, watch_server::Watch,
};

pub struct WatchService {
    pub member: Arc<Member>,
    pub access: Access,
    /// How long a `progress_notify` watch may stay silent before it gets an
    /// empty response with the current revision (etcd: 10 minutes).
    pub progress_interval: Duration,
}

/// etcd's default progress-notify interval.
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(600);

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

/// Responses queued per stream before a slow client applies back-pressure.
/// Behind it each watch holds at most one response in hand and the store
/// queues at most `store::sm::WATCH_QUEUE` batches per watch; a watch that
/// falls further behind catches up from history once the client reads.
const QUEUE: usize = 256;

/// One watch on a stream: its forwarding task, and the bell that asks it
/// for a progress notice.
struct Forwarder {
    task: JoinHandle<()>,
    progress: Arc<Notify>,
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        req: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // Who the stream is decided once; each watch it creates is checked.
        let (who, plaintext) = self.access.caller(&req)?;
        self.access.allow(&who, plaintext, &[Need::Authenticated])?;
        let access = self.access.clone();
        let mut requests = req.into_inner();
        let (tx, rx) = mpsc::channel(QUEUE);
        let member = Arc::clone(&self.member);
        let interval = self.progress_interval;
        tokio::spawn(async move {
            let mut watches: HashMap<i64, Forwarder> = HashMap::new();
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
                        let allowed =
                            access.allow(&who, plaintext, &[read(&create.key, &create.range_end)]);
                        match watches.entry(id) {
                            _ if allowed.is_err() => refused(
                                &member,
                                allowed
                                    .err()
                                    .map(|s| s.message().to_owned())
                                    .unwrap_or_default()
                                    .as_str(),
                            ),
                            Entry::Occupied(_) => {
                                refused(&member, "etcdserver: duplicate watch ID")
                            }
                            Entry::Vacant(slot) => {
                                match start(&member, id, create, interval, tx.clone()) {
                                    Ok(forwarder) => {
                                        slot.insert(forwarder);
                                        continue;
                                    }
                                    Err(status) => refused(&member, status.message()),
                                }
                            }
                        }
                    }
                    Some(RequestUnion::CancelRequest(cancel)) => {
                        if let Some(f) = watches.remove(&cancel.watch_id) {
                            f.task.abort();
                        }
                        canceled(&member, cancel.watch_id, "")
                    }
                    // Each watch answers for itself, after the events it
                    // already queued, so a notice never overtakes an event
                    // at or below its revision. With no watch there is
                    // nothing to overtake.
                    Some(RequestUnion::ProgressRequest(_)) => {
                        watches.retain(|_, f| !f.task.is_finished());
                        if !watches.is_empty() {
                            for f in watches.values() {
                                f.progress.notify_one();
                            }
                            continue;
                        }
                        pb::WatchResponse {
                            header: convert::header(member.header(member.revision())),
                            watch_id: -1,
                            ..Default::default()
                        }
                    }
                    None => continue,
                };
                if tx.send(Ok(reply)).await.is_err() {
                    break;
                }
            }
            for (_, f) in watches {
                f.task.abort();
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// The answer to a create request that starts no watch: `created` too,
/// with etcd's invalid watch id, because clients match a create's answer
/// by `created` (etcd-client keeps waiting for it otherwise).
fn refused(member: &Member, reason: &str) -> pb::WatchResponse {
    pb::WatchResponse {
        created: true,
        ..canceled(member, INVALID_WATCH_ID, reason)
    }
}

/// etcd's `clientv3.InvalidWatchID`.
const INVALID_WATCH_ID: i64 = -1;

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
    interval: Duration,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
) -> Result<Forwarder, Status> {
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
    let progress = Arc::new(Notify::new());
    let bell = Arc::clone(&progress);
    let notify = create.progress_notify;
    let task = tokio::spawn(async move {
        if tx.send(Ok(created)).await.is_err() {
            return;
        }
        // A zero period would make tokio's interval panic.
        let interval = interval.max(Duration::from_millis(10));
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Whether anything went out since the last tick: etcd notifies only idle watches.
        let mut busy = false;
        loop {
            let batch = tokio::select! {
                batch = watch.recv() => batch,
                () = bell.notified() => {
                    watch.request_progress();
                    continue;
                }
                _ = ticks.tick(), if notify => {
                    if !std::mem::take(&mut busy) {
                        watch.request_progress();
                    }
                    continue;
                }
            };
            let Some(batch) = batch else { return };
            busy |= matches!(batch, WatchBatch::Events { .. });
            let reply = match batch {
                WatchBatch::Events { revision, events } => pb::WatchResponse {
                    header: convert::header(member.header(revision)),
                    watch_id: id,
                    events: events.iter().map(convert::event).collect(),
                    ..Default::default()
                },
                WatchBatch::Progress { revision } => pb::WatchResponse {
                    header: convert::header(member.header(revision)),
                    watch_id: id,
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
    });
    Ok(Forwarder { task, progress })
}
