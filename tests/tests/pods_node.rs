//! The kubelet end to end: three `herd agent`s in network namespaces,
//! each with the cluster network (host-gw), the Kubernetes API and its
//! own real dockerd (see `herd_tests::node_lab`). Through the API, as
//! kubectl would: an RC's pods get addresses from their machines'
//! subnets and reach each other across machines; the service env is
//! injected; readiness probes drive Ready and the endpoints; `kubectl
//! logs` reaches the container on its machine; a killed container and a
//! container failing its liveness probe are restarted; a crash loop backs
//! off; a missing image is reported; init containers run in order before
//! the app, hold their pod Pending while one waits and fail it under
//! `Never`; an agent restart adopts running
//! containers without restarting them; deleting a pod removes its
//! containers while its RC's replacement runs; nothing (containers,
//! veths) is left behind.

use std::net::Ipv4Addr;
use std::time::Duration;

use herd_tests::net::read_env;
use herd_tests::node_lab::{BUSYBOX, NodeLab, container_id, machine_of, ready};
use herd_tests::pods::Kubectl;
use herd_tests::wait;
use serde_json::{Value, json};

const PODS: &str = "/api/v1/namespaces/default/pods";

fn web_rc() -> Value {
    json!({
        "apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"app": "web"},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "volumes": [{"name": "scratch", "emptyDir": {}}],
                    "containers": [{
                        "name": "web", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
                        "command": ["/bin/sh", "-c",
                            "echo started $(hostname); mkdir -p /www; env > /www/env; echo ok > /www/healthz; echo x > /scratch/x; exec httpd -f -p 80 -h /www"],
                        "ports": [{"containerPort": 80}],
                        "resources": {"limits": {"cpu": "200m", "memory": "64Mi"}},
                        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 80}, "periodSeconds": 1, "failureThreshold": 1}
                    }]
                }
            }
        }
    })
}

fn pods_of(lab: &NodeLab, app: &str) -> Vec<Value> {
    lab.get(&format!("{PODS}?labelSelector=app%3D{app}"))
        .map(|l| l["items"].as_array().cloned().unwrap_or_default())
        .unwrap_or_default()
}

fn pod_ip(p: &Value) -> Option<Ipv4Addr> {
    p["status"]["podIP"].as_str()?.parse().ok()
}

fn running(p: &Value) -> bool {
    p["status"]["phase"] == "Running" && pod_ip(p).is_some() && container_id(p, "web").is_some()
}

fn name(p: &Value) -> String {
    p["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn uid(p: &Value) -> String {
    p["metadata"]["uid"].as_str().unwrap_or_default().to_owned()
}

fn status_of<'a>(p: &'a Value, container: &str) -> &'a Value {
    p["status"]["containerStatuses"]
        .as_array()
        .and_then(|s| s.iter().find(|c| c["name"] == container))
        .unwrap_or(&Value::Null)
}

/// The pod's subnet on its machine contains its address.
fn in_subnet(lab: &NodeLab, p: &Value) -> bool {
    let (i, _) = lab.dockerd_of(p);
    let env = read_env(&lab.envs[i]).expect("the machine's subnet.env");
    let ip = pod_ip(p).expect("an address");
    let mask = u32::MAX << (32 - u32::from(env.len));
    u32::from(ip) & mask == u32::from(env.network()) & mask && ip != env.gateway
}

