//! In-process cluster tests on loopback: single member, 3 members, joins, restarts, snapshots, partitions.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::types::*;
use super::{Bootstrap, Config, ConfigError, Member, StoreError, member_id};

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn config(name: &str, dir: &Path, addr: SocketAddr) -> Config {
    let mut c = Config::new(name, dir.join(name), addr, "s3cret");
    c.heartbeat = Duration::from_millis(50);
    c.election_timeout = (Duration::from_millis(400), Duration::from_millis(800));
    c.join_timeout = Duration::from_secs(20);
    c
}

async fn put(m: &Member, k: &str, v: &str) -> Result<PutResponse, StoreError> {
    m.put(PutRequest {
        key: k.into(),
        value: v.into(),
        ..PutRequest::default()
    })
    .await
}

async fn get(m: &Member, k: &str, serializable: bool) -> Option<Vec<u8>> {
    m.range(RangeRequest {
        key: k.into(),
        serializable,
        ..RangeRequest::default()
    })
    .await
    .unwrap()
    .kvs
    .pop()
    .map(|kv| kv.value)
}

async fn until<F: FnMut() -> bool>(what: &str, mut f: F) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn leader_of(members: &[&Member]) -> u64 {
    let mut leader = 0;
    until("a leader all members agree on", || {
        let ls: Vec<Option<u64>> = members.iter().map(|m| m.leader()).collect();
        match ls[0] {
            Some(l) if ls.iter().all(|x| *x == Some(l)) => {
                leader = l;
                true
            }
            _ => false,
        }
    })
    .await;
    leader
}

async fn three(dir: &Path) -> (Vec<Member>, Vec<SocketAddr>) {
    three_with(dir, |_| {}).await
}

/// Member `i`'s config in a three-member cluster on `addrs`.
fn member_config(dir: &Path, addrs: &[SocketAddr], i: usize) -> Config {
    let mut c = config(&format!("m{i}"), dir, addrs[i]);
    c.bootstrap = Bootstrap::Found(
        addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("m{i}"), a.to_string()))
            .collect(),
    );
    c.advertise_client = Some(format!("127.0.0.1:{}", 40000 + i));
    c
}

