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
//!
//! **The leader's own flush overlaps replication.** openraft 0.9 awaits the
//! flush callback of every append inside its core before it sends the entries
//! to followers, so a write would pay the leader's fsync and then a
//! follower's, in series. With [`LogStore::overlap_leader_flush`], appends
//! this member makes *as leader* are reported flushed as soon as they are
//! queued, and the fsync runs while they are out for replication — what
//! etcd's raft and the Raft thesis (§10.2.1) do. That is safe only if nothing
//! the leader lets out depends on its unflushed entries, so the real flush
//! position is published as [`Durable`] and two gates wait on it: the state
//! machine applies an entry (and so answers the client, serves reads and
//! feeds watches) only once it is durable here, and an AppendEntries tells
//! followers a commit index only up to what is durable here
//! (`store::peer`). A commit thus becomes visible only after the leader's
//! fsync *and* a follower's: a quorum of durable copies. Followers always
//! report flushed only after the fsync, since their answer is a promise to
//! the leader.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, RaftLogId, RaftLogReader, StorageError, StorageIOError, Vote,
};
use tokio::sync::{oneshot, watch};

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
    /// The last entry of the in-memory log right after this op (taken
    /// under the log's lock, so in queue order): once the op is on disk,
    /// the log on disk ends there.
    tip: Option<LogId<u64>>,
}

/// Bounds one batch, so a flood of appends still gets acknowledged in steps.
const MAX_BATCH_ENTRIES: usize = 16 * 1024;

/// Where the log's durable end is: the id of the last entry on disk, or why
/// the writer stopped (then nothing further will ever be durable).
///
/// An id, not an index: after a follower truncates a conflicting suffix,
/// the old entries at those indexes stay on disk until the truncation is
/// written, and an index alone would vouch for the new entries that
/// replace them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Flushed {
    Upto(Option<LogId<u64>>),
    Failed(String),
}

/// Whether the log on disk, ending at `tip`, holds the entry `entry`. A
/// log's terms never decrease, so ending at or past `entry`'s index with a
/// term at least `entry`'s means holding it, for the committed entries the
/// gates ask about (every later leader's log contains them).
fn covers(tip: Option<LogId<u64>>, entry: LogId<u64>) -> bool {
    tip.is_some_and(|t| t.index >= entry.index && t >= entry)
}

/// A view of how far the log is durable on this member; see the module doc.
#[derive(Clone)]
pub struct Durable(watch::Receiver<Flushed>);

impl Durable {
    /// Waits until `entry` is on disk. Errors once the log writer has
    /// failed: the entry will never be.
    pub async fn wait_for(&mut self, entry: LogId<u64>) -> io::Result<()> {
        let reached = self
            .0
            .wait_for(|f| !matches!(f, Flushed::Upto(tip) if !covers(*tip, entry)))
            .await
            .map_err(|_| io::Error::other("the raft log writer has stopped"))?;
        match &*reached {
            Flushed::Upto(_) => Ok(()),
            Flushed::Failed(why) => Err(io::Error::other(why.clone())),
        }
    }

    /// The id of the last entry on disk now; errors once the writer failed.
    pub fn tip(&self) -> io::Result<Option<LogId<u64>>> {
        match &*self.0.borrow() {
            Flushed::Upto(tip) => Ok(*tip),
            Flushed::Failed(why) => Err(io::Error::other(why.clone())),
        }
    }

    /// Whether `entry` is on disk now.
    pub fn covers(&self, entry: LogId<u64>) -> bool {
        matches!(&*self.0.borrow(), Flushed::Upto(tip) if covers(*tip, entry))
    }
}

/// The Raft log storage. Cheap to clone; clones share state (the reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    data: Arc<Mutex<LogData>>,
    writer: Arc<Writer>,
    path: PathBuf,
    durable: watch::Receiver<Flushed>,
    /// This member's id once [`LogStore::overlap_leader_flush`] enabled the overlap.
    overlap_as: Option<u64>,
}

