//! The engine's decisions, as pure functions of a small in-memory view:
//! whether a machine can take a unit, and which machine is least loaded
//! among those that can (fleet's least-loaded scheduler, with its
//! constraints checked the same way).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::unit::FleetSection;

/// What the engine knows of one live machine.
#[derive(Debug, Clone, Default)]
pub struct MachineView {
    /// Registered now; a lost machine still holding placements is not.
    pub live: bool,
    pub metadata: Arc<BTreeMap<String, String>>,
    /// The units placed there.
    pub units: BTreeSet<String>,
    /// Draining for an OS update (`herd_client::keys::DrainRecord`): no
    /// new unit that is not global goes there.
    pub draining: bool,
}

/// Why a machine cannot take a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    MachineId,
    Metadata,
    MachineOf(String),
    Conflict(String),
    ReplacedBy(String),
}

/// Whether `machine` (id `id`) can take `unit` with constraints `f`;
/// `lookup` gives other units' constraints.
pub fn able(
    unit: &str,
    f: &FleetSection,
    id: &str,
    machine: &MachineView,
    lookup: &dyn Fn(&str) -> Option<Arc<FleetSection>>,
) -> Result<(), Refusal> {
    if f.machine_id.as_ref().is_some_and(|m| m != id) {
        return Err(Refusal::MachineId);
    }
    if !f.admits(id, &machine.metadata) {
        return Err(Refusal::Metadata);
    }
    if let Some(t) = f
        .machine_of
        .iter()
        .find(|t| !machine.units.contains(t.as_str()))
    {
        return Err(Refusal::MachineOf(t.to_string()));
    }
    for other in &machine.units {
        if other == unit {
            continue;
        }
        let theirs = lookup(other);
        let their_conflicts = theirs
            .as_ref()
            .map(|t| t.conflicts.as_slice())
            .unwrap_or(&[]);
        if f.conflicts_with(unit, other, their_conflicts) {
            return Err(Refusal::Conflict(other.clone()));
        }
        if let Some(t) = &theirs
            && t.replaces_unit(unit)
            && !f.replaces_unit(other)
        {
            return Err(Refusal::ReplacedBy(other.clone()));
        }
    }
    Ok(())
}

