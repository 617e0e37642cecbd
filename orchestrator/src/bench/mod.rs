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

async fn bench_system(system: System, args: &KvBenchArgs) -> anyhow::Result<(Vec<Row>, Vec<u64>)> {
    let dir = args.work_dir.join(system.to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let scratch = Scratch(dir.clone());
    let cluster = Cluster::start(system, args.members, &dir, &args.etcd).await?;
    eprintln!(
        "{system}: {} members up at {}",
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
    Ok((rows, rss))
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

pub async fn run(args: KvBenchArgs) -> anyhow::Result<()> {
    let herd = if args.systems.contains(&System::Herd) {
        Some(bench_system(System::Herd, &args).await?)
    } else {
        None
    };
    let etcd = if args.systems.contains(&System::Etcd) {
        Some(bench_system(System::Etcd, &args).await?)
    } else {
        None
    };
    println!(
        "| workload | herd ops/s | herd p50 ms | herd p99 ms | etcd ops/s | etcd p50 ms | etcd p99 ms | herd/etcd |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let names: Vec<String> = herd
        .as_ref()
        .or(etcd.as_ref())
        .map(|(rows, _)| rows.iter().map(|(n, _)| n.clone()).collect())
        .unwrap_or_default();
    let cells = |m: Option<&Measured>| match m {
        Some(m) => (format!("{:.0}", m.per_sec()), ms(m.p50), ms(m.p99)),
        None => ("-".into(), "-".into(), "-".into()),
    };
    for (i, name) in names.iter().enumerate() {
        let h = herd
            .as_ref()
            .and_then(|(rows, _)| rows.get(i))
            .map(|(_, m)| m);
        let e = etcd
            .as_ref()
            .and_then(|(rows, _)| rows.get(i))
            .map(|(_, m)| m);
        let ratio = match (h, e) {
            (Some(h), Some(e)) => format!("{:.2}x", h.per_sec() / e.per_sec()),
            _ => "-".into(),
        };
        let (h_ops, h_p50, h_p99) = cells(h);
        let (e_ops, e_p50, e_p99) = cells(e);
        println!(
            "| {name} | {h_ops} | {h_p50} | {h_p99} | {e_ops} | {e_p50} | {e_p99} | {ratio} |"
        );
        let errors = h.map_or(0, |m| m.errors) + e.map_or(0, |m| m.errors);
        if errors > 0 {
            eprintln!("warning: {name}: {errors} failed requests were left out of the figures");
        }
    }
    let mib = |r: &Option<(Vec<Row>, Vec<u64>)>| {
        r.as_ref().map_or("-".to_owned(), |(_, v)| {
            v.iter()
                .map(|k| format!("{:.0}", *k as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join("/")
        })
    };
    println!(
        "| RSS per member after the run (MiB) | {} | | | {} | | | |",
        mib(&herd),
        mib(&etcd)
    );
    Ok(())
}
