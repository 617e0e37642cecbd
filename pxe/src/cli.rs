//! `herd pxe …` and `herd bench dhcp|tftp`: argument parsing at the binary's edge.

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct PxeArgs {
    #[command(subcommand)]
    pub command: PxeCommand,
}

#[derive(Debug, Subcommand)]
pub enum PxeCommand {
    /// Serve DHCP, TFTP and HTTP boot on one interface.
    Serve,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// DHCP leases per second, herd vs dnsmasq.
    Dhcp,
}

pub async fn run(args: PxeArgs) -> anyhow::Result<()> {
    match args.command {
        PxeCommand::Serve => anyhow::bail!("`herd pxe serve` is not built yet"),
    }
}

pub async fn run_bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Dhcp => anyhow::bail!("`herd bench dhcp` is not built yet"),
    }
}
