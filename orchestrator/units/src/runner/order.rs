//! Start order between the units placed on one machine: whether a unit's
//! `After=`/`Before=`/`Requires=`/`Wants=` let it start now, and whether
//! a requirement stopped under a running unit.
//!
//! systemd's rules, as far as they make sense when the engine, not the
//! unit, decides what runs where:
//! - A unit starts after every unit it is ordered after (its `After=`, or
//!   another unit's `Before=` naming it) that is launched here has
//!   finished starting: running, exited, finished or failed.
//! - `Requires=` also orders (nothing on a herd machine gains from
//!   starting a unit in parallel with its requirement), and a requirement
//!   that failed keeps the unit from starting, as systemd's "dependency
//!   failed" does.
//! - A requirement that is not launched on this machine is not pulled in
//!   (fleet's engine places units, a machine does not): the unit waits,
//!   saying for what, and starts when the requirement is launched here.
//! - An explicitly stopped requirement stops the unit, which then waits
//!   for the requirement to run again.
//! - `Wants=` orders only together with `After=`, and never blocks.

use std::collections::HashMap;
use std::sync::Arc;

use crate::unit::{UnitFile, UnitName};

use super::service::Status;

/// What the runner knows of another unit placed on this machine.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Launched (wanted running) rather than only loaded.
    pub launched: bool,
    pub status: Status,
    pub file: Option<Arc<UnitFile>>,
}

/// The units on this machine by name, as the runner sees them now.
pub type Snapshot = HashMap<String, Peer>;

/// Takes a [`Snapshot`] (the runner's, shared with every supervisor).
pub type Peers = Arc<dyn Fn() -> Snapshot + Send + Sync>;

/// Whether a unit may start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Go,
    /// Not yet: what it waits for.
    Wait(String),
    /// Never, until asked again: a requirement failed.
    Fail(String),
}

/// The gate for starting `file` (named `me`) now.
pub fn gate(me: &str, file: &UnitFile, peers: &Snapshot) -> Gate {
    let mut waiting = Vec::new();
    for req in &file.unit.requires {
        match peers.get(req.as_str()) {
            Some(p) if p.launched => {
                if p.status.active == "failed" {
                    return Gate::Fail(format!("dependency failed: {req} failed"));
                }
                if !p.status.completed {
                    waiting.push(format!("{req} to start"));
                }
            }
            Some(_) => waiting.push(format!("{req} to be launched (Requires=)")),
            None => waiting.push(format!(
                "{req} (Requires=), which is not on this machine: place it here with MachineOf={me}"
            )),
        }
    }
    for name in ordered_after(me, file, peers) {
        if file.unit.requires.contains(&name) {
            continue;
        }
        if let Some(p) = peers.get(name.as_str())
            && p.launched
            && !p.status.completed
        {
            waiting.push(format!("{name} to start"));
        }
    }
    if waiting.is_empty() {
        Gate::Go
    } else {
        Gate::Wait(format!("waiting for {}", waiting.join(", ")))
    }
}

/// A requirement of a running `file` that was stopped (no longer
/// launched here, or inactive without having finished), if any.
pub fn stopped_requirement(file: &UnitFile, peers: &Snapshot) -> Option<String> {
    file.unit
        .requires
        .iter()
        .find_map(|req| match peers.get(req.as_str()) {
            Some(p) if p.launched && (p.status.active != "inactive" || p.status.completed) => None,
            Some(_) | None => Some(format!("stopped because its requirement {req} stopped")),
        })
}

