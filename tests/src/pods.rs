//! A namespace lab for the pods role: three `herd agent`s, each in its
//! own network namespace serving the Kubernetes API on its client
//! address, real `kubectl` binaries run from the client namespace, and
//! fake nodes.
//!
//! A fake node is a test fixture that plays the kubelet's part towards
//! the API (until part 2 brings the real one): it registers its machine
//! (a leased record under `/herd/machines`, as an agent does) and its
//! Node object, and marks the pods bound to it Running and Ready with an
//! IP. It runs no containers. It is not a mock of anything under test:
//! the API server, the store and every controller are the real ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use herd_client::Credentials;
use herd_client::keys::{MachineRecord, Role};
use herd_store::launch::TestPki;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::store::{Cluster, Topology};
use crate::{require, wait};

/// The API port the lab's agents serve on.
pub const API_PORT: u16 = 6443;

/// A kubectl under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kubectl {
    /// Debian's `kubernetes-client` (kubectl 1.20), unpacked by scripts/deps.
    V120,
    /// The kubectl 1.32 these machines ship at /usr/bin/kubectl.
    V132,
}

/// What every kubectl prints for a 401: "You must be logged in to the
/// server (…)". Inside the parentheses 1.20 puts the server's Status
/// message ("Unauthorized"); 1.32, when its discovery request is the one
/// refused, client-go's own "the server has asked for the client to
/// provide credentials" (seen in CI).
pub const UNAUTHORIZED: &str = "You must be logged in to the server";

/// Where scripts/deps unpacks Debian's kubectl 1.20.
pub const KUBECTL_120: &str = "/opt/herd-tools/kubernetes-client/usr/bin/kubectl";

impl Kubectl {
    pub fn path(self) -> PathBuf {
        match self {
            Kubectl::V120 => {
                let p = std::env::var_os("HERD_KUBECTL_1_20")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(KUBECTL_120));
                assert!(
                    p.exists(),
                    "kubectl 1.20 is missing at {}: scripts/deps unpacks Debian's kubernetes-client there (apt-get download kubernetes-client; dpkg-deb -x)",
                    p.display()
                );
                p
            }
            Kubectl::V132 => {
                let p = PathBuf::from("/usr/bin/kubectl");
                assert!(p.exists(), "kubectl 1.32 is missing at /usr/bin/kubectl");
                p
            }
        }
    }

    /// The kubectls this machine has: 1.20 always (scripts/deps unpacks
    /// it); 1.32 where the machine ships it (Debian has no package of it,
    /// so a fresh Debian machine lacks it, and says so here).
    pub fn present() -> Vec<Kubectl> {
        if std::path::Path::new("/usr/bin/kubectl").exists() {
            vec![Kubectl::V132, Kubectl::V120]
        } else {
            eprintln!(
                "NOTE: no kubectl 1.32 at /usr/bin/kubectl on this machine: conformance runs with Debian's kubectl 1.20 only"
            );
            vec![Kubectl::V120]
        }
    }

    /// A namespace of its own for a conformance run.
    pub fn namespace(self) -> &'static str {
        match self {
            Kubectl::V120 => "k120",
            Kubectl::V132 => "k132",
        }
    }
}

/// The lab: the cluster, a runtime inside the client namespace, and a
/// kubeconfig per agent.
pub struct PodsLab {
    pub cluster: Cluster,
    pub rt: tokio::runtime::Runtime,
    kubeconfigs: Vec<PathBuf>,
    pub http: herd_http::Client,
}

impl PodsLab {
    /// Three agents (API on each), pods evicted `eviction` seconds after
    /// their node goes NotReady.
    pub fn start(eviction: u64) -> PodsLab {
        require::tool("ip", "iproute2");
        let cluster = Cluster::start_in_namespaces_with(3, |i| {
            vec![
                "--listen-api".into(),
                format!("{}:{API_PORT}", Topology::client_ip(i)),
                "--pod-eviction-timeout".into(),
                eviction.to_string(),
            ]
        });
        let rt = cluster.client_runtime();
        let kubeconfigs = (0..3)
            .map(|i| {
                let path = cluster.dir.path().join(format!("kubeconfig-{i}"));
                let pki = cluster.pki.as_ref().expect("a TLS cluster");
                std::fs::write(&path, root_kubeconfig(&api_url(i), pki))
                    .expect("writing a kubeconfig");
                path
            })
            .collect();
        let http = api_http(&cluster.credentials());
        let lab = PodsLab {
            cluster,
            rt,
            kubeconfigs,
            http,
        };
        for i in 0..3 {
            wait::until(
                "the API to serve its namespaces",
                Duration::from_secs(60),
                Duration::from_millis(300),
                || lab.get(i, "/api/v1/namespaces/default").ok().map(|_| ()),
            );
        }
        lab
    }

