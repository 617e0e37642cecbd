//! `herd agent --watch-progress-notify-interval`: a real agent sends an idle
//! `progress_notify` watch the current revision, over real gRPC.

use std::process::{Command, Stdio};
use std::time::Duration;

use herd_client::Client;
use herd_client::proto::etcdserverpb::{
    PutRequest, RangeRequest, WatchCreateRequest, WatchRequest, watch_request::RequestUnion,
};
use herd_tests::store::free_addr;
use herd_tests::{bin, process};
use tokio_stream::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_progress_notify_watch_hears_the_current_revision() {
    let dir = tempfile::tempdir().unwrap();
    let (client_addr, peer_addr) = (free_addr(), free_addr());
    let _agent = process::spawn(
        "herd agent",
        Command::new(bin::herd())
            .args([
                "agent",
                "--name",
                "solo",
                "--token",
                "t",
                "--insecure-plaintext",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("solo"))
            .args(["--listen-client", &client_addr.to_string()])
            .args(["--listen-peer", &peer_addr.to_string()])
            .args(["--watch-progress-notify-interval", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let endpoints = [client_addr.to_string()];
    // The agent is up once it serves a write.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (client, rev) = loop {
        if let Ok(client) = Client::connect(&endpoints).await
            && let Ok(r) = client
                .kv()
                .put(PutRequest {
                    key: b"elsewhere".to_vec(),
                    value: b"1".to_vec(),
                    ..Default::default()
                })
                .await
        {
            break (client, r.into_inner().header.unwrap().revision);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"quiet".to_vec(),
            progress_notify: true,
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut stream = client
        .watch()
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let next = async |s: &mut tonic::Streaming<_>| {
        tokio::time::timeout(Duration::from_secs(30), s.next())
            .await
            .expect("a response in time")
            .expect("the stream is open")
            .expect("a response")
    };
    let created: herd_client::proto::etcdserverpb::WatchResponse = next(&mut stream).await;
    assert!(created.created);
    let progress: herd_client::proto::etcdserverpb::WatchResponse = next(&mut stream).await;
    assert!(
        progress.events.is_empty() && !progress.canceled && !progress.created,
        "{progress:?}"
    );
    assert_eq!(progress.watch_id, created.watch_id);
    // The agent writes on its own (its machine record, leases), so the
    // current revision may have moved past our put: the notify must carry
    // a revision between our write and a read made after it.
    let heard = progress.header.unwrap().revision;
    let now = client
        .kv()
        .range(RangeRequest {
            key: b"quiet".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision;
    assert!(
        rev <= heard && heard <= now,
        "progress at {heard}, outside [{rev}, {now}]"
    );
    drop(tx);
}

#[test]
fn a_zero_progress_interval_is_refused_by_name() {
    let out = Command::new(bin::herd())
        .args([
            "agent",
            "--name",
            "x",
            "--data-dir",
            "/nonexistent",
            "--token",
            "t",
        ])
        .args(["--watch-progress-notify-interval", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--watch-progress-notify-interval"), "{err}");
}
