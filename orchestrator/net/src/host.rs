//! This machine's side of the network: which interface and address other
//! machines reach it on (refusing an address that is not on the interface,
//! as flannel does behind NAT), and what it sets up for its own subnet —
//! forwarding, the VXLAN device, the pod bridge `herd0` with the subnet's
//! first address, masquerade, `subnet.env`.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::cidr::Ipv4Net;
use crate::config::{Backend, ConfigError, NetworkConfig};
use crate::env_file::{self, FileError, Remembered};
use crate::masq;
use crate::netlink::{Kernel, KernelError, Link};

/// The pod bridge.
pub const BRIDGE: &str = "herd0";
/// VXLAN's encapsulation overhead (outer Ethernet, IP, UDP, VXLAN headers).
pub const VXLAN_OVERHEAD: u32 = 50;

/// The VXLAN device's name for `vni` (flannel's is `flannel.<VNI>`).
pub fn vxlan_name(vni: u32) -> String {
    format!("herd.{vni}")
}

/// Why the machine's side could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(
        "public address {ip} is not on interface {iface} (it has {have}): other machines could not reach this one there (behind NAT?)"
    )]
    NotOnInterface {
        ip: Ipv4Addr,
        iface: String,
        have: String,
    },
    #[error("no interface carries {0}: give --cluster-iface")]
    NoInterfaceFor(Ipv4Addr),
    #[error("interface {0} has no IPv4 address: give --public-ip")]
    NoAddress(String),
    #[error(transparent)]
    Overlap(#[from] ConfigError),
    #[error("writing {0}")]
    File(#[from] FileError),
}

/// Where this machine is reached.
#[derive(Debug, Clone)]
pub struct Uplink {
    pub name: String,
    pub link: Link,
    pub public_ip: Ipv4Addr,
    /// The machines' own network (the interface address's prefix).
    pub network: Ipv4Net,
}

/// Finds the cluster interface and checks the public address is on it.
pub async fn uplink(
    kernel: &Kernel,
    iface: Option<&str>,
    public_ip: Option<Ipv4Addr>,
) -> Result<Uplink, HostError> {
    let name = match (iface, public_ip) {
        (Some(name), _) => name.to_owned(),
        (None, Some(ip)) => kernel
            .link_with_address(ip)
            .await?
            .ok_or(HostError::NoInterfaceFor(ip))?,
        (None, None) => unreachable!("settings require an interface or an address"),
    };
    let link = kernel
        .link(&name)
        .await?
        .ok_or_else(|| KernelError::NoLink(name.clone()))?;
    let addrs = kernel.addresses(link.index).await?;
    let (ip, len) = match public_ip {
        Some(ip) => {
            *addrs
                .iter()
                .find(|(a, _)| *a == ip)
                .ok_or_else(|| HostError::NotOnInterface {
                    ip,
                    iface: name.clone(),
                    have: if addrs.is_empty() {
                        "no IPv4 address".into()
                    } else {
                        addrs
                            .iter()
                            .map(|(a, l)| format!("{a}/{l}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                })?
        }
        None => *addrs
            .first()
            .ok_or_else(|| HostError::NoAddress(name.clone()))?,
    };
    Ok(Uplink {
        name,
        link,
        public_ip: ip,
        network: Ipv4Net::containing(ip, len),
    })
}

/// The MTU pods get: the uplink's, less VXLAN's overhead when encapsulating.
pub fn pod_mtu(config: &NetworkConfig, uplink: &Uplink) -> u32 {
    match config.backend {
        Backend::HostGw => uplink.link.mtu,
        Backend::Vxlan { .. } => uplink.link.mtu.saturating_sub(VXLAN_OVERHEAD),
    }
}

/// What the local setup produced.
#[derive(Debug, Clone)]
pub struct Local {
    pub bridge: Link,
    /// The VXLAN device (vxlan only).
    pub vxlan: Option<Link>,
}

/// Where the machine writes its files.
#[derive(Debug, Clone)]
pub struct Files {
    pub subnet_env: PathBuf,
    pub remembered: PathBuf,
}

/// Sets up this machine for `subnet` (idempotent: run again after any
/// restart or change): forwarding, the VXLAN device, `herd0`, masquerade,
/// `subnet.env`, and the local record of the subnet.
pub async fn set_up(
    kernel: &Kernel,
    config: &NetworkConfig,
    uplink: &Uplink,
    subnet: Ipv4Net,
    machine_id: &str,
    files: &Files,
) -> Result<Local, HostError> {
    config.check_machine_network(
        &format!("the network of interface {}", uplink.name),
        uplink.network,
    )?;
    crate::netlink::enable_forwarding().await?;
    let mtu = pod_mtu(config, uplink);
    let vxlan = match config.backend {
        Backend::HostGw => None,
        Backend::Vxlan { vni, port } => {
            let name = vxlan_name(vni);
            let link = kernel
                .ensure_vxlan(&name, vni, port, uplink.public_ip, uplink.link.index, mtu)
                .await?;
            // The subnet's network address names this machine's VTEP: the
            // gateway other machines route this subnet through.
            kernel
                .set_only_address(link.index, subnet.addr(), 32)
                .await?;
            Some(link)
        }
    };
    let bridge = kernel.ensure_bridge(BRIDGE, mtu).await?;
    let removed = kernel
        .set_only_address(bridge.index, subnet.nth(1), subnet.prefix_len())
        .await?;
    if !removed.is_empty() {
        tracing::warn!(bridge = BRIDGE, ?removed, %subnet, "the pod bridge had other addresses; replaced them (pods on the old subnet lose their network)");
    }
    // Without masquerade pods still reach every other pod; only traffic
    // leaving the cluster network fails. That is no reason to take the
    // machine's pod network down: say so loudly, and in subnet.env.
    let ipmasq = match masq::install(config.network).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "no masquerade for pod traffic leaving the cluster network");
            false
        }
    };
    env_file::write_atomic(
        &files.subnet_env,
        env_file::subnet_env(config.network, subnet, mtu, ipmasq).as_bytes(),
    )
    .await?;
    env_file::write_remembered(
        &files.remembered,
        &Remembered {
            machine_id: machine_id.to_owned(),
            config: config.clone(),
            subnet,
            public_ip: uplink.public_ip,
        },
    )
    .await?;
    Ok(Local { bridge, vxlan })
}
