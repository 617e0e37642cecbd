//! The cluster network's config, `/herd/network/config`, in flannel's JSON
//! (`{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan"}}`),
//! so a flannel config works unchanged. Set once per cluster: the network,
//! the subnet length and the backend cannot change under running
//! machines (their leases, routes and devices depend on them).

use std::net::Ipv4Addr;

use herd_client::keys::Prefix;
use herd_client::kit::Resource;
use serde::{Deserialize, Serialize};

use crate::cidr::Ipv4Net;

/// The config's object name under [`CONFIG_PREFIX`].
pub const CONFIG_NAME: &str = "config";
/// Where the config lives: the network prefix itself (`/herd/network/config`).
pub const CONFIG_PREFIX: Prefix = herd_client::keys::NETWORK;

/// VXLAN defaults (flannel's): VNI 1, the Linux VXLAN port 8472.
pub const DEFAULT_VNI: u32 = 1;
pub const DEFAULT_VXLAN_PORT: u16 = 8472;

/// How packets reach another machine's subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Type", deny_unknown_fields)]
pub enum Backend {
    /// A route per subnet via the owning machine's address: no
    /// encapsulation, needs one L2 segment.
    #[serde(rename = "host-gw")]
    HostGw,
    /// A VXLAN device and a route, neighbour and FDB entry per subnet: for
    /// machines that do not share an L2 segment.
    #[serde(rename = "vxlan")]
    Vxlan {
        #[serde(rename = "VNI", default = "default_vni")]
        vni: u32,
        #[serde(rename = "Port", default = "default_port")]
        port: u16,
    },
}

fn default_vni() -> u32 {
    DEFAULT_VNI
}

fn default_port() -> u16 {
    DEFAULT_VXLAN_PORT
}

impl Backend {
    pub fn kind(self) -> BackendKind {
        match self {
            Backend::HostGw => BackendKind::HostGw,
            Backend::Vxlan { .. } => BackendKind::Vxlan,
        }
    }
}

/// A backend's name, as the CLI and the leases carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum BackendKind {
    #[serde(rename = "host-gw")]
    #[value(name = "host-gw")]
    HostGw,
    #[serde(rename = "vxlan")]
    #[value(name = "vxlan")]
    Vxlan,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::HostGw => "host-gw",
            BackendKind::Vxlan => "vxlan",
        })
    }
}

/// The cluster network, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    #[serde(rename = "Network")]
    pub network: Ipv4Net,
    #[serde(rename = "SubnetLen", default = "default_subnet_len")]
    pub subnet_len: u8,
    /// First subnet handed out (default: the network's second subnet, as
    /// flannel: the first one holds the network's own address).
    #[serde(rename = "SubnetMin", default, skip_serializing_if = "Option::is_none")]
    pub subnet_min: Option<Ipv4Addr>,
    /// Last subnet handed out (default: the network's last).
    #[serde(rename = "SubnetMax", default, skip_serializing_if = "Option::is_none")]
    pub subnet_max: Option<Ipv4Addr>,
    #[serde(rename = "Backend", default = "default_backend")]
    pub backend: Backend,
}

fn default_subnet_len() -> u8 {
    24
}

fn default_backend() -> Backend {
    Backend::HostGw
}

impl Default for NetworkConfig {
    /// `10.244.0.0/16` in `/24`s over host-gw.
    fn default() -> Self {
        NetworkConfig {
            network: Ipv4Net::containing(Ipv4Addr::new(10, 244, 0, 0), 16),
            subnet_len: 24,
            subnet_min: None,
            subnet_max: None,
            backend: Backend::HostGw,
        }
    }
}

impl Resource for NetworkConfig {
    const PREFIX: Prefix = CONFIG_PREFIX;
    const KIND: &'static str = "network config";
}

