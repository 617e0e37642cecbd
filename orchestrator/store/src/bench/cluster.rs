//! Starts a 3-member herd or etcd cluster on loopback for the benchmark and
//! stops it (the child processes die with the [`Cluster`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use herd_client::Client;
use herd_client::proto::etcdserverpb::{PutRequest, StatusRequest};

pub use crate::launch::Server as System;

/// A running cluster: its members' processes, client endpoints and data dirs.
#[derive(Debug)]
pub struct Cluster {
    pub endpoints: Vec<String>,
    /// How clients reach it (TLS with a root certificate, or plaintext).
    pub credentials: herd_client::Credentials,
    data_dirs: Vec<PathBuf>,
    children: Vec<Child>,
}

impl Cluster {
    /// Starts `members` members of `system` (herd with the `storage` engine)
    /// under `dir` and waits until a write succeeds.
    pub async fn start(
        system: System,
        storage: crate::StorageKind,
        members: usize,
        dir: &Path,
        etcd: &Path,
        tls: bool,
    ) -> anyhow::Result<Cluster> {
        let specs = crate::launch::members(members, &system.to_string(), dir);
        let (security, credentials) = if tls {
            let pki = crate::launch::test_pki(dir, &specs)
                .context("making the cluster's certificates")?;
            (
                pki.security,
                herd_client::Credentials::Tls {
                    ca_pem: pki.ca_pem,
                    identity: Some(pki.root),
                },
            )
        } else {
            (
                crate::launch::LaunchSecurity::Plaintext {
                    token: "bench".into(),
                },
                herd_client::Credentials::Plaintext,
            )
        };
        let binary = match system {
            System::Herd => std::env::current_exe().context("locating the herd binary")?,
            System::Etcd => etcd.to_path_buf(),
        };
        let extra = match system {
            System::Herd => vec!["--storage".to_owned(), storage.name().to_owned()],
            System::Etcd => Vec::new(),
        };
        let mut children = Vec::new();
        for m in &specs {
            std::fs::create_dir_all(&m.data_dir)
                .with_context(|| format!("creating {}", m.data_dir.display()))?;
            let log = std::fs::File::create(dir.join(format!("{}.log", m.name)))?;
            let mut cmd = Command::from(crate::launch::command(
                system,
                &binary,
                m,
                crate::launch::Entry::Together(&specs),
                &security,
                &extra,
            ));
            cmd.stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log))
                .kill_on_drop(true);
            children.push(
                cmd.spawn()
                    .with_context(|| format!("starting {system} member {} ({cmd:?})", m.name))?,
            );
        }
        let data_dirs = specs.iter().map(|m| m.data_dir.clone()).collect();
        let client: Vec<SocketAddr> = specs.iter().map(|m| m.client).collect();
        let cluster = Cluster {
            endpoints: client.iter().map(ToString::to_string).collect(),
            credentials,
            data_dirs,
            children,
        };
        cluster
            .wait_ready(Duration::from_secs(30))
            .await
            .with_context(|| format!("{system} cluster under {} did not come up", dir.display()))?;
        Ok(cluster)
    }

    async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for endpoint in &self.endpoints {
            loop {
                let attempt = async {
                    let client =
                        Client::connect_with(std::slice::from_ref(endpoint), &self.credentials)
                            .await?;
                    client
                        .kv()
                        .put(PutRequest {
                            key: super::load::READ_KEY.as_bytes().to_vec(),
                            value: b"1".to_vec(),
                            ..Default::default()
                        })
                        .await?;
                    anyhow::Ok(())
                };
                match tokio::time::timeout(Duration::from_secs(3), attempt).await {
                    Ok(Ok(())) => break,
                    Ok(Err(e)) if Instant::now() > deadline => return Err(e),
                    Err(_) if Instant::now() > deadline => bail!("timed out"),
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        Ok(())
    }

    /// The endpoint of the member every member agrees leads.
    pub async fn leader_endpoint(&self) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut ids = Vec::new();
            let mut leaders = Vec::new();
            for endpoint in &self.endpoints {
                let status = async {
                    let client =
                        Client::connect_with(std::slice::from_ref(endpoint), &self.credentials)
                            .await?;
                    let s = client.maintenance().status(StatusRequest {}).await?;
                    anyhow::Ok(s.into_inner())
                };
                if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(3), status).await {
                    ids.push(s.header.map_or(0, |h| h.member_id));
                    leaders.push(s.leader);
                }
            }
            if leaders.len() == self.endpoints.len()
                && leaders[0] != 0
                && leaders.iter().all(|l| *l == leaders[0])
                && let Some(i) = ids.iter().position(|id| *id == leaders[0])
            {
                return Ok(self.endpoints[i].clone());
            }
            if Instant::now() > deadline {
                bail!("the members did not agree on a leader within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Bytes allocated on disk by each member's data dir.
    pub fn disk_bytes(&self) -> Vec<u64> {
        self.data_dirs.iter().map(|d| crate::disk_size(d)).collect()
    }

    /// Resident memory of each member, in KiB (from `/proc/PID/status`).
    pub fn rss_kib(&self) -> Vec<u64> {
        self.children
            .iter()
            .filter_map(|c| c.id())
            .map(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("VmRSS:"))
                            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    })
                    .unwrap_or(0)
            })
            .collect()
    }

    /// CPU time and context switches the members have used so far, summed
    /// over them: a workload's share is the difference across it.
    pub fn usage(&self) -> Usage {
        let mut total = Usage::default();
        for pid in self.children.iter().filter_map(|c| c.id()) {
            total.cpu += process_cpu(pid).unwrap_or_default();
            total.switches += process_switches(pid);
        }
        total
    }

    /// Stops the members (SIGTERM, then SIGKILL after a grace period).
    pub async fn stop(mut self) {
        for child in &self.children {
            if let Some(pid) = child.id() {
                // SAFETY: plain kill(2) on our own child.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
            }
        }
        for child in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

/// What processes have used: CPU (user + system) and context switches.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu: Duration,
    pub switches: u64,
}

