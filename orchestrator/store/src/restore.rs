//! Disaster recovery: builds a new member's data dir from a client snapshot
//! file (`herd kv snapshot restore`, etcdutl's `snapshot restore`).
//!
//! Every member of the new cluster is restored from the same file with the
//! same member list, and each data dir is what that member would hold had it
//! bootstrapped the cluster and then snapshotted right away: a Raft snapshot
//! at openraft's initial log id (term 0, index 0, where `initialize()` puts
//! the first membership) carrying the whole member list as voters and the
//! file's key space, an empty Raft log (openraft purges it up to the snapshot
//! on start), and a `member.json`, so `herd agent` resumes it instead of
//! initializing it. All members thus agree on membership and log position
//! without talking to each other, and the first election starts the cluster.
//! The key space keeps its revisions, history (down to the source's
//! compaction) and leases, as etcd's restore does; a lease's countdown
//! restarts at its full TTL when the new cluster elects a leader.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openraft::{LogId, Membership, SnapshotMeta, StoredMembership};
use sha2::{Digest, Sha256};

use super::StoreError;
use super::backup::{self, BackupError};
use super::engine::StorageKind;
use super::member::{member_id, write_member_file};
use super::sm::write_snapshot_file;
use super::types::PeerNode;

/// What to restore, and as which member of which new cluster.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// This member's name; must be one of `initial_cluster`.
    pub name: String,
    /// The data dir to create (absent or empty).
    pub data_dir: PathBuf,
    /// Every member of the new cluster: (name, peer address).
    pub initial_cluster: Vec<(String, String)>,
    /// The Raft log engine the data dir is created with.
    pub storage: StorageKind,
}

/// What a restore produced.
#[derive(Debug, Clone)]
pub struct Restored {
    pub member_id: u64,
    pub cluster_id: u64,
    /// The key space's revision (the new cluster continues after it).
    pub revision: i64,
    /// Live keys in the key space.
    pub keys: usize,
    /// The new cluster's members: (name, id, peer address).
    pub members: Vec<(String, u64, String)>,
}

/// Why a restore was refused; nothing is left behind in the data dir.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("member name is empty")]
    EmptyName,
    #[error("--initial-cluster lists no member")]
    NoMembers,
    #[error("--initial-cluster lists member {0:?} more than once")]
    DuplicateName(String),
    #[error("--initial-cluster entry for {0:?} has an empty peer address")]
    EmptyPeer(String),
    #[error("--initial-cluster does not list this member's name {0:?}")]
    NameNotListed(String),
    #[error(
        "data dir {0} already exists and is not empty; restore creates a new data dir \
         (remove it or choose another --data-dir)"
    )]
    DataDirExists(PathBuf),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a usable snapshot: {source}")]
    Snapshot {
        path: PathBuf,
        #[source]
        source: BackupError,
    },
    #[error("writing the data dir: {0}")]
    Store(#[from] StoreError),
}

/// Builds `opts.data_dir` from the snapshot file at `file`, as member
/// `opts.name` of a new cluster of `opts.initial_cluster`. Offline: no
/// server is contacted. The data dir appears whole or not at all (built
/// beside it, fsync'd, then renamed into place).
pub fn restore(file: &Path, opts: &RestoreOptions) -> Result<Restored, RestoreError> {
    check_members(opts)?;
    if !is_absent_or_empty(&opts.data_dir) {
        return Err(RestoreError::DataDirExists(opts.data_dir.clone()));
    }
    let bytes = std::fs::read(file).map_err(|source| RestoreError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let kv = backup::decode(&bytes).map_err(|source| RestoreError::Snapshot {
        path: file.to_path_buf(),
        source,
    })?;
    let cluster_id = restored_cluster_id(&bytes, &opts.initial_cluster);
    let nodes: BTreeMap<u64, PeerNode> = opts
        .initial_cluster
        .iter()
        .map(|(name, peer)| {
            let node = PeerNode {
                name: name.clone(),
                peer_addr: peer.clone(),
                client_addr: None,
            };
            (member_id(name), node)
        })
        .collect();
    let voters: BTreeSet<u64> = nodes.keys().copied().collect();
    // Where `initialize()` puts the first membership entry: identical on
    // every member, so none of them is ahead of or in conflict with another.
    let log_id = LogId::default();
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(Some(log_id), Membership::new(vec![voters], nodes)),
        snapshot_id: format!("restore-{cluster_id:016x}"),
    };

    let building = building_dir(&opts.data_dir);
    if building.exists() {
        // Our own leftover from an interrupted restore of this data dir.
        std::fs::remove_dir_all(&building).map_err(|e| StoreError::io(&building, e))?;
    }
    let built = (|| -> Result<(), StoreError> {
        std::fs::create_dir_all(&building).map_err(|e| StoreError::io(&building, e))?;
        write_snapshot_file(&building.join("raft"), &meta, &kv)?;
        write_member_file(&building, &opts.name, cluster_id, opts.storage)?;
        // An empty data dir is replaced by the rename; a non-empty one was refused above.
        std::fs::rename(&building, &opts.data_dir)
            .map_err(|e| StoreError::io(&opts.data_dir, e))?;
        let parent = parent_of(&opts.data_dir);
        std::fs::File::open(&parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io(&parent, e))
    })();
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&building);
        return Err(e.into());
    }
    Ok(Restored {
        member_id: member_id(&opts.name),
        cluster_id,
        revision: kv.revision(),
        keys: kv.live_keys(),
        members: opts
            .initial_cluster
            .iter()
            .map(|(name, peer)| (name.clone(), member_id(name), peer.clone()))
            .collect(),
    })
}

