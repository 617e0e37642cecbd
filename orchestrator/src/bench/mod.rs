//! `herd bench kv`: put/get throughput and latency of a 3-member herd cluster
//! and a 3-member etcd cluster on the same loopback, in the same run, with the
//! same durability (both fsync before acknowledging).

mod cluster;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use crate::api::client::Client;
use crate::proto::etcdserverpb::{PutRequest, RangeRequest};
use cluster::{Cluster, Scratch, System};

#[derive(Debug, Args)]
pub struct KvBenchArgs {
    /// Puts in the sequential (1 client) run.
    #[arg(long, default_value_t = 2000)]
    pub sequential_puts: usize,
    /// Puts in each concurrent run.
    #[arg(long, default_value_t = 10000)]
    pub concurrent_puts: usize,
    /// Client counts of the concurrent runs.
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    pub clients: Vec<usize>,
    /// Linearizable reads of one key (16 clients).
    #[arg(long, default_value_t = 10000)]
    pub reads: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Members per cluster.
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// The etcd server binary (Debian's `etcd-server`).
    #[arg(long, default_value = "etcd")]
    pub etcd: PathBuf,
    /// Systems to measure (both by default: the ratio needs the same run).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "herd,etcd")]
    pub systems: Vec<System>,
    /// herd storage engines to measure, each as its own cluster (`file,redb`
    /// compares them in one run).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [crate::store::StorageKind::DEFAULT])]
    pub storage: Vec<crate::store::StorageKind>,
    /// Scratch directory for the members' data.
    #[arg(long, default_value = "/tmp/herd-bench-kv")]
    pub work_dir: PathBuf,
}

