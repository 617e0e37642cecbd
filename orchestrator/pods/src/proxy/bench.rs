//! `herd bench proxy`: what the service proxy costs.
//!
//! 1. Data path: a client pod on machine A, a server pod on machine B
//!    (network namespaces plumbed with `ip`, routed like the cluster
//!    network's host-gw), and the proxy's rules for one service rendered
//!    and applied on A exactly as the role does. Throughput (iperf3) and
//!    latency (TCP connect + one-byte echo, a new connection each time, so
//!    every sample goes through the NAT lookup) to the service's VIP
//!    against the pod's own address, rounds alternating the order so load
//!    hits both alike.
//! 2. Rule updates: 1,000 services × 10 endpoints in a namespace of their
//!    own: the first full sync into an empty table, a full resync with
//!    nothing changed (the periodic repair), and a change of one endpoint
//!    (what a scaling event costs).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Serialize;

use super::nft::Nft;
use super::plan::{PortPlan, Proto, ServicePlan};
use super::render::{self, Host};
use super::sync::apply;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Service proxy: VIP against direct pod throughput/latency, and the
    /// rule update time for 1,000 services × 10 endpoints.
    Proxy(ProxyBenchArgs),
}

#[derive(Debug, Args)]
pub struct ProxyBenchArgs {
    /// Rounds of each measurement (order alternates).
    #[arg(long, default_value_t = 4)]
    pub rounds: u32,
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Connections per latency sample.
    #[arg(long, default_value_t = 2000)]
    pub connections: u32,
    /// Services in the rule-update measurement.
    #[arg(long, default_value_t = 1000)]
    pub services: u32,
    /// Endpoints per service there.
    #[arg(long, default_value_t = 10)]
    pub endpoints: u32,
    #[arg(short = 'o', long, value_enum, default_value_t = herd_cli::Output::Table)]
    pub output: herd_cli::Output,
}

/// One path's figures (medians over the rounds).
#[derive(Debug, Clone, Serialize)]
pub struct PathFigure {
    pub path: String,
    pub gbit_s: f64,
    /// Median connect + echo time.
    pub connect_echo_us: f64,
    pub connect_echo_p99_us: f64,
}

/// Rule update times (medians over the rounds).
#[derive(Debug, Clone, Serialize)]
pub struct Updates {
    pub services: u32,
    pub endpoints_per_service: u32,
    pub chains: usize,
    pub first_sync_ms: f64,
    pub full_resync_ms: f64,
    pub one_endpoint_change_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub datapath: Vec<PathFigure>,
    pub updates: Updates,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn table(r: &Report) -> String {
    let mut out = String::from("data path (client pod on A → server pod on B, medians):\n");
    let mut t = herd_cli::Table::new(["PATH", "GBIT/S", "CONNECT+ECHO", "P99", "VS DIRECT"]);
    let direct = r.datapath.iter().find(|f| f.path == "direct");
    for f in &r.datapath {
        t.row([
            f.path.clone(),
            format!("{:.2}", f.gbit_s),
            format!("{:.0} µs", f.connect_echo_us),
            format!("{:.0} µs", f.connect_echo_p99_us),
            direct.map_or("-".into(), |d| {
                format!(
                    "{:.3}× tput, {:.3}× latency",
                    f.gbit_s / d.gbit_s,
                    f.connect_echo_us / d.connect_echo_us
                )
            }),
        ]);
    }
    out.push_str(&t.render());
    let u = &r.updates;
    out.push_str(&format!(
        "\nrule updates ({} services × {} endpoints, {} chains):\n",
        u.services, u.endpoints_per_service, u.chains
    ));
    let mut t = herd_cli::Table::new(["FIRST SYNC", "FULL RESYNC", "ONE ENDPOINT CHANGE"]);
    t.row([
        format!("{:.0} ms", u.first_sync_ms),
        format!("{:.0} ms", u.full_resync_ms),
        format!("{:.0} ms", u.one_endpoint_change_ms),
    ]);
    out.push_str(&t.render());
    out
}

pub async fn run(args: ProxyBenchArgs) -> anyhow::Result<()> {
    let lab = tokio::task::spawn_blocking(Lab::new)
        .await
        .context("the lab thread")??;
    let (rounds, seconds, connections) = (args.rounds.max(1), args.seconds, args.connections);
    lab.program().await?;
    // The rules namespace is the lab's: measure it before the lab goes.
    let updates = updates(&lab, args.services, args.endpoints, rounds).await?;
    let datapath = tokio::task::spawn_blocking(move || lab.measure(rounds, seconds, connections))
        .await
        .context("the data-path thread")??;
    args.output.print(&Report { datapath, updates }, table)?;
    Ok(())
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

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 10);
const IPERF_PORT: u16 = 5201;
const ECHO_PORT: u16 = 7000;

/// Machines A and B, client pod on A, server pod on B; removed on drop.
struct Lab {
    tag: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in ["ma", "mb", "pa", "pb", "rules"] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &format!("{}{ns}", self.tag)])
                .output();
        }
    }
}