fn check_members(opts: &RestoreOptions) -> Result<(), RestoreError> {
    if opts.name.is_empty() {
        return Err(RestoreError::EmptyName);
    }
    if opts.initial_cluster.is_empty() {
        return Err(RestoreError::NoMembers);
    }
    let mut seen = BTreeSet::new();
    for (name, peer) in &opts.initial_cluster {
        if name.is_empty() {
            return Err(RestoreError::EmptyName);
        }
        if peer.is_empty() {
            return Err(RestoreError::EmptyPeer(name.clone()));
        }
        if !seen.insert(name.as_str()) {
            return Err(RestoreError::DuplicateName(name.clone()));
        }
    }
    if !seen.contains(opts.name.as_str()) {
        return Err(RestoreError::NameNotListed(opts.name.clone()));
    }
    Ok(())
}

/// A new identity for the restored cluster, the same on every member
/// restored from the same file into the same member list, and different
/// from the source cluster's (which hashes the names alone).
fn restored_cluster_id(file: &[u8], members: &[(String, String)]) -> u64 {
    let mut names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    let mut h = Sha256::new();
    h.update(b"herd-restored-cluster:");
    h.update(names.join(",").as_bytes());
    h.update(b":");
    h.update(Sha256::digest(file));
    let h = h.finalize();
    u64::from_le_bytes(h[..8].try_into().expect("8 bytes")).max(1)
}

fn is_absent_or_empty(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

fn parent_of(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The sibling the data dir is built in before its rename into place.
fn building_dir(data_dir: &Path) -> PathBuf {
    let name = data_dir
        .file_name()
        .map_or_else(|| "data".into(), |n| n.to_string_lossy().into_owned());
    parent_of(data_dir).join(format!(".{name}.restoring"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::KeySpace;
    use crate::sm::StateMachine;
    use crate::types::{Command, PutRequest};

    fn snapshot_file(dir: &Path) -> PathBuf {
        let mut kv = KeySpace::default();
        for i in 0..5 {
            kv.apply(&Command::Put(PutRequest {
                key: b"k".to_vec(),
                value: format!("v{i}").into_bytes(),
                ..PutRequest::default()
            }));
        }
        let path = dir.join("snap.db");
        std::fs::write(&path, backup::encode(&kv)).unwrap();
        path
    }

    fn opts(dir: &Path, name: &str) -> RestoreOptions {
        RestoreOptions {
            name: name.into(),
            data_dir: dir.join(name),
            initial_cluster: ["a", "b", "c"]
                .iter()
                .enumerate()
                .map(|(i, n)| (n.to_string(), format!("127.0.0.1:{}", 7000 + i)))
                .collect(),
            storage: StorageKind::DEFAULT,
        }
    }

    #[test]
    fn restored_members_agree_on_membership_and_log_position() {
        let dir = tempfile::tempdir().unwrap();
        let file = snapshot_file(dir.path());
        let mut seen = Vec::new();
        for name in ["a", "b", "c"] {
            let o = opts(dir.path(), name);
            let r = restore(&file, &o).unwrap();
            assert_eq!(r.revision, 5);
            assert_eq!(r.member_id, member_id(name));
            assert!(super::super::has_state(&o.data_dir));
            assert!(!building_dir(&o.data_dir).exists());
            let sm = StateMachine::open(&o.data_dir.join("raft")).unwrap();
            let data = sm.read();
            assert_eq!(data.kv.revision(), 5);
            let voters: Vec<u64> = data.membership.membership().voter_ids().collect();
            seen.push((r.cluster_id, data.last_applied, voters));
        }
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
        assert_eq!(seen[0].2.len(), 3);
    }

    #[test]
    fn a_different_member_list_is_a_different_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let file = snapshot_file(dir.path());
        let a = restore(&file, &opts(dir.path(), "a")).unwrap();
        let mut other = opts(dir.path(), "a");
        other.data_dir = dir.path().join("a2");
        other.initial_cluster.truncate(2);
        let b = restore(&file, &other).unwrap();
        assert_ne!(a.cluster_id, b.cluster_id);
    }

    #[test]
    fn refusals_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let file = snapshot_file(dir.path());

        let o = opts(dir.path(), "z");
        let err = restore(&file, &o).unwrap_err();
        assert!(matches!(err, RestoreError::NameNotListed(_)), "{err}");
        assert!(!o.data_dir.exists());

        let o = opts(dir.path(), "a");
        std::fs::create_dir_all(&o.data_dir).unwrap();
        std::fs::write(o.data_dir.join("x"), b"x").unwrap();
        let err = restore(&file, &o).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");

        let o = opts(dir.path(), "b");
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[40] ^= 1;
        let bad = dir.path().join("bad.db");
        std::fs::write(&bad, bytes).unwrap();
        let err = restore(&bad, &o).unwrap_err();
        assert!(
            matches!(
                err,
                RestoreError::Snapshot {
                    source: BackupError::Checksum,
                    ..
                }
            ),
            "{err}"
        );
        assert!(!o.data_dir.exists());
        assert!(!building_dir(&o.data_dir).exists());

        let mut o = opts(dir.path(), "c");
        o.initial_cluster.push(("c".into(), "127.0.0.1:1".into()));
        assert!(matches!(
            restore(&file, &o),
            Err(RestoreError::DuplicateName(_))
        ));

        // An existing but empty data dir is fine (etcd accepts it too).
        let o = opts(dir.path(), "c");
        std::fs::create_dir_all(&o.data_dir).unwrap();
        restore(&file, &o).unwrap();
    }
}
