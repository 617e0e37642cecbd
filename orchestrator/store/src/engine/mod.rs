//! The storage boundary of the Raft log: one [`LogEngine`] trait, three engines (a file log, redb and fjall).
//!
//! An engine only persists; the openraft adapter (`store::log::LogStore`)
//! keeps the live entries in memory for reads and owns the group-commit
//! writer thread, so it is written once over this trait. The writer hands an
//! engine every operation queued while the previous batch was being made
//! durable ([`LogEngine::persist`]), and acknowledges them to openraft only
//! after `persist` returned.

pub mod file;
pub mod fjall;
pub mod redb;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use openraft::{Entry, LogId, Vote};
use serde::{Deserialize, Serialize};

use super::StoreError;
use super::types::TypeConfig;
use crate::error::ConfigError;

/// Which engine keeps a member's Raft log. Recorded in `member.json`; a data
/// dir is only ever reopened with the engine that created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// herd's own append-only file of crc32-checked records (`raft/raft.log`).
    File,
    /// The redb embedded database (`raft/log.redb`).
    Redb,
    /// The fjall LSM-tree database (the directory `raft/log.fjall/`).
    Fjall,
}

impl StorageKind {
    /// The engine of new data dirs (see ARCHITECTURE.md, Store: storage engine).
    pub const DEFAULT: StorageKind = StorageKind::Fjall;

    /// The engine of data dirs written before the engine was recorded.
    pub const LEGACY: StorageKind = StorageKind::File;

    /// Every engine (a `raft/` dir holding another one's log is refused).
    pub const ALL: [StorageKind; 3] = [StorageKind::File, StorageKind::Redb, StorageKind::Fjall];

    /// The file (for fjall: the directory) this engine keeps in `raft/`.
    pub fn file_name(self) -> &'static str {
        match self {
            StorageKind::File => file::LOG_FILE,
            StorageKind::Redb => redb::DB_FILE,
            StorageKind::Fjall => fjall::DB_DIR,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StorageKind::File => "file",
            StorageKind::Redb => "redb",
            StorageKind::Fjall => "fjall",
        }
    }
}

impl std::fmt::Display for StorageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for StorageKind {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "file" => Ok(StorageKind::File),
            "redb" => Ok(StorageKind::Redb),
            "fjall" => Ok(StorageKind::Fjall),
            other => Err(ConfigError::UnknownStorage(other.to_owned()).into()),
        }
    }
}

/// One change to the persisted log, in the order openraft issued it.
#[derive(Debug, Clone)]
pub enum LogOp {
    Append(Vec<Entry<TypeConfig>>),
    Vote(Vote<u64>),
    /// Entries with index >= this are gone (they conflicted with a new leader).
    Truncate(u64),
    /// Entries up to and including this are gone (covered by a snapshot).
    Purge(LogId<u64>),
}

/// What an engine found on open.
#[derive(Default)]
pub struct Recovered {
    pub vote: Option<Vote<u64>>,
    pub entries: BTreeMap<u64, Entry<TypeConfig>>,
    pub purged: Option<LogId<u64>>,
}

/// A durable home for the Raft log and vote.
pub trait LogEngine: Send + 'static {
    /// Applies `ops` in order; everything is durable (fsync'd / committed)
    /// when this returns `Ok`. Called from the log's writer thread only.
    fn persist(&mut self, ops: &[LogOp]) -> std::io::Result<()>;
}

/// Opens `kind` in `dir`, recovering what it holds. Refuses a directory that
/// holds *another* engine's log: opening it would start from an empty log.
pub fn open(kind: StorageKind, dir: &Path) -> Result<(Box<dyn LogEngine>, Recovered), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    for other in StorageKind::ALL {
        if other != kind && dir.join(other.file_name()).exists() {
            return Err(ConfigError::ForeignLog {
                dir: dir.to_path_buf(),
                found: other,
                asked: kind,
            }
            .into());
        }
    }
    Ok(match kind {
        StorageKind::File => {
            let (engine, recovered) = file::FileLog::open(dir)?;
            (Box::new(engine), recovered)
        }
        StorageKind::Redb => {
            let (engine, recovered) = redb::RedbLog::open(dir)?;
            (Box::new(engine), recovered)
        }
        StorageKind::Fjall => {
            let (engine, recovered) = fjall::FjallLog::open(dir)?;
            (Box::new(engine), recovered)
        }
    })
}

/// The engine's file in `dir` (for size reports).
pub fn path(kind: StorageKind, dir: &Path) -> PathBuf {
    dir.join(kind.file_name())
}

/// An engine's database in `dir` is already open. The data dir lock keeps
/// other processes out, so this is a member of this process that is still
/// shutting down.
pub(crate) fn in_use(dir: &Path, db: &Path) -> StoreError {
    tracing::debug!(log = %db.display(), "the Raft log is still open");
    ConfigError::DataDirInUse(dir.parent().unwrap_or(dir).to_path_buf()).into()
}

pub(crate) fn corrupt(path: &Path, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Decodes a [`seal`]ed vote or purge marker of the database at `path`;
/// `what` names it in the error.
pub(crate) fn unseal_meta<T: for<'de> Deserialize<'de>>(
    path: &Path,
    what: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    unseal(bytes).map_err(|e| corrupt(path, format!("the stored {what} {e}")))
}

/// Decodes the [`seal`]ed entry stored under `index` in the database at
/// `path`, and checks that it is that entry.
pub(crate) fn unseal_entry(
    path: &Path,
    index: u64,
    bytes: &[u8],
) -> Result<Entry<TypeConfig>, StoreError> {
    let entry: Entry<TypeConfig> =
        unseal(bytes).map_err(|e| corrupt(path, format!("raft log entry {index} {e}")))?;
    if entry.log_id.index != index {
        return Err(corrupt(
            path,
            format!(
                "raft log entry stored under index {index} says it is entry {}",
                entry.log_id.index
            ),
        ));
    }
    Ok(entry)
}

/// `crc32 LE | postcard(value)`: how engines checksum what they store.
pub(crate) fn seal<T: Serialize>(value: &T) -> Vec<u8> {
    let payload = postcard::to_allocvec(value).expect("log values always serialize");
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Checks and decodes a [`seal`]ed value; the error says what failed.
pub(crate) fn unseal<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    if bytes.len() < 4 {
        return Err(format!("{} bytes, shorter than its checksum", bytes.len()));
    }
    let (crc, payload) = bytes.split_at(4);
    if crc32fast::hash(payload) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err("fails its crc32 check".into());
    }
    postcard::from_bytes(payload).map_err(|e| format!("does not decode: {e}"))
}

/// Bytes allocated on disk under `path` (a file, or everything in a
/// directory: the fjall engine keeps one). Allocated, not apparent, size:
/// fjall pre-sizes each journal to 64 MiB as a sparse file.
pub fn disk_size(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::read_dir(path).map_or(0, |entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| disk_size(&e.path()))
                .sum()
        }),
        Ok(m) => m.blocks() * 512,
        Err(_) => 0,
    }
}
