//! A rolling OS upgrade through a QEMU lab of installed machines, watched
//! only from outside (`herd lab status`, `herd pxe updates`, the consoles).
//!
//! Release 0.2.0 (the lab's own inputs, a new version) is published to the
//! lab's provisioning server with `herd pxe publish`; the machines take it
//! one at a time under the cluster's reboot lock, each boots its other slot
//! (USR-B) and marks it good only once its health gate passes in the
//! cluster. `herd lab status` is sampled all the way: never two machines
//! out of service at once; writers keep putting keys through every machine
//! and the store keeps acknowledging them while each machine is out, and
//! loses none. The canary's power is cut in each phase of its update
//! (`rollout_cuts`) and it still ends on the new slot, marked good; a
//! global unit runs again on every new slot and a unit moves off each
//! machine as it drains (`rollout_units`).
//!
//! Then a broken release, 0.3.0, whose image ships a health check that
//! always fails, is published with a canary of 1 and safe mode: the canary
//! flips, fails its gate, goes back to its good slot by itself, the server
//! halts the group with the failure recorded, and no other machine is ever
//! offered it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::lab::{credentials, endpoint, exec, serial, status};
use crate::robustness::{WriteProgress, check_acknowledged, run_writers};
use crate::rollout_cuts::{self, Cut, PowerCuts};
use crate::rollout_units::UnitsSeen;
use crate::{bin, wait};
use serde_json::Value;

const MACHINES: [&str; 3] = ["m1", "m2", "m3"];
/// Update phases (as a machine reports them) in which it holds the reboot
/// lock and is, or is about to be, out of service.
const OUT_PHASES: [&str; 4] = ["draining", "rebooting", "verifying", "rolling-back"];

/// A JSON string or version as text.
fn text(v: &Value) -> String {
    v.as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| v.to_string())
}

/// The `herd-stage:` lines of a console log, parsed.
fn stages(log: &str) -> Vec<Value> {
    log.lines().filter_map(rollout_cuts::stage).collect()
}

/// Whether the console shows the update step `step` for `version`.
fn has_step(log: &str, step: &str, version: &str) -> bool {
    rollout_cuts::printed(log, step, version)
}

/// The slot the last boot mounted `/usr` from (`USR-A`, `USR-B`).
fn last_usr(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .find_map(|l| l.split_once("herd-init: /usr is "))
        .map(|(_, s)| s.split_whitespace().next().unwrap_or("").to_owned())
}

fn machine_id(machine: &str) -> String {
    let n: u8 = machine.trim_start_matches('m').parse().unwrap();
    herd_client::keys::machine_id_for_mac(&format!("52:54:00:77:00:{n:02x}"))
}

