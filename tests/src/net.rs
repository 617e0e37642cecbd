//! Pods for the cluster network's tests: a namespace plugged into a
//! machine's pod bridge `herd0` with an address from that machine's
//! subnet (read from its `subnet.env`, as a container runtime would), and
//! pings between them.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use crate::netns::Netns;
use crate::wait;

/// What a machine's `subnet.env` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetEnv {
    /// `FLANNEL_SUBNET`'s address: the bridge's (the subnet's first).
    pub gateway: Ipv4Addr,
    pub len: u8,
    pub mtu: u32,
}

impl SubnetEnv {
    /// The subnet's network address (`10.244.3.0`).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.gateway) - 1)
    }

    /// The subnet as `ip route` prints it (`10.244.3.0/24`).
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.network(), self.len)
    }
}

/// Reads `path` (`None` while it does not exist or is incomplete).
pub fn read_env(path: &Path) -> Option<SubnetEnv> {
    let text = std::fs::read_to_string(path).ok()?;
    let var = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
    };
    let subnet = var("FLANNEL_SUBNET")?;
    let (gw, len) = subnet.split_once('/')?;
    Some(SubnetEnv {
        gateway: gw.parse().ok()?,
        len: len.parse().ok()?,
        mtu: var("FLANNEL_MTU")?.parse().ok()?,
    })
}

/// Waits for `path` to exist and returns it.
pub fn wait_env(path: &Path) -> SubnetEnv {
    wait::until(
        &format!("{} to be written", path.display()),
        Duration::from_secs(60),
        Duration::from_millis(200),
        || read_env(path),
    )
}

/// A pod: its own namespace, `eth0` on the machine's `herd0`.
#[derive(Debug)]
pub struct Pod {
    pub ns: Netns,
    pub addr: Ipv4Addr,
}

impl Pod {
    /// Plugs a pod into `machine`'s `herd0` with address number `host` of
    /// the subnet `env` describes, and a default route via the bridge.
    pub fn plug(machine: &Netns, env: SubnetEnv, host: u32) -> Pod {
        let ns = Netns::new();
        let outer = machine.ifname("vpod");
        machine.ip(&[
            "link",
            "add",
            &outer,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ]);
        machine.ip(&["link", "set", &outer, "master", "herd0", "up"]);
        let addr = Ipv4Addr::from(u32::from(env.network()) + host);
        ns.ip(&["addr", "add", &format!("{addr}/{}", env.len), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "mtu", &env.mtu.to_string(), "up"]);
        ns.ip(&["route", "add", "default", "via", &env.gateway.to_string()]);
        Pod { ns, addr }
    }

    /// One ping to `to` (one second to answer).
    pub fn ping(&self, to: Ipv4Addr) -> bool {
        ping_from(&self.ns, to)
    }

    /// Waits until `to` answers this pod.
    pub fn reaches(&self, to: Ipv4Addr, timeout: Duration) {
        wait::until(
            &format!("pod {} to reach {to}", self.addr),
            timeout,
            Duration::from_millis(100),
            || self.ping(to).then_some(()),
        );
    }
}

/// One ping from namespace `ns` to `to`.
pub fn ping_from(ns: &Netns, to: Ipv4Addr) -> bool {
    ns.command("ping")
        .args(["-c1", "-W1", &to.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `ip route show DST` in `ns` (empty when there is none).
pub fn route_to(ns: &Netns, dst: &str) -> String {
    String::from_utf8_lossy(&ns.ip(&["route", "show", dst]).stdout)
        .trim()
        .to_owned()
}

/// The flags that make namespace member `i` a machine of the cluster
/// network on `peer0`, writing its subnet.env at `env`.
pub fn machine_flags(env: &Path, i: usize) -> Vec<String> {
    vec![
        "--cluster-iface".into(),
        "peer0".into(),
        "--machine-id".into(),
        format!("machine-{i}"),
        "--subnet-env".into(),
        env.display().to_string(),
    ]
}

/// Configures the cluster network as host-gw (`herd net config set`).
pub fn set_host_gw(cluster: &crate::store::Cluster) {
    let eps = cluster.endpoints();
    let out = cluster.herd(&[
        "net",
        "config",
        "set",
        "--endpoints",
        &eps,
        "--backend",
        "host-gw",
    ]);
    assert!(
        out.status.success(),
        "herd net config set: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
