//! `herd bench net`: what the cluster network costs.
//!
//! 1. Convergence: 1,000 simulated machines' leases written straight into a
//!    store at once; how fast one machine's routes controller programs
//!    their routes (and removes them again), and the store traffic it
//!    costs, measured in bytes through a counting proxy, next to what one
//!    full read of the leases costs (a controller that re-read the tree per
//!    event — fleet's design — would pay that per lease). It runs in a
//!    network namespace of its own (a thread that unshared it), with its
//!    own single-member store.
//! 2. Data path: pod to pod across two machines (real agents, host-gw and
//!    vxlan) against host to host on the same link, with iperf3 and ping,
//!    rounds alternating the order so load hits both alike.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use herd_client::Client;
use herd_client::proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, request_op,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::cidr::Ipv4Net;
use crate::config::{Backend, NetworkConfig};
use crate::lease::{SUBNETS, SubnetLease, subnet_key};
use crate::netlink::Kernel;
use crate::routes::{self, Path as RoutePath};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Route convergence for 1,000 machines' leases, and pod-to-pod
    /// throughput/latency (host-gw, vxlan) against host-to-host.
    Net(NetBenchArgs),
}

#[derive(Debug, Args)]
pub struct NetBenchArgs {
    /// Simulated machines whose leases appear at once.
    #[arg(long, default_value_t = 1000)]
    pub machines: u32,
    /// Rounds of each data-path measurement (order alternates).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Only the convergence part.
    #[arg(long)]
    pub skip_datapath: bool,
    #[arg(short = 'o', long, value_enum, default_value_t = herd_cli::Output::Table)]
    pub output: herd_cli::Output,
}

/// The convergence figures.
#[derive(Debug, Clone, Serialize)]
pub struct Convergence {
    pub machines: u32,
    /// From the first lease write to the last route programmed.
    pub converge_ms: f64,
    /// Routes programmed per second over that time.
    pub routes_per_s: f64,
    /// From deleting every lease to the last route removed.
    pub remove_ms: f64,
    /// Bytes the controller received from the store for the whole run
    /// (initial listing, the leases' watch events, their deletions).
    pub store_bytes_in: u64,
    pub store_bytes_out: u64,
    /// One full read of the 1,000 leases.
    pub full_read_bytes: u64,
}

/// One data-path figure.
#[derive(Debug, Clone, Serialize)]
pub struct PathFigure {
    pub backend: String,
    pub path: String,
    pub gbit_s: f64,
    pub rtt_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub convergence: Convergence,
    pub datapath: Vec<PathFigure>,
}

fn table(r: &Report) -> String {
    let c = &r.convergence;
    let mut out = format!(
        "convergence ({} leases at once, one machine's routes controller):\n",
        c.machines
    );
    let mut t = herd_cli::Table::new([
        "CONVERGED",
        "ROUTES/S",
        "REMOVED",
        "STORE IN",
        "STORE OUT",
        "ONE FULL READ",
    ]);
    t.row([
        format!("{:.0} ms", c.converge_ms),
        format!("{:.0}", c.routes_per_s),
        format!("{:.0} ms", c.remove_ms),
        format!("{} KiB", c.store_bytes_in / 1024),
        format!("{} KiB", c.store_bytes_out / 1024),
        format!("{} KiB", c.full_read_bytes / 1024),
    ]);
    out.push_str(&t.render());
    if !r.datapath.is_empty() {
        out.push_str("\ndata path (median of rounds):\n");
        let mut t = herd_cli::Table::new(["BACKEND", "PATH", "GBIT/S", "RTT", "VS HOST"]);
        for f in &r.datapath {
            let host = r
                .datapath
                .iter()
                .find(|h| h.backend == f.backend && h.path == "host-to-host");
            t.row([
                f.backend.clone(),
                f.path.clone(),
                format!("{:.2}", f.gbit_s),
                format!("{:.3} ms", f.rtt_ms),
                host.map_or("-".into(), |h| {
                    format!("{:.1} %", 100.0 * f.gbit_s / h.gbit_s)
                }),
            ]);
        }
        out.push_str(&t.render());
    }
    out
}

