//! IPv4 networks (`10.244.3.0/24`): parsing, containment, overlap, the
//! subnets of a network, and the store-key form flannel uses
//! (`10.244.3.0-24`).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 network: its first address and prefix length (host bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    len: u8,
}

/// Why a network did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IPv4 network like 10.244.0.0/16")]
    Syntax(String),
    #[error("{0:?}: the prefix length must be 0 to 32")]
    Length(String),
    #[error("{given:?} has host bits set (the network is {network})")]
    HostBits { given: String, network: Ipv4Net },
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

impl Ipv4Net {
    /// The network of `len` bits containing `addr` (host bits cleared).
    pub fn containing(addr: Ipv4Addr, len: u8) -> Ipv4Net {
        let len = len.min(32);
        Ipv4Net {
            addr: Ipv4Addr::from(u32::from(addr) & mask(len)),
            len,
        }
    }

    pub fn addr(self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length (`24` in `10.244.3.0/24`).
    pub fn prefix_len(self) -> u8 {
        self.len
    }

    /// The last address.
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !mask(self.len))
    }

    /// The `n`th address of the network (`nth(1)` is the gateway a pod
    /// bridge takes).
    pub fn nth(self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr).wrapping_add(n))
    }

    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.len) == u32::from(self.addr)
    }

    /// Whether `other` lies entirely inside this network.
    pub fn contains_net(self, other: Ipv4Net) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }

    pub fn overlaps(self, other: Ipv4Net) -> bool {
        self.contains_net(other) || other.contains_net(self)
    }

    /// How many subnets of length `len` the network holds (`None`: `len`
    /// is shorter than the network's own prefix).
    pub fn subnet_count(self, len: u8) -> Option<u64> {
        (len >= self.len && len <= 32).then(|| 1u64 << (len - self.len))
    }

    /// The `i`th subnet of length `len`.
    pub fn subnet(self, len: u8, i: u64) -> Ipv4Net {
        let step = 1u64 << (32 - u32::from(len));
        let addr = u64::from(u32::from(self.addr)) + i * step;
        Ipv4Net {
            addr: Ipv4Addr::from(addr as u32),
            len,
        }
    }

    /// The index of subnet `sub` (of its own length) in this network.
    pub fn subnet_index(self, sub: Ipv4Net) -> Option<u64> {
        self.contains_net(sub).then(|| {
            u64::from(u32::from(sub.addr) - u32::from(self.addr)) >> (32 - u32::from(sub.len))
        })
    }

    /// The store-key form: `10.244.3.0-24` (a `/` would nest keys).
    pub fn key_name(self) -> String {
        format!("{}-{}", self.addr, self.len)
    }

    /// Parses the store-key form back.
    pub fn from_key_name(name: &str) -> Option<Ipv4Net> {
        let (addr, len) = name.split_once('-')?;
        format!("{addr}/{len}").parse().ok()
    }
}

impl FromStr for Ipv4Net {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| CidrError::Syntax(s.to_owned()))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| CidrError::Syntax(s.to_owned()))?;
        let len: u8 = len.parse().map_err(|_| CidrError::Length(s.to_owned()))?;
        if len > 32 {
            return Err(CidrError::Length(s.to_owned()));
        }
        let network = Ipv4Net::containing(addr, len);
        if network.addr != addr {
            return Err(CidrError::HostBits {
                given: s.to_owned(),
                network,
            });
        }
        Ok(network)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_prints_and_refuses_host_bits() {
        let n: Ipv4Net = "10.244.0.0/16".parse().unwrap();
        assert_eq!(n.to_string(), "10.244.0.0/16");
        assert_eq!(n.subnet_count(24), Some(256));
        assert_eq!(n.subnet(24, 3).to_string(), "10.244.3.0/24");
        assert_eq!(n.subnet(24, 3).key_name(), "10.244.3.0-24");
        assert_eq!(
            Ipv4Net::from_key_name("10.244.3.0-24"),
            Some(n.subnet(24, 3))
        );
        assert_eq!(n.subnet(24, 3).nth(1), Ipv4Addr::new(10, 244, 3, 1));
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 244, 255, 255));
        assert!(matches!(
            "10.244.1.0/16".parse::<Ipv4Net>(),
            Err(CidrError::HostBits { .. })
        ));
        assert!("10.244.0.0".parse::<Ipv4Net>().is_err());
        assert!("10.244.0.0/33".parse::<Ipv4Net>().is_err());
        assert_eq!(n.subnet_count(8), None);
        let other: Ipv4Net = "10.0.0.0/8".parse().unwrap();
        assert!(n.overlaps(other) && other.overlaps(n));
        assert!(!n.overlaps("10.77.0.0/24".parse().unwrap()));
    }

    proptest! {
        #[test]
        fn every_subnet_lies_inside_and_indexes_back(a in any::<u32>(), len in 0u8..=24, extra in 0u8..=8, i in any::<u64>()) {
            let n = Ipv4Net::containing(Ipv4Addr::from(a), len);
            let sub_len = len + extra;
            let count = n.subnet_count(sub_len).unwrap();
            let i = i % count;
            let s = n.subnet(sub_len, i);
            prop_assert!(n.contains_net(s));
            prop_assert_eq!(n.subnet_index(s), Some(i));
            prop_assert_eq!(s.to_string().parse::<Ipv4Net>().unwrap(), s);
            prop_assert_eq!(Ipv4Net::from_key_name(&s.key_name()), Some(s));
        }
    }
}
