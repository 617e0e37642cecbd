//! What the update role remembers across reboots, in `<data-dir>/state.json`
//! on the STATE partition (shared by both slots): where it is in an update
//! (the phase carries the offer, the slot, the reboot lock's lease), the
//! Omaha events not yet delivered, and the versions that failed here.
//! Written before each step it describes takes effect elsewhere (temp
//! file, fsync, rename, fsync of the directory), so a power loss at any
//! point resumes from a phase that is true.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use herd_omaha::{EventResult, EventType};
use serde::{Deserialize, Serialize};

/// An offered update, as the server described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub version: String,
    /// Base URLs; files are fetched from `urls[0] + name`.
    pub urls: Vec<String>,
    pub payload: FileSpec,
    pub signature: FileSpec,
}

/// One file of an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSpec {
    pub name: String,
    pub size: u64,
    /// Hex SHA-256.
    pub sha256: String,
}

/// Which slot (`USR-A`/`USR-B`), by label.
pub type SlotLabel = String;

/// Where the role is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum Phase {
    /// Checking for updates now and then.
    Idle,
    /// Fetching and checking the offer's files.
    Downloading { offer: Offer },
    /// The passive slot holds the new version; no boot entry yet.
    Written {
        offer: Offer,
        slot: SlotLabel,
        from: String,
    },
    /// The cluster's reboot lock is ours (attached to `lease`).
    Locked {
        offer: Offer,
        slot: SlotLabel,
        from: String,
        lease: i64,
    },
    /// The slot's boot entry is on trial: the next boot tries it.
    Activated {
        offer: Offer,
        slot: SlotLabel,
        lease: i64,
        from: String,
    },
    /// Booted the slot on trial; proving it healthy since `started_at`
    /// (unix seconds) of boot `boot_id`.
    Gating {
        version: String,
        slot: SlotLabel,
        lease: Option<i64>,
        from: Option<String>,
        boot_id: String,
        started_at: u64,
    },
    /// The slot on trial was not healthy in time: its tries were used up
    /// and the machine reboots into the old slot.
    GateFailed {
        version: String,
        slot: SlotLabel,
        lease: Option<i64>,
        reason: String,
    },
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Downloading { .. } => "downloading",
            Phase::Written { .. } => "waiting-for-lock",
            Phase::Locked { .. } => "draining",
            Phase::Activated { .. } => "rebooting",
            Phase::Gating { .. } => "verifying",
            Phase::GateFailed { .. } => "rolling-back",
        }
    }

    /// The version being installed.
    pub fn target(&self) -> Option<&str> {
        match self {
            Phase::Idle => None,
            Phase::Downloading { offer }
            | Phase::Written { offer, .. }
            | Phase::Locked { offer, .. }
            | Phase::Activated { offer, .. } => Some(&offer.version),
            Phase::Gating { version, .. } | Phase::GateFailed { version, .. } => Some(version),
        }
    }

    /// The reboot lock's lease, while the lock is (or may still be) ours.
    pub fn lease(&self) -> Option<i64> {
        match self {
            Phase::Locked { lease, .. } | Phase::Activated { lease, .. } => Some(*lease),
            Phase::Gating { lease, .. } | Phase::GateFailed { lease, .. } => *lease,
            _ => None,
        }
    }
}

/// An Omaha event waiting to be delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub kind: EventType,
    pub result: EventResult,
    pub error_code: Option<i32>,
    pub previous: Option<String>,
    pub next: Option<String>,
}

/// Everything remembered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalState {
    pub phase: Phase,
    #[serde(default)]
    pub pending: Vec<Pending>,
    /// Versions that failed here: never tried again.
    #[serde(default)]
    pub failed: BTreeSet<String>,
    /// A reboot lock lease to give back (and the lock and drain record
    /// with it) as soon as the store answers.
    #[serde(default)]
    pub release: Option<i64>,
}

impl Default for LocalState {
    fn default() -> LocalState {
        LocalState {
            phase: Phase::Idle,
            pending: Vec::new(),
            failed: BTreeSet::new(),
            release: None,
        }
    }
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not the update role's state: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LocalError + '_ {
    move |source| LocalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The state file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

/// Loads the state (the default when there is none). Blocking.
pub fn load(dir: &Path) -> Result<LocalState, LocalError> {
    let p = path(dir);
    match std::fs::read(&p) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|source| LocalError::Corrupt { path: p, source })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LocalState::default()),
        Err(e) => Err(io(&p)(e)),
    }
}

/// Saves the state durably. Blocking.
pub fn save(dir: &Path, state: &LocalState) -> Result<(), LocalError> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let p = path(dir);
    let tmp = dir.join("state.json.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&serde_json::to_vec_pretty(state).expect("the state serializes"))
        .map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &p).map_err(io(&p))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_survive_a_save_and_the_file_names_itself_when_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), LocalState::default());
        let offer = Offer {
            version: "0.2.0".into(),
            urls: vec!["http://s/v1/update/releases/0.2.0/".into()],
            payload: FileSpec {
                name: "update.payload".into(),
                size: 10,
                sha256: "ab".repeat(32),
            },
            signature: FileSpec {
                name: "update.payload.sig".into(),
                size: 64,
                sha256: "cd".repeat(32),
            },
        };
        let mut s = LocalState {
            phase: Phase::Activated {
                offer,
                slot: "USR-B".into(),
                lease: 0x1234,
                from: "0.1.0".into(),
            },
            ..Default::default()
        };
        s.failed.insert("0.3.0".into());
        save(dir.path(), &s).unwrap();
        assert_eq!(load(dir.path()).unwrap(), s);
        assert_eq!(s.phase.lease(), Some(0x1234));
        assert_eq!(s.phase.target(), Some("0.2.0"));
        std::fs::write(path(dir.path()), b"{").unwrap();
        assert!(
            load(dir.path())
                .unwrap_err()
                .to_string()
                .contains("state.json")
        );
    }
}
