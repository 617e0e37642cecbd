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
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::cgroup::{Cgroups, Limits};
use super::journal::{JournalWriter, Journals};
use super::process::{self, Context};
use crate::unit::{ExecCommand, KillMode, RestartPolicy, ServiceType, UnitFile};

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
    mut want: watch::Receiver<Option<Want>>,
    status: watch::Sender<Status>,
) {
    let journal = env.journals.writer(&unit);
    let mut sup = Sup {
        unit,
        env,
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
            Phase::Idle => sup.try_start(&w.file, &mut want).await,
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

impl Sup {
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
                self.set("inactive", "dead", None, None);
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

    /// The environment, directory and user of `file`'s commands.
    async fn context(&self, file: &UnitFile) -> Result<Context, String> {
        let svc = file.service.clone();
        let procs = self.env.cgroups.group(&self.unit).join("cgroup.procs");
        tokio::task::spawn_blocking(move || {
            let mut env = vec![("PATH".to_owned(), process::DEFAULT_PATH.to_owned())];
            let creds = process::credentials(svc.user.as_deref(), svc.group.as_deref())?;
            let mut home = "/".to_owned();
            if let Some((_, name, h, shell)) = &creds {
                for (k, v) in [
                    ("HOME", h),
                    ("USER", name),
                    ("LOGNAME", name),
                    ("SHELL", shell),
                ] {
                    env.push((k.to_owned(), v.clone()));
                }
                home = h.clone();
            }
            env.extend(svc.environment.iter().cloned());
            for (path, optional) in &svc.environment_files {
                match process::environment_file(path) {
                    Ok(vars) => env.extend(vars),
                    Err(_) if *optional => {}
                    Err(e) => return Err(format!("EnvironmentFile={}: {e}", path.display())),
                }
            }
            let cwd = match &svc.working_directory {
                None => PathBuf::from("/"),
                Some((p, _)) if p.as_os_str() == "~" => PathBuf::from(&home),
                Some((p, optional)) if !p.is_dir() => {
                    if *optional {
                        PathBuf::from("/")
                    } else {
                        return Err(format!(
                            "WorkingDirectory={}: no such directory",
                            p.display()
                        ));
                    }
                }
                Some((p, _)) => p.clone(),
            };
            Ok(Context {
                env,
                cwd,
                credentials: creds.map(|c| c.0),
                cgroup_procs: procs,
            })
        })
        .await
        .map_err(|e| format!("preparing the command: {e}"))?
    }

    fn pipe_output(&self, child: &mut tokio::process::Child) {
        for (source, reader) in [
            (
                "stdout",
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            ),
            (
                "stderr",
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            ),
        ] {
            let Some(reader) = reader else { continue };
            let journal = self.journal.clone();
            // Ends at EOF: when every process holding the pipe is gone.
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(reader).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    journal.line(source, &l);
                }
            });
        }
    }

    fn spawn(&self, cmd: &ExecCommand, ctx: &Context) -> Result<tokio::process::Child, String> {
        let argv = process::expand_vars(&cmd.argv, &ctx.env);
        let mut child = process::spawn(&argv, cmd.argv0.as_deref(), ctx)
            .map_err(|e| format!("{}: {e} (status=203/EXEC)", argv[0]))?;
        self.pipe_output(&mut child);
        Ok(child)
    }

    /// Runs one command to its end (or `deadline`); a failure is an
    /// error unless the command has the `-` prefix.
    async fn run(
        &self,
        what: &str,
        cmd: &ExecCommand,
        ctx: &Context,
        deadline: Option<Instant>,
    ) -> Result<(), String> {
        let mut child = match self.spawn(cmd, ctx) {
            Ok(c) => c,
            Err(e) if cmd.ignore_failure => {
                self.journal.line("herd", &format!("{what} {e} (ignored)"));
                return Ok(());
            }
            Err(e) => return Err(format!("{what} {e}")),
        };
        let status = match deadline {
            Some(d) => match tokio::time::timeout_at(d, child.wait()).await {
                Ok(s) => s,
                Err(_) => return Err(format!("{what} {} timed out", cmd.argv[0])),
            },
            None => child.wait().await,
        };
        let exit = status
            .map(describe_exit)
            .map_err(|e| format!("{what}: {e}"))?;
        if !exit.success {
            if cmd.ignore_failure {
                self.journal.line(
                    "herd",
                    &format!("{what} {} failed ({}), ignored", cmd.argv[0], exit.text),
                );
            } else {
                return Err(format!("{what} {} failed ({})", cmd.argv[0], exit.text));
            }
        }
        Ok(())
    }

    /// Runs the start sequence; `Ok(None)`: a oneshot that completed.
    async fn start(&mut self, file: &UnitFile) -> Result<Option<Main>, String> {
        let svc = &file.service;
        let desc = if file.unit.description.is_empty() {
            self.unit.clone()
        } else {
            file.unit.description.clone()
        };
        self.journal.line("herd", &format!("Starting {desc}..."));
        let limits = Limits {
            memory_max: svc.memory_max,
            cpu_quota_percent: svc.cpu_quota_percent,
            cpu_weight: svc.cpu_weight,
        };
        let (c, u) = (self.env.cgroups.clone(), self.unit.clone());
        tokio::task::spawn_blocking(move || c.create(&u, &limits))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("resources: {e}"))?;
        let ctx = self.context(file).await?;
        let deadline = svc.timeout_start.map(|t| Instant::now() + t);
        self.set("activating", "start-pre", None, None);
        for cmd in &svc.exec_start_pre {
            self.run("ExecStartPre", cmd, &ctx, deadline).await?;
        }
        self.set("activating", "start", None, None);
        let main = match svc.kind {
            ServiceType::Simple => {
                let child = self
                    .spawn(&svc.exec_start[0], &ctx)
                    .map_err(|e| format!("ExecStart {e}"))?;
                Some(Main::Child(child))
            }
            ServiceType::Oneshot => {
                for cmd in &svc.exec_start {
                    self.run("ExecStart", cmd, &ctx, deadline).await?;
                }
                None
            }
            ServiceType::Forking => {
                self.run("ExecStart", &svc.exec_start[0], &ctx, deadline)
                    .await?;
                let (c, u, pidfile) = (
                    self.env.cgroups.clone(),
                    self.unit.clone(),
                    svc.pid_file.clone(),
                );
                let pid = tokio::task::spawn_blocking(move || {
                    let procs = c.procs(&u);
                    let from_file = pidfile
                        .and_then(|p| std::fs::read_to_string(p).ok())
                        .and_then(|t| t.trim().parse::<u32>().ok());
                    match from_file {
                        Some(p) if procs.contains(&p) => Ok(p),
                        Some(p) => Err(format!(
                            "PIDFile names pid {p}, which is not in the unit's group"
                        )),
                        None if procs.len() == 1 => Ok(procs[0]),
                        None if procs.is_empty() => Err("the forked daemon exited".to_owned()),
                        None => Err(format!(
                            "{} processes left and no PIDFile= to tell the main one",
                            procs.len()
                        )),
                    }
                })
                .await
                .map_err(|e| e.to_string())??;
                Some(Main::Pid(pid))
            }
        };
        let pid = main.as_ref().and_then(Main::pid);
        if !svc.exec_start_post.is_empty() {
            self.set("activating", "start-post", pid, None);
            for cmd in &svc.exec_start_post {
                if let Err(e) = self.run("ExecStartPost", cmd, &ctx, deadline).await {
                    // The main process is running: the caller's stop takes it down.
                    if let Some(Main::Child(mut c)) = main {
                        self.env.cgroups.kill(&self.unit);
                        let _ = c.wait().await;
                    }
                    return Err(e);
                }
            }
        }
        if let Some(pid) = pid {
            let state = RunState {
                main_pid: pid,
                generation: self.status.borrow().generation,
            };
            let path = self.run_state();
            let _ = tokio::fs::create_dir_all(&self.env.run_dir).await;
            let _ = tokio::fs::write(&path, serde_json::to_vec(&state).expect("serializes")).await;
            self.set("active", "running", Some(pid), None);
            self.journal
                .line("herd", &format!("Started {desc} (main pid {pid})."));
        } else {
            self.journal.line("herd", &format!("Finished {desc}."));
        }
        Ok(main)
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
            self.set("inactive", "dead", None, None);
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

    /// The stop sequence (see the module doc); ends with the group empty
    /// unless `KillMode=process|none` left processes on purpose.
    async fn stop(&mut self, file: Option<&UnitFile>, phase: Phase) {
        let main = match phase {
            Phase::Running(m) => Some(m),
            _ => None,
        };
        let populated = {
            let (c, u) = (self.env.cgroups.clone(), self.unit.clone());
            tokio::task::spawn_blocking(move || c.populated(&u))
                .await
                .unwrap_or(false)
        };
        let Some(file) = file else {
            // Stale from an earlier run, with no file to say how: kill it.
            if populated || main.is_some() {
                self.journal.line(
                    "herd",
                    &format!("Stopping stale {}: it is placed elsewhere now.", self.unit),
                );
                self.env.cgroups.kill(&self.unit);
                self.wait_empty(Duration::from_secs(5)).await;
            }
            let _ = tokio::fs::remove_file(self.run_state()).await;
            self.set("inactive", "dead", None, None);
            return;
        };
        if main.is_none() && !populated && file.service.exec_stop_post.is_empty() {
            let _ = tokio::fs::remove_file(self.run_state()).await;
            return;
        }
        let svc = &file.service;
        let pid = main.as_ref().and_then(Main::pid);
        self.set("deactivating", "stop", pid, None);
        self.journal
            .line("herd", &format!("Stopping {}...", self.unit));
        let deadline = svc.timeout_stop.map(|t| Instant::now() + t);
        let ctx = self.context(file).await.ok();
        if let Some(ctx) = &ctx
            && main.is_some()
        {
            let mut ctx = ctx.clone();
            if let Some(p) = pid {
                ctx.env.push(("MAINPID".into(), p.to_string()));
            }
            for cmd in &svc.exec_stop {
                if let Err(e) = self.run("ExecStop", cmd, &ctx, deadline).await {
                    self.journal.line("herd", &e);
                }
            }
        }
        let signal_main = |sig: i32| {
            if let Some(p) = pid {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe {
                    libc::kill(p as libc::pid_t, sig);
                    libc::kill(p as libc::pid_t, libc::SIGCONT);
                }
            }
        };
        match svc.kill_mode {
            KillMode::ControlGroup => {
                self.env.cgroups.signal_all(&self.unit, svc.kill_signal);
                self.env.cgroups.signal_all(&self.unit, libc::SIGCONT);
            }
            KillMode::Mixed | KillMode::Process => signal_main(svc.kill_signal),
            KillMode::None => {}
        }
        let mut main = main;
        let gone = self.wait_stopped(&mut main, svc.kill_mode, deadline).await;
        if !gone && svc.send_sigkill {
            self.journal.line("herd", "Stop timed out; killing.");
            match svc.kill_mode {
                KillMode::ControlGroup | KillMode::Mixed => self.env.cgroups.kill(&self.unit),
                KillMode::Process => signal_main(libc::SIGKILL),
                KillMode::None => {}
            }
            self.wait_stopped(
                &mut main,
                svc.kill_mode,
                Some(Instant::now() + Duration::from_secs(5)),
            )
            .await;
        }
        if let Some(ctx) = &ctx
            && !svc.exec_stop_post.is_empty()
        {
            self.set("deactivating", "stop-post", None, None);
            for cmd in &svc.exec_stop_post {
                if let Err(e) = self
                    .run(
                        "ExecStopPost",
                        cmd,
                        ctx,
                        Some(Instant::now() + svc.timeout_stop.unwrap_or(Duration::from_secs(90))),
                    )
                    .await
                {
                    self.journal.line("herd", &e);
                }
            }
        }
        if matches!(svc.kill_mode, KillMode::ControlGroup | KillMode::Mixed) {
            // Whatever is left (forked helpers, ExecStopPost leftovers) goes.
            self.env.cgroups.kill(&self.unit);
            self.wait_empty(Duration::from_secs(5)).await;
        }
        let _ = tokio::fs::remove_file(self.run_state()).await;
        self.journal
            .line("herd", &format!("Stopped {}.", self.unit));
    }

    /// Waits until the main process is gone (and, for `control-group`, the
    /// whole group), or `deadline`.
    async fn wait_stopped(
        &self,
        main: &mut Option<Main>,
        mode: KillMode,
        deadline: Option<Instant>,
    ) -> bool {
        let wait = async {
            if let Some(m) = main.as_mut() {
                let _ = wait_main(m, &self.env.cgroups, &self.unit).await;
            }
            if mode == KillMode::ControlGroup {
                self.wait_empty(Duration::MAX).await;
            }
        };
        match deadline {
            Some(d) => tokio::time::timeout_at(d, wait).await.is_ok(),
            None => {
                wait.await;
                true
            }
        }
    }

    async fn wait_empty(&self, limit: Duration) -> bool {
        let end = Instant::now().checked_add(limit);
        loop {
            let (c, u) = (self.env.cgroups.clone(), self.unit.clone());
            if !tokio::task::spawn_blocking(move || c.populated(&u))
                .await
                .unwrap_or(false)
            {
                return true;
            }
            if end.is_some_and(|e| Instant::now() >= e) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
