//! Subnet leases as the store keeps them, and the choice of a subnet for a
//! machine.
//!
//! - `/herd/network/subnets/10.244.3.0-24` ([`SubnetLease`]): who holds
//!   the subnet and how to reach it, attached to a store lease of 24 h
//!   that its machine renews — or to none: a *reservation*, pinned to a
//!   machine id until an operator removes it (flannel's reservations).
//! - `/herd/network/owners/<machine-id>` ([`Owner`]): the subnet a
//!   machine last held, kept without a TTL. It is what makes a subnet
//!   sticky beyond its lease: a machine back after any outage asks for
//!   the same subnet first, and no other machine takes that subnet while
//!   any other is free, nor at all while its owner is still registered
//!   under `/herd/machines/` (flannel #1289: a host back after expiry found
//!   its subnet given away).

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use herd_client::keys::Prefix;
use herd_client::kit::Resource;
use serde::{Deserialize, Serialize};

use crate::cidr::Ipv4Net;
use crate::config::{BackendKind, NetworkConfig};

/// Subnet leases and reservations, by subnet (`10.244.3.0-24`).
pub const SUBNETS: Prefix = Prefix::new("/herd/network/subnets/");
/// The subnet each machine last held, by machine id.
pub const OWNERS: Prefix = Prefix::new("/herd/network/owners/");

/// One machine's hold on a subnet (flannel's lease value, plus the machine id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetLease {
    #[serde(rename = "MachineID")]
    pub machine_id: String,
    /// The address other machines send this subnet's traffic to. Unset in
    /// a reservation no machine has taken up yet.
    #[serde(rename = "PublicIP", default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<Ipv4Addr>,
    #[serde(
        rename = "BackendType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_type: Option<BackendKind>,
    #[serde(
        rename = "BackendData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_data: Option<BackendData>,
}

/// What a backend needs to know about the remote end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendData {
    /// The MAC of the machine's VXLAN device (vxlan only).
    #[serde(rename = "VtepMAC")]
    pub vtep_mac: String,
}

impl Resource for SubnetLease {
    const PREFIX: Prefix = SUBNETS;
    const KIND: &'static str = "subnet lease";
}

/// The subnet a machine last held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    #[serde(rename = "Subnet")]
    pub subnet: Ipv4Net,
}

impl Resource for Owner {
    const PREFIX: Prefix = OWNERS;
    const KIND: &'static str = "subnet owner";
}

/// The store key of `subnet`'s lease.
pub fn subnet_key(subnet: Ipv4Net) -> String {
    SUBNETS.key(&subnet.key_name())
}

/// What the store holds, as the allocation sees it.
#[derive(Debug, Clone, Default)]
pub struct Holdings {
    /// Every subnet with a lease or reservation, and its holder.
    pub leases: BTreeMap<Ipv4Net, String>,
    /// Every machine's last subnet, and the revision of that record.
    pub owners: BTreeMap<String, (Ipv4Net, i64)>,
    /// Machines registered under `/herd/machines/`.
    pub registered: HashSet<String>,
}

/// The subnet a machine should take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// A lease or reservation already names this machine.
    Held(Ipv4Net),
    /// Claim this free subnet; `reclaim` names every gone machine that
    /// remembers it, with the revision of its owner record (the claim
    /// checks each); empty for a subnet nobody remembers.
    Claim {
        subnet: Ipv4Net,
        reclaim: Vec<(String, i64)>,
    },
    /// No subnet left in the network.
    Full,
}

