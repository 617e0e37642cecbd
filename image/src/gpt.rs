//! Reads a GPT partition table (from a disk image or a block device) to find partitions by name.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

const SECTOR: u64 = 512;

#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no GPT (signature missing at LBA 1)")]
    NoGpt { path: PathBuf },
    #[error("{path}: no partition named {name:?}")]
    NoPartition { path: PathBuf, name: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    pub name: String,
    pub index: u32,
    /// Byte offset and length on the disk.
    pub offset: u64,
    pub size: u64,
}

pub fn partitions(disk: &Path) -> Result<Vec<Partition>, GptError> {
    let io = |source| GptError::Io {
        path: disk.into(),
        source,
    };
    let mut f = std::fs::File::open(disk).map_err(io)?;
    let mut hdr = [0u8; 92];
    f.seek(SeekFrom::Start(SECTOR)).map_err(io)?;
    f.read_exact(&mut hdr).map_err(io)?;
    if &hdr[..8] != b"EFI PART" {
        return Err(GptError::NoGpt { path: disk.into() });
    }
    let u32le = |o: usize| u32::from_le_bytes(hdr[o..o + 4].try_into().expect("4 bytes"));
    let entries_lba = u64::from_le_bytes(hdr[72..80].try_into().expect("8 bytes"));
    let (count, size) = (u32le(80).min(256), u32le(84).clamp(128, 1024) as usize);
    let mut table = vec![0u8; count as usize * size];
    f.seek(SeekFrom::Start(entries_lba * SECTOR)).map_err(io)?;
    f.read_exact(&mut table).map_err(io)?;
    let mut out = Vec::new();
    for (i, e) in table.chunks(size).enumerate() {
        if e[..16].iter().all(|b| *b == 0) {
            continue;
        }
        let first = u64::from_le_bytes(e[32..40].try_into().expect("8 bytes"));
        let last = u64::from_le_bytes(e[40..48].try_into().expect("8 bytes"));
        let name: Vec<u16> = e[56..128]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|c| *c != 0)
            .collect();
        out.push(Partition {
            name: String::from_utf16_lossy(&name),
            index: i as u32 + 1,
            offset: first * SECTOR,
            size: (last + 1 - first) * SECTOR,
        });
    }
    Ok(out)
}

pub fn find(disk: &Path, name: &str) -> Result<Partition, GptError> {
    partitions(disk)?
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| GptError::NoPartition {
            path: disk.into(),
            name: name.into(),
        })
}
