//! The `[X-Fleet]` section with fleet's semantics: where a unit may run.
//! Only the name specifiers (`%n %N %p %P %i %I`) expand here: the section
//! is read before any machine is chosen.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{At, UnitError, UnitName, glob, words};

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FleetSection {
    /// Only the machine with this id.
    pub machine_id: Option<String>,
    /// Only the machine that hosts these units.
    pub machine_of: Vec<UnitName>,
    /// Every key must match; a key given several times matches any of its values.
    pub metadata: BTreeMap<String, Vec<String>>,
    /// Never on a machine hosting a unit matching one of these globs (and
    /// never where such a unit's own `Conflicts` matches this one).
    pub conflicts: Vec<String>,
    /// On every matching machine, not one.
    pub global: bool,
    /// Units (globs) that must make way: they move when this one lands on
    /// their machine.
    pub replaces: Vec<String>,
}

impl FleetSection {
    /// Whether a machine's own facts (not what it hosts) admit the unit.
    pub fn admits(&self, machine_id: &str, metadata: &BTreeMap<String, String>) -> bool {
        self.machine_id.as_ref().is_none_or(|m| m == machine_id)
            && self
                .metadata
                .iter()
                .all(|(k, vs)| metadata.get(k).is_some_and(|v| vs.contains(v)))
    }

    /// Whether `this` (with these constraints) and `other` (with its
    /// `Conflicts`) may not share a machine.
    pub fn conflicts_with(&self, this: &str, other: &str, other_conflicts: &[String]) -> bool {
        this != other
            && (self.conflicts.iter().any(|p| glob::matches(p, other))
                || other_conflicts.iter().any(|p| glob::matches(p, this)))
    }

    pub fn replaces_unit(&self, other: &str) -> bool {
        self.replaces.iter().any(|p| glob::matches(p, other))
    }
}

#[derive(Debug, Default)]
pub(super) struct Builder {
    f: FleetSection,
    global_line: Option<usize>,
}

