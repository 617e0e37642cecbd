//! The Raft state machine: applies committed commands to the MVCC key space, feeds watchers, builds and installs snapshots.
//!
//! The key space lives in memory; durability comes from the Raft log plus the
//! latest snapshot file (`snapshot.bin`, crc32-checked). On restart the
//! snapshot is loaded and openraft re-applies the log entries after it.

use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::StoreError;
use super::auth::AuthState;
use super::log::Durable;
use super::mvcc::KeySpace;
use super::types::{
    Command, CommandResponse, Event, EventKind, PeerNode, TypeConfig, WatchBatch, WatchRequest,
    in_range,
};

const SNAPSHOT_FILE: &str = "snapshot.bin";

/// Batches queued per watcher. A watcher whose queue is full stops taking
/// live events and becomes *unsynced*: it remembers the first revision it
/// has not received and, once its reader drained the queue, catches up from
/// the MVCC history one queue-sized window at a time (etcd's unsynced
/// watchers). So a reader that never reads costs at most this many batches,
/// and when it reads again it sees every revision, with no gap; if
/// compaction removed what it still needs, it gets `Compacted` instead.
pub const WATCH_QUEUE: usize = 256;

struct WatcherState {
    req: WatchRequest,
    /// The next revision this watcher has not yet seen.
    next_rev: i64,
    /// Its queue filled up: live events skip it until it caught up from
    /// history. Shared with its [`Watch`], which checks it without the lock.
    unsynced: Arc<AtomicBool>,
    tx: mpsc::Sender<WatchBatch>,
}

