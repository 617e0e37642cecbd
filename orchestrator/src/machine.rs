//! This machine's entry in the cluster: `/herd/machines/<machine-id>` holds
//! its MAC, IP, boot id, image version, roles and hostname, attached to a
//! lease with a generous TTL so that a machine that disappears drops out of
//! the list by itself, and one that comes back re-registers.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::api::client::{Client, ClientError, prefix_end};
use crate::cloud_config::Role;
use crate::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
};
use tokio_stream::StreamExt;

/// Where machines register.
pub const PREFIX: &str = "/herd/machines/";
/// Liveness TTL: long enough that a slow or briefly partitioned machine
/// keeps its entry (fleet's lesson: do not move work on a blip).
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// Why facts about this machine could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("no network interface carries {0}")]
    NoInterface(IpAddr),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("listing network interfaces: {0}")]
    Interfaces(std::io::Error),
    #[error("machine record under {key} is not valid JSON: {source}")]
    Decode {
        key: String,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// What a machine says about itself in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineRecord {
    /// Stable across netboots: derived from the MAC of the interface that
    /// carries the machine's address (a netbooted machine has no disk to
    /// keep a generated id on).
    pub machine_id: String,
    pub hostname: String,
    pub mac: String,
    pub ip: IpAddr,
    /// `/proc/sys/kernel/random/boot_id`: changes on every boot, so a
    /// reboot is visible even when everything else stays the same.
    pub boot_id: String,
    pub image_version: String,
    pub roles: Vec<Role>,
    pub agent_version: String,
}

impl MachineRecord {
    pub fn key(&self) -> String {
        format!("{PREFIX}{}", self.machine_id)
    }
}

/// The machine id for a MAC: its twelve hex digits (`52:54:00:77:00:01` →
/// `525400770001`).
pub fn machine_id_for_mac(mac: &str) -> String {
    mac.chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The interface carrying `ip` and its MAC, from the kernel.
pub fn mac_for_ip(ip: IpAddr) -> Result<(String, String), MachineError> {
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `addrs` with a list we free below.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return Err(MachineError::Interfaces(std::io::Error::last_os_error()));
    }
    let mut found = None;
    let mut cursor = addrs;
    while !cursor.is_null() {
        // SAFETY: `cursor` walks the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr whose family says its type.
        let addr = unsafe {
            match i32::from((*entry.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(entry.ifa_addr as *const libc::sockaddr_in);
                    Some(IpAddr::from(
                        u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                    ))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(entry.ifa_addr as *const libc::sockaddr_in6);
                    Some(IpAddr::from(sin6.sin6_addr.s6_addr))
                }
                _ => None,
            }
        };
        if addr == Some(ip) {
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { std::ffi::CStr::from_ptr(entry.ifa_name) };
            found = Some(name.to_string_lossy().into_owned());
            break;
        }
    }
    // SAFETY: `addrs` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(addrs) };
    let name = found.ok_or(MachineError::NoInterface(ip))?;
    let path = format!("/sys/class/net/{name}/address");
    let mac = std::fs::read_to_string(&path)
        .map_err(|source| MachineError::Read { path, source })?
        .trim()
        .to_owned();
    Ok((name, mac))
}

