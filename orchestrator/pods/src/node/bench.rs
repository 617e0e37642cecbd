//! `herd bench pod-start`: pod start latency (bound → Running and Ready,
//! warm image) and pods per node, measured on one node set up by
//! [`super::bench_setup`] — a whole `herd agent` (API, kubelet, cluster
//! network) and its own dockerd — against an anchor on the same dockerd:
//! the Docker work a pod needs done directly through bollard (create and
//! start an infra container, then an app container joined to its network
//! and IPC namespaces, as the kubelet does), the floor a kubelet cannot go
//! below. Rounds alternate which side goes first.
//!
//! 1. One pod at a time: herd's time runs from the create request of a
//!    pod whose `spec.nodeName` is already set until a watch sees it
//!    Running with Ready=True; the anchor's over its four Docker calls.
//!    Each sample is removed (herd: deleted, until its containers are
//!    gone) before the next.
//! 2. Many at once: P pods created together until all are Running and
//!    Ready, against P anchor pods started together; the agent's,
//!    dockerd's and containerd's (with its shims) resident memory before
//!    and with them running, per pod.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::CreateContainerOptions;
use herd_cli::{Output, Table};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::bench_setup::{APP_IMAGE, INFRA_IMAGE, Lab, NODE, ready, until};
use super::docker::label;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchCommand {
    /// Kubelet: pod start latency and pods per node against the bare
    /// Docker calls a pod needs, on one node's real dockerd.
    PodStart(BenchArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Single-pod start samples per side.
    #[arg(long, default_value_t = 20)]
    pub samples: usize,
    /// Pods started at once in the pods-per-node measurement.
    #[arg(long, default_value_t = 30)]
    pub pods: usize,
    /// Rounds of the pods-per-node measurement (order alternates).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Median and 90th percentile, in ms.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub median_ms: f64,
    pub p90_ms: f64,
    pub samples_ms: Vec<f64>,
}

/// Resident memory (VmRSS) in KiB.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Rss {
    pub agent_kib: u64,
    pub dockerd_kib: u64,
    /// containerd and every containerd-shim of this dockerd.
    pub containerd_kib: u64,
}

/// One side of the pods-per-node measurement (medians over the rounds).
#[derive(Debug, Clone, Serialize)]
pub struct Many {
    pub total_ms: f64,
    pub rounds_ms: Vec<f64>,
    pub before: Rss,
    pub with_pods: Rss,
    pub agent_kib_per_pod: f64,
    pub dockerd_kib_per_pod: f64,
    pub containerd_kib_per_pod: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub docker_version: String,
    pub storage_driver: String,
    pub herd_single: Latency,
    pub anchor_single: Latency,
    pub single_median_ratio: f64,
    pub pods: usize,
    pub herd_many: Many,
    pub anchor_many: Many,
    pub many_ratio: f64,
}