/// Why a config is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "SubnetLen {subnet_len} does not fit network {network}: it must be longer than /{} and at most /{MAX_SUBNET_LEN}",
        network.prefix_len()
    )]
    SubnetLen { network: Ipv4Net, subnet_len: u8 },
    #[error("{field} {addr} is not a /{subnet_len} subnet inside {network}")]
    Bound {
        field: &'static str,
        addr: Ipv4Addr,
        network: Ipv4Net,
        subnet_len: u8,
    },
    #[error("SubnetMin {min} is after SubnetMax {max}")]
    Range { min: Ipv4Addr, max: Ipv4Addr },
    #[error("Backend.VNI {0} is not a VXLAN network identifier (1 to 16777215)")]
    Vni(u32),
    #[error("Backend.Port must not be 0")]
    Port,
    #[error(
        "the cluster network's {field} cannot change under running machines (it is {old}; asked for {new}): their leases, routes and devices depend on it"
    )]
    Immutable {
        field: &'static str,
        old: String,
        new: String,
    },
    #[error(
        "network {network} overlaps {what} {other}: pod and machine addresses would be ambiguous"
    )]
    Overlap {
        network: Ipv4Net,
        what: String,
        other: String,
    },
}

/// The longest subnet length: a /28 still holds a bridge and 13 pods.
pub const MAX_SUBNET_LEN: u8 = 28;

