//! Every machine the server has seen, and how far its boot got, persisted
//! in the state directory (written with fsync before a change is reported).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

/// A MAC address; parsed from `52:54:00:12:34:56` or `52-54-00-12-34-56`
/// (iPXE's `${mac:hexhyp}`), printed lower-case with colons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex bytes like 52:54:00:12:34:56")]
pub struct MacError(pub String);

impl FromStr for Mac {
    type Err = MacError;
    fn from_str(s: &str) -> Result<Mac, MacError> {
        let err = || MacError(s.to_owned());
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(err());
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(err());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        Ok(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Boot stages in the order a netboot reaches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootStage {
    Dhcp,
    BootFile,
    Script,
    Kernel,
    Initramfs,
    CloudConfig,
    /// The agent reported a verified install; later boots go to disk.
    Installed,
}

impl fmt::Display for BootStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BootStage::Dhcp => "dhcp",
            BootStage::BootFile => "boot-file",
            BootStage::Script => "script",
            BootStage::Kernel => "kernel",
            BootStage::Initramfs => "initramfs",
            BootStage::CloudConfig => "cloud-config",
            BootStage::Installed => "installed",
        })
    }
}

/// What the server knows about one machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub mac: Mac,
    pub uuid: Option<String>,
    pub arch: Option<String>,
    pub ip: Option<Ipv4Addr>,
    pub hostname: Option<String>,
    /// Unix seconds.
    pub first_seen: u64,
    pub last_seen: u64,
    pub profile: Option<String>,
    pub last_stage: Option<BootStage>,
    /// Set after a verified install: PXE requests then boot the local disk.
    pub installed: bool,
}