impl Builder {
    pub(super) fn set(&mut self, at: &At<'_>, value: &str) -> Result<bool, UnitError> {
        let key = at.entry.key.as_str();
        // fleet ≤ 0.8 spelled some keys with an X- prefix.
        let key = match key {
            "X-ConditionMachineID" => "MachineID",
            "X-ConditionMachineOf" => "MachineOf",
            "X-ConditionMachineMetadata" => "MachineMetadata",
            "X-Conflicts" => "Conflicts",
            k => k,
        };
        let globs = |at: &At<'_>| -> Result<Vec<String>, UnitError> {
            let ws = at.words(value)?;
            for w in &ws {
                glob::check(w).map_err(|r| at.err(r))?;
            }
            Ok(ws)
        };
        match key {
            "MachineID" => {
                if value.is_empty()
                    || !value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    return Err(at.err(format!("{value:?} is not a machine id")));
                }
                if let Some(old) = &self.f.machine_id
                    && old != value
                {
                    return Err(at.err(format!(
                        "a second MachineID ({value}) besides {old}: no machine has two ids"
                    )));
                }
                self.f.machine_id = Some(value.to_owned());
            }
            "MachineOf" => self.f.machine_of.extend(at.units(value)?),
            "MachineMetadata" => {
                for w in at.words(value)? {
                    match w.split_once('=') {
                        Some((k, v)) if !k.is_empty() && !v.is_empty() => self
                            .f
                            .metadata
                            .entry(k.to_owned())
                            .or_default()
                            .push(v.to_owned()),
                        _ => return Err(at.err(format!("{w:?} is not key=value"))),
                    }
                }
            }
            "Conflicts" => self.f.conflicts.extend(globs(at)?),
            "Replaces" => self.f.replaces.extend(globs(at)?),
            "Global" => {
                self.f.global = words::boolean(value).map_err(|r| at.err(r))?;
                self.global_line = Some(at.entry.line);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Refuses combinations no machine could satisfy, as fleet did (and
    /// some it accepted and then never scheduled).
    pub(super) fn finish(self, name: &UnitName) -> Result<FleetSection, UnitError> {
        let f = self.f;
        let invalid = |reason: String| UnitError::Invalid {
            file: name.to_string(),
            reason: format!("[X-Fleet]: {reason}"),
        };
        if f.global {
            let mut extra = Vec::new();
            if f.machine_id.is_some() {
                extra.push("MachineID");
            }
            if !f.machine_of.is_empty() {
                extra.push("MachineOf");
            }
            if !f.replaces.is_empty() {
                extra.push("Replaces");
            }
            if !extra.is_empty() {
                return Err(invalid(format!(
                    "Global=true cannot be combined with {} (only MachineMetadata and Conflicts narrow a global unit)",
                    extra.join(", ")
                )));
            }
        }
        if !f.replaces.is_empty() && !f.conflicts.is_empty() {
            return Err(invalid("Replaces cannot be combined with Conflicts".into()));
        }
        let me = name.as_str();
        if let Some(p) = f.conflicts.iter().find(|p| glob::is_literal(p) && *p == me) {
            return Err(invalid(format!("Conflicts={p} names the unit itself")));
        }
        if let Some(p) = f.replaces.iter().find(|p| glob::matches(p, me)) {
            return Err(invalid(format!("Replaces={p} matches the unit itself")));
        }
        if f.machine_of.iter().any(|u| u == name) {
            return Err(invalid(format!("MachineOf={me} names the unit itself")));
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{UnitFile, UnitName};

    fn fleet(name: &str, section: &str) -> Result<super::FleetSection, String> {
        UnitFile::parse(
            &UnitName::parse(name).unwrap(),
            &format!("[Service]\nExecStart=/bin/true\n[X-Fleet]\n{section}"),
            None,
        )
        .map(|u| u.fleet)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn metadata_repeats_are_or_and_keys_are_and() {
        let f = fleet(
            "a.service",
            "MachineMetadata=zone=a\nMachineMetadata=zone=b \"disk=ssd\"\n",
        )
        .unwrap();
        let md = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(f.admits("m", &md(&[("zone", "b"), ("disk", "ssd")])));
        assert!(!f.admits("m", &md(&[("zone", "c"), ("disk", "ssd")])));
        assert!(!f.admits("m", &md(&[("zone", "a")])));
    }

    #[test]
    fn conflicts_are_symmetric_and_skip_the_unit_itself() {
        let f = fleet("web@1.service", "Conflicts=web@*.service\n").unwrap();
        assert!(f.conflicts_with("web@1.service", "web@2.service", &[]));
        assert!(!f.conflicts_with("web@1.service", "web@1.service", &[]));
        let plain = fleet("db.service", "").unwrap();
        assert!(plain.conflicts_with("db.service", "x.service", &["db*".into()]));
        assert!(!plain.conflicts_with("db.service", "x.service", &["web*".into()]));
    }

    #[test]
    fn impossible_combinations_are_refused() {
        let e = fleet("a.service", "Global=true\nReplaces=b.service\n").unwrap_err();
        assert!(
            e.contains("Global=true cannot be combined with Replaces"),
            "{e}"
        );
        let e = fleet("a.service", "Global=true\nMachineID=abc\n").unwrap_err();
        assert!(e.contains("MachineID"), "{e}");
        let e = fleet("a.service", "Conflicts=%n\n").unwrap_err();
        assert!(e.contains("names the unit itself"), "{e}");
        let e = fleet("a.service", "Replaces=b.service\nConflicts=c.service\n").unwrap_err();
        assert!(
            e.contains("Replaces cannot be combined with Conflicts"),
            "{e}"
        );
        let e = fleet("a.service", "MachineOf=%n\n").unwrap_err();
        assert!(e.contains("itself"), "{e}");
        let e = fleet("a.service", "MachineID=a\nMachineID=b\n").unwrap_err();
        assert!(
            e.contains("a.service:5") && e.contains("second MachineID"),
            "{e}"
        );
        let e = fleet("a.service", "Conflicts=x[\n").unwrap_err();
        assert!(e.contains("unterminated"), "{e}");
        assert!(
            fleet(
                "a.service",
                "Global=true\nMachineMetadata=role=web\nConflicts=b*\n"
            )
            .unwrap()
            .global
        );
    }
}
