//! The lab's fixed addressing plan: which MAC, IP, tap and name machine N gets.
//!
//! Addresses are a pure function of the machine number so that the
//! provisioning server can hold static reservations before any VM exists,
//! and so that the first machine's address (the bootstrap peer) is known when
//! the cloud-config is written.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The bridge's address inside the lab namespace: the provisioning server.
pub const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// Prefix length of the lab network.
pub const PREFIX_LEN: u8 = 24;
/// Dynamic range for machines without a reservation (never used by lab VMs,
/// but the provisioning server needs one).
pub const DYNAMIC_RANGE: (Ipv4Addr, Ipv4Addr) =
    (Ipv4Addr::new(10, 77, 0, 200), Ipv4Addr::new(10, 77, 0, 250));
/// The bridge inside the lab namespace.
pub const BRIDGE: &str = "herdbr0";
/// Port of the store's client API on every machine.
pub const CLIENT_PORT: u16 = 2379;
/// Port of the store's peer API on every machine.
pub const PEER_PORT: u16 = 2380;
/// Port of the provisioning server's HTTP side.
pub const PXE_HTTP_PORT: u16 = 8080;
/// The provisioning server's HTTPS admin listener (publishing releases).
pub const PXE_ADMIN_PORT: u16 = 8443;
/// The highest machine number (addresses .11 to .199).
pub const MAX_MACHINE: u8 = 189;

/// A machine's number in the lab, 1-based: `m1`, `m2`, …
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MachineId(u8);

/// A machine name that is not `m<number>` within range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "machine {0:?} is not a lab machine name: expected m1 to m{MAX_MACHINE} (or just the number)"
)]
pub struct BadMachineName(pub String);

impl MachineId {
    /// Machine `n`, if `1 <= n <= MAX_MACHINE`.
    pub fn new(n: u8) -> Option<MachineId> {
        (1..=MAX_MACHINE).contains(&n).then_some(MachineId(n))
    }

    pub fn number(self) -> u8 {
        self.0
    }

    /// `52:54:00:77:00:NN` (QEMU's locally administered prefix).
    pub fn mac(self) -> String {
        format!("52:54:00:77:00:{:02x}", self.0)
    }

    /// `10.77.0.(10+N)`.
    pub fn ip(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, 10 + self.0)
    }

    /// The tap device inside the lab namespace.
    pub fn tap(self) -> String {
        format!("htap{}", self.0)
    }

    /// The store's client endpoint on this machine.
    pub fn client_endpoint(self) -> String {
        format!("{}:{CLIENT_PORT}", self.ip())
    }

    /// The store's peer endpoint on this machine.
    pub fn peer_endpoint(self) -> String {
        format!("{}:{PEER_PORT}", self.ip())
    }
}

impl fmt::Display for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}", self.0)
    }
}

impl FromStr for MachineId {
    type Err = BadMachineName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.strip_prefix('m').unwrap_or(s);
        digits
            .parse::<u8>()
            .ok()
            .and_then(MachineId::new)
            .ok_or_else(|| BadMachineName(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_machine_number() {
        let m = MachineId::new(3).unwrap();
        assert_eq!(m.mac(), "52:54:00:77:00:03");
        assert_eq!(m.ip(), Ipv4Addr::new(10, 77, 0, 13));
        assert_eq!(m.tap(), "htap3");
        assert_eq!(m.to_string(), "m3");
        assert_eq!(m.client_endpoint(), "10.77.0.13:2379");
    }

    #[test]
    fn names_parse_with_or_without_prefix_and_reject_junk() {
        assert_eq!("m2".parse(), Ok(MachineId(2)));
        assert_eq!("17".parse(), Ok(MachineId(17)));
        for bad in ["m0", "m190", "x1", "", "m", "m-1"] {
            assert_eq!(
                bad.parse::<MachineId>(),
                Err(BadMachineName(bad.to_owned()))
            );
        }
    }

    #[test]
    fn the_highest_machine_stays_below_the_dynamic_range() {
        let last = MachineId::new(MAX_MACHINE).unwrap();
        assert!(last.ip() < DYNAMIC_RANGE.0);
        assert!(MachineId::new(MAX_MACHINE + 1).is_none());
    }
}
