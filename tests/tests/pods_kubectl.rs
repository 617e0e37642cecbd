//! Conformance: two real kubectls — Debian's kubectl 1.20 and the 1.32
//! these machines ship — drive the Kubernetes API of a namespace lab of
//! three herd agents through the commands the issue lists, each checked
//! on its output. Fake nodes (see `herd_tests::pods`) play the kubelet's
//! part towards the API; everything else is real.

use std::path::Path;
use std::time::Duration;

use herd_tests::pods::{
    FakeNode, Kubectl, PodsLab, UNAUTHORIZED, api_url, kubeconfig, running, write_file,
};
use herd_tests::wait;

/// The seed's 2015 demo YAML, as written.
const SEED_RC: &str = "apiVersion: v1
kind: ReplicationController
metadata:
  name: redis-master
  labels:
    name: redis-master
spec:
  replicas: 1
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
";

const SEED_SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: redis-master
  labels:
    name: redis-master
spec:
  ports:
    # the port that this service should serve on
  - port: 6379
    targetPort: 6379
  selector:
    name: redis-master
";

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: front
spec:
  replicas: 2
  selector:
    matchLabels: {app: front}
  template:
    metadata:
      labels: {app: front}
    spec:
      containers:
      - name: web
        image: nginx:1.25
";

const UNKNOWN_FIELD: &str = "apiVersion: v1
kind: Pod
metadata: {name: bad}
spec:
  containers:
  - name: a
    image: x
    bogus: 1
";

fn contains(out: &str, want: &str) {
    assert!(out.contains(want), "expected {want:?} in:\n{out}");
}

fn wait_running(lab: &PodsLab, ns: &str, selector_label: (&str, &str), n: usize) {
    lab.wait_pods(
        &format!("{n} running pods {selector_label:?} in {ns}"),
        ns,
        Duration::from_secs(60),
        |pods| {
            pods.iter()
                .filter(|p| {
                    p["metadata"]["labels"][selector_label.0] == selector_label.1
                        && p["metadata"]["deletionTimestamp"].is_null()
                })
                .filter(|p| running(p))
                .count()
                == n
                && pods
                    .iter()
                    .filter(|p| p["metadata"]["labels"][selector_label.0] == selector_label.1)
                    .count()
                    == n
        },
    );
}