impl WatcherState {
    /// Queues the matching part of one revision; false when the receiver is gone.
    fn deliver(&mut self, revision: i64, events: &[Event]) -> bool {
        if self.unsynced.load(Ordering::Acquire) || revision < self.next_rev {
            return !self.tx.is_closed();
        }
        let picked: Vec<Event> = events
            .iter()
            .filter(|e| in_range(&e.kv.key, &self.req.key, &self.req.range_end))
            .filter(|e| match e.kind {
                EventKind::Put => !self.req.no_put,
                EventKind::Delete => !self.req.no_delete,
            })
            .map(|e| Event {
                kind: e.kind,
                kv: e.kv.clone(),
                prev_kv: if self.req.prev_kv {
                    e.prev_kv.clone()
                } else {
                    None
                },
            })
            .collect();
        if picked.is_empty() {
            self.next_rev = revision + 1;
            return !self.tx.is_closed();
        }
        match self.tx.try_send(WatchBatch::Events {
            revision,
            events: picked,
        }) {
            Ok(()) => {
                self.next_rev = revision + 1;
                true
            }
            // `next_rev` stays at this revision: the catch-up resends it.
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.unsynced.store(true, Ordering::Release);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Replays history from `next_rev` as far as the queue has room; false
    /// when the watcher is finished (receiver gone, or compacted).
    fn catch_up(&mut self, kv: &KeySpace) -> bool {
        self.unsynced.store(false, Ordering::Release);
        while self.next_rev <= kv.revision() {
            // One revision is at most one batch, so a window of `free`
            // revisions always fits.
            let free = self.tx.capacity() as i64;
            if free == 0 {
                self.unsynced.store(true, Ordering::Release);
                return !self.tx.is_closed();
            }
            let to = kv.revision().min(self.next_rev + free - 1);
            match kv.history_between(&self.req.key, &self.req.range_end, self.next_rev, to) {
                Ok(history) => {
                    for (rev, events) in history {
                        if !self.deliver(rev, &events) {
                            return false;
                        }
                    }
                    self.next_rev = to + 1;
                }
                Err(compact_revision) => {
                    // Sent only with room in the queue, so the reader sees why it ended.
                    if self.tx.capacity() == 0 {
                        self.unsynced.store(true, Ordering::Release);
                        return !self.tx.is_closed();
                    }
                    let _ = self.tx.try_send(WatchBatch::Compacted { compact_revision });
                    return false;
                }
            }
        }
        !self.tx.is_closed()
    }

    /// Queues a progress notice (everything up to the current revision was
    /// queued before it). Unsynced watchers and full queues are skipped: a
    /// progress notice is only true once the watcher caught up.
    fn progress(&mut self, revision: i64) -> bool {
        if !self.unsynced.load(Ordering::Acquire) {
            let _ = self.tx.try_send(WatchBatch::Progress { revision });
            true
        } else {
            false
        }
    }
}

/// The state under the state machine's lock.
pub struct SmData {
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, PeerNode>,
    pub kv: KeySpace,
    /// Users, roles and whether auth is enabled.
    pub auth: AuthState,
    watchers: BTreeMap<u64, WatcherState>,
    next_watch: u64,
    snapshot: Option<(SnapshotMeta<u64, PeerNode>, Vec<u8>)>,
}

/// Lease deadlines. Not replicated: the leader decides expiry, and refreshes
/// every deadline when it takes over so leases never expire early.
#[derive(Default)]
pub struct LeaseClock {
    deadlines: Mutex<HashMap<i64, (Instant, i64)>>,
}

impl LeaseClock {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<i64, (Instant, i64)>> {
        self.deadlines.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set(&self, id: i64, ttl: i64) {
        let deadline = Instant::now() + Duration::from_secs(ttl.max(1) as u64);
        self.map().insert(id, (deadline, ttl));
    }

    pub fn remove(&self, id: i64) {
        self.map().remove(&id);
    }

    /// Restarts every lease's countdown from its full TTL.
    pub fn refresh_all(&self, leases: impl IntoIterator<Item = (i64, i64)>) {
        let now = Instant::now();
        let mut map = self.map();
        map.clear();
        for (id, ttl) in leases {
            map.insert(id, (now + Duration::from_secs(ttl.max(1) as u64), ttl));
        }
    }

    /// Remaining whole seconds, rounded up like etcd.
    pub fn remaining(&self, id: i64) -> Option<i64> {
        self.map().get(&id).map(|(deadline, _)| {
            let left = deadline.saturating_duration_since(Instant::now());
            left.as_millis().div_ceil(1000) as i64
        })
    }

    pub fn expired(&self) -> Vec<i64> {
        let now = Instant::now();
        self.map()
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect()
    }
}

pub struct SmShared {
    data: RwLock<SmData>,
    dir: PathBuf,
    /// Serialises snapshot file writes (a build and an install can overlap).
    persist: tokio::sync::Mutex<()>,
    pub leases: LeaseClock,
    /// When set, an entry is applied only once the local log has it on disk
    /// (the leader's flush overlaps replication: `store::log`).
    durable: Option<Durable>,
    /// Fault injection: holds a snapshot's encoding back (tests only).
    #[cfg(test)]
    encode_stall: Arc<tests::Stall>,
}

/// The state machine handed to openraft; clones share state.
#[derive(Clone)]
pub struct StateMachine(pub Arc<SmShared>);

/// A live watch. Dropping it cancels the watch.
pub struct Watch {
    id: u64,
    rx: mpsc::Receiver<WatchBatch>,
    unsynced: Arc<AtomicBool>,
    sm: Arc<SmShared>,
}

impl Watch {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next batch; `None` once the watch is over (compacted, or the member stopped).
    pub async fn recv(&mut self) -> Option<WatchBatch> {
        loop {
            match self.rx.try_recv() {
                Ok(batch) => return Some(batch),
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            // The queue is drained: a watcher that fell behind catches up
            // now. (It is flagged only while its queue is full, so an empty
            // queue and a clear flag mean it is live; no lock needed.)
            if !self.unsynced.load(Ordering::Acquire) || !self.sm.resync(self.id) {
                return self.rx.recv().await;
            }
        }
    }

    /// Asks for a [`WatchBatch::Progress`] with the current revision, queued
    /// after every event up to it; false when the watcher is behind (it
    /// cannot vouch for the current revision yet) or its queue is full.
    pub fn request_progress(&self) -> bool {
        let mut data = self.sm.write();
        let revision = data.kv.revision();
        data.watchers
            .get_mut(&self.id)
            .is_some_and(|w| w.progress(revision))
    }

    /// Batches waiting in this watch's queue (at most [`WATCH_QUEUE`]).
    pub fn queued(&self) -> usize {
        self.rx.len()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.sm.write().watchers.remove(&self.id);
    }
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<u64, PeerNode>,
    data: Vec<u8>,
}

fn with_crc(mut payload: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&payload);
    payload.extend_from_slice(&crc.to_le_bytes());
    payload
}

fn check_crc<'a>(bytes: &'a [u8], what: &str) -> Result<&'a [u8], String> {
    if bytes.len() < 4 {
        return Err(format!("{what} is truncated"));
    }
    let (payload, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(payload) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(format!("{what} fails its crc32 check"));
    }
    Ok(payload)
}

/// Marks snapshot data that holds the auth state after the key space;
/// data without it (written before auth existed) is the key space alone.
const STATE_V2: &[u8; 8] = b"HSTATE2\0";

/// Encodes the key space and the auth state as snapshot data: `STATE_V2`,
/// the key space's length (u64 LE), the key space, the auth state, each
/// postcard + crc32.
fn encode_state(kv: &KeySpace, auth: &AuthState) -> Vec<u8> {
    let kv = with_crc(postcard::to_allocvec(kv).expect("key space always serializes"));
    let auth = with_crc(postcard::to_allocvec(auth).expect("auth state always serializes"));
    let mut out = Vec::with_capacity(16 + kv.len() + auth.len());
    out.extend_from_slice(STATE_V2);
    out.extend_from_slice(&(kv.len() as u64).to_le_bytes());
    out.extend_from_slice(&kv);
    out.extend_from_slice(&auth);
    out
}

fn decode_kv(bytes: &[u8]) -> Result<KeySpace, String> {
    let payload = check_crc(bytes, "snapshot data")?;
    postcard::from_bytes(payload).map_err(|e| format!("snapshot data does not decode: {e}"))
}

fn decode_state(bytes: &[u8]) -> Result<(KeySpace, AuthState), String> {
    let Some(rest) = bytes.strip_prefix(STATE_V2) else {
        return Ok((decode_kv(bytes)?, AuthState::default()));
    };
    if rest.len() < 8 {
        return Err("snapshot data is truncated".into());
    }
    let (len, rest) = rest.split_at(8);
    let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
    if rest.len() < len {
        return Err("snapshot data is truncated".into());
    }
    let (kv, auth) = rest.split_at(len);
    let auth = check_crc(auth, "snapshot auth state")?;
    Ok((
        decode_kv(kv)?,
        postcard::from_bytes(auth)
            .map_err(|e| format!("snapshot auth state does not decode: {e}"))?,
    ))
}

fn sm_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())).into()
}

