//! `herd bench dhcp`: leases per second under kea's perfdhcp, herd vs dnsmasq, on one netns bridge.
//!
//! Both servers run in the same throwaway namespace on the same bridge, one
//! after the other in one invocation; perfdhcp runs in a second namespace
//! plugged into that bridge and drives full DORA exchanges from many
//! simulated clients. herd runs in-process on a thread that entered the
//! server namespace; its leases are fsync'd to a journal in a temporary
//! directory before each ACK (dnsmasq writes its lease file without fsync).
//! This is a command module: errors are `anyhow` with context.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use super::{BootConfig, Config, Pool, Server};

/// Arguments of `herd bench dhcp`.
#[derive(Debug, Clone, clap::Args)]
pub struct DhcpBenchArgs {
    /// Seconds of load per server.
    #[arg(long, default_value_t = 10)]
    pub seconds: u32,
    /// Exchanges per second perfdhcp tries to start (-r).
    #[arg(long, default_value_t = 20_000)]
    pub rate: u32,
    /// Distinct simulated clients (-R).
    #[arg(long, default_value_t = 50_000)]
    pub clients: u32,
    /// Skip the dnsmasq run.
    #[arg(long)]
    pub herd_only: bool,
    /// Print perfdhcp's full reports.
    #[arg(long)]
    pub verbose: bool,
}

/// One perfdhcp run's figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    pub sent_discovers: u64,
    pub received_acks: u64,
    /// Completed DORA exchanges per second over the test period.
    pub leases_per_sec: f64,
}

const BRIDGE: &str = "hbbr0";
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);

/// The two namespaces of one benchmark run, removed on drop.
struct Namespaces {
    server: String,
    client: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (apt-get install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Namespaces {
    fn create() -> anyhow::Result<Namespaces> {
        let pid = std::process::id();
        let ns = Namespaces {
            server: format!("hbd{pid}s"),
            client: format!("hbd{pid}c"),
        };
        for name in [&ns.server, &ns.client] {
            ip(&["netns", "add", name])?;
            ip(&["-n", name, "link", "set", "lo", "up"])?;
        }
        let s = ns.server.as_str();
        let c = ns.client.as_str();
        ip(&["-n", s, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&[
            "-n",
            s,
            "link",
            "set",
            BRIDGE,
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ])?;
        ip(&["-n", s, "addr", "add", "10.78.0.1/16", "dev", BRIDGE])?;
        ip(&["-n", s, "link", "set", BRIDGE, "up"])?;
        ip(&[
            "-n", s, "link", "add", "hbveth", "type", "veth", "peer", "name", "eth0",
        ])?;
        ip(&["-n", s, "link", "set", "hbveth", "master", BRIDGE])?;
        ip(&["-n", s, "link", "set", "hbveth", "up"])?;
        ip(&["-n", s, "link", "set", "eth0", "netns", c])?;
        ip(&["-n", c, "addr", "add", "10.78.0.2/16", "dev", "eth0"])?;
        ip(&["-n", c, "link", "set", "eth0", "up"])?;
        Ok(ns)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in [&self.server, &self.client] {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<libc::pid_t>() {
                        // SAFETY: kill has no memory-safety preconditions; these are our children.
                        unsafe {
                            libc::kill(pid, libc::SIGKILL);
                        }
                    }
                }
            }
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

fn which(program: &str, package: &str) -> anyhow::Result<PathBuf> {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("`{program}` is not installed: apt-get install {package}"))
}

/// Runs perfdhcp in the client namespace and parses its report.
fn perfdhcp(
    perf: &Path,
    ns: &Namespaces,
    args: &DhcpBenchArgs,
) -> anyhow::Result<(Figures, String)> {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.client])
        .arg(perf)
        .args(["-4", "-B", "-l", "eth0"])
        .arg(format!("-r{}", args.rate))
        .arg(format!("-R{}", args.clients))
        .arg(format!("-p{}", args.seconds))
        .arg("all")
        .stdin(Stdio::null())
        .output()
        .context("running perfdhcp")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // perfdhcp exits 3 when some exchanges were dropped, which is expected under overload.
    if !matches!(out.status.code(), Some(0) | Some(3)) {
        bail!(
            "perfdhcp failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((parse_report(&text, args.seconds), text))
}

/// Reads perfdhcp's "sent packets" / "received packets" per exchange type.
pub fn parse_report(text: &str, seconds: u32) -> Figures {
    let mut figures = Figures::default();
    let mut section = "";
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("***Statistics for:") {
            section = if l.contains("DISCOVER-OFFER") {
                "DO"
            } else if l.contains("REQUEST-ACK") {
                "RA"
            } else {
                ""
            };
        }
        let value = |key: &str| {
            l.strip_prefix(key)
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        match section {
            "DO" => {
                if let Some(v) = value("sent packets:") {
                    figures.sent_discovers = v;
                }
            }
            "RA" => {
                if let Some(v) = value("received packets:") {
                    figures.received_acks = v;
                }
            }
            _ => {}
        }
    }
    figures.leases_per_sec = figures.received_acks as f64 / f64::from(seconds.max(1));
    figures
}

/// Runs herd's DHCP server in the server namespace until `token` is cancelled.
fn start_herd(
    ns: &str,
    state_dir: PathBuf,
    token: CancellationToken,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<()>>> {
    let path = format!("/run/netns/{ns}");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let thread = std::thread::spawn(move || -> anyhow::Result<()> {
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: setns on a valid namespace fd changes only this thread's namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            let e = std::io::Error::last_os_error();
            let _ = ready_tx.send(Err(e.to_string()));
            bail!("setns {path}: {e}");
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let pool = Pool::new(
                "10.78.0.0/16".parse()?,
                Ipv4Addr::new(10, 78, 1, 1),
                Ipv4Addr::new(10, 78, 255, 254),
            )?;
            let mut config = Config::new(BRIDGE, SERVER_IP, pool, state_dir);
            config.boot = BootConfig::new(SERVER_IP, "http://10.78.0.1:8080/boot.ipxe");
            let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
            let server = match Server::bind(config, tx).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return Err(e.into());
                }
            };
            let _ = ready_tx.send(Ok(()));
            // Drain events as the inventory would.
            let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
            server.run(token).await?;
            drain.await?;
            Ok(())
        })
    });
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(e)) => bail!("herd DHCP server did not start: {e}"),
        Err(_) => match thread.join() {
            Ok(r) => r
                .and_then(|()| bail!("herd DHCP server exited early"))
                .map(|()| unreachable!()),
            Err(_) => bail!("herd DHCP server thread panicked"),
        },
    }
}