pub async fn run(args: NetBenchArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let herd = std::env::current_exe().context("finding the herd binary")?;
    let machines = args.machines;
    let herd2 = herd.clone();
    let convergence = tokio::task::spawn_blocking(move || convergence(&herd2, machines))
        .await
        .context("the convergence thread")??;
    let mut datapath = Vec::new();
    if !args.skip_datapath {
        for backend in ["host-gw", "vxlan"] {
            if shutdown.is_cancelled() {
                break;
            }
            let (herd, rounds, seconds) = (herd.clone(), args.rounds, args.seconds);
            let figures = tokio::task::spawn_blocking(move || {
                let lab = DataLab::new(&herd, backend)?;
                lab.measure(rounds, seconds)
            })
            .await
            .context("the data-path thread")??;
            datapath.extend(figures);
        }
    }
    let report = Report {
        convergence,
        datapath,
    };
    args.output.print(&report, table)?;
    Ok(())
}

/// A `herd agent` child process, killed on drop.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scratch(tag: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("herd-bench-net-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

async fn connect(endpoint: &str) -> anyhow::Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(c) = Client::connect(&[endpoint.to_owned()]).await
            && c.kv()
                .range(RangeRequest {
                    key: b"probe".to_vec(),
                    ..Default::default()
                })
                .await
                .is_ok()
        {
            return Ok(c);
        }
        if Instant::now() > deadline {
            bail!("the store at {endpoint} did not answer within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Counts bytes each way between clients and `upstream`.
async fn counting_proxy(
    upstream: std::net::SocketAddr,
) -> anyhow::Result<(
    std::net::SocketAddr,
    Arc<(AtomicU64, AtomicU64)>,
    tokio::task::JoinHandle<()>,
)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let c = Arc::clone(&counts);
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut down, _)) = listener.accept().await {
            let c = Arc::clone(&c);
            conns.spawn(async move {
                let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = down.set_nodelay(true);
                let _ = up.set_nodelay(true);
                let (mut dr, mut dw) = down.split();
                let (mut ur, mut uw) = up.split();
                let out = async {
                    let n = tokio::io::copy(&mut dr, &mut uw).await.unwrap_or(0);
                    c.1.fetch_add(n, Ordering::Relaxed);
                };
                let inn = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    loop {
                        let n = match ur.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        c.0.fetch_add(n as u64, Ordering::Relaxed);
                        if dw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                tokio::join!(out, inn);
            });
        }
    });
    Ok((addr, counts, task))
}

fn convergence(herd: &Path, machines: u32) -> anyhow::Result<Convergence> {
    // This thread gets a network namespace of its own: routes, links and
    // the store's sockets vanish with it.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .context("unsharing a network namespace (needs root)")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(converge(herd, machines))
}

