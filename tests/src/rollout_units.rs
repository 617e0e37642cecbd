//! Units through a rolling OS upgrade of the QEMU lab: a global unit that
//! must run again on every machine's new slot (the health gate waits for
//! it), and a unit that must move off each machine as it drains and run
//! exactly once at the end. Driven only through `herd units` in the lab
//! network, as an operator would.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::lab::exec;
use crate::wait;

const GLOBAL: &str = "roll-everywhere.service";
const MOVER: &str = "roll-mover.service";

fn units(lab_dir: &Path, args: &[&str]) -> std::process::Output {
    let mut full = vec!["herd", "units"];
    full.extend_from_slice(args);
    exec(lab_dir, &full)
}

/// `herd units list-units -o json`, or nothing while the store cannot
/// answer (a machine is being power-cut).
fn rows(lab_dir: &Path) -> Vec<Value> {
    let out = units(lab_dir, &["list-units", "-o", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// The machines where `unit` runs (active, running), as `list-units` shows.
fn running_on(rows: &[Value], unit: &str) -> BTreeSet<String> {
    rows.iter()
        .filter(|r| r["unit"] == unit && r["active"] == "active" && r["sub"] == "running")
        .filter_map(|r| r["machine"].as_str().map(str::to_owned))
        .collect()
}

/// What the rollout did to the two units, sampled.
#[derive(Default)]
pub struct UnitsSeen {
    /// Every machine the mover was seen running on.
    pub mover_hosts: BTreeSet<String>,
}

impl UnitsSeen {
    /// Starts both units (files written under `lab_dir`) and waits until
    /// they run: the global one on all `machines`, the mover on one.
    pub fn start(lab_dir: &Path, machines: usize) -> UnitsSeen {
        let dir = lab_dir.join("rollout-units");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, extra) in [(GLOBAL, "[X-Fleet]\nGlobal=true\n"), (MOVER, "")] {
            std::fs::write(
                dir.join(name),
                format!(
                    "[Unit]\nDescription={name} through the rollout\n[Service]\n\
                     ExecStart=/bin/sh -c 'echo {name} on %H; exec sleep 1000000'\n{extra}"
                ),
            )
            .unwrap();
        }
        let files = [dir.join(GLOBAL), dir.join(MOVER)];
        let mut args = vec!["start", "--timeout", "5m"];
        args.extend(files.iter().map(|f| f.to_str().unwrap()));
        let out = units(lab_dir, &args);
        assert!(out.status.success(), "herd units start: {out:?}");
        let mut seen = UnitsSeen::default();
        wait::until(
            "both rollout units running",
            Duration::from_secs(180),
            Duration::from_secs(2),
            || {
                let rows = rows(lab_dir);
                seen.record(&rows);
                (running_on(&rows, GLOBAL).len() == machines && running_on(&rows, MOVER).len() == 1)
                    .then_some(())
            },
        );
        seen
    }

    fn record(&mut self, rows: &[Value]) {
        self.mover_hosts.extend(running_on(rows, MOVER));
    }

    /// One look during the rollout.
    pub fn sample(&mut self, lab_dir: &Path) {
        self.record(&rows(lab_dir));
    }

    /// After the rollout: the global unit runs on every machine again, the
    /// mover on exactly one, and the mover moved at least once (each
    /// machine drained in turn, so its host did).
    pub fn check_after(&mut self, lab_dir: &Path, machines: usize) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let last = rows(lab_dir);
            self.record(&last);
            if running_on(&last, GLOBAL).len() == machines && running_on(&last, MOVER).len() == 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "after the rollout {GLOBAL} is not running on all {machines} machines, or \
                 {MOVER} not on exactly one: {last:#?}"
            );
            std::thread::sleep(Duration::from_secs(2));
        }
        assert!(
            self.mover_hosts.len() >= 2,
            "{MOVER} never moved although every machine drained: seen on {:?}",
            self.mover_hosts
        );
        eprintln!(
            "units through the rollout: {GLOBAL} on all {machines}, {MOVER} ran on {:?}",
            self.mover_hosts
        );
    }
}
