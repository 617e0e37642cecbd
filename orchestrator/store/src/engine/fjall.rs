//! The fjall engine: the log in one LSM keyspace (entries by big-endian index, vote and purge marker beside them); one journal append + fdatasync per batch.
//!
//! A batch is one fjall `WriteBatch` committed with
//! [`PersistMode::SyncData`]: fjall writes the whole batch to its journal
//! (start marker, items, end marker carrying an xxh3 of the batch) and then
//! calls `File::sync_data` (fdatasync) on the journal before `commit`
//! returns (fjall 3.1 `journal::writer::Writer::persist`). Recovery replays
//! the journals, drops an unterminated last batch (never acknowledged) and
//! refuses a batch whose xxh3 does not match; flushed tables carry an xxh3
//! per block. On top of that every stored value carries its own crc32
//! (`engine::seal`), checked on open like the other engines. One gap: fjall
//! also treats a record it cannot *decode* (a damaged tag or length) as the
//! torn tail and cuts the journal there, silently dropping later batches of
//! that journal. Open therefore refuses a log with a hole in its indexes; a
//! cut at the very end looks like a shorter log and cannot be told apart.
//!
//! Everything lives in ONE keyspace: fjall can only delete a journal once
//! every keyspace with data in it has been flushed, so a separate, rarely
//! written meta keyspace would pin old journals on disk until they reach
//! fjall's `max_journaling_size` (512 MiB by default, 64 MiB at least).

use std::io;
use std::path::{Path, PathBuf};

use ::fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use openraft::{LogId, Vote};

use super::{LogEngine, LogOp, Recovered, corrupt, in_use, seal, unseal_entry, unseal_meta};
use crate::StoreError;

/// The database directory inside `raft/`.
pub const DB_DIR: &str = "log.fjall";

const KEYSPACE: &str = "log";
/// Entry keys: this prefix, then the index as big-endian u64 (so they sort
/// by index); values are `seal(Entry)`.
const ENTRY: u8 = b'e';
/// `seal(Vote)`.
const VOTE: &[u8] = b"m/vote";
/// `seal(LogId)` of the last purged entry.
const PURGED: &[u8] = b"m/purged";

/// Reads happen only on open (the adapter serves entries from memory): a
/// small block cache instead of fjall's 32 MiB.
const CACHE_BYTES: u64 = 4 << 20;
/// The live log is a few MiB; fjall's default memtable of 64 MiB would only
/// hold purged entries in memory. (The journal is not bounded by this:
/// fjall 3.1 rotates it only past a fixed 64 MB, so it sits on disk at up to
/// ~65 MiB, as a sparse file pre-sized to 64 MiB.) 4 MiB measured 10 MiB
/// less RSS than 8 MiB at the same speed.
const MEMTABLE_BYTES: u64 = 4 << 20;