/// The writer thread's queue and handle, shared by every clone.
struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Fault injection: while set, the writer holds its next batch back, as
    /// a disk that stopped answering would (set only by tests).
    #[cfg_attr(not(test), allow(dead_code))]
    stall: Arc<AtomicBool>,
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

fn writer_loop(
    mut engine: Box<dyn LogEngine>,
    path: PathBuf,
    jobs: mpsc::Receiver<Job>,
    mut last: Option<LogId<u64>>,
    durable: watch::Sender<Flushed>,
    stall: Arc<AtomicBool>,
) {
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
            last = job.tip;
            ops.push(job.op);
            batch.push(job.done);
            if entries < MAX_BATCH_ENTRIES {
                next = jobs.try_recv().ok();
            }
        }
        while stall.load(Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let result = engine.persist(&ops);
        ops.clear();
        durable.send_replace(match &result {
            Ok(()) => Flushed::Upto(last),
            Err(e) => Flushed::Failed(format!("raft log write failed: {e}")),
        });
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
    #[cfg(test)]
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
        let last = recovered
            .entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(recovered.purged);
        let (durable_tx, durable) = watch::channel(Flushed::Upto(last));
        let stall = Arc::new(AtomicBool::new(false));
        let thread_stall = stall.clone();
        let thread = std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer_loop(engine, thread_path, rx, last, durable_tx, thread_stall))
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
                stall,
            }),
            path,
            durable,
            overlap_as: None,
        })
    }

    /// Makes a member that led when it stopped start again as a follower.
    ///
    /// openraft 0.9 restores a node whose saved vote is committed and its
    /// own as leader at once (`Engine::startup`), in its old term, and takes
    /// that term's first entry as the read index — long applied — while the
    /// state machine holds only the snapshot until the commit index is
    /// learnt again. Followers that have not yet given up on it (their
    /// lease plus election timeout outlasts a quick restart) confirm its
    /// leadership, so it served linearizable reads from the snapshot (issue
    /// 18). Handed over as not committed, the same vote keeps its promise
    /// (this member voted for itself in that term) but makes it a follower
    /// that campaigns for a new term, whose first entry makes reads current.
    pub fn step_down_on_restart(self, id: u64) -> Self {
        {
            let mut data = self.data();
            if let Some(v) = &mut data.vote
                && v.committed
                && v.leader_id.node_id == id
            {
                v.committed = false;
            }
        }
        self
    }

    /// Lets the appends member `id` makes as leader be reported flushed
    /// before their fsync, which then overlaps replication. Only sound when
    /// the state machine and the peer transport wait on [`LogStore::durable`]
    /// (see the module doc); `store::member` wires all three together.
    pub fn overlap_leader_flush(mut self, id: u64) -> Self {
        self.overlap_as = Some(id);
        self
    }

    /// Fault injection for tests: hold every write back until called with `false`.
    #[cfg(test)]
    pub(crate) fn stall_writes(&self, on: bool) {
        self.writer.stall.store(on, Ordering::Relaxed);
    }

    /// How far this log is durable.
    pub fn durable(&self) -> Durable {
        Durable(self.durable.clone())
    }

    /// Appends and waits until durable (what openraft's callback path does;
    /// its callback cannot be built outside openraft).
    #[cfg(test)]
    pub(crate) async fn append_synced(
        &self,
        entries: Vec<Entry<TypeConfig>>,
    ) -> Result<(), StorageError<u64>> {
        let rx = {
            let mut data = self.data();
            for e in &entries {
                data.entries.insert(e.log_id.index, e.clone());
            }
            self.send_notify(&data, LogOp::Append(entries))
        };
        wait_notified(rx).await
    }

    /// Size of the engine's file in bytes.
    pub fn file_size(&self) -> u64 {
        engine::disk_size(&self.path)
    }

    fn data(&self) -> std::sync::MutexGuard<'_, LogData> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `op`, already applied to `data` (whose lock the caller holds,
    /// so the queue order is the memory order).
    // openraft's trait methods return StorageError; keep the same type here.
    #[allow(clippy::result_large_err)]
    fn send(&self, data: &LogData, op: LogOp, done: Done) -> Result<(), StorageError<u64>> {
        let tip = data
            .entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(data.purged);
        self.writer
            .jobs
            .as_ref()
            .expect("the queue is open while a clone exists")
            .send(Job { op, done, tip })
            .map_err(|_| io_err("the raft log writer has stopped after an I/O error"))
    }

    /// [`LogStore::send`], with a receiver told once `op` is durable.
    #[allow(clippy::result_large_err)]
    fn send_notify(
        &self,
        data: &LogData,
        op: LogOp,
    ) -> Result<oneshot::Receiver<io::Result<()>>, StorageError<u64>> {
        let (tx, rx) = oneshot::channel();
        self.send(data, op, Done::Notify(tx))?;
        Ok(rx)
    }
}

