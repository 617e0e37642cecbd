//! The Watch service over real gRPC against an in-process member: progress
//! notices (requested and periodic) and a client that stops reading.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tonic::Streaming;

use super::{Listener, ServeOptions, serve_with};
use crate::sm::WATCH_QUEUE;
use crate::types::PutRequest;
use crate::{Config, Member};
use herd_client::Client;
use herd_client::proto::etcdserverpb::{
    self as pb, WatchCreateRequest, WatchProgressRequest, watch_request::RequestUnion,
};

/// A single member serving the API on loopback; dropped with the test.
struct Solo {
    member: Arc<Member>,
    client: Client,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Solo {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn solo(progress: Duration) -> Solo {
    let dir = tempfile::tempdir().unwrap();
    let peer: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let member = Arc::new(
        Member::start(Config::new("solo", dir.path().join("solo"), peer, "t"))
            .await
            .unwrap(),
    );
    let listener = Listener::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let options = ServeOptions {
        watch_progress_interval: progress,
        ..ServeOptions::new(1536 * 1024)
    };
    tokio::spawn(serve_with(Arc::clone(&member), listener, options, async {
        let _ = stopped.await;
    }));
    let client = Client::connect(&[addr]).await.unwrap();
    Solo {
        member,
        client,
        stop: Some(stop),
        _dir: dir,
    }
}

async fn put(m: &Member, key: &str) -> i64 {
    put_sized(m, key, 1).await
}

async fn put_sized(m: &Member, key: &str, size: usize) -> i64 {
    m.put(PutRequest {
        key: key.into(),
        value: vec![b'v'; size],
        ..PutRequest::default()
    })
    .await
    .unwrap()
    .header
    .revision
}

/// Opens a Watch stream; requests go in through the returned sender.
async fn stream(client: &Client) -> (mpsc::Sender<pb::WatchRequest>, Streaming<pb::WatchResponse>) {
    let (tx, rx) = mpsc::channel(8);
    let responses = client
        .watch()
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, responses)
}

fn create(key: &str, progress_notify: bool) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.into(),
            progress_notify,
            ..Default::default()
        })),
    }
}

fn progress_request() -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
    }
}

async fn next(s: &mut Streaming<pb::WatchResponse>) -> pb::WatchResponse {
    tokio::time::timeout(Duration::from_secs(30), s.next())
        .await
        .expect("a watch response in time")
        .expect("the stream is open")
        .expect("a response, not an error")
}

fn revision(r: &pb::WatchResponse) -> i64 {
    r.header.as_ref().map_or(0, |h| h.revision)
}