/// Three members with `tune` applied to each one's config.
async fn three_with(dir: &Path, tune: impl Fn(&mut Config)) -> (Vec<Member>, Vec<SocketAddr>) {
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let mut members = Vec::new();
    for i in 0..3 {
        let mut c = member_config(dir, &addrs, i);
        tune(&mut c);
        members.push(Member::start(c).await.unwrap());
    }
    (members, addrs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_member_kv_txn_watch_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let m = Member::start(config("solo", dir.path(), addr))
        .await
        .unwrap();
    let r = put(&m, "a", "1").await.unwrap();
    assert_eq!(r.header.revision, 1);
    assert_eq!(r.header.member_id, member_id("solo"));
    assert_ne!(r.header.cluster_id, 0);
    assert!(r.header.raft_term >= 1);
    let mut w = m
        .watch(WatchRequest {
            key: "a".into(),
            start_revision: 1,
            prev_kv: true,
            ..WatchRequest::default()
        })
        .unwrap();
    put(&m, "a", "2").await.unwrap();
    let t = m
        .txn(TxnRequest {
            compare: vec![Compare {
                key: "a".into(),
                range_end: vec![],
                result: CompareResult::Equal,
                target: CompareTarget::Version(2),
            }],
            success: vec![RequestOp::DeleteRange(DeleteRangeRequest {
                key: "a".into(),
                ..DeleteRangeRequest::default()
            })],
            failure: vec![],
        })
        .await
        .unwrap();
    assert!(t.succeeded);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(5), w.recv())
            .await
            .unwrap()
        {
            Some(WatchBatch::Events { revision, events }) => {
                seen.push((revision, events[0].kind));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        seen,
        vec![
            (1, EventKind::Put),
            (2, EventKind::Put),
            (3, EventKind::Delete)
        ]
    );
    // bad input is an error, not a crash
    assert!(matches!(
        put(&m, "", "x").await,
        Err(StoreError::InvalidRequest(_))
    ));
    let big = "x".repeat(2 << 20);
    assert!(matches!(
        put(&m, "big", &big).await,
        Err(StoreError::InvalidRequest(_))
    ));
    assert!(matches!(
        m.put(PutRequest {
            key: "l".into(),
            lease: 12345,
            ..PutRequest::default()
        })
        .await,
        Err(StoreError::Apply(ApplyError::LeaseNotFound))
    ));
    put(&m, "keep", "me").await.unwrap();
    let twin = Member::start(config("solo", dir.path(), free_addr())).await;
    assert!(
        matches!(&twin, Err(StoreError::Config(ConfigError::DataDirInUse(_)))),
        "a second member on the same data dir must be refused"
    );
    let term = m.raft().metrics().borrow().current_term;
    m.shutdown().await;
    // Restart from the data dir: no re-initialize, data and vote kept.
    let m = Member::start(config("solo", dir.path(), addr))
        .await
        .unwrap();
    until("leader after restart", || m.leader() == Some(m.id())).await;
    assert_eq!(get(&m, "keep", false).await.unwrap(), b"me");
    assert_eq!(get(&m, "a", false).await, None);
    // The vote survived: the term never goes back.
    assert!(m.raft().metrics().borrow().current_term >= term);
    assert_eq!(m.revision(), 4);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_deletes_keys_and_keepalive_extends() {
    let dir = tempfile::tempdir().unwrap();
    let m = Member::start(config("solo", dir.path(), free_addr()))
        .await
        .unwrap();
    until("leader", || m.leader() == Some(m.id())).await;
    let short = m.lease_grant(1, 0).await.unwrap().id;
    let long = m.lease_grant(30, 77).await.unwrap().id;
    assert_eq!(long, 77);
    for (k, l) in [("e/1", short), ("e/2", short), ("e/3", long)] {
        m.put(PutRequest {
            key: k.into(),
            value: "v".into(),
            lease: l,
            ..PutRequest::default()
        })
        .await
        .unwrap();
    }
    let ttl = m.lease_time_to_live(long, true).await.unwrap();
    assert_eq!((ttl.granted_ttl, ttl.keys.len()), (30, 1));
    assert!(ttl.ttl > 0 && ttl.ttl <= 30);
    assert_eq!(m.lease_keep_alive(long).await.unwrap().ttl, 30);
    let before = m.revision();
    let mut w = m
        .watch(WatchRequest {
            key: "e/".into(),
            range_end: "e0".into(),
            ..WatchRequest::default()
        })
        .unwrap();
    // The expiry is one replicated entry: both keys go in one revision.
    let batch = tokio::time::timeout(Duration::from_secs(10), w.recv())
        .await
        .unwrap()
        .unwrap();
    let WatchBatch::Events { revision, events } = batch else {
        panic!("{batch:?}")
    };
    assert_eq!(revision, before + 1);
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.kind == EventKind::Delete));
    assert_eq!(m.lease_time_to_live(short, false).await.unwrap().ttl, -1);
    assert!(matches!(
        m.lease_keep_alive(short).await,
        Err(StoreError::LeaseNotFound)
    ));
    assert_eq!(m.lease_leases().await.unwrap().leases, vec![77]);
    m.lease_revoke(77).await.unwrap();
    assert_eq!(get(&m, "e/3", false).await, None);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_forward_and_survive_leader_loss() {
    let dir = tempfile::tempdir().unwrap();
    let (mut members, addrs) = three(dir.path()).await;
    let refs: Vec<&Member> = members.iter().collect();
    let leader = leader_of(&refs).await;
    let li = members.iter().position(|m| m.id() == leader).unwrap();
    let fi = (li + 1) % 3;
    // writes through a follower are forwarded; linearizable reads everywhere
    let mut w = members[(li + 2) % 3]
        .watch(WatchRequest {
            key: "k/".into(),
            range_end: "k0".into(),
            ..WatchRequest::default()
        })
        .unwrap();
    for i in 0..20 {
        put(&members[fi], &format!("k/{i}"), &i.to_string())
            .await
            .unwrap();
    }
    for m in &members {
        assert_eq!(get(m, "k/19", false).await.unwrap(), b"19");
    }
    let st = members[fi].status().await.unwrap();
    assert_eq!(st.leader, leader);
    assert_eq!(members[fi].member_list().await.unwrap().members.len(), 3);
    // every member advertised its client address into the membership
    let mut listed = 0;
    until("client addresses advertised", || {
        let m = members[fi]
            .raft()
            .metrics()
            .borrow()
            .membership_config
            .clone();
        listed = m
            .membership()
            .nodes()
            .filter(|(_, n)| n.client_addr.is_some())
            .count();
        listed == 3
    })
    .await;
    // lose the leader
    let old = members.remove(li);
    old.shutdown().await;
    let mut new_leader = 0;
    until("survivors elect a new leader", || {
        match (members[0].leader(), members[1].leader()) {
            (Some(a), Some(b)) if a == b && a != leader => {
                new_leader = a;
                true
            }
            _ => false,
        }
    })
    .await;
    assert_ne!(new_leader, 0);
    for i in 20..30 {
        put(&members[0], &format!("k/{i}"), &i.to_string())
            .await
            .unwrap();
    }
    // the watch on a surviving member saw every revision once, in order
    let mut revs = Vec::new();
    while revs.len() < 30 {
        match tokio::time::timeout(Duration::from_secs(10), w.recv()).await {
            Ok(Some(WatchBatch::Events { revision, .. })) => revs.push(revision),
            other => panic!("watch ended: {other:?} after {revs:?}"),
        }
    }
    assert_eq!(revs, (1..=30).collect::<Vec<i64>>());
    // the old leader restarts from its data dir and catches up
    let back = Member::start(member_config(dir.path(), &addrs, li))
        .await
        .unwrap();
    until("restarted member catches up", || back.revision() == 30).await;
    assert_eq!(get(&back, "k/29", true).await.unwrap(), b"29");
    // a read-only txn on a follower (read index, no log entry) right after a
    // write through another member sees that write
    for i in 0..10 {
        put(&members[0], "ro", &i.to_string()).await.unwrap();
        let t = back
            .txn(TxnRequest {
                compare: vec![],
                success: vec![RequestOp::Range(RangeRequest {
                    key: "ro".into(),
                    ..RangeRequest::default()
                })],
                failure: vec![],
            })
            .await
            .unwrap();
        let ResponseOp::Range(r) = &t.responses[0] else {
            panic!("{t:?}")
        };
        assert_eq!(r.kvs[0].value, i.to_string().as_bytes());
    }
    back.shutdown().await;
    for m in members {
        m.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_promotes_up_to_max_voters_then_learners_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let a_addr = free_addr();
    let mut c = config("a", dir.path(), a_addr);
    c.max_voters = 2;
    let a = Member::start(c).await.unwrap();
    put(&a, "before", "join").await.unwrap();
    let mut c = config("b", dir.path(), free_addr());
    c.bootstrap = Bootstrap::Join(a_addr.to_string());
    let b = Member::start(c).await.unwrap();
    assert_eq!(b.cluster_id(), a.cluster_id());
    // c joins through b (a follower): the join is routed to the leader
    let mut c_cfg = config("c", dir.path(), free_addr());
    c_cfg.bootstrap = Bootstrap::Join(
        b.raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&b.id())
            .unwrap()
            .peer_addr
            .clone(),
    );
    c_cfg.max_voters = 2;
    let c = Member::start(c_cfg).await.unwrap();
    let list = a.member_list().await.unwrap();
    let learner: Vec<bool> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            list.members
                .iter()
                .find(|m| m.name == *n)
                .unwrap()
                .is_learner
        })
        .collect();
    assert_eq!(learner, vec![false, false, true]);
    // the learner serves reads (through the leader) and local watches
    assert_eq!(get(&c, "before", false).await.unwrap(), b"join");
    put(&c, "from", "learner").await.unwrap();
    assert_eq!(get(&a, "from", false).await.unwrap(), b"learner");
    // removing a voter leaves room: the caught-up learner is promoted by itself
    a.member_remove(b.id()).await.unwrap();
    until("learner promoted after a voter left", || {
        let m = a.raft().metrics().borrow().membership_config.clone();
        m.membership().voter_ids().any(|v| v == c.id())
    })
    .await;
    // promoting a voter again is a no-op
    c.member_promote(c.id()).await.unwrap();
    assert!(
        a.member_list()
            .await
            .unwrap()
            .members
            .iter()
            .all(|m| !m.is_learner)
    );
    assert_eq!(a.member_list().await.unwrap().members.len(), 2);
    assert!(matches!(
        a.member_remove(12345).await,
        Err(StoreError::MemberNotFound)
    ));
    put(&a, "after", "remove").await.unwrap();
    assert_eq!(get(&c, "after", false).await.unwrap(), b"remove");
    for m in [a, b, c] {
        m.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_and_garbage_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let a_addr = free_addr();
    let a = Member::start(config("a", dir.path(), a_addr))
        .await
        .unwrap();
    // garbage on the peer port
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(a_addr).await.unwrap();
        s.write_all(&[0xde; 200]).await.unwrap();
    }
    let mut c = config("intruder", dir.path(), free_addr());
    c.security = crate::Security::Insecure {
        token: "wrong".into(),
    };
    c.bootstrap = Bootstrap::Join(a_addr.to_string());
    c.join_timeout = Duration::from_secs(2);
    let err = Member::start(c).await.err().expect("join must fail");
    assert!(matches!(err, StoreError::Join { .. }), "{err}");
    assert!(err.to_string().contains("token"), "{err}");
    put(&a, "still", "alive").await.unwrap();
    assert_eq!(a.member_list().await.unwrap().members.len(), 1);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_member_catches_up_by_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let ic: Vec<(String, String)> = (0..3)
        .map(|i| (format!("m{i}"), addrs[i].to_string()))
        .collect();
    let cfg = |i: usize| {
        let mut c = config(&format!("m{i}"), dir.path(), addrs[i]);
        c.bootstrap = Bootstrap::Found(ic.clone());
        c.snapshot_threshold = 50;
        c.keep_logs_after_snapshot = 0;
        c
    };
    let mut members = Vec::new();
    for i in 0..3 {
        members.push(Member::start(cfg(i)).await.unwrap());
    }
    let refs: Vec<&Member> = members.iter().collect();
    let leader = leader_of(&refs).await;
    let lag = members.iter().position(|m| m.id() != leader).unwrap();
    members.remove(lag).shutdown().await;
    for i in 0..300 {
        put(&members[0], &format!("s/{i:03}"), "v").await.unwrap();
    }
    let leader_m = members.iter().find(|m| m.id() == leader).unwrap();
    until("leader purged its log past the lagging member", || {
        leader_m
            .raft()
            .metrics()
            .borrow()
            .purged
            .is_some_and(|p| p.index > 100)
    })
    .await;
    let back = Member::start(cfg(lag)).await.unwrap();
    until("lagging member caught up", || back.revision() == 300).await;
    assert!(back.raft().metrics().borrow().snapshot.is_some());
    let r = back
        .range(RangeRequest {
            key: "s/".into(),
            range_end: "s0".into(),
            serializable: true,
            count_only: true,
            ..RangeRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(r.count, 300);
    back.shutdown().await;
    for m in members {
        m.shutdown().await;
    }
}

/// Rough in-process throughput probe (the real benchmark is `herd bench kv`):
/// `cargo test -p herd-orchestrator --release store::tests::probe -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn probe_concurrent_put_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let (members, _) = three(dir.path()).await;
    let refs: Vec<&Member> = members.iter().collect();
    let leader = leader_of(&refs).await;
    let members = std::sync::Arc::new(members);
    let li = members.iter().position(|m| m.id() == leader).unwrap();
    for clients in [1usize, 16, 64] {
        let start = std::time::Instant::now();
        let per = if clients == 1 { 500 } else { 4000 / clients };
        let mut tasks = Vec::new();
        for c in 0..clients {
            let members = members.clone();
            tasks.push(tokio::spawn(async move {
                let value = "v".repeat(256);
                for i in 0..per {
                    put(&members[li], &format!("b/{c}/{i}"), &value)
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let n = clients * per;
        println!(
            "{clients} clients: {n} puts in {:?} = {:.0}/s",
            start.elapsed(),
            n as f64 / start.elapsed().as_secs_f64()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_learner_timeout_is_an_error_not_silence() {
    use super::peer::{ClientSecurity, Forward, PeerClient, Token, WireError};
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut c = config("a", dir.path(), addr);
    c.join_timeout = Duration::from_secs(2);
    let a = Member::start(c).await.unwrap();
    until("leader", || a.leader() == Some(a.id())).await;
    // A joiner whose peer address answers nothing can never catch up.
    let client = PeerClient::new(
        99,
        ClientSecurity::Token(Token::new("s3cret")),
        std::sync::Arc::default(),
        super::Partition::default(),
    );
    let dead = free_addr().to_string();
    let answer = client
        .forward(
            a.id(),
            &addr.to_string(),
            Forward::Join {
                id: 99,
                node: PeerNode {
                    name: "ghost".into(),
                    peer_addr: dead,
                    client_addr: None,
                },
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    match answer {
        Err(WireError::Other(msg)) => assert!(msg.contains("did not complete"), "{msg}"),
        other => panic!("expected a visible timeout, got {other:?}"),
    }
    // the cluster still works and the ghost never became a voter
    put(&a, "k", "v").await.unwrap();
    let list = a.member_list().await.unwrap();
    assert!(
        list.members
            .iter()
            .all(|m| m.name != "ghost" || m.is_learner)
    );
    a.shutdown().await;
}

/// The token alone does not make two clusters one: a peer that knows its
/// cluster id and names another one is turned away; one without a cluster
/// id yet (a joiner) is let in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_another_cluster_with_the_same_token_is_refused() {
    use super::peer::{CallError, ClientSecurity, Forward, PeerClient, Token};
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let a = Member::start(config("a", dir.path(), addr)).await.unwrap();
    until("leader", || a.leader() == Some(a.id())).await;
    let ask = |cluster: u64| {
        let client = PeerClient::new(
            99,
            ClientSecurity::Token(Token::new("s3cret")),
            Arc::new(AtomicU64::new(cluster)),
            super::Partition::default(),
        );
        let addr = addr.to_string();
        let target = a.id();
        async move {
            client
                .forward(target, &addr, Forward::ReadIndex, Duration::from_secs(10))
                .await
        }
    };
    match ask(a.cluster_id() ^ 1).await {
        Err(CallError::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}")
        }
        other => panic!("a foreign cluster's member was served: {other:?}"),
    }
    assert!(matches!(ask(a.cluster_id()).await, Ok(Ok(_))));
    assert!(matches!(ask(0).await, Ok(Ok(_))));
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_on_a_member_that_catches_up_by_snapshot_sees_every_revision_once() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let ic: Vec<(String, String)> = (0..3)
        .map(|i| (format!("m{i}"), addrs[i].to_string()))
        .collect();
    let mut members = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let mut c = config(&format!("m{i}"), dir.path(), *addr);
        c.bootstrap = Bootstrap::Found(ic.clone());
        c.snapshot_threshold = 40;
        c.keep_logs_after_snapshot = 0;
        members.push(Member::start(c).await.unwrap());
    }
    let refs: Vec<&Member> = members.iter().collect();
    let leader = leader_of(&refs).await;
    let fi = members.iter().position(|m| m.id() != leader).unwrap();
    let li = members.iter().position(|m| m.id() == leader).unwrap();
    put(&members[li], "w/0", "0").await.unwrap();
    let mut w = members[fi]
        .watch(WatchRequest {
            key: "w/".into(),
            range_end: "w0".into(),
            start_revision: 1,
            ..WatchRequest::default()
        })
        .unwrap();
    for (i, m) in members.iter().enumerate() {
        if i != fi {
            members[fi].partition().isolate(m.id());
        }
    }
    for i in 1..200 {
        put(&members[li], &format!("w/{i}"), "v").await.unwrap();
    }
    until("leader purged past the isolated follower", || {
        members[li]
            .raft()
            .metrics()
            .borrow()
            .purged
            .is_some_and(|p| p.index > 100)
    })
    .await;
    members[fi].partition().heal();
    let mut revs = Vec::new();
    while revs.len() < 200 {
        match tokio::time::timeout(Duration::from_secs(20), w.recv()).await {
            Ok(Some(WatchBatch::Events { revision, .. })) => revs.push(revision),
            other => panic!("watch ended: {other:?} after {} revisions", revs.len()),
        }
    }
    assert_eq!(revs, (1..=200).collect::<Vec<i64>>());
    assert!(members[fi].raft().metrics().borrow().snapshot.is_some());
    for m in members {
        m.shutdown().await;
    }
}

// Current-thread runtime on purpose: every put below is queued before the
// proposer task first runs, so grouping is deterministic, not a race.
#[tokio::test]
async fn concurrent_writes_share_log_entries_but_keep_their_own_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let m = Member::start(config("solo", dir.path(), addr))
        .await
        .unwrap();
    until("leader", || m.leader() == Some(m.id())).await;
    let mut w = m
        .watch(WatchRequest {
            key: "k/".into(),
            range_end: "k0".into(),
            ..WatchRequest::default()
        })
        .unwrap();
    let before = m.raft().metrics().borrow().last_log_index.unwrap_or(0);
    let puts = (0..64).map(|i| {
        m.put(PutRequest {
            key: format!("k/{}", i % 48).into_bytes(),
            value: format!("v{i}").into_bytes(),
            ..PutRequest::default()
        })
    });
    // A command that fails inside a group fails alone.
    let (results, revoke) = tokio::join!(futures::future::join_all(puts), m.lease_revoke(777));
    assert!(
        matches!(
            revoke,
            Err(StoreError::LeaseNotFound | StoreError::Apply(_))
        ),
        "{revoke:?}"
    );
    let mut revisions: Vec<i64> = results
        .into_iter()
        .map(|r| r.unwrap().header.revision)
        .collect();
    revisions.sort_unstable();
    assert_eq!(revisions, (1..=64).collect::<Vec<i64>>());
    let entries = m.raft().metrics().borrow().last_log_index.unwrap_or(0) - before;
    assert!(entries < 8, "64 concurrent puts took {entries} log entries");
    // Watchers see each revision on its own, in order.
    let mut seen = Vec::new();
    while seen.len() < 64 {
        match tokio::time::timeout(Duration::from_secs(5), w.recv())
            .await
            .unwrap()
        {
            Some(WatchBatch::Events { revision, events }) => {
                assert_eq!(events.len(), 1);
                seen.push(revision);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen, (1..=64).collect::<Vec<i64>>());
    drop(w);
    m.shutdown().await;
    // Group entries replay from the log after a restart.
    let m = Member::start(config("solo", dir.path(), addr))
        .await
        .unwrap();
    until("leader after restart", || m.leader() == Some(m.id())).await;
    // The log is applied once the new term's first entry commits, a moment
    // after the election.
    until("the log replayed", || m.revision() == 64).await;
    assert_eq!(get(&m, "k/5", false).await.unwrap(), b"v53");
    m.shutdown().await;
}

/// The leader reports its own appends flushed before their fsync, so that
/// the fsync overlaps replication (`store::log`). Nothing may become visible
/// until that fsync is done: with the leader's disk stalled, a write that a
/// follower already holds durably is neither acknowledged to the client nor
/// applied anywhere — it takes the leader's copy to make a quorum of durable
/// copies. When the disk resumes, the write completes everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acknowledged_or_applied_before_the_leaders_own_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let (members, _) = three(dir.path()).await;
    let refs: Vec<&Member> = members.iter().collect();
    let leader = leader_of(&refs).await;
    let li = members.iter().position(|m| m.id() == leader).unwrap();
    put(&members[li], "warm", "up").await.unwrap();
    for m in &members {
        until("the warm-up write applied everywhere", || m.revision() == 1).await;
    }
    let last_index = |m: &Member| m.raft().metrics().borrow().last_log_index.unwrap_or(0);
    let before = last_index(&members[li]);

    // Resumes the disk however this test ends: a stalled writer would hang
    // the members' shutdown.
    struct Resume<'a>(&'a Member);
    impl Drop for Resume<'_> {
        fn drop(&mut self) {
            self.0.stall_log_writes(false);
        }
    }
    let terms = |ms: &[Member]| -> Vec<u64> {
        ms.iter()
            .map(|m| m.raft().metrics().borrow().current_term)
            .collect()
    };
    let terms_before = terms(&members);
    members[li].stall_log_writes(true);
    let resume = Resume(&members[li]);
    let write = put(&members[li], "k", "v");
    let mut write = Box::pin(write);
    let held_back = async {
        // Both followers hold the entry (durably: a follower answers only
        // after its fsync), so openraft counts it committed on the strength
        // of the leader's early report.
        for (i, m) in members.iter().enumerate() {
            if i != li {
                until("a follower holds the new entry", || last_index(m) > before).await;
            }
        }
        // Twenty heartbeats, each of which would carry the commit index.
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    tokio::select! {
        r = &mut write => panic!("acknowledged before the leader's fsync: {r:?}"),
        () = held_back => {}
    }
    // A follower elected meanwhile could legitimately commit the entry in
    // its own term. It must not happen: the stalled leader keeps
    // heartbeating (the commit index it sends stops at what its disk holds).
    assert_eq!(
        terms(&members),
        terms_before,
        "an election happened while the leader's disk was stalled"
    );
    for m in &members {
        assert_eq!(m.revision(), 1, "applied before the leader's fsync");
        assert_eq!(get(m, "k", true).await, None);
    }

    drop(resume);
    let resp = tokio::time::timeout(Duration::from_secs(20), &mut write)
        .await
        .expect("the write completes once the disk resumes")
        .unwrap();
    assert_eq!(resp.header.revision, 2);
    drop(write);
    for m in &members {
        until("the write applied everywhere", || m.revision() == 2).await;
        assert_eq!(get(m, "k", true).await.unwrap(), b"v");
    }
    for m in members {
        m.shutdown().await;
    }
}

/// Issue 18: openraft 0.9 restores a member that led when it stopped as the
/// leader of its old term, with the term's first entry as its read index
/// and only its snapshot applied; followers that had not given up on it yet
/// confirmed it, and linearizable reads returned the snapshot's values. A
/// restarted leader comes back as a follower, and reads through it see
/// every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_leader_comes_back_as_a_follower_and_reads_stay_current() {
    let dir = tempfile::tempdir().unwrap();
    let tune = |c: &mut Config| c.snapshot_threshold = 20;
    let (mut members, addrs) = three_with(dir.path(), tune).await;
    let refs: Vec<&Member> = members.iter().collect();
    let leader = leader_of(&refs).await;
    let li = members.iter().position(|m| m.id() == leader).unwrap();
    for i in 0..40 {
        put(&members[li], "k", &i.to_string()).await.unwrap();
    }
    until("a snapshot on the leader", || {
        members[li].raft().metrics().borrow().snapshot.is_some()
    })
    .await;
    // Writes the snapshot does not hold (fewer than the threshold).
    for i in 40..50 {
        put(&members[li], "k", &i.to_string()).await.unwrap();
    }
    let term = members[li].raft().metrics().borrow().current_term;
    // Restarted well within the followers' lease plus election timeout.
    members.remove(li).shutdown().await;
    let mut c = member_config(dir.path(), &addrs, li);
    tune(&mut c);
    let back = Member::start(c).await.unwrap();
    // The metrics show the restored state once openraft's core started.
    until("the restarted member's state loaded", || {
        back.raft().metrics().borrow().current_term > 0
    })
    .await;
    {
        let m = back.raft().metrics().borrow().clone();
        assert!(
            m.state != openraft::ServerState::Leader || m.current_term > term,
            "the restarted member leads its old term {term} again"
        );
    }
    assert_eq!(get(&back, "k", false).await.unwrap(), b"49");
    for m in &members {
        assert_eq!(get(m, "k", false).await.unwrap(), b"49");
    }
    back.shutdown().await;
    for m in members {
        m.shutdown().await;
    }
}
