//! `herd lab …` and `herd bench lab`: argument parsing at the binary's edge.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use herd_cli::Output;

use crate::demo;
use crate::lab::{Lab, LabError, UpOptions};
use crate::layout::MachineId;
use crate::stage::Stage;
use crate::{status, watch};

#[derive(Debug, Args)]
pub struct LabArgs {
    /// The lab directory: state file, disks, console logs, server logs.
    #[arg(
        long,
        global = true,
        env = "HERD_LAB_DIR",
        default_value = "/var/lib/herd/lab"
    )]
    pub lab_dir: PathBuf,

    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Bring the lab up: namespace, bridge, provisioning server, N blank VMs.
    Up {
        /// How many machines to rack.
        #[arg(long, default_value_t = 3)]
        machines: u32,
        /// Machines install to disk on first boot and come back from disk.
        #[arg(long)]
        install: bool,
        /// A prebuilt image directory (vmlinuz, initramfs) instead of
        /// building one into LAB_DIR/image.
        #[arg(long)]
        image: Option<PathBuf>,
        /// The machines run Docker, pulling from the lab registry (implies
        /// --install; 2 GiB per VM; the pause image is pushed at start).
        #[arg(long)]
        docker: bool,
        /// The lab's network namespace.
        #[arg(long, default_value = "herd-lab")]
        netns: String,
        /// Return once the VMs are powered on, without the progress view.
        #[arg(long)]
        no_wait: bool,
        /// How long the progress view waits for every machine to boot.
        #[arg(long, default_value = "5m", value_parser = humantime_duration)]
        timeout: Duration,
    },
    /// Machines, power state, boot stage, and the provisioning inventory.
    Status {
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Run a command inside the lab network (e.g. `herd lab exec -- herd kv get --prefix /`).
    Exec {
        #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Power machines off (pull the plugs: several at the same instant).
    Kill {
        #[arg(required = true)]
        machines: Vec<MachineId>,
    },
    /// Power a machine on again.
    Boot { machine: MachineId },
    /// Replay the seed talk's demo on a Docker lab (brought up, 3 machines,
    /// if none is): Postgres, pgview and memcache, scaling, a canary, a
    /// rolling update under load, a deleted pod, a machine powered off.
    Demo {
        /// Wait for Enter before each step.
        #[arg(long)]
        step: bool,
        /// The namespace of the lab brought up when none is.
        #[arg(long, default_value = "herd-lab")]
        netns: String,
        /// How long bringing a lab up may take.
        #[arg(long, default_value = "30m", value_parser = humantime_duration)]
        timeout: Duration,
    },
    /// Rack one more machine; it netboots and joins by itself.
    Add,
    /// Stop every VM and server and remove the namespace. Idempotent.
    Down,
    /// Send IPv6 router advertisements on an interface (run by `up` inside
    /// the lab namespace, so iPXE does not wait for IPv6 autoconfiguration).
    #[command(hide = true)]
    Ra {
        #[arg(long)]
        interface: String,
        /// Identifies the process as this lab's in `/proc/PID/cmdline`.
        #[arg(long)]
        lab_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time from `herd lab up` to a healthy cluster, and from power-on of an
    /// added machine to its membership, by boot stage.
    Lab(LabBenchArgs),
}

#[derive(Debug, Args)]
pub struct LabBenchArgs {
    /// A lab directory of its own (must hold no running lab).
    #[arg(long, default_value = "/var/lib/herd/bench-lab")]
    pub lab_dir: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub machines: u32,
    /// A prebuilt image directory (otherwise built, cached, and timed apart).
    #[arg(long)]
    pub image: Option<PathBuf>,
    #[arg(long, default_value = "herd-lab-bench")]
    pub netns: String,
    #[arg(long, default_value = "6m", value_parser = humantime_duration)]
    pub timeout: Duration,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s or 5m"))?;
    match unit {
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?} is not a duration like 90s or 5m")),
    }
}

fn lab(dir: PathBuf) -> anyhow::Result<Lab> {
    let herd = std::env::current_exe().context("finding the herd binary")?;
    Ok(Lab::new(dir, herd))
}

pub async fn run(args: LabArgs) -> anyhow::Result<()> {
    match args.command {
        LabCommand::Up {
            machines,
            install,
            image,
            docker,
            netns,
            no_wait,
            timeout,
        } => {
            let lab = lab(args.lab_dir)?;
            let start = tokio::time::Instant::now();
            let options = UpOptions {
                machines,
                install,
                image,
                docker,
                netns,
            };
            let state = lab.up(&options).await?;
            println!(
                "lab up in {}: namespace {}, {} machines powered on",
                lab.dir.display(),
                state.netns,
                state.machines.len()
            );
            if !no_wait {
                progress(&lab, start, timeout).await?;
            }
            Ok(())
        }
        LabCommand::Status { output } => {
            let lab = lab(args.lab_dir)?;
            let state = lab.state()?;
            let status = status::LabStatus::gather(&lab, &state).await;
            output.print(&status, status::LabStatus::table)?;
            Ok(())
        }
        LabCommand::Exec { command } => {
            let lab = lab(args.lab_dir)?;
            let state = lab.state()?;
            let mut argv = command.into_iter();
            let program = argv.next().expect("clap requires a command");
            // `herd` inside the lab means this very binary, on PATH or not.
            let program = if program == "herd" {
                lab.herd.display().to_string()
            } else {
                program
            };
            // Clients inside the lab talk to the lab's machines by default:
            // `herd lab exec -- herd kv get --prefix /` just works.
            let endpoints: Vec<String> = state
                .machines
                .iter()
                .map(|m| m.id().client_endpoint())
                .collect();
            let endpoints = endpoints.join(",");
            let argv: Vec<String> = argv.collect();
            let mut cmd = tokio::process::Command::new("ip");
            cmd.args(["netns", "exec", &state.netns, &program])
                .args(&argv);
            // etcdctl refuses a flag and its variable together: set only
            // what the command line does not.
            let given = |flag: &str| {
                argv.iter()
                    .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
            };
            let [ca, cert, key] = crate::pki::files(&lab.dir);
            let endpoints = endpoints
                .split(',')
                .map(|e| format!("https://{e}"))
                .collect::<Vec<_>>()
                .join(",");
            let settings = [
                (
                    "--endpoints",
                    "ENDPOINTS",
                    std::ffi::OsString::from(endpoints),
                ),
                ("--cacert", "CACERT", ca.into_os_string()),
                ("--cert", "CERT", cert.into_os_string()),
                ("--key", "KEY", key.into_os_string()),
            ];
            for (flag, var, value) in settings {
                for prefix in ["HERD_", "ETCDCTL_"] {
                    let var = format!("{prefix}{var}");
                    if std::env::var_os(&var).is_none() && !given(flag) {
                        cmd.env(var, &value);
                    }
                }
            }
            // The pods verbs talk to the first machine's Kubernetes API,
            // kubectl too (root's kubeconfig names it).
            if std::env::var_os("HERD_API_SERVER").is_none() && !given("--server") {
                let first = state.machines.first().map(|m| m.id().ip());
                if let Some(ip) = first {
                    cmd.env("HERD_API_SERVER", format!("https://{ip}:6443"));
                }
            }
            // `herd pxe publish|updates` go to the provisioning server's
            // admin listener (flags override these).
            let pxe = [
                ("HERD_PXE_SERVER", crate::pxe::admin_url().into()),
                (
                    "HERD_PXE_CACERT",
                    crate::pxe::admin_ca_file(&lab.dir).into_os_string(),
                ),
                (
                    "HERD_PXE_TOKEN_FILE",
                    crate::pxe::api_token_file(&lab.dir).into_os_string(),
                ),
            ];
            for (var, value) in pxe {
                if std::env::var_os(var).is_none() {
                    cmd.env(var, value);
                }
            }
            if std::env::var_os("KUBECONFIG").is_none() && !given("--kubeconfig") {
                cmd.env("KUBECONFIG", crate::pki::kubeconfig(&lab.dir));
            }
            if std::env::var_os("ETCDCTL_API").is_none() {
                cmd.env("ETCDCTL_API", "3");
            }
            let status = cmd.status().await.context("running ip netns exec")?;
            std::process::exit(status.code().unwrap_or(1));
        }
        LabCommand::Kill { machines } => {
            let lab = lab(args.lab_dir)?;
            for (machine, was_on) in machines.iter().zip(lab.kill(&machines).await?) {
                if was_on {
                    println!("{machine} powered off");
                } else {
                    println!("{machine} was already off");
                }
            }
            Ok(())
        }
        LabCommand::Boot { machine } => {
            let lab = lab(args.lab_dir)?;
            lab.boot(machine).await?;
            println!("{machine} powered on");
            Ok(())
        }
        LabCommand::Demo {
            step,
            netns,
            timeout,
        } => {
            let lab = lab(args.lab_dir)?;
            // A lab that failed or crashed and left nothing running counts
            // as none: `up` clears what it left.
            let up = match lab.state() {
                Ok(state) => lab.is_alive(&state),
                Err(LabError::NotUp(_)) => false,
                Err(e) => return Err(e.into()),
            };
            if !up {
                let start = tokio::time::Instant::now();
                println!(
                    "no lab running in {}: bringing up {} machines with Docker",
                    lab.dir.display(),
                    demo::MACHINES
                );
                let options = UpOptions {
                    machines: demo::MACHINES as u32,
                    install: true,
                    image: None,
                    docker: true,
                    netns,
                };
                lab.up(&options).await?;
                progress(&lab, start, timeout).await?;
            }
            let demo = demo::Demo::new(&lab)?;
            let outcomes = demo.run(step).await;
            print!("\n{}", demo::report::summary(&outcomes));
            if outcomes.iter().any(|o| !o.ok) {
                anyhow::bail!("the demo stopped at a failed step");
            }
            Ok(())
        }
        LabCommand::Add => {
            let lab = lab(args.lab_dir)?;
            let id = lab.add().await?;
            println!("{id} racked and powered on ({}, {})", id.mac(), id.ip());
            Ok(())
        }
        LabCommand::Down => {
            let lab = lab(args.lab_dir)?;
            let report = lab.down().await?;
            println!(
                "lab down: {} VMs and {} servers stopped, namespace {}",
                report.vms_stopped,
                report.servers_stopped,
                if report.namespace_removed {
                    "removed"
                } else {
                    "already gone"
                }
            );
            Ok(())
        }
        LabCommand::Ra {
            interface,
            lab_dir: _,
        } => crate::ra::run(&interface, Duration::from_secs(1))
            .await
            .with_context(|| format!("sending router advertisements on {interface}")),
    }
}

/// The progress view: one line per stage a machine reaches, until every
/// machine has joined the cluster (it answers as a store member, is in the
/// member list and registered itself) or `timeout` passes. Times count
/// from `start` (when `herd lab up` began).
async fn progress(lab: &Lab, start: tokio::time::Instant, timeout: Duration) -> anyhow::Result<()> {
    let state = lab.state()?;
    let ids: Vec<MachineId> = state.machines.iter().map(|m| m.id()).collect();
    let mut tracker = watch::Tracker::new(start, &ids);
    let joined = watch::until_joined(lab, &state.netns, &mut tracker, timeout, |t| {
        if t.stage != Stage::PoweredOn {
            println!(
                "[{:>6.1}s] {:<4} {}",
                t.at.as_secs_f32(),
                t.machine,
                t.stage
            );
        }
    })
    .await?;
    if !joined {
        anyhow::bail!(
            "not every machine joined within {timeout:?}; see `herd lab status` and the console logs in {}/m*/serial.log",
            lab.dir.display()
        );
    }
    println!(
        "[{:>6.1}s] cluster healthy: {} machines joined",
        tracker.elapsed().as_secs_f32(),
        ids.len()
    );
    Ok(())
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn stages_row(label: &str, total: Duration, stages: &[(Stage, Duration)]) -> String {
    let cells: Vec<String> = stages.iter().map(|(_, d)| secs(*d)).collect();
    format!("| {label} | {} | {} |", secs(total), cells.join(" | "))
}

pub async fn run_bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Lab(args) => {
            let lab = lab(args.lab_dir)?;
            eprintln!(
                "bench lab: {} machines in {} (namespace {}), TCG",
                args.machines,
                lab.dir.display(),
                args.netns
            );
            let r = crate::bench::run(&lab, args.machines, args.image, args.netns, args.timeout)
                .await?;
            println!(
                "image build (cached stages reused): {}",
                secs(r.image_build)
            );
            println!(
                "`herd lab up --machines {}` to healthy cluster: {} (goal < 90 s)",
                args.machines,
                secs(r.up_to_healthy)
            );
            println!(
                "added machine {} power-on to joined: {} (goal < 45 s)",
                r.added.0,
                secs(r.added.1)
            );
            println!();
            println!(
                "| machine | power-on → joined | DHCP | iPXE script | kernel (fetch + start) | agent start | joined |"
            );
            println!("|---|---|---|---|---|---|---|");
            for (id, stages) in &r.initial {
                let total = stages.iter().map(|(_, d)| *d).sum();
                println!("{}", stages_row(&format!("{id} (initial)"), total, stages));
            }
            println!(
                "{}",
                stages_row(&format!("{} (added)", r.added.0), r.added.1, &r.added.2)
            );
            Ok(())
        }
    }
}
