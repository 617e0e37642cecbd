//! The runner on every machine: a kit controller over this machine's
//! placements (`placements/<machine>/…`, never anyone else's), one
//! supervisor task per placed unit, and the reports of what they do.
//!
//! It stops a unit only when its placement is gone or asks for `loaded`:
//! a store that is slow, unreachable or changing leader delays news, it
//! never stops or restarts a running unit. Units left running by an
//! earlier run of the agent are adopted; those no longer placed here (the
//! engine moved them while this machine was away) are stopped.

pub mod cgroup;
pub mod journal;
pub mod order;
pub mod process;
pub mod report;
pub mod service;
pub mod sim;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_client::Client;
use herd_client::kit::{Action, Controller, Request, Scope};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::records::{DesiredState, Placement, Report};
use crate::store::Store;
use crate::unit::{MachineFacts, UnitFile};
use service::{Status, Want};

/// How units run on this machine.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Real processes in cgroups, journals on disk.
    Processes {
        cgroup_root: PathBuf,
        /// Journals (`journal/`) and run state (`run/`).
        state_dir: PathBuf,
        journal_max_bytes: u64,
    },
    /// Nothing runs; units report running (the benchmark).
    Simulated,
}

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub machine: MachineFacts,
    pub backend: Backend,
    /// TTL of the reports' lease.
    pub report_ttl: Duration,
}

struct Handle {
    id: u64,
    want: watch::Sender<Option<Want>>,
    status: watch::Receiver<Status>,
    text: String,
    file: Option<Arc<UnitFile>>,
}

/// One machine's runner; shared with the API that serves its status.
pub struct Runner {
    config: RunnerConfig,
    env: Option<Arc<service::Env>>,
    units: Mutex<HashMap<String, Handle>>,
    tasks: Mutex<JoinSet<()>>,
    reports: mpsc::UnboundedSender<report::Update>,
    /// Taken by [`run`].
    reports_rx: Mutex<Option<mpsc::UnboundedReceiver<report::Update>>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// What the API tells about one unit here.
#[derive(Debug, Clone)]
pub struct LocalStatus {
    pub status: Status,
    pub description: String,
    pub file: Option<Arc<UnitFile>>,
}

impl Runner {
    /// The supervisors' view of the other units here (for their order);
    /// weak, so a supervisor never keeps its runner alive.
    fn peers(self: &Arc<Self>) -> order::Peers {
        let me = Arc::downgrade(self);
        Arc::new(move || {
            let Some(runner) = me.upgrade() else {
                return order::Snapshot::new();
            };
            let units = runner.units.lock().unwrap_or_else(|p| p.into_inner());
            units
                .iter()
                .map(|(name, h)| {
                    let peer = order::Peer {
                        launched: h.want.borrow().as_ref().is_some_and(|w| w.run),
                        status: h.status.borrow().clone(),
                        file: h.file.clone(),
                    };
                    (name.clone(), peer)
                })
                .collect()
        })
    }

    pub fn machine_id(&self) -> &str {
        &self.config.machine.machine_id
    }

    /// The journals of this machine's units (none when simulated).
    pub fn journals(&self) -> Option<journal::Journals> {
        self.env.as_ref().map(|e| e.journals.clone())
    }

    pub fn cgroups(&self) -> Option<cgroup::Cgroups> {
        self.env.as_ref().map(|e| e.cgroups.clone())
    }

    /// The supervisor's view of `unit`, if it is placed here.
    pub fn status(&self, unit: &str) -> Option<LocalStatus> {
        let units = self.units.lock().unwrap_or_else(|p| p.into_inner());
        let h = units.get(unit)?;
        Some(LocalStatus {
            status: h.status.borrow().clone(),
            description: h
                .file
                .as_ref()
                .map(|f| f.unit.description.clone())
                .unwrap_or_default(),
            file: h.file.clone(),
        })
    }

    fn report(&self, unit: &str, status: &Status, load: &str) -> Report {
        Report {
            unit: unit.parse().expect("placed units have valid names"),
            machine: self.config.machine.machine_id.clone(),
            load: load.to_owned(),
            active: status.active.to_owned(),
            sub: status.sub.to_owned(),
            main_pid: status.main_pid,
            since: humantime::format_rfc3339_seconds(status.since).to_string(),
            restarts: status.restarts,
            generation: status.generation,
            message: status.message.clone(),
        }
    }

