//! What the machine writes for others: `subnet.env` with flannel's
//! variable names (so `dockerd --bip=${FLANNEL_SUBNET} --mtu=${FLANNEL_MTU}`
//! works unchanged), and its own memory of the subnet it holds, read back
//! at start so a machine keeps its subnet while the store is unreachable.
//! Both are written atomically (temp file, fsync, rename).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cidr::Ipv4Net;
use crate::config::NetworkConfig;

/// Where `subnet.env` goes unless told otherwise (flannel's is
/// `/run/flannel/subnet.env`).
pub const DEFAULT_SUBNET_ENV: &str = "/run/herd/subnet.env";

/// Why a file could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct FileError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The text of `subnet.env`.
pub fn subnet_env(network: Ipv4Net, subnet: Ipv4Net, mtu: u32, ipmasq: bool) -> String {
    format!(
        "FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={}/{}\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ={ipmasq}\n",
        subnet.nth(1),
        subnet.prefix_len()
    )
}

/// Writes `contents` to `path` so that readers see the old or the new file,
/// never a part.
pub async fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), FileError> {
    let err = |source| FileError {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(dir).await.map_err(err)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let (tmp2, contents) = (tmp.clone(), contents.to_vec());
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp2)?;
        f.write_all(&contents)?;
        f.sync_all()
    })
    .await
    .map_err(|e| err(std::io::Error::other(e)))?
    .map_err(err)?;
    tokio::fs::rename(&tmp, path).await.map_err(err)?;
    if let Ok(d) = tokio::fs::File::open(dir).await {
        let _ = d.sync_all().await;
    }
    Ok(())
}

/// What a machine remembers of its hold on the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remembered {
    pub machine_id: String,
    pub config: NetworkConfig,
    pub subnet: Ipv4Net,
    pub public_ip: Ipv4Addr,
}

/// Reads the remembered hold; a missing or unreadable file is `None` (the
/// store decides then).
pub async fn read_remembered(path: &Path) -> Option<Remembered> {
    let bytes = tokio::fs::read(path).await.ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable subnet record");
            None
        }
    }
}

pub async fn write_remembered(path: &Path, r: &Remembered) -> Result<(), FileError> {
    write_atomic(path, &serde_json::to_vec_pretty(r).expect("serializes")).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_env_has_flannels_names_and_the_gateway_address() {
        let text = subnet_env(
            "10.244.0.0/16".parse().unwrap(),
            "10.244.3.0/24".parse().unwrap(),
            1450,
            true,
        );
        assert_eq!(
            text,
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
        );
    }

    #[tokio::test]
    async fn atomic_writes_replace_and_remembered_round_trips() {
        let dir = std::env::temp_dir().join(format!("herd-net-env-{}", std::process::id()));
        let path = dir.join("sub/subnet.json");
        let r = Remembered {
            machine_id: "m1".into(),
            config: NetworkConfig::default(),
            subnet: "10.244.3.0/24".parse().unwrap(),
            public_ip: "10.77.0.11".parse().unwrap(),
        };
        assert_eq!(read_remembered(&path).await, None);
        write_remembered(&path, &r).await.unwrap();
        assert_eq!(read_remembered(&path).await, Some(r));
        write_atomic(&path, b"garbage").await.unwrap();
        assert_eq!(read_remembered(&path).await, None);
        let _ = std::fs::remove_dir_all(dir);
    }
}