fn is_progress(r: &pb::WatchResponse) -> bool {
    r.events.is_empty() && !r.created && !r.canceled && r.compact_revision == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_requests_are_answered_per_watch_after_its_events() {
    let s = solo(Duration::from_secs(600)).await;
    // No watch on the stream: one stream-wide answer.
    let (tx, mut rx) = stream(&s.client).await;
    put(&s.member, "a").await;
    tx.send(progress_request()).await.unwrap();
    let r = next(&mut rx).await;
    assert!(is_progress(&r), "{r:?}");
    assert_eq!((r.watch_id, revision(&r)), (-1, 1));

    tx.send(create("a", false)).await.unwrap();
    let created = next(&mut rx).await;
    assert!(created.created);
    let rev = put(&s.member, "a").await;
    tx.send(progress_request()).await.unwrap();
    // The event comes first, then the notice vouching for its revision.
    let event = next(&mut rx).await;
    assert_eq!(event.events.len(), 1, "{event:?}");
    let r = next(&mut rx).await;
    assert!(is_progress(&r), "{r:?}");
    assert_eq!((r.watch_id, revision(&r)), (created.watch_id, rev));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_notify_watches_hear_the_revision_when_idle() {
    let s = solo(Duration::from_millis(300)).await;
    let (tx, mut rx) = stream(&s.client).await;
    tx.send(create("quiet", true)).await.unwrap();
    let created = next(&mut rx).await;
    assert!(created.created);
    // Writes to other keys move the revision; the idle watch is told.
    let rev = put(&s.member, "elsewhere").await;
    let seen = loop {
        let r = next(&mut rx).await;
        assert!(is_progress(&r), "{r:?}");
        assert_eq!(r.watch_id, created.watch_id);
        if revision(&r) == rev {
            break r;
        }
        assert!(revision(&r) < rev, "{r:?}");
    };
    assert_eq!(revision(&seen), rev);
    // A watch without progress_notify hears nothing while idle.
    let (tx2, mut rx2) = stream(&s.client).await;
    tx2.send(create("quiet", false)).await.unwrap();
    assert!(next(&mut rx2).await.created);
    let silent = tokio::time::timeout(Duration::from_secs(2), rx2.next()).await;
    assert!(silent.is_err(), "unexpected {silent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_costs_bounded_memory_and_misses_nothing() {
    const WRITES: i64 = 20_000;
    let s = solo(Duration::from_secs(600)).await;
    let (tx, mut rx) = stream(&s.client).await;
    tx.send(create("k", false)).await.unwrap();
    assert!(next(&mut rx).await.created);
    // The client reads nothing while the writes go in (64 at a time). The
    // values are 1 KiB so the writes outgrow what HTTP/2 flow control lets
    // the client's own buffers absorb (hyper's windows are a few MiB).
    let mut peak = 0;
    let mut written = 0;
    while written < WRITES {
        let batch = (WRITES - written).min(64);
        let puts = (0..batch).map(|_| put_sized(&s.member, "k", 1024));
        futures::future::join_all(puts).await;
        written += batch;
        peak = peak.max(s.member.watch_backlog());
        assert!(peak <= WATCH_QUEUE, "store queue grew to {peak}");
    }
    // The gRPC buffers and the store queue are full: the watcher fell behind.
    assert_eq!(peak, WATCH_QUEUE, "the store queue never filled");
    let mut expected = 1;
    while expected <= WRITES {
        let r = next(&mut rx).await;
        assert!(!r.canceled, "{r:?}");
        for e in &r.events {
            let kv = e.kv.as_ref().unwrap();
            assert_eq!(kv.mod_revision, expected, "a gap or a repeat");
            expected += 1;
        }
        assert!(s.member.watch_backlog() <= WATCH_QUEUE);
    }
    // Caught up: live again.
    let rev = put(&s.member, "k").await;
    let r = next(&mut rx).await;
    assert_eq!(r.events[0].kv.as_ref().unwrap().mod_revision, rev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_client_whose_history_was_compacted_is_told_why() {
    const WRITES: i64 = 10_000;
    let s = solo(Duration::from_secs(600)).await;
    let (tx, mut rx) = stream(&s.client).await;
    tx.send(create("k", false)).await.unwrap();
    assert!(next(&mut rx).await.created);
    let mut written = 0;
    while written < WRITES {
        let batch = (WRITES - written).min(64);
        futures::future::join_all((0..batch).map(|_| put_sized(&s.member, "k", 1024))).await;
        written += batch;
    }
    assert_eq!(s.member.watch_backlog(), WATCH_QUEUE);
    s.member.compact(WRITES - 1).await.unwrap();
    // What was queued arrives in order, then the cancellation and its reason.
    let mut expected = 1;
    let end = loop {
        let r = next(&mut rx).await;
        if r.canceled {
            break r;
        }
        for e in &r.events {
            assert_eq!(e.kv.as_ref().unwrap().mod_revision, expected);
            expected += 1;
        }
    };
    assert!(expected > 1 && expected < WRITES, "{expected}");
    assert_eq!(end.compact_revision, WRITES - 1);
    assert!(
        end.cancel_reason
            .contains("required revision has been compacted"),
        "{end:?}"
    );
}

/// A dropped `Session` stops renewing its lease, which then expires (the
/// keep-alive stream used to outlive the session's task).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_session_stops_renewing_its_lease() {
    let solo = solo(Duration::from_secs(600)).await;
    let ttl = |id: i64| {
        let client = solo.client.clone();
        async move {
            client
                .lease()
                .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: false })
                .await
                .unwrap()
                .into_inner()
                .ttl
        }
    };
    let kept = herd_client::session::Session::new(&solo.client, Duration::from_secs(2))
        .await
        .unwrap();
    let dropped = herd_client::session::Session::new(&solo.client, Duration::from_secs(2))
        .await
        .unwrap();
    let dropped_id = dropped.lease();
    drop(dropped);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        ttl(dropped_id).await,
        -1,
        "the dropped session's lease is still alive"
    );
    assert!(
        ttl(kept.lease()).await > 0,
        "the live session's lease expired"
    );
    kept.close().await.unwrap();
}

/// A lease service that answers every keep-alive request (TTL 60) and
/// counts them: the keep-alive stream of a session stays open, as a real
/// store's does.
struct Counting {
    renewals: Arc<std::sync::atomic::AtomicUsize>,
}

type Renewals = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<pb::LeaseKeepAliveResponse, tonic::Status>> + Send>,
>;

#[tonic::async_trait]
impl pb::lease_server::Lease for Counting {
    async fn lease_grant(
        &self,
        _: tonic::Request<pb::LeaseGrantRequest>,
    ) -> Result<tonic::Response<pb::LeaseGrantResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn lease_revoke(
        &self,
        _: tonic::Request<pb::LeaseRevokeRequest>,
    ) -> Result<tonic::Response<pb::LeaseRevokeResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    type LeaseKeepAliveStream = Renewals;
    async fn lease_keep_alive(
        &self,
        req: tonic::Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<tonic::Response<Self::LeaseKeepAliveStream>, tonic::Status> {
        let renewals = Arc::clone(&self.renewals);
        let answers = req.into_inner().map(move |r| {
            renewals.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            r.map(|r| pb::LeaseKeepAliveResponse {
                header: None,
                id: r.id,
                ttl: 60,
            })
        });
        Ok(tonic::Response::new(Box::pin(answers)))
    }
    async fn lease_time_to_live(
        &self,
        _: tonic::Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<tonic::Response<pb::LeaseTimeToLiveResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn lease_leases(
        &self,
        _: tonic::Request<pb::LeaseLeasesRequest>,
    ) -> Result<tonic::Response<pb::LeaseLeasesResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
}

/// A `Session` whose task is dropped while its keep-alive stream is open
/// sends no more renewals: the request stream ends with the task (a
/// stream with its own timer, polled by the connection, went on renewing
/// against etcd after the task was gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_session_sends_no_more_renewals() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let renewals = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::lease_server::LeaseServer::new(Counting {
                renewals: Arc::clone(&renewals),
            }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let client = Client::connect(&[addr.to_string()]).await.unwrap();
    // TTL 1 s: a renewal every 333 ms while the session lives.
    let session = herd_client::session::Session::keep(&client, 7, 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        renewals.load(Ordering::SeqCst) >= 3,
        "the session did not renew"
    );
    assert!(!session.has_ended());
    drop(session);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let at_drop = renewals.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        renewals.load(Ordering::SeqCst),
        at_drop,
        "renewals went on after the session was dropped"
    );
    server.abort();
}