/// The least-loaded machine able to take `unit` (ties: the lowest id),
/// or why there is none. `exclude` is never chosen (the machine a unit is
/// moving away from).
pub fn choose<'a>(
    unit: &str,
    f: &FleetSection,
    machines: impl Iterator<Item = (&'a String, &'a MachineView)>,
    exclude: Option<&str>,
    lookup: &dyn Fn(&str) -> Option<Arc<FleetSection>>,
) -> Result<String, String> {
    let mut best: Option<(usize, &String)> = None;
    let mut refused: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut total = 0;
    for (id, m) in machines.filter(|(_, m)| m.live) {
        total += 1;
        if Some(id.as_str()) == exclude {
            *refused.entry("being left").or_default() += 1;
            continue;
        }
        if m.draining && !f.global {
            *refused.entry("draining for an OS update").or_default() += 1;
            continue;
        }
        let load = m.units.len() - usize::from(m.units.contains(unit));
        // A machine no less loaded than the best so far cannot win (ties go
        // to the lowest id, met first): skip its constraint checks, which
        // cost a look at every unit it hosts. The refusal counts only
        // matter when nothing wins.
        if best.is_some_and(|(l, _)| load >= l) {
            continue;
        }
        match able(unit, f, id, m, lookup) {
            Ok(()) => best = Some((load, id)),
            Err(r) => {
                *refused
                    .entry(match r {
                        Refusal::MachineId => "another MachineID",
                        Refusal::Metadata => "lack the MachineMetadata",
                        Refusal::MachineOf(_) => "do not host the MachineOf units",
                        Refusal::Conflict(_) => "host a conflicting unit",
                        Refusal::ReplacedBy(_) => "host a unit that replaces it",
                    })
                    .or_default() += 1
            }
        }
    }
    if let Some((_, id)) = best {
        return Ok(id.clone());
    }
    if total == 0 {
        return Err("no machines are registered".into());
    }
    if let Some(m) = &f.machine_id
        && refused.get("another MachineID") == Some(&total)
    {
        return Err(format!("MachineID={m}: no such machine is registered"));
    }
    let why: Vec<String> = refused.iter().map(|(w, n)| format!("{n} {w}")).collect();
    Err(format!(
        "no machine can take it ({} machines: {})",
        total,
        why.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::{UnitFile, UnitName};

    fn fleet(section: &str) -> Arc<FleetSection> {
        fleet_of("u@1.service", section)
    }

    fn fleet_of(name: &str, section: &str) -> Arc<FleetSection> {
        Arc::new(
            UnitFile::parse(
                &UnitName::parse(name).unwrap(),
                &format!("[Service]\nExecStart=/bin/true\n[X-Fleet]\n{section}"),
                None,
            )
            .unwrap()
            .fleet,
        )
    }

    /// Machine id, metadata pairs, units placed there.
    type Spec<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);

    fn machines(spec: &[Spec<'_>]) -> BTreeMap<String, MachineView> {
        spec.iter()
            .map(|(id, md, units)| {
                (
                    id.to_string(),
                    MachineView {
                        live: true,
                        metadata: Arc::new(
                            md.iter()
                                .map(|(k, v)| (k.to_string(), v.to_string()))
                                .collect(),
                        ),
                        units: units.iter().map(|u| u.to_string()).collect(),
                        draining: false,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn least_loaded_that_satisfies_every_constraint() {
        let ms = machines(&[
            ("a", &[("zone", "1")], &["x.service", "y.service"]),
            ("b", &[("zone", "1")], &["x.service"]),
            ("c", &[("zone", "2")], &[]),
        ]);
        let none = |_: &str| None;
        assert_eq!(
            choose("u@1.service", &fleet(""), ms.iter(), None, &none).unwrap(),
            "c"
        );
        assert_eq!(
            choose(
                "u@1.service",
                &fleet("MachineMetadata=zone=1"),
                ms.iter(),
                None,
                &none
            )
            .unwrap(),
            "b"
        );
        assert_eq!(
            choose(
                "u@1.service",
                &fleet("MachineMetadata=zone=1\nConflicts=x*"),
                ms.iter(),
                None,
                &none
            )
            .unwrap_err(),
            "no machine can take it (3 machines: 2 host a conflicting unit, 1 lack the MachineMetadata)"
        );
        assert_eq!(
            choose(
                "u@1.service",
                &fleet("MachineOf=y.service"),
                ms.iter(),
                None,
                &none
            )
            .unwrap(),
            "a"
        );
        assert_eq!(
            choose(
                "u@1.service",
                &fleet("MachineID=zz"),
                ms.iter(),
                None,
                &none
            )
            .unwrap_err(),
            "MachineID=zz: no such machine is registered"
        );
        assert_eq!(
            choose("u@1.service", &fleet(""), ms.iter(), Some("c"), &none).unwrap(),
            "b"
        );
        assert!(
            choose(
                "u@1.service",
                &fleet(""),
                BTreeMap::new().iter(),
                None,
                &none
            )
            .unwrap_err()
            .contains("no machines")
        );
    }

    #[test]
    fn a_draining_machine_takes_no_new_unit_unless_global() {
        let mut ms = machines(&[("a", &[], &["x.service"]), ("b", &[], &[])]);
        ms.get_mut("b").unwrap().draining = true;
        let none = |_: &str| None;
        assert_eq!(
            choose("u.service", &fleet(""), ms.iter(), None, &none).unwrap(),
            "a",
            "the emptier machine is draining"
        );
        assert_eq!(
            choose("u.service", &fleet("MachineID=b"), ms.iter(), None, &none).unwrap_err(),
            "no machine can take it (2 machines: 1 another MachineID, 1 draining for an OS update)"
        );
        assert_eq!(
            choose("u.service", &fleet("Global=true"), ms.iter(), None, &none).unwrap(),
            "b"
        );
    }

    #[test]
    fn others_conflicts_and_replaces_count_too() {
        let ms = machines(&[
            ("a", &[], &["x.service"]),
            ("b", &[], &["x.service", "z.service"]),
        ]);
        let x_conflicts =
            |u: &str| (u == "x.service").then(|| fleet_of("x.service", "Conflicts=u@*.service"));
        assert!(choose("u@1.service", &fleet(""), ms.iter(), None, &x_conflicts).is_err());
        let x_replaces =
            |u: &str| (u == "x.service").then(|| fleet_of("x.service", "Replaces=u@1.service"));
        let m = &ms["a"];
        assert_eq!(
            able("u@1.service", &fleet(""), "a", m, &x_replaces),
            Err(Refusal::ReplacedBy("x.service".into()))
        );
        // The replacer itself may land where the replaced unit is.
        assert_eq!(
            able("u@1.service", &fleet("Replaces=x.service"), "a", m, &|_| {
                None
            }),
            Ok(())
        );
    }
}
