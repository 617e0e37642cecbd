//! `herd units …`: fleetctl's verbs against the store (from any machine
//! or from outside the cluster), and `status`/`journal` through the agent
//! API of the machine that runs the unit. The binary's edge: errors get
//! context here.

mod change;
mod views;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use herd_cli::Output;
use tokio_util::sync::CancellationToken;

use crate::records::DesiredState;

#[derive(Debug, Args)]
pub struct UnitsArgs {
    /// The store and how to reach it (endpoints, TLS, user).
    #[command(flatten)]
    pub store: herd_client::connect::StoreArgs,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: UnitsCommand,
}

/// How long a state change waits for the cluster to reach it.
#[derive(Debug, Clone, Args)]
pub struct Block {
    /// Return once the desired state is recorded, without waiting.
    #[arg(long)]
    pub no_block: bool,
    /// How long to wait for the units to reach the state.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum UnitsCommand {
    /// Submit unit files (templates too) to the cluster; they stay inactive.
    Submit {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Place units on machines without starting them (FILE or UNIT).
    Load {
        #[arg(required = true)]
        units: Vec<String>,
        #[command(flatten)]
        block: Block,
    },
    /// Place and start units (FILE or UNIT; an instance of a submitted template is made on the fly).
    Start {
        #[arg(required = true)]
        units: Vec<String>,
        #[command(flatten)]
        block: Block,
    },
    /// Stop units; they stay placed (loaded).
    Stop {
        #[arg(required = true)]
        units: Vec<String>,
        #[command(flatten)]
        block: Block,
    },
    /// Stop units and take them off their machines (inactive).
    Unload {
        #[arg(required = true)]
        units: Vec<String>,
        #[command(flatten)]
        block: Block,
    },
    /// Remove units from the cluster entirely.
    Destroy {
        #[arg(required = true)]
        units: Vec<String>,
    },
    /// Stop and start units again where they are.
    Restart {
        #[arg(required = true)]
        units: Vec<String>,
        #[command(flatten)]
        block: Block,
    },
    /// Units with their desired state, machine and LOAD/ACTIVE/SUB.
    ListUnits,
    /// Submitted files with their desired and current state.
    ListUnitFiles,
    /// Registered machines with their metadata.
    ListMachines,
    /// A unit's state on its machine(s), with processes and journal lines.
    Status { unit: String },
    /// Print a unit's file.
    Cat { unit: String },
    /// A unit's journal from the machine that runs it.
    Journal {
        unit: String,
        /// Lines to show.
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: usize,
        /// Keep printing new lines until interrupted.
        #[arg(short = 'f', long)]
        follow: bool,
        /// For a global unit: which machine's journal.
        #[arg(long)]
        machine: Option<String>,
    },
}

/// Runs one `herd units` command; `journal -f` stops when `shutdown` fires.
pub async fn run(args: UnitsArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let client = args.store.connect().await.with_context(|| {
        format!(
            "connecting to the store at {}",
            args.store.endpoints.join(",")
        )
    })?;
    let out = args.output;
    match args.command {
        UnitsCommand::Submit { files } => {
            for f in &files {
                let name = change::submit_file(&client, f).await?;
                if !out.is_structured() {
                    println!("Unit {name} submitted");
                }
            }
            Ok(())
        }
        UnitsCommand::Load { units, block } => {
            change::set_state(&client, &units, DesiredState::Loaded, false, &block, out).await
        }
        UnitsCommand::Start { units, block } => {
            change::set_state(&client, &units, DesiredState::Launched, false, &block, out).await
        }
        UnitsCommand::Restart { units, block } => {
            change::set_state(&client, &units, DesiredState::Launched, true, &block, out).await
        }
        UnitsCommand::Stop { units, block } => {
            change::set_state(&client, &units, DesiredState::Loaded, false, &block, out).await
        }
        UnitsCommand::Unload { units, block } => {
            change::set_state(&client, &units, DesiredState::Inactive, false, &block, out).await
        }
        UnitsCommand::Destroy { units } => change::destroy(&client, &units, out).await,
        UnitsCommand::ListUnits => views::list_units(&client, out).await,
        UnitsCommand::ListUnitFiles => views::list_unit_files(&client, out).await,
        UnitsCommand::ListMachines => views::list_machines(&client, out).await,
        UnitsCommand::Status { unit } => views::status(&client, &unit, out).await,
        UnitsCommand::Cat { unit } => views::cat(&client, &unit).await,
        UnitsCommand::Journal {
            unit,
            lines,
            follow,
            machine,
        } => views::journal(&client, &unit, lines, follow, machine.as_deref(), shutdown).await,
    }
}
