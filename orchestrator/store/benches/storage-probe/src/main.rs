//! Writes 1M 256-byte values the way the store does (Raft log entries plus a
//! state-machine upsert, committed in groups of 100, log purged behind a
//! snapshot every 10k entries) and reports RSS and bytes on disk.

use std::path::Path;
use std::time::Instant;

const WRITES: u64 = 1_000_000;
const GROUP: u64 = 100;
const SNAPSHOT_EVERY: u64 = 10_000;
const KEYS: u64 = 10_000;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn disk_bytes(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            total += if m.is_dir() { disk_bytes(&e.path()) } else { m.len() };
        }
    }
    total
}

fn sled_run(dir: &Path) {
    let db = sled::open(dir).unwrap();
    let log = db.open_tree("log").unwrap();
    let kv = db.open_tree("kv").unwrap();
    let value = vec![7u8; 256];
    for i in 1..=WRITES {
        log.insert(i.to_be_bytes(), [&value[..], &[0u8; 44]].concat()).unwrap();
        kv.insert((i % KEYS).to_be_bytes(), value.clone()).unwrap();
        if i % GROUP == 0 {
            db.flush().unwrap();
        }
        if i % SNAPSHOT_EVERY == 0 {
            for k in (i - SNAPSHOT_EVERY + 1)..=(i - 1000) {
                log.remove(k.to_be_bytes()).unwrap();
            }
            db.flush().unwrap();
        }
    }
}

fn redb_run(dir: &Path) {
    use redb::{Database, TableDefinition};
    const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
    const KV: TableDefinition<u64, &[u8]> = TableDefinition::new("kv");
    std::fs::create_dir_all(dir).unwrap();
    let db = Database::create(dir.join("db.redb")).unwrap();
    let value = vec![7u8; 256];
    let entry = [&value[..], &[0u8; 44]].concat();
    let mut i = 0u64;
    while i < WRITES {
        let tx = db.begin_write().unwrap();
        {
            let mut log = tx.open_table(LOG).unwrap();
            let mut kv = tx.open_table(KV).unwrap();
            for _ in 0..GROUP {
                i += 1;
                log.insert(i, entry.as_slice()).unwrap();
                kv.insert(i % KEYS, value.as_slice()).unwrap();
            }
            if i % SNAPSHOT_EVERY == 0 {
                for k in (i - SNAPSHOT_EVERY + 1)..=(i - 1000) {
                    log.remove(k).unwrap();
                }
            }
        }
        tx.commit().unwrap();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (engine, dir) = (args[1].as_str(), Path::new(&args[2]));
    let start = Instant::now();
    match engine {
        "sled" => sled_run(dir),
        "redb" => redb_run(dir),
        other => panic!("unknown engine {other}"),
    }
    println!(
        "{engine}: {WRITES} writes in {:.1?}, RSS {} MiB, disk {} MiB",
        start.elapsed(),
        rss_kib() / 1024,
        disk_bytes(dir) / (1 << 20)
    );
}
