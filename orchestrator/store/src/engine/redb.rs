//! The redb engine: entries keyed by index in one table, vote and purge marker in another; one durable write transaction per batch.
//!
//! redb checksums its own pages and commits with a two-phase, fsync'd
//! header swap ([`Durability::Immediate`]), so a crash leaves the last
//! committed transaction. On top of that every stored value carries its own
//! crc32 (`engine::seal`): a value damaged on disk is reported as
//! [`StoreError::Corrupt`] naming the entry's index instead of being served.

use std::io;
use std::path::{Path, PathBuf};

use ::redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use openraft::{LogId, Vote};

use super::{LogEngine, LogOp, Recovered, corrupt, in_use, seal, unseal_entry, unseal_meta};
use crate::StoreError;

pub const DB_FILE: &str = "log.redb";

/// Log entries by index; values are `seal(Entry)`.
const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
/// `vote` → `seal(Vote)`, `purged` → `seal(LogId)`.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const PURGED: &str = "purged";

/// Reads happen only on open (the adapter serves entries from memory), so
/// redb's page cache (1 GiB by default) is kept small.
const CACHE_BYTES: usize = 16 << 20;

/// The open database.
pub struct RedbLog {
    db: Database,
}

/// A redb error while opening, with redb's own corruption findings kept as such.
fn open_err(path: &Path, e: impl Into<::redb::Error>) -> StoreError {
    match e.into() {
        ::redb::Error::Corrupted(detail) => corrupt(path, format!("redb: {detail}")),
        ::redb::Error::Io(e) => StoreError::io(path, e),
        other => StoreError::Io {
            path: path.to_path_buf(),
            source: io::Error::other(other.to_string()),
        },
    }
}

fn write_err(e: impl Into<::redb::Error>) -> io::Error {
    match e.into() {
        ::redb::Error::Io(e) => e,
        other => io::Error::other(format!("redb: {other}")),
    }
}

impl RedbLog {
    /// Opens (or creates) `dir/log.redb` and reads the log back, checking
    /// every value's crc32.
    pub fn open(dir: &Path) -> Result<(RedbLog, Recovered), StoreError> {
        let path: PathBuf = dir.join(DB_FILE);
        let db = match Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
        {
            Ok(db) => db,
            Err(::redb::DatabaseError::DatabaseAlreadyOpen) => return Err(in_use(dir, &path)),
            Err(e) => return Err(open_err(&path, e)),
        };
        // Creates the tables on first open, so the read below finds them.
        let tx = db.begin_write().map_err(|e| open_err(&path, e))?;
        tx.open_table(ENTRIES).map_err(|e| open_err(&path, e))?;
        tx.open_table(META).map_err(|e| open_err(&path, e))?;
        tx.commit().map_err(|e| open_err(&path, e))?;

        let mut recovered = Recovered::default();
        let tx = db.begin_read().map_err(|e| open_err(&path, e))?;
        let meta = tx.open_table(META).map_err(|e| open_err(&path, e))?;
        if let Some(v) = meta.get(VOTE).map_err(|e| open_err(&path, e))? {
            recovered.vote = Some(unseal_meta::<Vote<u64>>(&path, "vote", v.value())?);
        }
        if let Some(v) = meta.get(PURGED).map_err(|e| open_err(&path, e))? {
            recovered.purged = Some(unseal_meta::<LogId<u64>>(&path, "purge marker", v.value())?);
        }
        let entries = tx.open_table(ENTRIES).map_err(|e| open_err(&path, e))?;
        for row in entries.iter().map_err(|e| open_err(&path, e))? {
            let (index, value) = row.map_err(|e| open_err(&path, e))?;
            let index = index.value();
            let entry = unseal_entry(&path, index, value.value())?;
            recovered.entries.insert(index, entry);
        }
        drop(entries);
        drop(meta);
        drop(tx);
        Ok((RedbLog { db }, recovered))
    }
}

impl LogEngine for RedbLog {
    fn persist(&mut self, ops: &[LogOp]) -> io::Result<()> {
        let mut tx = self.db.begin_write().map_err(write_err)?;
        tx.set_durability(Durability::Immediate)
            .map_err(write_err)?;
        {
            let mut entries = tx.open_table(ENTRIES).map_err(write_err)?;
            let mut meta = tx.open_table(META).map_err(write_err)?;
            for op in ops {
                match op {
                    LogOp::Append(batch) => {
                        for e in batch {
                            entries
                                .insert(e.log_id.index, seal(e).as_slice())
                                .map_err(write_err)?;
                        }
                    }
                    LogOp::Vote(v) => {
                        meta.insert(VOTE, seal(v).as_slice()).map_err(write_err)?;
                    }
                    LogOp::Truncate(index) => {
                        entries
                            .retain_in(*index.., |_, _| false)
                            .map_err(write_err)?;
                    }
                    LogOp::Purge(id) => {
                        entries
                            .retain_in(..=id.index, |_, _| false)
                            .map_err(write_err)?;
                        meta.insert(PURGED, seal(id).as_slice())
                            .map_err(write_err)?;
                    }
                }
            }
        }
        tx.commit().map_err(write_err)
    }
}
