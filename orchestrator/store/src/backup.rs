//! The client snapshot file (`etcdctl snapshot save`, `herd kv snapshot`):
//! one member's key space at one revision, in etcd's framing.
//!
//! Layout: `HERDSNAP`, format version (u32 LE), body length (u64 LE), the
//! key space (postcard), zero padding to a multiple of 512 bytes, then the
//! sha256 of everything before it. etcd's own file is a bbolt database
//! (pages of 512-byte multiples) followed by its sha256, and etcdctl checks
//! exactly that shape (`size % 512 == 32`) before it keeps the file; the
//! contents are herd's own, so `etcdctl snapshot status/restore` (which
//! open bbolt) do not read it: `herd kv snapshot status` and `herd kv
//! snapshot restore` ([`super::restore`]) do.

use sha2::{Digest, Sha256};

use super::mvcc::KeySpace;

const MAGIC: &[u8; 8] = b"HERDSNAP";
const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 8;
const PAGE: usize = 512;
const SHA: usize = 32;

/// Why a snapshot file was refused.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("snapshot file is too short ({0} bytes) to be a herd snapshot")]
    Truncated(usize),
    #[error("snapshot file fails its sha256 check (corrupt or incomplete)")]
    Checksum,
    #[error("not a herd snapshot file (no HERDSNAP header)")]
    NotHerd,
    #[error("herd snapshot format version {0} is not supported (this herd reads {VERSION})")]
    Version(u32),
    #[error("snapshot body does not decode: {0}")]
    Decode(String),
}

/// Encodes `kv` as a snapshot file.
pub fn encode(kv: &KeySpace) -> Vec<u8> {
    let body = postcard::to_allocvec(kv).expect("key space always serializes");
    let mut out = Vec::with_capacity(HEADER + body.len() + PAGE + SHA);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    out.resize(out.len().div_ceil(PAGE) * PAGE, 0);
    let sha = Sha256::digest(&out);
    out.extend_from_slice(&sha);
    out
}

/// Checks and decodes a snapshot file.
pub fn decode(bytes: &[u8]) -> Result<KeySpace, BackupError> {
    if bytes.len() < HEADER + SHA {
        return Err(BackupError::Truncated(bytes.len()));
    }
    let (data, sha) = bytes.split_at(bytes.len() - SHA);
    if Sha256::digest(data).as_slice() != sha {
        return Err(BackupError::Checksum);
    }
    if &data[..8] != MAGIC {
        return Err(BackupError::NotHerd);
    }
    let version = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(BackupError::Version(version));
    }
    let len = u64::from_le_bytes(data[12..20].try_into().expect("8 bytes"));
    let body = usize::try_from(len)
        .ok()
        .and_then(|len| data[HEADER..].get(..len))
        .ok_or(BackupError::Truncated(bytes.len()))?;
    postcard::from_bytes(body).map_err(|e| BackupError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Command, PutRequest};

    fn sample() -> KeySpace {
        let mut kv = KeySpace::default();
        for i in 0..10 {
            kv.apply(&Command::Put(PutRequest {
                key: format!("k{i}").into(),
                value: vec![b'v'; i * 100],
                ..PutRequest::default()
            }));
        }
        kv
    }

    #[test]
    fn round_trips_in_etcds_framing() {
        let kv = sample();
        let bytes = encode(&kv);
        // etcdctl keeps a file only when `size % 512 == 32`.
        assert_eq!(bytes.len() % PAGE, SHA);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.revision(), 10);
        assert_eq!(back.hash_kv(0).unwrap(), kv.hash_kv(0).unwrap());
    }

    #[test]
    fn refuses_damaged_or_foreign_files() {
        let mut bytes = encode(&sample());
        bytes[30] ^= 1;
        assert!(matches!(decode(&bytes), Err(BackupError::Checksum)));
        assert!(matches!(
            decode(&bytes[..10]),
            Err(BackupError::Truncated(10))
        ));
        let mut foreign = vec![0u8; 512];
        foreign.extend_from_slice(&Sha256::digest(&foreign));
        assert!(matches!(decode(&foreign), Err(BackupError::NotHerd)));
    }
}
