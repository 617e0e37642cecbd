//! `herd bench pods`: the pods API and its scheduler on one machine — a
//! real store (`herd agent --store-only` members on loopback), the API
//! server and controllers in this process, Nodes that post Ready and run
//! nothing — measuring pods scheduled per second, API requests per
//! second (get, list, create, each over a new connection as `herd-http`
//! makes them), a write's fan-out to many watchers, and what the same
//! requests cost as kubectl commands (a process, its config and
//! discovery each time).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use herd_cli::{Output, Table};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::bench_tls::BenchTls;
use super::client::Api;
use crate::api::ApiConfig;
use crate::role::{self, PodsConfig};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchCommand {
    /// Pods: scheduling rate, API requests/s, watch fan-out, kubectl's cost.
    Pods(BenchArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Pods to create and schedule.
    #[arg(long, default_value_t = 1000)]
    pub pods: usize,
    /// Ready nodes to schedule them on.
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    /// Requests per API measurement.
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Watchers of the fan-out measurement.
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    /// Store members (`herd agent --store-only` processes on loopback).
    #[arg(long, default_value_t = 1)]
    pub members: usize,
    /// The kubectl to time (skipped when missing).
    #[arg(long, default_value = "/usr/bin/kubectl")]
    pub kubectl: PathBuf,
    /// kubectl runs per command.
    #[arg(long, default_value_t = 10)]
    pub kubectl_runs: usize,
    /// Serve the API over TLS, as agents do (a CA made for the run; every
    /// client, kubectl too, presents root's certificate): run with and
    /// without it for the cost of TLS.
    #[arg(long)]
    pub tls: bool,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Serialize)]
struct Results {
    pods: usize,
    nodes: usize,
    store_members: usize,
    /// The API served over TLS (`--tls`).
    tls: bool,
    create_pods_secs: f64,
    all_bound_secs: f64,
    pods_scheduled_per_sec: f64,
    get_per_sec: f64,
    list_per_sec: f64,
    list_items: usize,
    create_per_sec: f64,
    watchers: usize,
    fanout_median_ms: f64,
    fanout_max_ms: f64,
    kubectl: Option<KubectlCost>,
}

#[derive(Debug, Serialize)]
struct KubectlCost {
    version: String,
    get_ms: f64,
    list_ms: f64,
    create_ms: f64,
}

/// Store members as child processes, killed on drop.
struct Members(Vec<std::process::Child>);

impl Drop for Members {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn start_store(n: usize, dir: &Path) -> anyhow::Result<(Members, Vec<String>)> {
    let herd = std::env::current_exe().context("finding the herd binary")?;
    let addrs = (0..n)
        .map(|i| Ok((format!("p{i}"), free_addr()?, free_addr()?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cluster: Vec<String> = addrs.iter().map(|(n, _, p)| format!("{n}={p}")).collect();
    let mut members = Members(Vec::new());
    for (name, client, peer) in &addrs {
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = std::process::Command::new(&herd)
            .args([
                "agent",
                "--store-only",
                "--insecure-plaintext",
                "--name",
                name,
                "--token",
                "bench",
            ])
            .arg("--data-dir")
            .arg(dir.join(name))
            .args(["--listen-client", &client.to_string()])
            .args(["--listen-peer", &peer.to_string()])
            .args(["--initial-cluster", &cluster.join(",")])
            .env("HERD_LOG", "warn")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting a store member")?;
        members.0.push(child);
    }
    Ok((
        members,
        addrs.iter().map(|(_, c, _)| c.to_string()).collect(),
    ))
}

/// Polls `check` every 50 ms until it holds, at most `limit`.
pub(crate) async fn until<F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + limit;
    while !check().await {
        if Instant::now() > end {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Runs `n` calls of `call(i)`, `concurrency` at a time; calls per second.
async fn rate<F, Fut>(n: usize, concurrency: usize, call: F) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let start = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..n)
        .map(call)
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn pod(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "bench", "resources": {"requests": {"cpu": "1m"}}}]},
    })
}

