//! The `herd` verbs (apply, get, describe, delete, scale, label, rollout,
//! rolling-update) against a namespace lab of three agents serving the
//! Kubernetes API, with fake nodes playing the kubelet's part: each verb
//! checked on its output and on the objects it leaves in the API.

use std::io::{BufRead, BufReader};
use std::process::Output;
use std::time::Duration;

use herd_tests::pods::{FakeNode, PodsLab, running, write_file};
use serde_json::Value;

const NS: &str = "verbs";

/// A namespace and the seed's RC (3 replicas) and service, one file.
const BUNDLE: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: verbs
---
apiVersion: v1
kind: ReplicationController
metadata:
  name: redis-master
  namespace: verbs
  labels:
    name: redis-master
spec:
  replicas: 3
  selector:
    name: redis-master
  template:
    metadata:
      labels:
        name: redis-master
    spec:
      containers:
      - name: master
        image: redis
        ports:
        - containerPort: 6379
---
apiVersion: v1
kind: Service
metadata:
  name: redis-master
  namespace: verbs
  labels:
    name: redis-master
spec:
  ports:
  - port: 6379
    targetPort: 6379
  selector:
    name: redis-master
";

const NEXT_RC: &str = "apiVersion: v1
kind: ReplicationController
metadata:
  name: redis-v3
spec:
  replicas: 2
  selector:
    name: redis-master
    version: v3
  template:
    metadata:
      labels:
        name: redis-master
        version: v3
    spec:
      containers:
      - name: master
        image: redis:8
";

fn deployment(image: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: front
  namespace: verbs
spec:
  replicas: 2
  selector:
    matchLabels: {{app: front}}
  template:
    metadata:
      labels: {{app: front}}
    spec:
      containers:
      - name: web
        image: {image}
"
    )
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(lab: &PodsLab, secs: u64, args: &[&str]) -> String {
    let out = lab.herd_verb(secs, args, None);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "herd {args:?} failed: {stderr}\n{stdout}"
    );
    stdout
}

fn contains(out: &str, want: &str) {
    assert!(out.contains(want), "expected {want:?} in:\n{out}");
}

/// The running pods of `verbs` with label `key=value`, by their images.
fn images(lab: &PodsLab, key: &str, value: &str) -> Vec<String> {
    let mut v: Vec<String> = lab
        .pods(NS)
        .iter()
        .filter(|p| {
            p["metadata"]["labels"][key] == value && p["metadata"]["deletionTimestamp"].is_null()
        })
        .map(|p| {
            format!(
                "{}{}",
                p["spec"]["containers"][0]["image"].as_str().unwrap_or(""),
                if running(p) { "" } else { " (not running)" }
            )
        })
        .collect();
    v.sort();
    v
}

fn wait_images(lab: &PodsLab, key: &str, value: &str, want: &[&str]) {
    lab.wait_pods(
        &format!("pods {key}={value} running {want:?}"),
        NS,
        Duration::from_secs(90),
        |_| images(lab, key, value) == want,
    );
}