/// A change to record about a machine.
#[derive(Debug, Clone, Default)]
pub struct Sighting {
    pub uuid: Option<String>,
    pub arch: Option<String>,
    pub ip: Option<Ipv4Addr>,
    pub hostname: Option<String>,
    pub profile: Option<String>,
    pub stage: Option<BootStage>,
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("reading inventory {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("inventory {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing inventory {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("machine {0} has never been seen")]
    Unknown(Mac),
}

const FILE: &str = "machines.json";

/// The machine inventory, shared by the DHCP, TFTP and HTTP sides.
#[derive(Clone)]
pub struct Inventory {
    inner: Arc<Mutex<BTreeMap<Mac, Machine>>>,
    path: Arc<PathBuf>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Inventory {
    /// Loads `STATE_DIR/machines.json` (an absent file is an empty inventory).
    pub async fn open(state_dir: &Path) -> Result<Inventory, InventoryError> {
        let path = state_dir.join(FILE);
        let machines = match tokio::fs::read(&path).await {
            Ok(bytes) => {
                let list: Vec<Machine> =
                    serde_json::from_slice(&bytes).map_err(|source| InventoryError::Corrupt {
                        path: path.clone(),
                        source,
                    })?;
                list.into_iter().map(|m| (m.mac, m)).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tokio::fs::create_dir_all(state_dir)
                    .await
                    .map_err(|source| InventoryError::Write {
                        path: state_dir.to_owned(),
                        source,
                    })?;
                BTreeMap::new()
            }
            Err(source) => return Err(InventoryError::Read { path, source }),
        };
        Ok(Inventory {
            inner: Arc::new(Mutex::new(machines)),
            path: Arc::new(path),
        })
    }

    pub async fn list(&self) -> Vec<Machine> {
        self.inner.lock().await.values().cloned().collect()
    }

    pub async fn get(&self, mac: Mac) -> Option<Machine> {
        self.inner.lock().await.get(&mac).cloned()
    }

    /// The machine that holds `ip` (how TFTP requests are attributed).
    pub async fn by_ip(&self, ip: Ipv4Addr) -> Option<Machine> {
        self.inner
            .lock()
            .await
            .values()
            .filter(|m| m.ip == Some(ip))
            .max_by_key(|m| m.last_seen)
            .cloned()
    }

    /// Records that `mac` was seen, merging the known facts, and persists.
    pub async fn record(&self, mac: Mac, s: Sighting) -> Result<Machine, InventoryError> {
        let mut map = self.inner.lock().await;
        let t = now();
        let m = map.entry(mac).or_insert_with(|| Machine {
            mac,
            uuid: None,
            arch: None,
            ip: None,
            hostname: None,
            first_seen: t,
            last_seen: t,
            profile: None,
            last_stage: None,
            installed: false,
        });
        m.last_seen = t;
        if s.uuid.is_some() {
            m.uuid = s.uuid;
        }
        if s.arch.is_some() {
            m.arch = s.arch;
        }
        if s.ip.is_some() {
            m.ip = s.ip;
        }
        if s.hostname.is_some() {
            m.hostname = s.hostname;
        }
        if s.profile.is_some() {
            m.profile = s.profile;
        }
        if s.stage.is_some() {
            m.last_stage = s.stage;
        }
        let out = m.clone();
        self.persist(&map).await?;
        Ok(out)
    }

    /// Sets or clears the installed flag of a known machine.
    pub async fn set_installed(
        &self,
        mac: Mac,
        installed: bool,
    ) -> Result<Machine, InventoryError> {
        let mut map = self.inner.lock().await;
        let m = map.get_mut(&mac).ok_or(InventoryError::Unknown(mac))?;
        m.installed = installed;
        if installed {
            m.last_stage = Some(BootStage::Installed);
        }
        m.last_seen = now();
        let out = m.clone();
        self.persist(&map).await?;
        Ok(out)
    }

    /// Writes the whole inventory atomically (temp file, fsync, rename,
    /// fsync of the directory) while the lock is held, so writes never
    /// interleave and a change is durable before it is acknowledged.
    async fn persist(&self, map: &BTreeMap<Mac, Machine>) -> Result<(), InventoryError> {
        let list: Vec<&Machine> = map.values().collect();
        let bytes = serde_json::to_vec_pretty(&list).expect("inventory serializes");
        let path = self.path.clone();
        let result = tokio::task::spawn_blocking(move || write_durably(&path, &bytes))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
        result.map_err(|source| InventoryError::Write {
            path: self.path.to_path_buf(),
            source,
        })
    }
}

fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parses_both_separators_and_rejects_junk() {
        let m: Mac = "52-54-00-AB-cd-01".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:ab:cd:01");
        assert_eq!("52:54:00:ab:cd:01".parse::<Mac>().unwrap(), m);
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:01:02",
            "zz:54:00:ab:cd:01",
            "525:4:00:ab:cd:01",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn records_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let inv = Inventory::open(dir.path()).await.unwrap();
        let mac: Mac = "52:54:00:00:00:01".parse().unwrap();
        inv.record(
            mac,
            Sighting {
                ip: Some("10.0.0.5".parse().unwrap()),
                stage: Some(BootStage::Dhcp),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        inv.record(
            mac,
            Sighting {
                stage: Some(BootStage::Script),
                profile: Some("node".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        inv.set_installed(mac, true).await.unwrap();
        assert!(matches!(
            inv.set_installed("52:54:00:00:00:02".parse().unwrap(), true)
                .await,
            Err(InventoryError::Unknown(_))
        ));
        let again = Inventory::open(dir.path()).await.unwrap();
        let m = again.get(mac).await.unwrap();
        assert_eq!(m.ip, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(m.profile.as_deref(), Some("node"));
        assert!(m.installed);
        assert_eq!(m.last_stage, Some(BootStage::Installed));
        assert_eq!(
            again.by_ip("10.0.0.5".parse().unwrap()).await.unwrap().mac,
            mac
        );
    }

    #[tokio::test]
    async fn corrupt_inventory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let err = Inventory::open(dir.path()).await.err().unwrap();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
