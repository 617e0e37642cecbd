//! The file engine: one append-only file of crc32-checked records, one `fdatasync` per batch.
//!
//! Record: `len: u32 LE | crc32(payload): u32 LE | payload` where the
//! payload is a postcard-encoded [`Record`]. On open, an incomplete or
//! checksum-failing *last* record is a torn write that was never
//! acknowledged and is cut off; a bad record anywhere else is corruption and
//! opening fails with [`StoreError::Corrupt`]. A purge rewrites the file as
//! vote + purge marker + the live tail (copied, not re-encoded), swapped in
//! with fsync + rename.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use openraft::{Entry, LogId, Vote};
use serde::{Deserialize, Serialize};

use super::{LogEngine, LogOp, Recovered};
use crate::StoreError;
use crate::types::TypeConfig;

pub const LOG_FILE: &str = "raft.log";

/// What the file holds. The variant order is the on-disk format.
#[derive(Serialize, Deserialize)]
enum Record {
    Entry(Entry<TypeConfig>),
    Vote(Vote<u64>),
    /// Entries with index >= this were truncated (conflict with a new leader).
    Truncate(u64),
    /// Entries up to and including this were purged (covered by a snapshot).
    Purge(LogId<u64>),
}

/// [`Record`] by reference, for writing without cloning entries; serializes
/// to the same bytes.
#[derive(Serialize)]
enum RecordRef<'a> {
    Entry(&'a Entry<TypeConfig>),
    Vote(&'a Vote<u64>),
    Truncate(u64),
    Purge(&'a LogId<u64>),
}

fn encode_into(out: &mut Vec<u8>, record: &RecordRef<'_>) {
    let payload = postcard::to_allocvec(record).expect("log records always serialize");
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// What replaying the file yields.
struct Replayed {
    recovered: Recovered,
    /// File offset of the record of each live entry.
    offsets: BTreeMap<u64, u64>,
    /// Length of the valid prefix (a torn tail is beyond it).
    valid: usize,
}

fn replay(bytes: &[u8], path: &Path) -> Result<Replayed, StoreError> {
    let mut data = Recovered::default();
    let mut offsets = BTreeMap::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let torn = |what: &str| {
            tracing::warn!(path = %path.display(), offset = pos, "raft log: {what} at the tail (unacknowledged torn write), cutting it off");
        };
        if rest.len() < 8 {
            torn("short record header");
            break;
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if rest.len() < 8 + len {
            torn("incomplete record");
            break;
        }
        let payload = &rest[8..8 + len];
        let last = pos + 8 + len == bytes.len();
        if crc32fast::hash(payload) != crc {
            if last {
                torn("checksum mismatch");
                break;
            }
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("raft log record at offset {pos} fails its crc32 check"),
            });
        }
        let record: Record = postcard::from_bytes(payload).map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("raft log record at offset {pos} does not decode: {e}"),
        })?;
        match record {
            Record::Entry(e) => {
                offsets.insert(e.log_id.index, pos as u64);
                data.entries.insert(e.log_id.index, e);
            }
            Record::Vote(v) => data.vote = Some(v),
            Record::Truncate(i) => {
                data.entries.split_off(&i);
                offsets.split_off(&i);
            }
            Record::Purge(id) => {
                data.entries = data.entries.split_off(&(id.index + 1));
                offsets = offsets.split_off(&(id.index + 1));
                data.purged = Some(id);
            }
        }
        pos += 8 + len;
    }
    Ok(Replayed {
        recovered: data,
        offsets,
        valid: pos,
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The open log file.
pub struct FileLog {
    file: File,
    path: PathBuf,
    /// Bytes in the file.
    len: u64,
    /// File offset of the record of each live entry: a purge copies the
    /// file from the first live one.
    offsets: BTreeMap<u64, u64>,
    vote: Option<Vote<u64>>,
}

impl FileLog {
    /// Opens (or creates) `dir/raft.log`, replaying it and cutting off a torn tail.
    pub fn open(dir: &Path) -> Result<(FileLog, Recovered), StoreError> {
        let path = dir.join(LOG_FILE);
        let mut bytes = Vec::new();
        if path.exists() {
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| StoreError::io(&path, e))?;
        }
        let replayed = replay(&bytes, &path)?;
        // Readable too: a purge copies the live tail out of it.
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        if replayed.valid < bytes.len() {
            file.set_len(replayed.valid as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| StoreError::io(&path, e))?;
        }
        sync_dir(dir).map_err(|e| StoreError::io(dir, e))?;
        let log = FileLog {
            file,
            path,
            len: replayed.valid as u64,
            offsets: replayed.offsets,
            vote: replayed.recovered.vote,
        };
        Ok((log, replayed.recovered))
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)?;
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Replaces the file with vote + purge marker + every record from the
    /// first live entry on; the old file stays in place until the new one
    /// is durable.
    fn rewrite(&mut self, purged: &LogId<u64>) -> io::Result<()> {
        self.offsets = self.offsets.split_off(&(purged.index + 1));
        let from = self.offsets.values().next().copied().unwrap_or(self.len);
        let mut image = Vec::new();
        if let Some(v) = &self.vote {
            encode_into(&mut image, &RecordRef::Vote(v));
        }
        encode_into(&mut image, &RecordRef::Purge(purged));
        let header = image.len() as u64;
        let mut tail = vec![0u8; (self.len - from) as usize];
        self.file.read_exact_at(&mut tail, from)?;
        image.extend_from_slice(&tail);

        let tmp = self.path.with_extension("tmp");
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&image)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)?;
        self.len = image.len() as u64;
        for off in self.offsets.values_mut() {
            *off = *off - from + header;
        }
        Ok(())
    }
}

impl LogEngine for FileLog {
    fn persist(&mut self, ops: &[LogOp]) -> io::Result<()> {
        let mut buf = Vec::new();
        for op in ops {
            match op {
                LogOp::Append(entries) => {
                    for e in entries {
                        self.offsets
                            .insert(e.log_id.index, self.len + buf.len() as u64);
                        encode_into(&mut buf, &RecordRef::Entry(e));
                    }
                }
                LogOp::Vote(v) => {
                    self.vote = Some(*v);
                    encode_into(&mut buf, &RecordRef::Vote(v));
                }
                LogOp::Truncate(index) => {
                    self.offsets.split_off(index);
                    encode_into(&mut buf, &RecordRef::Truncate(*index));
                }
                LogOp::Purge(id) => {
                    // The rewrite copies from the file: what precedes the
                    // purge must be in it first (the page cache suffices,
                    // the rewrite fsyncs the new file).
                    self.write(&buf)?;
                    buf.clear();
                    self.rewrite(id)?;
                }
            }
        }
        if !buf.is_empty() {
            self.write(&buf)?;
            self.file.sync_data()?;
        }
        Ok(())
    }
}
