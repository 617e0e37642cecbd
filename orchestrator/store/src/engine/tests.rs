//! Every storage engine through the openraft log adapter and through whole members: recovery, purge, votes, corruption, engine mismatch.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};

use super::StorageKind;
use crate::log::LogStore;
use crate::types::{Command, PutRequest, RangeRequest, TypeConfig};
use crate::{Config, ConfigError, Member, StoreError};

const KINDS: [StorageKind; 3] = StorageKind::ALL;

fn id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn entry(index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: id(index),
        payload: EntryPayload::Blank,
    }
}

fn put_entry(index: u64, key: &str) -> Entry<TypeConfig> {
    Entry {
        log_id: id(index),
        payload: EntryPayload::Normal(Command::Put(PutRequest {
            key: key.into(),
            value: b"value".to_vec(),
            ..PutRequest::default()
        })),
    }
}

async fn indexes(s: &mut LogStore) -> Vec<u64> {
    s.try_get_log_entries(..)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect()
}

#[tokio::test]
async fn vote_entries_truncate_and_purge_survive_reopen() {
    for kind in KINDS {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open_with(kind, dir.path()).unwrap();
            s.save_vote(&Vote::new(3, 2)).await.unwrap();
            s.append_synced((1..=10).map(entry).collect())
                .await
                .unwrap();
            s.truncate(id(8)).await.unwrap();
            s.purge(id(3)).await.unwrap();
            s.append_synced(vec![entry(8)]).await.unwrap();
        }
        let mut s = LogStore::open_with(kind, dir.path()).unwrap();
        assert_eq!(
            s.read_vote().await.unwrap(),
            Some(Vote::new(3, 2)),
            "{kind}"
        );
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id.unwrap().index, 3, "{kind}");
        assert_eq!(st.last_log_id.unwrap().index, 8, "{kind}");
        assert_eq!(indexes(&mut s).await, vec![4, 5, 6, 7, 8], "{kind}");
    }
}

#[tokio::test]
async fn repeated_purges_and_a_later_vote_survive_reopen() {
    for kind in KINDS {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open_with(kind, dir.path()).unwrap();
            s.save_vote(&Vote::new(1, 1)).await.unwrap();
            for round in 0..5u64 {
                let base = round * 100;
                s.append_synced((base + 1..=base + 100).map(entry).collect())
                    .await
                    .unwrap();
                // Purge what a snapshot covers, keeping a tail behind it.
                s.purge(id(base + 90)).await.unwrap();
            }
            s.save_vote(&Vote::new(7, 2)).await.unwrap();
            s.purge(id(495)).await.unwrap();
            s.append_synced(vec![entry(501)]).await.unwrap();
        }
        let mut s = LogStore::open_with(kind, dir.path()).unwrap();
        assert_eq!(
            s.read_vote().await.unwrap(),
            Some(Vote::new(7, 2)),
            "{kind}"
        );
        assert_eq!(
            s.get_log_state()
                .await
                .unwrap()
                .last_purged_log_id
                .unwrap()
                .index,
            495,
            "{kind}"
        );
        assert_eq!(
            indexes(&mut s).await,
            (496..=501).collect::<Vec<_>>(),
            "{kind}"
        );
    }
}