impl NetworkConfig {
    /// Checks the config on its own.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.subnet_len <= self.network.prefix_len() || self.subnet_len > MAX_SUBNET_LEN {
            return Err(ConfigError::SubnetLen {
                network: self.network,
                subnet_len: self.subnet_len,
            });
        }
        for (field, addr) in [
            ("SubnetMin", self.subnet_min),
            ("SubnetMax", self.subnet_max),
        ] {
            if let Some(addr) = addr {
                let sub = Ipv4Net::containing(addr, self.subnet_len);
                if sub.addr() != addr || !self.network.contains_net(sub) {
                    return Err(ConfigError::Bound {
                        field,
                        addr,
                        network: self.network,
                        subnet_len: self.subnet_len,
                    });
                }
            }
        }
        let (min, max) = self.range();
        if min > max {
            return Err(ConfigError::Range {
                min: self.network.subnet(self.subnet_len, min).addr(),
                max: self.network.subnet(self.subnet_len, max).addr(),
            });
        }
        if let Backend::Vxlan { vni, port } = self.backend {
            if vni == 0 || vni > 0x00ff_ffff {
                return Err(ConfigError::Vni(vni));
            }
            if port == 0 {
                return Err(ConfigError::Port);
            }
        }
        Ok(())
    }

    /// The indices (in the network) of the first and last subnet handed out.
    pub fn range(&self) -> (u64, u64) {
        let count = self.network.subnet_count(self.subnet_len).unwrap_or(1);
        let index = |a: Ipv4Addr| {
            self.network
                .subnet_index(Ipv4Net::containing(a, self.subnet_len))
                .unwrap_or(0)
        };
        let min = self.subnet_min.map_or(1.min(count - 1), index);
        let max = self.subnet_max.map_or(count - 1, index);
        (min, max)
    }

    /// How many subnets can be handed out.
    pub fn capacity(&self) -> u64 {
        let (min, max) = self.range();
        (max + 1).saturating_sub(min)
    }

    /// Whether `subnet` is one this config hands out.
    pub fn allows(&self, subnet: Ipv4Net) -> bool {
        let (min, max) = self.range();
        subnet.prefix_len() == self.subnet_len
            && self
                .network
                .subnet_index(subnet)
                .is_some_and(|i| (min..=max).contains(&i))
    }

    /// Whether replacing `self` (stored) by `new` is allowed: only the
    /// subnet bounds may change.
    pub fn check_change(&self, new: &NetworkConfig) -> Result<(), ConfigError> {
        let immutable = |field, old: String, new: String| {
            if old == new {
                Ok(())
            } else {
                Err(ConfigError::Immutable { field, old, new })
            }
        };
        immutable("Network", self.network.to_string(), new.network.to_string())?;
        immutable(
            "SubnetLen",
            self.subnet_len.to_string(),
            new.subnet_len.to_string(),
        )?;
        immutable(
            "Backend",
            serde_json::to_string(&self.backend).expect("serializes"),
            serde_json::to_string(&new.backend).expect("serializes"),
        )
    }

    /// Refuses a pod network overlapping the machines' own network.
    pub fn check_machine_network(&self, what: &str, machines: Ipv4Net) -> Result<(), ConfigError> {
        if self.network.overlaps(machines) {
            return Err(ConfigError::Overlap {
                network: self.network,
                what: what.to_owned(),
                other: machines.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> NetworkConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_flannel_config_reads_as_is() {
        let c = parse(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#);
        assert_eq!(c.subnet_len, 24);
        assert_eq!(c.backend, Backend::Vxlan { vni: 1, port: 8472 });
        c.validate().unwrap();
        assert_eq!(c.range(), (1, 255));
        assert_eq!(c.capacity(), 255);
        let c = parse(
            r#"{"Network":"10.5.0.0/16","SubnetLen":20,"SubnetMin":"10.5.32.0","SubnetMax":"10.5.64.0","Backend":{"Type":"host-gw"}}"#,
        );
        c.validate().unwrap();
        assert_eq!(c.range(), (2, 4));
        assert!(c.allows("10.5.48.0/20".parse().unwrap()));
        assert!(!c.allows("10.5.16.0/20".parse().unwrap()));
        assert!(!c.allows("10.5.48.0/24".parse().unwrap()));
        let e = serde_json::from_str::<NetworkConfig>(r#"{"Network":"10.5.0.0/16","Bakend":{}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Bakend"), "{e}");
        let e = serde_json::from_str::<NetworkConfig>(
            r#"{"Network":"10.5.0.0/16","Backend":{"Type":"udp"}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("udp"), "{e}");
    }

    #[test]
    fn bad_configs_name_what_is_wrong() {
        let mut c = parse(r#"{"Network":"10.244.0.0/24","SubnetLen":24}"#);
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("SubnetLen 24 does not fit network 10.244.0.0/24"),
            "{e}"
        );
        c.subnet_len = 26;
        c.validate().unwrap();
        assert_eq!(c.capacity(), 3);
        c.subnet_min = Some("10.244.0.65".parse().unwrap());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("SubnetMin 10.244.0.65"), "{e}");
        c.subnet_min = Some("10.244.0.192".parse().unwrap());
        c.subnet_max = Some("10.244.0.64".parse().unwrap());
        assert!(matches!(c.validate(), Err(ConfigError::Range { .. })));
        let v = NetworkConfig {
            backend: Backend::Vxlan {
                vni: 1 << 24,
                port: 8472,
            },
            ..NetworkConfig::default()
        };
        assert!(v.validate().unwrap_err().to_string().contains("VNI"));
    }

    #[test]
    fn network_subnet_length_and_backend_are_fixed_bounds_are_not() {
        let old = NetworkConfig::default();
        let mut new = old.clone();
        new.subnet_max = Some("10.244.100.0".parse().unwrap());
        old.check_change(&new).unwrap();
        new.backend = Backend::Vxlan { vni: 1, port: 8472 };
        let e = old.check_change(&new).unwrap_err().to_string();
        assert!(e.contains("Backend cannot change"), "{e}");
        let mut new = old.clone();
        new.network = "10.245.0.0/16".parse().unwrap();
        let e = old.check_change(&new).unwrap_err().to_string();
        assert!(
            e.contains("Network cannot change") && e.contains("10.245.0.0/16"),
            "{e}"
        );
        let e = old
            .check_machine_network(
                "the network of interface eth0",
                "10.0.0.0/8".parse().unwrap(),
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("overlaps the network of interface eth0 10.0.0.0/8"),
            "{e}"
        );
    }
}