impl std::ops::Sub for Usage {
    type Output = Usage;
    fn sub(self, earlier: Usage) -> Usage {
        Usage {
            cpu: self.cpu.saturating_sub(earlier.cpu),
            switches: self.switches.saturating_sub(earlier.switches),
        }
    }
}

/// utime + stime of the whole process (every thread, live or ended), from
/// `/proc/PID/stat`.
fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it do not.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields 14 and 15 of proc(5), counted after the name (field 3 is [1]).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_sec > 0).then(|| Duration::from_secs_f64(ticks as f64 / per_sec as f64))
}

/// Voluntary and involuntary context switches of the process's live
/// threads (`/proc/PID/task/*/status`; the kernel keeps no process total).
fn process_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(|status| {
            status
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("voluntary_ctxt_switches:")
                        .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                })
                .filter_map(|v| v.trim().parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_of_this_process_counts_its_cpu_and_its_threads_switches() {
        let pid = std::process::id();
        let (cpu0, sw0) = (process_cpu(pid).unwrap(), process_switches(pid));
        // 0.3 s of CPU on a thread that ends before the second reading:
        // its time stays in the process's total.
        std::thread::spawn(|| {
            let start = std::time::Instant::now();
            let mut x = 0u64;
            while start.elapsed() < Duration::from_millis(300) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        })
        .join()
        .unwrap();
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (cpu1, sw1) = (process_cpu(pid).unwrap(), process_switches(pid));
        assert!(
            cpu1 - cpu0 >= Duration::from_millis(200),
            "{cpu0:?} -> {cpu1:?}"
        );
        assert!(sw1 >= sw0 + 20, "each sleep is a switch: {sw0} -> {sw1}");
    }
}
