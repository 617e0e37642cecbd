//! `herd image …` and `herd bench image`: argument parsing at the binary's edge.

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the OS image from a spec.
    Build,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Image sizes and build times.
    Image,
}

pub async fn run(args: ImageArgs) -> anyhow::Result<()> {
    match args.command {
        ImageCommand::Build => anyhow::bail!("`herd image build` is not built yet"),
    }
}

pub async fn run_bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Image => anyhow::bail!("`herd bench image` is not built yet"),
    }
}
