//! The cluster network in the namespace lab: each machine a real `herd
//! agent` in its own network namespace on one switch, each with a pod (a
//! namespace plugged into its `herd0`). Three machines lease three
//! distinct subnets and every pod pings every other; traffic leaving the
//! cluster network is masqueraded; a route deleted by hand comes back; a
//! machine restarted — and one restarted while the store has no quorum —
//! keeps its subnet (and pod traffic flows meanwhile); a fourth machine
//! added later is reachable within seconds; a machine removed from the
//! cluster has its route removed everywhere. Once over host-gw, once over
//! vxlan.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use herd_tests::net::{Pod, SubnetEnv, ping_from, read_env, route_to, wait_env};
use herd_tests::store::Cluster;
use herd_tests::wait;
use serde_json::Value;

/// The flags that make member `i` a machine of the cluster network.
fn net_flags(dir: &std::path::Path, i: usize) -> Vec<String> {
    vec![
        "--cluster-iface".into(),
        "peer0".into(),
        "--machine-id".into(),
        format!("machine-{i}"),
        "--subnet-env".into(),
        env_path(dir, i).display().to_string(),
        "--route-check-interval".into(),
        "1".into(),
    ]
}

fn env_path(dir: &std::path::Path, i: usize) -> PathBuf {
    dir.join(format!("m{i}.env"))
}