pub async fn run(command: BenchCommand, cancel: CancellationToken) -> anyhow::Result<()> {
    let BenchCommand::Pods(args) = command;
    let dir = std::env::temp_dir().join(format!("herd-bench-pods-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = bench(&args, &dir, cancel).await;
    let _ = std::fs::remove_dir_all(&dir);
    let r = result?;
    args.output.print(&r, |r| {
        let herd = if r.tls { "HERD (TLS)" } else { "HERD" };
        let mut t = Table::new(["MEASURE", herd, "KUBECTL (per command)"]);
        let k = r.kubectl.as_ref();
        let kc = |f: fn(&KubectlCost) -> f64| k.map_or("-".into(), |k| format!("{:.0} ms", f(k)));
        t.row([
            format!("schedule {} pods on {} nodes", r.pods, r.nodes),
            format!(
                "{:.0} pods/s (created in {:.2} s, all bound at {:.2} s)",
                r.pods_scheduled_per_sec, r.create_pods_secs, r.all_bound_secs
            ),
            "-".into(),
        ]);
        t.row([
            "get one pod".to_owned(),
            format!("{:.0} req/s", r.get_per_sec),
            kc(|k| k.get_ms),
        ]);
        t.row([
            format!("list {} pods", r.list_items),
            format!("{:.0} req/s", r.list_per_sec),
            kc(|k| k.list_ms),
        ]);
        t.row([
            "create a pod".to_owned(),
            format!("{:.0} req/s", r.create_per_sec),
            kc(|k| k.create_ms),
        ]);
        t.row([
            format!("one write seen by {} watchers", r.watchers),
            format!(
                "median {:.0} ms, max {:.0} ms",
                r.fanout_median_ms, r.fanout_max_ms
            ),
            "-".into(),
        ]);
        let mut s = t.render();
        if let Some(k) = k {
            s.push_str(&format!("kubectl: {}\n", k.version));
        }
        s
    })?;
    Ok(())
}

async fn bench(args: &BenchArgs, dir: &Path, cancel: CancellationToken) -> anyhow::Result<Results> {
    let (_members, endpoints) = start_store(args.members, dir)?;
    let store = {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            match herd_client::Client::connect(&endpoints).await {
                Ok(c)
                    if c.kv()
                        .range(herd_client::proto::etcdserverpb::RangeRequest {
                            key: b"/".to_vec(),
                            ..Default::default()
                        })
                        .await
                        .is_ok() =>
                {
                    break c;
                }
                _ if Instant::now() > end => bail!("the store did not answer within 60 s"),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = cancel.child_token();
    let base = format!("{}://{addr}", if args.tls { "https" } else { "http" });
    let tls = if args.tls {
        Some(BenchTls::make(dir, &base)?)
    } else {
        None
    };
    let config = PodsConfig {
        listen_api: addr,
        token: None,
        tls: tls.as_ref().map(|t| Arc::clone(&t.server)),
        kubelet: Default::default(),
        api: ApiConfig::default(),
        eviction_timeout: Duration::from_secs(300),
        candidate: "bench".into(),
        version: "bench".into(),
    };
    let server = tokio::spawn(role::run(store, listener, config, stop.clone()));
    let _stop_on_exit = stop.clone().drop_guard();
    let mut api = Api::new(
        herd_http::Client::new().with_timeout(Duration::from_secs(60)),
        &base,
        None,
    );
    if let Some(t) = &tls {
        api = api.with_tls(Arc::clone(&t.client));
    }
    until(
        "the API serving namespace default",
        Duration::from_secs(60),
        || async { api.get("/api/v1/namespaces/default").await.is_ok() },
    )
    .await?;
    for ns in ["sched", "api", "fanout"] {
        api.create(
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?;
    }
    for i in 0..args.nodes {
        let name = format!("bench-node-{i}");
        let ready = json!({"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "bench"});
        api.create(
            "/api/v1/nodes",
            &json!({
                "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                "status": {"capacity": {"cpu": "64", "memory": "256Gi", "pods": "10000"},
                           "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "10000"},
                           "conditions": [ready]},
            }),
        )
        .await?;
    }

    // Scheduling: every pod created, then the time until all are bound.
    let start = Instant::now();
    rate(args.pods, args.concurrency, |i| {
        let api = api.clone();
        async move {
            api.create(
                "/api/v1/namespaces/sched/pods",
                &pod(&format!("s{i}"), json!({"app": "sched"})),
            )
            .await?;
            Ok(())
        }
    })
    .await?;
    let create_pods_secs = start.elapsed().as_secs_f64();
    until("every pod bound", Duration::from_secs(600), || async {
        api.get("/api/v1/namespaces/sched/pods?fieldSelector=spec.nodeName%3D")
            .await
            .is_ok_and(|l| l["items"].as_array().is_some_and(Vec::is_empty))
    })
    .await?;
    let all_bound_secs = start.elapsed().as_secs_f64();

    // API requests.
    let list_items = 100.min(args.pods);
    for i in 0..list_items {
        api.create(
            "/api/v1/namespaces/api/pods",
            &pod(&format!("l{i}"), json!({"app": "api"})),
        )
        .await?;
    }
    let get_per_sec = rate(args.requests, args.concurrency, |i| {
        let api = api.clone();
        async move {
            api.get(&format!("/api/v1/namespaces/api/pods/l{}", i % list_items))
                .await?;
            Ok(())
        }
    })
    .await?;
    let list_per_sec = rate(args.requests / 4, args.concurrency, |_| {
        let api = api.clone();
        async move {
            api.get("/api/v1/namespaces/api/pods").await?;
            Ok(())
        }
    })
    .await?;
    let create_per_sec = rate(args.requests, args.concurrency, |i| {
        let api = api.clone();
        async move {
            api.create(
                "/api/v1/namespaces/api/pods",
                &pod(&format!("c{i}"), json!({"app": "create"})),
            )
            .await?;
            Ok(())
        }
    })
    .await?;

    let (fanout_median_ms, fanout_max_ms) = fanout(&api, args.watchers, &cancel).await?;
    let kubectl = if args.kubectl.exists() {
        let config = match &tls {
            Some(t) => t.kubeconfig.clone(),
            None => anonymous_kubeconfig(dir, &base)?,
        };
        Some(kubectl_cost(&args.kubectl, &config, dir, args.kubectl_runs).await?)
    } else {
        None
    };
    stop.cancel();
    let _ = server.await;
    Ok(Results {
        pods: args.pods,
        nodes: args.nodes,
        store_members: args.members,
        tls: args.tls,
        create_pods_secs,
        all_bound_secs,
        pods_scheduled_per_sec: args.pods as f64 / all_bound_secs,
        get_per_sec,
        list_per_sec,
        list_items,
        create_per_sec,
        watchers: args.watchers,
        fanout_median_ms,
        fanout_max_ms,
        kubectl,
    })
}

/// `watchers` watches of one namespace; five writes, each timed from
/// before the write until every watcher saw it. Median and worst, in ms.
async fn fanout(
    api: &Api,
    watchers: usize,
    cancel: &CancellationToken,
) -> anyhow::Result<(f64, f64)> {
    let list = api.get("/api/v1/namespaces/fanout/pods").await?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_owned();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String)>();
    let stop = cancel.child_token();
    let _guard = stop.clone().drop_guard();
    let mut opened = Vec::with_capacity(watchers);
    for _ in 0..watchers {
        opened.push(
            api.watch("/api/v1/namespaces/fanout/pods", &rv, "application/json")
                .await?,
        );
    }
    for (i, mut w) in opened.into_iter().enumerate() {
        let (tx, stop) = (tx.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    e = w.next() => match e {
                        Ok(Some(e)) => {
                            let name = e.object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                            if tx.send((i, name)).is_err() { return; }
                        }
                        _ => return,
                    }
                }
            }
        });
    }
    drop(tx);
    let mut times = Vec::new();
    for round in 0..5 {
        let name = format!("f{round}");
        let start = Instant::now();
        api.create(
            "/api/v1/namespaces/fanout/pods",
            &pod(&name, json!({"app": "fanout"})),
        )
        .await?;
        let mut who = vec![false; watchers];
        let mut left = watchers;
        while left > 0 {
            let Some((i, n)) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .ok()
                .flatten()
            else {
                bail!("{left} of {watchers} watchers did not see {name} within 60 s");
            };
            if n == name && !who[i] {
                who[i] = true;
                left -= 1;
            }
        }
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        // Later events of this pod (its binding) are not part of the next round.
        tokio::time::sleep(Duration::from_millis(500)).await;
        while rx.try_recv().is_ok() {}
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], times[times.len() - 1]))
}