    /// Runs `kubectl ARGS` (against agent 0's API) in the client namespace.
    pub fn kubectl(&self, k: Kubectl, args: &[&str], stdin: Option<&str>) -> Output {
        self.kubectl_at(0, k, args, stdin)
    }

    /// [`PodsLab::kubectl`] against agent `i`'s API.
    pub fn kubectl_at(&self, i: usize, k: Kubectl, args: &[&str], stdin: Option<&str>) -> Output {
        let net = self.cluster.net.as_ref().expect("a namespace lab");
        let mut cmd = net.client.command("timeout");
        cmd.arg("60")
            .arg(k.path())
            .arg(format!("--kubeconfig={}", self.kubeconfigs[i].display()))
            .args(args)
            .env("HOME", self.cluster.dir.path())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        run(cmd, stdin)
    }

    /// [`PodsLab::kubectl`] that must succeed; its stdout.
    pub fn kubectl_ok(&self, k: Kubectl, args: &[&str]) -> String {
        let out = self.kubectl(k, args, None);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kubectl {args:?} ({k:?}) failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// [`PodsLab::kubectl`] that must fail; its stderr.
    pub fn kubectl_err(&self, k: Kubectl, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(k, args, stdin);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "kubectl {args:?} ({k:?}) succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        stderr
    }

    /// Runs `herd ARGS` in the client namespace.
    pub fn herd(&self, args: &[&str]) -> Output {
        let net = self.cluster.net.as_ref().expect("a namespace lab");
        let mut cmd = net.client.command("timeout");
        cmd.arg("60")
            .arg(crate::bin::herd())
            .args(args)
            .envs(self.cluster.client_env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        run(cmd, None)
    }

    /// Runs a `herd` verb against agent 0's API (`--server`) in the
    /// client namespace, given `secs` to finish.
    pub fn herd_verb(&self, secs: u64, args: &[&str], stdin: Option<&str>) -> Output {
        let inner = self.herd_verb_command(args);
        // `inner` is `ip netns exec NS herd ...`, run under `timeout`.
        let mut cmd = Command::new("timeout");
        cmd.arg(secs.to_string())
            .arg(inner.get_program())
            .args(inner.get_args())
            .envs(self.cluster.client_env())
            .env("HERD_LOG", "warn")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        run(cmd, stdin)
    }

    /// `herd ARGS --server <agent 0's API>` in the client namespace, not
    /// yet started, stopped after 300 s at the latest (`timeout` passes
    /// a SIGINT sent to it on to herd).
    pub fn herd_verb_command(&self, args: &[&str]) -> Command {
        let net = self.cluster.net.as_ref().expect("a namespace lab");
        let inner = net.client.command(crate::bin::herd());
        let mut cmd = Command::new("timeout");
        cmd.arg("300")
            .arg(inner.get_program())
            .args(inner.get_args())
            .args(args)
            .arg("--server")
            .arg(api_url(0))
            .envs(self.cluster.client_env())
            .env("HERD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// `GET path` on agent `i`'s API, as JSON.
    pub fn get(&self, i: usize, path: &str) -> Result<Value, herd_http::Error> {
        let (http, url) = (self.http.clone(), format!("{}{path}", api_url(i)));
        self.rt
            .block_on(
                self.rt
                    .spawn(async move { http.get_json::<Value>(&url).await }),
            )
            .expect("the request task")
    }

    /// Sends `method path` with a JSON `body` to agent `i`; status and body.
    pub fn send(
        &self,
        i: usize,
        method: herd_http::Method,
        path: &str,
        content_type: &str,
        body: &Value,
    ) -> (u16, Value) {
        let (http, url) = (self.http.clone(), format!("{}{path}", api_url(i)));
        let req = herd_http::Request::new(method, url)
            .header("content-type", content_type)
            .body(body.to_string());
        let resp = self
            .rt
            .block_on(self.rt.spawn(async move { http.fetch(req).await }))
            .expect("the request task")
            .expect("the API answers");
        (
            resp.status.as_u16(),
            serde_json::from_slice(&resp.body).unwrap_or(Value::Null),
        )
    }

    /// Starts a fake node named `name` (see the module doc).
    pub fn fake_node(
        &self,
        index: usize,
        name: &str,
        labels: &[(&str, &str)],
        cpu: &str,
    ) -> FakeNode {
        let endpoints: Vec<String> = self
            .cluster
            .members
            .iter()
            .map(|m| m.client.to_string())
            .collect();
        let node = FakeNodeSpec {
            api: api_url(index % 3),
            endpoints,
            credentials: self.cluster.credentials(),
            name: name.to_owned(),
            index,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cpu: cpu.to_owned(),
        };
        let stop = CancellationToken::new();
        let task = self.rt.spawn(node.run(stop.clone()));
        FakeNode {
            stop,
            task: Some(task),
        }
    }

    /// Pods of `namespace` as JSON objects.
    pub fn pods(&self, namespace: &str) -> Vec<Value> {
        self.get(0, &format!("/api/v1/namespaces/{namespace}/pods"))
            .map(|l| l["items"].as_array().cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Waits until `check` holds for the pods of `namespace`.
    pub fn wait_pods(
        &self,
        what: &str,
        namespace: &str,
        limit: Duration,
        check: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        wait::until(what, limit, Duration::from_millis(200), || {
            let pods = self.pods(namespace);
            check(&pods).then_some(pods)
        })
    }
}

/// The API URL of agent `i` (TLS: the test clusters run secure, as
/// agents do by default).
pub fn api_url(i: usize) -> String {
    format!("https://{}:{API_PORT}", Topology::client_ip(i))
}

/// A kubeconfig for the API at `server`, without credentials.
pub fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster: {{server: \"{server}\"}}\n  name: herd\ncontexts:\n- context: {{cluster: herd, user: admin}}\n  name: herd\ncurrent-context: herd\nusers:\n- name: admin\n  user: {{}}\n"
    )
}

/// A kubeconfig for the API at `server` that checks it against the test
/// cluster's CA and presents root's certificate.
pub fn root_kubeconfig(server: &str, pki: &TestPki) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster: {{server: \"{server}\", certificate-authority: \"{ca}\"}}\n  name: herd\ncontexts:\n- context: {{cluster: herd, user: root}}\n  name: herd\ncurrent-context: herd\nusers:\n- name: root\n  user: {{client-certificate: \"{cert}\", client-key: \"{key}\"}}\n",
        ca = pki.ca_cert.display(),
        cert = pki.root_cert.display(),
        key = pki.root_key.display(),
    )
}

/// An HTTP client of the API that speaks as `credentials` say (root's,
/// over TLS, for the test clusters).
pub fn api_http(credentials: &Credentials) -> herd_http::Client {
    let http = herd_http::Client::new().with_timeout(Duration::from_secs(10));
    match credentials
        .tls_config(&[herd_pki::tls::ALPN_HTTP1])
        .expect("a TLS client configuration")
    {
        Some(config) => http.with_tls(config),
        None => http,
    }
}

fn run(mut cmd: Command, stdin: Option<&str>) -> Output {
    let mut child = cmd.spawn().expect("starting the command");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .expect("writing stdin");
    }
    child.wait_with_output().expect("waiting for the command")
}

/// Whether a pod is Running and Ready.
pub fn running(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// A running fake node; [`FakeNode::crash`] stops it without a goodbye.
pub struct FakeNode {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeNode {
    /// The node dies: no more status, its machine lease expires.
    pub fn crash(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

struct FakeNodeSpec {
    api: String,
    endpoints: Vec<String>,
    credentials: herd_client::Credentials,
    name: String,
    index: usize,
    labels: BTreeMap<String, String>,
    cpu: String,
}

/// Machine lease of a fake node: short, so node-loss tests are quick.
const FAKE_LEASE: Duration = Duration::from_secs(3);

impl FakeNodeSpec {
    fn machine_id(&self) -> String {
        format!("fake{:08}", self.index)
    }

    /// Opens a session and puts the machine's record on its lease, as an
    /// agent registers; retried until the store answers.
    async fn register(&self) -> herd_client::session::Session {
        loop {
            if let Ok(client) =
                herd_client::Client::connect_with(&self.endpoints, &self.credentials).await
                && let Ok(session) = herd_client::session::Session::new(&client, FAKE_LEASE).await
            {
                let record = MachineRecord {
                    machine_id: self.machine_id(),
                    hostname: self.name.clone(),
                    mac: String::new(),
                    ip: "10.77.2.100".parse().expect("an address"),
                    boot_id: String::new(),
                    image_version: "fake".into(),
                    roles: vec![Role::Worker],
                    agent_version: "fake".into(),
                    metadata: BTreeMap::new(),
                    api_url: None,
                };
                let put = client
                    .kv()
                    .put(herd_client::proto::etcdserverpb::PutRequest {
                        key: record.key().into_bytes(),
                        value: serde_json::to_vec(&record).expect("a record serializes"),
                        lease: session.lease(),
                        ..Default::default()
                    })
                    .await;
                if put.is_ok() {
                    return session;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The node's Ready condition, as a kubelet posts it.
    fn ready_condition() -> Value {
        json!({"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "fake node is posting ready status", "lastHeartbeatTime": herd_now(), "lastTransitionTime": herd_now()})
    }

    /// Posts Ready again if the node is not Ready (after a lost lease, as
    /// a kubelet's status heartbeat would).
    async fn heartbeat(&self, http: &herd_http::Client) {
        let url = format!("{}/api/v1/nodes/{}", self.api, self.name);
        let Ok(node) = http.get_json::<Value>(&url).await else {
            return;
        };
        let ready = node["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        if !ready {
            let patch = json!({"status": {"conditions": [Self::ready_condition()]}});
            let req = herd_http::Request::new(herd_http::Method::PATCH, format!("{url}/status"))
                .header("content-type", "application/strategic-merge-patch+json")
                .body(patch.to_string());
            let _ = http.fetch(req).await;
        }
    }

    async fn run(self, stop: CancellationToken) {
        let http = api_http(&self.credentials);
        // The machine's lease, as an agent keeps it.
        let mut session = self.register().await;
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.name, "labels": self.labels},
            "spec": {"providerID": format!("herd://{}", self.machine_id())},
            "status": {
                "capacity": {"cpu": self.cpu, "memory": "8Gi", "pods": "110"},
                "allocatable": {"cpu": self.cpu, "memory": "8Gi", "pods": "110"},
                "conditions": [Self::ready_condition()],
                "addresses": [{"type": "InternalIP", "address": format!("10.78.0.{}", 10 + self.index)}, {"type": "Hostname", "address": self.name}],
                "nodeInfo": {"machineID": self.machine_id(), "kubeletVersion": "v1.32.0-herd-fake", "operatingSystem": "linux", "architecture": "amd64", "osImage": "fake", "containerRuntimeVersion": "fake://0", "kernelVersion": "", "kubeProxyVersion": "", "bootID": "", "systemUUID": ""}
            }
        });
        loop {
            let req = herd_http::Request::post(format!("{}/api/v1/nodes", self.api)).json(&node);
            match http.fetch(req).await {
                Ok(r) if r.status.is_success() || r.status.as_u16() == 409 => break,
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let mut next_ip = 2u32;
        let mut round = 0u64;
        while !stop.is_cancelled() {
            // A lease lost while the store was out (a leader kill outlasting
            // the short TTL) is registered again, as an agent does.
            if session.has_ended() {
                session = self.register().await;
            }
            round += 1;
            if round.is_multiple_of(5) {
                self.heartbeat(&http).await;
            }
            let url = format!(
                "{}/api/v1/pods?fieldSelector=spec.nodeName={}",
                self.api, self.name
            );
            if let Ok(list) = http.get_json::<Value>(&url).await {
                for pod in list["items"].as_array().into_iter().flatten() {
                    if running(pod) || !pod["metadata"]["deletionTimestamp"].is_null() {
                        continue;
                    }
                    next_ip += 1;
                    let ip = format!(
                        "10.{}.{}.{}",
                        100 + self.index,
                        next_ip / 250,
                        next_ip % 250 + 2
                    );
                    let statuses: Vec<Value> = pod["spec"]["containers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| json!({"name": c["name"], "ready": true, "restartCount": 0, "image": c["image"], "imageID": "", "started": true, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}))
                        .collect();
                    let patch = json!({"status": {
                        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                        "hostIP": format!("10.78.0.{}", 10 + self.index),
                        "conditions": [
                            {"type": "Initialized", "status": "True"},
                            {"type": "ContainersReady", "status": "True"},
                            {"type": "Ready", "status": "True", "lastTransitionTime": herd_now()},
                            {"type": "PodScheduled", "status": "True"}
                        ],
                        "containerStatuses": statuses
                    }});
                    let url = format!(
                        "{}/api/v1/namespaces/{}/pods/{}/status",
                        self.api,
                        pod["metadata"]["namespace"].as_str().unwrap_or("default"),
                        pod["metadata"]["name"].as_str().unwrap_or_default()
                    );
                    let req = herd_http::Request::new(herd_http::Method::PATCH, url)
                        .header("content-type", "application/merge-patch+json")
                        .body(patch.to_string());
                    let _ = http.fetch(req).await;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
        // A clean stop takes the machine away at once.
        let _ = session.close().await;
    }
}

/// The time now, RFC 3339.
fn herd_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// A file of the test's YAML under the scratch dir.
pub fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a test file");
    path.display().to_string()
}