pub async fn run(command: BenchCommand, cancel: CancellationToken) -> anyhow::Result<()> {
    let BenchCommand::PodStart(args) = command;
    if args.samples == 0 || args.pods == 0 || args.rounds == 0 {
        bail!("--samples, --pods and --rounds must be at least 1");
    }
    let mut lab = tokio::select! {
        lab = Lab::start() => lab.context("setting up the node")?,
        // The half-made lab goes with the future (see its Drop).
        _ = cancel.cancelled() => bail!("interrupted"),
    };
    let result = tokio::select! {
        r = bench(&lab, &args) => r.map_err(|e| e.context(lab.log_tails())),
        _ = cancel.cancelled() => Err(anyhow::anyhow!("interrupted")),
    };
    lab.tear_down().await;
    let r = result?;
    args.output.print(&r, |r| {
        let mut t = Table::new(["MEASURE", "HERD", "ANCHOR (docker calls)", "HERD/ANCHOR"]);
        let ms = |v: f64| format!("{v:.0} ms");
        let ratio = |a: f64, b: f64| format!("{:.2}×", a / b);
        let (h, a) = (&r.herd_single, &r.anchor_single);
        let n = h.samples_ms.len();
        t.row([
            format!("pod start, median of {n}"),
            ms(h.median_ms),
            ms(a.median_ms),
            ratio(h.median_ms, a.median_ms),
        ]);
        t.row([
            format!("pod start, p90 of {n}"),
            ms(h.p90_ms),
            ms(a.p90_ms),
            ratio(h.p90_ms, a.p90_ms),
        ]);
        let (hm, am) = (&r.herd_many, &r.anchor_many);
        t.row([
            format!("{} pods at once, all Running", r.pods),
            ms(hm.total_ms),
            ms(am.total_ms),
            ratio(hm.total_ms, am.total_ms),
        ]);
        let kib = |v: f64| format!("{:.0} KiB", v);
        t.row([
            "agent memory per pod".into(),
            kib(hm.agent_kib_per_pod),
            "-".into(),
            "-".into(),
        ]);
        t.row([
            "dockerd memory per pod".into(),
            kib(hm.dockerd_kib_per_pod),
            kib(am.dockerd_kib_per_pod),
            "-".into(),
        ]);
        t.row([
            "containerd + shims per pod".into(),
            kib(hm.containerd_kib_per_pod),
            kib(am.containerd_kib_per_pod),
            "-".into(),
        ]);
        let mut s = t.render();
        let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
        s.push_str(&format!(
            "agent RSS {} idle, {} with {} pods; dockerd {} idle, {} with them\n",
            mib(hm.before.agent_kib),
            mib(hm.with_pods.agent_kib),
            r.pods,
            mib(hm.before.dockerd_kib),
            mib(hm.with_pods.dockerd_kib),
        ));
        s.push_str(
            "memory per pod: VmRSS with the pods running less before, over the pods \
             (dockerd's Go heap lags, so its figure is noisy; each shim's VmRSS counts \
             the text it shares)\n",
        );
        s.push_str(&format!(
            "dockerd {} ({} storage); both sides on it, rounds alternating\n",
            r.docker_version, r.storage_driver
        ));
        s
    })?;
    Ok(())
}

async fn bench(lab: &Lab, args: &BenchArgs) -> anyhow::Result<Results> {
    let info = lab.docker().version().await?;
    let storage_driver = lab.docker().info().await?.driver.unwrap_or_default();
    // One of each first, unmeasured: both paths warm (images, caches).
    herd_start(lab, "warm").await?;
    anchor_start(lab, "warm").await?;
    let (mut herd, mut anchor) = (Vec::new(), Vec::new());
    for i in 0..args.samples {
        let name = format!("s{i}");
        if i % 2 == 0 {
            herd.push(herd_start(lab, &name).await?);
            anchor.push(anchor_start(lab, &name).await?);
        } else {
            anchor.push(anchor_start(lab, &name).await?);
            herd.push(herd_start(lab, &name).await?);
        }
    }
    let (mut herd_many, mut anchor_many) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        if round % 2 == 0 {
            herd_many.push(herd_many_start(lab, round, args.pods).await?);
            anchor_many.push(anchor_many_start(lab, round, args.pods).await?);
        } else {
            anchor_many.push(anchor_many_start(lab, round, args.pods).await?);
            herd_many.push(herd_many_start(lab, round, args.pods).await?);
        }
    }
    let (herd_single, anchor_single) = (latency(herd), latency(anchor));
    let (herd_many, anchor_many) = (many(herd_many, args.pods), many(anchor_many, args.pods));
    Ok(Results {
        docker_version: info.version.unwrap_or_default(),
        storage_driver,
        single_median_ratio: herd_single.median_ms / anchor_single.median_ms,
        herd_single,
        anchor_single,
        pods: args.pods,
        many_ratio: herd_many.total_ms / anchor_many.total_ms,
        herd_many,
        anchor_many,
    })
}

/// The median of `v` (the mean of the middle two for an even count).
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn latency(samples: Vec<Duration>) -> Latency {
    let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    let mut sorted = ms.clone();
    sorted.sort_by(f64::total_cmp);
    // Nearest rank.
    let rank = ((sorted.len() as f64 * 0.9).ceil() as usize).clamp(1, sorted.len());
    Latency {
        median_ms: median(&ms),
        p90_ms: sorted[rank - 1],
        samples_ms: ms,
    }
}

