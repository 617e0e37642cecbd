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

mod converge;
mod datapath;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use converge::convergence;
use datapath::DataLab;
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
    /// Shape each machine's link to this rate (Gbit/s, tc's token bucket),
    /// as a NIC would bound it; unshaped, the veth link runs as fast as
    /// the CPU, so the pod path's extra hops show in full.
    #[arg(long, value_name = "GBIT")]
    pub link_gbit: Option<u32>,
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
            let link = args.link_gbit;
            let figures = tokio::task::spawn_blocking(move || {
                let lab = DataLab::new(&herd, backend, link)?;
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
