//! Running Debian's `nft`: a transaction on stdin (`nft -f -` applies the
//! whole text atomically or not at all), the names in the proxy's table
//! (`nft -j list table`), deleting the table. Why the program and not
//! netlink: see `docs/network.md` (no maintained, permissively licensed
//! crate speaks NAT over nf_tables); the text goes on stdin, never
//! through a shell.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::render::{Existing, TABLE};

/// Why `nft` failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("running nft (apt-get install nftables): {0}")]
    Spawn(#[source] std::io::Error),
    #[error("nft refused the rules: {0}")]
    Refused(String),
    #[error("reading nft's listing of table ip {TABLE}: {0}")]
    Listing(#[source] serde_json::Error),
}

/// Where `nft` runs: this process's network namespace, or a named one
/// (`ip netns exec`, for the benchmark's namespaces).
#[derive(Debug, Clone, Default)]
pub struct Nft {
    pub netns: Option<String>,
}

impl Nft {
    /// Runs `nft ARGS` with `input` on stdin; its stdout.
    async fn run(&self, args: &[&str], input: &str) -> Result<Vec<u8>, NftError> {
        let cmd = match &self.netns {
            Some(ns) => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", ns, "nft"]);
                c
            }
            None => tokio::process::Command::new("nft"),
        };
        nft(cmd, args, input).await
    }

    /// Applies `transaction` as one.
    pub async fn apply(&self, transaction: &str) -> Result<(), NftError> {
        self.run(&["-f", "-"], transaction).await.map(drop)
    }

    /// The chains and sets in the proxy's table (empty when it does not exist).
    pub async fn existing(&self) -> Result<Existing, NftError> {
        match self.run(&["-j", "list", "table", "ip", TABLE], "").await {
            Ok(json) => parse_listing(&json),
            Err(NftError::Refused(e)) if e.contains("No such file or directory") => {
                Ok(Existing::default())
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes the proxy's table (nothing if it does not exist).
    pub async fn delete_table(&self) -> Result<(), NftError> {
        // `add` first makes the `delete` succeed when there is no table.
        self.apply(&format!("add table ip {TABLE}\ndelete table ip {TABLE}\n"))
            .await
    }
}

/// Runs `cmd ARGS` with `input` on stdin; its stdout.
async fn nft(
    mut cmd: tokio::process::Command,
    args: &[&str],
    input: &str,
) -> Result<Vec<u8>, NftError> {
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(NftError::Spawn)?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = input.to_owned();
    // nft reads all of stdin before it answers; write while it runs.
    let (written, out) = tokio::join!(
        async move {
            let r = stdin.write_all(input.as_bytes()).await;
            drop(stdin);
            r
        },
        child.wait_with_output()
    );
    let out = out.map_err(NftError::Spawn)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Keep the message short: nft echoes each failing line.
        let brief: Vec<&str> = stderr.lines().take(6).collect();
        return Err(NftError::Refused(brief.join(" | ")));
    }
    written.map_err(NftError::Spawn)?;
    Ok(out.stdout)
}

/// Deletes the proxy's table in this namespace (nothing if there is none).
pub async fn delete_table() -> Result<(), NftError> {
    Nft::default().delete_table().await
}

/// The names in `nft -j list table` output.
pub fn parse_listing(json: &[u8]) -> Result<Existing, NftError> {
    #[derive(serde::Deserialize)]
    struct Listing {
        nftables: Vec<serde_json::Map<String, serde_json::Value>>,
    }
    let listing: Listing = serde_json::from_slice(json).map_err(NftError::Listing)?;
    let mut e = Existing::default();
    for item in listing.nftables {
        for (kind, body) in item {
            let Some(name) = body.get("name").and_then(|n| n.as_str()) else {
                continue;
            };
            match kind.as_str() {
                "chain" => {
                    e.chains.insert(name.to_owned());
                }
                "set" | "map" => {
                    e.sets.insert(name.to_owned());
                }
                _ => {}
            }
        }
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_names_chains_sets_and_maps() {
        let json = br#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "ip", "name": "herd-proxy", "handle": 1}},
            {"map": {"family": "ip", "name": "service-ips", "table": "herd-proxy"}},
            {"set": {"family": "ip", "name": "cluster-ips", "table": "herd-proxy"}},
            {"chain": {"family": "ip", "table": "herd-proxy", "name": "services"}},
            {"rule": {"family": "ip", "table": "herd-proxy", "chain": "services", "expr": []}}]}"#;
        let e = parse_listing(json).unwrap();
        assert_eq!(e.chains.iter().collect::<Vec<_>>(), ["services"]);
        assert_eq!(e.sets.len(), 2);
        assert!(parse_listing(b"not json").is_err());
    }
}
