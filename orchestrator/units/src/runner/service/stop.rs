//! Stopping a unit: `ExecStop=`, `KillMode=`/`KillSignal=` within the
//! stop timeout, then whatever is left in its group.

use std::time::Duration;

use tokio::time::Instant;

use super::{Main, Phase, Sup, wait_main};
use crate::unit::{KillMode, UnitFile};

impl Sup {
    /// The stop sequence (see the module doc); ends with the group empty
    /// unless `KillMode=process|none` left processes on purpose.
    pub(super) async fn stop(&mut self, file: Option<&UnitFile>, phase: Phase) {
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
    pub(super) async fn wait_stopped(
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

    pub(super) async fn wait_empty(&self, limit: Duration) -> bool {
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