fn conformance(lab: &PodsLab, k: Kubectl) {
    let ns = k.namespace();
    let dir = lab.cluster.dir.path();
    let n = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["-n".into(), ns.into()];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    };
    let ok = |args: &[&str]| {
        let full = n(args);
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        lab.kubectl_ok(k, &refs)
    };
    // `create namespace`: kubectl 1.32 sends the Namespace as protobuf
    // (its typed client, no discovery first), 1.20 as JSON.
    let created = lab.kubectl_ok(k, &["create", "namespace", ns]);
    assert_eq!(created, format!("namespace/{ns} created\n"));
    let got = lab.kubectl_ok(
        k,
        &["get", "namespace", ns, "-o", "jsonpath={.status.phase}"],
    );
    assert_eq!(got, "Active");
    let again = lab.kubectl_err(k, &["create", "namespace", ns], None);
    contains(&again, "AlreadyExists");
    // `create deployment` and `create service`: typed clients too (1.32
    // sends protobuf). Zero replicas, set explicitly, stay zero.
    contains(
        &ok(&[
            "create",
            "deployment",
            "typed",
            "--image=busybox",
            "--replicas=0",
        ]),
        "deployment.apps/typed created",
    );
    let replicas = ok(&[
        "get",
        "deployment",
        "typed",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(replicas, "0");
    contains(
        &ok(&["create", "service", "clusterip", "typed", "--tcp=80:http"]),
        "service/typed created",
    );
    let target = ok(&[
        "get",
        "svc",
        "typed",
        "-o",
        "jsonpath={.spec.ports[0].targetPort}",
    ]);
    assert_eq!(target, "http");
    ok(&["delete", "deployment", "typed"]);
    ok(&["delete", "service", "typed"]);

    // get nodes
    let nodes = lab.kubectl_ok(k, &["get", "nodes"]);
    for name in ["node-a", "node-b", "node-c"] {
        contains(&nodes, name);
    }
    contains(&nodes, "Ready");

    // create -f: the seed's RC and service, as written.
    let rc = write_file(dir, &format!("{ns}-rc.yaml"), SEED_RC);
    let svc = write_file(dir, &format!("{ns}-svc.yaml"), SEED_SERVICE);
    contains(
        &ok(&["create", "-f", &rc]),
        "replicationcontroller/redis-master created",
    );
    contains(&ok(&["create", "-f", &svc]), "service/redis-master created");
    let ip = ok(&[
        "get",
        "svc",
        "redis-master",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert!(
        ip.starts_with("10.0."),
        "cluster IP from the service range: {ip}"
    );
    wait_running(lab, ns, ("name", "redis-master"), 1);

    // get -o wide / json / yaml
    let wide = ok(&["get", "pods", "-o", "wide"]);
    contains(&wide, "Running");
    contains(&wide, "NODE");
    assert!(
        wide.contains("node-a") || wide.contains("node-b") || wide.contains("node-c"),
        "{wide}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["get", "rc", "redis-master", "-o", "json"]))
            .expect("-o json is JSON");
    assert_eq!(json["kind"], "ReplicationController");
    assert_eq!(json["status"]["replicas"], 1);
    contains(
        &ok(&["get", "svc", "redis-master", "-o", "yaml"]),
        "kind: Service",
    );
    let endpoints = wait::until(
        "the service's endpoints",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            let out = ok(&["get", "endpoints", "redis-master"]);
            out.contains(":6379").then_some(out)
        },
    );
    contains(&endpoints, "redis-master");

    // apply -f twice (unchanged), then changed.
    let dep = write_file(dir, &format!("{ns}-dep.yaml"), DEPLOYMENT);
    contains(&ok(&["apply", "-f", &dep]), "deployment.apps/front created");
    contains(
        &ok(&["apply", "-f", &dep]),
        "deployment.apps/front unchanged",
    );
    wait_running(lab, ns, ("app", "front"), 2);
    contains(
        &ok(&["rollout", "status", "deployment/front", "--timeout=60s"]),
        "successfully rolled out",
    );
    let dep2 = write_file(
        dir,
        &format!("{ns}-dep2.yaml"),
        &DEPLOYMENT.replace("nginx:1.25", "nginx:1.26"),
    );
    contains(
        &ok(&["apply", "-f", &dep2]),
        "deployment.apps/front configured",
    );
    contains(
        &ok(&["rollout", "status", "deployment/front", "--timeout=60s"]),
        "successfully rolled out",
    );
    assert_eq!(
        ok(&[
            "get",
            "deploy",
            "front",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "nginx:1.26"
    );

    // rollout undo goes back to the first template.
    contains(&ok(&["rollout", "undo", "deployment/front"]), "rolled back");
    contains(
        &ok(&["rollout", "status", "deployment/front", "--timeout=60s"]),
        "successfully rolled out",
    );
    assert_eq!(
        ok(&[
            "get",
            "deploy",
            "front",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "nginx:1.25"
    );
    wait_running(lab, ns, ("app", "front"), 2);

    // get -w sees a change.
    let pod = ok(&[
        "get",
        "pods",
        "-l",
        "name=redis-master",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let watch = {
        let net = lab.cluster.net.as_ref().expect("namespace lab");
        let mut cmd = net.client.command("timeout");
        let kubeconfig = lab.cluster.dir.path().join("kubeconfig-0");
        cmd.arg("8")
            .arg(k.path())
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args([
                "-n",
                ns,
                "get",
                "pod",
                &pod,
                "-w",
                "-o",
                "jsonpath={.metadata.labels.step}{\"\\n\"}",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().expect("kubectl get -w")
    };
    std::thread::sleep(Duration::from_secs(2));
    contains(&ok(&["label", "pod", &pod, "step=two"]), "labeled");
    let out = watch.wait_with_output().expect("kubectl get -w");
    contains(&String::from_utf8_lossy(&out.stdout), "two");

    // scale and label.
    contains(
        &ok(&["scale", "rc", "redis-master", "--replicas=3"]),
        "scaled",
    );
    wait_running(lab, ns, ("name", "redis-master"), 3);
    contains(&ok(&["label", "pod", &pod, "tier=cache"]), "labeled");
    contains(&ok(&["get", "pods", "-l", "tier=cache"]), &pod);

    // describe: fields and events.
    let described = ok(&["describe", "rc", "redis-master"]);
    contains(&described, "3 current / 3 desired");
    contains(&described, "SuccessfulCreate");
    contains(&ok(&["describe", "pod", &pod]), "Scheduled");

    // api-resources and explain.
    let resources = lab.kubectl_ok(k, &["api-resources"]);
    for want in [
        "deployments",
        "deploy",
        "apps/v1",
        "replicationcontrollers",
        "rc",
    ] {
        contains(&resources, want);
    }
    let explained = lab.kubectl_ok(k, &["explain", "pod"]);
    contains(&explained, "KIND:");
    contains(&explained, "Pod");
    contains(&explained, "spec");

    // Bad input: refused, by its field.
    let bad = write_file(dir, &format!("{ns}-bad.yaml"), UNKNOWN_FIELD);
    contains(
        &lab.kubectl_err(k, &["-n", ns, "create", "-f", &bad], None),
        "bogus",
    );
    contains(
        &lab.kubectl_err(
            k,
            &["-n", ns, "create", "-f", &bad, "--validate=false"],
            None,
        ),
        "bogus",
    );

    // delete, with cascade.
    contains(&ok(&["delete", "rc", "redis-master"]), "deleted");
    lab.wait_pods(
        "the RC's pods garbage-collected",
        ns,
        Duration::from_secs(30),
        |pods| {
            pods.iter()
                .all(|p| p["metadata"]["labels"]["name"] != "redis-master")
        },
    );
    contains(
        &ok(&["delete", "deployment", "front", "--cascade=foreground"]),
        "deleted",
    );
    assert!(
        ok(&["get", "rs", "-o", "name"]).trim().is_empty(),
        "replica sets left"
    );
    lab.wait_pods(
        "the deployment's pods gone",
        ns,
        Duration::from_secs(30),
        |pods| pods.is_empty(),
    );
}

/// Runs kubectl `k` with the kubeconfig at `config` in the client namespace.
fn kubectl_with(lab: &PodsLab, k: Kubectl, config: &Path, args: &[&str]) -> (bool, String) {
    let net = lab.cluster.net.as_ref().expect("namespace lab");
    let out = net
        .client
        .command("timeout")
        .arg("60")
        .arg(k.path())
        .arg(format!("--kubeconfig={}", config.display()))
        .args(args)
        .env("HOME", lab.cluster.dir.path())
        .output()
        .expect("running kubectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Who gets in: root's kubeconfig from `herd admin credentials` works; no
/// certificate, plain HTTP, a user without a grant, a certificate from
/// another CA are refused with the cause named, and the API keeps serving.
fn access(lab: &PodsLab, k: Kubectl) {
    let pki = lab.cluster.pki.as_ref().expect("a TLS cluster");
    let ca_key = pki.ca_cert.with_file_name("ca.key");
    let dir = lab.cluster.dir.path().join("access");
    let server = api_url(0);
    std::fs::create_dir_all(&dir).unwrap();
    let credentials = |out: &str, user: &str, ca_cert: &Path, ca_key: &Path| {
        let out = dir.join(out);
        let made = lab.herd(&[
            "admin",
            "credentials",
            "--user",
            user,
            "--ca-cert",
            &ca_cert.display().to_string(),
            "--ca-key",
            &ca_key.display().to_string(),
            "--out",
            &out.display().to_string(),
            "--api-server",
            &server,
        ]);
        assert!(made.status.success(), "{made:?}");
        out
    };
    let root = credentials("root", "root", &pki.ca_cert, &ca_key);
    let (ok, text) = kubectl_with(lab, k, &root.join("kubeconfig"), &["get", "namespaces"]);
    assert!(ok, "root's kubeconfig from herd admin credentials: {text}");
    contains(&text, "default");

    // (A user with nothing at all makes kubectl ask for a password before
    // it calls; a token the server does not know is the same as nothing.)
    let anonymous = dir.join("anonymous.kubeconfig");
    std::fs::write(
        &anonymous,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster: {{server: \"{server}\", certificate-authority: \"{}\"}}\n  name: herd\ncontexts:\n- context: {{cluster: herd, user: nobody}}\n  name: herd\ncurrent-context: herd\nusers:\n- name: nobody\n  user: {{token: not-a-credential}}\n",
            pki.ca_cert.display()
        ),
    )
    .unwrap();
    let (ok, text) = kubectl_with(lab, k, &anonymous, &["get", "pods"]);
    assert!(!ok, "no certificate: {text}");
    contains(&text, UNAUTHORIZED);

    let plain = dir.join("plain.kubeconfig");
    std::fs::write(&plain, kubeconfig(&server.replace("https://", "http://"))).unwrap();
    let (ok, text) = kubectl_with(lab, k, &plain, &["get", "pods"]);
    assert!(!ok, "plain HTTP: {text}");

    let alice = credentials("alice", "alice", &pki.ca_cert, &ca_key);
    let (ok, text) = kubectl_with(lab, k, &alice.join("kubeconfig"), &["get", "pods"]);
    assert!(!ok, "alice has no grant: {text}");
    contains(&text, "user \"alice\" cannot use the Kubernetes API");

    // Root of another cluster: its certificate is refused in the handshake.
    let other_ca = dir.join("other-ca");
    let made = lab.herd(&["admin", "init-ca", "--out", &other_ca.display().to_string()]);
    assert!(made.status.success(), "{made:?}");
    let other = credentials(
        "other-root",
        "root",
        &other_ca.join("ca.crt"),
        &other_ca.join("ca.key"),
    );
    let stranger = dir.join("stranger.kubeconfig");
    let text = std::fs::read_to_string(other.join("kubeconfig"))
        .unwrap()
        .replace(
            &format!("{}", other.join("ca.crt").display()),
            &format!("{}", pki.ca_cert.display()),
        );
    std::fs::write(&stranger, text).unwrap();
    let (ok, text) = kubectl_with(lab, k, &stranger, &["get", "pods"]);
    assert!(!ok, "a certificate from another CA: {text}");
    wait::until(
        "the agent to log the refused handshake",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || {
            let log = std::fs::read_to_string(&lab.cluster.members[0].log).ok()?;
            log.lines()
                .any(|l| l.contains("kubernetes-api") && l.contains("TLS handshake refused"))
                .then_some(())
        },
    );
    // And the API serves root as before.
    let (ok, text) = kubectl_with(lab, k, &root.join("kubeconfig"), &["get", "namespaces"]);
    assert!(ok, "{text}");
}

#[test]
fn pods_kubectl_120_and_132_conformance() {
    let lab = PodsLab::start(60);
    let _nodes: Vec<FakeNode> = ["node-a", "node-b", "node-c"]
        .iter()
        .enumerate()
        .map(|(i, name)| lab.fake_node(i, name, &[], "4"))
        .collect();
    wait::until(
        "three nodes",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let nodes = lab.get(0, "/api/v1/nodes").ok()?;
            (nodes["items"].as_array()?.len() == 3).then_some(())
        },
    );
    access(&lab, Kubectl::present()[0]);
    for k in Kubectl::present() {
        conformance(&lab, k);
    }
}