/// One workload's result.
#[derive(Debug, Clone)]
struct Measured {
    ops: usize,
    errors: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

impl Measured {
    fn per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Put,
    Get,
}

/// Runs `total` operations from `clients` concurrent clients spread over the endpoints.
async fn drive(
    endpoints: &[String],
    op: Op,
    clients: usize,
    total: usize,
    value_size: usize,
) -> anyhow::Result<Measured> {
    // One connection per client up to 16, then shared, as etcd's own benchmark tool does with --conns.
    let conns = clients.clamp(1, 16);
    let mut channels = Vec::with_capacity(conns);
    for i in 0..conns {
        let endpoint = &endpoints[i % endpoints.len()];
        channels.push(
            Client::connect(std::slice::from_ref(endpoint))
                .await
                .with_context(|| format!("connecting to {endpoint}"))?,
        );
    }
    let value = Arc::new(vec![b'v'; value_size]);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let client = channels[c % conns].clone();
        let n = total / clients + usize::from(c < total % clients);
        let value = Arc::clone(&value);
        tasks.spawn(async move {
            let mut kv = client.kv();
            let mut latencies = Vec::with_capacity(n);
            let mut errors = 0;
            for i in 0..n {
                let t = Instant::now();
                let result = match op {
                    Op::Put => kv
                        .put(PutRequest {
                            key: format!("bench/{c}/{}", i % 1000).into_bytes(),
                            value: value.to_vec(),
                            ..Default::default()
                        })
                        .await
                        .map(drop),
                    Op::Get => kv
                        .range(RangeRequest {
                            key: b"bench/ready".to_vec(),
                            ..Default::default()
                        })
                        .await
                        .map(drop),
                };
                match result {
                    Ok(()) => latencies.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies = Vec::with_capacity(total);
    let mut errors = 0;
    while let Some(joined) = tasks.join_next().await {
        let (l, e) = joined.context("a benchmark client panicked")?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed();
    latencies.sort();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(Measured {
        ops: latencies.len(),
        errors,
        elapsed,
        p50: pick(0.50),
        p99: pick(0.99),
    })
}

/// A named workload and its result for one system.
type Row = (String, Measured);

/// One measured cluster: what it ran, its rows and its members' RSS (KiB).
struct Column {
    label: String,
    rows: Vec<Row>,
    rss: Vec<u64>,
}

async fn bench_system(
    system: System,
    storage: crate::store::StorageKind,
    args: &KvBenchArgs,
) -> anyhow::Result<Column> {
    let label = match system {
        System::Herd => format!("herd-{storage}"),
        System::Etcd => "etcd".to_owned(),
    };
    let dir = args.work_dir.join(&label);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let scratch = Scratch(dir.clone());
    let cluster = Cluster::start(system, storage, args.members, &dir, &args.etcd).await?;
    eprintln!(
        "{label}: {} members up at {}",
        args.members,
        cluster.endpoints.join(",")
    );
    let mut rows = Vec::new();
    let seq = drive(
        &cluster.endpoints,
        Op::Put,
        1,
        args.sequential_puts,
        args.value_size,
    )
    .await?;
    rows.push(("put, 1 client".to_owned(), seq));
    for &clients in &args.clients {
        let m = drive(
            &cluster.endpoints,
            Op::Put,
            clients,
            args.concurrent_puts,
            args.value_size,
        )
        .await?;
        rows.push((format!("put, {clients} clients"), m));
    }
    let reads = drive(&cluster.endpoints, Op::Get, 16, args.reads, args.value_size).await?;
    rows.push(("linearizable get, 16 clients".to_owned(), reads));
    let rss = cluster.rss_kib();
    cluster.stop().await;
    drop(scratch);
    Ok(Column { label, rows, rss })
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

pub async fn run(args: KvBenchArgs) -> anyhow::Result<()> {
    let mut columns = Vec::new();
    if args.systems.contains(&System::Herd) {
        for &storage in &args.storage {
            columns.push(bench_system(System::Herd, storage, &args).await?);
        }
    }
    if args.systems.contains(&System::Etcd) {
        columns.push(bench_system(System::Etcd, crate::store::StorageKind::DEFAULT, &args).await?);
    }
    let etcd = columns.iter().position(|c| c.label == "etcd");
    let herds: Vec<&Column> = columns.iter().filter(|c| c.label != "etcd").collect();
    let mut header = vec!["workload".to_owned()];
    for c in &columns {
        header.extend([
            format!("{} ops/s", c.label),
            format!("{} p50 ms", c.label),
            format!("{} p99 ms", c.label),
        ]);
    }
    if let Some(e) = etcd {
        for h in &herds {
            header.push(format!("{}/{}", h.label, columns[e].label));
        }
    }
    if herds.len() > 1 {
        for h in &herds[1..] {
            header.push(format!("{}/{}", h.label, herds[0].label));
        }
    }
    println!("| {} |", header.join(" | "));
    println!("|{}", "---|".repeat(header.len()));
    let names: Vec<String> = columns
        .first()
        .map(|c| c.rows.iter().map(|(n, _)| n.clone()).collect())
        .unwrap_or_default();
    for (i, name) in names.iter().enumerate() {
        let at = |c: &Column| c.rows.get(i).map(|(_, m)| m.clone());
        let mut cells = vec![name.clone()];
        let mut errors = 0;
        for c in &columns {
            match at(c) {
                Some(m) => {
                    errors += m.errors;
                    cells.extend([format!("{:.0}", m.per_sec()), ms(m.p50), ms(m.p99)]);
                }
                None => cells.extend(["-".to_owned(), "-".to_owned(), "-".to_owned()]),
            }
        }
        let ratio = |a: &Column, b: &Column| match (at(a), at(b)) {
            (Some(a), Some(b)) => format!("{:.2}x", a.per_sec() / b.per_sec()),
            _ => "-".into(),
        };
        if let Some(e) = etcd {
            for h in &herds {
                cells.push(ratio(h, &columns[e]));
            }
        }
        if herds.len() > 1 {
            for h in &herds[1..] {
                cells.push(ratio(h, herds[0]));
            }
        }
        println!("| {} |", cells.join(" | "));
        if errors > 0 {
            eprintln!("warning: {name}: {errors} failed requests were left out of the figures");
        }
    }
    let mut rss = vec!["RSS per member after the run (MiB)".to_owned()];
    for c in &columns {
        rss.push(
            c.rss
                .iter()
                .map(|k| format!("{:.0}", *k as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join("/"),
        );
        rss.extend([String::new(), String::new()]);
    }
    rss.resize(header.len(), String::new());
    println!("| {} |", rss.join(" | "));
    Ok(())
}
