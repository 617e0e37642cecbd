//! `herd lab …` and `herd bench lab`: argument parsing at the binary's edge.

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Bring the lab up.
    Up,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time from power-on to a healthy cluster.
    Lab,
}

pub async fn run(args: LabArgs) -> anyhow::Result<()> {
    match args.command {
        LabCommand::Up => anyhow::bail!("`herd lab up` is not built yet"),
    }
}

pub async fn run_bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Lab => anyhow::bail!("`herd bench lab` is not built yet"),
    }
}