fn herd_ok(cluster: &Cluster, args: &[&str]) -> String {
    let out = cluster.herd(args);
    assert!(
        out.status.success(),
        "herd {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `herd net subnets -o json`, by machine id.
fn subnets(cluster: &Cluster) -> Vec<Value> {
    let eps = cluster.endpoints();
    let text = herd_ok(
        cluster,
        &["net", "subnets", "-o", "json", "--endpoints", &eps],
    );
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn subnet_of(cluster: &Cluster, machine: &str) -> Option<String> {
    subnets(cluster)
        .iter()
        .find(|r| r["machine_id"] == machine && r["public_ip"].is_string())
        .and_then(|r| r["subnet"].as_str().map(str::to_owned))
}

fn log_tail(cluster: &Cluster, i: usize) -> String {
    cluster.members[i].log_tail()
}

fn scenario(backend: &str) {
    herd_tests::require::root();
    herd_tests::require::tool("nft", "nftables");
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().to_owned();
    let mut cluster = Cluster::start_in_namespaces_with(3, |i| net_flags(&dir, i));
    let eps = cluster.endpoints();

    // A network that does not fit its subnet length is refused, naming why.
    let bad = cluster.herd(&[
        "net",
        "config",
        "set",
        "--endpoints",
        &eps,
        "--network",
        "10.244.0.0/24",
        "--subnet-len",
        "24",
    ]);
    assert!(!bad.status.success());
    let text = String::from_utf8_lossy(&bad.stderr);
    assert!(
        text.contains("SubnetLen 24 does not fit network 10.244.0.0/24"),
        "{text}"
    );
    herd_ok(
        &cluster,
        &[
            "net",
            "config",
            "set",
            "--endpoints",
            &eps,
            "--backend",
            backend,
        ],
    );
    // The backend cannot change under running machines.
    let other = if backend == "vxlan" {
        "host-gw"
    } else {
        "vxlan"
    };
    let change = cluster.herd(&[
        "net",
        "config",
        "set",
        "--endpoints",
        &eps,
        "--backend",
        other,
    ]);
    assert!(!change.status.success());
    let text = String::from_utf8_lossy(&change.stderr);
    assert!(text.contains("Backend cannot change"), "{text}");

    // Three machines, three distinct subnets of 10.244.0.0/16.
    let envs: Vec<SubnetEnv> = (0..3).map(|i| wait_env(&env_path(&dir, i))).collect();
    let mut cidrs: Vec<String> = envs.iter().map(SubnetEnv::cidr).collect();
    cidrs.sort();
    cidrs.dedup();
    assert_eq!(cidrs.len(), 3, "{envs:?}");
    wait::until(
        "three leases with addresses",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            (0..3)
                .all(|i| subnet_of(&cluster, &format!("machine-{i}")) == Some(envs[i].cidr()))
                .then_some(())
        },
    );
    for r in subnets(&cluster) {
        assert_eq!(r["backend"], backend, "{r}");
        assert!(
            r["expires_in_s"].as_i64().unwrap() > 23 * 3600,
            "a 24 h lease: {r}"
        );
        assert_eq!(r["vtep_mac"].is_string(), backend == "vxlan", "{r}");
    }
    let expected_mtu = if backend == "vxlan" { 1450 } else { 1500 };
    assert!(envs.iter().all(|e| e.mtu == expected_mtu), "{envs:?}");

    // A pod on each machine reaches a pod on every other.
    let mut pods: Vec<Pod> = (0..3)
        .map(|i| Pod::plug(cluster.member_ns(i), envs[i], 10))
        .collect();
    for a in 0..3 {
        for b in 0..3 {
            if a != b {
                pods[a].reaches(pods[b].addr, Duration::from_secs(30));
            }
        }
    }

    // Leaving the cluster network, pods are masqueraded: the switch's own
    // address (10.77.1.1) has no route back to any pod subnet.
    let outside: Ipv4Addr = "10.77.1.1".parse().unwrap();
    pods[0].reaches(outside, Duration::from_secs(10));

    // A route deleted by hand comes back.
    let m0 = cluster.member_ns(0);
    let to1 = envs[1].cidr();
    assert!(
        route_to(m0, &to1).contains("proto 104"),
        "{}",
        route_to(m0, &to1)
    );
    m0.ip(&["route", "del", &to1]);
    wait::until(
        "the deleted route to come back",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || route_to(m0, &to1).contains("proto 104").then_some(()),
    );
    pods[0].reaches(pods[1].addr, Duration::from_secs(10));

    // A restarted machine keeps its subnet, and pod traffic flows while it is down.
    cluster.kill(1);
    assert!(pods[0].ping(pods[1].addr), "pod traffic needs no agent");
    cluster.restart(1);
    assert_eq!(wait_env(&env_path(&dir, 1)), envs[1]);
    wait::until(
        "machine-1's lease after its restart",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || (subnet_of(&cluster, "machine-1") == Some(envs[1].cidr())).then_some(()),
    );

    // Restarted while the store has no quorum: machine 1 alone is up; it
    // comes back on its remembered subnet, routes in place.
    cluster.kill(0);
    cluster.kill(2);
    cluster.kill(1);
    std::fs::remove_file(env_path(&dir, 1)).unwrap();
    cluster.launch(1);
    assert_eq!(
        wait_env(&env_path(&dir, 1)),
        envs[1],
        "{}",
        log_tail(&cluster, 1)
    );
    assert!(
        pods[1].ping(pods[0].addr) && pods[1].ping(pods[2].addr),
        "routes survive without a store"
    );
    cluster.launch(0);
    cluster.launch(2);
    for i in 0..3 {
        cluster.wait_serving(i);
    }
    wait::until(
        "every lease as before after the outage",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            (0..3)
                .all(|i| subnet_of(&cluster, &format!("machine-{i}")) == Some(envs[i].cidr()))
                .then_some(())
        },
    );
    assert_eq!(read_env(&env_path(&dir, 0)), Some(envs[0]));

    // A fourth machine joins later: every pod reaches its pod within seconds.
    let i3 = cluster.join_new_in_namespace(0, net_flags(&dir, 3));
    let env3 = wait_env(&env_path(&dir, i3));
    assert!(!envs.contains(&env3), "a fourth subnet: {env3:?}");
    let pod3 = Pod::plug(cluster.member_ns(i3), env3, 10);
    for p in &pods {
        p.reaches(pod3.addr, Duration::from_secs(15));
        pod3.reaches(p.addr, Duration::from_secs(15));
    }

    // Removed from the cluster: its agent stops and its subnet is
    // released; every machine drops the route to it.
    let clean = cluster.terminate(i3);
    assert!(
        clean,
        "{}",
        std::fs::read_to_string(&cluster.members[i3].log).unwrap_or_default()
    );
    herd_ok(
        &cluster,
        &["net", "release", "--endpoints", &eps, &env3.cidr()],
    );
    for i in 0..3 {
        let ns = cluster.member_ns(i);
        wait::until(
            &format!("machine {i} to drop the route to the removed machine"),
            Duration::from_secs(15),
            Duration::from_millis(200),
            || route_to(ns, &env3.cidr()).is_empty().then_some(()),
        );
    }
    assert!(!ping_from(&pods[0].ns, pod3.addr));
    assert!(subnet_of(&cluster, "machine-3").is_none());

    // A route herd did not add, occupying a machine's subnet, is left
    // alone and reported naming the subnet and its machine; once it is
    // gone, herd's own route takes its place. (Machine 3 comes back on its
    // remembered subnet while machine 0 has a static route there.)
    let to3 = env3.cidr();
    cluster
        .member_ns(0)
        .ip(&["route", "add", &to3, "via", "10.77.1.1", "proto", "static"]);
    std::fs::remove_file(env_path(&dir, i3)).unwrap();
    cluster.launch(i3);
    cluster.wait_serving(i3);
    assert_eq!(wait_env(&env_path(&dir, i3)), env3, "sticky after release");
    let m0_log = cluster.members[0].log.clone();
    let expected = format!("a route herd did not add occupies subnet {to3} of machine machine-3");
    wait::until(
        "machine 0 to report the foreign route",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            std::fs::read_to_string(&m0_log)
                .unwrap_or_default()
                .contains(&expected)
                .then_some(())
        },
    );
    let m0 = cluster.member_ns(0);
    assert!(
        route_to(m0, &to3).contains("proto static"),
        "left alone: {}",
        route_to(m0, &to3)
    );
    m0.ip(&["route", "del", &to3]);
    wait::until(
        "herd's route in place of the foreign one",
        Duration::from_secs(60),
        Duration::from_millis(300),
        || route_to(m0, &to3).contains("proto 104").then_some(()),
    );
    pods[0].reaches(pod3.addr, Duration::from_secs(15));
    pods.clear();
}

