//! The robustness harness: concurrent clients record a history of put, get,
//! delete and compare-and-set requests (with invocation/response times and
//! unknown outcomes), a watcher records the event stream (reconnecting and
//! resuming from the last revision it saw), and checkers verify the history
//! is linearizable, no acknowledged write was lost, and the watch guarantees.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herd_client::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, ResponseHeader, TxnRequest,
    WatchCreateRequest, WatchRequest, compare, request_op, watch_request,
};
use herd_client::proto::mvccpb::event::EventType;
use herd_client::{Client, Credentials, prefix_end};
use rand::Rng;
use tokio_stream::StreamExt;

use crate::linearizability::{Input, Operation, Output, Revisions};

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

/// The shape of the load: how many clients and keys, and the request mix.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub clients: usize,
    pub keys: usize,
    /// Out of 100 requests: puts, gets and deletes; the rest are
    /// compare-and-set transactions.
    pub puts: u32,
    pub gets: u32,
    pub deletes: u32,
    /// Compare-and-set expects the value this client last read of the key
    /// (`version == 0` when it last saw none), as a read-modify-write
    /// client does; otherwise a random recent value of any client.
    pub cas_last_read: bool,
}

impl Workload {
    /// A few hot keys, every kind of request.
    pub const CONTENDED: Workload = Workload {
        clients: 8,
        keys: 5,
        puts: 40,
        gets: 30,
        deletes: 10,
        cas_last_read: false,
    };

    /// The shape that found stale reads after a leader kill (issue 18):
    /// twelve clients, twenty keys, puts, linearizable gets, and
    /// compare-and-set on the value each client last read.
    pub const READ_MODIFY_WRITE: Workload = Workload {
        clients: 12,
        keys: 20,
        puts: 35,
        gets: 40,
        deletes: 0,
        cas_last_read: true,
    };
}

