//! The pod network: each pod's infra container is created with Docker's
//! `none` network, and the kubelet plugs it into the machine's pod bridge
//! `herd0` itself — a veth pair whose inner end becomes the pod's `eth0`
//! with an address of this machine's subnet (from the net role's
//! `subnet.env`) and a default route via the bridge's address.
//!
//! Why not dockerd's own bridge (`--bip`/`-b herd0`): the agent does not
//! own dockerd's flags, dockerd fails to start when the bridge is not up
//! yet, and its allocations live in dockerd's state. Here the address is
//! a label of the infra container, so after an agent or dockerd restart
//! the kubelet reads the addresses in use back from Docker; and the veth
//! dies with the pod's network namespace, so nothing is left behind when
//! a pod's infra container goes.
//!
//! The plumbing runs `ip` (iproute2) inside the container's namespace via
//! `nsenter`: the namespace belongs to another process, and a short-lived
//! `ip` there is simpler and safer than moving a runtime thread into it.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;

/// The machine's pod subnet, as `subnet.env` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodSubnet {
    /// The bridge's address: the subnet's first address, pods' gateway.
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    pub mtu: u32,
}

/// Why the pod network is not usable, or a pod could not be plugged in.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(
        "the pod network is not ready: {path} is missing (is the cluster network role running?)"
    )]
    NoSubnet { path: String },
    #[error("{path}: {what}")]
    BadSubnet { path: String, what: String },
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no free address left in {0}")]
    Exhausted(String),
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("running `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
}

impl PodSubnet {
    /// Parses `subnet.env` (`FLANNEL_SUBNET=10.5.72.1/24`, `FLANNEL_MTU`).
    pub fn parse(text: &str, path: &str) -> Result<PodSubnet, NetworkError> {
        let bad = |what: String| NetworkError::BadSubnet {
            path: path.to_owned(),
            what,
        };
        let mut subnet = None;
        let mut mtu = 1500;
        for line in text.lines() {
            match line.trim().split_once('=') {
                Some(("FLANNEL_SUBNET", v)) => {
                    let (ip, len) = v
                        .split_once('/')
                        .ok_or_else(|| bad(format!("FLANNEL_SUBNET {v:?} is not A.B.C.D/N")))?;
                    let ip: Ipv4Addr = ip
                        .parse()
                        .map_err(|_| bad(format!("FLANNEL_SUBNET {v:?}: bad address")))?;
                    let len: u8 = len
                        .parse()
                        .ok()
                        .filter(|l| (8..=30).contains(l))
                        .ok_or_else(|| bad(format!("FLANNEL_SUBNET {v:?}: bad prefix length")))?;
                    subnet = Some((ip, len));
                }
                Some(("FLANNEL_MTU", v)) => {
                    mtu = v
                        .parse()
                        .map_err(|_| bad(format!("FLANNEL_MTU {v:?} is not a number")))?;
                }
                _ => {}
            }
        }
        let (gateway, prefix) = subnet.ok_or_else(|| bad("no FLANNEL_SUBNET line".into()))?;
        Ok(PodSubnet {
            gateway,
            prefix,
            mtu,
        })
    }

    /// Reads the subnet the net role wrote to `path`.
    pub async fn read(path: &Path) -> Result<PodSubnet, NetworkError> {
        let shown = path.display().to_string();
        match tokio::fs::read_to_string(path).await {
            Ok(text) => PodSubnet::parse(&text, &shown),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(NetworkError::NoSubnet { path: shown })
            }
            Err(source) => Err(NetworkError::Read {
                path: shown,
                source,
            }),
        }
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    /// `A.B.C.0/N`, the subnet itself (a Node's `podCIDR`).
    pub fn cidr(&self) -> String {
        format!(
            "{}/{}",
            Ipv4Addr::from(u32::from(self.gateway) & self.mask()),
            self.prefix
        )
    }

    /// Whether `ip` is a pod address of this subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.gateway) & self.mask()
    }

    /// The lowest address of the subnet that is neither the network, the
    /// gateway, the broadcast address nor in `used`.
    pub fn allocate(&self, used: &BTreeSet<Ipv4Addr>) -> Result<Ipv4Addr, NetworkError> {
        let network = u32::from(self.gateway) & self.mask();
        let broadcast = network | !self.mask();
        (network + 1..broadcast)
            .map(Ipv4Addr::from)
            .find(|ip| *ip != self.gateway && !used.contains(ip))
            .ok_or_else(|| NetworkError::Exhausted(format!("{}/{}", self.gateway, self.prefix)))
    }
}

