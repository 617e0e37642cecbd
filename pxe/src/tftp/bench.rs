//! `herd bench tftp`: TFTP throughput of herd vs dnsmasq, side by side in
//! one run on one namespace bridge, plus HTTP boot of the same file.
//!
//! Layout: a server namespace with a bridge holding two addresses (herd on
//! .1, dnsmasq on .2), and a client namespace joined to the bridge by a
//! veth pair, so every byte crosses the bridge. Blocking throughout: run it
//! on a blocking thread.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// The herd binary to benchmark (`herd pxe serve` runs as a child).
    pub herd: PathBuf,
    /// Size of the big file, in MiB.
    pub size_mib: u64,
    /// Parallel clients in the concurrency round.
    pub concurrent: usize,
    /// Size of each file in the concurrency round, in MiB.
    pub concurrent_mib: u64,
    /// Windows for the windowsize rounds (RFC 7440); the first one is also
    /// the atftp round's.
    pub windowsizes: Vec<u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("`{tool}` is not installed: apt-get install {package}")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error("{what}: {detail}")]
    Command { what: String, detail: String },
    #[error("{0} did not come up within 20 s")]
    NotReady(&'static str),
    #[error("{what}: the fetched file differs from the served one")]
    Corrupt { what: String },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// One measured case.
#[derive(Debug, Clone)]
pub struct Row {
    pub case: String,
    pub client: String,
    pub herd_mib_s: f64,
    /// `None` when the anchor cannot do it (dnsmasq has no HTTP).
    pub anchor_mib_s: Option<f64>,
}

const SRV_IP: &str = "10.213.0.1";
const DNSMASQ_IP: &str = "10.213.0.2";
const CLIENT_IP: &str = "10.213.0.10";

fn need(tool: &'static str, package: &'static str) -> Result<(), BenchError> {
    let found = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .chain(["/usr/sbin".into(), "/sbin".into()])
                .any(|d: PathBuf| d.join(tool).is_file())
        })
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(BenchError::MissingTool { tool, package })
    }
}

