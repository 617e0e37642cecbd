//! Whether this machine's units run, as the update role's health gate asks
//! after a reboot into a new slot: every unit placed here to be launched
//! has a report from this machine's runner, and none is failed, restarting
//! or still starting. A release that breaks a unit (a binary it needs is
//! gone) is not marked good, and rolls back.

use herd_client::Client;
use herd_client::kit::{self, Scope};

use crate::records::{DesiredState, Placement, Report};

/// Reads this machine's placements and reports and judges them.
pub async fn machine_units(client: &Client, machine_id: &str) -> Result<(), String> {
    let scope = Scope::Names(format!("{machine_id}/"));
    let (placements, _) = kit::list::<Placement>(client, &scope)
        .await
        .map_err(|e| format!("reading this machine's unit placements: {e}"))?;
    let (reports, _) = kit::list::<Report>(client, &scope)
        .await
        .map_err(|e| format!("reading this machine's unit reports: {e}"))?;
    let placements: Vec<Placement> = placements.into_iter().map(|o| o.value).collect();
    let reports: Vec<Report> = reports.into_iter().map(|o| o.value).collect();
    judge(&placements, &reports)
}

/// Healthy when every launched placement's report shows it up (or, for a
/// oneshot, done); otherwise the units that are not, and why.
pub fn judge(placements: &[Placement], reports: &[Report]) -> Result<(), String> {
    let mut bad = Vec::new();
    for p in placements
        .iter()
        .filter(|p| p.target == DesiredState::Launched)
    {
        let report = reports
            .iter()
            .find(|r| r.unit == p.unit && r.machine == p.machine);
        let Some(r) = report else {
            bad.push(format!("{}: no report from its runner yet", p.unit));
            continue;
        };
        let starting = matches!(r.active.as_str(), "activating" | "deactivating");
        let broken = r.active == "failed" || matches!(r.sub.as_str(), "failed" | "auto-restart");
        if starting || broken || r.load != "loaded" {
            let why = r
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            bad.push(format!(
                "{}: {} {} {}{why}",
                p.unit, r.load, r.active, r.sub
            ));
        }
    }
    match bad.is_empty() {
        true => Ok(()),
        false => Err(format!("units not running: {}", bad.join("; "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::UnitName;

    fn placement(unit: &str, target: DesiredState) -> Placement {
        Placement {
            unit: UnitName::parse(unit).unwrap(),
            machine: "m1".into(),
            text: String::new(),
            target,
            restarts: 0,
        }
    }

    fn report(unit: &str, active: &str, sub: &str) -> Report {
        Report {
            unit: UnitName::parse(unit).unwrap(),
            machine: "m1".into(),
            load: "loaded".into(),
            active: active.into(),
            sub: sub.into(),
            main_pid: None,
            since: String::new(),
            restarts: 0,
            generation: 0,
            message: Some("exit status 127".into()).filter(|_| active == "failed"),
        }
    }

    #[test]
    fn launched_units_must_run_and_loaded_ones_need_not() {
        let placements = [
            placement("web.service", DesiredState::Launched),
            placement("setup.service", DesiredState::Launched),
            placement("idle.service", DesiredState::Loaded),
        ];
        let up = [
            report("web.service", "active", "running"),
            report("setup.service", "inactive", "dead"),
        ];
        assert_eq!(judge(&placements, &up), Ok(()));

        let failed = [
            report("web.service", "failed", "failed"),
            report("setup.service", "inactive", "dead"),
        ];
        let e = judge(&placements, &failed).unwrap_err();
        assert!(
            e.contains("web.service: loaded failed failed: exit status 127"),
            "{e}"
        );

        let restarting = [report("web.service", "activating", "auto-restart")];
        let e = judge(&placements, &restarting).unwrap_err();
        assert!(
            e.contains("web.service: loaded activating auto-restart"),
            "{e}"
        );
        assert!(
            e.contains("setup.service: no report from its runner yet"),
            "{e}"
        );
    }
}
