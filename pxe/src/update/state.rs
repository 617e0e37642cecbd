//! The update server's durable state, `<state-dir>/updates/state.json`:
//! releases, groups (release, policy, halt, recent grants) and every
//! machine's update record. Written whole, temp file + fsync + rename +
//! fsync of the directory, as the inventory is; the directory is locked
//! (`flock`) by whoever opens it, so a running server and an offline
//! `herd pxe publish --state-dir` never write at once.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use herd_omaha::{Cause, EventResult, EventType, Version};
use serde::{Deserialize, Serialize};

use super::policy::Policy;

/// Events kept per machine (the newest).
pub const EVENTS_KEPT: usize = 20;

/// Everything the update server knows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatesState {
    pub releases: BTreeMap<String, Release>,
    pub groups: BTreeMap<String, Group>,
    pub machines: BTreeMap<String, MachineUpdate>,
}

/// A published release: its files live in `releases/<version>/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub version: Version,
    pub payload: FileInfo,
    pub signature: FileInfo,
    /// The hex ed25519 key the payload's signature verified with.
    pub public_key: String,
    pub kernel: String,
    /// Unix seconds.
    pub published_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileInfo {
    pub size: u64,
    /// Hex SHA-256.
    pub sha256: String,
}

/// A group (Omaha's track): the release its machines should run and how
/// it rolls out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub id: String,
    pub release: Option<Version>,
    pub policy: Policy,
    /// Set by safe mode when an update failed or timed out; cleared by
    /// `herd pxe updates resume`.
    pub halted: Option<Halt>,
    /// When updates started (unix seconds, machine), for the per-period
    /// limit; older than the period are dropped.
    #[serde(default)]
    pub grants: Vec<(u64, String)>,
}

impl Group {
    pub fn new(id: &str) -> Group {
        Group {
            id: id.to_owned(),
            release: None,
            policy: Policy::default(),
            halted: None,
            grants: Vec::new(),
        }
    }
}

/// Why a group's rollout stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Halt {
    pub at: u64,
    pub machine: String,
    pub version: Version,
    /// The failure's error code (herd's [`Cause`] codes, or another updater's).
    pub error_code: Option<i32>,
}

impl Halt {
    pub fn reason(&self) -> String {
        format!(
            "{} failed on {}: {}",
            self.version,
            self.machine,
            describe_error(self.error_code)
        )
    }
}

/// A failure's error code in words.
pub fn describe_error(code: Option<i32>) -> String {
    match code {
        Some(c) => match Cause::from_code(c) {
            Some(cause) => cause.to_string(),
            None => format!("errorcode {c}"),
        },
        None => "no error code".into(),
    }
}

/// Where a machine is in an update, as the server knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateState {
    /// Nothing to do (or nothing offered yet).
    Idle,
    /// Offered a release; downloading and checking it, writing its slot.
    Downloading,
    /// The slot is written and flipped: waiting for the reboot lock,
    /// draining, rebooting.
    Rebooting,
    /// Back with the new version, proving it is healthy.
    Verifying,
    /// The new version runs and is healthy.
    Done,
    /// The update failed before the machine switched (bad download, bad
    /// signature, timeout…); it still runs its old version.
    Failed,
    /// The new version booted but was not healthy: the machine went back
    /// to its old slot by itself.
    RolledBack,
}

impl UpdateState {
    /// Whether an update is under way.
    pub fn in_flight(self) -> bool {
        matches!(
            self,
            UpdateState::Downloading | UpdateState::Rebooting | UpdateState::Verifying
        )
    }
}

impl std::fmt::Display for UpdateState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UpdateState::Idle => "idle",
            UpdateState::Downloading => "downloading",
            UpdateState::Rebooting => "rebooting",
            UpdateState::Verifying => "verifying",
            UpdateState::Done => "done",
            UpdateState::Failed => "failed",
            UpdateState::RolledBack => "rolled-back",
        })
    }
}