/// Chooses the subnet for `machine`: the one it holds; else the one it
/// used last (`preferred`: its local record, then its owner record) if
/// free; else the lowest free subnet nobody used; else the lowest free
/// subnet whose last owner is no longer registered.
pub fn choose(
    config: &NetworkConfig,
    machine: &str,
    preferred: Option<Ipv4Net>,
    held: &Holdings,
) -> Choice {
    if let Some((subnet, _)) = held
        .leases
        .iter()
        .find(|(s, m)| *m == machine && config.allows(**s))
    {
        return Choice::Held(*subnet);
    }
    // Several machines may remember one subnet (a reservation moved it):
    // it is reclaimable only when every one of them is gone.
    let mut remembered: BTreeMap<Ipv4Net, Vec<(&String, i64)>> = BTreeMap::new();
    for (m, (s, rev)) in held.owners.iter().filter(|(m, _)| *m != machine) {
        remembered.entry(*s).or_default().push((m, *rev));
    }
    let own = held.owners.get(machine).map(|(s, _)| *s);
    for subnet in preferred.into_iter().chain(own) {
        if config.allows(subnet)
            && !held.leases.contains_key(&subnet)
            && !remembered.contains_key(&subnet)
        {
            return Choice::Claim {
                subnet,
                reclaim: Vec::new(),
            };
        }
    }
    let (min, max) = config.range();
    let free = (min..=max)
        .map(|i| config.network.subnet(config.subnet_len, i))
        .filter(|s| !held.leases.contains_key(s));
    let mut reclaimable = None;
    for subnet in free {
        match remembered.get(&subnet) {
            None => {
                return Choice::Claim {
                    subnet,
                    reclaim: Vec::new(),
                };
            }
            Some(owners)
                if reclaimable.is_none()
                    && owners.iter().all(|(m, _)| !held.registered.contains(*m)) =>
            {
                reclaimable = Some(Choice::Claim {
                    subnet,
                    reclaim: owners.iter().map(|(m, rev)| ((*m).clone(), *rev)).collect(),
                });
            }
            Some(_) => {}
        }
    }
    reclaimable.unwrap_or(Choice::Full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn small() -> NetworkConfig {
        // 10.9.0.0/24 in /26s: subnets 1..=3 are handed out.
        serde_json::from_str(r#"{"Network":"10.9.0.0/24","SubnetLen":26}"#).unwrap()
    }

    #[test]
    fn a_machine_keeps_its_subnet_and_others_take_the_lowest_unused() {
        let c = small();
        let mut h = Holdings::default();
        assert_eq!(
            choose(&c, "a", None, &h),
            Choice::Claim {
                subnet: net("10.9.0.64/26"),
                reclaim: Vec::new()
            }
        );
        h.leases.insert(net("10.9.0.64/26"), "a".into());
        h.owners.insert("a".into(), (net("10.9.0.64/26"), 5));
        assert_eq!(choose(&c, "a", None, &h), Choice::Held(net("10.9.0.64/26")));
        assert_eq!(
            choose(&c, "b", None, &h),
            Choice::Claim {
                subnet: net("10.9.0.128/26"),
                reclaim: Vec::new()
            }
        );
        // a's lease expired: a gets it back; b does not take it while
        // another subnet is free.
        h.leases.clear();
        assert_eq!(
            choose(&c, "a", None, &h),
            Choice::Claim {
                subnet: net("10.9.0.64/26"),
                reclaim: Vec::new()
            }
        );
        assert_eq!(
            choose(&c, "b", None, &h),
            Choice::Claim {
                subnet: net("10.9.0.128/26"),
                reclaim: Vec::new()
            }
        );
        // A local record wins over the owner record.
        assert_eq!(
            choose(&c, "a", Some(net("10.9.0.192/26")), &h),
            Choice::Claim {
                subnet: net("10.9.0.192/26"),
                reclaim: Vec::new()
            }
        );
    }

    #[test]
    fn a_subnet_is_reclaimed_only_from_a_gone_machine_and_only_when_needed() {
        let c = small();
        let mut h = Holdings::default();
        h.leases.insert(net("10.9.0.128/26"), "b".into());
        h.leases.insert(net("10.9.0.192/26"), "c".into());
        h.owners.insert("a".into(), (net("10.9.0.64/26"), 7));
        h.registered.insert("a".into());
        // a's lease expired but a is still registered: d must wait.
        assert_eq!(choose(&c, "d", None, &h), Choice::Full);
        h.registered.clear();
        assert_eq!(
            choose(&c, "d", None, &h),
            Choice::Claim {
                subnet: net("10.9.0.64/26"),
                reclaim: vec![("a".into(), 7)]
            }
        );
        // A reservation for e is e's; nobody else's.
        h.leases.insert(net("10.9.0.64/26"), "e".into());
        assert_eq!(choose(&c, "e", None, &h), Choice::Held(net("10.9.0.64/26")));
        assert_eq!(choose(&c, "d", None, &h), Choice::Full);
    }

    proptest! {
        /// Whatever the store holds, a claim is free, allowed, and never
        /// taken from a registered machine.
        #[test]
        fn a_claim_never_takes_a_held_or_registered_subnet(
            leased in proptest::collection::btree_map(1u64..4, 0u8..5, 0..4),
            owned in proptest::collection::btree_map(0u8..5, 1u64..4, 0..5),
            registered in proptest::collection::hash_set(0u8..5, 0..5),
            me in 0u8..5,
        ) {
            let c = small();
            let s = |i: u64| c.network.subnet(26, i);
            let h = Holdings {
                leases: leased.iter().map(|(i, m)| (s(*i), m.to_string())).collect(),
                owners: owned.iter().map(|(m, i)| (m.to_string(), (s(*i), 1))).collect(),
                registered: registered.iter().map(u8::to_string).collect(),
            };
            match choose(&c, &me.to_string(), None, &h) {
                Choice::Held(sub) => prop_assert_eq!(h.leases.get(&sub), Some(&me.to_string())),
                Choice::Claim { subnet, reclaim } => {
                    prop_assert!(c.allows(subnet));
                    prop_assert!(!h.leases.contains_key(&subnet));
                    let mut others: Vec<&String> = h
                        .owners
                        .iter()
                        .filter(|(m, (sub, _))| *sub == subnet && **m != me.to_string())
                        .map(|(m, _)| m)
                        .collect();
                    for m in &others {
                        prop_assert!(!h.registered.contains(*m));
                    }
                    let mut named: Vec<&String> = reclaim.iter().map(|(m, _)| m).collect();
                    others.sort();
                    named.sort();
                    prop_assert_eq!(named, others);
                }
                Choice::Full => {
                    for i in 1..4 {
                        prop_assert!(h.leases.contains_key(&s(i)) || h.owners.iter().any(|(m, (sub, _))| *sub == s(i) && *m != me.to_string() && h.registered.contains(m)));
                    }
                }
            }
        }
    }

    #[test]
    fn prefixes_sit_under_the_network_prefix() {
        for p in [SUBNETS, OWNERS] {
            assert!(p.as_str().starts_with(herd_client::keys::NETWORK.as_str()));
        }
        assert_eq!(
            subnet_key(net("10.244.3.0/24")),
            "/herd/network/subnets/10.244.3.0-24"
        );
    }
}