/// A kubeconfig for the plaintext API at `base`, without credentials.
fn anonymous_kubeconfig(dir: &Path, base: &str) -> anyhow::Result<PathBuf> {
    let config = dir.join("kubeconfig");
    std::fs::write(
        &config,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster: {{server: \"{base}\"}}\n  name: b\ncontexts:\n- context: {{cluster: b, user: u}}\n  name: b\ncurrent-context: b\nusers:\n- name: u\n  user: {{}}\n"
        ),
    )?;
    Ok(config)
}

/// What `kubectl get pod`, `get pods` and `create -f` cost per command,
/// run one after another (each a process with its own config and
/// discovery cache, as people run them).
async fn kubectl_cost(
    kubectl: &Path,
    config: &Path,
    dir: &Path,
    runs: usize,
) -> anyhow::Result<KubectlCost> {
    let manifest = dir.join("pod.yaml");
    let run = |args: Vec<String>| {
        let (kubectl, config, home) = (kubectl.to_owned(), config.to_owned(), dir.to_owned());
        async move {
            let out = tokio::process::Command::new(&kubectl)
                .arg(format!("--kubeconfig={}", config.display()))
                .args(&args)
                .env("HOME", &home)
                .output()
                .await?;
            if !out.status.success() {
                bail!("kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
    };
    let version = run(vec!["version".into(), "--client".into()])
        .await?
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    // Its discovery cache filled once, as on a machine where kubectl was used before.
    run(vec!["get".into(), "pods".into(), "-n".into(), "api".into()]).await?;
    let (mut get, mut list, mut create) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let t = Instant::now();
        run(vec![
            "get".into(),
            "pod".into(),
            "l0".into(),
            "-n".into(),
            "api".into(),
        ])
        .await?;
        get.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        run(vec![
            "get".into(),
            "pods".into(),
            "-n".into(),
            "api".into(),
            "-l".into(),
            "app=api".into(),
        ])
        .await?;
        list.push(t.elapsed().as_secs_f64());
        std::fs::write(
            &manifest,
            serde_json::to_string(&pod(&format!("k{i}"), json!({"app": "kubectl"})))?,
        )?;
        let t = Instant::now();
        run(vec![
            "create".into(),
            "-n".into(),
            "api".into(),
            "-f".into(),
            manifest.display().to_string(),
        ])
        .await?;
        create.push(t.elapsed().as_secs_f64());
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64 * 1000.0;
    Ok(KubectlCost {
        version,
        get_ms: mean(&get),
        list_ms: mean(&list),
        create_ms: mean(&create),
    })
}
