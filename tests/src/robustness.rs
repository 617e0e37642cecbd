//! The robustness harness: concurrent clients record a history of put, get,
//! delete and compare-and-set requests (with invocation/response times and
//! unknown outcomes), a watcher records the event stream (reconnecting and
//! resuming from the last revision it saw), and checkers verify the history
//! is linearizable, no acknowledged write was lost, and the watch guarantees.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use herd_orchestrator::api::client::{Client, prefix_end};
use herd_orchestrator::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchRequest, compare, request_op, watch_request,
};
use herd_orchestrator::proto::mvccpb::event::EventType;
use rand::Rng;
use tokio_stream::StreamExt;

use crate::linearizability::{Input, Operation, Output};

/// Key prefix of the workload.
pub const PREFIX: &str = "lin/";

/// One recorded watch event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub revision: i64,
    pub key: Vec<u8>,
    /// `None` for a delete.
    pub value: Option<Vec<u8>>,
}

/// What a watch stream delivered: one entry per response with events.
pub type WatchLog = Vec<Vec<Event>>;

/// Time since the run started, in nanoseconds (the history's clock).
fn now(t0: Instant) -> u64 {
    t0.elapsed().as_nanos() as u64
}

/// Drives `clients` clients (client `i` talks to `endpoints[i % n]`) over
/// `keys` keys until `stop` is set. Every put writes a unique value.
pub async fn run_clients(
    endpoints: Vec<String>,
    clients: usize,
    keys: usize,
    stop: Arc<AtomicBool>,
) -> Vec<Operation> {
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let client = Client::lazy(&endpoints[c % endpoints.len()]).expect("endpoint");
        let stop = Arc::clone(&stop);
        tasks.spawn(async move {
            let mut ops = Vec::new();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let (key, input) = {
                    let mut rng = rand::rng();
                    let key = format!("{PREFIX}{}", rng.random_range(0..keys)).into_bytes();
                    let value = format!("c{c}-{seq}").into_bytes();
                    let input = match rng.random_range(0..10) {
                        0..=3 => Input::Put { value },
                        4..=6 => Input::Get,
                        7 => Input::Delete,
                        _ => Input::Cas {
                            expected: if rng.random_bool(0.3) {
                                None
                            } else {
                                Some(format!(
                                    "c{}-{}",
                                    rng.random_range(0..clients),
                                    seq.saturating_sub(rng.random_range(0..3))
                                ))
                                .map(String::into_bytes)
                            },
                            new: value,
                        },
                    };
                    (key, input)
                };
                let call = now(t0);
                let result =
                    tokio::time::timeout(Duration::from_secs(3), execute(&client, &key, &input))
                        .await;
                let ret = now(t0);
                let output = match result {
                    Ok(Ok(out)) => Some(out),
                    // A failed read changed nothing: leave it out.
                    _ if input == Input::Get => continue,
                    // A failed write may or may not have happened.
                    _ => None,
                };
                let failed = output.is_none();
                ops.push(Operation {
                    client: c,
                    key,
                    input,
                    call,
                    ret,
                    output,
                });
                if failed {
                    // Back off, so an unreachable member does not flood the
                    // history with unknown outcomes (each widens the search).
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
            ops
        });
    }
    let mut history = Vec::new();
    while let Some(ops) = tasks.join_next().await {
        history.extend(ops.expect("client task"));
    }
    history
}