fn write_file_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The bytes of `snapshot.bin`: the snapshot's meta and encoded key space, crc32-sealed.
fn snapshot_file(meta: &SnapshotMeta<u64, PeerNode>, data: Vec<u8>) -> Vec<u8> {
    with_crc(
        postcard::to_allocvec(&SnapshotFile {
            meta: meta.clone(),
            data,
        })
        .expect("snapshot file always serializes"),
    )
}

/// Writes `dir/snapshot.bin` holding `kv` as the state at `meta`, for a data
/// dir built offline (`store::restore`); durable (fsync + rename) on return.
pub fn write_snapshot_file(
    dir: &Path,
    meta: &SnapshotMeta<u64, PeerNode>,
    kv: &KeySpace,
) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    let file = snapshot_file(meta, encode_state(kv, &AuthState::default()));
    write_file_durably(dir, SNAPSHOT_FILE, &file)
        .map_err(|e| StoreError::io(&dir.join(SNAPSHOT_FILE), e))
}

impl StateMachine {
    /// Opens the state machine in `dir`, loading the latest snapshot if there is one.
    #[cfg(test)]
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_gated(dir, None)
    }

    /// [`StateMachine::open`], applying entries only once `durable` says the
    /// local log holds them (required with `LogStore::overlap_leader_flush`).
    pub fn open_gated(dir: &Path, durable: Option<Durable>) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let path = dir.join(SNAPSHOT_FILE);
        let mut data = SmData {
            last_applied: None,
            membership: StoredMembership::default(),
            kv: KeySpace::default(),
            auth: AuthState::default(),
            watchers: BTreeMap::new(),
            next_watch: 1,
            snapshot: None,
        };
        if path.exists() {
            let bytes = std::fs::read(&path).map_err(|e| StoreError::io(&path, e))?;
            let corrupt = |detail: String| StoreError::Corrupt {
                path: path.clone(),
                detail,
            };
            let payload = check_crc(&bytes, "snapshot file").map_err(corrupt)?;
            let file: SnapshotFile = postcard::from_bytes(payload)
                .map_err(|e| corrupt(format!("snapshot file does not decode: {e}")))?;
            (data.kv, data.auth) = decode_state(&file.data).map_err(corrupt)?;
            data.last_applied = file.meta.last_log_id;
            data.membership = file.meta.last_membership.clone();
            data.snapshot = Some((file.meta, file.data));
        }
        Ok(StateMachine(Arc::new(SmShared {
            data: RwLock::new(data),
            dir: dir.to_path_buf(),
            persist: tokio::sync::Mutex::new(()),
            leases: LeaseClock::default(),
            durable,
            #[cfg(test)]
            encode_stall: Arc::default(),
        })))
    }

    pub fn read(&self) -> RwLockReadGuard<'_, SmData> {
        self.0.read()
    }

    /// Starts a watch; history from `start_revision` is queued before any live event.
    pub fn watch(&self, req: WatchRequest) -> Watch {
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        let unsynced = Arc::new(AtomicBool::new(false));
        let mut data = self.0.write();
        let id = data.next_watch;
        data.next_watch += 1;
        let next_rev = if req.start_revision > 0 {
            req.start_revision
        } else {
            data.kv.revision() + 1
        };
        let mut w = WatcherState {
            req,
            next_rev,
            unsynced: Arc::clone(&unsynced),
            tx,
        };
        if w.catch_up(&data.kv) {
            data.watchers.insert(id, w);
        }
        Watch {
            id,
            rx,
            unsynced,
            sm: self.0.clone(),
        }
    }

    /// Watch batches queued in the store, over all watchers; each watcher
    /// holds at most [`WATCH_QUEUE`].
    pub fn watch_backlog(&self) -> usize {
        self.0
            .read()
            .watchers
            .values()
            .map(|w| w.tx.max_capacity() - w.tx.capacity())
            .sum()
    }

    /// Bytes of the snapshot file.
    pub fn snapshot_size(&self) -> u64 {
        std::fs::metadata(self.0.dir.join(SNAPSHOT_FILE)).map_or(0, |m| m.len())
    }
}

