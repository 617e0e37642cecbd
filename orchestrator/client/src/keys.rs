//! Where each part of the cluster keeps its state in the store: one prefix
//! per part, and the typed records that more than one crate reads. A
//! role's own record types live in its crate and name their prefix here.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::kit::Resource;

/// A prefix of the store holding one kind of object, keyed by name: the
/// object `name` lives at `prefix + name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix(&'static str);

impl Prefix {
    /// `prefix` must end with `/`, so no prefix is a prefix of a sibling's.
    pub const fn new(prefix: &'static str) -> Prefix {
        let bytes = prefix.as_bytes();
        assert!(
            !bytes.is_empty() && bytes[bytes.len() - 1] == b'/',
            "a prefix ends with /"
        );
        Prefix(prefix)
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// The key of object `name`.
    pub fn key(self, name: &str) -> String {
        format!("{}{name}", self.0)
    }

    /// The object name a key under this prefix stands for.
    pub fn name_of(self, key: &[u8]) -> Option<&str> {
        std::str::from_utf8(key.strip_prefix(self.0.as_bytes())?).ok()
    }

    /// A prefix below this one (`/herd/units/` → `/herd/units/state/`).
    pub fn child(self, sub: &'static str) -> String {
        format!("{}{sub}", self.0)
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Machines registered by their agents ([`MachineRecord`], leased).
pub const MACHINES: Prefix = Prefix::new("/herd/machines/");
/// The cluster network: its config and every machine's subnet lease.
pub const NETWORK: Prefix = Prefix::new("/herd/network/");
/// Units: files, desired states, placements, and their runners' reports.
pub const UNITS: Prefix = Prefix::new("/herd/units/");
/// Kubernetes objects (pods, controllers, services, nodes, …).
pub const REGISTRY: Prefix = Prefix::new("/registry/");
/// OS updates: the reboot semaphore and per-machine update states.
pub const UPDATE: Prefix = Prefix::new("/herd/update/");
/// The cluster's PKI records: join tokens (hashes of their secrets, and
/// their limits).
pub const PKI: Prefix = Prefix::new("/herd/pki/");
/// Elections of the controllers that run once per cluster.
pub const ELECTIONS: Prefix = Prefix::new("/herd/elections/");
/// Machines being drained for a reboot ([`DrainRecord`]), under [`UPDATE`].
pub const DRAIN: Prefix = Prefix::new("/herd/update/drain/");
/// Each machine's update progress as its agent sees it ([`UpdateStatus`]),
/// under [`UPDATE`].
pub const UPDATE_STATUS: Prefix = Prefix::new("/herd/update/machines/");

/// A machine role from its cloud-config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A member of the replicated store (voter when the cluster needs one).
    Store,
    /// Runs units and pods but holds no store replica.
    Worker,
}

/// What a machine says about itself in the store, under [`MACHINES`],
/// attached to its agent's lease: a machine that disappears drops out by
/// itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineRecord {
    /// Stable across netboots: derived from the MAC of the interface that
    /// carries the machine's address (a netbooted machine has no disk to
    /// keep a generated id on).
    pub machine_id: String,
    pub hostname: String,
    pub mac: String,
    pub ip: IpAddr,
    /// `/proc/sys/kernel/random/boot_id`: changes on every boot, so a
    /// reboot is visible even when everything else stays the same.
    pub boot_id: String,
    pub image_version: String,
    pub roles: Vec<Role>,
    pub agent_version: String,
    /// Free-form `key=value` labels (`--metadata role=db,zone=a`), what
    /// units' `MachineMetadata` and node labels match.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Where the machine's agent API answers (`http://10.77.0.11:2381`),
    /// for commands that ask the machine itself (a unit's journal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
}

impl MachineRecord {
    pub fn key(&self) -> String {
        MACHINES.key(&self.machine_id)
    }
}

impl Resource for MachineRecord {
    const PREFIX: Prefix = MACHINES;
    const KIND: &'static str = "machine";
}

/// A machine about to reboot for an OS update, at `DRAIN + machine id`,
/// attached to the lease of its reboot lock (so it goes when the update
/// finishes, or when the machine dies and the lease expires).
///
/// The contract for roles that place work on machines: while a machine
/// has this record, place nothing new on it (cordon its node); move off
/// what can move (evict pods, so their controllers recreate them elsewhere;
/// reschedule units that are not global). The agent waits its drain grace
/// after writing the record, then reboots whatever is left; when the
/// record goes, the machine takes work again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRecord {
    pub machine_id: String,
    pub hostname: String,
    /// The version the machine reboots into.
    pub version: String,
    /// Unix seconds when the drain began.
    pub since: u64,
}

impl Resource for DrainRecord {
    const PREFIX: Prefix = DRAIN;
    const KIND: &'static str = "drain";
}

/// Where a machine is in an OS update, as its agent reports it at
/// `UPDATE_STATUS + machine id` (for `herd lab status` and operators; the
/// update server keeps its own view).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    pub machine_id: String,
    pub hostname: String,
    /// The OS version running.
    pub version: String,
    /// What the agent is doing: `idle`, `downloading`, `writing-slot`,
    /// `waiting-for-lock`, `draining`, `rebooting`, `verifying`,
    /// `rolling-back`, `failed`.
    pub phase: String,
    /// The version being installed, if any.
    pub target: Option<String>,
    /// Why it waits or failed, in words.
    pub detail: String,
    /// Unix seconds of this report.
    pub at: u64,
}

impl Resource for UpdateStatus {
    const PREFIX: Prefix = UPDATE_STATUS;
    const KIND: &'static str = "update status";
}

/// The machine id for a MAC: its twelve hex digits (`52:54:00:77:00:01` →
/// `525400770001`).
pub fn machine_id_for_mac(mac: &str) -> String {
    mac.chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys_round_trip() {
        assert_eq!(MACHINES.key("5254"), "/herd/machines/5254");
        assert_eq!(MACHINES.name_of(b"/herd/machines/5254"), Some("5254"));
        assert_eq!(MACHINES.name_of(b"/herd/machinesX"), None);
        assert_eq!(UNITS.child("state/"), "/herd/units/state/");
        assert_eq!(machine_id_for_mac("52:54:00:77:00:0A"), "52540077000a");
    }
}