async fn execute(client: &Client, key: &[u8], input: &Input) -> Result<Output, tonic::Status> {
    let mut kv = client.kv();
    Ok(match input {
        Input::Put { value } => {
            kv.put(PutRequest {
                key: key.to_vec(),
                value: value.clone(),
                ..Default::default()
            })
            .await?;
            Output::Put
        }
        Input::Get => {
            let r = kv
                .range(RangeRequest {
                    key: key.to_vec(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            Output::Get(r.kvs.into_iter().next().map(|kv| kv.value))
        }
        Input::Delete => {
            let r = kv
                .delete_range(DeleteRangeRequest {
                    key: key.to_vec(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            Output::Delete(r.deleted)
        }
        Input::Cas { expected, new } => {
            let cmp = match expected {
                Some(v) => Compare {
                    result: compare::CompareResult::Equal as i32,
                    target: compare::CompareTarget::Value as i32,
                    key: key.to_vec(),
                    target_union: Some(compare::TargetUnion::Value(v.clone())),
                    range_end: Vec::new(),
                },
                None => Compare {
                    result: compare::CompareResult::Equal as i32,
                    target: compare::CompareTarget::Create as i32,
                    key: key.to_vec(),
                    target_union: Some(compare::TargetUnion::CreateRevision(0)),
                    range_end: Vec::new(),
                },
            };
            let r = kv
                .txn(TxnRequest {
                    compare: vec![cmp],
                    success: vec![RequestOp {
                        request: Some(request_op::Request::RequestPut(PutRequest {
                            key: key.to_vec(),
                            value: new.clone(),
                            ..Default::default()
                        })),
                    }],
                    failure: Vec::new(),
                })
                .await?
                .into_inner();
            Output::Cas {
                succeeded: r.succeeded,
            }
        }
    })
}

/// Watches the workload prefix from revision 1 until `stop` is set and the
/// stream reached `until_revision` (if given); on any stream failure it
/// reconnects to the next endpoint and resumes after the last revision seen.
/// Returns the log and how many times it had to resume.
pub async fn watch_all(
    endpoints: Vec<String>,
    stop: Arc<AtomicBool>,
    until_revision: Arc<std::sync::atomic::AtomicI64>,
) -> (WatchLog, usize) {
    let mut log: WatchLog = Vec::new();
    let mut next = 1i64;
    let mut resumes = 0;
    let mut e = 0usize;
    loop {
        let done = |next: i64| {
            stop.load(Ordering::Relaxed) && next > until_revision.load(Ordering::Relaxed)
        };
        if done(next) {
            return (log, resumes);
        }
        let client = Client::lazy(&endpoints[e % endpoints.len()]).expect("endpoint");
        e += 1;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let _ = tx
            .send(WatchRequest {
                request_union: Some(watch_request::RequestUnion::CreateRequest(
                    WatchCreateRequest {
                        key: PREFIX.as_bytes().to_vec(),
                        range_end: prefix_end(PREFIX.as_bytes()),
                        start_revision: next,
                        ..Default::default()
                    },
                )),
            })
            .await;
        let stream = tokio::time::timeout(
            Duration::from_secs(3),
            client
                .watch()
                .watch(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
        .await;
        let Ok(Ok(stream)) = stream else {
            resumes += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut stream = stream.into_inner();
        loop {
            let item = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
            let resp = match item {
                Err(_) if done(next) => return (log, resumes),
                Err(_) => continue,
                Ok(Some(Ok(resp))) => resp,
                Ok(_) => break,
            };
            assert!(
                !resp.canceled,
                "watch canceled: {} (compact revision {})",
                resp.cancel_reason, resp.compact_revision
            );
            if resp.events.is_empty() {
                continue;
            }
            let batch: Vec<Event> = resp
                .events
                .iter()
                .map(|ev| {
                    let kv = ev.kv.clone().unwrap_or_default();
                    Event {
                        revision: kv.mod_revision,
                        key: kv.key,
                        value: (ev.r#type == EventType::Put as i32).then_some(kv.value),
                    }
                })
                .collect();
            next = batch.iter().map(|e| e.revision).max().unwrap_or(next - 1) + 1;
            log.push(batch);
        }
        resumes += 1;
        drop(tx);
    }
}

/// Checks a recorded watch log against the reference history (a complete
/// watch from revision 1): ordered, unique, atomic per revision, no gaps.
pub fn check_watch(log: &WatchLog, reference: &[Event]) -> Result<(), String> {
    let mut seen = HashSet::new();
    let mut last = 0i64;
    let mut revision_response: HashMap<i64, usize> = HashMap::new();
    for (i, batch) in log.iter().enumerate() {
        for ev in batch {
            if ev.revision < last {
                return Err(format!(
                    "out of order: revision {} after {last}",
                    ev.revision
                ));
            }
            last = ev.revision;
            if !seen.insert((ev.revision, ev.key.clone())) {
                return Err(format!(
                    "duplicate event at revision {} for {:?}",
                    ev.revision,
                    String::from_utf8_lossy(&ev.key)
                ));
            }
            if *revision_response.entry(ev.revision).or_insert(i) != i {
                return Err(format!("revision {} split over two responses", ev.revision));
            }
        }
    }
    let flat: Vec<&Event> = log.iter().flatten().collect();
    let expected: Vec<&Event> = reference.iter().filter(|e| e.revision <= last).collect();
    if flat.len() != expected.len() {
        return Err(format!(
            "watch delivered {} events up to revision {last}, the history has {}",
            flat.len(),
            expected.len()
        ));
    }
    if let Some((got, want)) = flat.iter().zip(&expected).find(|(a, b)| a != b) {
        return Err(format!(
            "watch diverges from history: got {got:?}, history has {want:?}"
        ));
    }
    Ok(())
}

/// Every acknowledged put and successful compare-and-set must appear in the
/// history of events (values are unique per write).
pub fn check_no_lost_writes(history: &[Operation], reference: &[Event]) -> Result<(), String> {
    let written: HashSet<(&[u8], &[u8])> = reference
        .iter()
        .filter_map(|e| e.value.as_deref().map(|v| (e.key.as_slice(), v)))
        .collect();
    for op in history {
        let value = match (&op.input, &op.output) {
            (Input::Put { value }, Some(Output::Put)) => value,
            (Input::Cas { new, .. }, Some(Output::Cas { succeeded: true })) => new,
            _ => continue,
        };
        if !written.contains(&(op.key.as_slice(), value.as_slice())) {
            return Err(format!(
                "acknowledged write {}={} is missing from the store's history",
                String::from_utf8_lossy(&op.key),
                String::from_utf8_lossy(value)
            ));
        }
    }
    Ok(())
}
