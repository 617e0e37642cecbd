//! The lab network: one namespace holding a bridge and a tap per VM, made
//! and removed with iproute2's `ip` (the same tool an operator would use to
//! inspect it, and no netlink state of our own to get wrong).

use std::path::Path;

use tokio::process::Command;

use crate::layout::{BRIDGE, HOST_ADDR, PREFIX_LEN};

/// A failed `ip` invocation.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("running `ip {args}`: {source} (install iproute2)")]
    Spawn {
        args: String,
        source: std::io::Error,
    },
    #[error("`ip {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
}

async fn ip(args: &[&str]) -> Result<String, NetError> {
    let joined = args.join(" ");
    let out = Command::new("ip")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| NetError::Spawn {
            args: joined.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetError::Failed {
            args: joined,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether namespace `name` exists.
pub fn exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Creates namespace `name` with loopback up and the lab bridge carrying the
/// provisioning server's address.
pub async fn create(name: &str) -> Result<(), NetError> {
    ip(&["netns", "add", name]).await?;
    let n = ["-n", name];
    ip(&[&n[..], &["link", "set", "lo", "up"]].concat()).await?;
    ip(&[&n[..], &["link", "add", BRIDGE, "type", "bridge"]].concat()).await?;
    // No STP and no forwarding delay: a VM's first DHCP DISCOVER must pass.
    ip(&[
        &n[..],
        &[
            "link",
            "set",
            BRIDGE,
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ],
    ]
    .concat())
    .await?;
    let cidr = format!("{HOST_ADDR}/{PREFIX_LEN}");
    ip(&[&n[..], &["addr", "add", &cidr, "dev", BRIDGE]].concat()).await?;
    ip(&[&n[..], &["link", "set", BRIDGE, "up"]].concat()).await?;
    Ok(())
}

/// Creates tap `tap` on the lab bridge (idempotent: an existing tap is kept).
pub async fn add_tap(netns: &str, tap: &str) -> Result<(), NetError> {
    let n = ["-n", netns];
    if ip(&[&n[..], &["link", "show", tap]].concat())
        .await
        .is_err()
    {
        ip(&[&n[..], &["tuntap", "add", "dev", tap, "mode", "tap"]].concat()).await?;
    }
    ip(&[&n[..], &["link", "set", tap, "master", BRIDGE]].concat()).await?;
    ip(&[&n[..], &["link", "set", tap, "up"]].concat()).await?;
    Ok(())
}

/// PIDs of every process inside namespace `name`.
pub async fn pids(name: &str) -> Vec<u32> {
    match ip(&["netns", "pids", name]).await {
        Ok(out) => out
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Interfaces inside namespace `name` (for `status` and the tests).
pub async fn links(name: &str) -> Result<Vec<String>, NetError> {
    let out = ip(&["-n", name, "-o", "link", "show"]).await?;
    Ok(out
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or_default().to_owned())
        .collect())
}

/// Deletes namespace `name`, taking its bridge and taps with it. A missing
/// namespace is not an error (`down` is idempotent).
pub async fn delete(name: &str) -> Result<(), NetError> {
    if !exists(name) {
        return Ok(());
    }
    ip(&["netns", "del", name]).await.map(|_| ())
}
