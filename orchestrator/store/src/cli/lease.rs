//! `herd kv lease …`: grant, revoke, keep-alive, time-to-live, list.

use std::time::Duration;

use anyhow::bail;
use serde_json::json;
use tokio_stream::StreamExt;

use herd_client::Client;
use herd_client::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest,
};

use herd_cli::Output;

use super::args::LeaseCommand;
use super::render::{emit, header_json, lossy};
use tokio_util::sync::CancellationToken;

pub(super) async fn lease(
    client: &Client,
    cmd: LeaseCommand,
    out: Output,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
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
            if out.is_structured() {
                emit(
                    out,
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
            if out.is_structured() {
                emit(
                    out,
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
                    _ = shutdown.cancelled() => return Ok(()),
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
            if out.is_structured() {
                emit(
                    out,
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