#[tokio::test]
async fn file_engine_cuts_a_torn_tail_but_refuses_corruption() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = LogStore::open_with(StorageKind::File, dir.path()).unwrap();
        s.append_synced((1..=3).map(entry).collect()).await.unwrap();
    }
    let path = dir.path().join(super::file::LOG_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let one = bytes.len() / 3;
    // torn tail: half a record appended, never acknowledged
    let mut torn = bytes.clone();
    torn.extend_from_slice(&bytes[..one / 2]);
    std::fs::write(&path, &torn).unwrap();
    let mut s = LogStore::open_with(StorageKind::File, dir.path()).unwrap();
    assert_eq!(indexes(&mut s).await, vec![1, 2, 3]);
    drop(s);
    // flipped byte in the first record: corruption, not silently served
    bytes[10] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let err = LogStore::open_with(StorageKind::File, dir.path())
        .err()
        .expect("corruption detected");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn redb_engine_refuses_a_damaged_entry_naming_its_index() {
    let dir = tempfile::tempdir().unwrap();
    let marker = "damage-me-0123456789";
    {
        let s = LogStore::open_with(StorageKind::Redb, dir.path()).unwrap();
        s.append_synced(vec![entry(1), put_entry(2, marker), entry(3)])
            .await
            .unwrap();
    }
    // Damage the stored value on disk, as a bad sector would.
    let path = dir.path().join(super::redb::DB_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .expect("the entry's key is stored verbatim in its value");
    bytes[at] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let err = LogStore::open_with(StorageKind::Redb, dir.path())
        .err()
        .expect("corruption detected");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("entry 2"), "{err}");
}

/// fjall keeps a fresh batch in its journal: a flipped byte in a stored
/// value fails the batch's xxh3 and the log is refused, not served or cut.
#[tokio::test]
async fn fjall_engine_refuses_a_damaged_journal() {
    let dir = tempfile::tempdir().unwrap();
    let marker = "damage-me-0123456789";
    {
        let s = LogStore::open_with(StorageKind::Fjall, dir.path()).unwrap();
        s.append_synced(vec![entry(1), put_entry(2, marker), entry(3)])
            .await
            .unwrap();
        s.append_synced(vec![entry(4)]).await.unwrap();
    }
    let damaged = damage_first(&dir.path().join(super::fjall::DB_DIR), marker.as_bytes())
        .expect("the entry's key is stored verbatim in a journal");
    let err = LogStore::open_with(StorageKind::Fjall, dir.path())
        .err()
        .unwrap_or_else(|| panic!("damage in {} detected", damaged.display()));
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("fjall journal"), "{err}");
}

/// Once flushed, an entry lives in an LSM table: a flipped byte there is
/// refused as well (fjall's block checksum, then the value's own crc32).
#[test]
fn fjall_engine_refuses_a_damaged_table() {
    use super::LogEngine;
    use super::fjall::FjallLog;
    let dir = tempfile::tempdir().unwrap();
    let marker = "damage-me-0123456789";
    {
        let (mut log, _) = FjallLog::open(dir.path()).unwrap();
        log.persist(&[super::LogOp::Append(vec![
            entry(1),
            put_entry(2, marker),
            entry(3),
        ])])
        .unwrap();
        log.flush().unwrap();
    }
    let tables = dir.path().join(super::fjall::DB_DIR).join("keyspaces");
    let damaged = damage_first(&tables, marker.as_bytes())
        .expect("the entry's key is stored verbatim in a table");
    let err = LogStore::open_with(StorageKind::Fjall, dir.path())
        .err()
        .unwrap_or_else(|| panic!("damage in {} detected", damaged.display()));
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("fjall table"), "{err}");
}

/// A hole in the indexes (batches fjall's journal recovery dropped) is
/// refused, not served as a log that skips entries.
#[test]
fn fjall_engine_refuses_a_log_with_a_hole() {
    use super::LogEngine;
    use super::LogOp::{Append, Truncate};
    use super::fjall::FjallLog;
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = FjallLog::open(dir.path()).unwrap();
        // Never issued by openraft: leaves entries 1, 2 and 5.
        log.persist(&[
            Append((1..=4).map(entry).collect()),
            Truncate(3),
            Append(vec![entry(5)]),
        ])
        .unwrap();
    }
    let err = LogStore::open_with(StorageKind::Fjall, dir.path())
        .err()
        .expect("a hole is refused");
    assert!(
        matches!(&err, StoreError::Corrupt { detail, .. } if detail.contains("entries 3 to 4 are missing")),
        "{err}"
    );
}

/// Flips one bit of the first occurrence of `needle` in any file under
/// `dir`, as a bad sector would; returns the damaged file.
fn damage_first(dir: &Path, needle: &[u8]) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            if let Some(found) = damage_first(&path, needle) {
                return Some(found);
            }
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
            bytes[at] ^= 0x20;
            std::fs::write(&path, &bytes).unwrap();
            return Some(path);
        }
    }
    None
}

