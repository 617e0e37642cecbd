//! `herd kv snapshot save|status|restore`: backups of the key space and
//! disaster recovery into new members' data dirs.

use anyhow::{Context, bail};
use serde_json::json;
use tokio_stream::StreamExt;

use herd_client::Client;
use herd_client::proto::etcdserverpb::SnapshotRequest;

use herd_cli::Output;

use super::args::RestoreArgs;
use super::render::{emit, header_json};

/// Downloads a snapshot into `file` the way etcdctl does: into `FILE.part`,
/// fsync, rename. The sha256 at its end is checked before the rename.
pub(super) async fn snapshot_save(
    client: &Client,
    file: &std::path::Path,
    out: Output,
) -> anyhow::Result<()> {
    let mut stream = client
        .maintenance()
        .snapshot(SnapshotRequest {})
        .await?
        .into_inner();
    let mut bytes = Vec::new();
    let mut header = None;
    while let Some(msg) = stream.next().await {
        let msg = msg.context("receiving the snapshot")?;
        header = header.or(msg.header);
        bytes.extend_from_slice(&msg.blob);
    }
    let kv = crate::backup::decode(&bytes).context("checking the downloaded snapshot")?;
    let part = file.with_extension("part");
    let (part2, file2) = (part.clone(), file.to_path_buf());
    let len = bytes.len();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&part2)?;
        std::io::Write::write_all(&mut f, &bytes)?;
        f.sync_all()?;
        std::fs::rename(&part2, &file2)
    })
    .await?
    .with_context(|| format!("writing {}", part.display()))?;
    if out.is_structured() {
        emit(
            out,
            &json!({
                "header": header_json(&header),
                "file": file.display().to_string(),
                "revision": kv.revision(),
                "size": len,
            }),
        );
    } else {
        println!(
            "Snapshot saved at {} (revision {}, {len} bytes)",
            file.display(),
            kv.revision()
        );
    }
    Ok(())
}

pub(super) async fn snapshot_status(file: &std::path::Path, out: Output) -> anyhow::Result<()> {
    let bytes = tokio::fs::read(file)
        .await
        .with_context(|| format!("reading {}", file.display()))?;
    let kv = crate::backup::decode(&bytes)
        .with_context(|| format!("{} is not a usable snapshot", file.display()))?;
    let h = kv.hash_kv(0)?;
    if out.is_structured() {
        emit(
            out,
            &json!({
                "hash": h.hash,
                "revision": h.revision,
                "compact_revision": h.compact_revision,
                "total_keys": kv.live_keys(),
                "total_size": bytes.len(),
            }),
        );
    } else {
        println!(
            "hash {:x}  revision {}  keys {}  size {} bytes",
            h.hash,
            h.revision,
            kv.live_keys(),
            bytes.len()
        );
    }
    Ok(())
}

/// `NAME=HOST:PORT` (an `http://` in front is accepted, as etcd writes it).
pub(super) fn parse_peer(entry: &str) -> anyhow::Result<(String, String)> {
    let (name, addr) = entry
        .split_once('=')
        .with_context(|| format!("--initial-cluster entry {entry:?} is not NAME=HOST:PORT"))?;
    let addr: std::net::SocketAddr = addr
        .trim_start_matches("http://")
        .parse()
        .with_context(|| format!("--initial-cluster entry {entry:?}: bad address"))?;
    if name.is_empty() {
        bail!("--initial-cluster entry {entry:?} has an empty name");
    }
    Ok((name.to_owned(), addr.to_string()))
}

pub(super) async fn snapshot_restore(args: &RestoreArgs, out: Output) -> anyhow::Result<()> {
    use crate::restore::{RestoreOptions, restore};
    let initial_cluster = match &args.initial_cluster {
        Some(entries) => entries
            .iter()
            .map(|e| parse_peer(e))
            .collect::<anyhow::Result<Vec<_>>>()?,
        None => vec![(args.name.clone(), args.listen_peer.to_string())],
    };
    let opts = RestoreOptions {
        name: args.name.clone(),
        data_dir: args.data_dir.clone(),
        initial_cluster,
        storage: args.storage.unwrap_or(crate::StorageKind::DEFAULT),
    };
    let file = args.file.clone();
    let storage = opts.storage;
    let r = tokio::task::spawn_blocking(move || restore(&file, &opts))
        .await
        .context("the restore task failed")??;
    if out.is_structured() {
        emit(
            out,
            &json!({
                "path": args.file.display().to_string(),
                "data_dir": args.data_dir.display().to_string(),
                "name": args.name,
                "member_id": format!("{:x}", r.member_id),
                "cluster_id": format!("{:x}", r.cluster_id),
                "revision": r.revision,
                "total_keys": r.keys,
                "storage": storage.to_string(),
                "members": r.members.iter().map(|(name, id, peer)| json!({
                    "name": name,
                    "id": format!("{id:x}"),
                    "peer_url": peer,
                })).collect::<Vec<_>>(),
            }),
        );
    } else {
        let members: Vec<String> = r
            .members
            .iter()
            .map(|(name, _, peer)| format!("{name}={peer}"))
            .collect();
        println!(
            "restored snapshot {} (revision {}, {} keys) into {} as member {} ({:x}) of new cluster {:x}: {}",
            args.file.display(),
            r.revision,
            r.keys,
            args.data_dir.display(),
            args.name,
            r.member_id,
            r.cluster_id,
            members.join(",")
        );
    }
    Ok(())
}
