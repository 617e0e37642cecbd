//! `herd kv watch` and `herd kv elect --listen`: streams until stopped.

use std::time::Duration;

use anyhow::bail;
use serde_json::json;
use tokio_stream::StreamExt;

use herd_client::Client;
use herd_client::election;
use herd_client::proto::etcdserverpb::{WatchCreateRequest, WatchRequest, watch_request};
use herd_client::proto::mvccpb::event::EventType;

use herd_cli::Output;

use super::render::{emit, kv_json, lossy, range_of};
use tokio_util::sync::CancellationToken;

pub(super) async fn watch(
    client: &Client,
    key: &str,
    prefix: bool,
    rev: i64,
    out: Output,
    shutdown: &CancellationToken,
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
    let signal = shutdown.cancelled();
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
            if out.is_structured() {
                emit(
                    out,
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

pub(super) async fn observe(
    client: &Client,
    name: &[u8],
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut last = Vec::new();
    let signal = shutdown.cancelled();
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
