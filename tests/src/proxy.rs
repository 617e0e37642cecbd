//! The service proxy's namespace lab: agents running the pods role (so
//! the proxy) and the cluster network, "pods" that are namespaces plugged
//! into a machine's `herd0` (as in the network's tests) with a TCP server
//! answering its own name, and clients connecting from a pod, a machine
//! or the client namespace. No containers: the proxy only needs addresses
//! behind a bridge, and the Endpoints the test writes through the API.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net::{Pod, SubnetEnv, wait_env};
use crate::netns::Netns;
use crate::pods::{API_PORT, api_http, api_url};
use crate::store::{Cluster, Topology};
use crate::wait;

/// The agents' flags: API, cluster network, a fast proxy resync.
fn flags(dir: &Path, i: usize) -> Vec<String> {
    vec![
        "--listen-api".into(),
        format!("{}:{API_PORT}", Topology::client_ip(i)),
        "--proxy-sync-interval".into(),
        "1".into(),
    ]
    .into_iter()
    .chain(crate::net::machine_flags(&env_path(dir, i), i))
    .collect()
}

fn env_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("m{i}.env"))
}

/// Three machines with the API, the network (host-gw) and the proxy.
pub struct ProxyLab {
    pub cluster: Cluster,
    pub envs: Vec<SubnetEnv>,
    /// Runs in the client namespace (the API, the outside world).
    pub rt: tokio::runtime::Runtime,
    pub http: herd_http::Client,
    _dir: tempfile::TempDir,
}

impl ProxyLab {
    pub fn start() -> ProxyLab {
        crate::require::root();
        crate::require::tool("nft", "nftables");
        let dir = tempfile::tempdir().expect("a scratch dir");
        let path = dir.path().to_owned();
        let cluster = Cluster::start_in_namespaces_with(3, |i| flags(&path, i));
        crate::net::set_host_gw(&cluster);
        let envs = (0..3).map(|i| wait_env(&env_path(&path, i))).collect();
        let rt = cluster.client_runtime();
        let http = api_http(&cluster.credentials());
        let lab = ProxyLab {
            cluster,
            envs,
            rt,
            http,
            _dir: dir,
        };
        wait::until(
            "the API to serve its namespaces",
            Duration::from_secs(60),
            Duration::from_millis(300),
            || lab.get("/api/v1/namespaces/default").ok().map(|_| ()),
        );
        lab
    }

    /// `GET path` on agent 0's API.
    pub fn get(&self, path: &str) -> Result<Value, herd_http::Error> {
        let (http, url) = (self.http.clone(), format!("{}{path}", api_url(0)));
        self.rt
            .block_on(
                self.rt
                    .spawn(async move { http.get_json::<Value>(&url).await }),
            )
            .expect("the request task")
    }

    /// `method path` with `body` on agent 0's API; the status and body.
    pub fn send(
        &self,
        method: herd_http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let (http, url) = (self.http.clone(), format!("{}{path}", api_url(0)));
        let mut req =
            herd_http::Request::new(method, url).header("content-type", "application/json");
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
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

    /// Creates `object` under `path` (a collection); the created object.
    pub fn create(&self, path: &str, object: &Value) -> Value {
        let (status, body) = self.send(herd_http::Method::POST, path, Some(object));
        assert!((200..300).contains(&status), "POST {path}: {status} {body}");
        body
    }

    /// Replaces the Endpoints `name` of `default` with `ready` and
    /// `not_ready` addresses on `port`.
    pub fn set_endpoints(&self, name: &str, ready: &[Ipv4Addr], not_ready: &[Ipv4Addr], port: u16) {
        let addrs = |ips: &[Ipv4Addr]| -> Vec<Value> {
            ips.iter()
                .map(|ip| serde_json::json!({"ip": ip.to_string()}))
                .collect()
        };
        let subsets = if ready.is_empty() && not_ready.is_empty() {
            serde_json::json!([])
        } else {
            serde_json::json!([{"addresses": addrs(ready), "notReadyAddresses": addrs(not_ready),
                "ports": [{"port": port, "protocol": "TCP"}]}])
        };
        let path = format!("/api/v1/namespaces/default/endpoints/{name}");
        let body = serde_json::json!({"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": name, "namespace": "default"}, "subsets": subsets});
        let (status, _) = self.send(herd_http::Method::GET, &path, None);
        let (status, answer) = if status == 404 {
            self.send(
                herd_http::Method::POST,
                "/api/v1/namespaces/default/endpoints",
                Some(&body),
            )
        } else {
            self.send(herd_http::Method::PUT, &path, Some(&body))
        };
        assert!(
            (200..300).contains(&status),
            "endpoints {name}: {status} {answer}"
        );
    }

