//! The Raft log for openraft (`RaftLogStorage`), over any [`LogEngine`]: entries in memory for reads, a group-commit writer thread for durability.
//!
//! Appends, votes, truncations and purges are queued, in openraft's order, to
//! one writer thread that drains everything queued, hands it to the engine
//! as one batch ([`LogEngine::persist`]: one `fdatasync` for the file
//! engine, one durable transaction for redb) and only then reports the
//! appends flushed to openraft — so concurrent proposals share one fsync.
//! Entries are also kept in memory for reads; the log is bounded by
//! snapshots + purge. The engines own the on-disk formats
//! (`store::engine::{file, redb}`).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, RaftLogId, RaftLogReader, StorageError, StorageIOError, Vote,
};
use tokio::sync::oneshot;

use super::StoreError;
use super::engine::{self, LogEngine, LogOp, StorageKind};
use super::types::TypeConfig;

#[derive(Default)]
struct LogData {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    vote: Option<Vote<u64>>,
    purged: Option<LogId<u64>>,
}

enum Done {
    Flushed(LogFlushed<TypeConfig>),
    Notify(oneshot::Sender<io::Result<()>>),
    None,
}

struct Job {
    op: LogOp,
    done: Done,
}

/// Bounds one batch, so a flood of appends still gets acknowledged in steps.
const MAX_BATCH_ENTRIES: usize = 16 * 1024;

/// The Raft log storage. Cheap to clone; clones share state (the reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    data: Arc<Mutex<LogData>>,
    writer: Arc<Writer>,
    path: PathBuf,
}

/// The writer thread's queue and handle, shared by every clone.
struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    /// The last clone closes the queue and waits for the thread, so the
    /// engine (redb holds a file lock) is closed once the store is gone and
    /// a member restarted in the same process can open it again. The wait
    /// is at most the batch being persisted.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn writer_loop(mut engine: Box<dyn LogEngine>, path: PathBuf, jobs: mpsc::Receiver<Job>) {
    let mut ops: Vec<LogOp> = Vec::new();
    let mut batch: Vec<Done> = Vec::new();
    while let Ok(first) = jobs.recv() {
        let mut next = Some(first);
        let mut entries = 0usize;
        // Drain everything queued: one durable commit for the whole group.
        while let Some(job) = next.take() {
            if let LogOp::Append(e) = &job.op {
                entries += e.len();
            }
            ops.push(job.op);
            batch.push(job.done);
            if entries < MAX_BATCH_ENTRIES {
                next = jobs.try_recv().ok();
            }
        }
        let result = engine.persist(&ops);
        ops.clear();
        for done in batch.drain(..) {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            match done {
                Done::Flushed(cb) => cb.log_io_completed(r),
                Done::Notify(tx) => {
                    let _ = tx.send(r);
                }
                Done::None => {}
            }
        }
        if let Err(e) = result {
            tracing::error!(path = %path.display(), error = %e, "raft log write failed; the log writer stops");
            return;
        }
    }
}

fn io_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_logs(&io::Error::other(e.to_string())).into()
}

impl LogStore {
    /// Opens (or creates) the file-engine log in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(StorageKind::File, dir)
    }

    /// Opens (or creates) the log of engine `kind` in `dir` and starts its
    /// writer thread (it ends when the last clone is dropped).
    pub fn open_with(kind: StorageKind, dir: &Path) -> Result<Self, StoreError> {
        let (engine, recovered) = engine::open(kind, dir)?;
        let path = engine::path(kind, dir);
        let (tx, rx) = mpsc::channel();
        let thread_path = path.clone();
        let thread = std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer_loop(engine, thread_path, rx))
            .map_err(|e| StoreError::io(&path, e))?;
        Ok(LogStore {
            data: Arc::new(Mutex::new(LogData {
                entries: recovered.entries,
                vote: recovered.vote,
                purged: recovered.purged,
            })),
            writer: Arc::new(Writer {
                jobs: Some(tx),
                thread: Some(thread),
            }),
            path,
        })
    }

    /// Appends and waits until durable (what openraft's callback path does;
    /// its callback cannot be built outside openraft).
    #[cfg(test)]
    pub(crate) async fn append_synced(&self, entries: Vec<Entry<TypeConfig>>) {
        {
            let mut data = self.data();
            for e in &entries {
                data.entries.insert(e.log_id.index, e.clone());
            }
        }
        self.send_and_wait(LogOp::Append(entries))
            .await
            .expect("append");
    }

    /// Size of the engine's file in bytes.
    pub fn file_size(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    fn data(&self) -> std::sync::MutexGuard<'_, LogData> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    // openraft's trait methods return StorageError; keep the same type here.
    #[allow(clippy::result_large_err)]
    fn send(&self, op: LogOp, done: Done) -> Result<(), StorageError<u64>> {
        self.writer
            .jobs
            .as_ref()
            .expect("the queue is open while a clone exists")
            .send(Job { op, done })
            .map_err(|_| io_err("the raft log writer has stopped after an I/O error"))
    }

    async fn send_and_wait(&self, op: LogOp) -> Result<(), StorageError<u64>> {
        let (tx, rx) = oneshot::channel();
        self.send(op, Done::Notify(tx))?;
        rx.await
            .map_err(|_| io_err("the raft log writer has stopped"))?
            .map_err(io_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        Ok(self
            .data()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let data = self.data();
        let last = data
            .entries
            .last_key_value()
            .map(|(_, e)| *e.get_log_id())
            .or(data.purged);
        Ok(LogState {
            last_purged_log_id: data.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.data().vote = Some(*vote);
        self.send_and_wait(LogOp::Vote(*vote)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(self.data().vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let mut data = self.data();
        for entry in &entries {
            data.entries.insert(entry.log_id.index, entry.clone());
        }
        // Enqueued under the lock: the queue order is the memory order.
        self.send(LogOp::Append(entries), Done::Flushed(callback))
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut data = self.data();
        data.entries.split_off(&log_id.index);
        self.send(LogOp::Truncate(log_id.index), Done::None)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut data = self.data();
        data.entries = data.entries.split_off(&(log_id.index + 1));
        data.purged = Some(log_id);
        self.send(LogOp::Purge(log_id), Done::None)
    }
}