fn many(rounds: Vec<(Duration, Rss, Rss)>, pods: usize) -> Many {
    let pick = |f: &dyn Fn(&(Duration, Rss, Rss)) -> f64| {
        median(&rounds.iter().map(f).collect::<Vec<_>>())
    };
    let per_pod = |f: fn(&Rss) -> u64| {
        pick(&|r: &(Duration, Rss, Rss)| (f(&r.2) as f64 - f(&r.1) as f64) / pods as f64)
    };
    let rss = |which: fn(&(Duration, Rss, Rss)) -> &Rss| Rss {
        agent_kib: pick(&|r| which(r).agent_kib as f64) as u64,
        dockerd_kib: pick(&|r| which(r).dockerd_kib as f64) as u64,
        containerd_kib: pick(&|r| which(r).containerd_kib as f64) as u64,
    };
    let rounds_ms: Vec<f64> = rounds.iter().map(|r| r.0.as_secs_f64() * 1000.0).collect();
    Many {
        total_ms: median(&rounds_ms),
        rounds_ms,
        before: rss(|r| &r.1),
        with_pods: rss(|r| &r.2),
        agent_kib_per_pod: per_pod(|r| r.agent_kib),
        dockerd_kib_per_pod: per_pod(|r| r.dockerd_kib),
        containerd_kib_per_pod: per_pod(|r| r.containerd_kib),
    }
}

/// A pod bound to the node at creation: one app container that sleeps,
/// killed at once when deleted.
fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {
            "nodeName": NODE,
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "app", "image": APP_IMAGE,
                "command": ["/bin/sleep", "3600"],
            }],
        },
    })
}

const PODS: &str = "/api/v1/namespaces/default/pods";

/// Opens a watch of the bench's pods from now on.
async fn watch(lab: &Lab) -> anyhow::Result<crate::cli::client::Watch> {
    let list = lab
        .api
        .get(&format!("{PODS}?labelSelector=app%3Dbench"))
        .await?;
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("0");
    Ok(lab
        .api
        .watch(
            &format!("{PODS}?labelSelector=app%3Dbench"),
            rv,
            "application/json",
        )
        .await?)
}

fn running_and_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running" && ready(pod)
}

/// Creates `names` at once; the time until the watch saw each Running
/// and Ready.
async fn create_and_wait(lab: &Lab, names: &[String]) -> anyhow::Result<Duration> {
    let mut w = watch(lab).await?;
    let start = Instant::now();
    let created = futures::future::join_all(
        names
            .iter()
            .map(|n| async move { lab.api.create(PODS, &pod(n)).await }),
    );
    let created = tokio::time::timeout(Duration::from_secs(120), created)
        .await
        .context("creating the pods")?;
    for c in created {
        c?;
    }
    let mut left: HashSet<&str> = names.iter().map(String::as_str).collect();
    let end = start + Duration::from_secs(300);
    while !left.is_empty() {
        let event = tokio::time::timeout_at(end.into(), w.next())
            .await
            .with_context(|| format!("{} pods not Running and Ready in 300 s", left.len()))??
            .context("the API ended the watch")?;
        let name = event.object["metadata"]["name"]
            .as_str()
            .unwrap_or_default();
        if running_and_ready(&event.object) {
            left.remove(name);
        }
    }
    Ok(start.elapsed())
}

/// Deletes the pods and waits until the kubelet removed every container
/// (and with the sandbox the pod's veth).
async fn delete_and_wait(lab: &Lab, names: &[String]) -> anyhow::Result<()> {
    let deleted = futures::future::join_all(
        names
            .iter()
            .map(|n| async move { lab.api.delete(&format!("{PODS}/{n}"), "Background").await }),
    )
    .await;
    for d in deleted {
        d?;
    }
    let node = format!("{}={NODE}", label::NODE);
    until(
        "the pods' containers to be gone",
        Duration::from_secs(120),
        || async { lab.containers(&node).await.is_ok_and(|c| c.is_empty()) },
    )
    .await
}

