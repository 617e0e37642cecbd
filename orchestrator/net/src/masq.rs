//! Masquerade for pod traffic leaving the cluster network: one nftables
//! table, `ip herd`, replaced atomically (`nft -f -` runs the whole file
//! as one transaction).
//!
//! Why the `nft` program and not netlink: no maintained crate programs
//! NAT over netlink without C libraries or a GPL licence — `nf_tables`
//! 0.1 has neither NAT chains nor the `masq` expression, `nftnl` binds
//! libnftnl, `rustables` is GPL-3 — and the rule is written once per
//! start, not per packet or per lease. The text goes on stdin; nothing is
//! interpolated into a shell.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::cidr::Ipv4Net;

/// The nftables table herd owns.
pub const TABLE: &str = "herd";

/// Why the masquerade rule could not be set.
#[derive(Debug, thiserror::Error)]
pub enum MasqError {
    #[error("running nft (apt-get install nftables): {0}")]
    Spawn(std::io::Error),
    #[error("nft refused the masquerade rules: {0}")]
    Refused(String),
}

/// The ruleset: traffic from `network` to anywhere outside it leaves with
/// the machine's address; traffic inside the cluster network keeps its
/// pod addresses.
pub fn ruleset(network: Ipv4Net) -> String {
    format!(
        "add table ip {TABLE}\n\
         delete table ip {TABLE}\n\
         table ip {TABLE} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority 100; policy accept;\n\
         \t\tip saddr {network} ip daddr != {network} masquerade\n\
         \t}}\n\
         }}\n"
    )
}

/// Installs [`ruleset`] for `network`, replacing herd's previous table.
pub async fn install(network: Ipv4Net) -> Result<(), MasqError> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(MasqError::Spawn)?;
    let mut stdin = child.stdin.take().expect("piped");
    stdin
        .write_all(ruleset(network).as_bytes())
        .await
        .map_err(MasqError::Spawn)?;
    drop(stdin);
    let out = child.wait_with_output().await.map_err(MasqError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(MasqError::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_masquerades_only_leaving_traffic() {
        let r = ruleset("10.244.0.0/16".parse().unwrap());
        assert!(
            r.starts_with("add table ip herd\ndelete table ip herd\n"),
            "{r}"
        );
        assert!(
            r.contains("ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade"),
            "{r}"
        );
    }
}