async fn wait_notified(
    rx: Result<oneshot::Receiver<io::Result<()>>, StorageError<u64>>,
) -> Result<(), StorageError<u64>> {
    rx?.await
        .map_err(|_| io_err("the raft log writer has stopped"))?
        .map_err(io_err)
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
        let rx = {
            let mut data = self.data();
            data.vote = Some(*vote);
            self.send_notify(&data, LogOp::Vote(*vote))
        };
        wait_notified(rx).await
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
        // Our own entries while we lead this term: the vote is committed and
        // ours, and every entry carries it (a follower never appends under
        // its own vote; save_vote updates `data.vote` before it returns).
        let as_leader = self.overlap_as.is_some_and(|me| {
            data.vote.is_some_and(|v| {
                v.committed
                    && v.leader_id.node_id == me
                    && entries.iter().all(|e| e.log_id.leader_id == v.leader_id)
            })
        });
        // Enqueued under the lock: the queue order is the memory order.
        if as_leader {
            self.send(&data, LogOp::Append(entries), Done::None)?;
            callback.log_io_completed(Ok(()));
            Ok(())
        } else {
            self.send(&data, LogOp::Append(entries), Done::Flushed(callback))
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut data = self.data();
        data.entries.split_off(&log_id.index);
        self.send(&data, LogOp::Truncate(log_id.index), Done::None)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut data = self.data();
        data.entries = data.entries.split_off(&(log_id.index + 1));
        data.purged = Some(log_id);
        self.send(&data, LogOp::Purge(log_id), Done::None)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    #[tokio::test]
    async fn a_truncated_suffix_never_vouches_for_the_entries_replacing_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(dir.path()).unwrap();
        log.append_synced((1..=10).map(|i| entry(1, i)).collect())
            .await
            .unwrap();
        let durable = log.durable();
        assert!(durable.covers(entry(1, 10).log_id));

        // A new leader's entries replace 8..=10 while the disk is stalled:
        // the old 8..=10 are still what is on disk.
        log.stall_writes(true);
        log.truncate(entry(1, 8).log_id).await.unwrap();
        let replacing = log.clone();
        let append = tokio::spawn(async move {
            replacing
                .append_synced(vec![entry(2, 8), entry(2, 9)])
                .await
                .unwrap()
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !durable.covers(entry(2, 8).log_id),
            "the old entry at index 8 vouched for its replacement"
        );
        assert!(durable.covers(entry(1, 7).log_id));

        log.stall_writes(false);
        append.await.unwrap();
        assert!(durable.covers(entry(2, 9).log_id));
        durable.clone().wait_for(entry(2, 8).log_id).await.unwrap();
    }

    #[tokio::test]
    async fn a_leaders_own_committed_vote_comes_back_uncommitted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = LogStore::open(dir.path()).unwrap();
            log.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
        }
        let mut own = LogStore::open(dir.path()).unwrap().step_down_on_restart(1);
        assert_eq!(own.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
        drop(own);
        let mut other = LogStore::open(dir.path()).unwrap().step_down_on_restart(2);
        assert_eq!(
            other.read_vote().await.unwrap(),
            Some(Vote::new_committed(3, 1)),
            "a follower's vote for its leader is kept as it was"
        );
    }
}
