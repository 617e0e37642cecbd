//! What the units role keeps in the store, under `herd_client::keys::UNITS`:
//!
//! | prefix | object (by name) | written by |
//! |---|---|---|
//! | `files/<unit>` | [`UnitRecord`]: the file's text, desired state, restart count | `herd units` |
//! | `placements/<machine>/<unit>` | [`Placement`]: where a unit runs, with its text | the engine |
//! | `reports/<machine>/<unit>` | [`Report`]: LOAD/ACTIVE/SUB as the runner sees it (leased) | the runner |
//! | `schedule/<unit>` | [`Unschedulable`]: why the engine cannot place a unit | the engine |
//!
//! A placement carries the unit's text, so a runner watches only its own
//! placements (never the cluster's files) and the engine never reads a
//! report: each side reads a narrow prefix.

use serde::{Deserialize, Serialize};

use herd_client::keys::Prefix;
use herd_client::kit::Resource;

use crate::unit::UnitName;

pub const FILES: Prefix = Prefix::new("/herd/units/files/");
pub const PLACEMENTS: Prefix = Prefix::new("/herd/units/placements/");
pub const REPORTS: Prefix = Prefix::new("/herd/units/reports/");
pub const SCHEDULE: Prefix = Prefix::new("/herd/units/schedule/");
/// The engine's election, under `herd_client::keys::ELECTIONS`.
pub const ENGINE_ELECTION: &str = "units-engine";

/// fleet's target states.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    /// Known to the cluster, placed nowhere.
    Inactive,
    /// Placed on a machine, not running.
    Loaded,
    /// Placed and running.
    Launched,
}

impl std::fmt::Display for DesiredState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DesiredState::Inactive => "inactive",
            DesiredState::Loaded => "loaded",
            DesiredState::Launched => "launched",
        })
    }
}

/// A submitted unit (or template).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitRecord {
    /// The file as submitted (an instance holds its template's text).
    pub text: String,
    pub desired: DesiredState,
    /// Raised by `herd units restart`; the runner restarts on a change.
    #[serde(default)]
    pub restarts: u64,
}

impl Resource for UnitRecord {
    const PREFIX: Prefix = FILES;
    const KIND: &'static str = "unit";
}

/// The engine's decision: `unit` runs on `machine`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    pub unit: UnitName,
    pub machine: String,
    pub text: String,
    /// `Loaded` or `Launched`.
    pub target: DesiredState,
    pub restarts: u64,
}

impl Placement {
    pub fn name(machine: &str, unit: &str) -> String {
        format!("{machine}/{unit}")
    }
}

impl Resource for Placement {
    const PREFIX: Prefix = PLACEMENTS;
    const KIND: &'static str = "placement";
}

/// Splits a `<machine>/<unit>` name.
pub fn split_name(name: &str) -> Option<(&str, &str)> {
    name.split_once('/')
}

/// What a runner says about one of its units, systemd's three columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub unit: UnitName,
    pub machine: String,
    /// `loaded`, or `error` when the file does not parse on this machine.
    pub load: String,
    /// `active`, `activating`, `deactivating`, `inactive`, `failed`.
    pub active: String,
    /// `running`, `exited`, `dead`, `start-pre`, `start`, `start-post`,
    /// `stop`, `stop-post`, `auto-restart`, `failed`.
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_pid: Option<u32>,
    /// When the unit entered its ACTIVE state (RFC 3339).
    pub since: String,
    /// Automatic restarts since the last start asked for.
    #[serde(default)]
    pub restarts: u32,
    /// The placement's restart count this run answers.
    #[serde(default)]
    pub generation: u64,
    /// Why it failed, or what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Resource for Report {
    const PREFIX: Prefix = REPORTS;
    const KIND: &'static str = "unit report";
}

/// Why the engine cannot place a unit right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unschedulable {
    pub reason: String,
}

impl Resource for Unschedulable {
    const PREFIX: Prefix = SCHEDULE;
    const KIND: &'static str = "scheduling note";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_live_under_units() {
        for p in [FILES, PLACEMENTS, REPORTS, SCHEDULE] {
            assert!(
                p.as_str().starts_with(herd_client::keys::UNITS.as_str()),
                "{p}"
            );
        }
        assert_eq!(split_name("m1/a@1.service"), Some(("m1", "a@1.service")));
    }
}
