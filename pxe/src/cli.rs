//! `herd pxe …` and `herd bench dhcp|tftp`: argument parsing at the binary's edge.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use herd_cli::{Output, Table};
use tokio_util::sync::CancellationToken;

use crate::inventory::Machine;
use crate::server::{DhcpSettings, ProfileSource, ServeConfig};

#[derive(Debug, Args)]
pub struct PxeArgs {
    #[command(subcommand)]
    pub command: PxeCommand,
}

#[derive(Debug, Subcommand)]
pub enum PxeCommand {
    /// Serve DHCP, TFTP and HTTP boot on one interface.
    Serve(Box<ServeArgs>),
    /// List the machines the server has seen.
    Machines(MachinesArgs),
    /// Download one file over TFTP (windowsize-capable; checks what it gets).
    TftpGet(TftpGetArgs),
    /// Publish a release (the output of `herd image build`) into an update group.
    Publish(crate::update::cli::PublishArgs),
    /// Update groups and machines: versions, states, rollouts; resume, policy.
    Updates(crate::update::cli::UpdatesArgs),
}

#[derive(Debug, Args)]
pub struct TftpGetArgs {
    /// Server address, `IP` or `IP:PORT` (port 69 by default).
    pub server: String,
    /// File to fetch, as the server names it.
    pub file: String,
    /// Where to write it.
    #[arg(short, long)]
    pub output: PathBuf,
    /// RFC 2348 block size to ask for (512 without it).
    #[arg(long, value_parser = clap::value_parser!(u16).range(8..=65464))]
    pub blksize: Option<u16>,
    /// RFC 7440 window to ask for (lockstep without it, or if the server ignores it).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub windowsize: Option<u16>,
    /// Print the negotiated options and recoveries on stderr.
    #[arg(long)]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Interface DHCP listens and answers on (and only that one).
    #[arg(long)]
    pub interface: Option<String>,
    /// This server's address on the boot network: `IP` or `IP/PREFIX` (default /24).
    #[arg(long)]
    pub address: String,
    /// DHCP address pool, `START-END`.
    #[arg(long)]
    pub range: Option<String>,
    /// A fixed address for one machine, `MAC=IP` (repeatable).
    #[arg(long = "reserve", value_name = "MAC=IP")]
    pub reserve: Vec<String>,
    /// proxyDHCP: another DHCP server owns addresses; answer PXE clients only.
    #[arg(long)]
    pub proxy_dhcp: bool,
    /// No DHCP at all: serve TFTP and HTTP for another DHCP server.
    #[arg(long, conflicts_with_all = ["proxy_dhcp", "range"])]
    pub no_dhcp: bool,
    /// Profiles and groups (YAML); replaces the single-profile flags.
    #[arg(long, conflicts_with_all = ["kernel", "initrd", "cmdline", "cloud_config"])]
    pub config: Option<PathBuf>,
    /// Kernel of the single default profile.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Initramfs of the single default profile (repeatable).
    #[arg(long)]
    pub initrd: Vec<PathBuf>,
    /// Kernel command line; `{{ mac }}`, `{{ server_url }}` and the other
    /// template values are filled in per machine.
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Cloud-config template of the single default profile.
    #[arg(long)]
    pub cloud_config: Option<PathBuf>,
    /// Cluster join token, available to templates as `{{ token }}`.
    #[arg(long, env = "HERD_JOIN_TOKEN")]
    pub token: Option<String>,
    /// Boot installed machines from disk (after the agent reports the install).
    #[arg(long)]
    pub install_to_disk: bool,
    /// Leases and the machine inventory live here.
    #[arg(long, default_value = crate::server::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// The HTTPS admin listener (publishing, policies, resuming, reinstalls;
    /// its CA is `<state-dir>/admin/ca.crt`, made on first start).
    #[arg(long, default_value_t = 8443)]
    pub admin_port: u16,
    /// Another name operators reach the admin listener by (a DNS name or
    /// an IP address), for its certificate (repeatable).
    #[arg(long = "admin-name", value_name = "NAME")]
    pub admin_names: Vec<String>,
    #[arg(long, default_value_t = 69)]
    pub tftp_port: u16,
    /// Directory served over TFTP (iPXE binaries).
    #[arg(long, default_value = "/usr/lib/ipxe")]
    pub tftp_root: PathBuf,
    /// Concurrent TFTP transfers; more are told to retry.
    #[arg(long, default_value_t = 64)]
    pub tftp_max_transfers: usize,
    /// Ignore the TFTP blksize option (for firmware that mishandles it).
    #[arg(long)]
    pub tftp_no_blksize: bool,
    /// How often the profile files (the --config YAML, cloud-config
    /// templates) are checked for changes and reloaded; `0s` turns it off
    /// (SIGHUP still reloads).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub reload_poll: std::time::Duration,
    /// The admin token that publishing, policy changes and resuming need
    /// (made if missing) [default: <state-dir>/api.token].
    #[arg(long)]
    pub api_token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MachinesArgs {
    /// The pxe server's address: plain `http://…:8080` or its HTTPS admin
    /// listener.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "HERD_PXE_SERVER")]
    pub server: String,
    /// The admin listener's CA, for an `https://` server (its
    /// `<state-dir>/admin/ca.crt`).
    #[arg(long, env = "HERD_PXE_CACERT")]
    pub cacert: Option<PathBuf>,
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// DHCP leases per second, herd vs dnsmasq.
    Dhcp(crate::dhcp::bench::DhcpBenchArgs),
    /// TFTP throughput (and HTTP boot of the same file), herd vs dnsmasq.
    Tftp(TftpBenchArgs),
}

#[derive(Debug, Args)]
pub struct TftpBenchArgs {
    /// Size of the big file in MiB.
    #[arg(long, default_value_t = 100)]
    pub size_mib: u64,
    /// Parallel transfers in the concurrency round.
    #[arg(long, default_value_t = 16)]
    pub concurrent: usize,
    /// Size of each file in the concurrency round, in MiB.
    #[arg(long, default_value_t = 8)]
    pub concurrent_mib: u64,
    /// RFC 7440 windows for the windowsize rounds (comma-separated); atftp
    /// uses the first.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub windowsize: Vec<u16>,
    /// Print a Markdown table for BENCHMARKS.md.
    #[arg(long)]
    pub markdown: bool,
}

/// Runs one `herd pxe` command; `serve` runs until `shutdown` fires.
pub async fn run(args: PxeArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    match args.command {
        PxeCommand::Serve(a) => serve(*a, shutdown).await,
        PxeCommand::Machines(a) => machines(a).await,
        PxeCommand::TftpGet(a) => tftp_get(a).await,
        PxeCommand::Publish(a) => crate::update::cli::publish(a).await,
        PxeCommand::Updates(a) => crate::update::cli::updates(a).await,
    }
}

async fn tftp_get(a: TftpGetArgs) -> anyhow::Result<()> {
    let server: std::net::SocketAddr = match a.server.parse() {
        Ok(s) => s,
        Err(_) => std::net::SocketAddr::new(
            a.server
                .parse()
                .with_context(|| format!("{:?}: expected IP or IP:PORT", a.server))?,
            69,
        ),
    };
    let opts = crate::tftp::client::Options {
        blksize: a.blksize,
        windowsize: a.windowsize,
        ..Default::default()
    };
    let summary = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let file = std::fs::File::create(&a.output)
            .with_context(|| format!("creating {}", a.output.display()))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let s = crate::tftp::client::get(server, &a.file, &opts, &mut out)
            .with_context(|| format!("tftp://{server}/{}", a.file))?;
        Ok(s)
    })
    .await
    .context("TFTP client thread")??;
    if a.verbose {
        eprintln!(
            "{} bytes, blksize {}, windowsize {}, {} recoveries",
            summary.bytes, summary.blksize, summary.windowsize, summary.recoveries
        );
    }
    Ok(())
}