impl StateMachine {
    /// Writes the snapshot file (fsync + rename) unless a newer one is already
    /// stored, so an overlapping older build never replaces a newer install.
    async fn persist(
        &self,
        meta: &SnapshotMeta<u64, PeerNode>,
        bytes: &[u8],
    ) -> Result<(), StorageError<u64>> {
        let _guard = self.0.persist.lock().await;
        let stored = self
            .0
            .read()
            .snapshot
            .as_ref()
            .and_then(|(m, _)| m.last_log_id);
        if stored.is_some() && stored > meta.last_log_id {
            return Ok(());
        }
        let file = snapshot_file(meta, bytes.to_vec());
        let dir = self.0.dir.clone();
        tokio::task::spawn_blocking(move || write_file_durably(&dir, SNAPSHOT_FILE, &file))
            .await
            .map_err(sm_err)?
            .map_err(sm_err)?;
        // Copied before the lock: applies wait on it.
        let kept = Some((meta.clone(), bytes.to_vec()));
        self.0.write().snapshot = kept;
        Ok(())
    }
}

impl SmShared {
    /// Catches an unsynced watcher up from history; false when it was
    /// already in sync (or is gone), so its reader may wait for live events.
    fn resync(&self, id: u64) -> bool {
        let mut data = self.write();
        let data = &mut *data;
        let Some(w) = data.watchers.get_mut(&id) else {
            return false;
        };
        if !w.unsynced.load(Ordering::Acquire) {
            return false;
        }
        if !w.catch_up(&data.kv) {
            data.watchers.remove(&id);
        }
        true
    }

