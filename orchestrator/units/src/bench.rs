//! `herd bench units`: a simulated cluster — many in-process machines
//! (registrations and runners whose units "run" without processes)
//! against one real store of `herd agent --store-only` members — and many
//! units: how long the engine takes to place them all and their runners
//! to report them running, how long the units of a lost machine take to
//! run elsewhere, and how many store calls each scheduling event costs.
//! fleet's published limits (~100 machines, ~1,000 units, every event
//! waking every agent for a recursive read) are the comparison.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use herd_cli::{Output, Table};
use herd_client::Client;
use herd_client::keys::MachineRecord;
use herd_client::kit::{Cache, Resource, Scope, Watcher};
use herd_client::proto::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest, TxnRequest};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::engine::{self, EngineConfig};
use crate::records::{DesiredState, Placement, Report, UnitRecord};
use crate::runner::{self, Backend, Runner, RunnerConfig};
use crate::store::{Stats, Store, put_op};
use crate::unit::MachineFacts;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchCommand {
    /// Units: scheduling 10,000 units on 1,000 simulated machines against a real store.
    Units(BenchArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 1000)]
    pub machines: usize,
    #[arg(long, default_value_t = 10_000)]
    pub units: usize,
    /// Store members (`herd agent --store-only` processes on loopback).
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Serialize)]
struct Results {
    machines: usize,
    units: usize,
    store_members: usize,
    submit_secs: f64,
    schedule_all_secs: f64,
    all_running_secs: f64,
    engine_writes_per_unit: f64,
    engine_reads_per_unit: f64,
    runner_writes_per_unit: f64,
    lost_machine_units: usize,
    reschedule_secs: f64,
    rescheduled_running_secs: f64,
    engine_writes_per_moved_unit: f64,
    fleet_published_limit: &'static str,
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
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

fn start_store(n: usize, dir: &Path) -> anyhow::Result<(Members, Vec<String>)> {
    let herd = std::env::current_exe().context("finding the herd binary")?;
    let addrs: Vec<(String, SocketAddr, SocketAddr)> = (0..n)
        .map(|i| (format!("b{i}"), free_addr(), free_addr()))
        .collect();
    let cluster: Vec<String> = addrs
        .iter()
        .map(|(name, _, peer)| format!("{name}={peer}"))
        .collect();
    let mut children = Vec::new();
    for (name, client, peer) in &addrs {
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = std::process::Command::new(&herd)
            // Plaintext with a shared secret, on loopback only.
            .args([
                "agent",
                "--store-only",
                "--name",
                name,
                "--insecure-plaintext",
            ])
            .args(["--token", "bench"])
            .arg("--data-dir")
            .arg(dir.join(name))
            .args([
                "--listen-client",
                &client.to_string(),
                "--listen-peer",
                &peer.to_string(),
            ])
            .args(["--initial-cluster", &cluster.join(",")])
            .env("HERD_LOG", "warn")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting a store member")?;
        children.push(child);
    }
    Ok((
        Members(children),
        addrs.iter().map(|(_, c, _)| c.to_string()).collect(),
    ))
}

async fn connect(endpoints: &[String]) -> anyhow::Result<Client> {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(c) = Client::connect(endpoints).await
            && kit_ready(&c).await
        {
            return Ok(c);
        }
        if Instant::now() > end {
            bail!("the store did not answer within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn kit_ready(c: &Client) -> bool {
    herd_client::kit::list::<UnitRecord>(c, &Scope::All)
        .await
        .is_ok()
}

async fn grant(client: &Client, ttl: i64) -> anyhow::Result<i64> {
    Ok(client
        .lease()
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await?
        .into_inner()
        .id)
}

/// Counts objects of `T` matching `pred` as the watch sees them, until `n`.
async fn until<T: Resource>(
    cache: &Cache<T>,
    n: usize,
    pred: impl Fn(&T) -> bool,
    limit: Duration,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    loop {
        if cache.list().iter().filter(|o| pred(&o.value)).count() >= n {
            return Ok(start.elapsed().as_secs_f64());
        }
        if start.elapsed() > limit {
            bail!(
                "gave up after {limit:?}: {} of {n}",
                cache.list().iter().filter(|o| pred(&o.value)).count()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn follow<T: Resource>(client: &Client, cancel: &CancellationToken) -> Cache<T> {
    let cache = Cache::new();
    let (mut w, c, cancel) = (
        Watcher::<T>::new(client.clone(), Scope::All),
        cache.clone(),
        cancel.clone(),
    );
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                e = w.next() => { c.apply(e); }
            }
        }
    });
    cache
}

/// A tenth of the units need a zone (a quarter of the machines have it),
/// a tenth must not share a machine with a neighbour, the rest go anywhere.
fn unit_text(i: usize, n: usize) -> String {
    let fleet = match i % 10 {
        0 => "MachineMetadata=zone=z1\n".to_owned(),
        1 => format!("Conflicts=u{}.service\n", (i + 10) % n),
        _ => String::new(),
    };
    format!(
        "[Unit]\nDescription=bench unit {i}\n[Service]\nExecStart=/bin/sleep infinity\n[X-Fleet]\n{fleet}"
    )
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let BenchCommand::Units(args) = cmd;
    let dir = tempfile::tempdir()?;
    let (_members, endpoints) = start_store(args.members, dir.path())?;
    let setup = connect(&endpoints).await?;
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    eprintln!("registering {} machines…", args.machines);
    let shared_lease = grant(&setup, 600).await?;
    let lost_lease = grant(&setup, 600).await?;
    let lost_index = args.machines / 2;
    let mut records = Vec::new();
    for i in 0..args.machines {
        let id = format!("sim{i:05}");
        let record = MachineRecord {
            machine_id: id.clone(),
            hostname: id.clone(),
            mac: String::new(),
            ip: "127.0.0.1".parse().expect("an address"),
            boot_id: "bench".into(),
            image_version: "bench".into(),
            roles: vec![],
            agent_version: "bench".into(),
            metadata: [("zone".to_owned(), format!("z{}", i % 4))].into(),
            api_url: None,
        };
        records.push(put_op(
            record.key(),
            record.encode(),
            if i == lost_index {
                lost_lease
            } else {
                shared_lease
            },
        ));
    }
    for chunk in records.chunks(100) {
        setup
            .kv()
            .txn(TxnRequest {
                compare: vec![],
                success: chunk.to_vec(),
                failure: vec![],
            })
            .await?;
    }
    eprintln!("starting {} in-process runners…", args.machines);
    let runner_stats = Arc::new(Stats::default());
    let mut runner_cancels = Vec::new();
    let mut clients = Vec::new();
    for i in 0..args.machines {
        // One connection per 50 machines, as if each were its own host's.
        if i % 50 == 0 {
            clients.push(connect(&endpoints).await?);
        }
        let id = format!("sim{i:05}");
        let r = Runner::new(RunnerConfig {
            machine: MachineFacts {
                hostname: id.clone(),
                machine_id: id,
                boot_id: "bench".into(),
            },
            backend: Backend::Simulated,
            report_ttl: Duration::from_secs(600),
        });
        let token = cancel.child_token();
        runner_cancels.push(token.clone());
        tokio::spawn(runner::run(
            r,
            clients.last().expect("one").clone(),
            Arc::clone(&runner_stats),
            token,
        ));
    }
    let placements = follow::<Placement>(&setup, &cancel);
    let reports = follow::<Report>(&setup, &cancel);
    eprintln!("submitting {} units…", args.units);
    let t = Instant::now();
    let mut ops = Vec::new();
    for i in 0..args.units {
        let r = UnitRecord {
            text: unit_text(i, args.units),
            desired: DesiredState::Launched,
            restarts: 0,
        };
        ops.push(put_op(
            UnitRecord::PREFIX.key(&format!("u{i}.service")),
            r.encode(),
            0,
        ));
    }
    for chunk in ops.chunks(100) {
        setup
            .kv()
            .txn(TxnRequest {
                compare: vec![],
                success: chunk.to_vec(),
                failure: vec![],
            })
            .await?;
    }
    let submit_secs = t.elapsed().as_secs_f64();
    eprintln!("scheduling…");
    let engine_stats = Arc::new(Stats::default());
    let store = Store {
        client: connect(&endpoints).await?,
        stats: Arc::clone(&engine_stats),
    };
    let config = EngineConfig {
        grace: Duration::ZERO,
        concurrency: 16,
        ..EngineConfig::default()
    };
    tokio::spawn(engine::lead(store, config, cancel.child_token()));
    let limit = Duration::from_secs(1800);
    let schedule_all_secs = until(&placements, args.units, |_| true, limit).await?;
    let all_running_secs = until(&reports, args.units, |r| r.active == "active", limit).await?;
    let (er, ew) = engine_stats.snapshot();
    let (_, rw) = runner_stats.snapshot();
    let lost = format!("sim{lost_index:05}");
    let moving: Vec<String> = placements
        .list()
        .into_iter()
        .filter(|p| p.value.machine == lost)
        .map(|p| p.value.unit.to_string())
        .collect();
    eprintln!("losing machine {lost} with {} units…", moving.len());
    let before = engine_stats.snapshot();
    runner_cancels[lost_index].cancel();
    let t = Instant::now();
    setup
        .lease()
        .lease_revoke(LeaseRevokeRequest { id: lost_lease })
        .await?;
    let moved = |p: &Placement| moving.iter().any(|u| u == p.unit.as_str()) && p.machine != lost;
    until(&placements, moving.len(), moved, limit).await?;
    let reschedule_secs = t.elapsed().as_secs_f64();
    let running = |r: &Report| {
        moving.iter().any(|u| u == r.unit.as_str()) && r.machine != lost && r.active == "active"
    };
    until(&reports, moving.len(), running, limit).await?;
    let rescheduled_running_secs = t.elapsed().as_secs_f64();
    let after = engine_stats.snapshot();
    let n = args.units as f64;
    let results = Results {
        machines: args.machines,
        units: args.units,
        store_members: args.members,
        submit_secs,
        schedule_all_secs,
        all_running_secs,
        engine_writes_per_unit: ew as f64 / n,
        engine_reads_per_unit: er as f64 / n,
        runner_writes_per_unit: rw as f64 / n,
        lost_machine_units: moving.len(),
        reschedule_secs,
        rescheduled_running_secs,
        engine_writes_per_moved_unit: (after.1 - before.1) as f64 / moving.len().max(1) as f64,
        fleet_published_limit: "~100 machines / ~1,000 units; every event woke every agent for a recursive read",
    };
    cancel.cancel();
    args.output.print(&results, |r| {
        let mut t = Table::new(["MEASURE", "VALUE"]);
        t.row(["machines (in-process runners)", &r.machines.to_string()]);
        t.row(["units", &r.units.to_string()]);
        t.row(["store members", &r.store_members.to_string()]);
        t.row(["submit all units (s)", &format!("{:.2}", r.submit_secs)]);
        t.row([
            "engine: all placed (s)",
            &format!("{:.2}", r.schedule_all_secs),
        ]);
        t.row([
            "runners: all reported running (s, after placed)",
            &format!("{:.2}", r.all_running_secs),
        ]);
        t.row([
            "engine store writes per unit",
            &format!("{:.2}", r.engine_writes_per_unit),
        ]);
        t.row([
            "engine store reads per unit",
            &format!("{:.2}", r.engine_reads_per_unit),
        ]);
        t.row([
            "runner store writes per unit",
            &format!("{:.2}", r.runner_writes_per_unit),
        ]);
        t.row(["lost machine's units", &r.lost_machine_units.to_string()]);
        t.row([
            "lost → placed elsewhere (s, grace 0)",
            &format!("{:.2}", r.reschedule_secs),
        ]);
        t.row([
            "lost → running elsewhere (s, grace 0)",
            &format!("{:.2}", r.rescheduled_running_secs),
        ]);
        t.row([
            "engine writes per moved unit",
            &format!("{:.2}", r.engine_writes_per_moved_unit),
        ]);
        t.row(["fleet (published)", r.fleet_published_limit]);
        t.render()
    })?;
    Ok(())
}
