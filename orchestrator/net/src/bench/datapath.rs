//! The data-path half of `herd bench net`: two real agents on one bridge,
//! a pod on each, pod-to-pod against host-to-host with iperf3 and ping.
//! The lab itself is plumbed with `ip` (a bench fixture, not herd's code).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{Agent, PathFigure, scratch};

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Bounds `ns`'s eth0 to `gbit` Gbit/s with a token bucket whose burst
/// is 10 ms of traffic (big enough for GSO packets at that rate).
fn shape(ns: &str, gbit: u32) -> anyhow::Result<()> {
    let burst = u64::from(gbit) * 1_000_000_000 / 8 / 100;
    let out = in_ns(ns, "tc")
        .args(["qdisc", "replace", "dev", "eth0", "root", "tbf"])
        .args(["rate", &format!("{gbit}gbit"), "burst", &burst.to_string()])
        .args(["latency", "20ms"])
        .output()
        .context("running tc (iproute2)")?;
    if !out.status.success() {
        bail!(
            "tc shaping eth0 in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn in_ns(ns: &str, program: &str) -> std::process::Command {
    let mut c = std::process::Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

/// Two machines (real `herd agent`s) on one bridge, each with one pod.
pub(super) struct DataLab {
    tag: String,
    dir: PathBuf,
    _agents: Vec<Agent>,
    /// (machine namespace, eth0 address, pod namespace, pod address)
    machines: Vec<(String, Ipv4Addr, String, Ipv4Addr)>,
    backend: String,
}

impl Drop for DataLab {
    fn drop(&mut self) {
        self._agents.clear();
        for ns in ["hub", "ma", "mb", "pa", "pb"] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &format!("{}{ns}", self.tag)])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl DataLab {
    pub(super) fn new(
        herd: &Path,
        backend: &str,
        link_gbit: Option<u32>,
    ) -> anyhow::Result<DataLab> {
        let tag = format!("hbn{}", std::process::id() % 100_000);
        let dir = scratch(backend)?;
        let mut lab = DataLab {
            tag: tag.clone(),
            dir: dir.clone(),
            _agents: Vec::new(),
            machines: Vec::new(),
            backend: backend.to_owned(),
        };
        let hub = format!("{tag}hub");
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for (i, m) in ["a", "b"].iter().enumerate() {
            let ns = format!("{tag}m{m}");
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let outer = format!("v{m}");
            ip(&[
                "-n", &hub, "link", "add", &outer, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &hub, "link", "set", &outer, "master", "br0", "up"])?;
            let addr = Ipv4Addr::new(10, 97, 0, 11 + i as u8);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            if let Some(gbit) = link_gbit {
                shape(&ns, gbit)?;
            }
            let mut cmd = in_ns(&ns, &herd.display().to_string());
            cmd.args([
                "agent",
                "--name",
                &format!("m{m}"),
                // Plaintext on the bench's own bridge, gone with it.
                "--insecure-plaintext",
                "--token",
                "bench",
                "--cluster-iface",
                "eth0",
            ])
            .arg("--data-dir")
            .arg(dir.join(m))
            .arg("--subnet-env")
            .arg(dir.join(format!("{m}.env")))
            .args([
                "--listen-client",
                &format!("{addr}:2379"),
                "--listen-peer",
                &format!("{addr}:2380"),
            ])
            .env("HERD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{m}.log")))?);
            if i == 1 {
                cmd.args(["--join", "10.97.0.11:2380"]);
            }
            lab._agents
                .push(Agent(cmd.spawn().context("starting an agent")?));
            if i == 0 {
                let mut set = in_ns(&ns, &herd.display().to_string());
                set.args([
                    "net",
                    "config",
                    "set",
                    "--endpoints",
                    "10.97.0.11:2379",
                    "--network",
                    "10.240.0.0/16",
                    "--backend",
                    backend,
                ]);
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let out = set.output()?;
                    if out.status.success() {
                        break;
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "herd net config set: {}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
            lab.machines
                .push((ns, addr, format!("{tag}p{m}"), Ipv4Addr::UNSPECIFIED));
        }
        // Each machine's subnet, from its subnet.env; then a pod on herd0.
        for (i, m) in ["a", "b"].iter().enumerate() {
            let env = dir.join(format!("{m}.env"));
            let deadline = Instant::now() + Duration::from_secs(90);
            let subnet = loop {
                if let Ok(text) = std::fs::read_to_string(&env)
                    && let Some(s) = text.lines().find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))
                {
                    break s.to_owned();
                }
                if Instant::now() > deadline {
                    bail!(
                        "machine {m} never wrote {}: {}",
                        env.display(),
                        std::fs::read_to_string(dir.join(format!("{m}.log"))).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(200));
            };
            let (gw, len) = subnet.split_once('/').context("FLANNEL_SUBNET")?;
            let gw: Ipv4Addr = gw.parse()?;
            let pod_addr = Ipv4Addr::from(u32::from(gw) + 9);
            let (ns, _, pod, _) = lab.machines[i].clone();
            ip(&["netns", "add", &pod])?;
            ip(&["-n", &pod, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &ns, "link", "add", "vpod", "type", "veth", "peer", "name", "eth0", "netns",
                &pod,
            ])?;
            ip(&["-n", &ns, "link", "set", "vpod", "master", "herd0", "up"])?;
            ip(&[
                "-n",
                &pod,
                "addr",
                "add",
                &format!("{pod_addr}/{len}"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &pod, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                &pod,
                "route",
                "add",
                "default",
                "via",
                &gw.to_string(),
            ])?;
            if backend == "vxlan" {
                ip(&["-n", &pod, "link", "set", "eth0", "mtu", "1450"])?;
            }
            lab.machines[i].3 = pod_addr;
        }
        // Until both routes are in, the first ping fails.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !in_ns(&lab.machines[0].2, "ping")
            .args(["-c1", "-W1", &lab.machines[1].3.to_string()])
            .stdout(Stdio::null())
            .status()?
            .success()
        {
            if Instant::now() > deadline {
                bail!("pod a never reached pod b over {backend}");
            }
        }
        Ok(lab)
    }

    fn iperf(
        &self,
        client_ns: &str,
        server_ns: &str,
        server: Ipv4Addr,
        seconds: u32,
    ) -> anyhow::Result<f64> {
        let mut srv = in_ns(server_ns, "iperf3")
            .args(["-s", "-1", "-B", &server.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("iperf3 (apt-get install iperf3)")?;
        std::thread::sleep(Duration::from_millis(300));
        let out = in_ns(client_ns, "iperf3")
            .args(["-J", "-c", &server.to_string(), "-t", &seconds.to_string()])
            .output()?;
        let _ = srv.kill();
        let _ = srv.wait();
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .map(|b| b / 1e9)
            .context("iperf3 reported no throughput")
    }

    fn rtt(&self, client_ns: &str, to: Ipv4Addr) -> anyhow::Result<f64> {
        let out = in_ns(client_ns, "ping")
            .args(["-q", "-c", "200", "-i", "0.005", &to.to_string()])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        // rtt min/avg/max/mdev = 0.030/0.041/0.090/0.010 ms
        text.lines()
            .find_map(|l| {
                l.split_once(" = ")
                    .map(|(_, v)| v.split('/').nth(1).map(str::to_owned))
            })
            .flatten()
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("ping output: {text}"))
    }

    pub(super) fn measure(&self, rounds: u32, seconds: u32) -> anyhow::Result<Vec<PathFigure>> {
        let (a, b) = (&self.machines[0], &self.machines[1]);
        let mut host = (Vec::new(), Vec::new());
        let mut pod = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let mut one = |which: bool| -> anyhow::Result<()> {
                if which {
                    pod.0.push(self.iperf(&a.2, &b.2, b.3, seconds)?);
                    pod.1.push(self.rtt(&a.2, b.3)?);
                } else {
                    host.0.push(self.iperf(&a.0, &b.0, b.1, seconds)?);
                    host.1.push(self.rtt(&a.0, b.1)?);
                }
                Ok(())
            };
            let first = round % 2 == 0;
            one(first)?;
            one(!first)?;
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        Ok(vec![
            PathFigure {
                backend: self.backend.clone(),
                path: "host-to-host".into(),
                gbit_s: median(host.0),
                rtt_ms: median(host.1),
            },
            PathFigure {
                backend: self.backend.clone(),
                path: "pod-to-pod".into(),
                gbit_s: median(pod.0),
                rtt_ms: median(pod.1),
            },
        ])
    }
}