/// `herd bench dhcp`.
pub async fn run(args: DhcpBenchArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || run_blocking(&args)).await?
}

fn run_blocking(args: &DhcpBenchArgs) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("herd bench dhcp creates network namespaces: run it as root");
    }
    let perf = which("perfdhcp", "kea-admin")?;
    let dnsmasq = which("dnsmasq", "dnsmasq-base")?;
    let tmp = std::env::temp_dir().join(format!("herd-bench-dhcp-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let ns = Namespaces::create()?;

    let token = CancellationToken::new();
    let herd = start_herd(&ns.server, tmp.join("herd-state"), token.clone())?;
    let herd_result = perfdhcp(&perf, &ns, args);
    token.cancel();
    herd.join()
        .map_err(|_| anyhow::anyhow!("herd server thread panicked"))??;
    let (herd_figures, herd_report) = herd_result?;
    if args.verbose {
        println!("--- perfdhcp against herd ---\n{herd_report}");
    }

    let dnsmasq_figures = if args.herd_only {
        None
    } else {
        let lease_file = tmp.join("dnsmasq.leases");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.server])
            .arg(&dnsmasq)
            .args([
                "--no-daemon",
                "--port=0",
                "--conf-file=/dev/null",
                "--interface",
                BRIDGE,
                "--bind-interfaces",
                "--dhcp-range=10.78.1.1,10.78.255.254,255.255.0.0,1h",
                "--dhcp-lease-max=200000",
                "--no-ping",
                "--dhcp-authoritative",
                "--quiet-dhcp",
                "--pid-file=",
            ])
            .arg(format!("--dhcp-leasefile={}", lease_file.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting dnsmasq")?;
        std::thread::sleep(Duration::from_millis(500));
        let result = perfdhcp(&perf, &ns, args);
        let _ = child.kill();
        let _ = child.wait();
        let (figures, report) = result?;
        if args.verbose {
            println!("--- perfdhcp against dnsmasq ---\n{report}");
        }
        Some((figures, report))
    };
    drop(ns);
    let _ = std::fs::remove_dir_all(&tmp);

    println!(
        "perfdhcp -4 -B -l eth0 -r{} -R{} -p{} all   (full DORA, same netns bridge)",
        args.rate, args.clients, args.seconds
    );
    println!(
        "{:<10} {:>14} {:>14} {:>12}",
        "server", "DISCOVERs sent", "ACKs received", "leases/s"
    );
    let row = |name: &str, f: &Figures| {
        println!(
            "{:<10} {:>14} {:>14} {:>12.0}",
            name, f.sent_discovers, f.received_acks, f.leases_per_sec
        );
    };
    row("herd", &herd_figures);
    if let Some((d, _)) = &dnsmasq_figures {
        row("dnsmasq", d);
        if d.leases_per_sec > 0.0 {
            println!(
                "ratio herd/dnsmasq: {:.1}x",
                herd_figures.leases_per_sec / d.leases_per_sec
            );
        }
    }
    if herd_figures.received_acks == 0 {
        bail!("herd completed no exchanges; perfdhcp said:\n{herd_report}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_perfdhcp_report() {
        let report = "***Rate statistics***\nRate: 100 4-way exchanges/second, expected rate: 100\n\n\
            ***Statistics for: DISCOVER-OFFER***\nsent packets: 1000\nreceived packets: 990\ndrops: 10\n\n\
            ***Statistics for: REQUEST-ACK***\nsent packets: 990\nreceived packets: 980\ndrops: 10\n";
        let f = parse_report(report, 10);
        assert_eq!(f.sent_discovers, 1000);
        assert_eq!(f.received_acks, 980);
        assert!((f.leases_per_sec - 98.0).abs() < 1e-9);
    }
}