fn entry_key(index: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = ENTRY;
    key[1..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The open database; `[low, high)` covers every entry index it may hold,
/// so truncate and purge delete exactly that range without reading it.
pub struct FjallLog {
    db: Database,
    log: Keyspace,
    low: u64,
    high: u64,
}

/// A fjall error while opening, with fjall's own corruption findings kept as such.
fn open_err(path: &Path, e: ::fjall::Error) -> StoreError {
    use ::fjall::{Error, LsmError};
    match e {
        Error::Io(e) | Error::Storage(LsmError::Io(e)) => StoreError::io(path, e),
        Error::JournalRecovery(e) => corrupt(path, format!("fjall journal: {e}")),
        Error::Storage(
            e @ (LsmError::ChecksumMismatch { .. }
            | LsmError::InvalidTrailer
            | LsmError::InvalidHeader(_)
            | LsmError::InvalidTag(_)
            | LsmError::Unrecoverable),
        ) => corrupt(path, format!("fjall table: {e:?}")),
        e @ (Error::InvalidTrailer | Error::InvalidTag(_) | Error::Unrecoverable) => {
            corrupt(path, format!("fjall: {e:?}"))
        }
        other => StoreError::Io {
            path: path.to_path_buf(),
            source: io::Error::other(format!("fjall: {other:?}")),
        },
    }
}

fn write_err(e: ::fjall::Error) -> io::Error {
    match e {
        ::fjall::Error::Io(e) => e,
        other => io::Error::other(format!("fjall: {other:?}")),
    }
}

impl FjallLog {
    /// Opens (or creates) `dir/log.fjall/` and reads the log back, checking
    /// every value's crc32.
    pub fn open(dir: &Path) -> Result<(FjallLog, Recovered), StoreError> {
        let path: PathBuf = dir.join(DB_DIR);
        let db = match Database::builder(&path).cache_size(CACHE_BYTES).open() {
            Ok(db) => db,
            Err(::fjall::Error::Locked) => return Err(in_use(dir, &path)),
            Err(e) => return Err(open_err(&path, e)),
        };
        let log = db
            .keyspace(KEYSPACE, || {
                KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
            })
            .map_err(|e| open_err(&path, e))?;

        let mut recovered = Recovered::default();
        if let Some(v) = log.get(VOTE).map_err(|e| open_err(&path, e))? {
            recovered.vote = Some(unseal_meta::<Vote<u64>>(&path, "vote", &v)?);
        }
        if let Some(v) = log.get(PURGED).map_err(|e| open_err(&path, e))? {
            recovered.purged = Some(unseal_meta::<LogId<u64>>(&path, "purge marker", &v)?);
        }
        for row in log.prefix([ENTRY]) {
            let (key, value) = row.into_inner().map_err(|e| open_err(&path, e))?;
            let index = key
                .get(1..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| corrupt(&path, format!("a raft log key of {} bytes", key.len())))?;
            let entry = unseal_entry(&path, index, &value)?;
            // The log is contiguous; a hole means batches were lost (fjall
            // cuts a journal at its first undecodable record, see above).
            if let Some((&last, _)) = recovered.entries.last_key_value()
                && last + 1 != index
            {
                return Err(corrupt(
                    &path,
                    format!("raft log entries {} to {} are missing", last + 1, index - 1),
                ));
            }
            recovered.entries.insert(index, entry);
        }
        let low = recovered.entries.first_key_value().map_or(0, |(i, _)| *i);
        let high = recovered.entries.last_key_value().map_or(0, |(i, _)| i + 1);
        Ok((FjallLog { db, log, low, high }, recovered))
    }

    /// Writes the memtable out to an LSM table (tests reach the table path with it).
    #[cfg(test)]
    pub(crate) fn flush(&self) -> Result<(), ::fjall::Error> {
        self.log.rotate_memtable_and_wait()
    }
}

/// Adds deletions of the entries in `[from, to)` that `[low, high)` says may exist.
fn remove(
    batch: &mut ::fjall::OwnedWriteBatch,
    log: &Keyspace,
    (low, high): (u64, u64),
    from: u64,
    to: u64,
) {
    for index in from.max(low)..to.min(high) {
        batch.remove(log, entry_key(index));
    }
}

impl LogEngine for FjallLog {
    fn persist(&mut self, ops: &[LogOp]) -> io::Result<()> {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        // The bounds move only once the batch is durable.
        let (mut low, mut high) = (self.low, self.high);
        for op in ops {
            match op {
                LogOp::Append(entries) => {
                    for e in entries {
                        let index = e.log_id.index;
                        batch.insert(&self.log, entry_key(index), seal(e));
                        if low == high {
                            (low, high) = (index, index + 1);
                        } else {
                            low = low.min(index);
                            high = high.max(index + 1);
                        }
                    }
                }
                LogOp::Vote(v) => batch.insert(&self.log, VOTE, seal(v)),
                LogOp::Truncate(index) => {
                    remove(&mut batch, &self.log, (low, high), *index, u64::MAX);
                    high = high.min((*index).max(low));
                }
                LogOp::Purge(id) => {
                    let end = id.index.saturating_add(1);
                    remove(&mut batch, &self.log, (low, high), 0, end);
                    low = low.max(end);
                    high = high.max(low);
                    batch.insert(&self.log, PURGED, seal(id));
                }
            }
        }
        // fjall writes nothing for an empty batch, so there is nothing to sync.
        batch.commit().map_err(write_err)?;
        (self.low, self.high) = (low, high);
        Ok(())
    }
}