#[test]
fn pods_node_runs_pods_on_real_docker_daemons() {
    let mut lab = NodeLab::start(3);
    // A service older than the pods: its variables are injected.
    let redis = lab.create(
        "/api/v1/namespaces/default/services",
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "redis-master"},
            "spec": {"selector": {"app": "redis"}, "ports": [{"port": 6379}]}}),
    );
    let redis_ip = redis["spec"]["clusterIP"].as_str().unwrap().to_owned();
    lab.create(
        "/api/v1/namespaces/default/services",
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    );
    lab.create(
        "/api/v1/namespaces/default/replicationcontrollers",
        &web_rc(),
    );

    // Two pods, on two machines, each with an address of its machine's subnet.
    let pods = wait::until(
        "two web pods running",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || {
            let pods = pods_of(&lab, "web");
            (pods.len() == 2 && pods.iter().all(running)).then_some(pods)
        },
    );
    let (a, b) = (&pods[0], &pods[1]);
    assert_ne!(
        a["spec"]["nodeName"], b["spec"]["nodeName"],
        "spread over machines"
    );
    for p in &pods {
        assert!(
            in_subnet(&lab, p),
            "{} has {:?}, outside its machine's subnet",
            name(p),
            pod_ip(p)
        );
        assert_eq!(
            p["status"]["hostIP"].as_str().unwrap(),
            lab.get(&format!(
                "/api/v1/nodes/{}",
                p["spec"]["nodeName"].as_str().unwrap()
            ))
            .unwrap()["status"]["addresses"][0]["address"]
                .as_str()
                .unwrap()
        );
    }
    let (ia, ib) = (machine_of(a), machine_of(b));
    let (da, db) = (&lab.dockerds[ia], &lab.dockerds[ib]);
    let a_id = container_id(a, "web").unwrap();
    let b_id = container_id(b, "web").unwrap();

    // Service env, the pod's hostname, the emptyDir and the limits. A
    // running container may not have run its first lines yet: the files
    // are waited for.
    let env = wait::until(
        "the container to write /www/env",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            let out = da.docker(&["exec", &a_id, "cat", "/www/env"]);
            (out.status.success() && !out.stdout.is_empty())
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
    );
    for want in [
        format!("REDIS_MASTER_SERVICE_HOST={redis_ip}"),
        "REDIS_MASTER_SERVICE_PORT=6379".to_owned(),
        format!("REDIS_MASTER_PORT=tcp://{redis_ip}:6379"),
        format!("REDIS_MASTER_PORT_6379_TCP_ADDR={redis_ip}"),
        "REDIS_MASTER_PORT_6379_TCP_PROTO=tcp".to_owned(),
        format!("HOSTNAME={}", name(a)),
    ] {
        assert!(
            env.lines().any(|l| l == want),
            "{want} missing from the pod's env:\n{env}"
        );
    }
    wait::until(
        "the container to write /scratch/x",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || (da.docker(&["exec", &a_id, "cat", "/scratch/x"]).stdout == b"x\n").then_some(()),
    );
    let limits = da.docker_ok(&[
        "inspect",
        "-f",
        "{{.HostConfig.Memory}} {{.HostConfig.CpuQuota}} {{.HostConfig.NetworkMode}}",
        &a_id,
    ]);
    assert!(limits.starts_with("67108864 20000 container:"), "{limits}");

    // Pods reach each other across machines (host-gw routes, herd0,
    // veths). ICMP: busybox-static's wget and nc resolve even literal
    // addresses through glibc's NSS, which a static binary cannot load.
    let ip_b = pod_ip(b).unwrap().to_string();
    wait::until(
        "pod a to reach pod b on the other machine",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            da.docker(&["exec", &a_id, "ping", "-c1", "-W1", &ip_b])
                .status
                .success()
                .then_some(())
        },
    );

    // Readiness: no /ready yet, so not Ready and not an endpoint address.
    for p in &pods {
        assert!(!ready(p), "{} is Ready before its probe passes", name(p));
    }
    da.docker_ok(&["exec", &a_id, "sh", "-c", "echo y > /www/ready"]);
    lab.wait_pod("pod a to turn Ready", &name(a), ready);
    let ip_a = pod_ip(a).unwrap().to_string();
    wait::until(
        "the endpoints to list pod a only",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            let ep = lab.get("/api/v1/namespaces/default/endpoints/web").ok()?;
            let addrs: Vec<&str> = ep["subsets"][0]["addresses"]
                .as_array()?
                .iter()
                .filter_map(|a| a["ip"].as_str())
                .collect();
            (addrs == [ip_a.as_str()]).then_some(())
        },
    );
    da.docker_ok(&["exec", &a_id, "rm", "/www/ready"]);
    lab.wait_pod("pod a to turn NotReady", &name(a), |p| !ready(p));
    da.docker_ok(&["exec", &a_id, "sh", "-c", "echo y > /www/ready"]);
    lab.wait_pod("pod a to be Ready again", &name(a), ready);

    // kubectl logs and exec reach the container on its machine from agent
    // 0's API, which hands exec's upgrade to the pod's kubelet: a
    // WebSocket from kubectl 1.32, SPDY from Debian's 1.20.
    for k in Kubectl::present() {
        kubectl_reaches_the_container(&lab, k, &name(a));
    }
    // herd's own verbs do the same without kubectl.
    let out = lab.herd_with_stdin(
        &["exec", "-i", &name(a), "--", "/bin/sh", "-c", "cat; exit 4"],
        Some("via herd\n"),
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "herd exec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "via herd\n");
    // herd exec -t gives the command a terminal the size of this one
    // (script's: 45 × 123, passed on as a resize) with stderr on stdout.
    // The size may land a moment after the command starts (a resize is
    // all Docker 20.10 takes), so the command waits for it.
    let out = lab.herd_in_terminal(&["exec", "-t", &name(a), "--", "/bin/sh", "-c", IN_TERMINAL]);
    in_terminal_shown(&out, "herd exec -t", &lab);
    let out = lab.herd_with_stdin(&["logs", &name(a)], None);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("started {}", name(a))),
        "herd logs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lab.kubectl(&["exec", &name(a), "-c", "nope", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("container nope is not valid"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A killed container is restarted, in the same sandbox (same address).
    da.docker_ok(&["kill", &a_id]);
    let a2 = lab.wait_pod("the killed container to restart", &name(a), |p| {
        status_of(p, "web")["restartCount"] == 1
            && container_id(p, "web").is_some_and(|id| id != a_id)
    });
    assert_eq!(pod_ip(&a2), pod_ip(a));
    assert_eq!(
        status_of(&a2, "web")["lastState"]["terminated"]["exitCode"],
        137
    );

    // An agent restart adopts what runs: same containers, no restart.
    let b_before = da_containers(db, &uid(b));
    lab.cluster.terminate(ib);
    lab.cluster.restart(ib);
    db.docker_ok(&["exec", &b_id, "sh", "-c", "echo y > /www/ready"]);
    let b2 = lab.wait_pod(
        "pod b to turn Ready under the restarted agent",
        &name(b),
        ready,
    );
    assert_eq!(
        container_id(&b2, "web").as_deref(),
        Some(b_id.as_str()),
        "{}",
        lab.logs()
    );
    assert_eq!(status_of(&b2, "web")["restartCount"], 0);
    assert_eq!(
        da_containers(db, &uid(b)),
        b_before,
        "containers of pod b changed across the agent restart"
    );

    // Deleting a pod removes its containers; its RC's replacement runs.
    let (a_uid, a_name) = (uid(a), name(a));
    lab.delete(&format!("{PODS}/{a_name}"));
    wait::until(
        "pod a's containers to go",
        Duration::from_secs(60),
        Duration::from_millis(300),
        || {
            da.containers(&format!("io.herd.pod.uid={a_uid}"))
                .is_empty()
                .then_some(())
        },
    );
    let pods = wait::until(
        "a replacement pod running",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || {
            let pods = pods_of(&lab, "web");
            (pods.len() == 2 && pods.iter().all(running) && pods.iter().all(|p| name(p) != a_name))
                .then_some(pods)
        },
    );
    assert!(pods.iter().all(|p| in_subnet(&lab, p)));

    bad_input_and_probes(&lab);
    init_containers(&lab);

    // Nothing left behind once the RC goes.
    lab.delete("/api/v1/namespaces/default/replicationcontrollers/web");
    for i in 0..3 {
        let d = &lab.dockerds[i];
        let clean = || d.containers("io.herd.node").is_empty() && lab.veths(i).is_empty();
        for _ in 0..180 {
            if clean() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        assert!(
            clean(),
            "machine {i} still holds {} and veths {:?}; pods: {:?}\n{}",
            d.docker_ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]),
            lab.veths(i),
            lab.get(PODS).map(|l| l["items"]
                .as_array()
                .map(|a| a.iter().map(name).collect::<Vec<_>>())),
            lab.logs()
        );
    }
    for d in &mut lab.dockerds {
        d.stop();
    }
}