/// The host end of a pod's veth (15 characters at most, from its uid).
pub fn host_ifname(pod_uid: &str) -> String {
    let id: String = pod_uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    format!("hv{id}")
}

async fn run(program: &str, args: &[&str]) -> Result<(), NetworkError> {
    let command = format!("{program} {}", args.join(" "));
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|source| NetworkError::Spawn {
            command: command.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetworkError::Command {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Plugs the network namespace of process `pid` into `bridge` with `ip`.
pub async fn attach(
    bridge: &str,
    subnet: &PodSubnet,
    pid: i64,
    ip: Ipv4Addr,
    host_if: &str,
) -> Result<(), NetworkError> {
    // A veth of an earlier attempt for this pod would block the name.
    let _ = run("ip", &["link", "del", host_if]).await;
    let (pid, mtu) = (pid.to_string(), subnet.mtu.to_string());
    run(
        "ip",
        &[
            "link", "add", host_if, "mtu", &mtu, "type", "veth", "peer", "name", "eth0", "mtu",
            &mtu, "netns", &pid,
        ],
    )
    .await?;
    run("ip", &["link", "set", host_if, "master", bridge, "up"]).await?;
    let cidr = format!("{ip}/{}", subnet.prefix);
    let gateway = subnet.gateway.to_string();
    let inside: [&[&str]; 4] = [
        &["link", "set", "lo", "up"],
        &["addr", "add", &cidr, "dev", "eth0"],
        &["link", "set", "eth0", "up"],
        &["route", "add", "default", "via", &gateway],
    ];
    for args in inside {
        let mut full = vec!["-t", pid.as_str(), "-n", "ip"];
        full.extend_from_slice(args);
        run("nsenter", &full).await?;
    }
    Ok(())
}

/// Removes a pod's host-side veth, if it is still there (the kernel
/// removes it with the pod's namespace; this covers a namespace kept
/// alive by something else).
pub async fn detach(host_if: &str) {
    let _ = run("ip", &["link", "del", host_if]).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_env_parses_and_allocates_around_the_gateway() {
        let s = PodSubnet::parse(
            "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
            "subnet.env",
        )
        .unwrap();
        assert_eq!(
            (s.gateway, s.prefix, s.mtu),
            ("10.5.72.1".parse().unwrap(), 24, 1450)
        );
        let mut used = BTreeSet::new();
        assert_eq!(s.allocate(&used).unwrap(), Ipv4Addr::new(10, 5, 72, 2));
        used.insert(Ipv4Addr::new(10, 5, 72, 2));
        assert_eq!(s.allocate(&used).unwrap(), Ipv4Addr::new(10, 5, 72, 3));
        assert!(s.contains(Ipv4Addr::new(10, 5, 72, 200)));
        assert!(!s.contains(Ipv4Addr::new(10, 5, 73, 2)));
        assert_eq!(s.cidr(), "10.5.72.0/24");
        let tiny = PodSubnet::parse("FLANNEL_SUBNET=10.0.0.1/30", "x").unwrap();
        let used: BTreeSet<_> = [Ipv4Addr::new(10, 0, 0, 2)].into();
        assert!(matches!(
            tiny.allocate(&used),
            Err(NetworkError::Exhausted(_))
        ));
    }

    #[test]
    fn bad_subnet_files_name_the_line() {
        for (text, why) in [
            ("FLANNEL_MTU=1450", "no FLANNEL_SUBNET"),
            ("FLANNEL_SUBNET=10.5.72.1", "A.B.C.D/N"),
            ("FLANNEL_SUBNET=10.5.72.1/40", "prefix"),
            (
                "FLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=big",
                "FLANNEL_MTU",
            ),
        ] {
            let e = PodSubnet::parse(text, "/run/flannel/subnet.env")
                .unwrap_err()
                .to_string();
            assert!(e.contains(why) && e.contains("subnet.env"), "{text}: {e}");
        }
    }

    #[test]
    fn host_interface_names_fit_the_kernel_limit() {
        let n = host_ifname("3f2a9c1e-0b4d-4c2a-9e1f-1234567890ab");
        assert_eq!(n, "hv3f2a9c1e0b4d");
        assert!(n.len() <= 15);
    }
}