    /// The proxy's table on machine `i`, as `nft list` prints it (empty
    /// when there is none).
    pub fn table(&self, i: usize) -> String {
        let out = self
            .cluster
            .member_ns(i)
            .command("nft")
            .args(["list", "table", "ip", "herd-proxy"])
            .output()
            .expect("running nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A pod serving TCP on `port`: every connection gets `name` and is closed.
pub struct ServerPod {
    pub pod: Pod,
    pub name: String,
    _rt: tokio::runtime::Runtime,
}

impl ServerPod {
    pub fn start(machine: &Netns, env: SubnetEnv, host: u32, name: &str, port: u16) -> ServerPod {
        let pod = Pod::plug(machine, env, host);
        let rt = pod.ns.entry().runtime();
        let addr = SocketAddr::new(pod.addr.into(), port);
        let answer = format!("{name}\n");
        let listener = rt
            .block_on(rt.spawn(async move { tokio::net::TcpListener::bind(addr).await }))
            .expect("the bind task")
            .expect("binding the pod's server");
        rt.spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                let answer = answer.clone();
                tokio::spawn(async move {
                    let _ = s.write_all(answer.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        ServerPod {
            pod,
            name: name.to_owned(),
            _rt: rt,
        }
    }
}

/// Where connections come from: a runtime whose threads live in a namespace.
pub struct Client {
    rt: tokio::runtime::Runtime,
}

/// What one connection got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The name of the pod that answered.
    From(String),
    /// Refused at once (the proxy's reject of a service without endpoints).
    Refused,
    /// Anything else: timeout, unreachable, reset.
    Failed(String),
}

impl Client {
    pub fn in_ns(ns: &Netns) -> Client {
        Client {
            rt: ns.entry().runtime(),
        }
    }

    /// One connection to `to`.
    pub fn ask(&self, to: SocketAddr) -> Answer {
        self.rt
            .block_on(self.rt.spawn(async move {
                let connect = tokio::net::TcpStream::connect(to);
                let mut s = match tokio::time::timeout(Duration::from_secs(3), connect).await {
                    Err(_) => return Answer::Failed("connect timed out".into()),
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        return Answer::Refused;
                    }
                    Ok(Err(e)) => return Answer::Failed(e.to_string()),
                    Ok(Ok(s)) => s,
                };
                let mut text = String::new();
                match tokio::time::timeout(Duration::from_secs(3), s.read_to_string(&mut text))
                    .await
                {
                    Ok(Ok(_)) if !text.is_empty() => Answer::From(text.trim().to_owned()),
                    Ok(Ok(_)) => Answer::Failed("closed without an answer".into()),
                    Ok(Err(e)) => Answer::Failed(e.to_string()),
                    Err(_) => Answer::Failed("no answer".into()),
                }
            }))
            .expect("the connect task")
    }

    /// The answers of `n` connections to `to`.
    pub fn ask_n(&self, to: SocketAddr, n: usize) -> Vec<Answer> {
        (0..n).map(|_| self.ask(to)).collect()
    }
}

/// The names among `answers` (panics on a failed one, naming it).
pub fn names(answers: &[Answer]) -> std::collections::BTreeSet<String> {
    answers
        .iter()
        .map(|a| match a {
            Answer::From(n) => n.clone(),
            other => panic!("a connection failed: {other:?} (all: {answers:?})"),
        })
        .collect()
}