#[test]
fn net_lab_host_gw_subnets_routes_restarts_and_removal() {
    scenario("host-gw");
}

#[test]
fn net_lab_vxlan_subnets_routes_restarts_and_removal() {
    scenario("vxlan");
}

/// A public address that is not on the cluster interface (a machine behind
/// NAT: other machines could not route to it) is refused: the agent does
/// not start, and says why.
#[test]
fn net_agent_refuses_a_public_address_not_on_its_interface() {
    herd_tests::require::root();
    let ns = herd_tests::netns::Netns::new();
    // A bridge as the uplink (kernels without the dummy driver exist).
    ns.bridge("uplink0", "10.66.0.2/24");
    let scratch = tempfile::tempdir().unwrap();
    let log = scratch.path().join("agent.log");
    let mut cmd = ns.command(herd_tests::bin::herd());
    cmd.args([
        "agent",
        "--name",
        "behind-nat",
        "--token",
        "t",
        "--insecure-plaintext",
        "--listen-client",
        "127.0.0.1:2379",
        "--listen-peer",
        "127.0.0.1:2380",
        "--cluster-iface",
        "uplink0",
        "--public-ip",
        "10.66.9.9",
    ])
    .arg("--data-dir")
    .arg(scratch.path().join("data"))
    .arg("--subnet-env")
    .arg(scratch.path().join("subnet.env"))
    .stdout(std::fs::File::create(scratch.path().join("agent.out")).unwrap())
    .stderr(std::fs::File::create(&log).unwrap());
    let mut agent = herd_tests::process::spawn("agent", &mut cmd);
    wait::until(
        "the agent to refuse to start",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || (!agent.is_running()).then_some(()),
    );
    let text = std::fs::read_to_string(&log).unwrap()
        + &std::fs::read_to_string(scratch.path().join("agent.out")).unwrap();
    assert!(
        text.contains("public address 10.66.9.9 is not on interface uplink0"),
        "{text}"
    );
    assert!(!scratch.path().join("subnet.env").exists());
}
