//! `herd`: the one binary. This file only wires the crates' subcommands
//! together; each crate owns its own commands and their arguments.

mod logging;
mod signal;

use std::io::Write;

use clap::{CommandFactory, Parser, Subcommand};

/// The version string: crate version plus the git revision it was built from.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("HERD_GIT_REV"), ")");

/// Turns a rack of blank machines into one self-managing cluster.
#[derive(Debug, Parser)]
#[command(name = "herd", version = VERSION, propagate_version = true)]
struct Cli {
    /// Log format: `text` for people, `json` for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = logging::Format::Text, env = "HERD_LOG_FORMAT")]
    log_format: logging::Format,

    /// Log filter in `RUST_LOG` syntax (e.g. `info,herd_pxe=debug`).
    #[arg(long, global = true, default_value = "info", env = "HERD_LOG")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The provisioning server: DHCP, TFTP, iPXE scripts, HTTP boot, cloud-config.
    Pxe(herd_pxe::cli::PxeArgs),
    /// Build and verify the A/B OS image and its update payloads.
    Image(herd_image::cli::ImageArgs),
    /// The daemon every machine runs: store member and per-machine roles.
    Agent(Box<herd_agent::cli::AgentArgs>),
    /// Talk to the replicated store (etcdctl's role).
    Kv(herd_store::cli::KvArgs),
    /// The cluster's identity: a CA, client credentials, join tokens.
    Admin(herd_store::admin::AdminArgs),
    /// The cluster network (flannel's role): config, subnet leases, reservations.
    Net(herd_net::cli::NetArgs),
    /// Cluster units: systemd unit files scheduled across machines (fleetctl's role).
    Units(herd_units::cli::UnitsArgs),
    /// The QEMU lab: a rack of VMs that PXE-boot and form one cluster.
    Lab(herd_qemu::cli::LabArgs),
    #[command(flatten)]
    Pods(herd_pods::cli::Command),
    /// Benchmarks, measured side by side with the system herd replaces.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Print shell completions for `herd` to stdout.
    Completions {
        /// The shell to generate completions for.
        shell: clap_complete::Shell,
    },
}

/// `herd bench …`: each crate contributes its own benchmark subcommands.
#[derive(Debug, Subcommand)]
enum BenchCommand {
    #[command(flatten)]
    Store(herd_store::bench::BenchCommand),
    #[command(flatten)]
    Pxe(herd_pxe::cli::BenchCommand),
    #[command(flatten)]
    Image(herd_image::cli::BenchCommand),
    #[command(flatten)]
    Lab(herd_qemu::cli::BenchCommand),
    #[command(flatten)]
    Net(herd_net::bench::BenchCommand),
    #[command(flatten)]
    Units(herd_units::bench::BenchCommand),
    #[command(flatten)]
    Pods(herd_pods::cli::bench::BenchCommand),
    #[command(flatten)]
    Proxy(herd_pods::proxy::bench::BenchCommand),
    #[command(flatten)]
    PodStart(herd_pods::node::bench::BenchCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format, &cli.log)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(cli.command));
    // `herd exec` exits with the remote command's code, as kubectl does.
    if let Err(e) = &result
        && let Some(status) = e.downcast_ref::<herd_pods::cli::exec::ExitStatus>()
    {
        drop(runtime);
        std::process::exit(status.0);
    }
    result
}

async fn run(command: Command) -> anyhow::Result<()> {
    // The process's one SIGTERM/SIGINT handler: commands that run until
    // stopped take the token and wind down when it fires.
    let shutdown = signal::shutdown_token()?;
    match command {
        Command::Pxe(args) => herd_pxe::cli::run(args, shutdown).await,
        Command::Image(args) => herd_image::cli::run(args, shutdown).await,
        Command::Agent(args) => herd_agent::cli::run(*args, VERSION, shutdown).await,
        Command::Kv(args) => herd_store::cli::run(args, shutdown).await,
        Command::Admin(args) => herd_store::admin::run(args).await,
        Command::Net(args) => herd_net::cli::run(args).await,
        Command::Units(args) => herd_units::cli::run(args, shutdown).await,
        Command::Lab(args) => herd_qemu::cli::run(args).await,
        Command::Pods(c) => herd_pods::cli::run(c, shutdown).await,
        Command::Bench(bench) => match bench {
            BenchCommand::Store(b) => herd_store::bench::run_bench(b).await,
            BenchCommand::Pxe(b) => herd_pxe::cli::run_bench(b).await,
            BenchCommand::Image(b) => herd_image::cli::run_bench(b).await,
            BenchCommand::Lab(b) => herd_qemu::cli::run_bench(b).await,
            BenchCommand::Net(herd_net::bench::BenchCommand::Net(b)) => {
                herd_net::bench::run(b, shutdown).await
            }
            BenchCommand::Units(b) => herd_units::bench::run(b).await,
            BenchCommand::Pods(b) => herd_pods::cli::bench::run(b, shutdown).await,
            BenchCommand::Proxy(herd_pods::proxy::bench::BenchCommand::Proxy(b)) => {
                herd_pods::proxy::bench::run(b).await
            }
            BenchCommand::PodStart(b) => herd_pods::node::bench::run(b, shutdown).await,
        },
        Command::Completions { shell } => {
            // Rendered into memory first: clap_complete panics on a write
            // error, and `herd completions bash | head` closes the pipe early.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "herd", &mut script);
            match std::io::stdout().write_all(&script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