/// Builds a release of the lab's OS: the default spec with `version`, and
/// for a broken one an image health check that always fails. Same cache,
/// same development signing key and same herd binary as the lab's image.
pub fn build_release(dir: &Path, version: &str, broken: bool) -> PathBuf {
    let dir = dir.join(format!("release-{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(bin::herd())
        .args(["image", "build", "--print-default-spec"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let default = String::from_utf8(out.stdout).unwrap();
    let mut spec = default.replacen("version: \"0.1.0\"", &format!("version: \"{version}\""), 1);
    assert_ne!(spec, default, "the default spec's version line moved");
    if broken {
        std::fs::write(
            dir.join("broken-check"),
            format!("#!/bin/sh\necho 'release {version} is broken on purpose'\nexit 1\n"),
        )
        .unwrap();
        spec = spec.replacen(
            "files: []",
            "files:\n  - {src: broken-check, dst: /usr/lib/herd/health.d/50-broken, mode: 493}",
            1,
        );
        assert!(
            spec.contains("50-broken"),
            "the default spec's files line moved"
        );
    }
    std::fs::write(dir.join("spec.yaml"), spec).unwrap();
    let log = std::fs::File::create(dir.join("build.log")).unwrap();
    let started = Instant::now();
    let status = Command::new(bin::herd())
        .args(["image", "build", "--spec"])
        .arg(dir.join("spec.yaml"))
        .arg("--out")
        .arg(dir.join("out"))
        .arg("--herd-bin")
        .arg(bin::herd())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "building release {version}: see {}",
        dir.join("build.log").display()
    );
    eprintln!("release {version} built in {:?}", started.elapsed());
    dir.join("out")
}

/// `herd pxe …` against the lab's server, from inside the lab network:
/// `herd lab exec` points it at the admin listener (HTTPS, pinned to its
/// CA) with the server's token.
fn pxe(lab_dir: &Path, args: &[&str]) -> String {
    let mut full = vec!["herd", "pxe"];
    full.extend_from_slice(args);
    let out = exec(lab_dir, &full);
    assert!(
        out.status.success(),
        "herd pxe {}: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn updates(lab_dir: &Path) -> Value {
    serde_json::from_str(&pxe(lab_dir, &["updates", "-o", "json"]))
        .expect("herd pxe updates -o json is JSON")
}

/// Machine `m`'s row in `herd pxe updates -o json`.
fn server_row<'a>(updates: &'a Value, m: &str) -> &'a Value {
    let id = machine_id(m);
    updates["machines"]
        .as_array()
        .expect("machines")
        .iter()
        .find(|r| r["machine_id"] == id.as_str())
        .unwrap_or_else(|| panic!("{m} ({id}) unknown to the update server: {updates:#}"))
}

/// One machine as `herd lab status` shows it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    /// Its update phase (`idle`, `downloading`, …) and target.
    phase: String,
    target: Option<String>,
    version: Option<String>,
    serving: bool,
}

impl Seen {
    fn out(&self) -> bool {
        !self.serving || OUT_PHASES.contains(&self.phase.as_str())
    }
}

fn look(lab_dir: &Path) -> BTreeMap<String, Seen> {
    let s = status(lab_dir);
    s["machines"]
        .as_array()
        .expect("machines")
        .iter()
        .map(|m| {
            let update = m["update"].as_str().unwrap_or("-");
            let mut words = update.split_whitespace();
            let seen = Seen {
                phase: words.next().unwrap_or("-").to_owned(),
                target: words.next().map(str::to_owned),
                version: m["image_version"].as_str().map(str::to_owned),
                serving: m["store_role"] == "leader" || m["store_role"] == "voter",
            };
            (text(&m["name"]), seen)
        })
        .collect()
}

/// Writers on every machine's endpoint, one put every 200 ms or so each
/// (the machines are busy upgrading); counts what the store acknowledged.
struct Writers {
    stop: Arc<AtomicBool>,
    progress: Arc<WriteProgress>,
    task: tokio::task::JoinHandle<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl Writers {
    fn start(rt: &tokio::runtime::Runtime, lab_dir: &Path, prefix: &'static str) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(WriteProgress::default());
        let task = rt.spawn(run_writers(
            MACHINES.iter().map(|m| endpoint(m)).collect(),
            credentials(lab_dir),
            MACHINES.len(),
            prefix,
            Duration::from_millis(200),
            Arc::clone(&stop),
            Arc::clone(&progress),
        ));
        Writers {
            stop,
            progress,
            task,
        }
    }
}

/// What sampling `herd lab status` through a rollout saw.
#[derive(Default)]
struct Timeline {
    /// Per machine: when it first left `idle` for the target, and when it
    /// was back `idle` on the target version.
    started: BTreeMap<String, Instant>,
    finished: BTreeMap<String, Instant>,
    /// Per machine, each update phase in the order first seen, with when.
    phases: BTreeMap<String, Vec<(String, Instant)>>,
    /// Per machine: the writers' acknowledged count when it was first and
    /// last seen out of service.
    out_acked: BTreeMap<String, (usize, usize)>,
    /// Machines out at the previous sample (a violation must persist over
    /// two samples: a status report lags its lock by a moment).
    previous_out: BTreeSet<String>,
    most_out_at_once: usize,
    samples: usize,
}

impl Timeline {
    /// Records one sample and fails the test if two machines were out of
    /// service in this sample and the previous one.
    fn record(&mut self, seen: &BTreeMap<String, Seen>, target: &str, acked: usize) {
        let now = Instant::now();
        self.samples += 1;
        let out: BTreeSet<String> = seen
            .iter()
            .filter(|(_, s)| s.out())
            .map(|(m, _)| m.clone())
            .collect();
        for m in &out {
            let e = self.out_acked.entry(m.clone()).or_insert((acked, acked));
            e.1 = acked;
        }
        for (m, s) in seen {
            if s.target.as_deref() == Some(target) {
                self.started.entry(m.clone()).or_insert(now);
                let seen = self.phases.entry(m.clone()).or_default();
                if !seen.iter().any(|(p, _)| *p == s.phase) {
                    seen.push((s.phase.clone(), now));
                }
            }
            if s.phase == "idle" && s.version.as_deref() == Some(target) && s.serving {
                self.finished.entry(m.clone()).or_insert(now);
            }
        }
        let both = out.len().min(self.previous_out.len());
        self.most_out_at_once = self.most_out_at_once.max(both);
        assert!(
            out.len() < 2 || self.previous_out.len() < 2,
            "two machines out of service at once during the rollout of {target}: {out:?} \
             (and {:?} at the sample before): {seen:#?}",
            self.previous_out
        );
        self.previous_out = out;
    }
}

/// Waits until every machine of a freshly installed lab runs 0.1.0 and its
/// update role is idle.
pub fn wait_idle_on_the_first_release(lab_dir: &Path) {
    wait::until(
        "every machine idle on 0.1.0",
        Duration::from_secs(180),
        Duration::from_secs(2),
        || {
            look(lab_dir)
                .values()
                .all(|s| s.phase == "idle" && s.version.as_deref() == Some("0.1.0"))
                .then_some(())
        },
    );
}

/// Publishes `release` (0.2.0) and follows it through the cluster.
pub fn rolls_through(lab_dir: &Path, rt: &tokio::runtime::Runtime, release: &Path) {
    let release_b = release;
    // Release 0.2.0 rolls through the cluster, with units on it, and the
    // canary's power cut in each phase of its update.
    let mut units = UnitsSeen::start(lab_dir, MACHINES.len());
    let writers = Writers::start(rt, lab_dir, "/rollout/");
    std::thread::sleep(Duration::from_secs(3));
    let cuts = PowerCuts::start(lab_dir, &MACHINES, "0.2.0");
    let publish = pxe(
        lab_dir,
        &["publish", "--group", "stable", release_b.to_str().unwrap()],
    );
    eprintln!("published 0.2.0: {publish}");
    let published = Instant::now();
    let mut timeline = Timeline::default();
    wait::until(
        "every machine idle on 0.2.0",
        Duration::from_secs(45 * 60),
        Duration::from_secs(2),
        || {
            let seen = look(lab_dir);
            timeline.record(&seen, "0.2.0", writers.progress.acked());
            units.sample(lab_dir);
            seen.values()
                .all(|s| s.phase == "idle" && s.version.as_deref() == Some("0.2.0") && s.serving)
                .then_some(())
        },
    );
    let rollout = published.elapsed();
    let cuts = cuts.finish();
    check_cuts(&cuts, published);
    std::thread::sleep(Duration::from_secs(3));
    writers.stop.store(true, Ordering::Relaxed);
    let acked = rt.block_on(writers.task).expect("writers");
    eprintln!(
        "rollout of 0.2.0: {rollout:?} from publish to the last machine healthy; \
         {} samples, at most {} machine(s) out at once; writers: {} acknowledged, {}",
        timeline.samples,
        timeline.most_out_at_once,
        acked.len(),
        writers.progress.failures()
    );
    for m in MACHINES {
        let (start, end) = (timeline.started[m], timeline.finished[m]);
        eprintln!(
            "  {m}: offered at +{:?}, healthy on 0.2.0 at +{:?} ({:?})",
            start - published,
            end - published,
            end - start
        );
        // For BENCHMARKS.md: when each phase was first seen (2 s samples).
        let phases: Vec<String> = timeline.phases[m]
            .iter()
            .map(|(p, at)| format!("{p} +{:.0?}", *at - start))
            .collect();
        eprintln!("    phases: {}", phases.join(", "));
        let (first, last) = timeline
            .out_acked
            .get(m)
            .copied()
            .unwrap_or_else(|| panic!("{m} was never seen out of service: it never rebooted"));
        assert!(
            last > first,
            "the store acknowledged no write while {m} was out of service"
        );
    }
    // The machines went one after another: each was healthy on 0.2.0
    // before the next one went out of service (the sampler also checked it).
    // Spawned: the runtime's threads are in the lab's namespace, this one
    // is not.
    let (endpoints, credentials) = (
        MACHINES.iter().map(|m| endpoint(m)).collect::<Vec<_>>(),
        credentials(lab_dir),
    );
    let check = {
        let acked = acked.clone();
        rt.spawn(
            async move { check_acknowledged(&endpoints, &credentials, "/rollout/", &acked).await },
        )
    };
    let stored = rt
        .block_on(check)
        .expect("check task")
        .expect("every acknowledged write stored");
    eprintln!(
        "all {} acknowledged writes stored ({stored} keys)",
        acked.len()
    );

    let u = updates(lab_dir);
    for m in MACHINES {
        let row = server_row(&u, m);
        assert_eq!(row["state"], "done", "{m}: {row:#}");
        assert_eq!(text(&row["version"]), "0.2.0", "{m}: {row:#}");
        // The canary marked its slot good in the power-on that was cut
        // last; its console of now is the boot after.
        let log = serial(lab_dir, m);
        let marked = cuts
            .iter()
            .filter(|c| c.machine == m)
            .map(|c| c.console.as_str())
            .chain([log.as_str()])
            .find(|l| has_step(l, "marked-good", "0.2.0"))
            .unwrap_or_else(|| panic!("{m} never marked 0.2.0 good: {log}"));
        assert!(
            stages(marked)
                .iter()
                .any(|s| s["stage"] == "slot-marked-good" && s["slot"] == "USR-B"),
            "{m} did not mark USR-B good: {marked}"
        );
        assert_eq!(last_usr(&log).as_deref(), Some("USR-B"), "{m}: {log}");
        assert!(!has_step(&log, "rolled-back", "0.2.0"), "{m}: {log}");
    }
    units.check_after(lab_dir, MACHINES.len());
}

/// Every phase of the canary's update was cut, while it was under way.
fn check_cuts(cuts: &[Cut], published: Instant) {
    assert_eq!(
        cuts.len(),
        rollout_cuts::PHASES,
        "not every phase of the canary's update was cut: {:?}",
        cuts.iter().map(|c| c.during).collect::<Vec<_>>()
    );
    for c in cuts {
        eprintln!(
            "  power cut of {} {} at +{:?}",
            c.machine,
            c.during,
            c.at - published
        );
        assert!(
            c.in_time("0.2.0"),
            "the power cut of {} meant {} came too late; its console then:\n{}",
            c.machine,
            c.during,
            c.console
        );
        assert_eq!(
            c.machine, cuts[0].machine,
            "one machine, the canary, is cut"
        );
    }
}

/// Publishes the broken `release` (0.3.0) with a canary of 1 and safe
/// mode: only the canary tries it, rolls back and halts the group.
pub fn broken_release_halts_at_the_canary(lab_dir: &Path, release: &Path) {
    let release_c = release;
    // A broken release, canary 1 and safe mode: one machine tries it.
    pxe(
        lab_dir,
        &[
            "updates",
            "policy",
            "stable",
            "--canary",
            "1",
            "--safe-mode",
            "true",
        ],
    );
    pxe(
        lab_dir,
        &["publish", "--group", "stable", release_c.to_str().unwrap()],
    );
    let mut timeline = Timeline::default();
    let halted = wait::until(
        "the group halted by the broken release",
        Duration::from_secs(30 * 60),
        Duration::from_secs(2),
        || {
            timeline.record(&look(lab_dir), "0.3.0", 0);
            let u = updates(lab_dir);
            let g = u["groups"]
                .as_array()?
                .iter()
                .find(|g| g["id"] == "stable")?
                .clone();
            (!g["halted"].is_null()).then_some(g)
        },
    );
    eprintln!("halted: {}", halted["halt_reason"]);
    assert_eq!(text(&halted["halted"]["version"]), "0.3.0", "{halted:#}");
    let tried: Vec<&str> = MACHINES
        .iter()
        .copied()
        .filter(|m| timeline.started.contains_key(*m))
        .collect();
    assert_eq!(
        tried.len(),
        1,
        "exactly one machine (the canary) took 0.3.0: {tried:?}"
    );
    let canary = tried[0];
    assert_eq!(
        text(&halted["halted"]["machine"]),
        machine_id(canary),
        "{halted:#}"
    );
    // The canary is back on its good slot, healthy; give the others a few
    // update checks (every 10 s + jitter) to show nobody is offered 0.3.0.
    wait::until(
        "the canary back on 0.2.0",
        Duration::from_secs(10 * 60),
        Duration::from_secs(2),
        || {
            let seen = look(lab_dir);
            timeline.record(&seen, "0.3.0", 0);
            let s = &seen[canary];
            (s.phase == "idle" && s.version.as_deref() == Some("0.2.0") && s.serving).then_some(())
        },
    );
    let until = Instant::now() + Duration::from_secs(45);
    while Instant::now() < until {
        timeline.record(&look(lab_dir), "0.3.0", 0);
        std::thread::sleep(Duration::from_secs(2));
    }
    let u = updates(lab_dir);
    for m in MACHINES {
        let row = server_row(&u, m);
        let log = serial(lab_dir, m);
        assert_eq!(text(&row["version"]), "0.2.0", "{m}: {row:#}");
        assert_eq!(last_usr(&log).as_deref(), Some("USR-B"), "{m}: {log}");
        if m == canary {
            assert_eq!(row["state"], "rolled-back", "{m}: {row:#}");
            assert!(row["failed"].get("0.3.0").is_some(), "{m}: {row:#}");
            assert!(has_step(&log, "gate-failed", "0.3.0"), "{m}: {log}");
            assert!(has_step(&log, "rolled-back", "0.3.0"), "{m}: {log}");
        } else {
            assert_eq!(row["state"], "done", "{m} was offered 0.3.0: {row:#}");
            assert_ne!(text(&row["target"]), "0.3.0", "{m}: {row:#}");
            assert!(
                !stages(&log).iter().any(|s| s["version"] == "0.3.0"),
                "{m} saw 0.3.0: {log}"
            );
        }
    }
}