/// `VERSION_ID` from an os-release file's text.
pub fn os_release_version(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_ID="))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

/// Gathers this machine's record. Runs blocking file reads: call from
/// `spawn_blocking`.
pub fn describe(
    hostname: &str,
    ip: IpAddr,
    roles: &[Role],
    agent_version: &str,
) -> Result<MachineRecord, MachineError> {
    let (_, mac) = mac_for_ip(ip)?;
    let boot_path = "/proc/sys/kernel/random/boot_id";
    let boot_id = std::fs::read_to_string(boot_path)
        .map_err(|source| MachineError::Read {
            path: boot_path.into(),
            source,
        })?
        .trim()
        .to_owned();
    let image_version = std::fs::read_to_string("/etc/os-release")
        .ok()
        .filter(|t| t.contains("ID=herd"))
        .and_then(|t| os_release_version(&t))
        .unwrap_or_else(|| "none (not a herd image)".into());
    Ok(MachineRecord {
        machine_id: machine_id_for_mac(&mac),
        hostname: hostname.to_owned(),
        mac,
        ip,
        boot_id,
        image_version,
        roles: roles.to_vec(),
        agent_version: agent_version.to_owned(),
    })
}

/// Grants a lease of `ttl` and writes `record` under it; returns the lease.
pub async fn register_once(
    client: &Client,
    record: &MachineRecord,
    ttl: Duration,
) -> Result<i64, MachineError> {
    let grant = client
        .lease()
        .lease_grant(LeaseGrantRequest {
            ttl: ttl.as_secs().max(1) as i64,
            id: 0,
        })
        .await
        .map_err(ClientError::from)?
        .into_inner();
    if !grant.error.is_empty() {
        return Err(ClientError::Protocol(grant.error).into());
    }
    client
        .kv()
        .put(PutRequest {
            key: record.key().into_bytes(),
            value: serde_json::to_vec(record).expect("record serialises"),
            lease: grant.id,
            ..Default::default()
        })
        .await
        .map_err(ClientError::from)?;
    Ok(grant.id)
}

/// Every registered machine.
pub async fn list(client: &Client) -> Result<Vec<MachineRecord>, MachineError> {
    let resp = client
        .kv()
        .range(RangeRequest {
            key: PREFIX.as_bytes().to_vec(),
            range_end: prefix_end(PREFIX.as_bytes()),
            ..Default::default()
        })
        .await
        .map_err(ClientError::from)?
        .into_inner();
    resp.kvs
        .iter()
        .map(|kv| {
            serde_json::from_slice(&kv.value).map_err(|source| MachineError::Decode {
                key: String::from_utf8_lossy(&kv.key).into_owned(),
                source,
            })
        })
        .collect()
}

async fn still_registered(client: &Client, key: &str) -> Result<bool, ClientError> {
    let resp = client
        .kv()
        .range(RangeRequest {
            key: key.as_bytes().to_vec(),
            count_only: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(resp.count > 0)
}

/// The registration task, owned by the agent's supervisor: registers, keeps
/// the lease alive, and re-registers when the entry is gone (lease expired
/// during a long partition, or deleted by an operator). Dropping it stops
/// the task; [`Registration::close`] also removes the entry at once.
#[derive(Debug)]
pub struct Registration {
    task: JoinHandle<()>,
    client: Client,
    key: String,
}

impl Registration {
    pub fn start(client: Client, record: MachineRecord, ttl: Duration) -> Registration {
        let key = record.key();
        let task = tokio::spawn(keep_registered(client.clone(), record, ttl));
        Registration { task, client, key }
    }

    /// Stops the task and deletes the entry (a clean shutdown: the machine
    /// leaves the list now rather than when its lease runs out).
    pub async fn close(self) -> Result<(), MachineError> {
        self.task.abort();
        self.client
            .kv()
            .delete_range(crate::proto::etcdserverpb::DeleteRangeRequest {
                key: self.key.as_bytes().to_vec(),
                ..Default::default()
            })
            .await
            .map_err(ClientError::from)?;
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why holding a registration ended.
enum Lost {
    /// The lease expired or the entry was deleted: register anew.
    Entry,
    /// The keep-alive stream broke (leader change, restart): reopen it.
    Stream,
}

/// Keeps `lease` alive and checks the entry, until one of them is lost.
/// The keep-alive requests come from a channel whose sender lives in this
/// future, so cancelling the task ends the stream and with it the renewals
/// (a stream body handed to the gRPC connection would outlive the task).
async fn hold(client: &Client, key: &str, lease: i64, every: Duration) -> Lost {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    // The first renewal is queued before the call: etcd answers the call
    // (and tonic resolves it) only once a request arrived.
    tx.try_send(LeaseKeepAliveRequest { id: lease })
        .expect("fresh channel has room");
    let mut responses = match client
        .lease()
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) => {
            tracing::debug!(%status, "opening the lease keep-alive stream failed");
            return Lost::Stream;
        }
    };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // A full channel means the last renewal is still queued:
                // one is enough.
                if let Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) =
                    tx.try_send(LeaseKeepAliveRequest { id: lease })
                {
                    return Lost::Stream;
                }
                match still_registered(client, key).await {
                    Ok(true) => {}
                    Ok(false) => return Lost::Entry,
                    // The store may be electing a leader: ask again next tick.
                    Err(e) => tracing::debug!(%key, error = %e, "could not check the machine entry"),
                }
            }
            response = responses.next() => match response {
                Some(Ok(r)) if r.ttl <= 0 => return Lost::Entry,
                Some(Ok(_)) => {}
                Some(Err(status)) => {
                    tracing::debug!(%status, "lease keep-alive stream failed");
                    return Lost::Stream;
                }
                None => return Lost::Stream,
            },
        }
    }
}

/// Whether this kernel was booted from an installed disk (the boot entry
/// names the USR slot) rather than netbooted.
pub fn booted_from_disk(cmdline: &str) -> bool {
    cmdline
        .split_whitespace()
        .any(|a| a.starts_with("herd.usr="))
}

/// On a disk boot, once this machine is registered (its store member is
/// back in a cluster that accepts writes), tells the boot loader that the
/// booted slot works: herd marks good on health, not on a timer. Until then
/// systemd-boot keeps counting tries and falls back on its own.
async fn mark_slot_good() {
    let cmdline = tokio::fs::read_to_string("/proc/cmdline")
        .await
        .unwrap_or_default();
    if !booted_from_disk(&cmdline) {
        return;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            tracing::warn!(error = %e, "cannot find the herd binary to mark the slot good");
            return;
        }
    };
    // The slot logic lives in the image crate's CLI; running it keeps the
    // orchestrator free of the image crate and its ESP handling.
    match tokio::process::Command::new(&exe)
        .args(["image", "mark-good"])
        .kill_on_drop(true)
        .output()
        .await
    {
        // The serial console shows this line (the lab test looks for it).
        Ok(out) if out.status.success() => eprintln!(
            "herd agent: healthy in the cluster; {}",
            String::from_utf8_lossy(&out.stdout).trim()
        ),
        Ok(out) => eprintln!(
            "herd agent: marking the booted slot good failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!("herd agent: running {} image mark-good: {e}", exe.display()),
    }
}

