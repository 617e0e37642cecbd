//! Starting a unit: its commands' context (environment, directory,
//! user), their output into the journal, and the start sequence
//! (`ExecStartPre=`, the main process by `Type=`, `ExecStartPost=`).

use std::path::PathBuf;

use tokio::io::AsyncBufReadExt;
use tokio::time::Instant;

use super::{Main, RunState, Sup, describe_exit};
use crate::runner::cgroup::Limits;
use crate::runner::process::{self, Context};
use crate::unit::{ExecCommand, ServiceType, UnitFile};

impl Sup {
    /// The environment, directory and user of `file`'s commands.
    pub(super) async fn context(&self, file: &UnitFile) -> Result<Context, String> {
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

    pub(super) fn pipe_output(&self, child: &mut tokio::process::Child) {
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

    pub(super) fn spawn(
        &self,
        cmd: &ExecCommand,
        ctx: &Context,
    ) -> Result<tokio::process::Child, String> {
        let argv = process::expand_vars(&cmd.argv, &ctx.env);
        let mut child = process::spawn(&argv, cmd.argv0.as_deref(), ctx)
            .map_err(|e| format!("{}: {e} (status=203/EXEC)", argv[0]))?;
        self.pipe_output(&mut child);
        Ok(child)
    }

    /// Runs one command to its end (or `deadline`); a failure is an
    /// error unless the command has the `-` prefix.
    pub(super) async fn run(
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
    pub(super) async fn start(&mut self, file: &UnitFile) -> Result<Option<Main>, String> {
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
}
