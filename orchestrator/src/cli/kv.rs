//! `herd kv …`: an etcdctl-like client of the store's etcd v3 API (it works
//! against a real etcd as well).

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use tokio_stream::StreamExt;

use crate::api::client::{Client, prefix_end};
use crate::api::{election, lock, session::Session};
use crate::proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, HashKvRequest, LeaseGrantRequest,
    LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest,
    MemberAddRequest, MemberListRequest, MemberRemoveRequest, MemberUpdateRequest,
    MoveLeaderRequest, PutRequest, RangeRequest, RequestOp, ResponseHeader, SnapshotRequest,
    StatusRequest, TxnRequest, WatchCreateRequest, WatchRequest, compare, request_op, response_op,
    watch_request,
};
use crate::proto::mvccpb::{KeyValue, event::EventType};

#[derive(Debug, Args)]
pub struct KvArgs {
    /// Client endpoints (HOST:PORT), comma separated; the first reachable one is used.
    #[arg(
        long,
        global = true,
        env = "HERD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: KvCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Read a key, a range [KEY, RANGE_END) or a prefix.
    Get {
        key: String,
        range_end: Option<String>,
        #[arg(long)]
        prefix: bool,
        /// Read at this past revision.
        #[arg(long, default_value_t = 0)]
        rev: i64,
        #[arg(long, default_value_t = 0)]
        limit: i64,
        #[arg(long)]
        keys_only: bool,
        /// Serve the read from the contacted member without a quorum round trip.
        #[arg(long)]
        serializable: bool,
    },
    /// Write a key.
    Put {
        key: String,
        value: String,
        /// Attach to this lease (hex id).
        #[arg(long, value_parser = parse_lease)]
        lease: Option<i64>,
    },
    /// Delete a key, a range or a prefix.
    Del {
        key: String,
        range_end: Option<String>,
        #[arg(long)]
        prefix: bool,
    },
    /// Stream changes of a key or prefix.
    Watch {
        key: String,
        #[arg(long)]
        prefix: bool,
        /// Start from this revision (history still in the store is replayed).
        #[arg(long, default_value_t = 0)]
        rev: i64,
    },
    /// A transaction read from stdin in etcdctl's form: compares, a blank
    /// line, success operations, a blank line, failure operations.
    Txn,
    /// Leases.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Hold the lock NAME until interrupted.
    Lock {
        name: String,
        /// TTL of the session lease, in seconds.
        #[arg(long, default_value_t = 60)]
        ttl: u64,
    },
    /// Campaign in election NAME with VALUE (lead until interrupted), or with
    /// --listen print each leader.
    Elect {
        name: String,
        value: Option<String>,
        #[arg(short, long)]
        listen: bool,
        #[arg(long, default_value_t = 60)]
        ttl: u64,
    },
    /// Cluster membership.
    #[command(subcommand)]
    Member(MemberCommand),
    /// The contacted members' status.
    Status,
    /// Discard history before REVISION.
    Compact { revision: i64 },
    /// Download (or inspect) a snapshot of the key space.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Make the member with this hex id the leader.
    MoveLeader {
        #[arg(value_parser = parse_lease)]
        id: i64,
    },
    /// Ask every endpoint in turn.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Stream the contacted member's key space into FILE (fsync'd, then renamed into place).
    Save { file: std::path::PathBuf },
    /// Check a snapshot file and print its revision, hash, keys and size (offline).
    Status { file: std::path::PathBuf },
    /// Build a new member's data dir from a snapshot file (offline): run it
    /// for every member of the new cluster with the same FILE and
    /// --initial-cluster, then start each with `herd agent`.
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A file written by `herd kv snapshot save` or `etcdctl snapshot save` from herd.
    pub file: std::path::PathBuf,
    /// This member's name in the new cluster.
    #[arg(long)]
    pub name: String,
    /// The data dir to create; it must not exist or be empty.
    #[arg(long)]
    pub data_dir: std::path::PathBuf,
    /// Every member of the new cluster: NAME=HOST:PORT,… (peer addresses,
    /// this member included). Without it: a single-member cluster of NAME
    /// at --listen-peer.
    #[arg(long, value_delimiter = ',')]
    pub initial_cluster: Option<Vec<String>>,
    /// This member's peer address when there is no --initial-cluster (the
    /// same default as `herd agent --listen-peer`).
    #[arg(
        long,
        default_value = "127.0.0.1:2380",
        conflicts_with = "initial_cluster"
    )]
    pub listen_peer: std::net::SocketAddr,
    /// Engine keeping the new data dir's Raft log [default: fjall].
    #[arg(long, value_enum)]
    pub storage: Option<crate::store::StorageKind>,
}

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Each endpoint's key space hash; members of a healthy cluster agree.
    Hashkv {
        /// Hash the key space as of this revision (0 = each member's current one).
        #[arg(long, default_value_t = 0)]
        rev: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Grant a lease with a TTL in seconds.
    Grant { ttl: i64 },
    /// Revoke a lease and delete its keys.
    Revoke {
        #[arg(value_parser = parse_lease)]
        id: i64,
    },
    /// Remaining TTL of a lease.
    Ttl {
        #[arg(value_parser = parse_lease)]
        id: i64,
        #[arg(long)]
        keys: bool,
    },
    /// Keep a lease alive (once, or until interrupted).
    KeepAlive {
        #[arg(value_parser = parse_lease)]
        id: i64,
        #[arg(long)]
        once: bool,
    },
    /// List leases.
    List,
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    List,
    /// Add a member by its peer address.
    Add {
        name: String,
        #[arg(long, value_delimiter = ',')]
        peer_urls: Vec<String>,
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member by its hex id.
    Remove {
        #[arg(value_parser = parse_lease)]
        id: i64,
    },
    /// Change the peer address of the member with this hex id.
    Update {
        #[arg(value_parser = parse_lease)]
        id: i64,
        #[arg(long, value_delimiter = ',')]
        peer_urls: Vec<String>,
    },
}

fn parse_lease(s: &str) -> Result<i64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .map(|v| v as i64)
        .map_err(|e| format!("{s:?} is not a hex id: {e}"))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn header_json(h: &Option<ResponseHeader>) -> Value {
    let h = h.unwrap_or_default();
    json!({"cluster_id": h.cluster_id, "member_id": h.member_id, "revision": h.revision, "raft_term": h.raft_term})
}

fn kv_json(kv: &KeyValue) -> Value {
    json!({
        "key": lossy(&kv.key),
        "value": lossy(&kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "lease": kv.lease,
    })
}

fn print_json(v: &Value) {
    println!("{v}");
}

fn range_of(key: &str, range_end: Option<String>, prefix: bool) -> (Vec<u8>, Vec<u8>) {
    let key = key.as_bytes().to_vec();
    let end = match (prefix, range_end) {
        (true, _) => prefix_end(&key),
        (false, Some(end)) => end.into_bytes(),
        (false, None) => Vec::new(),
    };
    (key, end)
}

pub async fn run(args: KvArgs) -> anyhow::Result<()> {
    let json = args.output == Output::Json;
    // Commands that are not about one connection.
    match &args.command {
        KvCommand::Snapshot(SnapshotCommand::Status { file }) => {
            return snapshot_status(file, json).await;
        }
        KvCommand::Snapshot(SnapshotCommand::Restore(restore)) => {
            return snapshot_restore(restore, json).await;
        }
        KvCommand::Endpoint(EndpointCommand::Hashkv { rev }) => {
            return hashkv(&args.endpoints, *rev, json).await;
        }
        _ => {}
    }
    let client = Client::connect(&args.endpoints)
        .await
        .with_context(|| format!("connecting to {}", args.endpoints.join(",")))?;
    match args.command {
        KvCommand::Get {
            key,
            range_end,
            prefix,
            rev,
            limit,
            keys_only,
            serializable,
        } => {
            let (key, range_end) = range_of(&key, range_end, prefix);
            let resp = client
                .kv()
                .range(RangeRequest {
                    key,
                    range_end,
                    revision: rev,
                    limit,
                    keys_only,
                    serializable,
                    ..Default::default()
                })
                .await?
                .into_inner();
            if json {
                print_json(&json!({
                    "header": header_json(&resp.header),
                    "kvs": resp.kvs.iter().map(kv_json).collect::<Vec<_>>(),
                    "more": resp.more,
                    "count": resp.count,
                }));
            } else {
                for kv in &resp.kvs {
                    println!("{}", lossy(&kv.key));
                    if !keys_only {
                        println!("{}", lossy(&kv.value));
                    }
                }
            }
        }
        KvCommand::Put { key, value, lease } => {
            let resp = client
                .kv()
                .put(PutRequest {
                    key: key.into_bytes(),
                    value: value.into_bytes(),
                    lease: lease.unwrap_or(0),
                    ..Default::default()
                })
                .await?
                .into_inner();
            if json {
                print_json(&json!({"header": header_json(&resp.header)}));
            } else {
                println!("OK");
            }
        }
        KvCommand::Del {
            key,
            range_end,
            prefix,
        } => {
            let (key, range_end) = range_of(&key, range_end, prefix);
            let resp = client
                .kv()
                .delete_range(DeleteRangeRequest {
                    key,
                    range_end,
                    prev_kv: false,
                })
                .await?
                .into_inner();
            if json {
                print_json(&json!({"header": header_json(&resp.header), "deleted": resp.deleted}));
            } else {
                println!("{}", resp.deleted);
            }
        }
        KvCommand::Watch { key, prefix, rev } => watch(&client, &key, prefix, rev, json).await?,
        KvCommand::Txn => {
            let mut input = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)
                .context("reading the transaction from stdin")?;
            let txn = parse_txn(&input)?;
            let resp = client.kv().txn(txn).await?.into_inner();
            if json {
                print_json(
                    &json!({"header": header_json(&resp.header), "succeeded": resp.succeeded}),
                );
            } else {
                println!("{}", if resp.succeeded { "SUCCESS" } else { "FAILURE" });
                for r in resp.responses {
                    println!();
                    match r.response {
                        Some(response_op::Response::ResponsePut(_)) => println!("OK"),
                        Some(response_op::Response::ResponseDeleteRange(d)) => {
                            println!("{}", d.deleted)
                        }
                        Some(response_op::Response::ResponseRange(g)) => {
                            for kv in g.kvs {
                                println!("{}\n{}", lossy(&kv.key), lossy(&kv.value));
                            }
                        }
                        Some(response_op::Response::ResponseTxn(_)) | None => {}
                    }
                }
            }
        }
        KvCommand::Lease(cmd) => lease(&client, cmd, json).await?,
        KvCommand::Lock { name, ttl } => {
            let session = Session::new(&client, Duration::from_secs(ttl)).await?;
            let held = lock::lock(&client, name.as_bytes(), session.lease()).await?;
            println!("{}", lossy(&held.key));
            shutdown_signal().await;
            lock::unlock(&client, &held.key).await?;
            session.close().await?;
        }
        KvCommand::Elect {
            name,
            value,
            listen,
            ttl,
        } => {
            if listen {
                observe(&client, name.as_bytes()).await?;
            } else {
                let Some(value) = value else {
                    bail!("elect needs a VALUE to campaign with (or --listen)")
                };
                let session = Session::new(&client, Duration::from_secs(ttl)).await?;
                let leader =
                    election::campaign(&client, name.as_bytes(), session.lease(), value.as_bytes())
                        .await?;
                println!("{}\n{}", lossy(&leader.key), value);
                shutdown_signal().await;
                election::resign(&client, &leader).await?;
                session.close().await?;
            }
        }
        KvCommand::Member(cmd) => member(&client, cmd, json).await?,
        KvCommand::Status => {
            let resp = client
                .maintenance()
                .status(StatusRequest {})
                .await?
                .into_inner();
            let h = resp.header.unwrap_or_default();
            if json {
                print_json(&json!({
                    "header": header_json(&resp.header),
                    "version": resp.version,
                    "db_size": resp.db_size,
                    "leader": format!("{:x}", resp.leader),
                    "raft_index": resp.raft_index,
                    "raft_term": resp.raft_term,
                    "raft_applied_index": resp.raft_applied_index,
                    "is_learner": resp.is_learner,
                    "errors": resp.errors,
                }));
            } else {
                println!(
                    "member {:x}  leader {:x}  version {}  db {} bytes  term {}  index {}  applied {}  revision {}  learner {}",
                    h.member_id,
                    resp.leader,
                    resp.version,
                    resp.db_size,
                    resp.raft_term,
                    resp.raft_index,
                    resp.raft_applied_index,
                    h.revision,
                    resp.is_learner
                );
            }
        }
        KvCommand::Compact { revision } => {
            let resp = client
                .kv()
                .compact(CompactionRequest {
                    revision,
                    physical: false,
                })
                .await?
                .into_inner();
            if json {
                print_json(&json!({"header": header_json(&resp.header)}));
            } else {
                println!("compacted revision {revision}");
            }
        }
        KvCommand::Snapshot(SnapshotCommand::Save { file }) => {
            snapshot_save(&client, &file, json).await?
        }
        KvCommand::MoveLeader { id } => {
            let resp = client
                .maintenance()
                .move_leader(MoveLeaderRequest {
                    target_id: id as u64,
                })
                .await?
                .into_inner();
            if json {
                print_json(
                    &json!({"header": header_json(&resp.header), "leader": format!("{id:x}")}),
                );
            } else {
                println!("leadership moved to {id:x}");
            }
        }
        KvCommand::Snapshot(SnapshotCommand::Status { .. } | SnapshotCommand::Restore(_))
        | KvCommand::Endpoint(EndpointCommand::Hashkv { .. }) => {
            unreachable!("handled before connecting")
        }
    }
    Ok(())
}

/// Downloads a snapshot into `file` the way etcdctl does: into `FILE.part`,
/// fsync, rename. The sha256 at its end is checked before the rename.
async fn snapshot_save(client: &Client, file: &std::path::Path, json: bool) -> anyhow::Result<()> {
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
    let kv = crate::store::backup::decode(&bytes).context("checking the downloaded snapshot")?;
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
    if json {
        print_json(&json!({
            "header": header_json(&header),
            "file": file.display().to_string(),
            "revision": kv.revision(),
            "size": len,
        }));
    } else {
        println!(
            "Snapshot saved at {} (revision {}, {len} bytes)",
            file.display(),
            kv.revision()
        );
    }
    Ok(())
}

async fn snapshot_status(file: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let bytes = tokio::fs::read(file)
        .await
        .with_context(|| format!("reading {}", file.display()))?;
    let kv = crate::store::backup::decode(&bytes)
        .with_context(|| format!("{} is not a usable snapshot", file.display()))?;
    let h = kv.hash_kv(0)?;
    if json {
        print_json(&json!({
            "hash": h.hash,
            "revision": h.revision,
            "compact_revision": h.compact_revision,
            "total_keys": kv.live_keys(),
            "total_size": bytes.len(),
        }));
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
fn parse_peer(entry: &str) -> anyhow::Result<(String, String)> {
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

async fn snapshot_restore(args: &RestoreArgs, json: bool) -> anyhow::Result<()> {
    use crate::store::restore::{RestoreOptions, restore};
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
        storage: args.storage.unwrap_or(crate::store::StorageKind::DEFAULT),
    };
    let file = args.file.clone();
    let storage = opts.storage;
    let r = tokio::task::spawn_blocking(move || restore(&file, &opts))
        .await
        .context("the restore task failed")??;
    if json {
        print_json(&json!({
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
        }));
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

/// Asks every endpoint for its key space hash (like `etcdctl endpoint hashkv`).
async fn hashkv(endpoints: &[String], rev: i64, json: bool) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for ep in endpoints {
        let client = Client::connect(std::slice::from_ref(ep))
            .await
            .with_context(|| format!("connecting to {ep}"))?;
        let resp = client
            .maintenance()
            .hash_kv(HashKvRequest { revision: rev })
            .await
            .with_context(|| format!("hashkv on {ep}"))?
            .into_inner();
        if json {
            rows.push(json!({
                "endpoint": ep,
                "header": header_json(&resp.header),
                "hash": resp.hash,
                "compact_revision": resp.compact_revision,
            }));
        } else {
            println!("{ep}, {}", resp.hash);
        }
    }
    if json {
        print_json(&Value::Array(rows));
    }
    Ok(())
}

async fn watch(
    client: &Client,
    key: &str,
    prefix: bool,
    rev: i64,
    json: bool,
) -> anyhow::Result<()> {
    let (key, range_end) = range_of(key, None, prefix);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key,
                range_end,
                start_revision: rev,
                ..Default::default()
            },
        )),
    })
    .await?;
    let mut stream = client
        .watch()
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        let resp = tokio::select! {
            _ = &mut signal => return Ok(()),
            r = stream.next() => match r {
                Some(r) => r?,
                None => bail!("the watch stream ended"),
            },
        };
        if resp.canceled {
            bail!(
                "watch canceled: {} (compact revision {})",
                resp.cancel_reason,
                resp.compact_revision
            );
        }
        for ev in &resp.events {
            let kind = if ev.r#type == EventType::Delete as i32 {
                "DELETE"
            } else {
                "PUT"
            };
            let kv = ev.kv.clone().unwrap_or_default();
            if json {
                print_json(
                    &json!({"type": kind, "kv": kv_json(&kv), "revision": resp.header.as_ref().map(|h| h.revision)}),
                );
            } else {
                println!("{kind}\n{}", lossy(&kv.key));
                if kind == "PUT" {
                    println!("{}", lossy(&kv.value));
                }
            }
        }
    }
}

