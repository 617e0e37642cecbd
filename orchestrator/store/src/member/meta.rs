//! What a member remembers about itself, `member.json`: its id, name,
//! cluster id and storage engine, written once (its presence means "already
//! part of a cluster": never re-initialize, never re-join).

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::member_id;
use crate::StoreError;
use crate::engine::StorageKind;

pub(super) fn cluster_id_of(names: &[&str]) -> u64 {
    let mut sorted: Vec<&str> = names.to_vec();
    sorted.sort();
    let h = Sha256::digest(format!("herd-cluster:{}", sorted.join(",")).as_bytes());
    u64::from_le_bytes(h[..8].try_into().expect("8 bytes")).max(1)
}

/// What a member remembers about itself (`member.json`).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct MemberMeta {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) cluster_id: u64,
    /// Absent in data dirs written before the engine was recorded.
    #[serde(default = "legacy_storage")]
    pub(super) storage: StorageKind,
}

pub(super) fn legacy_storage() -> StorageKind {
    StorageKind::LEGACY
}

pub(super) const META_FILE: &str = "member.json";

/// Records `name` in a data dir built offline (`store::restore`) as a member
/// of `cluster_id` already: [`Member::start`] then resumes it and never
/// initializes or joins.
pub(crate) fn write_member_file(
    dir: &Path,
    name: &str,
    cluster_id: u64,
    storage: StorageKind,
) -> Result<(), StoreError> {
    write_meta(
        dir,
        &MemberMeta {
            id: member_id(name),
            name: name.to_owned(),
            cluster_id,
            storage,
        },
    )
}

/// Whether `dir` holds a member that started before (it resumes from its
/// own state and ignores `initial_cluster`/`join`).
pub fn has_state(dir: &Path) -> bool {
    dir.join(META_FILE).is_file()
}

pub(super) fn read_meta(dir: &Path) -> Result<Option<MemberMeta>, StoreError> {
    let path = dir.join(META_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&path).map_err(|e| StoreError::io(&path, e))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            path,
            detail: e.to_string(),
        })
}

pub(super) fn write_meta(dir: &Path, meta: &MemberMeta) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(meta).expect("meta serializes");
    let tmp = dir.join("member.json.tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(META_FILE))?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| StoreError::io(dir, e))
}
