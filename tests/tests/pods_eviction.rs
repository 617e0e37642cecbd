//! Memory pressure end to end: two `herd agent`s in network namespaces,
//! each with its own real dockerd (see `herd_tests::node_lab`); machine 1
//! reserves all but 300 MiB of the machine's memory for the system
//! (`--system-reserved`), so its pods may hold 200 MiB before the default
//! 100 Mi threshold. A pod that grows past that is evicted — Failed,
//! reason Evicted, the numbers in its status and a warning event, its
//! containers stopped and not restarted — while a quiet pod on the same
//! node runs on untouched; the Node reports MemoryPressure meanwhile and
//! no longer once the transition period has passed.

use std::time::Duration;

use herd_tests::node_lab::{BUSYBOX, NodeLab};
use herd_tests::wait;
use serde_json::{Value, json};

const PODS: &str = "/api/v1/namespaces/default/pods";
const NODE: usize = 1;
/// What machine 1 leaves its pods, threshold included.
const LEFT_MIB: u64 = 300;

fn mem_total_kib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal in /proc/meminfo")
}

fn pod(name: &str, script: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": format!("m{NODE}"), "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": BUSYBOX, "command": ["/bin/sh", "-c", script]}]}})
}

fn memory_pressure(node: &Value) -> Option<Value> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "MemoryPressure")
        .cloned()
}

#[test]
fn pods_eviction_frees_a_node_under_memory_pressure() {
    let total_kib = mem_total_kib();
    let reserved = format!("memory={}Ki", total_kib - LEFT_MIB * 1024);
    let mut lab = NodeLab::start_with(2, move |i| {
        if i == NODE {
            vec![
                "--system-reserved".into(),
                reserved.clone(),
                "--eviction-pressure-transition-period".into(),
                "30s".into(),
            ]
        } else {
            Vec::new()
        }
    });
    let node_path = format!("/api/v1/nodes/m{NODE}");
    let node = lab.get(&node_path).unwrap();
    // Allocatable: capacity less the reservation and the 100 Mi threshold.
    assert_eq!(
        node["status"]["allocatable"]["memory"],
        format!("{}Ki", (LEFT_MIB - 100) * 1024),
        "{node}"
    );
    let pressure = memory_pressure(&node).expect("a MemoryPressure condition");
    assert_eq!(pressure["status"], "False", "{pressure}");
    assert_eq!(pressure["reason"], "KubeletHasSufficientMemory");

    lab.create(PODS, &pod("quiet", "exec sleep 100000"));
    lab.wait_pod("the quiet pod to run", "quiet", |p| {
        p["status"]["phase"] == "Running"
    });
    // 300 MB of "y\n" held in a shell variable: past the 200 MiB pods may hold.
    lab.create(
        PODS,
        &pod(
            "hog",
            "x=$(yes | head -c 300000000); echo held; sleep 100000; echo ${#x}",
        ),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let hog = loop {
        if let Some(p) = lab.pod("hog").filter(|p| p["status"]["phase"] == "Failed") {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the hog was not evicted: {:?}\ndocker stats: {}\nthe agents said:\n{}",
            lab.pod("hog"),
            lab.dockerds[NODE].docker_ok(&["stats", "--no-stream"]),
            lab.agent_log_lines("memory")
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(hog["status"]["reason"], "Evicted", "{hog}");
    let ready = hog["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .cloned();
    assert!(
        ready.as_ref().is_none_or(|c| c["status"] == "False"),
        "an evicted pod is Ready: {ready:?}"
    );
    let message = hog["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("low on resource: memory") && message.contains("Pod hog was using"),
        "{message}"
    );
    assert!(
        lab.events_for("hog")
            .iter()
            .any(|e| e["reason"] == "Evicted" && e["type"] == "Warning"),
        "{:?}",
        lab.events_for("hog")
    );
    let node = wait::until(
        "the node to report MemoryPressure",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            let n = lab.get(&node_path).ok()?;
            (memory_pressure(&n)?["status"] == "True").then_some(n)
        },
    );
    let pressure = memory_pressure(&node).unwrap();
    assert_eq!(pressure["reason"], "KubeletHasInsufficientMemory");
    assert!(
        pressure["message"]
            .as_str()
            .unwrap_or_default()
            .contains("allocatableMemory.available"),
        "{pressure}"
    );

    // The hog's containers stopped and stay stopped; the quiet pod ran on.
    let uid = hog["metadata"]["uid"].as_str().unwrap().to_owned();
    let d = &lab.dockerds[NODE];
    wait::until(
        "the hog's containers to stop",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            let out = d.docker_ok(&[
                "ps",
                "-q",
                "--filter",
                &format!("label=io.herd.pod.uid={uid}"),
            ]);
            out.trim().is_empty().then_some(())
        },
    );
    let quiet = lab.pod("quiet").unwrap();
    assert_eq!(quiet["status"]["phase"], "Running", "{quiet}");
    assert_eq!(quiet["status"]["containerStatuses"][0]["restartCount"], 0);

    // Pressure ends one transition period after memory was last low.
    wait::until(
        "MemoryPressure to clear",
        Duration::from_secs(90),
        Duration::from_millis(1000),
        || {
            let n = lab.get(&node_path).ok()?;
            (memory_pressure(&n)?["status"] == "False").then_some(())
        },
    );
    let hog = lab.pod("hog").unwrap();
    assert_eq!(
        hog["status"]["phase"], "Failed",
        "the evicted pod came back: {hog}"
    );
    assert_eq!(hog["status"]["reason"], "Evicted");

    for name in ["quiet", "hog"] {
        lab.delete(&format!("{PODS}/{name}"));
    }
    for d in &mut lab.dockerds {
        d.stop();
    }
}
