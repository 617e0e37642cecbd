//! What the DHCP server serves: interface, pools, reservations, mode; parsed and checked at the edge.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::boot_file::BootConfig;

/// A configuration value that does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("`{0}` is not a MAC address (expected six hex bytes like 52:54:00:12:34:56)")]
    Mac(String),
    #[error("`{0}` is not an IPv4 subnet (expected ADDRESS/PREFIX like 10.0.0.0/24)")]
    Subnet(String),
    #[error("range {start}-{end} is empty or reversed")]
    EmptyRange { start: Ipv4Addr, end: Ipv4Addr },
    #[error("range {start}-{end} is not inside subnet {subnet}")]
    RangeOutsideSubnet {
        start: Ipv4Addr,
        end: Ipv4Addr,
        subnet: Subnet,
    },
    #[error("server address {server} is not inside any pool's subnet (local pool needed)")]
    NoLocalPool { server: Ipv4Addr },
    #[error("reservation {mac} -> {ip} is outside every pool's subnet")]
    ReservationOutsidePools { mac: MacAddr, ip: Ipv4Addr },
    #[error("address {ip} is reserved twice ({first} and {second})")]
    DuplicateReservation {
        ip: Ipv4Addr,
        first: MacAddr,
        second: MacAddr,
    },
    #[error("lease time must be at least 60 s, got {0:?}")]
    LeaseTime(Duration),
}

/// An Ethernet hardware address (DHCP `chaddr` with htype 1, hlen 6).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = ConfigError;
    /// Accepts `:` or `-` separators, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ConfigError::Mac(s.to_owned());
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(err());
        }
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(parts) {
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        Ok(MacAddr(mac))
    }
}

/// An IPv4 network: address with prefix length, host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    /// The subnet containing `addr` with `prefix` bits of network.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Subnet, ConfigError> {
        if prefix > 30 {
            return Err(ConfigError::Subnet(format!("{addr}/{prefix}")));
        }
        let mask = Self::mask_bits(prefix);
        Ok(Subnet {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }

    fn mask_bits(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        }
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(Self::mask_bits(self.prefix))
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !Self::mask_bits(self.prefix))
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & Self::mask_bits(self.prefix) == u32::from(self.network)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ConfigError::Subnet(s.to_owned());
        let (addr, prefix) = s.split_once('/').ok_or_else(err)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| err())?;
        let prefix: u8 = prefix.parse().map_err(|_| err())?;
        Subnet::new(addr, prefix).map_err(|_| err())
    }
}

/// Addresses handed out on one subnet: the local one, or one behind a relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub subnet: Subnet,
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
    /// Option 3; for a relayed subnet this is normally the relay's address.
    pub router: Option<Ipv4Addr>,
}

impl Pool {
    /// A pool of `start..=end` inside `subnet`, without a router.
    pub fn new(subnet: Subnet, start: Ipv4Addr, end: Ipv4Addr) -> Result<Pool, ConfigError> {
        if u32::from(start) > u32::from(end) {
            return Err(ConfigError::EmptyRange { start, end });
        }
        let usable =
            |a: Ipv4Addr| subnet.contains(a) && a != subnet.network() && a != subnet.broadcast();
        if !usable(start) || !usable(end) {
            return Err(ConfigError::RangeOutsideSubnet { start, end, subnet });
        }
        Ok(Pool {
            subnet,
            start,
            end,
            router: None,
        })
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        (u32::from(self.start)..=u32::from(self.end)).contains(&u32::from(addr))
    }

    pub fn size(&self) -> u32 {
        u32::from(self.end) - u32::from(self.start) + 1
    }
}

/// Whether this server owns the addresses or only adds PXE boot information.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Hands out addresses from the pools (and PXE information with them).
    #[default]
    Authoritative,
    /// proxyDHCP (PXE 2.1, as pixiecore): another server owns addresses;
    /// answer PXE clients only with boot information, on 67 and 4011.
    Proxy,
}