async fn keep_registered(client: Client, record: MachineRecord, ttl: Duration) {
    let every = (ttl / 3).max(Duration::from_millis(200));
    let key = record.key();
    let mut backoff = Duration::from_millis(200);
    let mut marked = false;
    loop {
        let lease = match register_once(&client, &record, ttl).await {
            Ok(lease) => {
                tracing::info!(%key, lease = format!("{lease:x}"), "machine registered");
                backoff = Duration::from_millis(200);
                if !marked {
                    marked = true;
                    mark_slot_good().await;
                }
                lease
            }
            Err(e) => {
                tracing::warn!(%key, error = %e, "machine registration failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        loop {
            match hold(&client, &key, lease, every).await {
                Lost::Entry => {
                    tracing::warn!(%key, "machine entry or its lease is gone; registering again");
                    // Best effort: a lease that still exists holds nothing now.
                    let _ = client
                        .lease()
                        .lease_revoke(LeaseRevokeRequest { id: lease })
                        .await;
                    break;
                }
                Lost::Stream => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_versions_parse() {
        assert_eq!(machine_id_for_mac("52:54:00:77:00:0A"), "52540077000a");
        assert_eq!(
            os_release_version("NAME=herd\nID=herd\nVERSION_ID=\"2026.11.1\"\n").as_deref(),
            Some("2026.11.1")
        );
        assert_eq!(os_release_version("NAME=x\n"), None);
    }

    #[test]
    fn only_disk_boots_mark_their_slot() {
        assert!(booted_from_disk("console=ttyS0 herd.usr=USR-A quiet"));
        assert!(!booted_from_disk("console=ttyS0 herd.config=http://x/cc"));
    }

    #[test]
    fn loopback_has_no_mac_but_is_found() {
        let (name, mac) = mac_for_ip("127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(name, "lo");
        assert_eq!(mac, "00:00:00:00:00:00");
        let e = mac_for_ip("203.0.113.77".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("203.0.113.77"), "{e}");
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// A real etcd (Debian's etcd-server) on loopback, killed on drop.
    struct Etcd {
        child: std::process::Child,
        _dir: tempfile::TempDir,
        endpoint: String,
    }

    impl Drop for Etcd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn etcd() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("127.0.0.1:{client}");
        let child = std::process::Command::new("etcd")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen-client-urls", &format!("http://{endpoint}")])
            .args(["--advertise-client-urls", &format!("http://{endpoint}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
            ])
            .args([
                "--initial-cluster",
                &format!("default=http://127.0.0.1:{peer}"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("etcd is not installed: apt-get install etcd-server (scripts/deps does this)");
        Etcd {
            child,
            _dir: dir,
            endpoint,
        }
    }

    async fn connect(endpoint: &str) -> Client {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(c) = Client::connect(&[endpoint.to_owned()]).await
                && c.kv()
                    .range(RangeRequest {
                        key: b"x".to_vec(),
                        ..Default::default()
                    })
                    .await
                    .is_ok()
            {
                return c;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "etcd never answered on {endpoint}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test]
    async fn registration_is_leased_listed_and_restored_after_deletion() {
        let etcd = etcd();
        let client = connect(&etcd.endpoint).await;
        let record = describe("m1", "127.0.0.1".parse().unwrap(), &[Role::Store], "test").unwrap();
        assert_eq!(record.machine_id, "000000000000");
        assert_eq!(record.boot_id.len(), 36, "a UUID: {}", record.boot_id);

        let registration =
            Registration::start(client.clone(), record.clone(), Duration::from_secs(2));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while list(&client).await.unwrap() != vec![record.clone()] {
            assert!(tokio::time::Instant::now() < deadline, "never registered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The entry hangs off a lease.
        let kv = client
            .kv()
            .range(RangeRequest {
                key: record.key().into_bytes(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_ne!(kv.kvs[0].lease, 0, "entry is leased");

        // Deleted behind its back: the task puts it back.
        client
            .kv()
            .delete_range(crate::proto::etcdserverpb::DeleteRangeRequest {
                key: record.key().into_bytes(),
                ..Default::default()
            })
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while list(&client).await.unwrap().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never re-registered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // A clean stop removes it at once.
        registration.close().await.unwrap();
        assert!(list(&client).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_dead_machine_drops_out_when_its_lease_expires() {
        let etcd = etcd();
        let client = connect(&etcd.endpoint).await;
        let record = describe("m2", "127.0.0.1".parse().unwrap(), &[Role::Worker], "test").unwrap();
        let registration =
            Registration::start(client.clone(), record.clone(), Duration::from_secs(2));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while list(&client).await.unwrap().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "never registered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Crash: the task and its keep-alive stop, nobody deletes the entry.
        drop(registration);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !list(&client).await.unwrap().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "entry outlived its lease"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
