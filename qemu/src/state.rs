//! The lab's state file (`LAB/lab.json`): which namespace, which VMs, their
//! PIDs, MACs and disks. Everything `herd lab down` must find after a crash
//! of `herd lab up` is written here before it is created.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::layout::MachineId;

const FILE: &str = "lab.json";
const FORMAT: u32 = 1;

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a herd lab state file: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "{path} has format {found}, this herd understands {FORMAT}: run `herd lab down` with the herd that created it"
    )]
    Format { path: PathBuf, found: u32 },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One lab, as recorded on disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LabState {
    pub format: u32,
    /// The network namespace holding the bridge, taps, VMs and servers.
    pub netns: String,
    /// The join token every machine's cloud-config carries.
    pub token: String,
    /// Directory holding `vmlinuz` and `initramfs`.
    pub image_dir: PathBuf,
    /// Whether machines install to disk on first boot.
    pub install: bool,
    /// Whether the machines' OS carries Docker (and gets the memory for it).
    #[serde(default)]
    pub docker: bool,
    /// The provisioning server (`herd pxe serve`), once started.
    pub pxe_pid: Option<u32>,
    /// The router-advertisement sender, once started.
    pub ra_pid: Option<u32>,
    /// The lab's container registry (`docker-registry`), once started.
    #[serde(default)]
    pub registry_pid: Option<u32>,
    /// Milliseconds since the epoch when `herd lab up` started.
    pub started_ms: u64,
    pub machines: Vec<MachineState>,
}

/// One VM of the lab.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MachineState {
    pub id: MachineIdRepr,
    pub mac: String,
    pub ip: std::net::Ipv4Addr,
    pub tap: String,
    pub disk: PathBuf,
    /// QEMU's PID while powered on.
    pub pid: Option<u32>,
    /// Milliseconds since the epoch of the last power-on.
    pub powered_on_ms: Option<u64>,
}

/// `MachineId` as stored: its number.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct MachineIdRepr(pub u8);

impl MachineState {
    /// The machine's id (stored numbers are validated on load).
    pub fn id(&self) -> MachineId {
        MachineId::new(self.id.0).expect("validated in LabState::load")
    }
}

impl LabState {
    pub fn new(netns: String, token: String, image_dir: PathBuf, install: bool) -> LabState {
        LabState {
            format: FORMAT,
            netns,
            token,
            image_dir,
            install,
            docker: false,
            pxe_pid: None,
            ra_pid: None,
            registry_pid: None,
            started_ms: now_ms(),
            machines: Vec::new(),
        }
    }

    /// Path of the state file in `lab_dir`.
    pub fn path(lab_dir: &Path) -> PathBuf {
        lab_dir.join(FILE)
    }

    /// Reads the state file; `None` when there is no lab in `lab_dir`.
    pub fn load(lab_dir: &Path) -> Result<Option<LabState>, StateError> {
        let path = Self::path(lab_dir);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let state: LabState =
            serde_json::from_slice(&bytes).map_err(|source| StateError::Parse {
                path: path.clone(),
                source,
            })?;
        if state.format != FORMAT {
            return Err(StateError::Format {
                path,
                found: state.format,
            });
        }
        if let Some(bad) = state
            .machines
            .iter()
            .find(|m| MachineId::new(m.id.0).is_none())
        {
            return Err(StateError::Parse {
                path,
                source: serde::de::Error::custom(format!(
                    "machine number {} out of range",
                    bad.id.0
                )),
            });
        }
        Ok(Some(state))
    }

    /// Writes the state file atomically and durably (temp file, fsync,
    /// rename, fsync of the directory), so a crash leaves the old or the new
    /// state, never half of one.
    pub fn save(&self, lab_dir: &Path) -> Result<(), StateError> {
        let path = Self::path(lab_dir);
        let tmp = lab_dir.join(format!("{FILE}.tmp"));
        let err = |source| StateError::Write {
            path: path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(self).expect("state serialises");
        // It holds the join token: readable by its owner only.
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(err)?
        };
        file.write_all(&json).map_err(err)?;
        file.sync_all().map_err(err)?;
        fs::rename(&tmp, &path).map_err(err)?;
        fs::File::open(lab_dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        Ok(())
    }

    /// Removes the state file (after `herd lab down` removed everything).
    pub fn remove(lab_dir: &Path) -> Result<(), StateError> {
        let path = Self::path(lab_dir);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Write { path, source }),
        }
    }

    pub fn machine(&self, id: MachineId) -> Option<&MachineState> {
        self.machines.iter().find(|m| m.id.0 == id.number())
    }

    pub fn machine_mut(&mut self, id: MachineId) -> Option<&mut MachineState> {
        self.machines.iter_mut().find(|m| m.id.0 == id.number())
    }

    /// The next unused machine number.
    pub fn next_id(&self) -> Option<MachineId> {
        let highest = self.machines.iter().map(|m| m.id.0).max().unwrap_or(0);
        MachineId::new(highest.checked_add(1)?)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LabState {
        let mut s = LabState::new("herd-lab".into(), "tok".into(), "/img".into(), false);
        let id = MachineId::new(1).unwrap();
        s.machines.push(MachineState {
            id: MachineIdRepr(1),
            mac: id.mac(),
            ip: id.ip(),
            tap: id.tap(),
            disk: "/lab/m1/disk.qcow2".into(),
            pid: Some(42),
            powered_on_ms: Some(7),
        });
        s
    }

    #[test]
    fn state_round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(LabState::load(dir.path()).unwrap(), None);
        let s = sample();
        s.save(dir.path()).unwrap();
        assert_eq!(LabState::load(dir.path()).unwrap(), Some(s.clone()));
        assert_eq!(s.next_id(), MachineId::new(2));
        LabState::remove(dir.path()).unwrap();
        LabState::remove(dir.path()).unwrap();
        assert_eq!(LabState::load(dir.path()).unwrap(), None);
    }

    #[test]
    fn corrupt_or_foreign_state_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(LabState::path(dir.path()), b"{\"format\": 1").unwrap();
        let e = LabState::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("is not a herd lab state file"), "{e}");

        let mut s = serde_json::to_value(sample()).unwrap();
        s["machines"][0]["id"] = 0.into();
        fs::write(LabState::path(dir.path()), s.to_string()).unwrap();
        let e = LabState::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("out of range"), "{e}");

        let mut s = serde_json::to_value(sample()).unwrap();
        s["format"] = 9.into();
        fs::write(LabState::path(dir.path()), s.to_string()).unwrap();
        let e = LabState::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("format 9"), "{e}");
    }
}
