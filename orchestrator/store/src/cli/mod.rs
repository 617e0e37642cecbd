//! `herd kv …`: an etcdctl-like client of the store's etcd v3 API (it works
//! against a real etcd as well).

mod args;
mod cluster;
mod lease;
mod render;
mod snapshot;
mod txn;
mod watch;

pub use args::{
    EndpointCommand, KvArgs, KvCommand, LeaseCommand, MemberCommand, RestoreArgs, SnapshotCommand,
};

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;

use herd_client::proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, MoveLeaderRequest, PutRequest, RangeRequest,
    StatusRequest, response_op,
};
use herd_client::{election, lock, session::Session};

use render::{emit, header_json, kv_json, lossy};
use tokio_util::sync::CancellationToken;

use cluster::{hashkv, member};
use lease::lease;
use render::range_of;
use snapshot::{snapshot_restore, snapshot_save, snapshot_status};
use txn::parse_txn;
use watch::{observe, watch};

/// Runs one `herd kv` command; long-running ones (watch, lock, elect)
/// stop when `shutdown` fires.
pub async fn run(args: KvArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let out = args.output;
    // Commands that are not about one connection.
    match &args.command {
        KvCommand::Snapshot(SnapshotCommand::Status { file }) => {
            return snapshot_status(file, out).await;
        }
        KvCommand::Snapshot(SnapshotCommand::Restore(restore)) => {
            return snapshot_restore(restore, out).await;
        }
        KvCommand::Endpoint(EndpointCommand::Hashkv { rev }) => {
            return hashkv(&args.store, *rev, out).await;
        }
        _ => {}
    }
    let client = args
        .store
        .connect()
        .await
        .with_context(|| format!("connecting to {}", args.store.endpoints.join(",")))?;
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
            if out.is_structured() {
                emit(
                    out,
                    &json!({
                        "header": header_json(&resp.header),
                        "kvs": resp.kvs.iter().map(kv_json).collect::<Vec<_>>(),
                        "more": resp.more,
                        "count": resp.count,
                    }),
                );
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
            if out.is_structured() {
                emit(out, &json!({"header": header_json(&resp.header)}));
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
            if out.is_structured() {
                emit(
                    out,
                    &json!({"header": header_json(&resp.header), "deleted": resp.deleted}),
                );
            } else {
                println!("{}", resp.deleted);
            }
        }
        KvCommand::Watch { key, prefix, rev } => {
            watch(&client, &key, prefix, rev, out, &shutdown).await?
        }
        KvCommand::Txn => {
            let mut input = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)
                .context("reading the transaction from stdin")?;
            let txn = parse_txn(&input)?;
            let resp = client.kv().txn(txn).await?.into_inner();
            if out.is_structured() {
                emit(
                    out,
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
        KvCommand::Lease(cmd) => lease(&client, cmd, out, &shutdown).await?,
        KvCommand::Lock { name, ttl } => {
            let session = Session::new(&client, Duration::from_secs(ttl)).await?;
            let held = lock::lock(&client, name.as_bytes(), session.lease()).await?;
            println!("{}", lossy(&held.key));
            shutdown.cancelled().await;
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
                observe(&client, name.as_bytes(), &shutdown).await?;
            } else {
                let Some(value) = value else {
                    bail!("elect needs a VALUE to campaign with (or --listen)")
                };
                let session = Session::new(&client, Duration::from_secs(ttl)).await?;
                let leader =
                    election::campaign(&client, name.as_bytes(), session.lease(), value.as_bytes())
                        .await?;
                println!("{}\n{}", lossy(&leader.key), value);
                shutdown.cancelled().await;
                election::resign(&client, &leader).await?;
                session.close().await?;
            }
        }
        KvCommand::Member(cmd) => member(&client, cmd, out).await?,
        KvCommand::Status => {
            let resp = client
                .maintenance()
                .status(StatusRequest {})
                .await?
                .into_inner();
            let h = resp.header.unwrap_or_default();
            if out.is_structured() {
                emit(
                    out,
                    &json!({
                        "header": header_json(&resp.header),
                        "version": resp.version,
                        "db_size": resp.db_size,
                        "leader": format!("{:x}", resp.leader),
                        "raft_index": resp.raft_index,
                        "raft_term": resp.raft_term,
                        "raft_applied_index": resp.raft_applied_index,
                        "is_learner": resp.is_learner,
                        "errors": resp.errors,
                    }),
                );
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
            if out.is_structured() {
                emit(out, &json!({"header": header_json(&resp.header)}));
            } else {
                println!("compacted revision {revision}");
            }
        }
        KvCommand::Snapshot(SnapshotCommand::Save { file }) => {
            snapshot_save(&client, &file, out).await?
        }
        KvCommand::MoveLeader { id } => {
            let resp = client
                .maintenance()
                .move_leader(MoveLeaderRequest {
                    target_id: id as u64,
                })
                .await?
                .into_inner();
            if out.is_structured() {
                emit(
                    out,
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
