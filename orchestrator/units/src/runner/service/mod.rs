//! One unit's supervisor on its machine: a task that starts the unit's
//! commands in its cgroup, watches the main process, restarts it by its
//! `Restart=` policy with a doubling delay and a start limit (a unit that
//! keeps crashing ends `failed`, never in a hot loop), and stops it with
//! `ExecStop=`, `KillMode=`/`KillSignal=` and the stop timeout, then
//! kills whatever is left in its group.
//!
//! A unit whose group is already populated when its supervisor starts
//! (the agent restarted) is adopted as running, not started again.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

mod start;
mod stop;

use super::cgroup::Cgroups;
use super::journal::{JournalWriter, Journals};
use super::order::{self, Gate, Peers};
use crate::unit::{RestartPolicy, UnitFile};

/// What the runner wants of a unit; `None` on the channel: removed.
#[derive(Debug, Clone)]
pub struct Want {
    pub file: Arc<UnitFile>,
    pub run: bool,
    pub generation: u64,
}

/// systemd's ACTIVE and SUB, and what goes with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub active: &'static str,
    pub sub: &'static str,
    pub main_pid: Option<u32>,
    pub since: SystemTime,
    pub restarts: u32,
    pub generation: u64,
    pub message: Option<String>,
    /// Its last start has run its course (running, exited, finished or
    /// failed): what units ordered after it wait for.
    pub completed: bool,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            active: "inactive",
            sub: "dead",
            main_pid: None,
            since: SystemTime::now(),
            restarts: 0,
            generation: 0,
            message: None,
            completed: false,
        }
    }
}

/// What every supervisor on a machine shares.
#[derive(Debug)]
pub struct Env {
    pub cgroups: Cgroups,
    pub journals: Journals,
    /// Where running units' main pids are kept across agent restarts.
    pub run_dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct RunState {
    main_pid: u32,
    generation: u64,
}

enum Main {
    Child(tokio::process::Child),
    /// Not our child (a forking daemon, or adopted): watched in the group.
    Pid(u32),
}

impl Main {
    fn pid(&self) -> Option<u32> {
        match self {
            Main::Child(c) => c.id(),
            Main::Pid(p) => Some(*p),
        }
    }
}

/// How a main process ended.
struct Exit {
    success: bool,
    text: String,
}

enum Phase {
    Idle,
    Running(Main),
    /// Oneshot done with `RemainAfterExit=yes`.
    Exited,
    /// Restarting at this time.
    Waiting(Instant),
    /// Ended cleanly with no restart due; stays until asked again.
    Finished,
    Failed,
}

struct Sup {
    unit: String,
    env: Arc<Env>,
    peers: Peers,
    journal: JournalWriter,
    status: watch::Sender<Status>,
    starts: VecDeque<Instant>,
    delay: Option<Duration>,
}

/// Supervises `unit` as `want` says until it is removed (`None`); the
/// caller aborting the task leaves the processes running (adopted again
/// by the next supervisor).
pub async fn supervise(
    unit: String,
    env: Arc<Env>,
    peers: Peers,
    mut want: watch::Receiver<Option<Want>>,
    status: watch::Sender<Status>,
) {
    let journal = env.journals.writer(&unit);
    let mut sup = Sup {
        unit,
        env,
        peers,
        journal,
        status,
        starts: VecDeque::new(),
        delay: None,
    };
    let mut phase = sup.adopt().await;
    let mut last: Option<Arc<UnitFile>> = None;
    loop {
        let w = want.borrow_and_update().clone();
        let Some(w) = w else {
            sup.stop(last.as_deref(), phase).await;
            sup.env.cgroups.remove(&sup.unit);
            return;
        };
        last = Some(Arc::clone(&w.file));
        if w.generation != sup.status.borrow().generation {
            sup.status.send_modify(|s| {
                s.generation = w.generation;
                s.restarts = 0;
            });
            sup.starts.clear();
            sup.delay = None;
            if matches!(phase, Phase::Running(_) | Phase::Exited) {
                sup.journal
                    .line("herd", &format!("Restarting {} as asked.", sup.unit));
                sup.stop(Some(&w.file), phase).await;
            }
            phase = Phase::Idle;
        }
        if !w.run {
            if !matches!(phase, Phase::Idle) {
                sup.stop(Some(&w.file), phase).await;
                sup.starts.clear();
                sup.delay = None;
                sup.set("inactive", "dead", None, None);
            }
            phase = Phase::Idle;
            if want.changed().await.is_err() {
                return;
            }
            continue;
        }
        phase = match phase {
            Phase::Idle => match sup.await_order(&w.file, &mut want).await {
                Some(Gate::Go) => sup.try_start(&w.file, &mut want).await,
                Some(Gate::Fail(why)) => {
                    sup.journal.line("herd", &format!("{}: {why}.", sup.unit));
                    sup.set("failed", "failed", None, Some(why));
                    Phase::Failed
                }
                // What is wanted changed while it waited: look again.
                Some(Gate::Wait(_)) => Phase::Idle,
                None => return,
            },
            Phase::Waiting(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => sup.try_start(&w.file, &mut want).await,
                    r = want.changed() => {
                        if r.is_err() { return; }
                        Phase::Waiting(at)
                    }
                }
            }
            Phase::Running(mut main) => {
                tokio::select! {
                    exit = wait_main(&mut main, &sup.env.cgroups, &sup.unit) => sup.after_exit(&w.file, exit).await,
                    r = want.changed() => {
                        if r.is_err() { return; }
                        Phase::Running(main)
                    }
                    why = sup.requirement_stops(&w.file) => {
                        sup.journal.line("herd", &format!("{}: {why}.", sup.unit));
                        sup.stop(Some(&w.file), Phase::Running(main)).await;
                        sup.set("inactive", "dead", None, Some(why));
                        Phase::Idle
                    }
                }
            }
            p @ (Phase::Exited | Phase::Finished | Phase::Failed) => {
                if want.changed().await.is_err() {
                    return;
                }
                p
            }
        };
    }
}