/// Drives `workload.clients` clients (client `i` talks only to
/// `endpoints[i % n]`, as a client pinned to one member) until `stop` is
/// set. Every put writes a unique value.
pub async fn run_clients(
    endpoints: Vec<String>,
    credentials: Credentials,
    workload: Workload,
    stop: Arc<AtomicBool>,
) -> Vec<Operation> {
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..workload.clients {
        let client =
            Client::lazy_with(&endpoints[c % endpoints.len()], &credentials).expect("endpoint");
        let stop = Arc::clone(&stop);
        tasks.spawn(async move {
            let mut ops = Vec::new();
            let mut seq = 0u64;
            // What this client last read of each key (`None`: absent).
            let mut last_read: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let (key, input) = next_request(&workload, c, seq, &last_read);
                let call = now(t0);
                let result =
                    tokio::time::timeout(Duration::from_secs(3), execute(&client, &key, &input))
                        .await;
                let ret = now(t0);
                let (output, revisions) = match result {
                    Ok(Ok((out, revisions))) => (Some(out), Some(revisions)),
                    // A failed read changed nothing: leave it out.
                    _ if input == Input::Get => continue,
                    // A failed write may or may not have happened.
                    _ => (None, None),
                };
                if let Some(Output::Get(value)) = &output {
                    last_read.insert(key.clone(), value.clone());
                }
                let failed = output.is_none();
                ops.push(Operation {
                    client: c,
                    key,
                    input,
                    call,
                    ret,
                    output,
                    revisions,
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

/// Client `c`'s next request (its `seq`-th) under `workload`.
fn next_request(
    workload: &Workload,
    c: usize,
    seq: u64,
    last_read: &HashMap<Vec<u8>, Option<Vec<u8>>>,
) -> (Vec<u8>, Input) {
    let mut rng = rand::rng();
    let key = format!("{PREFIX}{}", rng.random_range(0..workload.keys)).into_bytes();
    let value = format!("c{c}-{seq}").into_bytes();
    let roll = rng.random_range(0..100);
    let input = if roll < workload.puts {
        Input::Put { value }
    } else if roll < workload.puts + workload.gets {
        Input::Get
    } else if roll < workload.puts + workload.gets + workload.deletes {
        Input::Delete
    } else {
        let expected = if workload.cas_last_read {
            last_read.get(&key).cloned().flatten()
        } else if rng.random_bool(0.3) {
            None
        } else {
            Some(
                format!(
                    "c{}-{}",
                    rng.random_range(0..workload.clients),
                    seq.saturating_sub(rng.random_range(0..3))
                )
                .into_bytes(),
            )
        };
        Input::Cas {
            expected,
            new: value,
        }
    };
    (key, input)
}

fn header_revision(h: Option<ResponseHeader>) -> i64 {
    h.map_or(0, |h| h.revision)
}

async fn execute(
    client: &Client,
    key: &[u8],
    input: &Input,
) -> Result<(Output, Revisions), tonic::Status> {
    let mut kv = client.kv();
    Ok(match input {
        Input::Put { value } => {
            let r = kv
                .put(PutRequest {
                    key: key.to_vec(),
                    value: value.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let header = header_revision(r.header);
            (
                Output::Put,
                Revisions {
                    header,
                    key: Some(header),
                },
            )
        }
        Input::Get => {
            let r = kv
                .range(RangeRequest {
                    key: key.to_vec(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let found = r.kvs.into_iter().next();
            let revisions = Revisions {
                header: header_revision(r.header),
                key: found.as_ref().map(|kv| kv.mod_revision),
            };
            (Output::Get(found.map(|kv| kv.value)), revisions)
        }
        Input::Delete => {
            let r = kv
                .delete_range(DeleteRangeRequest {
                    key: key.to_vec(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let header = header_revision(r.header);
            (
                Output::Delete(r.deleted),
                Revisions {
                    header,
                    key: (r.deleted > 0).then_some(header),
                },
            )
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
                    target: compare::CompareTarget::Version as i32,
                    key: key.to_vec(),
                    target_union: Some(compare::TargetUnion::Version(0)),
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
            let header = header_revision(r.header);
            (
                Output::Cas {
                    succeeded: r.succeeded,
                },
                Revisions {
                    header,
                    key: r.succeeded.then_some(header),
                },
            )
        }
    })
}

/// What [`run_writers`] has done so far, readable while it runs, so a
/// test can wait for progress instead of sleeping a guessed time, and say
/// why the writes stalled when they do.
#[derive(Debug, Default)]
pub struct WriteProgress {
    acked: AtomicUsize,
    failed: AtomicUsize,
    last_error: Mutex<String>,
}

impl WriteProgress {
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Failed puts so far and the last error, for a failure message.
    pub fn failures(&self) -> String {
        format!(
            "{} puts failed, the last with: {}",
            self.failed.load(Ordering::Relaxed),
            self.last_error.lock().expect("progress lock")
        )
    }

    fn fail(&self, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().expect("progress lock") = error;
    }
}

/// Writers for durability checks: `writers` clients, writer `i` on
/// `endpoints[i % n]`, each putting unique keys `{prefix}{i}/{seq}` one
/// after another until `stop` is set, counting into `progress`. Returns
/// every acknowledged (key, value); a failed put is retried with a new key
/// after a pause. `pace` is a pause after each acknowledged put (zero:
/// back to back), for a load light enough to leave TCG machines their
/// time.
pub async fn run_writers(
    endpoints: Vec<String>,
    credentials: Credentials,
    writers: usize,
    prefix: &'static str,
    pace: Duration,
    stop: Arc<AtomicBool>,
    progress: Arc<WriteProgress>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let endpoint = endpoints[w % endpoints.len()].clone();
        let mut kv = Client::lazy_with(&endpoint, &credentials)
            .expect("endpoint")
            .kv();
        let (stop, progress) = (Arc::clone(&stop), Arc::clone(&progress));
        tasks.spawn(async move {
            let mut acked = Vec::new();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let key = format!("{prefix}{w}/{seq}").into_bytes();
                let value = format!("written-{w}-{seq}").into_bytes();
                let put = kv.put(PutRequest {
                    key: key.clone(),
                    value: value.clone(),
                    ..Default::default()
                });
                let error = match tokio::time::timeout(Duration::from_secs(3), put).await {
                    Ok(Ok(_)) => {
                        acked.push((key, value));
                        progress.acked.fetch_add(1, Ordering::Relaxed);
                        if !pace.is_zero() {
                            tokio::time::sleep(pace).await;
                        }
                        continue;
                    }
                    Ok(Err(e)) => format!("{endpoint}: {e}"),
                    Err(_) => format!("{endpoint}: no answer in 3 s"),
                };
                progress.fail(error);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            acked
        });
    }
    let mut acked = Vec::new();
    while let Some(done) = tasks.join_next().await {
        acked.extend(done.expect("writer task"));
    }
    acked
}

/// Reads every key under `prefix` (linearizably, through `endpoints`) and
/// checks each acknowledged write is there with its value. Returns how
/// many keys the store holds under the prefix.
pub async fn check_acknowledged(
    endpoints: &[String],
    credentials: &Credentials,
    prefix: &str,
    acked: &[(Vec<u8>, Vec<u8>)],
) -> Result<usize, String> {
    let client = Client::connect_with(endpoints, credentials)
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let r = client
        .kv()
        .range(RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix.as_bytes()),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("reading {prefix}: {e}"))?
        .into_inner();
    let stored: HashMap<Vec<u8>, Vec<u8>> =
        r.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
    let missing: Vec<String> = acked
        .iter()
        .filter(|(k, v)| stored.get(k) != Some(v))
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect();
    if missing.is_empty() {
        Ok(stored.len())
    } else {
        Err(format!(
            "{} of {} acknowledged writes are lost, e.g. {:?}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(10)]
        ))
    }
}

/// Watches the workload prefix from revision 1 until `stop` is set and the
/// stream reached `until_revision` (if given); on any stream failure it
/// reconnects to the next endpoint and resumes after the last revision seen.
/// Returns the log and how many times it had to resume.
pub async fn watch_all(
    endpoints: Vec<String>,
    credentials: Credentials,
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
        let client =
            Client::lazy_with(&endpoints[e % endpoints.len()], &credentials).expect("endpoint");
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

/// The checks beyond values, on the revisions responses carried:
/// - a client's header revisions never go backwards (each client issues
///   one request at a time, so its requests are ordered in real time);
/// - a request sees at least the revision of every write acknowledged
///   before it was invoked (header revision), and a get that finds a key
///   returns a version no older than the last write of that key
///   acknowledged before the get was invoked (mod revision).
pub fn check_revisions(history: &[Operation]) -> Result<(), String> {
    let known: Vec<(&Operation, Revisions)> = history
        .iter()
        .filter_map(|o| o.revisions.map(|r| (o, r)))
        .collect();
    let mut by_client: HashMap<usize, Vec<&(&Operation, Revisions)>> = HashMap::new();
    for entry in &known {
        by_client.entry(entry.0.client).or_default().push(entry);
    }
    for (client, mut ops) in by_client {
        ops.sort_by_key(|(o, _)| o.call);
        for pair in ops.windows(2) {
            let ((a, ra), (b, rb)) = (pair[0], pair[1]);
            if rb.header < ra.header {
                return Err(format!(
                    "client {client}'s header revision went backwards: {} then {}\n  {a:?}\n  {b:?}",
                    ra.header, rb.header
                ));
            }
        }
    }
    // Writes by completion time; for each request, the writes acknowledged
    // before its invocation are a prefix of this list.
    let mut writes: Vec<(&Operation, i64)> = known
        .iter()
        .filter_map(|(o, r)| (o.input != Input::Get).then_some((*o, r.key?)))
        .collect();
    writes.sort_by_key(|(o, _)| o.ret);
    let mut reads: Vec<&(&Operation, Revisions)> = known.iter().collect();
    reads.sort_by_key(|(o, _)| o.call);
    let mut acked = 0;
    // Highest acknowledged write revision overall, and per key.
    let mut newest: Option<(&Operation, i64)> = None;
    let mut newest_of_key: HashMap<&[u8], (&Operation, i64)> = HashMap::new();
    for (op, r) in reads {
        while acked < writes.len() && writes[acked].0.ret < op.call {
            let (w, rev) = writes[acked];
            if newest.is_none_or(|(_, n)| rev > n) {
                newest = Some((w, rev));
            }
            let entry = newest_of_key.entry(&w.key).or_insert((w, rev));
            if rev > entry.1 {
                *entry = (w, rev);
            }
            acked += 1;
        }
        if let Some((w, rev)) = newest
            && r.header < rev
        {
            return Err(format!(
                "a request saw revision {} after a write at revision {rev} was acknowledged\n  write: {w:?}\n  later: {op:?}",
                r.header
            ));
        }
        if op.input == Input::Get
            && let (Some(found), Some((w, rev))) = (r.key, newest_of_key.get(op.key.as_slice()))
            && found < *rev
        {
            return Err(format!(
                "stale read: {} returned mod revision {found} after a write at revision {rev} was acknowledged\n  write: {w:?}\n  read:  {op:?}",
                String::from_utf8_lossy(&op.key)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(
        client: usize,
        call: u64,
        ret: u64,
        input: Input,
        header: i64,
        key: Option<i64>,
    ) -> Operation {
        let output = match &input {
            Input::Get => Output::Get(Some(b"v".to_vec())),
            Input::Put { .. } => Output::Put,
            Input::Delete => Output::Delete(1),
            Input::Cas { .. } => Output::Cas { succeeded: true },
        };
        Operation {
            client,
            key: b"k".to_vec(),
            input,
            call,
            ret,
            output: Some(output),
            revisions: Some(Revisions { header, key }),
        }
    }

    fn put() -> Input {
        Input::Put {
            value: b"v".to_vec(),
        }
    }

    #[test]
    fn revisions_in_order_pass() {
        let h = vec![
            op(0, 0, 10, put(), 5, Some(5)),
            op(1, 11, 20, Input::Get, 5, Some(5)),
            op(0, 12, 30, put(), 6, Some(6)),
            op(1, 21, 40, Input::Get, 6, Some(6)),
        ];
        check_revisions(&h).unwrap();
    }

    #[test]
    fn a_clients_header_revision_going_back_is_caught() {
        let h = vec![
            op(0, 0, 10, Input::Get, 7, Some(3)),
            op(0, 11, 20, Input::Get, 6, Some(3)),
        ];
        assert!(check_revisions(&h).unwrap_err().contains("went backwards"));
    }

    #[test]
    fn a_read_older_than_an_acknowledged_write_is_caught() {
        // The shape of issue 18: a put acknowledged at revision 9, then a
        // get on another client that returns the version of revision 4.
        let h = vec![
            op(0, 0, 10, put(), 9, Some(9)),
            op(1, 20, 30, Input::Get, 9, Some(4)),
        ];
        assert!(check_revisions(&h).unwrap_err().contains("stale read"));
        let h = vec![
            op(0, 0, 10, put(), 9, Some(9)),
            op(1, 20, 30, Input::Get, 8, None),
        ];
        assert!(check_revisions(&h).unwrap_err().contains("saw revision 8"));
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_miss_it() {
        let h = vec![
            op(0, 0, 30, put(), 9, Some(9)),
            op(1, 20, 40, Input::Get, 8, Some(4)),
        ];
        check_revisions(&h).unwrap();
    }
}