/// Everything the DHCP server needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The only interface the server listens and answers on (SO_BINDTODEVICE).
    pub interface: String,
    /// Our address on that interface: server identifier (option 54), default next-server.
    pub server_ip: Ipv4Addr,
    /// The local pool (containing `server_ip`) first; further pools serve relayed subnets.
    pub pools: Vec<Pool>,
    /// Option 6.
    pub dns: Vec<Ipv4Addr>,
    /// Option 15.
    pub domain: Option<String>,
    pub lease_time: Duration,
    /// Fixed addresses by MAC; they are never given to another client.
    pub reservations: HashMap<MacAddr, Ipv4Addr>,
    pub mode: Mode,
    pub boot: BootConfig,
    /// Where `dhcp-leases.jsonl` lives.
    pub state_dir: PathBuf,
    /// How long a DECLINEd address stays out of the pool.
    pub decline_quarantine: Duration,
}

impl Config {
    /// A configuration with one local pool and defaults for the rest
    /// (1 h leases, authoritative, boot information from `server_ip`).
    pub fn new(interface: &str, server_ip: Ipv4Addr, pool: Pool, state_dir: PathBuf) -> Config {
        Config {
            interface: interface.to_owned(),
            server_ip,
            pools: vec![pool],
            dns: Vec::new(),
            domain: None,
            lease_time: Duration::from_secs(3600),
            reservations: HashMap::new(),
            mode: Mode::Authoritative,
            boot: BootConfig::new(server_ip, ""),
            state_dir,
            decline_quarantine: Duration::from_secs(600),
        }
    }

    /// Checks the parts that must agree with each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.lease_time < Duration::from_secs(60) {
            return Err(ConfigError::LeaseTime(self.lease_time));
        }
        if self.mode == Mode::Authoritative
            && !self.pools.iter().any(|p| p.subnet.contains(self.server_ip))
        {
            return Err(ConfigError::NoLocalPool {
                server: self.server_ip,
            });
        }
        let mut seen: HashMap<Ipv4Addr, MacAddr> = HashMap::new();
        for (&mac, &ip) in &self.reservations {
            if !self.pools.iter().any(|p| p.subnet.contains(ip)) {
                return Err(ConfigError::ReservationOutsidePools { mac, ip });
            }
            if let Some(&first) = seen.get(&ip) {
                let (first, second) = if first < mac {
                    (first, mac)
                } else {
                    (mac, first)
                };
                return Err(ConfigError::DuplicateReservation { ip, first, second });
            }
            seen.insert(ip, mac);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_and_rejects_garbage() {
        let mac: MacAddr = "52:54:00:AB:cd:0f".parse().unwrap();
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:0f");
        assert_eq!("52-54-00-ab-cd-0f".parse::<MacAddr>().unwrap(), mac);
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:11",
            "5:54:00:ab:cd:0f",
            "zz:54:00:ab:cd:0f",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn subnet_math() {
        let s: Subnet = "10.1.2.3/24".parse().unwrap();
        assert_eq!(s.network(), Ipv4Addr::new(10, 1, 2, 0));
        assert_eq!(s.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 1, 2, 255));
        assert!(s.contains(Ipv4Addr::new(10, 1, 2, 200)));
        assert!(!s.contains(Ipv4Addr::new(10, 1, 3, 1)));
        assert!("10.1.2.3".parse::<Subnet>().is_err());
        assert!("10.1.2.3/33".parse::<Subnet>().is_err());
    }

    #[test]
    fn pool_rejects_bad_ranges() {
        let s: Subnet = "10.1.2.0/24".parse().unwrap();
        assert!(Pool::new(s, "10.1.2.9".parse().unwrap(), "10.1.2.8".parse().unwrap()).is_err());
        assert!(Pool::new(s, "10.1.2.0".parse().unwrap(), "10.1.2.8".parse().unwrap()).is_err());
        assert!(Pool::new(s, "10.1.2.10".parse().unwrap(), "10.1.3.8".parse().unwrap()).is_err());
        let p = Pool::new(
            s,
            "10.1.2.10".parse().unwrap(),
            "10.1.2.19".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(p.size(), 10);
    }
}