impl Lab {
    fn ns(&self, which: &str) -> String {
        format!("{}{which}", self.tag)
    }

    fn new() -> anyhow::Result<Lab> {
        let lab = Lab {
            tag: format!("hbp{}", std::process::id() % 100_000),
        };
        for n in ["ma", "mb", "pa", "pb", "rules"] {
            ip(&["netns", "add", &lab.ns(n)])?;
            ip(&["-n", &lab.ns(n), "link", "set", "lo", "up"])?;
        }
        let (ma, mb) = (lab.ns("ma"), lab.ns("mb"));
        ip(&[
            "-n", &ma, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &mb,
        ])?;
        for (m, own, other_net, other) in [
            (&ma, "192.168.77.1/24", "10.244.2.0/24", "192.168.77.2"),
            (&mb, "192.168.77.2/24", "10.244.1.0/24", "192.168.77.1"),
        ] {
            ip(&["-n", m, "addr", "add", own, "dev", "eth0"])?;
            ip(&["-n", m, "link", "set", "eth0", "up"])?;
            ip(&["-n", m, "route", "add", other_net, "via", other])?;
            let out = in_ns(m, "sysctl")
                .args(["-qw", "net.ipv4.ip_forward=1"])
                .output()
                .context("sysctl")?;
            if !out.status.success() {
                bail!("enabling forwarding in {m}");
            }
        }
        for (m, p, bridge, addr, gw) in [
            (
                &ma,
                lab.ns("pa"),
                "10.244.1.1/24",
                "10.244.1.10/24",
                "10.244.1.1",
            ),
            (
                &mb,
                lab.ns("pb"),
                "10.244.2.1/24",
                "10.244.2.10/24",
                "10.244.2.1",
            ),
        ] {
            ip(&["-n", m, "link", "add", "herd0", "type", "bridge"])?;
            ip(&["-n", m, "addr", "add", bridge, "dev", "herd0"])?;
            ip(&["-n", m, "link", "set", "herd0", "up"])?;
            ip(&[
                "-n", m, "link", "add", "vpod", "type", "veth", "peer", "name", "eth0", "netns", &p,
            ])?;
            ip(&["-n", m, "link", "set", "vpod", "master", "herd0", "up"])?;
            ip(&["-n", &p, "addr", "add", addr, "dev", "eth0"])?;
            ip(&["-n", &p, "link", "set", "eth0", "up"])?;
            ip(&["-n", &p, "route", "add", "default", "via", gw])?;
        }
        Ok(lab)
    }

    /// The proxy's rules for one service (VIP → the server pod) on A.
    async fn program(&self) -> anyhow::Result<()> {
        let ports = [IPERF_PORT, ECHO_PORT]
            .iter()
            .map(|p| PortPlan {
                name: format!("p{p}"),
                proto: Proto::Tcp,
                port: *p,
                node_port: None,
                endpoints: vec![SocketAddrV4::new(SERVER, *p)],
            })
            .collect();
        let plan = ServicePlan {
            id: "default/bench".into(),
            vip: VIP,
            ports,
            affinity: None,
        };
        let host = Host {
            bridge: super::POD_BRIDGE.into(),
            pod_subnet: Some((Ipv4Addr::new(10, 244, 1, 0), 24)),
        };
        let nft = Nft {
            netns: Some(self.ns("ma")),
        };
        apply(&nft, &render::ruleset(&[plan], &host), None).await?;
        Ok(())
    }