fn run(what: &str, cmd: &mut Command) -> Result<(), BenchError> {
    let out = cmd.output().map_err(|e| BenchError::Command {
        what: what.to_owned(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(BenchError::Command {
            what: what.to_owned(),
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<(), BenchError> {
    run(
        &format!("ip {}", args.join(" ")),
        Command::new("ip").args(args),
    )
}

/// The two namespaces; removed (with every process inside) on drop.
struct Namespaces {
    server: String,
    client: String,
}

impl Namespaces {
    fn create() -> Result<Namespaces, BenchError> {
        let pid = std::process::id();
        let ns = Namespaces {
            server: format!("hbt{pid}s"),
            client: format!("hbt{pid}c"),
        };
        let (s, c) = (ns.server.as_str(), ns.client.as_str());
        ip(&["netns", "add", s])?;
        ip(&["netns", "add", c])?;
        for n in [s, c] {
            ip(&["-n", n, "link", "set", "lo", "up"])?;
        }
        ip(&["-n", s, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            s,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])?;
        ip(&[
            "-n",
            s,
            "addr",
            "add",
            &format!("{SRV_IP}/24"),
            "dev",
            "br0",
        ])?;
        ip(&[
            "-n",
            s,
            "addr",
            "add",
            &format!("{DNSMASQ_IP}/24"),
            "dev",
            "br0",
        ])?;
        ip(&["-n", s, "link", "set", "br0", "up"])?;
        ip(&[
            "-n", s, "link", "add", "vs", "type", "veth", "peer", "name", "vc", "netns", c,
        ])?;
        ip(&["-n", s, "link", "set", "vs", "master", "br0", "up"])?;
        ip(&[
            "-n",
            c,
            "addr",
            "add",
            &format!("{CLIENT_IP}/24"),
            "dev",
            "vc",
        ])?;
        ip(&["-n", c, "link", "set", "vc", "up"])?;
        Ok(ns)
    }

    fn exec(&self, ns: &str, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, program]);
        cmd
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [&self.server, &self.client] {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A server child, killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_pseudo_random(path: &Path, mib: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for b in chunk.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
        }
        f.write_all(&chunk)?;
    }
    f.flush()
}

struct Bench {
    ns: Namespaces,
    dir: PathBuf,
}

impl Bench {
    /// Runs one client in the client namespace; returns seconds taken.
    fn fetch(
        &self,
        what: &str,
        program: &str,
        args: &[String],
        out: &Path,
        src: &Path,
    ) -> Result<f64, BenchError> {
        let _ = std::fs::remove_file(out);
        let start = Instant::now();
        run(what, self.ns.exec(&self.ns.client, program).args(args))?;
        let secs = start.elapsed().as_secs_f64();
        if std::fs::read(out)? != std::fs::read(src)? {
            return Err(BenchError::Corrupt {
                what: what.to_owned(),
            });
        }
        Ok(secs)
    }

    /// `n` clients at once; returns seconds until the last one finished.
    fn fetch_parallel(
        &self,
        what: &str,
        n: usize,
        server: &str,
        src: &Path,
    ) -> Result<f64, BenchError> {
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let start = Instant::now();
        let mut children = Vec::new();
        for i in 0..n {
            let out = self.dir.join(format!("par-{i}"));
            let _ = std::fs::remove_file(&out);
            let child = self
                .ns
                .exec(&self.ns.client, "curl")
                .args(["-sSf", "--max-time", "600", "--tftp-blksize", "1468", "-o"])
                .arg(&out)
                .arg(format!("tftp://{server}/{name}"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()?;
            children.push((out, child));
        }
        let expect = std::fs::read(src)?;
        let mut failure = None;
        for (out, child) in children {
            let o = child.wait_with_output()?;
            if !o.status.success() {
                failure.get_or_insert_with(|| BenchError::Command {
                    what: what.to_owned(),
                    detail: String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                });
            } else if std::fs::read(&out)? != expect {
                failure.get_or_insert_with(|| BenchError::Corrupt {
                    what: what.to_owned(),
                });
            }
        }
        let secs = start.elapsed().as_secs_f64();
        match failure {
            Some(e) => Err(e),
            None => Ok(secs),
        }
    }

    fn wait_tftp(&self, name: &'static str, server: &str, probe: &Path) -> Result<(), BenchError> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let out = self.dir.join("probe.out");
        while Instant::now() < deadline {
            let ok = self
                .ns
                .exec(&self.ns.client, "curl")
                .args(["-sf", "--max-time", "2", "-o"])
                .arg(&out)
                .arg(format!(
                    "tftp://{server}/{}",
                    probe
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default()
                ))
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(BenchError::NotReady(name))
    }
}

fn mib_s(mib: f64, secs: f64) -> f64 {
    mib / secs.max(1e-9)
}

/// Runs the whole benchmark and returns its rows.
pub fn run_bench(opts: &Options) -> Result<Vec<Row>, BenchError> {
    for (tool, package) in [
        ("ip", "iproute2"),
        ("curl", "curl"),
        ("atftp", "atftp"),
        ("dnsmasq", "dnsmasq-base"),
    ] {
        need(tool, package)?;
    }
    let tmp = std::env::temp_dir().join(format!("herd-bench-tftp-{}", std::process::id()));
    std::fs::create_dir_all(tmp.join("root"))?;
    let result = run_in(opts, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn run_in(opts: &Options, tmp: &Path) -> Result<Vec<Row>, BenchError> {
    let root = tmp.join("root");
    let big = root.join("big.bin");
    let small = root.join("each.bin");
    let probe = root.join("probe.bin");
    write_pseudo_random(&big, opts.size_mib)?;
    write_pseudo_random(&small, opts.concurrent_mib)?;
    std::fs::write(&probe, b"probe")?;
    let bench = Bench {
        ns: Namespaces::create()?,
        dir: tmp.to_owned(),
    };
    let log = |name: &str| std::fs::File::create(tmp.join(name));
    let _herd = Daemon(
        bench
            .ns
            .exec(&bench.ns.server, &opts.herd.to_string_lossy())
            .args([
                "pxe",
                "serve",
                "--no-dhcp",
                "--address",
                &format!("{SRV_IP}/24"),
            ])
            .arg("--tftp-root")
            .arg(&root)
            .arg("--kernel")
            .arg(&big)
            .arg("--state-dir")
            .arg(tmp.join("state"))
            .args(["--tftp-max-transfers", "256", "--log", "warn"])
            .stdout(log("herd.log")?)
            .stderr(log("herd.err")?)
            .spawn()?,
    );
    let _dnsmasq = Daemon(
        bench
            .ns
            .exec(&bench.ns.server, "dnsmasq")
            .args([
                "--keep-in-foreground",
                "--port=0",
                "--enable-tftp",
                "--bind-interfaces",
            ])
            .arg(format!("--listen-address={DNSMASQ_IP}"))
            .arg(format!("--tftp-root={}", root.display()))
            .args([
                "--tftp-max=256",
                "--user=root",
                "--group=root",
                "--pid-file",
                "--conf-file=/dev/null",
            ])
            .stdout(log("dnsmasq.log")?)
            .stderr(log("dnsmasq.err")?)
            .spawn()?,
    );
    bench.wait_tftp("herd", SRV_IP, &probe)?;
    bench.wait_tftp("dnsmasq", DNSMASQ_IP, &probe)?;

    let size = opts.size_mib as f64;
    let out = tmp.join("out.bin");
    let outs = out.display().to_string();
    let mut rows = Vec::new();
    let curl = |server: &str, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["-sSf", "--max-time", "1200"].map(String::from).to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        a.extend([
            "-o".to_owned(),
            outs.clone(),
            format!("tftp://{server}/big.bin"),
        ]);
        a
    };
    for (case, client, extra) in [
        (
            "512-byte blocks, no options (RFC 1350)",
            "curl --tftp-no-options",
            &["--tftp-no-options"][..],
        ),
        (
            "blksize 1468",
            "curl --tftp-blksize 1468",
            &["--tftp-blksize", "1468"][..],
        ),
    ] {
        let h = bench.fetch(
            &format!("herd: {case}"),
            "curl",
            &curl(SRV_IP, extra),
            &out,
            &big,
        )?;
        let d = bench.fetch(
            &format!("dnsmasq: {case}"),
            "curl",
            &curl(DNSMASQ_IP, extra),
            &out,
            &big,
        )?;
        rows.push(Row {
            case: format!("{} MiB, {case}", opts.size_mib),
            client: client.to_owned(),
            herd_mib_s: mib_s(size, h),
            anchor_mib_s: Some(mib_s(size, d)),
        });
    }
    let first_window = opts.windowsizes.first().copied().unwrap_or(16);
    let window = format!("windowsize {first_window}");
    let atftp = |server: &str| -> Vec<String> {
        vec![
            "--option".into(),
            "blksize 1468".into(),
            "--option".into(),
            window.clone(),
            "-g".into(),
            "-r".into(),
            "big.bin".into(),
            "-l".into(),
            outs.clone(),
            server.into(),
        ]
    };
    let h = bench.fetch("herd: windowsize", "atftp", &atftp(SRV_IP), &out, &big)?;
    // dnsmasq does not acknowledge windowsize: atftp falls back to a window of 1.
    let d = bench.fetch(
        "dnsmasq: windowsize",
        "atftp",
        &atftp(DNSMASQ_IP),
        &out,
        &big,
    )?;
    rows.push(Row {
        case: format!(
            "{} MiB, blksize 1468 + {window} (dnsmasq: no windowsize)",
            opts.size_mib
        ),
        client: format!("atftp --option \"{window}\""),
        herd_mib_s: mib_s(size, h),
        anchor_mib_s: Some(mib_s(size, d)),
    });
    // The same client for both servers: herd's own RFC 7440 client, which
    // asks for the window and runs lockstep when the server ignores it
    // (dnsmasq), so the rows compare the servers and not two clients.
    let herd_bin = opts.herd.to_string_lossy().into_owned();
    let get = |server: &str, window: Option<u16>| -> Vec<String> {
        let mut a: Vec<String> = ["pxe", "tftp-get", server, "big.bin", "--blksize", "1468"]
            .map(String::from)
            .to_vec();
        if let Some(w) = window {
            a.extend(["--windowsize".to_owned(), w.to_string()]);
        }
        a.extend(["-o".to_owned(), outs.clone()]);
        a
    };
    let windows = std::iter::once(None).chain(opts.windowsizes.iter().map(|&w| Some(w)));
    for w in windows {
        let label = match w {
            Some(w) => format!("windowsize {w}"),
            None => "no windowsize".to_owned(),
        };
        let h = bench.fetch(
            &format!("herd: tftp-get {label}"),
            &herd_bin,
            &get(SRV_IP, w),
            &out,
            &big,
        )?;
        let d = bench.fetch(
            &format!("dnsmasq: tftp-get {label}"),
            &herd_bin,
            &get(DNSMASQ_IP, w),
            &out,
            &big,
        )?;
        let anchor_note = if w.is_some() {
            " (dnsmasq ignores it: lockstep)"
        } else {
            ""
        };
        rows.push(Row {
            case: format!("{} MiB, blksize 1468, {label}{anchor_note}", opts.size_mib),
            client: match w {
                Some(w) => format!("herd pxe tftp-get --windowsize {w}"),
                None => "herd pxe tftp-get".to_owned(),
            },
            herd_mib_s: mib_s(size, h),
            anchor_mib_s: Some(mib_s(size, d)),
        });
    }
    let total = (opts.concurrent as u64 * opts.concurrent_mib) as f64;
    let h = bench.fetch_parallel("herd: concurrent", opts.concurrent, SRV_IP, &small)?;
    let d = bench.fetch_parallel("dnsmasq: concurrent", opts.concurrent, DNSMASQ_IP, &small)?;
    rows.push(Row {
        case: format!(
            "{} concurrent transfers of {} MiB, blksize 1468 (aggregate)",
            opts.concurrent, opts.concurrent_mib
        ),
        client: "curl --tftp-blksize 1468".to_owned(),
        herd_mib_s: mib_s(total, h),
        anchor_mib_s: Some(mib_s(total, d)),
    });
    let http = bench.fetch(
        "herd: HTTP",
        "curl",
        &[
            "-sSf".into(),
            "-o".into(),
            outs.clone(),
            format!("http://{SRV_IP}:8080/assets/default/kernel"),
        ],
        &out,
        &big,
    )?;
    rows.push(Row {
        case: format!("{} MiB over HTTP (herd's boot asset route)", opts.size_mib),
        client: "curl http://".to_owned(),
        herd_mib_s: mib_s(size, http),
        anchor_mib_s: None,
    });
    Ok(rows)
}

/// The rows as a Markdown table for BENCHMARKS.md.
pub fn markdown(rows: &[Row], date: &str, command: &str) -> String {
    let mut s = String::from(
        "| case | client | herd MiB/s | dnsmasq MiB/s | herd / dnsmasq |\n|---|---|---|---|---|\n",
    );
    for r in rows {
        let (anchor, ratio) = match r.anchor_mib_s {
            Some(a) => (
                format!("{a:.1}"),
                format!("{:.2}x", r.herd_mib_s / a.max(1e-9)),
            ),
            None => ("n/a".to_owned(), "n/a".to_owned()),
        };
        s.push_str(&format!(
            "| {} | `{}` | {:.1} | {anchor} | {ratio} |\n",
            r.case, r.client, r.herd_mib_s
        ));
    }
    s.push_str(&format!("\nCommand: `{command}`, {date}.\n"));
    s
}
