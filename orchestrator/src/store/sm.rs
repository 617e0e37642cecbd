//! The Raft state machine: applies committed commands to the MVCC key space, feeds watchers, builds and installs snapshots.
//!
//! The key space lives in memory; durability comes from the Raft log plus the
//! latest snapshot file (`snapshot.bin`, crc32-checked). On restart the
//! snapshot is loaded and openraft re-applies the log entries after it.

use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::StoreError;
use super::mvcc::KeySpace;
use super::types::{
    Command, CommandResponse, Event, EventKind, PeerNode, TypeConfig, WatchBatch, WatchRequest,
    in_range,
};

const SNAPSHOT_FILE: &str = "snapshot.bin";

struct WatcherState {
    req: WatchRequest,
    /// The next revision this watcher has not yet seen.
    next_rev: i64,
    tx: mpsc::UnboundedSender<WatchBatch>,
}

impl WatcherState {
    /// Sends the matching part of one revision; false when the receiver is gone.
    fn deliver(&mut self, revision: i64, events: &[Event]) -> bool {
        if revision < self.next_rev {
            return true;
        }
        self.next_rev = revision + 1;
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
            return !self.tx.is_closed();
        }
        self.tx
            .send(WatchBatch::Events {
                revision,
                events: picked,
            })
            .is_ok()
    }

    /// Replays history from `next_rev`; false when the watcher is finished.
    fn catch_up(&mut self, kv: &KeySpace) -> bool {
        if self.next_rev > kv.revision() {
            return true;
        }
        match kv.history(&self.req.key, &self.req.range_end, self.next_rev) {
            Ok(history) => {
                for (rev, events) in history {
                    if !self.deliver(rev, &events) {
                        return false;
                    }
                }
                self.next_rev = kv.revision() + 1;
                true
            }
            Err(compact_revision) => {
                let _ = self.tx.send(WatchBatch::Compacted { compact_revision });
                false
            }
        }
    }
}

/// The state under the state machine's lock.
pub struct SmData {
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, PeerNode>,
    pub kv: KeySpace,
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
}

/// The state machine handed to openraft; clones share state.
#[derive(Clone)]
pub struct StateMachine(pub Arc<SmShared>);

/// A live watch. Dropping it cancels the watch.
pub struct Watch {
    id: u64,
    rx: mpsc::UnboundedReceiver<WatchBatch>,
    sm: Arc<SmShared>,
}

impl Watch {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next batch; `None` once the watch is over (compacted, or the member stopped).
    pub async fn recv(&mut self) -> Option<WatchBatch> {
        self.rx.recv().await
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

/// Encodes a key space as snapshot data (postcard + crc32).
fn encode_kv(kv: &KeySpace) -> Vec<u8> {
    with_crc(postcard::to_allocvec(kv).expect("key space always serializes"))
}

fn decode_kv(bytes: &[u8]) -> Result<KeySpace, String> {
    let payload = check_crc(bytes, "snapshot data")?;
    postcard::from_bytes(payload).map_err(|e| format!("snapshot data does not decode: {e}"))
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

impl StateMachine {
    /// Opens the state machine in `dir`, loading the latest snapshot if there is one.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let path = dir.join(SNAPSHOT_FILE);
        let mut data = SmData {
            last_applied: None,
            membership: StoredMembership::default(),
            kv: KeySpace::default(),
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
            data.kv = decode_kv(&file.data).map_err(corrupt)?;
            data.last_applied = file.meta.last_log_id;
            data.membership = file.meta.last_membership.clone();
            data.snapshot = Some((file.meta, file.data));
        }
        Ok(StateMachine(Arc::new(SmShared {
            data: RwLock::new(data),
            dir: dir.to_path_buf(),
            persist: tokio::sync::Mutex::new(()),
            leases: LeaseClock::default(),
        })))
    }

    pub fn read(&self) -> RwLockReadGuard<'_, SmData> {
        self.0.read()
    }

    /// Starts a watch; history from `start_revision` is queued before any live event.
    pub fn watch(&self, req: WatchRequest) -> Watch {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut data = self.0.write();
        let id = data.next_watch;
        data.next_watch += 1;
        let next_rev = if req.start_revision > 0 {
            req.start_revision
        } else {
            data.kv.revision() + 1
        };
        let mut w = WatcherState { req, next_rev, tx };
        if w.catch_up(&data.kv) {
            data.watchers.insert(id, w);
        }
        Watch {
            id,
            rx,
            sm: self.0.clone(),
        }
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
        let file = with_crc(
            postcard::to_allocvec(&SnapshotFile {
                meta: meta.clone(),
                data: bytes.to_vec(),
            })
            .map_err(sm_err)?,
        );
        let dir = self.0.dir.clone();
        tokio::task::spawn_blocking(move || write_file_durably(&dir, SNAPSHOT_FILE, &file))
            .await
            .map_err(sm_err)?
            .map_err(sm_err)?;
        self.0.write().snapshot = Some((meta.clone(), bytes.to_vec()));
        Ok(())
    }
}

impl SmShared {
    fn write(&self) -> RwLockWriteGuard<'_, SmData> {
        self.data.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> RwLockReadGuard<'_, SmData> {
        self.data.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let (meta, bytes) = {
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
            (meta, encode_kv(&data.kv))
        };
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
    if let Command::Batch(cmds) = cmd {
        return CommandResponse::Batch(
            cmds.into_iter()
                .map(|c| apply_command(leases, data, c))
                .collect(),
        );
    }
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
        let kv = decode_kv(&bytes).map_err(|e| {
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
mod tests {
    use super::*;
    use crate::store::types::PutRequest;
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
}