pub async fn run_bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Dhcp(args) => crate::dhcp::bench::run(args).await,
        BenchCommand::Tftp(a) => bench_tftp(a).await,
    }
}

async fn bench_tftp(a: TftpBenchArgs) -> anyhow::Result<()> {
    let opts = crate::tftp::bench::Options {
        herd: std::env::current_exe().context("locating the herd binary")?,
        size_mib: a.size_mib,
        concurrent: a.concurrent,
        concurrent_mib: a.concurrent_mib,
        windowsizes: a.windowsize.clone(),
    };
    let rows = tokio::task::spawn_blocking(move || crate::tftp::bench::run_bench(&opts))
        .await
        .context("benchmark thread")?
        .context("herd bench tftp")?;
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let command = format!(
        "herd bench tftp --size-mib {} --concurrent {} --concurrent-mib {} --windowsize {}",
        a.size_mib,
        a.concurrent,
        a.concurrent_mib,
        a.windowsize
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    if a.markdown {
        print!("{}", crate::tftp::bench::markdown(&rows, &date, &command));
    } else {
        for r in &rows {
            match r.anchor_mib_s {
                Some(d) => println!(
                    "{:<70} herd {:>8.1} MiB/s   dnsmasq {:>8.1} MiB/s   {:.2}x",
                    r.case,
                    r.herd_mib_s,
                    d,
                    r.herd_mib_s / d.max(1e-9)
                ),
                None => println!("{:<70} herd {:>8.1} MiB/s", r.case, r.herd_mib_s),
            }
        }
    }
    // The goal compares HTTP with TFTP as iPXE does it (negotiated
    // blksize, no windowsize: iPXE does not implement RFC 7440).
    if let (Some(http), Some(tftp)) = (rows.iter().find(|r| r.anchor_mib_s.is_none()), rows.get(1))
    {
        println!(
            "\nHTTP vs herd TFTP with negotiated blksize (as iPXE fetches): {:.1}x",
            http.herd_mib_s / tftp.herd_mib_s.max(1e-9)
        );
    }
    Ok(())
}

fn parse_address(s: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, p)) => (
            ip,
            p.parse::<u8>()
                .ok()
                .filter(|p| *p <= 32)
                .with_context(|| format!("--address {s:?}: prefix must be 0..=32"))?,
        ),
        None => (s, 24),
    };
    let ip = ip
        .parse()
        .with_context(|| format!("--address {s:?}: not an IPv4 address"))?;
    Ok((ip, prefix))
}