/// The ids of a pod's containers on `d`, sorted.
fn da_containers(d: &herd_tests::node_lab::Dockerd, uid: &str) -> Vec<String> {
    let mut ids = d.containers(&format!("io.herd.pod.uid={uid}"));
    ids.sort();
    ids
}

fn bad_input_and_probes(lab: &NodeLab) {
    let pod = |name: &str, container: Value, policy: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "probe"}},
            "spec": {"restartPolicy": policy, "terminationGracePeriodSeconds": 1, "containers": [container]}})
    };
    lab.create(
        PODS,
        &pod(
            "missing",
            json!({"name": "app", "image": "herd-test/missing:1"}),
            "Always",
        ),
    );
    lab.create(
        PODS,
        &pod(
            "crasher",
            json!({"name": "app", "image": BUSYBOX, "command": ["/bin/sh", "-c", "exit 3"]}),
            "Always",
        ),
    );
    lab.create(PODS, &pod("liveness", json!({"name": "app", "image": BUSYBOX,
        "command": ["/bin/sh", "-c", "touch /tmp/alive; exec sleep 100000"],
        "livenessProbe": {"exec": {"command": ["cat", "/tmp/alive"]}, "periodSeconds": 1, "failureThreshold": 1}}), "Always"));

    let missing = lab.wait_pod("the missing image to be reported", "missing", |p| {
        let r = &status_of(p, "app")["state"]["waiting"]["reason"];
        r == "ImagePullBackOff" || r == "ErrImagePull"
    });
    assert_eq!(missing["status"]["phase"], "Pending");
    assert!(
        lab.events_for("missing")
            .iter()
            .any(|e| e["reason"] == "Failed"
                && e["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("herd-test/missing:1")),
        "no Failed event names the image: {:?}",
        lab.events_for("missing")
    );

    let crash = lab.wait_pod("the crash loop to back off", "crasher", |p| {
        status_of(p, "app")["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
    let s = status_of(&crash, "app");
    assert!(s["restartCount"].as_i64().unwrap() >= 1, "{s}");
    assert_eq!(s["lastState"]["terminated"]["exitCode"], 3);
    assert!(
        lab.events_for("crasher")
            .iter()
            .any(|e| e["reason"] == "BackOff")
    );

    let live = lab.wait_pod("the liveness pod to run", "liveness", |p| {
        container_id(p, "app").is_some()
    });
    let first = container_id(&live, "app").unwrap();
    let (_, d) = lab.dockerd_of(&live);
    d.docker_ok(&["exec", &first, "rm", "/tmp/alive"]);
    lab.wait_pod(
        "the failed liveness probe to restart the container",
        "liveness",
        |p| {
            status_of(p, "app")["restartCount"] == 1
                && container_id(p, "app").is_some_and(|id| id != first)
        },
    );
    assert!(lab.events_for("liveness").iter().any(|e| {
        e["reason"] == "Unhealthy"
            && e["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Liveness probe failed")
    }));

    // Gone with their containers.
    for name in ["missing", "crasher", "liveness"] {
        lab.delete(&format!("{PODS}/{name}"));
    }
}

/// Init containers run in order, each to success, before the app, sharing
/// a memory-backed emptyDir (a tmpfs volume, removed with the pod); one
/// waiting holds the pod Pending (`Init:0/1`); one failing under `Never`
/// fails the pod with no app container started; under `Always` it backs off.
fn init_containers(lab: &NodeLab) {
    let pod = |name: &str, policy: &str, init: Vec<Value>| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": policy, "terminationGracePeriodSeconds": 1,
                "volumes": [{"name": "work", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}],
                "initContainers": init,
                "containers": [{"name": "app", "image": BUSYBOX,
                    "command": ["/bin/sh", "-c", "exec sleep 100000"],
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}]}]}})
    };
    let step = |name: &str, script: &str| {
        json!({"name": name, "image": BUSYBOX, "command": ["/bin/sh", "-c", script],
            "volumeMounts": [{"name": "work", "mountPath": "/work"}]})
    };
    lab.create(
        PODS,
        &pod(
            "init-order",
            "Always",
            vec![
                step("first", "echo one > /work/order"),
                step("second", "echo two >> /work/order"),
            ],
        ),
    );
    lab.create(
        PODS,
        &pod(
            "init-wait",
            "Always",
            vec![step("gate", "until [ -f /work/go ]; do sleep 0.2; done")],
        ),
    );
    lab.create(
        PODS,
        &pod("init-never", "Never", vec![step("fails", "exit 2")]),
    );
    lab.create(
        PODS,
        &pod("init-crash", "Always", vec![step("fails", "exit 1")]),
    );

    let ordered = lab.wait_pod("init-order to run", "init-order", |p| {
        p["status"]["phase"] == "Running"
    });
    for (i, name) in ["first", "second"].iter().enumerate() {
        let s = &ordered["status"]["initContainerStatuses"][i];
        assert_eq!(s["name"], *name, "{ordered}");
        assert_eq!(s["state"]["terminated"]["exitCode"], 0, "{s}");
        assert_eq!(s["ready"], true, "{s}");
    }
    let (_, d) = lab.dockerd_of(&ordered);
    let app = container_id(&ordered, "app").unwrap();
    assert_eq!(
        d.docker_ok(&["exec", &app, "cat", "/work/order"]),
        "one\ntwo"
    );
    // The emptyDir is memory-backed, one tmpfs of its size limit that
    // every container of the pod shares.
    let mounts = d.docker_ok(&["exec", &app, "cat", "/proc/mounts"]);
    assert!(
        mounts
            .lines()
            .any(|l| l.starts_with("tmpfs /work tmpfs") && l.contains("size=16384k")),
        "{mounts}"
    );
    let order_uid = uid(&ordered);

    let waiting = lab.wait_pod("init-wait's gate to run", "init-wait", |p| {
        p["status"]["initContainerStatuses"][0]["state"]["running"].is_object()
    });
    assert_eq!(waiting["status"]["phase"], "Pending");
    assert_eq!(
        status_of(&waiting, "app")["state"]["waiting"]["reason"],
        "PodInitializing"
    );
    let initialized = waiting["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Initialized")
        .unwrap()
        .clone();
    assert_eq!(initialized["status"], "False", "{initialized}");
    let shown = lab.kubectl(&["get", "pod", "init-wait"]);
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("Init:0/1"),
        "{}",
        String::from_utf8_lossy(&shown.stdout)
    );
    let gate = waiting["status"]["initContainerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("docker://")
        .to_owned();
    let (_, d) = lab.dockerd_of(&waiting);
    d.docker_ok(&["exec", &gate, "touch", "/work/go"]);
    lab.wait_pod("init-wait to run once its gate opens", "init-wait", |p| {
        p["status"]["phase"] == "Running"
    });

    let never = lab.wait_pod("init-never to fail", "init-never", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(
        never["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"],
        2
    );
    let (_, d) = lab.dockerd_of(&never);
    let uid = never["metadata"]["uid"].as_str().unwrap();
    let apps = d.docker_ok(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=io.herd.pod.uid={uid}"),
        "--filter",
        "label=io.herd.container=app",
    ]);
    assert!(
        apps.trim().is_empty(),
        "init-never's app was created: {apps}"
    );

    let crash = lab.wait_pod("init-crash to back off", "init-crash", |p| {
        p["status"]["initContainerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
    assert_eq!(crash["status"]["phase"], "Pending");
    let shown = lab.kubectl(&["get", "pod", "init-crash"]);
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("Init:CrashLoopBackOff"),
        "{}",
        String::from_utf8_lossy(&shown.stdout)
    );

    for name in ["init-order", "init-wait", "init-never", "init-crash"] {
        lab.delete(&format!("{PODS}/{name}"));
    }
    let (_, d) = lab.dockerd_of(&ordered);
    wait::until(
        "init-order's memory-backed volume to go",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let filter = format!("label=io.herd.pod.uid={order_uid}");
            d.docker_ok(&["volume", "ls", "-q", "--filter", &filter])
                .is_empty()
                .then_some(())
        },
    );
}

/// What a command run on a terminal shows of it: its size once it is
/// set (within 8 s; busybox's `stty size` prints nothing while it is
/// 0 × 0), the terminal, and stderr, which a terminal merges into stdout.
const IN_TERMINAL: &str = "for i in $(seq 40); do s=$(stty size 2>/dev/null); [ -n \"$s\" ] && [ \"$s\" != \"0 0\" ] && break; sleep 0.2; done; echo size=$s; tty; echo err >&2";

/// Asserts that `out`, [`IN_TERMINAL`] run by `what` in script(1)'s
/// 45 × 123 terminal, shows that terminal.
fn in_terminal_shown(out: &std::process::Output, what: &str, lab: &NodeLab) {
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && shown.contains("size=45 123")
            && shown.contains("/dev/pts/")
            && shown.contains("err"),
        "{what}: {shown} {}\nthe agents said:\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.agent_log_lines("terminal")
    );
}

