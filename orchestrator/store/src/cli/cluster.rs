//! `herd kv endpoint hashkv` and `herd kv member …`: the cluster's members
//! and whether they agree.

use anyhow::Context;
use serde_json::{Value, json};

use herd_client::Client;
use herd_client::proto::etcdserverpb::{
    HashKvRequest, MemberAddRequest, MemberListRequest, MemberRemoveRequest, MemberUpdateRequest,
};

use herd_cli::Output;

use super::args::MemberCommand;
use super::render::{emit, header_json};

/// Asks every endpoint for its key space hash (like `etcdctl endpoint hashkv`).
pub(super) async fn hashkv(
    store: &herd_client::connect::StoreArgs,
    rev: i64,
    out: Output,
) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for ep in store.hosts() {
        let one = herd_client::connect::StoreArgs {
            endpoints: vec![ep.clone()],
            ..store.clone()
        };
        let client = one
            .connect()
            .await
            .with_context(|| format!("connecting to {ep}"))?;
        let resp = client
            .maintenance()
            .hash_kv(HashKvRequest { revision: rev })
            .await
            .with_context(|| format!("hashkv on {ep}"))?
            .into_inner();
        if out.is_structured() {
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
    if out.is_structured() {
        emit(out, &Value::Array(rows));
    }
    Ok(())
}

pub(super) async fn member(client: &Client, cmd: MemberCommand, out: Output) -> anyhow::Result<()> {
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
            if !out.is_structured() {
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
            if !out.is_structured() {
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
            if !out.is_structured() {
                println!("member {id:x} updated");
            }
            r.members
        }
    };
    if out.is_structured() {
        emit(
            out,
            &json!({"members": members.iter().map(|m| json!({
            "id": format!("{:x}", m.id), "name": m.name, "peer_urls": m.peer_urls, "client_urls": m.client_urls, "is_learner": m.is_learner,
        })).collect::<Vec<_>>()}),
        );
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