fn rcs(lab: &PodsLab) -> Vec<Value> {
    lab.get(
        0,
        &format!("/api/v1/namespaces/{NS}/replicationcontrollers"),
    )
    .expect("listing RCs")["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn nodes(lab: &PodsLab) -> Vec<FakeNode> {
    ["node-a", "node-b", "node-c"]
        .iter()
        .enumerate()
        .map(|(i, n)| lab.fake_node(i, n, &[], "4"))
        .collect()
}

#[test]
fn pods_verbs_apply_get_describe_label_scale_delete() {
    let lab = PodsLab::start(60);
    let _nodes = nodes(&lab);
    let dir = lab.cluster.dir.path();
    let bundle = write_file(dir, "bundle.yaml", BUNDLE);

    // apply: created, then unchanged, then configured.
    let out = ok(&lab, 60, &["apply", "-f", &bundle]);
    assert_eq!(
        out,
        "namespace/verbs created\nreplicationcontroller/redis-master created\nservice/redis-master created\n"
    );
    wait_images(&lab, "name", "redis-master", &["redis", "redis", "redis"]);
    let out = ok(&lab, 60, &["apply", "-f", &bundle]);
    assert_eq!(
        out,
        "namespace/verbs unchanged\nreplicationcontroller/redis-master unchanged\nservice/redis-master unchanged\n"
    );
    let changed = write_file(
        dir,
        "changed.yaml",
        &BUNDLE.replace(
            "  labels:\n    name: redis-master\nspec:\n  replicas: 3",
            "  labels:\n    name: redis-master\n    tier: cache\nspec:\n  replicas: 3",
        ),
    );
    let out = ok(&lab, 60, &["apply", "-f", &changed]);
    contains(&out, "replicationcontroller/redis-master configured\n");
    contains(&out, "service/redis-master unchanged\n");
    let rc = lab
        .get(
            0,
            "/api/v1/namespaces/verbs/replicationcontrollers/redis-master",
        )
        .unwrap();
    assert_eq!(rc["metadata"]["labels"]["tier"], "cache");
    // The label dropped from the manifest is removed again by the next apply.
    let out = ok(&lab, 60, &["apply", "-f", &bundle]);
    contains(&out, "replicationcontroller/redis-master configured\n");
    let rc = lab
        .get(
            0,
            "/api/v1/namespaces/verbs/replicationcontrollers/redis-master",
        )
        .unwrap();
    assert!(rc["metadata"]["labels"]["tier"].is_null(), "{rc}");

    // A field herd does not know: the server's error, naming the file and the field.
    let bad = write_file(
        dir,
        "bad.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: verbs}\nspec:\n  containers:\n  - name: a\n    image: x\n    bogus: 1\n",
    );
    let out = lab.herd_verb(60, &["apply", "-f", &bad], None);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    contains(
        &stderr,
        "bad.yaml: document 1: pod/bad: Error from server (Invalid)",
    );
    contains(&stderr, "spec.containers[0].bogus");
    // Bad YAML names the file; nothing is sent.
    let broken = write_file(dir, "broken.yaml", "kind: [\n");
    let (_, stderr) = text(&lab.herd_verb(60, &["apply", "-f", &broken], None));
    contains(&stderr, "broken.yaml: not YAML");

    // get: the server's table, JSON, YAML, selectors, nodes.
    let out = ok(
        &lab,
        60,
        &["get", "pods", "-n", NS, "-l", "name=redis-master"],
    );
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(out.starts_with("NAME"), "{out}");
    assert_eq!(out.matches("Running").count(), 3, "{out}");
    let out = ok(&lab, 60, &["get", "pods", "-n", NS, "-o", "json"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
    let out = ok(
        &lab,
        60,
        &["get", "rc/redis-master", "-n", NS, "-o", "yaml"],
    );
    contains(&out, "replicas: 3");
    let out = ok(&lab, 60, &["get", "nodes", "--wide"]);
    for n in ["node-a", "node-b", "node-c"] {
        contains(&out, n);
    }
    contains(&out, "INTERNAL-IP");
    let out = ok(&lab, 60, &["get", "svc", "-A"]);
    contains(&out, "NAMESPACE");
    contains(&out, "verbs");
    let (_, stderr) = text(&lab.herd_verb(60, &["get", "cronjobs"], None));
    contains(&stderr, "doesn't have a resource type \"cronjobs\"");

    // get -w prints the change a scale makes, and stops on SIGINT.
    let mut watch = lab
        .herd_verb_command(&["get", "rc", "-n", NS, "-w"])
        .spawn()
        .expect("starting get -w");
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let header = lines.next().unwrap().unwrap();
    assert!(header.starts_with("NAME"), "{header}");
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("redis-master"), "{first}");
    // scale: the watch sees the RC with 2 desired.
    let out = ok(
        &lab,
        60,
        &["scale", "rc", "redis-master", "-n", NS, "--replicas", "2"],
    );
    assert_eq!(out, "replicationcontroller/redis-master scaled\n");
    let seen = herd_tests::wait::until(
        "the watch to show 2 desired",
        Duration::from_secs(30),
        Duration::from_millis(1),
        || {
            let line = lines.next()?.ok()?;
            let cells: Vec<&str> = line.split_whitespace().collect();
            (cells.first() == Some(&"redis-master") && cells.get(1) == Some(&"2")).then_some(line)
        },
    );
    assert!(seen.starts_with("redis-master"));
    std::process::Command::new("kill")
        .args(["-INT", &watch.id().to_string()])
        .status()
        .unwrap();
    let status = watch.wait().unwrap();
    assert!(
        status.success(),
        "get -w exits cleanly on SIGINT: {status:?}"
    );
    wait_images(&lab, "name", "redis-master", &["redis", "redis"]);

    // describe: metadata, spec, status and the events.
    let out = ok(&lab, 60, &["describe", "rc", "redis-master", "-n", NS]);
    contains(&out, "Name:               redis-master\n");
    contains(&out, "Namespace:          verbs\n");
    contains(&out, "Spec:\n");
    contains(&out, "SuccessfulCreate");
    contains(&out, "SuccessfulDelete");
    let out = ok(
        &lab,
        60,
        &["describe", "rc/redis-master", "-n", NS, "-o", "json"],
    );
    let d: Value = serde_json::from_str(&out).unwrap();
    assert!(!d["events"].as_array().unwrap().is_empty());

    // label: set, refuse to overwrite, overwrite, remove.
    let out = ok(
        &lab,
        60,
        &["label", "svc", "redis-master", "-n", NS, "tier=cache"],
    );
    assert_eq!(out, "service/redis-master labeled\n");
    let out = lab.herd_verb(
        60,
        &["label", "svc/redis-master", "-n", NS, "tier=db"],
        None,
    );
    assert!(!out.status.success());
    contains(
        &text(&out).1,
        "'tier' already has a value (cache), and --overwrite is false",
    );
    ok(
        &lab,
        60,
        &[
            "label",
            "svc/redis-master",
            "-n",
            NS,
            "tier=db",
            "--overwrite",
        ],
    );
    let out = ok(
        &lab,
        60,
        &["get", "svc", "-n", NS, "-l", "tier=db", "-o", "json"],
    );
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    ok(&lab, 60, &["label", "svc/redis-master", "-n", NS, "tier-"]);
    let svc = lab
        .get(0, "/api/v1/namespaces/verbs/services/redis-master")
        .unwrap();
    assert!(svc["metadata"]["labels"]["tier"].is_null(), "{svc}");

    // Deployments: rollout status, a changed image, history, undo.
    let d1 = write_file(dir, "d1.yaml", &deployment("nginx:1.25"));
    let d2 = write_file(dir, "d2.yaml", &deployment("nginx:1.27"));
    ok(&lab, 60, &["apply", "-f", &d1]);
    let out = ok(
        &lab,
        90,
        &["rollout", "status", "deployment/front", "-n", NS],
    );
    contains(&out, "deployment \"front\" successfully rolled out");
    ok(&lab, 60, &["apply", "-f", &d2]);
    let out = ok(
        &lab,
        90,
        &["rollout", "status", "deploy", "front", "-n", NS],
    );
    contains(&out, "successfully rolled out");
    wait_images(&lab, "app", "front", &["nginx:1.27", "nginx:1.27"]);
    let out = ok(
        &lab,
        60,
        &["rollout", "history", "deployment/front", "-n", NS],
    );
    contains(&out, "REVISION");
    assert!(
        out.lines().any(|l| l.starts_with("1 ")) && out.lines().any(|l| l.starts_with("2 ")),
        "{out}"
    );
    let out = ok(&lab, 60, &["rollout", "undo", "deployment/front", "-n", NS]);
    assert_eq!(out, "deployment.apps/front rolled back\n");
    ok(
        &lab,
        90,
        &["rollout", "status", "deployment/front", "-n", NS],
    );
    wait_images(&lab, "app", "front", &["nginx:1.25", "nginx:1.25"]);
    ok(
        &lab,
        60,
        &["scale", "deploy/front", "-n", NS, "--replicas", "3"],
    );
    wait_images(
        &lab,
        "app",
        "front",
        &["nginx:1.25", "nginx:1.25", "nginx:1.25"],
    );

    // delete: by manifest, by name with a foreground cascade, a missing one.
    let out = ok(&lab, 60, &["delete", "-f", &d1, "--cascade", "foreground"]);
    assert_eq!(out, "deployment \"front\" deleted\n");
    wait_images(&lab, "app", "front", &[]);
    let out = ok(&lab, 60, &["delete", "svc", "redis-master", "-n", NS]);
    assert_eq!(out, "service \"redis-master\" deleted\n");
    let out = lab.herd_verb(60, &["delete", "svc", "redis-master", "-n", NS], None);
    assert!(!out.status.success());
    contains(&text(&out).1, "Error from server (NotFound)");
    ok(
        &lab,
        60,
        &[
            "delete",
            "svc",
            "redis-master",
            "-n",
            NS,
            "--ignore-not-found",
        ],
    );
}

#[test]
fn pods_verbs_rolling_update_replaces_pods_one_at_a_time_and_resumes() {
    let lab = PodsLab::start(60);
    let _nodes = nodes(&lab);
    let dir = lab.cluster.dir.path();
    let bundle = write_file(dir, "bundle.yaml", BUNDLE);
    ok(&lab, 60, &["apply", "-f", &bundle]);
    wait_images(&lab, "name", "redis-master", &["redis", "redis", "redis"]);

    // --image: a new RC OLD-<hash>, pods moved one at a time, renamed back.
    let out = ok(
        &lab,
        180,
        &[
            "rolling-update",
            "redis-master",
            "-n",
            NS,
            "--image",
            "redis:7",
            "--update-period",
            "1s",
        ],
    );
    contains(&out, "Created redis-master-");
    for step in [
        "up to 1",
        "up to 2",
        "up to 3",
        "down to 2",
        "down to 1",
        "down to 0",
    ] {
        contains(&out, step);
    }
    contains(&out, "Renaming redis-master-");
    contains(
        &out,
        "replicationcontroller \"redis-master\" rolling updated",
    );
    // One pod at a time: every "up to n" comes before "down to 3-n".
    let pos = |s: &str| out.find(s).unwrap();
    assert!(
        pos("up to 1") < pos("down to 2") && pos("down to 2") < pos("up to 2"),
        "{out}"
    );
    let rcs_now = rcs(&lab);
    assert_eq!(rcs_now.len(), 1, "only the renamed RC is left: {rcs_now:?}");
    let rc = &rcs_now[0];
    assert_eq!(rc["metadata"]["name"], "redis-master");
    assert_eq!(rc["spec"]["replicas"], 3);
    assert!(rc["spec"]["selector"]["deployment"].is_string(), "{rc}");
    assert_eq!(
        rc["spec"]["template"]["spec"]["containers"][0]["image"],
        "redis:7"
    );
    wait_images(
        &lab,
        "name",
        "redis-master",
        &["redis:7", "redis:7", "redis:7"],
    );
    // Nothing doubled: the renamed RC adopts the pods rather than making new ones.
    let uid = rc["metadata"]["uid"].as_str().unwrap().to_owned();
    lab.wait_pods(
        "the renamed RC to adopt its pods",
        NS,
        Duration::from_secs(60),
        |pods| {
            pods.iter()
                .all(|p| p["metadata"]["ownerReferences"][0]["uid"] == uid.as_str())
        },
    );
    assert_eq!(lab.pods(NS).len(), 3);

    // -f, interrupted after its first step, then run again: it resumes.
    let next = write_file(dir, "next.yaml", NEXT_RC);
    let args = [
        "rolling-update",
        "redis-master",
        "-n",
        NS,
        "-f",
        &next,
        "--update-period",
        "20s",
    ];
    let mut first = lab.herd_verb_command(&args).spawn().unwrap();
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    herd_tests::wait::until(
        "the first step",
        Duration::from_secs(60),
        Duration::from_millis(1),
        || {
            let l = lines.next()?.ok()?;
            l.starts_with("Scaling redis-master down to 2")
                .then_some(())
        },
    );
    std::process::Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .unwrap();
    let status = first.wait().unwrap();
    assert!(!status.success(), "an interrupted update says so");
    let mid = rcs(&lab);
    let replicas = |name: &str| {
        mid.iter()
            .find(|r| r["metadata"]["name"] == name)
            .map(|r| r["spec"]["replicas"].as_i64().unwrap())
    };
    assert_eq!(
        (replicas("redis-master"), replicas("redis-v3")),
        (Some(2), Some(1))
    );
    let old = mid
        .iter()
        .find(|r| r["metadata"]["name"] == "redis-master")
        .unwrap();
    assert_eq!(
        old["metadata"]["annotations"]["kubectl.kubernetes.io/next-controller-id"],
        "redis-v3"
    );
    let out = ok(
        &lab,
        180,
        &[
            "rolling-update",
            "redis-master",
            "-n",
            NS,
            "-f",
            &next,
            "--update-period",
            "1s",
        ],
    );
    contains(&out, "Continuing update with existing controller redis-v3.");
    contains(
        &out,
        "replicationcontroller \"redis-master\" rolling updated to \"redis-v3\"",
    );
    let left = rcs(&lab);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["metadata"]["name"], "redis-v3");
    assert_eq!(left[0]["spec"]["replicas"], 2);
    wait_images(&lab, "name", "redis-master", &["redis:8", "redis:8"]);

    // --rollback of an update in progress: the old RC back to its count.
    let back = [
        "rolling-update",
        "redis-v3",
        "redis-v4",
        "-n",
        NS,
        "--image",
        "redis:9",
        "--update-period",
        "20s",
    ];
    let mut first = lab.herd_verb_command(&back).spawn().unwrap();
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    herd_tests::wait::until(
        "the first step",
        Duration::from_secs(60),
        Duration::from_millis(1),
        || {
            let l = lines.next()?.ok()?;
            l.starts_with("Scaling redis-v3 down to 1").then_some(())
        },
    );
    std::process::Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .unwrap();
    let _ = first.wait();
    let out = ok(
        &lab,
        180,
        &[
            "rolling-update",
            "redis-v3",
            "-n",
            NS,
            "--rollback",
            "--update-period",
            "1s",
        ],
    );
    contains(&out, "replicationcontroller \"redis-v3\" rolled back");
    let left = rcs(&lab);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["metadata"]["name"], "redis-v3");
    assert_eq!(left[0]["spec"]["replicas"], 2);
    wait_images(&lab, "name", "redis-master", &["redis:8", "redis:8"]);
}