/// One machine, keyed by its Omaha machine id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineUpdate {
    pub machine_id: String,
    pub group: String,
    /// The version it last said it runs.
    pub version: Version,
    pub boot_id: String,
    pub state: UpdateState,
    /// The release it was offered.
    pub target: Option<Version>,
    /// When it was offered `target` (unix seconds).
    pub granted_at: Option<u64>,
    /// Versions that failed on this machine, with the error code: never
    /// offered to it again.
    #[serde(default)]
    pub failed: BTreeMap<String, Option<i32>>,
    #[serde(default)]
    pub events: VecDeque<EventRecord>,
    /// Unix seconds of its last request.
    pub last_seen: u64,
}

/// An event as received (or made up by the server: a timeout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRecord {
    pub at: u64,
    pub kind: EventType,
    pub result: EventResult,
    /// The version the event is about.
    pub version: Option<Version>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
}

impl EventRecord {
    /// One line for tables: `3/2 0.2.0` or `3/0 0.3.0: <cause>`.
    pub fn summary(&self) -> String {
        let mut s = format!("{}/{}", self.kind.code(), self.result.code());
        if let Some(v) = &self.version {
            s.push_str(&format!(" {v}"));
        }
        match (self.cause, self.error_code) {
            (Some(c), _) => s.push_str(&format!(": {c}")),
            (None, Some(code)) => s.push_str(&format!(": errorcode {code}")),
            _ => {}
        }
        s
    }
}

impl MachineUpdate {
    pub fn record(&mut self, event: EventRecord) {
        self.events.push_back(event);
        while self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
    }

    pub fn last_event(&self) -> Option<&EventRecord> {
        self.events.back()
    }
}

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid update state: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{0} is in use by another process (a running `herd pxe serve`?): talk to that server with --server instead"
    )]
    Locked(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The `updates/` directory of a state dir, locked for as long as it lives.
#[derive(Debug)]
pub struct StateDir {
    pub dir: PathBuf,
    _lock: std::fs::File,
}

impl StateDir {
    /// Creates `<state_dir>/updates/` if needed and locks it. Blocking.
    pub fn open(state_dir: &Path) -> Result<StateDir, StateError> {
        use std::os::fd::AsRawFd;
        let dir = state_dir.join("updates");
        std::fs::create_dir_all(dir.join("releases")).map_err(io(&dir))?;
        let lock_path = dir.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(StateError::Locked(dir));
        }
        Ok(StateDir { dir, _lock: lock })
    }

    pub fn release_dir(&self, version: &Version) -> PathBuf {
        self.dir.join("releases").join(version.as_str())
    }

    pub fn uploads(&self) -> PathBuf {
        self.dir.join("uploads")
    }

    /// The saved state (empty when there is none yet). Blocking.
    pub fn load(&self) -> Result<UpdatesState, StateError> {
        let path = self.dir.join("state.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| StateError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UpdatesState::default()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Replaces the saved state with `state`, durably. Blocking.
    pub fn save(&self, state: &UpdatesState) -> Result<(), StateError> {
        use std::io::Write;
        let path = self.dir.join("state.json");
        let tmp = self.dir.join("state.json.tmp");
        let bytes = serde_json::to_vec_pretty(state).expect("the state serializes");
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        sync_dir(&self.dir)
    }
}

/// fsyncs a directory, so the renames into it survive power loss.
pub fn sync_dir(dir: &Path) -> Result<(), StateError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_a_reopen_and_the_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(dir.path()).unwrap();
        assert_eq!(sd.load().unwrap(), UpdatesState::default());
        let mut s = UpdatesState::default();
        s.groups.insert("stable".into(), Group::new("stable"));
        sd.save(&s).unwrap();
        let e = StateDir::open(dir.path()).unwrap_err();
        assert!(matches!(e, StateError::Locked(_)), "{e}");
        drop(sd);
        let sd = StateDir::open(dir.path()).unwrap();
        assert_eq!(sd.load().unwrap(), s);
        std::fs::write(sd.dir.join("state.json"), b"{\"releases\": 3}").unwrap();
        let e = sd.load().unwrap_err().to_string();
        assert!(
            e.contains("state.json") && e.contains("not a valid update state"),
            "{e}"
        );
    }
}
