//! Each unit's cgroup v2 group under the runner's root: processes are
//! placed in it before they exec, limits are written to it, and stopping
//! kills the whole group (`cgroup.kill`), so nothing a unit forked
//! outlives it.

use std::io;
use std::path::{Path, PathBuf};

/// Why a group could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{setting} needs the {controller} controller, which {root} does not offer (its cgroup.controllers has: {available:?}; on a host with cgroup v1 hierarchies the controller is bound there)"
    )]
    Controller {
        setting: &'static str,
        controller: &'static str,
        root: PathBuf,
        available: String,
    },
    #[error("{root} is on no cgroup2 file system (mount -t cgroup2 none /sys/fs/cgroup)")]
    NoCgroup2 { root: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The resource settings of a unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_max: Option<u64>,
    pub cpu_quota_percent: Option<u32>,
    pub cpu_weight: Option<u64>,
}

impl Limits {
    /// The files to write and their contents (`CPUQuota=50%` is 50 ms of
    /// every 100 ms period).
    pub fn files(&self) -> Vec<(&'static str, &'static str, &'static str, String)> {
        let mut out = Vec::new();
        if let Some(m) = self.memory_max {
            out.push(("MemoryMax", "memory", "memory.max", m.to_string()));
        }
        if let Some(p) = self.cpu_quota_percent {
            out.push((
                "CPUQuota",
                "cpu",
                "cpu.max",
                format!("{} 100000", u64::from(p) * 1000),
            ));
        }
        if let Some(w) = self.cpu_weight {
            out.push(("CPUWeight", "cpu", "cpu.weight", w.to_string()));
        }
        out
    }
}

/// The cgroup2 mount points, from `/proc/self/mounts`.
fn cgroup2_mounts() -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, at, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(at))
        })
        .collect()
}

/// The first cgroup2 mount point.
pub fn cgroup2_mount() -> Option<PathBuf> {
    cgroup2_mounts().into_iter().next()
}

/// The cgroup2 mount that holds `path` (the deepest, if several do).
fn mount_of(path: &Path) -> Option<PathBuf> {
    cgroup2_mounts()
        .into_iter()
        .filter(|m| path.starts_with(m))
        .max_by_key(|m| m.as_os_str().len())
}

/// The runner's root group; every unit gets a child of it.
#[derive(Debug, Clone)]
pub struct Cgroups {
    root: PathBuf,
}

impl Cgroups {
    pub fn new(root: PathBuf) -> Cgroups {
        Cgroups { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn group(&self, unit: &str) -> PathBuf {
        self.root.join(unit)
    }

    /// Creates the root and lets its children use the controllers the
    /// hierarchy offers (each ancestor must delegate them).
    fn ensure_root(&self) -> Result<(), CgroupError> {
        let Some(mount) = mount_of(&self.root) else {
            return Err(CgroupError::NoCgroup2 {
                root: self.root.clone(),
            });
        };
        std::fs::create_dir_all(&self.root).map_err(io_err(&self.root))?;
        let mut chain: Vec<PathBuf> = self
            .root
            .ancestors()
            .take_while(|a| a.starts_with(&mount))
            .map(Path::to_path_buf)
            .collect();
        chain.reverse();
        for dir in chain {
            let available =
                std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            for c in ["memory", "cpu"] {
                if available.split_whitespace().any(|a| a == c) {
                    // Refused where the group holds processes itself (not
                    // ours to move); the unit then finds the controller
                    // missing and says so.
                    let _ = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
                }
            }
        }
        Ok(())
    }

    /// Creates `unit`'s group with `limits` written; refuses limits whose
    /// controller is missing rather than running the unit unbounded.
    pub fn create(&self, unit: &str, limits: &Limits) -> Result<PathBuf, CgroupError> {
        self.ensure_root()?;
        let dir = self.group(unit);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&dir)(e)),
        }
        let enabled =
            std::fs::read_to_string(self.root.join("cgroup.subtree_control")).unwrap_or_default();
        for (setting, controller, file, value) in limits.files() {
            if !enabled.split_whitespace().any(|c| c == controller) {
                return Err(CgroupError::Controller {
                    setting,
                    controller,
                    root: self.root.clone(),
                    available: std::fs::read_to_string(self.root.join("cgroup.controllers"))
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                });
            }
            let path = dir.join(file);
            std::fs::write(&path, &value).map_err(io_err(&path))?;
        }
        Ok(dir)
    }

    /// The processes in `unit`'s group.
    pub fn procs(&self, unit: &str) -> Vec<u32> {
        std::fs::read_to_string(self.group(unit).join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Whether any process is left in `unit`'s group (or below it).
    pub fn populated(&self, unit: &str) -> bool {
        std::fs::read_to_string(self.group(unit).join("cgroup.events"))
            .map(|t| t.lines().any(|l| l.trim() == "populated 1"))
            .unwrap_or(false)
    }

    /// Sends `signal` to every process of the group.
    pub fn signal_all(&self, unit: &str, signal: i32) {
        for pid in self.procs(unit) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(pid as libc::pid_t, signal);
            }
        }
    }

    /// SIGKILLs the whole group at once (no process escapes by forking).
    pub fn kill(&self, unit: &str) {
        let group = self.group(unit);
        if std::fs::write(group.join("cgroup.kill"), "1").is_err() {
            // Kernels before 5.14 have no cgroup.kill.
            self.signal_all(unit, libc::SIGKILL);
        }
    }

    /// Removes an empty group.
    pub fn remove(&self, unit: &str) {
        let _ = std::fs::remove_dir(self.group(unit));
    }

    /// The units that have a group here (from an earlier run).
    pub fn existing(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.ends_with(".service"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `memory.current` and the limits as the kernel has them, for status.
    pub fn describe(&self, unit: &str) -> Vec<(String, String)> {
        let dir = self.group(unit);
        ["memory.current", "memory.max", "cpu.max", "cpu.weight"]
            .iter()
            .filter_map(|f| {
                Some((
                    f.to_string(),
                    std::fs::read_to_string(dir.join(f)).ok()?.trim().to_owned(),
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_become_cgroup_files() {
        let l = Limits {
            memory_max: Some(64 << 20),
            cpu_quota_percent: Some(150),
            cpu_weight: Some(200),
        };
        let files: Vec<(&str, String)> = l.files().into_iter().map(|(_, _, f, v)| (f, v)).collect();
        assert_eq!(
            files,
            [
                ("memory.max", "67108864".to_owned()),
                ("cpu.max", "150000 100000".to_owned()),
                ("cpu.weight", "200".to_owned())
            ]
        );
    }
}