/// `kubectl logs` and `kubectl exec` (both output streams, the exit code,
/// stdin to its end) on pod `name`'s web container, with kubectl `k`.
fn kubectl_reaches_the_container(lab: &NodeLab, k: Kubectl, name: &str) {
    let out = lab.kubectl_as(k, &["logs", name], None);
    assert!(
        out.status.success(),
        "kubectl {k:?} logs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("started {}", name)),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let out = lab.kubectl_as(
        k,
        &[
            "exec",
            name,
            "--",
            "/bin/sh",
            "-c",
            "echo out-$(hostname); echo err >&2; exit 3",
        ],
        None,
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "kubectl {k:?} exec: {stdout} {stderr}\nthe agents said:\n{}",
        lab.agent_log_lines("exec")
    );
    assert_eq!(stdout.trim(), format!("out-{}", name), "{stderr}");
    assert!(stderr.contains("err"), "{stderr}");
    let out = lab.kubectl_as(
        k,
        &["exec", "-i", name, "--", "/bin/sh", "-c", "cat; echo done"],
        Some("through stdin\n"),
    );
    assert!(
        out.status.success(),
        "kubectl {k:?} exec -i: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "through stdin\ndone\n"
    );
    let out = lab.kubectl_in_terminal(
        k,
        &["exec", "-it", name, "--", "/bin/sh", "-c", IN_TERMINAL],
    );
    in_terminal_shown(&out, &format!("kubectl {k:?} exec -it"), lab);
}
