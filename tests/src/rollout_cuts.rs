//! Power cuts of the canary machine in each phase of its OS update,
//! timed from its console: the QEMU process killed (the guest's page
//! cache lost) the moment the agent prints the step, then powered on again.
//!
//! The canary is the only machine offered the release until it reports
//! success, so cutting it never takes a second machine out. Each cut waits
//! for the step in the console of the machine's *current* power-on (the
//! lab starts a fresh serial log with each), so a step is always one the
//! machine reached again after the previous cut.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::lab::{lab, serial};

/// A cut: the console step it waits for, what is under way then, how long
/// after the step the power goes, and the step that ends the phase (the
/// cut came too late if the console shows it).
struct Plan {
    step: &'static str,
    during: &'static str,
    delay: Duration,
    ends: Option<&'static str>,
}

const CUTS: [Plan; 5] = [
    Plan {
        step: "download-started",
        during: "during the download",
        // Into the transfer: the 48 MB payload takes a second or two from
        // the lab's server (a later attempt's `downloaded` line says how
        // much it fetched itself).
        delay: Duration::from_millis(400),
        ends: Some("downloaded"),
    },
    Plan {
        step: "slot-writing",
        during: "during the slot write",
        delay: Duration::ZERO,
        ends: Some("slot-written"),
    },
    Plan {
        step: "activated",
        during: "between the slot flip and the new slot's first boot",
        delay: Duration::ZERO,
        // The guest reboots itself into the new slot in the same console.
        ends: Some("gate-started"),
    },
    Plan {
        step: "gate-started",
        during: "during the health gate",
        delay: Duration::ZERO,
        ends: Some("marked-good"),
    },
    // The slot's entry was just renamed to drop its counter: that rename
    // must be on the disk, or the old slot boots and the update is lost.
    Plan {
        step: "marked-good",
        during: "right after the new slot was marked good",
        delay: Duration::ZERO,
        ends: None,
    },
];

/// How many cuts [`PowerCuts`] makes.
pub const PHASES: usize = CUTS.len();

/// One cut made.
#[derive(Debug, Clone)]
pub struct Cut {
    pub machine: String,
    pub step: &'static str,
    pub during: &'static str,
    pub at: Instant,
    /// The console of the power-on that was cut, read just before the cut.
    pub console: String,
    /// The step that ends the phase, which the console must not show yet.
    ends: Option<&'static str>,
}

impl Cut {
    /// Whether the phase was still under way when the power went, as far
    /// as the console shows: its step printed, its end not, and no boot
    /// after the step.
    pub fn in_time(&self, version: &str) -> bool {
        let Some(at) = self
            .console
            .lines()
            .position(|l| is_step(l, self.step, version))
        else {
            return false;
        };
        !self.console.lines().skip(at).any(|l| {
            self.ends.is_some_and(|end| is_step(l, end, version))
                || l.contains("herd-init: /usr is ")
        })
    }
}

/// The thread making the cuts; dropping it stops the thread waiting.
pub struct PowerCuts {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Cut>>>,
}

impl Drop for PowerCuts {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A console line's `herd-stage:` report, parsed.
pub fn stage(line: &str) -> Option<serde_json::Value> {
    let (_, json) = line.split_once("herd-stage: ")?;
    serde_json::from_str(json.trim_end()).ok()
}

/// Whether a console line is the update step `step` for `version`.
fn is_step(line: &str, step: &str, version: &str) -> bool {
    stage(line)
        .is_some_and(|s| s["stage"] == "update" && s["step"] == step && s["version"] == version)
}

/// Whether `log` has the update step `step` for `version` (an agent's
/// `herd-stage:` console line).
pub fn printed(log: &str, step: &str, version: &str) -> bool {
    log.lines().any(|l| is_step(l, step, version))
}

impl PowerCuts {
    /// Watches `machines`' consoles for the first to start downloading
    /// `version` and cuts that machine's power at each of [`CUTS`] in turn.
    pub fn start(lab_dir: &Path, machines: &[&str], version: &str) -> PowerCuts {
        let stop = Arc::new(AtomicBool::new(false));
        let (lab_dir, version) = (PathBuf::from(lab_dir), version.to_owned());
        let machines: Vec<String> = machines.iter().map(|m| m.to_string()).collect();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut cuts = Vec::new();
                let mut victims = machines;
                for plan in CUTS {
                    let Plan {
                        step,
                        during,
                        delay,
                        ends,
                    } = plan;
                    let Some(machine) = wait_for_step(&lab_dir, &victims, step, &version, &stop)
                    else {
                        break;
                    };
                    victims = vec![machine.clone()];
                    std::thread::sleep(delay);
                    let console = serial(&lab_dir, &machine);
                    lab(&lab_dir, &["kill", &machine]);
                    let at = Instant::now();
                    eprintln!("power cut of {machine} {during} (after its {step:?} step)");
                    lab(&lab_dir, &["boot", &machine]);
                    cuts.push(Cut {
                        machine,
                        step,
                        during,
                        at,
                        console,
                        ends,
                    });
                }
                cuts
            })
        };
        PowerCuts {
            stop,
            thread: Some(thread),
        }
    }

    /// The cuts made; stops waiting for the ones not made yet.
    pub fn finish(mut self) -> Vec<Cut> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("finished once");
        thread.join().expect("the power-cut thread")
    }
}

/// The first of `machines` whose console shows `step` for `version`;
/// `None` once `stop` is set.
fn wait_for_step(
    lab_dir: &Path,
    machines: &[String],
    step: &str,
    version: &str,
    stop: &AtomicBool,
) -> Option<String> {
    while !stop.load(Ordering::Relaxed) {
        for m in machines {
            if printed(&serial(lab_dir, m), step, version) {
                return Some(m.clone());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}
