//! `herd agent`, `herd kv …` and `herd bench kv`: argument parsing at the binary's edge.

mod agent;
mod bench;
mod kv;

pub use agent::{AgentArgs, AgentSettings, run_agent};
pub use kv::{KvArgs, KvCommand};

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Store throughput and latency, herd vs etcd, in one run.
    Kv(bench::KvBenchArgs),
}

pub async fn run_kv(args: KvArgs) -> anyhow::Result<()> {
    kv::run(args).await
}

pub async fn run_bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Kv(args) => bench::run(args).await,
    }
}