async fn herd_start(lab: &Lab, name: &str) -> anyhow::Result<Duration> {
    let names = [format!("herd-{name}")];
    let took = create_and_wait(lab, &names).await?;
    delete_and_wait(lab, &names).await?;
    Ok(took)
}

/// Memory of the agent, dockerd and this dockerd's containerd and shims.
async fn rss(lab: &Lab) -> anyhow::Result<Rss> {
    let (agent, dockerd) = lab.pids();
    let (agent, dockerd) = (
        agent.context("the agent exited")?,
        dockerd.context("dockerd exited")?,
    );
    let exec_root = lab.dir.join("x").display().to_string();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Rss> {
        let vm_rss = |pid: u32| -> u64 {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.split_whitespace().next()?.parse().ok())
                })
                .unwrap_or(0)
        };
        // containerd and its shims name the exec root in their command lines.
        let mut containerd = 0;
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if pid != dockerd && pid != agent && cmdline.contains(&exec_root) {
                containerd += vm_rss(pid);
            }
        }
        Ok(Rss {
            agent_kib: vm_rss(agent),
            dockerd_kib: vm_rss(dockerd),
            containerd_kib: containerd,
        })
    })
    .await?
}

async fn herd_many_start(
    lab: &Lab,
    round: usize,
    pods: usize,
) -> anyhow::Result<(Duration, Rss, Rss)> {
    let names: Vec<String> = (0..pods).map(|i| format!("herd-m{round}-{i}")).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss(lab).await?;
    let took = create_and_wait(lab, &names).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let with = rss(lab).await?;
    delete_and_wait(lab, &names).await?;
    Ok((took, before, with))
}

/// The anchor's label (for the clean-up).
const ANCHOR_LABEL: &str = "io.herd.bench";

/// What the kubelet asks Docker for a pod, done directly: the infra
/// container (the infra image, `none` network, shareable IPC, the pod's
/// hostname), then the app container joined to its network and IPC
/// namespaces; both created and started. Their ids.
async fn anchor_pod(lab: &Lab, name: &str) -> anyhow::Result<[String; 2]> {
    let labels = HashMap::from([(ANCHOR_LABEL.to_owned(), "anchor".to_owned())]);
    let create = |container: String, body: ContainerCreateBody| async move {
        let options = CreateContainerOptions {
            name: Some(container),
            ..Default::default()
        };
        let id = lab.docker().create_container(Some(options), body).await?.id;
        lab.docker().start_container(&id, None).await?;
        anyhow::Ok(id)
    };
    let infra = create(
        format!("anchor_POD_{name}"),
        ContainerCreateBody {
            image: Some(INFRA_IMAGE.into()),
            hostname: Some(name.into()),
            labels: Some(labels.clone()),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                ipc_mode: Some("shareable".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await?;
    let join = format!("container:{infra}");
    let app = create(
        format!("anchor_app_{name}"),
        ContainerCreateBody {
            image: Some(APP_IMAGE.into()),
            entrypoint: Some(vec!["/bin/sleep".into(), "3600".into()]),
            env: Some(Vec::new()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(join.clone()),
                ipc_mode: Some(join),
                binds: Some(Vec::new()),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    match app {
        Ok(app) => Ok([infra, app]),
        Err(e) => {
            lab.remove_all(&[infra]).await;
            Err(e)
        }
    }
}

async fn anchor_start(lab: &Lab, name: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let ids = anchor_pod(lab, &format!("a-{name}")).await?;
    let took = start.elapsed();
    lab.remove_all(&ids).await;
    Ok(took)
}

async fn anchor_many_start(
    lab: &Lab,
    round: usize,
    pods: usize,
) -> anyhow::Result<(Duration, Rss, Rss)> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss(lab).await?;
    let start = Instant::now();
    let started = futures::future::join_all(
        (0..pods).map(|i| async move { anchor_pod(lab, &format!("a-m{round}-{i}")).await }),
    )
    .await;
    let took = start.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let with = rss(lab).await;
    let label = format!("{ANCHOR_LABEL}=anchor");
    let all = lab.containers(&label).await?;
    lab.remove_all(&all).await;
    for s in started {
        s?;
    }
    Ok((took, before, with?))
}