    fn write(&self) -> RwLockWriteGuard<'_, SmData> {
        self.data.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> RwLockReadGuard<'_, SmData> {
        self.data.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    /// Copies the state under the lock and encodes it outside: the copy
    /// is the maps (every version shares its value through an `Arc`), the
    /// encoding all the values — tens of MB once the key space is large, on
    /// a blocking thread, while applies go on.
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let (meta, kv, auth) = {
            let data = self.0.read();
            let last = data.last_applied;
            let meta = SnapshotMeta {
                last_log_id: last,
                last_membership: data.membership.clone(),
                snapshot_id: format!(
                    "{}-{}-{}",
                    last.map_or(0, |l| l.leader_id.term),
                    last.map_or(0, |l| l.index),
                    rand::random::<u32>()
                ),
            };
            (meta, data.kv.clone(), data.auth.clone())
        };
        #[cfg(test)]
        let stall = self.0.encode_stall.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            #[cfg(test)]
            stall.hold();
            encode_state(&kv, &auth)
        })
        .await
        .map_err(sm_err)?;
        self.persist(&meta, &bytes).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

/// Applies one command; a batch is applied command by command so each gets
/// its own revision and watchers see each revision's events on their own.
fn apply_command(leases: &LeaseClock, data: &mut SmData, cmd: Command) -> CommandResponse {
    let cmd = match cmd {
        Command::Batch(cmds) => {
            return CommandResponse::Batch(
                cmds.into_iter()
                    .map(|c| apply_command(leases, data, c))
                    .collect(),
            );
        }
        Command::Auth(change) => {
            return match data.auth.apply(change) {
                Ok(()) => CommandResponse::Auth {
                    revision: data.kv.revision(),
                },
                Err(e) => CommandResponse::Failed(e.into()),
            };
        }
        other => other,
    };
    let (resp, events) = data.kv.apply(&cmd);
    match (&cmd, &resp) {
        (Command::LeaseGrant { id, ttl }, CommandResponse::LeaseGrant(_)) => leases.set(*id, *ttl),
        (Command::LeaseRevoke { id }, _) => leases.remove(*id),
        _ => {}
    }
    if !events.is_empty() {
        let rev = data.kv.revision();
        data.watchers.retain(|_, w| w.deliver(rev, &events));
    }
    resp
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, PeerNode>), StorageError<u64>> {
        let data = self.0.read();
        Ok((data.last_applied, data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        if let (Some(durable), Some(last)) = (&self.0.durable, entries.last()) {
            durable
                .clone()
                .wait_for(last.log_id)
                .await
                .map_err(|e| StorageIOError::apply(last.log_id, AnyError::new(&e)))?;
        }
        let mut out = Vec::new();
        let mut data = self.0.write();
        let data = &mut *data;
        for entry in entries {
            data.last_applied = Some(entry.log_id);
            let resp = match entry.payload {
                EntryPayload::Blank => CommandResponse::None,
                EntryPayload::Membership(m) => {
                    data.membership = StoredMembership::new(Some(entry.log_id), m);
                    CommandResponse::None
                }
                EntryPayload::Normal(cmd) => apply_command(&self.0.leases, data, cmd),
            };
            out.push(resp);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, PeerNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let bytes = snapshot.into_inner();
        let (kv, auth) = decode_state(&bytes).map_err(|e| {
            tracing::error!(error = %e, "rejecting a received snapshot");
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                &std::io::Error::other(e),
            ))
        })?;
        self.persist(meta, &bytes).await?;
        let mut data = self.0.write();
        let data = &mut *data;
        self.0.leases.refresh_all(
            kv.lease_ids()
                .into_iter()
                .filter_map(|id| kv.lease(id).map(|l| (id, l.ttl))),
        );
        data.kv = kv;
        data.auth = auth;
        data.last_applied = meta.last_log_id;
        data.membership = meta.last_membership.clone();
        // Watchers keep their exactly-once stream across the jump.
        let kv = &data.kv;
        data.watchers.retain(|_, w| w.catch_up(kv));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        Ok(self
            .0
            .read()
            .snapshot
            .as_ref()
            .map(|(meta, bytes)| Snapshot {
                meta: meta.clone(),
                snapshot: Box::new(Cursor::new(bytes.clone())),
            }))
    }
}

#[cfg(test)]
mod tests;
