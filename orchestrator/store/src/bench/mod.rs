//! `herd bench kv`: a 3-member herd cluster against a 3-member etcd cluster
//! on the same loopback, in the same run, with the same durability (both
//! fsync before acknowledging), measured fairly: the same client program
//! for both, the same leader placement (clients all on the leader, or
//! spread over the members), the order of the systems alternated between
//! rounds, failed requests counted, and memory and disk read after the same
//! workload.

mod cluster;
mod load;
mod report;

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use cluster::{Cluster, Scratch, System};
pub use load::ClientKind;
use load::{Measured, Op, drive};
use report::{Sample, Workload};

/// Where the benchmark clients connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Placement {
    /// Every client on the leader's endpoint.
    Leader,
    /// Clients round-robin over all members (followers forward).
    Spread,
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Placement::Leader => "on the leader",
            Placement::Spread => "spread",
        })
    }
}

#[derive(Debug, Args)]
pub struct KvBenchArgs {
    /// Rounds; each starts fresh clusters, in the opposite order of the
    /// round before.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Client counts of the put and get workloads.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub clients: Vec<usize>,
    /// Operations per workload at one client.
    #[arg(long, default_value_t = 2000)]
    pub sequential_ops: usize,
    /// Operations per workload with more than one client.
    #[arg(long, default_value_t = 10000)]
    pub concurrent_ops: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Members per cluster.
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// Where clients connect.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "leader,spread"
    )]
    pub placement: Vec<Placement>,
    /// Client programs (each workload runs once per client).
    #[arg(
        long = "client",
        value_enum,
        value_delimiter = ',',
        default_value = "tonic,etcd-client"
    )]
    pub client_kinds: Vec<ClientKind>,
    /// The etcd server binary (Debian's `etcd-server`).
    #[arg(long, default_value = "etcd")]
    pub etcd: PathBuf,
    /// Systems to measure (both by default: the ratio needs the same run).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "herd,etcd")]
    pub systems: Vec<System>,
    /// herd storage engines to measure, each as its own cluster (`file,redb`
    /// compares them in one run).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [crate::StorageKind::DEFAULT])]
    pub storage: Vec<crate::StorageKind>,
    /// Both systems with mutual TLS (herd's default; etcd with
    /// client-certificate auth), clients presenting a root certificate;
    /// without it both run plaintext (herd `--insecure-plaintext`).
    #[arg(long)]
    pub tls: bool,
    /// Scratch directory for the members' data.
    #[arg(long, default_value = "/tmp/herd-bench-kv")]
    pub work_dir: PathBuf,
}

/// The clusters to measure, each under the label the report uses.
fn systems(args: &KvBenchArgs) -> Vec<(System, crate::StorageKind, String)> {
    let mut out = Vec::new();
    if args.systems.contains(&System::Herd) {
        for &storage in &args.storage {
            let label = if args.storage.len() > 1 {
                format!("herd-{storage}")
            } else {
                "herd".to_owned()
            };
            out.push((System::Herd, storage, label));
        }
    }
    if args.systems.contains(&System::Etcd) {
        out.push((System::Etcd, crate::StorageKind::DEFAULT, "etcd".to_owned()));
    }
    out
}

/// Every workload one cluster runs, in order.
fn workloads(args: &KvBenchArgs) -> Vec<Workload> {
    let mut out = Vec::new();
    for &placement in &args.placement {
        for &client in &args.client_kinds {
            for op in [Op::Put, Op::Get] {
                for &clients in &args.clients {
                    out.push(Workload {
                        placement,
                        client,
                        op,
                        clients,
                    });
                }
            }
        }
    }
    out
}

/// Starts a fresh cluster, runs every workload on it, reads its members'
/// memory and disk, stops it.
async fn measure_cluster(
    system: System,
    storage: crate::StorageKind,
    label: &str,
    round: usize,
    args: &KvBenchArgs,
) -> anyhow::Result<Vec<Sample>> {
    let dir = args.work_dir.join(label);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let scratch = Scratch(dir.clone());
    let cluster = Cluster::start(system, storage, args.members, &dir, &args.etcd, args.tls).await?;
    let leader = cluster.leader_endpoint().await?;
    eprintln!("round {round}: {label} up, leader at {leader}");
    let mut samples = Vec::new();
    for w in workloads(args) {
        let endpoints = match w.placement {
            Placement::Leader => vec![leader.clone()],
            Placement::Spread => cluster.endpoints.clone(),
        };
        let total = if w.clients == 1 {
            args.sequential_ops
        } else {
            args.concurrent_ops
        };
        let m: Measured = drive(
            w.client,
            &cluster,
            &endpoints,
            w.op,
            w.clients,
            total,
            args.value_size,
        )
        .await
        .with_context(|| format!("{label}: {w}"))?;
        eprintln!(
            "  {label} {w}: {:.0}/s, p99 {:.2} ms, {} failed, members' CPU {:.0} µs/op, {:.1} context switches/op",
            m.per_sec(),
            m.p99.as_secs_f64() * 1000.0,
            m.errors,
            m.cpu_us_per_op(),
            m.switches_per_op()
        );
        samples.push(Sample::Run {
            system: label.to_owned(),
            workload: w,
            measured: m,
        });
    }
    samples.push(Sample::Footprint {
        system: label.to_owned(),
        rss_kib: cluster.rss_kib(),
        disk_bytes: cluster.disk_bytes(),
    });
    cluster.stop().await;
    drop(scratch);
    Ok(samples)
}

/// `herd bench …` commands of the store.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Store throughput and latency, herd vs etcd, in one run.
    Kv(KvBenchArgs),
}

pub async fn run_bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Kv(args) => run(args).await,
    }
}

pub async fn run(args: KvBenchArgs) -> anyhow::Result<()> {
    let systems = systems(&args);
    anyhow::ensure!(!systems.is_empty(), "no system to measure");
    let mut samples = Vec::new();
    for round in 0..args.rounds.max(1) {
        // Alternate the order, so neither system always runs on a machine
        // warmed (or worn) by the other.
        let mut order: Vec<_> = systems.iter().collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for (system, storage, label) in order {
            samples.extend(measure_cluster(*system, *storage, label, round, &args).await?);
        }
    }
    let labels: Vec<String> = systems.iter().map(|(_, _, l)| l.clone()).collect();
    print!("{}", report::render(&labels, &samples, args.rounds.max(1)));
    Ok(())
}
