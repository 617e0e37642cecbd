//! Robustness, modelled on etcd's suite: clients load a herd cluster while a
//! fault hits it (SIGKILL of the leader, a clean restart, removal and a new
//! join, a paused leader); then the recorded history must be linearizable,
//! no acknowledged write may be missing, and the recorded watch stream must be
//! ordered, unique, atomic per revision, gap-free and resumable.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use herd_orchestrator::api::client::{Client, prefix_end};
use herd_orchestrator::proto::etcdserverpb::RangeRequest;
use herd_tests::linearizability::{self, Verdict};
use herd_tests::robustness::{PREFIX, check_no_lost_writes, check_watch, run_clients, watch_all};
use herd_tests::store::{Cluster, Server, etcdctl};

const CLIENTS: usize = 8;
const KEYS: usize = 5;

/// Runs the workload on `load_members`, calls `fault` after two seconds of
/// load, keeps loading for three more, and checks everything.
fn scenario(mut cluster: Cluster, load_members: &[usize], fault: impl FnOnce(&mut Cluster)) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let endpoints: Vec<String> = load_members
        .iter()
        .map(|&i| cluster.members[i].client.to_string())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let until = Arc::new(AtomicI64::new(i64::MAX));
    let load = rt.spawn(run_clients(
        endpoints.clone(),
        CLIENTS,
        KEYS,
        Arc::clone(&stop),
    ));
    // The watcher starts on the last member so a fault on the leader (often
    // member 0) forces it to resume elsewhere at least sometimes.
    let mut watch_endpoints = endpoints.clone();
    watch_endpoints.rotate_left(endpoints.len() - 1);
    let watcher = rt.spawn(watch_all(
        watch_endpoints,
        Arc::clone(&stop),
        Arc::clone(&until),
    ));
    std::thread::sleep(Duration::from_secs(2));
    fault(&mut cluster);
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let history = rt.block_on(load).expect("load task");

    let live: Vec<String> = cluster
        .members
        .iter_mut()
        .filter_map(|m| m.is_running().then(|| m.client.to_string()))
        .collect();
    let final_revision = rt.block_on(async {
        let client = Client::connect(&live).await.expect("a live member");
        let r = client
            .kv()
            .range(RangeRequest {
                key: PREFIX.as_bytes().to_vec(),
                range_end: prefix_end(PREFIX.as_bytes()),
                count_only: true,
                ..Default::default()
            })
            .await
            .expect("final read");
        r.into_inner().header.expect("header").revision
    });
    until.store(final_revision, Ordering::Relaxed);
    let (log, resumes) = rt.block_on(watcher).expect("watch task");
    // The reference: one fresh, complete watch from revision 1.
    let done = Arc::new(AtomicBool::new(true));
    let (reference, _) = rt.block_on(watch_all(
        live,
        done,
        Arc::new(AtomicI64::new(final_revision)),
    ));
    let reference: Vec<_> = reference.into_iter().flatten().collect();

    let acknowledged = history.iter().filter(|o| o.output.is_some()).count();
    let unknown = history.len() - acknowledged;
    eprintln!(
        "{acknowledged} acknowledged operations, {unknown} unknown, revision {final_revision}, watch resumed {resumes} times"
    );
    assert!(
        acknowledged >= 100,
        "too little load got through to check anything ({acknowledged} operations)"
    );
    match linearizability::check(&history, 5_000_000) {
        Verdict::Linearizable => {}
        Verdict::Violation { key, operations } => panic!(
            "history of {} is not linearizable:\n{}",
            String::from_utf8_lossy(&key),
            operations
                .iter()
                .map(|o| format!("{o:?}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        Verdict::Undecided { key } => panic!(
            "linearizability of {} undecided within the search budget",
            String::from_utf8_lossy(&key)
        ),
    }
    check_no_lost_writes(&history, &reference).unwrap();
    check_watch(&log, &reference).unwrap();
    assert!(
        reference
            .last()
            .is_some_and(|e| e.revision <= final_revision)
    );
}

#[test]
fn store_robustness_single_member_killed_and_restarted() {
    let cluster = Cluster::start(Server::Herd, 1);
    scenario(cluster, &[0], |c| {
        c.kill(0);
        std::thread::sleep(Duration::from_millis(500));
        c.restart(0);
    });
}

#[test]
fn store_robustness_leader_killed_mid_load() {
    let cluster = Cluster::start(Server::Herd, 3);
    scenario(cluster, &[0, 1, 2], |c| {
        let leader = c.leader();
        c.kill(leader);
        std::thread::sleep(Duration::from_secs(2));
        c.restart(leader);
    });
}

#[test]
fn store_robustness_member_restarted_cleanly() {
    let cluster = Cluster::start(Server::Herd, 3);
    scenario(cluster, &[0, 1, 2], |c| {
        let leader = c.leader();
        let follower = (leader + 1) % 3;
        assert!(
            c.terminate(follower),
            "SIGTERM did not stop the member cleanly:\n{}",
            c.members[follower].log_tail()
        );
        c.restart(follower);
    });
}

#[test]
fn store_robustness_member_removed_and_new_one_joined() {
    let cluster = Cluster::start(Server::Herd, 3);
    let leader = cluster.leader();
    let leaving = (leader + 1) % 3;
    let staying: Vec<usize> = (0..3).filter(|&i| i != leaving).collect();
    scenario(cluster, &staying, move |c| {
        let id = format!(
            "{:x}",
            herd_orchestrator::store::member_id(&c.members[leaving].name)
        );
        let out = etcdctl(
            &c.members[leader].client.to_string(),
            &["member", "remove", &id],
            None,
        );
        assert!(
            out.status.success(),
            "member remove: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        c.kill(leaving);
        let joined = c.join_new(leader);
        let list = etcdctl(
            &c.members[leader].client.to_string(),
            &["member", "list"],
            None,
        );
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(list.contains(&c.members[joined].name), "{list}");
        assert!(
            !list.contains(&format!(", {}, ", c.members[leaving].name)),
            "{list}"
        );
    });
}

#[test]
fn store_robustness_leader_paused() {
    // SIGSTOP cuts the leader off from everyone (as a partition does) without
    // losing its state; after SIGCONT it must step down and catch up.
    let cluster = Cluster::start(Server::Herd, 3);
    scenario(cluster, &[0, 1, 2], |c| {
        let leader = c.leader();
        c.signal(leader, libc::SIGSTOP);
        std::thread::sleep(Duration::from_secs(3));
        c.signal(leader, libc::SIGCONT);
    });
}

#[test]
fn store_robustness_harness_accepts_real_etcd_with_its_leader_killed() {
    // The reference: the same workload, fault and checks against Debian's
    // etcd 3.4 must pass, or the harness (not herd) is wrong.
    let cluster = Cluster::start(Server::Etcd, 3);
    scenario(cluster, &[0, 1, 2], |c| {
        let leader = c.leader();
        c.kill(leader);
        std::thread::sleep(Duration::from_secs(2));
        c.restart(leader);
    });
}
