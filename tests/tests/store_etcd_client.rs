//! Conformance: the `etcd-client` crate (tonic, the client most Rust
//! programs use) drives a 3-member herd cluster through KV, txn, watch,
//! lease, lock and election calls. The same checks run against Debian's
//! etcd, so a wrong expectation here fails there first.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, LeaseTimeToLiveOptions, LockOptions,
    PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use herd_tests::store::{Cluster, Server};

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

async fn value(c: &mut Client, key: &str) -> Option<String> {
    let r = c.get(key, None).await.expect("get");
    r.kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
}

async fn drive(endpoints: Vec<String>, options: etcd_client::ConnectOptions) {
    // One client per member, as programs pinned to a local member are,
    // both over mutual TLS.
    let mut a = Client::connect([endpoints[0].as_str()], Some(options.clone()))
        .await
        .expect("connect");
    let mut b = Client::connect([endpoints[1].as_str()], Some(options))
        .await
        .expect("connect");

    // put / get / prev_kv / prefix / count / delete, across members.
    let put = a.put("greeting", "hello", None).await.unwrap();
    let first = put.header().unwrap().revision();
    assert_eq!(value(&mut b, "greeting").await.as_deref(), Some("hello"));
    let put = a
        .put("greeting", "hi", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(put.prev_key().unwrap().value(), b"hello");
    for (k, v) in [("dir/a", "1"), ("dir/b", "2"), ("dir/c", "3")] {
        b.put(k, v, None).await.unwrap();
    }
    let r = a
        .get("dir/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let keys: Vec<&str> = r.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
    assert_eq!(keys, ["dir/a", "dir/b", "dir/c"]);
    let r = a
        .get(
            "dir/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!(r.count(), 3);
    let r = a
        .get("greeting", Some(GetOptions::new().with_revision(first)))
        .await
        .unwrap();
    assert_eq!(r.kvs()[0].value(), b"hello", "a read at a past revision");
    let r = b
        .get("greeting", Some(GetOptions::new().with_serializable()))
        .await
        .unwrap();
    assert!(r.kvs().len() <= 1);
    let d = a.delete("dir/b", None).await.unwrap();
    assert_eq!(d.deleted(), 1);
    assert_eq!(value(&mut b, "dir/b").await, None);

    // txn: compare and swap, both branches, reads inside.
    let t = b
        .txn(
            Txn::new()
                .when([Compare::value("greeting", CompareOp::Equal, "hi")])
                .and_then([
                    TxnOp::put("greeting", "swapped", None),
                    TxnOp::get("dir/a", None),
                ])
                .or_else([TxnOp::get("greeting", None)]),
        )
        .await
        .unwrap();
    assert!(t.succeeded());
    match &t.op_responses()[1] {
        TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].value(), b"1"),
        other => panic!("expected a get response, got {other:?}"),
    }
    let t = a
        .txn(
            Txn::new()
                .when([Compare::version("greeting", CompareOp::Equal, 0)])
                .and_then([TxnOp::put("greeting", "never", None)])
                .or_else([TxnOp::get("greeting", None)]),
        )
        .await
        .unwrap();
    assert!(!t.succeeded());
    match &t.op_responses()[0] {
        TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].value(), b"swapped"),
        other => panic!("expected a get response, got {other:?}"),
    }

    // watch: events from a revision, live events, cancel.
    let start = a
        .get("w/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
        + 1;
    b.put("w/1", "one", None).await.unwrap();
    let mut watch = a
        .watch(
            "w/",
            Some(WatchOptions::new().with_prefix().with_start_revision(start)),
        )
        .await
        .unwrap();
    let created = within("watch created", watch.message())
        .await
        .unwrap()
        .unwrap();
    assert!(created.created());
    let id = created.watch_id();
    let mut seen = Vec::new();
    let mut live_sent = false;
    while seen.len() < 3 {
        let resp = within("watch events", watch.message())
            .await
            .unwrap()
            .expect("the watch stream ended");
        for ev in resp.events() {
            let kv = ev.kv().unwrap();
            seen.push((
                ev.event_type(),
                kv.key_str().unwrap().to_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
            ));
        }
        if !live_sent {
            live_sent = true;
            b.put("w/2", "two", None).await.unwrap();
            b.delete("w/1", None).await.unwrap();
        }
    }
    assert_eq!(
        seen,
        [
            (EventType::Put, "w/1".to_owned(), "one".to_owned()),
            (EventType::Put, "w/2".to_owned(), "two".to_owned()),
            (EventType::Delete, "w/1".to_owned(), String::new()),
        ]
    );
    watch.cancel(id).await.unwrap();
    loop {
        let resp = within("watch cancel", watch.message())
            .await
            .unwrap()
            .unwrap();
        if resp.canceled() {
            assert_eq!(resp.watch_id(), id);
            break;
        }
    }

    // lease: grant, attach, keep alive, time to live with keys, revoke.
    let lease = a.lease_grant(5, None).await.unwrap().id();
    a.put("leased", "x", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    let (mut keeper, mut renewals) = b.lease_keep_alive(lease).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let renewed = within("keep-alive answer", renewals.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renewed.id(), lease);
    assert!(renewed.ttl() > 0);
    let ttl = b
        .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(ttl.granted_ttl(), 5);
    assert_eq!(ttl.keys(), [b"leased".to_vec()]);
    assert!(
        a.leases()
            .await
            .unwrap()
            .leases()
            .iter()
            .any(|l| l.id() == lease)
    );
    a.lease_revoke(lease).await.unwrap();
    assert_eq!(value(&mut b, "leased").await, None, "revoking kept the key");

    // lock: the second locker waits until the first unlocks.
    let l1 = a.lease_grant(10, None).await.unwrap().id();
    let l2 = b.lease_grant(10, None).await.unwrap().id();
    let held = a
        .lock("mutex", Some(LockOptions::new().with_lease(l1)))
        .await
        .unwrap();
    let mut waiter = b.clone();
    let second = tokio::spawn(async move {
        waiter
            .lock("mutex", Some(LockOptions::new().with_lease(l2)))
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!second.is_finished(), "both lockers hold the lock");
    a.unlock(held.key()).await.unwrap();
    let got = within("the second locker", second).await.unwrap();
    assert!(got.key().starts_with(b"mutex/"));
    b.unlock(got.key()).await.unwrap();

    // election: campaign, leader, resign.
    let el = a.lease_grant(10, None).await.unwrap().id();
    let won = a.campaign("chair", "alice", el).await.unwrap();
    let leader = b.leader("chair").await.unwrap();
    assert_eq!(leader.kv().unwrap().value(), b"alice");
    a.resign(Some(
        etcd_client::ResignOptions::new().with_leader(won.leader().unwrap().clone()),
    ))
    .await
    .unwrap();
    assert!(
        b.leader("chair").await.is_err(),
        "no leader after resigning"
    );

    // cluster and maintenance calls clients make at start.
    assert_eq!(a.member_list().await.unwrap().members().len(), 3);
    let status = b.status().await.unwrap();
    assert_ne!(status.leader(), 0);
}

fn run(server: Server) {
    let cluster = Cluster::start(server, 3);
    let endpoints: Vec<String> = cluster
        .members
        .iter()
        .map(|m| m.client.to_string())
        .collect();
    let rt = cluster.client_runtime();
    rt.block_on(rt.spawn(drive(endpoints, cluster.etcd_client_options())))
        .expect("client task");
}

#[test]
fn etcd_client_crate_works_against_a_three_member_herd_cluster() {
    run(Server::Herd);
}

#[test]
fn etcd_client_checks_hold_against_real_etcd() {
    run(Server::Etcd);
}
