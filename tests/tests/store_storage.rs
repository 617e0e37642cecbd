//! The store's storage engines under a real crash: a `herd agent` process
//! loaded by concurrent writers is SIGKILLed mid-write and restarted on the
//! same data dir; every write it acknowledged before the kill must be there.
//! Also: a data dir refuses to be reopened with the other engine.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use herd_client::proto::etcdserverpb::{PutRequest, RangeRequest};
use herd_client::{Client, prefix_end};
use herd_tests::process::{self, Guard};
use herd_tests::store::free_addr;
use herd_tests::{bin, wait};

const WRITERS: usize = 16;
/// Acknowledged writes to collect before the kill: enough to span many
/// group commits, with writes still in flight when SIGKILL lands.
const ACKED_BEFORE_KILL: usize = 1500;

struct Agent {
    data_dir: std::path::PathBuf,
    log: std::path::PathBuf,
    client: SocketAddr,
    peer: SocketAddr,
}

impl Agent {
    fn new(dir: &Path) -> Agent {
        Agent {
            data_dir: dir.join("m0"),
            log: dir.join("m0.log"),
            client: free_addr(),
            peer: free_addr(),
        }
    }

    /// `herd agent` on this data dir; `storage` None leaves `--storage` out.
    fn command(&self, storage: Option<&str>) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the agent log");
        let mut c = Command::new(bin::herd());
        c.arg("agent")
            .args(["--name", "m0"])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client", &self.client.to_string()])
            .args(["--listen-peer", &self.peer.to_string()])
            .args(["--token", "test-token", "--insecure-plaintext"])
            .env("HERD_LOG", "info,openraft=warn")
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log));
        if let Some(storage) = storage {
            c.args(["--storage", storage]);
        }
        c
    }

    fn start(&self, storage: &str) -> Guard {
        process::spawn("herd agent", &mut self.command(Some(storage)))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Waits until the agent accepts a write.
fn wait_serving(rt: &tokio::runtime::Runtime, agent: &Agent) -> Client {
    let endpoint = agent.client.to_string();
    wait::until(
        "the agent to serve a write",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            rt.block_on(async {
                let client = Client::connect(std::slice::from_ref(&endpoint))
                    .await
                    .ok()?;
                let mut kv = client.kv();
                let put = kv.put(PutRequest {
                    key: b"ready".to_vec(),
                    value: b"1".to_vec(),
                    ..Default::default()
                });
                tokio::time::timeout(Duration::from_secs(5), put)
                    .await
                    .ok()?
                    .ok()?;
                Some(client)
            })
        },
    )
}

fn acknowledged_writes_survive_sigkill(storage: &str) {
    let dir = tempfile::Builder::new()
        .prefix("herd-store-storage")
        .tempdir()
        .expect("scratch dir");
    let agent = Agent::new(dir.path());
    let rt = runtime();
    let mut process = agent.start(storage);
    let client = wait_serving(&rt, &agent);

    // Writers put unique keys as fast as they are acknowledged and record
    // each acknowledgement; they run on until the process is gone.
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (client, acked, count, stop) = (
            client.clone(),
            Arc::clone(&acked),
            Arc::clone(&count),
            Arc::clone(&stop),
        );
        writers.push(rt.spawn(async move {
            let mut kv = client.kv();
            for i in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let key = format!("crash/{w:02}/{i:06}");
                let put = kv.put(PutRequest {
                    key: key.clone().into_bytes(),
                    value: vec![b'x'; 256],
                    ..Default::default()
                });
                match tokio::time::timeout(Duration::from_secs(5), put).await {
                    Ok(Ok(_)) => {
                        acked.lock().unwrap().push(key);
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    // The kill: unacknowledged from here on.
                    _ => break,
                }
            }
        }));
    }
    wait::until(
        "writes to be acknowledged",
        Duration::from_secs(120),
        Duration::from_millis(20),
        || (count.load(Ordering::SeqCst) >= ACKED_BEFORE_KILL).then_some(()),
    );
    process.kill();
    // Only what was acknowledged before the process died counts.
    let survivors: Vec<String> = acked.lock().unwrap().clone();
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        let _ = rt.block_on(w);
    }
    assert!(survivors.len() >= ACKED_BEFORE_KILL);

    let _process = agent.start(storage);
    let client = wait_serving(&rt, &agent);
    let stored: std::collections::BTreeSet<String> = rt.block_on(async {
        let response = client
            .kv()
            .range(RangeRequest {
                key: b"crash/".to_vec(),
                range_end: prefix_end(b"crash/"),
                keys_only: true,
                ..Default::default()
            })
            .await
            .expect("reading the keys back");
        response
            .into_inner()
            .kvs
            .into_iter()
            .map(|kv| String::from_utf8(kv.key).expect("utf-8 keys"))
            .collect()
    });
    let missing: Vec<&String> = survivors.iter().filter(|k| !stored.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "--storage {storage}: {} of {} acknowledged writes lost after SIGKILL, e.g. {:?}\n{}",
        missing.len(),
        survivors.len(),
        &missing[..missing.len().min(5)],
        agent.log_tail()
    );
}

#[test]
fn redb_acknowledged_writes_survive_sigkill() {
    acknowledged_writes_survive_sigkill("redb");
}

#[test]
fn file_acknowledged_writes_survive_sigkill() {
    acknowledged_writes_survive_sigkill("file");
}

#[test]
fn fjall_acknowledged_writes_survive_sigkill() {
    acknowledged_writes_survive_sigkill("fjall");
}

#[test]
fn a_redb_data_dir_refuses_the_file_engine() {
    a_data_dir_refuses_another_engine("redb", "file");
}

#[test]
fn a_fjall_data_dir_refuses_the_redb_engine() {
    a_data_dir_refuses_another_engine("fjall", "redb");
}

fn a_data_dir_refuses_another_engine(made: &str, asked: &str) {
    let dir = tempfile::Builder::new()
        .prefix("herd-store-storage")
        .tempdir()
        .expect("scratch dir");
    let agent = Agent::new(dir.path());
    let rt = runtime();
    let mut process = agent.start(made);
    wait_serving(&rt, &agent);
    assert!(
        process.terminate(Duration::from_secs(30)).is_some(),
        "the agent did not stop on SIGTERM"
    );
    let mut refused = agent.start(asked);
    wait::until(
        "the agent started with the wrong engine to exit",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || (!refused.is_running()).then_some(()),
    );
    // The whole log: with RUST_BACKTRACE set, a backtrace follows the error.
    let log = std::fs::read_to_string(&agent.log).unwrap_or_default();
    assert!(
        log.contains(&format!("created with --storage {made}"))
            && log.contains(&format!("--storage {asked}")),
        "{log}"
    );
    // Without --storage the engine recorded in member.json is used.
    let _process = process::spawn("herd agent", &mut agent.command(None));
    let client = wait_serving(&rt, &agent);
    drop(client);
    let raft = agent.data_dir.join("raft");
    let kept: Vec<String> = std::fs::read_dir(&raft)
        .expect("the raft dir")
        .map(|e| {
            e.expect("a dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.starts_with("log.") || name == "raft.log")
        .collect();
    // Only the recorded engine's log, nothing of the refused one.
    let expected = format!("log.{made}");
    assert_eq!(kept, vec![expected], "{}", raft.display());
}