#[tokio::test]
async fn a_raft_dir_of_another_engine_is_refused() {
    for (made, asked) in KINDS
        .into_iter()
        .flat_map(|made| KINDS.into_iter().map(move |asked| (made, asked)))
        .filter(|(made, asked)| made != asked)
    {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = LogStore::open_with(made, dir.path()).unwrap();
            s.append_synced(vec![entry(1)]).await.unwrap();
        }
        let err = LogStore::open_with(asked, dir.path())
            .err()
            .expect("mismatch refused");
        assert!(
            matches!(&err, StoreError::Config(ConfigError::ForeignLog { found, asked: a, .. }) if *found == made && *a == asked),
            "{made} asked as {asked}: {err}"
        );
        // Nothing was created for the refused engine.
        assert!(!dir.path().join(asked.file_name()).exists(), "{asked}");
    }
}

// ---- whole members ----

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn config(kind: StorageKind, dir: &Path, addr: SocketAddr) -> Config {
    let mut c = Config::new("solo", dir.join("solo"), addr, "s3cret");
    c.heartbeat = Duration::from_millis(50);
    c.election_timeout = (Duration::from_millis(400), Duration::from_millis(800));
    c.storage = Some(kind);
    // Small enough that the writes below build snapshots and purge the log.
    c.snapshot_threshold = 50;
    c.keep_logs_after_snapshot = 10;
    c
}