/// Waits for the main process to end.
async fn wait_main(main: &mut Main, cgroups: &Cgroups, unit: &str) -> Exit {
    match main {
        Main::Child(c) => match c.wait().await {
            Ok(s) => describe_exit(s),
            Err(e) => Exit {
                success: false,
                text: format!("cannot wait for it: {e}"),
            },
        },
        Main::Pid(pid) => {
            let pid = *pid;
            loop {
                let (c, u) = (cgroups.clone(), unit.to_owned());
                let alive = tokio::task::spawn_blocking(move || c.procs(&u).contains(&pid))
                    .await
                    .unwrap_or(false);
                if !alive {
                    // Not our child: its status is not ours to read.
                    return Exit {
                        success: false,
                        text: "code=exited, status=unknown (not a child of this agent)".into(),
                    };
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

fn describe_exit(s: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => Exit {
            success: c == 0,
            text: format!("code=exited, status={c}"),
        },
        (None, Some(sig)) => Exit {
            success: false,
            text: format!("code=killed, signal={sig}"),
        },
        _ => Exit {
            success: false,
            text: "code=unknown".into(),
        },
    }
}

/// How often a waiting or running unit looks at the units it depends
/// on: they are on this machine, so looking is a map lookup.
const ORDER_POLL: Duration = Duration::from_millis(250);

impl Sup {
    /// Waits until the unit's order lets it start ([`order::gate`]); the
    /// wait is shown in its status. `Some(Gate::Wait)`: what is wanted
    /// changed meanwhile; `None`: the unit was removed.
    async fn await_order(
        &self,
        file: &UnitFile,
        want: &mut watch::Receiver<Option<Want>>,
    ) -> Option<Gate> {
        loop {
            match order::gate(&self.unit, file, &(self.peers)()) {
                Gate::Wait(why) => {
                    if self.status.borrow().message.as_deref() != Some(why.as_str()) {
                        self.journal.line("herd", &format!("{}: {why}.", self.unit));
                    }
                    self.set("inactive", "dead", None, Some(why.clone()));
                    tokio::select! {
                        () = tokio::time::sleep(ORDER_POLL) => {}
                        r = want.changed() => return r.is_ok().then_some(Gate::Wait(why)),
                    }
                }
                done => return Some(done),
            }
        }
    }

    /// Resolves when a requirement of the running unit is stopped.
    async fn requirement_stops(&self, file: &UnitFile) -> String {
        loop {
            if let Some(why) = order::stopped_requirement(file, &(self.peers)()) {
                return why;
            }
            tokio::time::sleep(ORDER_POLL).await;
        }
    }

    /// A start that ran its course without leaving the unit active.
    fn finished(&self) {
        self.set("inactive", "dead", None, None);
        self.status
            .send_if_modified(|s| !std::mem::replace(&mut s.completed, true));
    }

    fn set(
        &self,
        active: &'static str,
        sub: &'static str,
        main_pid: Option<u32>,
        message: Option<String>,
    ) {
        self.status.send_if_modified(|s| {
            let changed = s.active != active
                || s.sub != sub
                || s.main_pid != main_pid
                || s.message != message;
            s.completed = matches!(active, "active" | "failed");
            if s.active != active {
                s.since = SystemTime::now();
            }
            s.active = active;
            s.sub = sub;
            s.main_pid = main_pid;
            s.message = message;
            changed
        });
    }

    fn run_state(&self) -> PathBuf {
        self.env.run_dir.join(format!("{}.json", self.unit))
    }

    /// A populated group from an earlier run of the agent: running.
    async fn adopt(&mut self) -> Phase {
        let (c, u, path) = (
            self.env.cgroups.clone(),
            self.unit.clone(),
            self.run_state(),
        );
        let found = tokio::task::spawn_blocking(move || {
            let procs = c.procs(&u);
            if procs.is_empty() && !c.populated(&u) {
                return None;
            }
            let state: Option<RunState> = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let (pid, generation) = match state {
                Some(s) if procs.contains(&s.main_pid) => (s.main_pid, s.generation),
                Some(s) => (procs.first().copied().unwrap_or(0), s.generation),
                None => (procs.first().copied().unwrap_or(0), 0),
            };
            Some((pid, generation))
        })
        .await
        .ok()
        .flatten();
        match found {
            Some((pid, generation)) => {
                self.status.send_modify(|s| s.generation = generation);
                self.set("active", "running", Some(pid), None);
                self.journal.line(
                    "herd",
                    &format!(
                        "Adopted {} (main pid {pid}) after an agent restart.",
                        self.unit
                    ),
                );
                Phase::Running(Main::Pid(pid))
            }
            None => Phase::Idle,
        }
    }

    /// Starts unless the start limit is hit; a start interrupted by a
    /// change of what is wanted is undone.
    async fn try_start(
        &mut self,
        file: &UnitFile,
        want: &mut watch::Receiver<Option<Want>>,
    ) -> Phase {
        let now = Instant::now();
        let window = file.unit.start_limit_interval;
        while self
            .starts
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.starts.pop_front();
        }
        if file.unit.start_limit_burst > 0
            && self.starts.len() >= file.unit.start_limit_burst as usize
        {
            let msg = format!(
                "start request repeated too quickly ({} starts within {:?})",
                self.starts.len(),
                window
            );
            self.journal
                .line("herd", &format!("{}: {msg}; failed.", self.unit));
            self.set("failed", "failed", None, Some(msg));
            return Phase::Failed;
        }
        self.starts.push_back(now);
        let started = tokio::select! {
            r = self.start(file) => Some(r),
            _ = want.changed() => None,
        };
        match started {
            None => {
                self.journal.line("herd", "Start interrupted.");
                self.stop(Some(file), Phase::Idle).await;
                Phase::Idle
            }
            Some(Ok(Some(main))) => Phase::Running(main),
            Some(Ok(None)) if file.service.remain_after_exit => {
                self.set("active", "exited", None, None);
                Phase::Exited
            }
            Some(Ok(None)) => {
                self.finished();
                Phase::Finished
            }
            Some(Err(why)) => {
                self.journal
                    .line("herd", &format!("Failed to start {}: {why}", self.unit));
                self.stop(Some(file), Phase::Idle).await;
                self.failed_or_restart(file, why)
            }
        }
    }

    /// After the main process ended by itself: the stop sequence, then a
    /// restart if the policy says so.
    async fn after_exit(&mut self, file: &UnitFile, exit: Exit) -> Phase {
        self.journal
            .line("herd", &format!("Main process exited, {}", exit.text));
        let ran = self.starts.back().map(|t| t.elapsed()).unwrap_or_default();
        self.stop(Some(file), Phase::Idle).await;
        let again = match file.service.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !exit.success,
            RestartPolicy::No => false,
        };
        if again {
            // A unit that ran long enough starts its back-off afresh.
            if ran > file.unit.start_limit_interval.max(Duration::from_secs(10)) {
                self.delay = None;
            }
            return self.schedule_restart(file, if exit.success { None } else { Some(exit.text) });
        }
        if exit.success {
            self.finished();
            Phase::Finished
        } else {
            self.set(
                "failed",
                "failed",
                None,
                Some(format!("main process exited, {}", exit.text)),
            );
            Phase::Failed
        }
    }

    fn failed_or_restart(&mut self, file: &UnitFile, why: String) -> Phase {
        if file.service.restart != RestartPolicy::No {
            return self.schedule_restart(file, Some(why));
        }
        self.set("failed", "failed", None, Some(why));
        Phase::Failed
    }

    fn schedule_restart(&mut self, file: &UnitFile, why: Option<String>) -> Phase {
        let svc = &file.service;
        let delay = self
            .delay
            .map_or(svc.restart_sec, |d| (d * 2).min(svc.restart_max_delay));
        self.delay = Some(delay);
        let n = self.status.borrow().restarts + 1;
        self.status.send_modify(|s| s.restarts = n);
        self.journal.line(
            "herd",
            &format!("Scheduled restart in {delay:?}, restart counter is at {n}."),
        );
        self.set("activating", "auto-restart", None, why);
        Phase::Waiting(Instant::now() + delay)
    }
}
