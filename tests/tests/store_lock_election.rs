//! The v3lock / v3election gRPC services and the Rust lock/election helpers
//! against a 3-member herd cluster: mutual exclusion, hand-over on unlock,
//! and leadership passing on resign.

use std::time::Duration;

use herd_client::Client;
use herd_client::proto::v3electionpb::{CampaignRequest, LeaderRequest, ResignRequest};
use herd_client::proto::v3lockpb::{LockRequest, UnlockRequest};
use herd_client::session::Session;
use herd_client::{election, lock};
use herd_tests::store::{Cluster, Server};

/// Runs `f` on a fresh runtime, failing the test if it takes over a minute.
fn run(f: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), f).await })
        .expect("the scenario did not finish within 60 s");
}

#[test]
fn lock_service_excludes_a_second_holder_until_unlock() {
    let cluster = Cluster::start(Server::Herd, 3);
    let (a, b) = (
        cluster.members[0].client.to_string(),
        cluster.members[2].client.to_string(),
    );
    let credentials = cluster.credentials();
    run(async move {
        let ca = Client::connect_with(&[a], &credentials).await.unwrap();
        let cb = Client::connect_with(&[b], &credentials).await.unwrap();
        let sa = Session::new(&ca, Duration::from_secs(30)).await.unwrap();
        let sb = Session::new(&cb, Duration::from_secs(30)).await.unwrap();
        let first = ca
            .lock()
            .lock(LockRequest {
                name: b"gate".to_vec(),
                lease: sa.lease(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(first.key.starts_with(b"gate/"));
        let mut lb = cb.lock();
        let second = tokio::spawn(async move {
            lb.lock(LockRequest {
                name: b"gate".to_vec(),
                lease: sb.lease(),
            })
            .await
            .map(|r| (r.into_inner(), sb))
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !second.is_finished(),
            "a second holder got the lock while the first held it"
        );
        ca.lock()
            .unlock(UnlockRequest {
                key: first.key.clone(),
            })
            .await
            .unwrap();
        let (got, _sb) = tokio::time::timeout(Duration::from_secs(10), second)
            .await
            .expect("hand-over")
            .unwrap()
            .unwrap();
        assert_ne!(got.key, first.key);
        sa.close().await.unwrap();
    });
}

#[test]
fn lock_helper_released_by_lease_revocation_and_election_passes_on_resign() {
    let cluster = Cluster::start(Server::Herd, 3);
    let eps = cluster
        .endpoints()
        .split(',')
        .map(str::to_owned)
        .collect::<Vec<_>>();
    let credentials = cluster.credentials();
    run(async move {
        let c = Client::connect_with(&eps, &credentials).await.unwrap();
        // A holder that dies (its lease revoked) releases the lock.
        let s1 = Session::new(&c, Duration::from_secs(30)).await.unwrap();
        let s2 = Session::new(&c, Duration::from_secs(30)).await.unwrap();
        lock::lock(&c, b"reboot", s1.lease()).await.unwrap();
        let c2 = c.clone();
        let lease2 = s2.lease();
        let waiter = tokio::spawn(async move { lock::lock(&c2, b"reboot", lease2).await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiter.is_finished());
        s1.close().await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("lock after revoke")
            .unwrap()
            .unwrap();

        // Election through the gRPC service: alice leads, bob waits; alice resigns.
        let sa = Session::new(&c, Duration::from_secs(30)).await.unwrap();
        let sb = Session::new(&c, Duration::from_secs(30)).await.unwrap();
        let alice = c
            .election()
            .campaign(CampaignRequest {
                name: b"sched".to_vec(),
                lease: sa.lease(),
                value: b"alice".to_vec(),
            })
            .await
            .unwrap()
            .into_inner()
            .leader
            .unwrap();
        let mut eb = c.election();
        let lease_b = sb.lease();
        let bob = tokio::spawn(async move {
            eb.campaign(CampaignRequest {
                name: b"sched".to_vec(),
                lease: lease_b,
                value: b"bob".to_vec(),
            })
            .await
        });
        let now = c
            .election()
            .leader(LeaderRequest {
                name: b"sched".to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(now.kv.unwrap().value, b"alice");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!bob.is_finished());
        c.election()
            .resign(ResignRequest {
                leader: Some(alice),
            })
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), bob)
            .await
            .expect("bob leads")
            .unwrap()
            .unwrap();
        let (kv, _) = election::leader(&c, b"sched").await.unwrap();
        assert_eq!(kv.value, b"bob");
        drop(sb);
    });
}