fn parse_range(s: &str) -> anyhow::Result<(Ipv4Addr, Ipv4Addr)> {
    let (a, b) = s
        .split_once('-')
        .with_context(|| format!("--range {s:?}: expected START-END"))?;
    Ok((
        a.trim()
            .parse()
            .with_context(|| format!("--range {s:?}: bad start"))?,
        b.trim()
            .parse()
            .with_context(|| format!("--range {s:?}: bad end"))?,
    ))
}

async fn serve(a: ServeArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (address, prefix) = parse_address(&a.address)?;
    let profiles = match (a.config, a.kernel) {
        (Some(path), _) => ProfileSource::File(path),
        (None, Some(kernel)) => ProfileSource::Single {
            kernel,
            initrd: a.initrd,
            cmdline: a.cmdline,
            cloud_config: a.cloud_config,
            token: a.token,
            install_to_disk: a.install_to_disk,
        },
        (None, None) => {
            bail!("give either --config FILE or --kernel FILE (with --initrd/--cmdline)")
        }
    };
    let dhcp = if a.no_dhcp {
        None
    } else {
        let interface = a
            .interface
            .context("--interface is required for DHCP (or pass --no-dhcp)")?;
        let range = match (&a.range, a.proxy_dhcp) {
            (Some(r), _) => parse_range(r)?,
            // proxyDHCP hands out no addresses; the pool is never used.
            (None, true) => (address, address),
            (None, false) => bail!("--range START-END is required (or --proxy-dhcp / --no-dhcp)"),
        };
        let reservations = a
            .reserve
            .iter()
            .map(|r| {
                let (mac, ip) = r
                    .split_once('=')
                    .with_context(|| format!("--reserve {r:?}: expected MAC=IP"))?;
                let mac = mac
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--reserve {r:?}: {e}"))?;
                let ip = ip
                    .parse()
                    .with_context(|| format!("--reserve {r:?}: bad IPv4 address"))?;
                Ok((mac, ip))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Some(DhcpSettings {
            interface,
            range,
            proxy: a.proxy_dhcp,
            reservations,
        })
    };
    let config = ServeConfig {
        address,
        prefix,
        dhcp,
        state_dir: a.state_dir,
        http_port: a.http_port,
        admin_port: a.admin_port,
        admin_names: a.admin_names,
        tftp_port: a.tftp_port,
        tftp_root: a.tftp_root,
        tftp_max_transfers: a.tftp_max_transfers,
        tftp_refuse_blksize: a.tftp_no_blksize,
        profiles,
        reload_poll: (!a.reload_poll.is_zero()).then_some(a.reload_poll),
        api_token_file: a.api_token_file,
    };
    crate::server::run(config, shutdown)
        .await
        .context("herd pxe serve")
}

async fn machines(a: MachinesArgs) -> anyhow::Result<()> {
    let url = format!("{}/api/machines", a.server.trim_end_matches('/'));
    let ca = crate::update::cli::admin_ca(a.cacert.as_deref())?;
    let http = crate::update::client::http_client(&a.server, ca.as_deref())?;
    let list: Vec<Machine> = http.get_json(&url).await?;
    a.output.print(&list, |l| table(l))?;
    Ok(())
}

fn table(list: &[Machine]) -> String {
    let opt = |o: Option<String>| o.unwrap_or_else(|| "-".to_owned());
    let mut t = Table::new([
        "MAC",
        "IP",
        "ARCH",
        "PROFILE",
        "STAGE",
        "INSTALLED",
        "LAST SEEN",
    ]);
    for m in list {
        t.row([
            m.mac.to_string(),
            opt(m.ip.map(|i| i.to_string())),
            opt(m.arch.clone()),
            opt(m.profile.clone()),
            opt(m.last_stage.map(|s| s.to_string())),
            if m.installed { "yes" } else { "no" }.to_owned(),
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(m.last_seen),
            )
            .to_string(),
        ]);
    }
    t.render()
}
