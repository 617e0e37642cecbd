//! `hostPort` end to end: two `herd agent`s in network namespaces, each
//! with its own real dockerd (see `herd_tests::node_lab`). A pod's host
//! port answers on its node's address from the other machine and from the
//! node itself; the kubelet holds the port, so a process on the node
//! cannot take it; a second pod asking for it on the same node is
//! rejected (Failed, reason NodePorts, naming the holder) without a
//! container started; a pod whose port a process on the node holds waits,
//! says why, and starts once the port is free; a rule deleted by hand
//! comes back; an agent restart keeps the ports published; deleting the
//! pods frees the ports and removes the table.

use std::process::{Child, Stdio};
use std::time::Duration;

use herd_tests::node_lab::{BUSYBOX, NodeLab};
use herd_tests::wait;
use serde_json::{Value, json};

const PODS: &str = "/api/v1/namespaces/default/pods";
/// The machine the pods run on, and the one that reaches them.
const NODE: usize = 1;
const OTHER: usize = 0;

fn web(name: &str, host_port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": format!("m{NODE}"), "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "web", "image": BUSYBOX,
                "command": ["/bin/sh", "-c",
                    "mkdir -p /www; echo hello-$(hostname) > /www/index.html; exec httpd -f -p 80 -h /www"],
                "ports": [{"containerPort": 80, "hostPort": host_port}]}]}})
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or_default()
}

fn running(p: &Value) -> bool {
    phase(p) == "Running"
}

/// `curl` of `url` run in machine `i`'s namespace: the body, if it answered.
fn fetch(lab: &NodeLab, i: usize, url: &str) -> Option<String> {
    let out = lab
        .cluster
        .member_netns(i)
        .command("curl")
        .args(["-sf", "--max-time", "3", url])
        .output()
        .expect("running curl");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A process in machine `i`'s namespace that binds and listens on `port`
/// (Python's default socket options, as a server would have them).
fn listener(lab: &NodeLab, i: usize, port: u16) -> Child {
    let code = format!(
        "import socket,sys,time\n\
         s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('0.0.0.0', {port})); s.listen(); print('bound', flush=True); time.sleep(600)"
    );
    lab.cluster
        .member_netns(i)
        .command("python3")
        .args(["-c", &code])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting python3")
}

/// Whether a server in machine `i`'s namespace could bind `port` now.
fn bindable(lab: &NodeLab, i: usize, port: u16) -> bool {
    let mut child = listener(lab, i, port);
    let mut line = String::new();
    let _ = std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().expect("piped")),
        &mut line,
    );
    let _ = child.kill();
    let _ = child.wait();
    line.starts_with("bound")
}

fn table_present(lab: &NodeLab, i: usize) -> bool {
    lab.cluster
        .member_netns(i)
        .command("nft")
        .args(["list", "table", "ip", "herd-hostports"])
        .output()
        .expect("running nft")
        .status
        .success()
}

#[test]
fn pods_host_ports_publish_hold_and_refuse() {
    let mut lab = NodeLab::start(2);
    let node = lab.get(&format!("/api/v1/nodes/m{NODE}")).unwrap();
    let node_ip = node["status"]["addresses"][0]["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = |port: u16| format!("http://{node_ip}:{port}/index.html");

    // Published: from the other machine (prerouting) and the node itself (output).
    lab.create(PODS, &web("hp-a", 18080));
    lab.wait_pod("hp-a to run", "hp-a", running);
    for from in [OTHER, NODE] {
        let body = wait::until(
            &format!("hp-a's host port to answer from m{from}"),
            Duration::from_secs(30),
            Duration::from_millis(300),
            || fetch(&lab, from, &url(18080)),
        );
        assert_eq!(body, "hello-hp-a");
    }
    // Held: no server on the node can have the port meanwhile.
    assert!(!bindable(&lab, NODE, 18080), "a process bound hp-a's port");

    // A second pod asking for it on the same node is rejected, nothing started.
    lab.create(PODS, &web("hp-b", 18080));
    let b = lab.wait_pod("hp-b to be rejected", "hp-b", |p| phase(p) == "Failed");
    assert_eq!(b["status"]["reason"], "NodePorts", "{b}");
    let message = b["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("18080/TCP") && message.contains("default/hp-a"),
        "{message}"
    );
    assert!(
        lab.dockerds[NODE]
            .containers(&format!(
                "io.herd.pod.uid={}",
                b["metadata"]["uid"].as_str().unwrap()
            ))
            .is_empty(),
        "the rejected pod has containers"
    );
    assert!(
        lab.events_for("hp-b")
            .iter()
            .any(|e| e["reason"] == "NodePorts" && e["type"] == "Warning"),
        "{:?}",
        lab.events_for("hp-b")
    );
    // hp-a is untouched.
    assert_eq!(
        fetch(&lab, OTHER, &url(18080)).as_deref(),
        Some("hello-hp-a")
    );

    // A port a process on the node holds: the pod waits and says why…
    let mut squatter = listener(&lab, NODE, 18081);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(squatter.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(
        line.starts_with("bound"),
        "the squatter did not bind: {line}"
    );
    lab.create(PODS, &web("hp-c", 18081));
    let c = lab.wait_pod("hp-c to say its port is in use", "hp-c", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("18081/TCP") && m.contains("in use"))
    });
    assert_eq!(phase(&c), "Pending", "{c}");
    assert!(
        lab.events_for("hp-c")
            .iter()
            .any(|e| e["reason"] == "FailedCreatePodSandBox"
                && e["message"].as_str().unwrap_or_default().contains("18081")),
        "{:?}",
        lab.events_for("hp-c")
    );
    // …and starts once it is free.
    squatter.kill().unwrap();
    squatter.wait().unwrap();
    lab.wait_pod("hp-c to run once its port is free", "hp-c", running);
    let body = wait::until(
        "hp-c's host port to answer",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || fetch(&lab, OTHER, &url(18081)),
    );
    assert_eq!(body, "hello-hp-c");

    // A table deleted by hand comes back (the kubelet's periodic repair).
    let out = lab
        .cluster
        .member_netns(NODE)
        .command("nft")
        .args(["delete", "table", "ip", "herd-hostports"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fetch(&lab, OTHER, &url(18080)), None);
    wait::until(
        "the deleted rules to come back",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || fetch(&lab, OTHER, &url(18080)),
    );

    // An agent restart keeps the ports published and claims them again.
    lab.cluster.terminate(NODE);
    assert!(table_present(&lab, NODE), "the table went with the agent");
    assert_eq!(
        fetch(&lab, OTHER, &url(18080)).as_deref(),
        Some("hello-hp-a")
    );
    lab.cluster.restart(NODE);
    wait::until(
        "the restarted kubelet to hold hp-a's port again",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || (!bindable(&lab, NODE, 18080)).then_some(()),
    );
    assert_eq!(
        fetch(&lab, OTHER, &url(18081)).as_deref(),
        Some("hello-hp-c")
    );

    // Deleted: the ports are free and the table is gone.
    for name in ["hp-a", "hp-b", "hp-c"] {
        lab.delete(&format!("{PODS}/{name}"));
    }
    wait::until(
        "the host-port table to go",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || (!table_present(&lab, NODE)).then_some(()),
    );
    assert!(bindable(&lab, NODE, 18080) && bindable(&lab, NODE, 18081));
    assert_eq!(fetch(&lab, OTHER, &url(18080)), None);
    for d in &mut lab.dockerds {
        d.stop();
    }
}
