//! `herd agent`, `herd kv …` and `herd bench kv`: argument parsing at the binary's edge.

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct AgentArgs {}

#[derive(Debug, Args)]
pub struct KvArgs {
    #[command(subcommand)]
    pub command: KvCommand,
}

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Read keys.
    Get,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Store throughput and latency, herd vs etcd.
    Kv,
}

pub async fn run_agent(_args: AgentArgs, version: &str) -> anyhow::Result<()> {
    tracing::info!(%version, "herd agent starting");
    anyhow::bail!("the store is not built yet")
}

pub async fn run_kv(args: KvArgs) -> anyhow::Result<()> {
    match args.command {
        KvCommand::Get => anyhow::bail!("`herd kv` is not built yet"),
    }
}

pub async fn run_bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Kv => anyhow::bail!("`herd bench kv` is not built yet"),
    }
}