async fn observe(client: &Client, name: &[u8]) -> anyhow::Result<()> {
    let mut last = Vec::new();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        match election::leader(client, name).await {
            Ok((kv, _)) if kv.key != last => {
                println!("{}\n{}", lossy(&kv.key), lossy(&kv.value));
                last = kv.key;
            }
            Ok(_) | Err(election::ElectionError::NoLeader) => {}
            Err(e) => return Err(e.into()),
        }
        tokio::select! {
            _ = &mut signal => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

async fn lease(client: &Client, cmd: LeaseCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        LeaseCommand::Grant { ttl } => {
            let r = client
                .lease()
                .lease_grant(LeaseGrantRequest { ttl, id: 0 })
                .await?
                .into_inner();
            if !r.error.is_empty() {
                bail!("{}", r.error);
            }
            if json {
                print_json(
                    &json!({"header": header_json(&r.header), "id": format!("{:x}", r.id), "ttl": r.ttl}),
                );
            } else {
                println!("lease {:016x} granted with TTL({}s)", r.id, r.ttl);
            }
        }
        LeaseCommand::Revoke { id } => {
            client
                .lease()
                .lease_revoke(LeaseRevokeRequest { id })
                .await?;
            println!("lease {id:016x} revoked");
        }
        LeaseCommand::Ttl { id, keys } => {
            let r = client
                .lease()
                .lease_time_to_live(LeaseTimeToLiveRequest { id, keys })
                .await?
                .into_inner();
            if json {
                print_json(
                    &json!({"id": format!("{:x}", r.id), "ttl": r.ttl, "granted_ttl": r.granted_ttl, "keys": r.keys.iter().map(|k| lossy(k)).collect::<Vec<_>>()}),
                );
            } else if r.ttl == -1 {
                println!("lease {id:016x} already expired");
            } else {
                println!(
                    "lease {id:016x} granted with TTL({}s), remaining({}s)",
                    r.granted_ttl, r.ttl
                );
                if keys {
                    println!(
                        "attached keys({})",
                        r.keys
                            .iter()
                            .map(|k| lossy(k))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
        }
        LeaseCommand::KeepAlive { id, once } => {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let mut stream = client
                .lease()
                .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?
                .into_inner();
            loop {
                tx.send(LeaseKeepAliveRequest { id }).await?;
                let Some(r) = stream.next().await else {
                    bail!("the keep-alive stream ended")
                };
                let r = r?;
                if r.ttl <= 0 {
                    bail!("lease {id:016x} expired or revoked");
                }
                println!("lease {id:016x} keepalived with TTL({})", r.ttl);
                if once {
                    return Ok(());
                }
                tokio::select! {
                    _ = shutdown_signal() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs((r.ttl as u64 / 3).max(1))) => {}
                }
            }
        }
        LeaseCommand::List => {
            let r = client
                .lease()
                .lease_leases(LeaseLeasesRequest {})
                .await?
                .into_inner();
            if json {
                print_json(
                    &json!({"leases": r.leases.iter().map(|l| format!("{:x}", l.id)).collect::<Vec<_>>()}),
                );
            } else {
                println!("found {} leases", r.leases.len());
                for l in r.leases {
                    println!("{:016x}", l.id);
                }
            }
        }
    }
    Ok(())
}

async fn member(client: &Client, cmd: MemberCommand, json: bool) -> anyhow::Result<()> {
    let members = match cmd {
        MemberCommand::List => {
            client
                .cluster()
                .member_list(MemberListRequest {
                    linearizable: false,
                })
                .await?
                .into_inner()
                .members
        }
        MemberCommand::Add {
            name,
            peer_urls,
            learner,
        } => {
            let r = client
                .cluster()
                .member_add(MemberAddRequest {
                    peer_urls,
                    is_learner: learner,
                })
                .await?
                .into_inner();
            let id = r.member.as_ref().map(|m| m.id).unwrap_or_default();
            if !json {
                println!("member {name} added with id {id:x}");
            }
            r.members
        }
        MemberCommand::Remove { id } => {
            let r = client
                .cluster()
                .member_remove(MemberRemoveRequest { id: id as u64 })
                .await?
                .into_inner();
            if !json {
                println!("member {id:x} removed");
            }
            r.members
        }
        MemberCommand::Update { id, peer_urls } => {
            let r = client
                .cluster()
                .member_update(MemberUpdateRequest {
                    id: id as u64,
                    peer_urls,
                })
                .await?
                .into_inner();
            if !json {
                println!("member {id:x} updated");
            }
            r.members
        }
    };
    if json {
        print_json(&json!({"members": members.iter().map(|m| json!({
            "id": format!("{:x}", m.id), "name": m.name, "peer_urls": m.peer_urls, "client_urls": m.client_urls, "is_learner": m.is_learner,
        })).collect::<Vec<_>>()}));
    } else {
        for m in members {
            println!(
                "{:x}, {}, {}, {}, {}",
                m.id,
                m.name,
                m.peer_urls.join(","),
                m.client_urls.join(","),
                m.is_learner
            );
        }
    }
    Ok(())
}

/// Parses etcdctl's interactive transaction form.
fn parse_txn(input: &str) -> anyhow::Result<TxnRequest> {
    let mut sections = vec![Vec::new()];
    for line in input.lines() {
        let line = line.trim();
        if line.is_empty() {
            if sections.len() < 3 {
                sections.push(Vec::new());
            }
            continue;
        }
        sections
            .last_mut()
            .expect("one section at least")
            .push(line);
    }
    sections.resize(3, Vec::new());
    let compare = sections[0]
        .iter()
        .map(|l| parse_compare(l))
        .collect::<anyhow::Result<_>>()?;
    let success = sections[1]
        .iter()
        .map(|l| parse_op(l))
        .collect::<anyhow::Result<_>>()?;
    let failure = sections[2]
        .iter()
        .map(|l| parse_op(l))
        .collect::<anyhow::Result<_>>()?;
    Ok(TxnRequest {
        compare,
        success,
        failure,
    })
}

/// Splits a line into words, honouring double quotes.
fn words(line: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if quoted {
        bail!("unterminated quote in {line:?}");
    }
    if any {
        out.push(cur);
    }
    Ok(out)
}

fn parse_compare(line: &str) -> anyhow::Result<Compare> {
    // e.g. value("key") = "v", mod("key") > "3"
    let (target, rest) = line
        .split_once('(')
        .with_context(|| format!("bad compare {line:?}: expected target(\"key\") op \"value\""))?;
    let (key, rest) = rest
        .split_once(')')
        .with_context(|| format!("bad compare {line:?}: missing ')'"))?;
    let key = key.trim().trim_matches('"').as_bytes().to_vec();
    let parts = words(rest)?;
    let [op, operand] = parts.as_slice() else {
        bail!("bad compare {line:?}: expected an operator and an operand")
    };
    let result = match op.as_str() {
        "=" | "==" => compare::CompareResult::Equal,
        "!=" => compare::CompareResult::NotEqual,
        ">" => compare::CompareResult::Greater,
        "<" => compare::CompareResult::Less,
        other => bail!("bad compare {line:?}: unknown operator {other:?}"),
    };
    let num = || {
        operand
            .parse::<i64>()
            .with_context(|| format!("bad compare {line:?}: {operand:?} is not a number"))
    };
    let (target, union) = match target.trim() {
        "ver" | "version" => (
            compare::CompareTarget::Version,
            compare::TargetUnion::Version(num()?),
        ),
        "c" | "create" => (
            compare::CompareTarget::Create,
            compare::TargetUnion::CreateRevision(num()?),
        ),
        "m" | "mod" => (
            compare::CompareTarget::Mod,
            compare::TargetUnion::ModRevision(num()?),
        ),
        "val" | "value" => (
            compare::CompareTarget::Value,
            compare::TargetUnion::Value(operand.as_bytes().to_vec()),
        ),
        "lease" => (
            compare::CompareTarget::Lease,
            compare::TargetUnion::Lease(parse_lease(operand).map_err(anyhow::Error::msg)?),
        ),
        other => bail!("bad compare {line:?}: unknown target {other:?}"),
    };
    Ok(Compare {
        result: result as i32,
        target: target as i32,
        key,
        target_union: Some(union),
        range_end: Vec::new(),
    })
}

fn parse_op(line: &str) -> anyhow::Result<RequestOp> {
    let parts = words(line)?;
    let request = match parts
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["put", key, value] => request_op::Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        }),
        ["get", key] => request_op::Request::RequestRange(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        }),
        ["get", key, "--prefix"] => request_op::Request::RequestRange(RangeRequest {
            key: key.as_bytes().to_vec(),
            range_end: prefix_end(key.as_bytes()),
            ..Default::default()
        }),
        ["del", key] => request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        }),
        ["del", key, "--prefix"] => request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            range_end: prefix_end(key.as_bytes()),
            ..Default::default()
        }),
        _ => bail!(
            "bad operation {line:?}: expected `put KEY VALUE`, `get KEY [--prefix]` or `del KEY [--prefix]`"
        ),
    };
    Ok(RequestOp {
        request: Some(request),
    })
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_etcdctl_txn_form() {
        let txn = parse_txn("mod(\"k\") > \"0\"\nvalue(\"k\") = \"a b\"\n\nput k \"new value\"\nget other\n\ndel k\n").unwrap();
        assert_eq!(txn.compare.len(), 2);
        assert_eq!(
            txn.compare[1].target_union,
            Some(compare::TargetUnion::Value(b"a b".to_vec()))
        );
        assert_eq!(txn.success.len(), 2);
        assert_eq!(txn.failure.len(), 1);
    }

    #[test]
    fn rejects_bad_txn_lines_with_the_line_in_the_message() {
        let err = parse_txn("size(\"k\") = \"1\"\n").unwrap_err().to_string();
        assert!(err.contains("unknown target"), "{err}");
        let err = parse_txn("\nfrob k\n").unwrap_err().to_string();
        assert!(err.contains("frob k"), "{err}");
    }
}