    fn iperf(&self, to: Ipv4Addr, seconds: u32) -> anyhow::Result<f64> {
        let mut srv = in_ns(&self.ns("pb"), "iperf3")
            .args(["-s", "-1", "-B", &SERVER.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("iperf3 (apt-get install iperf3)")?;
        std::thread::sleep(Duration::from_millis(300));
        let out = in_ns(&self.ns("pa"), "iperf3")
            .args(["-J", "-c", &to.to_string(), "-t", &seconds.to_string()])
            .output()?;
        let _ = srv.kill();
        let _ = srv.wait();
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .map(|b| b / 1e9)
            .with_context(|| format!("iperf3 reported no throughput to {to}: {v}"))
    }

    /// Median and p99 of `n` connect + one-byte echo exchanges with `to`.
    fn latency(&self, to: Ipv4Addr, n: u32) -> anyhow::Result<(f64, f64)> {
        let server = in_netns(&self.ns("pb"), || -> anyhow::Result<_> {
            Ok(std::net::TcpListener::bind((SERVER, ECHO_PORT))?)
        })?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = std::sync::Arc::clone(&stop);
        let echo = std::thread::spawn(move || {
            use std::io::{Read, Write};
            for s in server.incoming() {
                if stop2.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                if let Ok(mut s) = s {
                    let mut b = [0u8; 1];
                    if s.read_exact(&mut b).is_ok() {
                        let _ = s.write_all(&b);
                    }
                }
            }
        });
        let samples = in_netns(&self.ns("pa"), move || -> anyhow::Result<Vec<f64>> {
            use std::io::{Read, Write};
            let target = SocketAddr::new(to.into(), ECHO_PORT);
            let mut samples = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let start = Instant::now();
                let mut s = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(3))
                    .with_context(|| format!("connecting to {target}"))?;
                s.set_nodelay(true)?;
                s.write_all(b"x")?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b)?;
                samples.push(start.elapsed().as_secs_f64() * 1e6);
            }
            // Wake the echo thread so it sees the stop flag.
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = std::net::TcpStream::connect_timeout(
                &SocketAddr::new(SERVER.into(), ECHO_PORT),
                Duration::from_secs(1),
            );
            Ok(samples)
        })?;
        let _ = echo.join();
        let mut sorted = samples;
        sorted.sort_by(f64::total_cmp);
        let p = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q) as usize];
        Ok((p(0.5), p(0.99)))
    }

    fn measure(&self, rounds: u32, seconds: u32, n: u32) -> anyhow::Result<Vec<PathFigure>> {
        let paths = [("direct", SERVER), ("service VIP", VIP)];
        let mut figures: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = vec![Default::default(); 2];
        for round in 0..rounds {
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let to = paths[i].1;
                figures[i].0.push(self.iperf(to, seconds)?);
                let (med, p99) = self.latency(to, n)?;
                figures[i].1.push(med);
                figures[i].2.push(p99);
            }
        }
        Ok(paths
            .iter()
            .zip(figures)
            .map(|((name, _), (mut g, mut l, mut p))| PathFigure {
                path: (*name).into(),
                gbit_s: median(&mut g),
                connect_echo_us: median(&mut l),
                connect_echo_p99_us: median(&mut p),
            })
            .collect())
    }
}

/// Runs `f` on a thread inside network namespace `ns`.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering {path}"))?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread in {ns} panicked"))?
}

/// `services` services of `endpoints` endpoints each (distinct addresses).
fn plans(services: u32, endpoints: u32, shift: u32) -> Vec<ServicePlan> {
    (0..services)
        .map(|s| {
            let eps = (0..endpoints)
                .map(|e| {
                    let n = 2 + s * endpoints + e + shift * u32::from(e == 0 && s == 0);
                    SocketAddrV4::new(
                        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + n),
                        8080,
                    )
                })
                .collect();
            ServicePlan {
                id: format!("bench/svc-{s}"),
                vip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + 2 + s),
                ports: vec![PortPlan {
                    name: "http".into(),
                    proto: Proto::Tcp,
                    port: 80,
                    node_port: None,
                    endpoints: eps,
                }],
                affinity: None,
            }
        })
        .collect()
}

async fn updates(lab: &Lab, services: u32, endpoints: u32, rounds: u32) -> anyhow::Result<Updates> {
    let nft = Nft {
        netns: Some(lab.ns("rules")),
    };
    let host = Host {
        bridge: super::POD_BRIDGE.into(),
        pod_subnet: None,
    };
    let base = render::ruleset(&plans(services, endpoints, 0), &host);
    let changed = render::ruleset(&plans(services, endpoints, 60_000), &host);
    let (mut first, mut full, mut one) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        nft.delete_table().await?;
        let t = Instant::now();
        apply(&nft, &base, None).await?;
        first.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        apply(&nft, &base, None).await?;
        full.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        apply(&nft, &changed, Some(&base)).await?;
        one.push(t.elapsed().as_secs_f64() * 1e3);
        // Back, so the next round starts from the same table.
        apply(&nft, &base, Some(&changed)).await?;
    }
    nft.delete_table().await?;
    Ok(Updates {
        services,
        endpoints_per_service: endpoints,
        chains: base.chains.len(),
        first_sync_ms: median(&mut first),
        full_resync_ms: median(&mut full),
        one_endpoint_change_ms: median(&mut one),
    })
}
