//! Unit tests of `sm`, kept apart so the module reads as code.

use super::*;
use crate::types::PutRequest;
use openraft::{CommittedLeaderId, EntryPayload};

fn put_entry(index: u64, key: &str, value: &str) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Command::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..PutRequest::default()
        })),
    }
}

#[tokio::test]
async fn watch_from_past_revision_then_live_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(dir.path()).unwrap();
    sm.apply(vec![put_entry(1, "w/a", "1"), put_entry(2, "x", "no")])
        .await
        .unwrap();
    let mut w = sm.watch(WatchRequest {
        key: "w/".into(),
        range_end: "w0".into(),
        start_revision: 1,
        ..WatchRequest::default()
    });
    sm.apply(vec![put_entry(3, "w/b", "2")]).await.unwrap();
    let revs: Vec<i64> = [w.recv().await.unwrap(), w.recv().await.unwrap()]
        .into_iter()
        .map(|b| match b {
            WatchBatch::Events { revision, .. } => revision,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(revs, vec![1, 3]);
    assert!(w.rx.try_recv().is_err());
}

fn revision_of(batch: WatchBatch) -> i64 {
    match batch {
        WatchBatch::Events { revision, .. } => revision,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_watcher_that_never_reads_stays_bounded_then_catches_up_without_gap() {
    const WRITES: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(dir.path()).unwrap();
    let mut w = sm.watch(WatchRequest {
        key: "k/".into(),
        range_end: "k0".into(),
        ..WatchRequest::default()
    });
    for chunk in (1..=WRITES).collect::<Vec<_>>().chunks(1000) {
        let entries = chunk
            .iter()
            .map(|&i| put_entry(i, &format!("k/{}", i % 100), "v"))
            .collect::<Vec<_>>();
        sm.apply(entries).await.unwrap();
        assert!(w.queued() <= WATCH_QUEUE, "{} batches queued", w.queued());
    }
    assert_eq!(w.queued(), WATCH_QUEUE);
    // Behind: it cannot vouch for the current revision.
    assert!(!w.request_progress());
    for expected in 1..=WRITES as i64 {
        assert_eq!(revision_of(w.recv().await.unwrap()), expected);
        assert!(w.queued() <= WATCH_QUEUE);
    }
    // Caught up: live again, progress is the current revision.
    sm.apply(vec![put_entry(WRITES + 1, "k/x", "live")])
        .await
        .unwrap();
    assert_eq!(revision_of(w.recv().await.unwrap()), WRITES as i64 + 1);
    assert!(w.request_progress());
    assert_eq!(
        w.recv().await.unwrap(),
        WatchBatch::Progress {
            revision: WRITES as i64 + 1
        }
    );
}

#[tokio::test]
async fn a_lagging_watcher_whose_history_was_compacted_is_told_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(dir.path()).unwrap();
    let mut w = sm.watch(WatchRequest {
        key: "k".into(),
        ..WatchRequest::default()
    });
    let n = 2 * WATCH_QUEUE as u64;
    sm.apply((1..=n).map(|i| put_entry(i, "k", "v")).collect::<Vec<_>>())
        .await
        .unwrap();
    sm.apply(vec![Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), n + 1),
        payload: EntryPayload::Normal(Command::Compact {
            revision: n as i64 - 1,
        }),
    }])
    .await
    .unwrap();
    for expected in 1..=WATCH_QUEUE as i64 {
        assert_eq!(revision_of(w.recv().await.unwrap()), expected);
    }
    assert_eq!(
        w.recv().await.unwrap(),
        WatchBatch::Compacted {
            compact_revision: n as i64 - 1
        }
    );
    assert_eq!(w.recv().await, None);
}

#[tokio::test]
async fn snapshot_round_trip_and_corruption_detected() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut sm = StateMachine::open(dir.path()).unwrap();
        sm.apply(vec![put_entry(1, "k", "v")]).await.unwrap();
        sm.build_snapshot().await.unwrap();
    }
    let sm = StateMachine::open(dir.path()).unwrap();
    assert_eq!(sm.read().kv.revision(), 1);
    assert_eq!(sm.read().last_applied.unwrap().index, 1);
    drop(sm);
    let path = dir.path().join(SNAPSHOT_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    let err = StateMachine::open(dir.path()).err().expect("detected");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

/// A switch that holds a thread at [`Stall::hold`] while on, and tells
/// whether one got there.
#[derive(Default)]
pub(super) struct Stall {
    on: AtomicBool,
    reached: AtomicBool,
}

impl Stall {
    pub(super) fn hold(&self) {
        self.reached.store(true, Ordering::Release);
        while self.on.load(Ordering::Acquire) {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_go_on_while_a_snapshot_encodes_and_it_holds_the_state_it_copied() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(dir.path()).unwrap();
    sm.apply(vec![put_entry(1, "k", "before")]).await.unwrap();
    let stall = sm.0.encode_stall.clone();
    stall.on.store(true, Ordering::Release);
    let mut builder = sm.clone();
    let build = tokio::spawn(async move { builder.build_snapshot().await });
    while !stall.reached.load(Ordering::Acquire) {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    // With the encoding held, an apply must still get through: before, the
    // build kept the state machine's lock for the whole encoding. The apply
    // runs on a thread of its own and is waited for with a plain channel, so
    // a blocked lock cannot also stop the clock that decides.
    let mut applier = sm.clone();
    let (done, applied) = std::sync::mpsc::channel();
    let apply = std::thread::spawn(move || {
        let r = futures::executor::block_on(applier.apply(vec![put_entry(2, "k", "after")]));
        let _ = done.send(r.is_ok());
    });
    let got_through = applied.recv_timeout(std::time::Duration::from_secs(30));
    stall.on.store(false, Ordering::Release);
    apply.join().unwrap();
    assert_eq!(
        got_through,
        Ok(true),
        "an apply waited for the snapshot's encoding"
    );
    let snapshot = build.await.unwrap().unwrap();
    assert_eq!(snapshot.meta.last_log_id.unwrap().index, 1);
    drop(sm);
    // Reopened from the snapshot alone: the state it copied, not the later write.
    let sm = StateMachine::open(dir.path()).unwrap();
    assert_eq!(sm.read().last_applied.unwrap().index, 1);
    assert_eq!(sm.read().kv.revision(), 1);
}