async fn until_leader(m: &Member) {
    for _ in 0..400 {
        if m.leader() == Some(m.id()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader");
}

async fn value(m: &Member, key: &str) -> Option<Vec<u8>> {
    m.range(RangeRequest {
        key: key.into(),
        ..RangeRequest::default()
    })
    .await
    .unwrap()
    .kvs
    .pop()
    .map(|kv| kv.value)
}

/// Writes past several snapshots + purges, then restarts twice: once after
/// a clean shutdown, once after the member was dropped mid-flight (its tasks
/// aborted, nothing flushed on the way out). Every acknowledged write is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_recovers_every_acknowledged_write_after_snapshots_and_restarts() {
    for kind in KINDS {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let m = Member::start(config(kind, dir.path(), addr)).await.unwrap();
        until_leader(&m).await;
        for i in 0..300 {
            m.put(PutRequest {
                key: format!("k{}", i % 40).into(),
                value: format!("v{i}").into(),
                ..PutRequest::default()
            })
            .await
            .unwrap();
        }
        m.shutdown().await;

        let m = Member::start(config(kind, dir.path(), addr)).await.unwrap();
        until_leader(&m).await;
        for i in 260..300 {
            assert_eq!(
                value(&m, &format!("k{}", i % 40)).await,
                Some(format!("v{i}").into_bytes()),
                "{kind}: after a clean restart"
            );
        }
        let last = m
            .put(PutRequest {
                key: "after".into(),
                value: b"restart".to_vec(),
                ..PutRequest::default()
            })
            .await
            .unwrap()
            .header
            .revision;
        drop(m);

        // The dropped member's Raft shuts down in the background; wait for
        // the data dir lock instead of a fixed time.
        let m = loop {
            match Member::start(config(kind, dir.path(), addr)).await {
                Ok(m) => break m,
                Err(StoreError::Config(ConfigError::DataDirInUse(_))) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("{kind}: restart after drop failed: {e}"),
            }
        };
        until_leader(&m).await;
        assert_eq!(
            value(&m, "after").await,
            Some(b"restart".to_vec()),
            "{kind}"
        );
        assert!(
            m.status().await.unwrap().header.revision >= last,
            "{kind}: revision went back"
        );
        let raft = dir.path().join("solo/raft");
        assert!(raft.join(kind.file_name()).exists(), "{kind}");
        m.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_with_another_engine_is_refused_clearly() {
    for (made, asked) in [
        (StorageKind::File, StorageKind::Redb),
        (StorageKind::Fjall, StorageKind::Redb),
        (StorageKind::Redb, StorageKind::Fjall),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let m = Member::start(config(made, dir.path(), addr)).await.unwrap();
        until_leader(&m).await;
        m.shutdown().await;
        let err = Member::start(config(asked, dir.path(), addr))
            .await
            .err()
            .expect("a different engine is refused");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("--storage {made}"))
                && msg.contains(&format!("--storage {asked}")),
            "{msg}"
        );
        // Nothing was created for the refused engine.
        assert!(
            !dir.path()
                .join("solo/raft")
                .join(asked.file_name())
                .exists(),
            "{asked}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_json_without_an_engine_is_a_file_engine_member() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let m = Member::start(config(StorageKind::File, dir.path(), addr))
        .await
        .unwrap();
    until_leader(&m).await;
    m.put(PutRequest {
        key: "old".into(),
        value: b"data".to_vec(),
        ..PutRequest::default()
    })
    .await
    .unwrap();
    m.shutdown().await;
    // Rewrite member.json the way releases before the engine field wrote it.
    let meta_path = dir.path().join("solo/member.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    assert_eq!(meta["storage"], "file");
    meta.as_object_mut().unwrap().remove("storage");
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();

    // Without an explicit engine the recorded (here: legacy) one is used.
    let mut unspecified = config(StorageKind::File, dir.path(), addr);
    unspecified.storage = None;
    let m = Member::start(unspecified).await.unwrap();
    until_leader(&m).await;
    assert_eq!(value(&m, "old").await, Some(b"data".to_vec()));
    m.shutdown().await;
    let err = Member::start(config(StorageKind::Redb, dir.path(), addr))
        .await
        .err()
        .expect("legacy dir is a file-engine dir");
    assert!(err.to_string().contains("--storage file"), "{err}");
}

/// The storage measurement in ARCHITECTURE.md / BENCHMARKS.md: 1M 256-byte
/// writes through the log (groups of 100 per durable commit) and the MVCC
/// state machine, with compaction, snapshots and log purges every 10k
/// entries (1k entries kept); prints time, RSS (now and peak) and disk.
/// Run each engine in its own process, e.g.
/// `cargo test -p herd-orchestrator --release probe_storage_1m_writes_redb -- --ignored --nocapture`
async fn probe_storage_1m_writes(kind: StorageKind) {
    use crate::sm::StateMachine;
    use openraft::RaftSnapshotBuilder;
    use openraft::storage::RaftStateMachine;
    let dir = tempfile::tempdir().unwrap();
    let raft_dir = dir.path().join("raft");
    let mut log = LogStore::open_with(kind, &raft_dir).unwrap();
    let mut sm = StateMachine::open(&raft_dir).unwrap();
    let start = std::time::Instant::now();
    let value = vec![7u8; 256];
    let mut index = 0u64;
    // Sampled after every purge: an LSM's disk use is a sawtooth.
    let mut max_disk = 0u64;
    while index < 1_000_000 {
        let batch: Vec<Entry<TypeConfig>> = (0..100)
            .map(|_| {
                index += 1;
                Entry {
                    log_id: id(index),
                    payload: EntryPayload::Normal(Command::Put(PutRequest {
                        key: format!("key/{:05}", index % 10_000).into_bytes(),
                        value: value.clone(),
                        ..PutRequest::default()
                    })),
                }
            })
            .collect();
        log.append_synced(batch.clone()).await.unwrap();
        sm.apply(batch).await.unwrap();
        if index.is_multiple_of(10_000) {
            let rev = sm.read().kv.revision();
            sm.apply(vec![Entry {
                log_id: id(index),
                payload: EntryPayload::Normal(Command::Compact {
                    revision: rev - 1000,
                }),
            }])
            .await
            .unwrap();
            sm.build_snapshot().await.unwrap();
            log.purge(id(index - 1000)).await.unwrap();
            max_disk = max_disk.max(super::disk_size(&raft_dir));
        }
    }
    let elapsed = start.elapsed();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    let disk = super::disk_size(&raft_dir);
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    println!(
        "PROBE {kind}: 1M writes in {elapsed:.1?}, RSS {} (peak {}), disk {:.1} MiB (log file {:.1} MiB), \
         at most {:.1} MiB after a purge",
        field("VmRSS:"),
        field("VmHWM:"),
        mib(disk),
        mib(log.file_size()),
        mib(max_disk),
    );
    let engine_path = super::path(kind, &raft_dir);
    if engine_path.is_dir() {
        for e in std::fs::read_dir(&engine_path).unwrap() {
            let e = e.unwrap();
            println!(
                "PROBE {kind}:   {} {:.1} MiB",
                e.file_name().to_string_lossy(),
                mib(super::disk_size(&e.path()))
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn probe_storage_1m_writes_file() {
    probe_storage_1m_writes(StorageKind::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn probe_storage_1m_writes_redb() {
    probe_storage_1m_writes(StorageKind::Redb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn probe_storage_1m_writes_fjall() {
    probe_storage_1m_writes(StorageKind::Fjall).await;
}