async fn converge(herd: &Path, machines: u32) -> anyhow::Result<Convergence> {
    let kernel = Arc::new(Kernel::new()?);
    kernel.link_up("lo").await?;
    let uplink = kernel.ensure_dummy("uplink0").await?;
    kernel
        .set_only_address(uplink.index, Ipv4Addr::new(10, 96, 0, 1), 16)
        .await?;
    let dir = scratch("store")?;
    let store = "127.0.0.1:23790";
    let _agent = Agent(
        std::process::Command::new(herd)
            .args([
                "agent",
                "--name",
                "bench",
                "--listen-client",
                store,
                "--listen-peer",
                "127.0.0.1:23800",
                "--token",
                "bench",
            ])
            .arg("--data-dir")
            .arg(dir.join("store"))
            .env("HERD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the bench store")?,
    );
    let writer = connect(store).await?;
    let config = NetworkConfig {
        network: "10.128.0.0/9".parse().expect("valid"),
        subnet_len: 24,
        subnet_min: None,
        subnet_max: None,
        backend: Backend::HostGw,
    };
    crate::registry::set_config(&writer, &config).await?;
    let (proxy, counts, proxy_task) = counting_proxy(store.parse().expect("valid")).await?;
    let client = connect(&proxy.to_string()).await?;
    let own = config.network.subnet(24, 1);
    let ctx = Arc::new(routes::Ctx::new(
        Arc::clone(&kernel),
        "bench-self".into(),
        own,
        config.network,
        RoutePath::HostGw {
            uplink: uplink.index,
        },
        Duration::from_secs(3600),
    ));
    let cancel = CancellationToken::new();
    let controller = tokio::spawn(routes::run(client, Arc::clone(&ctx), cancel.clone()));
    // Let the controller list the (empty) prefix and open its watch.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leases: Vec<(Ipv4Net, SubnetLease)> = (0..machines)
        .map(|i| {
            (
                config.network.subnet(24, u64::from(i) + 2),
                SubnetLease {
                    machine_id: format!("sim{i:04}"),
                    public_ip: Some(Ipv4Addr::new(
                        10,
                        96,
                        (i / 250 + 1) as u8,
                        (i % 250 + 2) as u8,
                    )),
                    backend_type: Some(crate::config::BackendKind::HostGw),
                    backend_data: None,
                },
            )
        })
        .collect();
    let start = Instant::now();
    let writes = leases.chunks(100).map(|chunk| {
        let writer = writer.clone();
        let ops: Vec<RequestOp> = chunk
            .iter()
            .map(|(s, l)| RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: subnet_key(*s).into_bytes(),
                    value: serde_json::to_vec(l).expect("serializes"),
                    ..Default::default()
                })),
            })
            .collect();
        async move {
            writer
                .kv()
                .txn(TxnRequest {
                    success: ops,
                    ..Default::default()
                })
                .await
        }
    });
    for r in futures::future::join_all(writes).await {
        r.context("writing the simulated leases")?;
    }
    let deadline = start + Duration::from_secs(300);
    while ctx.stats.added.load(Ordering::Relaxed) < u64::from(machines) {
        if Instant::now() > deadline {
            bail!(
                "only {} of {machines} routes after 300 s",
                ctx.stats.added.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let converge = start.elapsed();
    let in_kernel = kernel
        .routes()
        .await?
        .iter()
        .filter(|r| r.is_herds())
        .count();
    if in_kernel != machines as usize {
        bail!("{in_kernel} herd routes in the kernel, expected {machines}");
    }
    let start = Instant::now();
    let prefix = SUBNETS.as_str().as_bytes().to_vec();
    writer
        .kv()
        .delete_range(DeleteRangeRequest {
            range_end: herd_client::prefix_end(&prefix),
            key: prefix.clone(),
            ..Default::default()
        })
        .await
        .context("deleting the simulated leases")?;
    while ctx.stats.removed.load(Ordering::Relaxed) < u64::from(machines) {
        if start.elapsed() > Duration::from_secs(300) {
            bail!("routes not removed after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let remove = start.elapsed();
    cancel.cancel();
    let _ = controller.await;
    let (store_in, store_out) = (
        counts.0.load(Ordering::Relaxed),
        counts.1.load(Ordering::Relaxed),
    );
    // One full read of what the leases were: the cost per event of a
    // controller without a cache.
    for (s, l) in &leases {
        writer
            .kv()
            .put(PutRequest {
                key: subnet_key(*s).into_bytes(),
                value: serde_json::to_vec(l).expect("serializes"),
                ..Default::default()
            })
            .await?;
    }
    let full = writer
        .kv()
        .range(RangeRequest {
            range_end: herd_client::prefix_end(&prefix),
            key: prefix,
            ..Default::default()
        })
        .await?
        .into_inner();
    let full_read_bytes = full
        .kvs
        .iter()
        .map(|kv| (kv.key.len() + kv.value.len() + 24) as u64)
        .sum();
    proxy_task.abort();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Convergence {
        machines,
        converge_ms: converge.as_secs_f64() * 1e3,
        routes_per_s: f64::from(machines) / converge.as_secs_f64(),
        remove_ms: remove.as_secs_f64() * 1e3,
        store_bytes_in: store_in,
        store_bytes_out: store_out,
        full_read_bytes,
    })
}

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn in_ns(ns: &str, program: &str) -> std::process::Command {
    let mut c = std::process::Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

/// Two machines (real `herd agent`s) on one bridge, each with one pod.
struct DataLab {
    tag: String,
    dir: PathBuf,
    _agents: Vec<Agent>,
    /// (machine namespace, eth0 address, pod namespace, pod address)
    machines: Vec<(String, Ipv4Addr, String, Ipv4Addr)>,
    backend: String,
}

impl Drop for DataLab {
    fn drop(&mut self) {
        self._agents.clear();
        for ns in ["hub", "ma", "mb", "pa", "pb"] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &format!("{}{ns}", self.tag)])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl DataLab {
    fn new(herd: &Path, backend: &str) -> anyhow::Result<DataLab> {
        let tag = format!("hbn{}", std::process::id() % 100_000);
        let dir = scratch(backend)?;
        let mut lab = DataLab {
            tag: tag.clone(),
            dir: dir.clone(),
            _agents: Vec::new(),
            machines: Vec::new(),
            backend: backend.to_owned(),
        };
        let hub = format!("{tag}hub");
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for (i, m) in ["a", "b"].iter().enumerate() {
            let ns = format!("{tag}m{m}");
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let outer = format!("v{m}");
            ip(&[
                "-n", &hub, "link", "add", &outer, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &hub, "link", "set", &outer, "master", "br0", "up"])?;
            let addr = Ipv4Addr::new(10, 97, 0, 11 + i as u8);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            let mut cmd = in_ns(&ns, &herd.display().to_string());
            cmd.args([
                "agent",
                "--name",
                &format!("m{m}"),
                "--token",
                "bench",
                "--cluster-iface",
                "eth0",
            ])
            .arg("--data-dir")
            .arg(dir.join(m))
            .arg("--subnet-env")
            .arg(dir.join(format!("{m}.env")))
            .args([
                "--listen-client",
                &format!("{addr}:2379"),
                "--listen-peer",
                &format!("{addr}:2380"),
            ])
            .env("HERD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{m}.log")))?);
            if i == 1 {
                cmd.args(["--join", "10.97.0.11:2380"]);
            }
            lab._agents
                .push(Agent(cmd.spawn().context("starting an agent")?));
            if i == 0 {
                let mut set = in_ns(&ns, &herd.display().to_string());
                set.args([
                    "net",
                    "config",
                    "set",
                    "--endpoints",
                    "10.97.0.11:2379",
                    "--network",
                    "10.240.0.0/16",
                    "--backend",
                    backend,
                ]);
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let out = set.output()?;
                    if out.status.success() {
                        break;
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "herd net config set: {}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
            lab.machines
                .push((ns, addr, format!("{tag}p{m}"), Ipv4Addr::UNSPECIFIED));
        }
        // Each machine's subnet, from its subnet.env; then a pod on herd0.
        for (i, m) in ["a", "b"].iter().enumerate() {
            let env = dir.join(format!("{m}.env"));
            let deadline = Instant::now() + Duration::from_secs(90);
            let subnet = loop {
                if let Ok(text) = std::fs::read_to_string(&env)
                    && let Some(s) = text.lines().find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))
                {
                    break s.to_owned();
                }
                if Instant::now() > deadline {
                    bail!(
                        "machine {m} never wrote {}: {}",
                        env.display(),
                        std::fs::read_to_string(dir.join(format!("{m}.log"))).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(200));
            };
            let (gw, len) = subnet.split_once('/').context("FLANNEL_SUBNET")?;
            let gw: Ipv4Addr = gw.parse()?;
            let pod_addr = Ipv4Addr::from(u32::from(gw) + 9);
            let (ns, _, pod, _) = lab.machines[i].clone();
            ip(&["netns", "add", &pod])?;
            ip(&["-n", &pod, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &ns, "link", "add", "vpod", "type", "veth", "peer", "name", "eth0", "netns",
                &pod,
            ])?;
            ip(&["-n", &ns, "link", "set", "vpod", "master", "herd0", "up"])?;
            ip(&[
                "-n",
                &pod,
                "addr",
                "add",
                &format!("{pod_addr}/{len}"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &pod, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                &pod,
                "route",
                "add",
                "default",
                "via",
                &gw.to_string(),
            ])?;
            if backend == "vxlan" {
                ip(&["-n", &pod, "link", "set", "eth0", "mtu", "1450"])?;
            }
            lab.machines[i].3 = pod_addr;
        }
        // Until both routes are in, the first ping fails.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !in_ns(&lab.machines[0].2, "ping")
            .args(["-c1", "-W1", &lab.machines[1].3.to_string()])
            .stdout(Stdio::null())
            .status()?
            .success()
        {
            if Instant::now() > deadline {
                bail!("pod a never reached pod b over {backend}");
            }
        }
        Ok(lab)
    }

    fn iperf(
        &self,
        client_ns: &str,
        server_ns: &str,
        server: Ipv4Addr,
        seconds: u32,
    ) -> anyhow::Result<f64> {
        let mut srv = in_ns(server_ns, "iperf3")
            .args(["-s", "-1", "-B", &server.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("iperf3 (apt-get install iperf3)")?;
        std::thread::sleep(Duration::from_millis(300));
        let out = in_ns(client_ns, "iperf3")
            .args(["-J", "-c", &server.to_string(), "-t", &seconds.to_string()])
            .output()?;
        let _ = srv.kill();
        let _ = srv.wait();
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .map(|b| b / 1e9)
            .context("iperf3 reported no throughput")
    }

    fn rtt(&self, client_ns: &str, to: Ipv4Addr) -> anyhow::Result<f64> {
        let out = in_ns(client_ns, "ping")
            .args(["-q", "-c", "200", "-i", "0.005", &to.to_string()])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        // rtt min/avg/max/mdev = 0.030/0.041/0.090/0.010 ms
        text.lines()
            .find_map(|l| {
                l.split_once(" = ")
                    .map(|(_, v)| v.split('/').nth(1).map(str::to_owned))
            })
            .flatten()
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("ping output: {text}"))
    }

    fn measure(&self, rounds: u32, seconds: u32) -> anyhow::Result<Vec<PathFigure>> {
        let (a, b) = (&self.machines[0], &self.machines[1]);
        let mut host = (Vec::new(), Vec::new());
        let mut pod = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let mut one = |which: bool| -> anyhow::Result<()> {
                if which {
                    pod.0.push(self.iperf(&a.2, &b.2, b.3, seconds)?);
                    pod.1.push(self.rtt(&a.2, b.3)?);
                } else {
                    host.0.push(self.iperf(&a.0, &b.0, b.1, seconds)?);
                    host.1.push(self.rtt(&a.0, b.1)?);
                }
                Ok(())
            };
            let first = round % 2 == 0;
            one(first)?;
            one(!first)?;
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        Ok(vec![
            PathFigure {
                backend: self.backend.clone(),
                path: "host-to-host".into(),
                gbit_s: median(host.0),
                rtt_ms: median(host.1),
            },
            PathFigure {
                backend: self.backend.clone(),
                path: "pod-to-pod".into(),
                gbit_s: median(pod.0),
                rtt_ms: median(pod.1),
            },
        ])
    }
}
