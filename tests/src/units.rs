//! A namespace lab for the units role: whole `herd agent` processes, each
//! in its own network namespace (a [`Cluster`] of agents), each running
//! units under its own subtree of a scratch cgroup v2 group of the host
//! (removed, with every process in it, when the lab drops), and
//! `herd units` run on any of the machines.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::bin;
use crate::store::Cluster;

/// A scratch cgroup subtree, emptied (every process killed) and removed on
/// drop. The host's cgroup2 hierarchy is mounted for it under /run:
/// `ip netns exec` remounts /sys, so agents in a namespace do not see
/// /sys/fs/cgroup.
#[derive(Debug)]
pub struct ScratchCgroup(pub PathBuf, PathBuf);

impl ScratchCgroup {
    pub fn new() -> ScratchCgroup {
        crate::require::root();
        let tag = format!("{}-{}", std::process::id(), rand::random::<u32>());
        let mount = PathBuf::from(format!("/run/herd-test-cgroup2-{tag}"));
        std::fs::create_dir_all(&mount)
            .unwrap_or_else(|e| panic!("creating {}: {e}", mount.display()));
        let out = std::process::Command::new("mount")
            .args(["-t", "cgroup2", "cgroup2"])
            .arg(&mount)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mounting cgroup2 on {}: {}",
            mount.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let path = mount.join(format!("herd-test-{tag}"));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        ScratchCgroup(path, mount)
    }
}

impl Default for ScratchCgroup {
    fn default() -> Self {
        ScratchCgroup::new()
    }
}

/// Kills every process under `dir` and removes its groups, deepest first.
pub fn remove_cgroup(dir: &Path) {
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    for _ in 0..50 {
        let populated = std::fs::read_to_string(dir.join("cgroup.events"))
            .is_ok_and(|t| t.contains("populated 1"));
        if !populated {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    fn rm(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    rm(&e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    rm(dir);
}

impl Drop for ScratchCgroup {
    fn drop(&mut self) {
        remove_cgroup(&self.0);
        let _ = std::process::Command::new("umount").arg(&self.1).output();
        let _ = std::fs::remove_dir(&self.1);
    }
}

/// The lab: agents plus their cgroups. Fields drop in order: the agents
/// first, then their units.
#[derive(Debug)]
pub struct UnitsLab {
    pub cluster: Cluster,
    pub cgroups: ScratchCgroup,
}

/// The agent API port every lab machine listens on.
pub const API_PORT: u16 = 2381;

impl UnitsLab {
    /// `n` agents; member `i` gets `metadata(i)` as its `--metadata`,
    /// a 4 s registration TTL and a `grace` before its units move.
    pub fn start(n: usize, grace: &str, metadata: fn(usize) -> String) -> UnitsLab {
        let cgroups = ScratchCgroup::new();
        let root = cgroups.0.clone();
        let grace = grace.to_owned();
        let cluster = Cluster::start_agents_in_namespaces(n, move |i| {
            let mut a = vec![
                "--machine-ttl".into(),
                "4".into(),
                "--units-grace".into(),
                grace.clone(),
                "--units-cgroup-root".into(),
                root.join(format!("m{i}")).display().to_string(),
                "--listen-agent-api".into(),
                format!("{}:{API_PORT}", Cluster::member_ip(i)),
            ];
            let md = metadata(i);
            if !md.is_empty() {
                a.extend(["--metadata".into(), md]);
            }
            a
        });
        let lab = UnitsLab { cluster, cgroups };
        crate::wait::until(
            "every machine registered",
            Duration::from_secs(60),
            Duration::from_millis(300),
            || (lab.machines(0).len() == n).then_some(()),
        );
        lab
    }

    /// Adds a machine that joins through member 0; returns its index.
    pub fn join(&mut self) -> usize {
        let i = self.cluster.join_new_in_namespace(0, Vec::new());
        let n = self.cluster.members.len();
        crate::wait::until(
            "the new machine registered",
            Duration::from_secs(60),
            Duration::from_millis(300),
            || (self.machines(0).len() == n).then_some(()),
        );
        i
    }

    /// `herd units ARGS` run on machine `i`, against its own store member.
    pub fn units(&self, i: usize, args: &[&str]) -> Output {
        self.units_with(i, &[], args)
    }

    /// [`UnitsLab::units`] with `env` set over root's credentials (another
    /// user's certificate, say).
    pub fn units_with(&self, i: usize, env: &[(&str, PathBuf)], args: &[&str]) -> Output {
        let mut cmd = self.cluster.command_on(i, bin::herd());
        cmd.arg("units")
            .args(args)
            .env("HERD_ENDPOINTS", self.cluster.members[i].client.to_string())
            .envs(self.cluster.client_env())
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .env("HERD_LOG", "warn");
        std::process::Command::new("timeout")
            .arg("150")
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .output()
            .expect("running herd units")
    }

    /// [`UnitsLab::units`] that must succeed; its stdout.
    pub fn units_ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.units(i, args);
        assert!(
            out.status.success(),
            "herd units {} on m{i} failed: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn units_json(&self, i: usize, args: &[&str]) -> Value {
        let mut full = args.to_vec();
        full.extend(["-o", "json"]);
        serde_json::from_str(&self.units_ok(i, &full)).expect("-o json is JSON")
    }

    /// Machines as `list-machines` on machine `i` shows them.
    pub fn machines(&self, i: usize) -> Vec<Value> {
        let out = self.units(i, &["list-machines", "-o", "json"]);
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// The machine id of member `i` (its record's hostname is its name).
    pub fn machine_id(&self, i: usize) -> String {
        let name = &self.cluster.members[i].name;
        self.machines(0)
            .iter()
            .find(|m| m["hostname"] == name.as_str())
            .and_then(|m| m["machine_id"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("{name} is not registered"))
    }

    /// The cgroup of `unit` on member `i`.
    pub fn group(&self, i: usize, unit: &str) -> PathBuf {
        self.cgroups.0.join(format!("m{i}")).join(unit)
    }

    /// The processes of `unit` on member `i`.
    pub fn pids(&self, i: usize, unit: &str) -> Vec<u32> {
        std::fs::read_to_string(self.group(i, unit).join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// The members whose cgroup holds processes of `unit`.
    pub fn running_on(&self, unit: &str) -> Vec<usize> {
        (0..self.cluster.members.len())
            .filter(|i| !self.pids(*i, unit).is_empty())
            .collect()
    }

    /// `list-units -o json` rows of `unit`, seen from machine `i`.
    /// (Empty while the store does not answer: callers poll.)
    pub fn rows(&self, i: usize, unit: &str) -> Vec<Value> {
        let out = self.units(i, &["list-units", "-o", "json"]);
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r["unit"] == unit)
            .collect()
    }

    /// A machine dies: its agent and every unit process on it.
    pub fn kill_machine(&mut self, i: usize) {
        self.cluster.kill(i);
        remove_cgroup(&self.cgroups.0.join(format!("m{i}")));
    }
}

/// A process's start time (clock ticks since boot), to tell a restart
/// from the same process.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}
