//! The engine's small state: which units sit on which machine, each
//! unit's parsed constraints, the live machines' metadata, and when a
//! machine was lost. Kept current from the watch events (and from the
//! engine's own decisions before the store confirms them), so a decision
//! never reads the store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tokio::time::Instant;

use super::schedule::MachineView;
use crate::unit::FleetSection;

#[derive(Debug, Default)]
pub struct Index {
    /// Live machines, and lost ones that still hold placements.
    pub machines: BTreeMap<String, MachineView>,
    /// When each machine's registration went away.
    pub lost_since: HashMap<String, Instant>,
    /// Unit → machines it is placed on.
    pub by_unit: HashMap<String, BTreeSet<String>>,
    /// Unit → (file revision, constraints).
    pub constraints: HashMap<String, (i64, Arc<FleetSection>)>,
    pub globals: BTreeSet<String>,
    /// Units that want a machine and have none.
    pub pending: BTreeSet<String>,
    /// MachineOf target → units that follow it.
    pub followers: HashMap<String, BTreeSet<String>>,
    /// Machines draining for an OS update; kept apart from `machines`,
    /// whose entries come and go with registrations while a machine
    /// reboots.
    pub draining: BTreeSet<String>,
}

impl Index {
    pub fn place(&mut self, machine: &str, unit: &str) {
        let draining = self.draining.contains(machine);
        self.machines
            .entry(machine.to_owned())
            .or_insert_with(|| MachineView {
                live: false,
                draining,
                ..Default::default()
            })
            .units
            .insert(unit.to_owned());
        self.by_unit
            .entry(unit.to_owned())
            .or_default()
            .insert(machine.to_owned());
    }

    pub fn unplace(&mut self, machine: &str, unit: &str) {
        if let Some(m) = self.machines.get_mut(machine) {
            m.units.remove(unit);
            if !m.live && m.units.is_empty() {
                self.machines.remove(machine);
            }
        }
        if let Some(ms) = self.by_unit.get_mut(unit) {
            ms.remove(machine);
            if ms.is_empty() {
                self.by_unit.remove(unit);
            }
        }
    }

    pub fn machine_up(&mut self, id: &str, metadata: Arc<BTreeMap<String, String>>) {
        let draining = self.draining.contains(id);
        let m = self.machines.entry(id.to_owned()).or_default();
        m.live = true;
        m.metadata = metadata;
        m.draining = draining;
        self.lost_since.remove(id);
    }

    /// A machine starts (`true`) or stops draining for an OS update.
    pub fn set_draining(&mut self, id: &str, on: bool) {
        if on {
            self.draining.insert(id.to_owned());
        } else {
            self.draining.remove(id);
        }
        if let Some(m) = self.machines.get_mut(id) {
            m.draining = on;
        }
    }

    pub fn machine_down(&mut self, id: &str, now: Instant) {
        if let Some(m) = self.machines.get_mut(id) {
            m.live = false;
            if m.units.is_empty() {
                self.machines.remove(id);
            }
        }
        self.lost_since.insert(id.to_owned(), now);
    }

    pub fn units_on(&self, machine: &str) -> Vec<String> {
        self.machines
            .get(machine)
            .map(|m| m.units.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn placed(&self, unit: &str) -> Vec<String> {
        self.by_unit
            .get(unit)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn lookup(&self, unit: &str) -> Option<Arc<FleetSection>> {
        self.constraints.get(unit).map(|(_, f)| Arc::clone(f))
    }

    /// Records `unit`'s constraints (from file revision `rev`).
    pub fn set_constraints(&mut self, unit: &str, rev: i64, f: Arc<FleetSection>) {
        if let Some((_, old)) = self.constraints.get(unit) {
            for t in &old.machine_of {
                if let Some(s) = self.followers.get_mut(t.as_str()) {
                    s.remove(unit);
                }
            }
        }
        for t in &f.machine_of {
            self.followers
                .entry(t.to_string())
                .or_default()
                .insert(unit.to_owned());
        }
        if f.global {
            self.globals.insert(unit.to_owned());
        } else {
            self.globals.remove(unit);
        }
        self.constraints.insert(unit.to_owned(), (rev, f));
    }

    pub fn forget(&mut self, unit: &str) {
        if let Some((_, old)) = self.constraints.remove(unit) {
            for t in &old.machine_of {
                if let Some(s) = self.followers.get_mut(t.as_str()) {
                    s.remove(unit);
                }
            }
        }
        self.globals.remove(unit);
        self.pending.remove(unit);
    }

    /// Units whose placement may change when `unit` lands on or leaves
    /// `machine`: its followers and the units it replaces there.
    pub fn affected_by(&self, unit: &str, machine: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .followers
            .get(unit)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        if let Some(f) = self.lookup(unit)
            && !f.replaces.is_empty()
        {
            out.extend(
                self.units_on(machine)
                    .into_iter()
                    .filter(|u| f.replaces_unit(u)),
            );
        }
        out
    }
}