    /// Starts a supervisor for `unit` (wanting `want` from the start).
    fn supervise(
        self: &Arc<Self>,
        unit: &str,
        text: String,
        file: Option<Arc<UnitFile>>,
        want: Option<Want>,
    ) {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (want_tx, want_rx) = watch::channel(want);
        let (status_tx, status_rx) = watch::channel(Status::default());
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        match &self.env {
            Some(env) => {
                tasks.spawn(service::supervise(
                    unit.to_owned(),
                    Arc::clone(env),
                    self.peers(),
                    want_rx,
                    status_tx,
                ));
            }
            None => {
                tasks.spawn(sim::supervise(want_rx, status_tx));
            }
        }
        // Forwards status changes to the reports; when the supervisor
        // ends (unit removed) the report goes and the handle with it.
        let (me, name, mut rx) = (Arc::clone(self), unit.to_owned(), status_rx.clone());
        tasks.spawn(async move {
            loop {
                let s = rx.borrow_and_update().clone();
                let _ = me
                    .reports
                    .send((name.clone(), Some(me.report(&name, &s, "loaded"))));
                if rx.changed().await.is_err() {
                    break;
                }
            }
            let _ = me.reports.send((name.clone(), None));
            let mut units = me.units.lock().unwrap_or_else(|p| p.into_inner());
            if units.get(&name).is_some_and(|h| h.id == id) {
                units.remove(&name);
            }
        });
        self.units.lock().unwrap_or_else(|p| p.into_inner()).insert(
            unit.to_owned(),
            Handle {
                id,
                want: want_tx,
                status: status_rx,
                text,
                file,
            },
        );
    }
}

async fn reconcile(
    runner: Arc<Runner>,
    req: Request<Placement>,
) -> Result<Action, std::convert::Infallible> {
    let Some((_, unit)) = crate::records::split_name(&req.name) else {
        return Ok(Action::AwaitChange);
    };
    let Some(placement) = req.object.map(|o| o.value) else {
        // Gone (or stale from before a restart): stop and forget.
        let exists = {
            let units = runner.units.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = units.get(unit) {
                h.want.send_replace(None);
                true
            } else {
                false
            }
        };
        if !exists && runner.env.is_some() {
            runner.supervise(unit, String::new(), None, None);
        }
        return Ok(Action::AwaitChange);
    };
    let file = match UnitFile::parse(
        &placement.unit,
        &placement.text,
        Some(&runner.config.machine),
    ) {
        Ok(f) => Arc::new(f),
        Err(e) => {
            let status = Status {
                active: "inactive",
                sub: "dead",
                message: Some(e.to_string()),
                ..Status::default()
            };
            let _ = runner
                .reports
                .send((unit.to_owned(), Some(runner.report(unit, &status, "error"))));
            return Ok(Action::AwaitChange);
        }
    };
    let want = Want {
        file: Arc::clone(&file),
        run: placement.target == DesiredState::Launched,
        generation: placement.restarts,
    };
    let existing = {
        let mut units = runner.units.lock().unwrap_or_else(|p| p.into_inner());
        match units.get_mut(unit) {
            Some(h) => {
                let same = h.text == placement.text
                    && h.want
                        .borrow()
                        .as_ref()
                        .is_some_and(|w| w.run == want.run && w.generation == want.generation);
                if !same {
                    h.text = placement.text.clone();
                    h.file = Some(Arc::clone(&file));
                    h.want.send_replace(Some(want.clone()));
                }
                true
            }
            None => false,
        }
    };
    if !existing {
        runner.supervise(unit, placement.text.clone(), Some(file), Some(want));
    }
    Ok(Action::AwaitChange)
}

impl Runner {
    pub fn new(config: RunnerConfig) -> Arc<Runner> {
        let env = match &config.backend {
            Backend::Processes {
                cgroup_root,
                state_dir,
                journal_max_bytes,
            } => Some(Arc::new(service::Env {
                cgroups: cgroup::Cgroups::new(cgroup_root.clone()),
                journals: journal::Journals {
                    dir: state_dir.join("journal"),
                    max_bytes: *journal_max_bytes,
                },
                run_dir: state_dir.join("run"),
            })),
            Backend::Simulated => None,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Runner {
            config,
            env,
            units: Mutex::new(HashMap::new()),
            tasks: Mutex::new(JoinSet::new()),
            reports: tx,
            reports_rx: Mutex::new(Some(rx)),
            next_id: std::sync::atomic::AtomicU64::new(0),
        })
    }
}

/// Runs `runner` until `cancel` fires (once per runner). On cancel the
/// supervisors are dropped and the units keep running, to be adopted by
/// the next run.
pub async fn run(
    runner: Arc<Runner>,
    client: Client,
    stats: Arc<crate::store::Stats>,
    cancel: CancellationToken,
) {
    let machine = runner.config.machine.machine_id.clone();
    let Some(rx) = runner
        .reports_rx
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    else {
        tracing::error!("a runner runs only once");
        return;
    };
    let store = Store {
        client: client.clone(),
        stats,
    };
    let reporter_cancel = CancellationToken::new();
    let reporter = tokio::spawn(report::run(
        store,
        machine.clone(),
        runner.config.report_ttl,
        rx,
        reporter_cancel.clone(),
    ));
    let leftovers = match &runner.env {
        Some(e) => {
            let c = e.cgroups.clone();
            tokio::task::spawn_blocking(move || c.existing())
                .await
                .unwrap_or_default()
        }
        None => Vec::new(),
    };
    let controller =
        Controller::<Placement>::new("units-runner", client, Scope::Names(format!("{machine}/")))
            .seed(leftovers.into_iter().map(|u| Placement::name(&machine, &u)))
            .concurrency(8);
    controller.run(Arc::clone(&runner), reconcile, cancel).await;
    // Supervisors go; their units keep running (see the doc).
    runner
        .tasks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .abort_all();
    reporter_cancel.cancel();
    let _ = reporter.await;
}