/// The units `me` starts after: its `After=` and `Requires=`, and the
/// units on this machine whose `Before=` names it.
fn ordered_after(me: &str, file: &UnitFile, peers: &Snapshot) -> Vec<UnitName> {
    let mut names: Vec<UnitName> = file.unit.after.clone();
    for (name, p) in peers {
        if let Some(f) = &p.file
            && f.unit.before.iter().any(|b| b.as_str() == me)
            && !names.iter().any(|n| n.as_str() == name)
        {
            names.push(f.name.clone());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(text: &str) -> Arc<UnitFile> {
        Arc::new(UnitFile::parse(&UnitName::parse("a.service").unwrap(), text, None).unwrap())
    }

    fn peer(
        launched: bool,
        active: &'static str,
        completed: bool,
        file: Option<Arc<UnitFile>>,
    ) -> Peer {
        Peer {
            launched,
            status: Status {
                active,
                completed,
                ..Status::default()
            },
            file,
        }
    }

    fn lookup<const N: usize>(peers: [(&str, Peer); N]) -> Snapshot {
        peers.into_iter().map(|(n, p)| (n.to_owned(), p)).collect()
    }

    #[test]
    fn after_waits_for_a_launched_unit_to_finish_starting_and_ignores_others() {
        let a = unit("[Unit]\nAfter=db.service cache.service\n[Service]\nExecStart=/bin/true\n");
        let starting = lookup([("db.service", peer(true, "activating", false, None))]);
        assert_eq!(
            gate("a.service", &a, &starting),
            Gate::Wait("waiting for db.service to start".into())
        );
        let loaded_only = lookup([("db.service", peer(false, "inactive", false, None))]);
        assert_eq!(gate("a.service", &a, &loaded_only), Gate::Go);
        let failed = lookup([("db.service", peer(true, "failed", true, None))]);
        assert_eq!(
            gate("a.service", &a, &failed),
            Gate::Go,
            "After= alone does not care how it ended"
        );
        let finished_oneshot = lookup([("db.service", peer(true, "inactive", true, None))]);
        assert_eq!(gate("a.service", &a, &finished_oneshot), Gate::Go);
    }

    #[test]
    fn requires_orders_waits_for_placement_and_fails_with_its_requirement() {
        let a = unit("[Unit]\nRequires=db.service\n[Service]\nExecStart=/bin/true\n");
        let absent = lookup([]);
        let Gate::Wait(why) = gate("a.service", &a, &absent) else {
            panic!()
        };
        assert!(
            why.contains("not on this machine") && why.contains("MachineOf=a.service"),
            "{why}"
        );
        let loaded = lookup([("db.service", peer(false, "inactive", false, None))]);
        assert!(matches!(gate("a.service", &a, &loaded), Gate::Wait(w) if w.contains("launched")));
        let starting = lookup([("db.service", peer(true, "activating", false, None))]);
        assert!(matches!(gate("a.service", &a, &starting), Gate::Wait(_)));
        let running = lookup([("db.service", peer(true, "active", true, None))]);
        assert_eq!(gate("a.service", &a, &running), Gate::Go);
        let failed = lookup([("db.service", peer(true, "failed", true, None))]);
        assert_eq!(
            gate("a.service", &a, &failed),
            Gate::Fail("dependency failed: db.service failed".into())
        );
    }

    #[test]
    fn a_peers_before_orders_this_unit_after_it() {
        let a = unit("[Unit]\nWants=db.service\n[Service]\nExecStart=/bin/true\n");
        let db = Arc::new(
            UnitFile::parse(
                &UnitName::parse("db.service").unwrap(),
                "[Unit]\nBefore=a.service\n[Service]\nExecStart=/bin/true\n",
                None,
            )
            .unwrap(),
        );
        let starting = lookup([("db.service", peer(true, "activating", false, Some(db)))]);
        assert!(matches!(gate("a.service", &a, &starting), Gate::Wait(_)));
        let wants_only = lookup([("db.service", peer(true, "activating", false, None))]);
        assert_eq!(
            gate("a.service", &a, &wants_only),
            Gate::Go,
            "Wants= alone never blocks"
        );
        let other = Arc::new(
            UnitFile::parse(
                &UnitName::parse("x.service").unwrap(),
                "[Unit]\nBefore=b.service\n[Service]\nExecStart=/bin/true\n",
                None,
            )
            .unwrap(),
        );
        let unrelated = lookup([("x.service", peer(true, "activating", false, Some(other)))]);
        assert_eq!(gate("a.service", &a, &unrelated), Gate::Go);
    }

    #[test]
    fn a_stopped_requirement_is_noticed_a_restarting_one_is_not() {
        let a = unit("[Unit]\nRequires=db.service\n[Service]\nExecStart=/bin/true\n");
        let restarting = lookup([("db.service", peer(true, "activating", false, None))]);
        assert_eq!(stopped_requirement(&a, &restarting), None);
        let stopped = lookup([("db.service", peer(false, "inactive", false, None))]);
        assert!(stopped_requirement(&a, &stopped).is_some());
        let gone = lookup([]);
        assert!(stopped_requirement(&a, &gone).is_some());
        let finished = lookup([("db.service", peer(true, "inactive", true, None))]);
        assert_eq!(stopped_requirement(&a, &finished), None);
    }
}
