//! `herd lab demo`: the seed talk's demo replayed on a Docker lab. Builds
//! its images from Debian packages and pushes them to the lab registry,
//! then tells the story in seven steps — Postgres behind a service,
//! pgview with a memcache in every pod, scaled to three, a canary, a
//! rolling update under load, a deleted pod, a machine powered off —
//! printing each command as a person would type it (`herd lab exec --
//! herd …`, on the manifests under `demo/`), checking what the step
//! claims, and ending with a summary of every step and its time.
//!
//! The kube verbs run as `herd` processes in the lab network, because
//! the demo shows exactly the commands a person can repeat by hand;
//! images and power go through the library.

pub mod files;
pub mod images;
pub mod report;
pub mod shell;
pub mod story;
pub mod traffic;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use crate::lab::{Lab, LabError};
use crate::layout::{self, MachineId};
pub use report::Outcome;
use shell::Shell;

/// The service range the machines' proxies serve (the agents' default).
pub const SERVICE_RANGE: &str = "10.0.0.0/16";
/// The machine whose API the demo talks to, and the route to the service
/// range goes through; never powered off by the demo.
const FRONT: u8 = 1;
/// The story needs three machines (spreading, and one to lose).
pub const MACHINES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the demo needs a Docker lab of at least {MACHINES} machines, all powered on; this one: {0} (`herd lab down`, then `herd lab demo` brings one up)"
    )]
    Lab3(String),
    #[error("image {image}: {reason}")]
    Image { image: String, reason: String },
    #[error("`{command}` failed ({status}):\n{output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error("expected {expected} within {within:?}; last seen: {last}")]
    Timeout {
        expected: String,
        within: Duration,
        last: String,
    },
    #[error("expected {expected}; got {got}")]
    Unexpected { expected: String, got: String },
}

/// A running demo: the lab, its network, the demo's files and commands.
pub struct Demo<'a> {
    lab: &'a Lab,
    netns: String,
    /// `LAB/demo`: the manifests, app sources and built images.
    dir: PathBuf,
    sh: Shell,
    http: herd_http::Client,
}

type StepFuture<'a> = Pin<Box<dyn Future<Output = Result<String, DemoError>> + 'a>>;
type Step = for<'a, 'b> fn(&'a Demo<'b>) -> StepFuture<'a>;

const STEPS: [(&str, Step); 7] = [
    ("postgres, its volume and service", |d| {
        Box::pin(d.postgres())
    }),
    ("pgview with memcache, v1", |d| Box::pin(d.pgview())),
    ("scale to three", |d| Box::pin(d.scale())),
    ("canary v2 and its service", |d| Box::pin(d.canary())),
    ("rolling update to v2 under load", |d| {
        Box::pin(d.rolling_update())
    }),
    ("delete a pod", |d| Box::pin(d.replace_pod())),
    ("power off a machine", |d| Box::pin(d.power_off())),
];

impl<'a> Demo<'a> {
    /// Checks the lab can host the demo.
    pub fn new(lab: &'a Lab) -> Result<Demo<'a>, DemoError> {
        let state = lab.state()?;
        let on = state
            .machines
            .iter()
            .filter(|m| lab.vm_pid(m).is_some())
            .count();
        if !state.docker || on < MACHINES || on != state.machines.len() {
            return Err(DemoError::Lab3(format!(
                "{} machines, {on} powered on, {}",
                state.machines.len(),
                if state.docker { "Docker" } else { "no Docker" }
            )));
        }
        let front = MachineId::new(FRONT).expect("m1 exists");
        let [ca, cert, key] = crate::pki::files(&lab.dir);
        let env = vec![
            (
                "HERD_API_SERVER",
                format!("https://{}:6443", front.ip()).into(),
            ),
            ("HERD_CACERT", ca.into_os_string()),
            ("HERD_CERT", cert.into_os_string()),
            ("HERD_KEY", key.into_os_string()),
        ];
        Ok(Demo {
            lab,
            dir: lab.dir.join("demo"),
            sh: Shell::new(lab.herd.clone(), state.netns.clone(), env),
            http: traffic::client(&state.netns),
            netns: state.netns,
        })
    }

    /// Runs the story; with `step`, waits for Enter before each step.
    /// Returns every step's outcome (the last one failed if any did).
    pub async fn run(&self, step: bool) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        let steps = std::iter::once(("images, route and cluster", None))
            .chain(STEPS.iter().map(|(t, f)| (*t, Some(*f))));
        for (n, (title, f)) in steps.enumerate() {
            let n = n as u8;
            if step {
                wait_for_enter(n, title).await;
            }
            self.sh.say(&format!("\n== step {n}: {title} =="));
            let started = Instant::now();
            let result = match f {
                None => self.prepare().await,
                Some(f) => f(self).await,
            };
            let ok = result.is_ok();
            let result = result.unwrap_or_else(|e| e.to_string());
            self.sh
                .say(&format!("{} {result}", if ok { "✓" } else { "✗" }));
            outcomes.push(Outcome {
                step: n,
                title,
                took: started.elapsed(),
                ok,
                command: (!ok).then(|| self.sh.last()),
                result,
            });
            if !ok {
                break;
            }
        }
        outcomes
    }

    /// Step 0: files, images, the route to the service range, every node
    /// Ready, nothing left from an earlier run.
    async fn prepare(&self) -> Result<String, DemoError> {
        files::write(&self.dir).map_err(|source| DemoError::Io {
            what: "writing the demo's files into",
            path: self.dir.clone(),
            source,
        })?;
        let say = |line: &str| println!("{line}");
        images::build_and_push(&self.dir, &self.netns, &say).await?;
        let front = MachineId::new(FRONT).expect("m1 exists").ip().to_string();
        self.sh
            .run_tool(
                "ip",
                &[
                    "route",
                    "replace",
                    SERVICE_RANGE,
                    "via",
                    &front,
                    "dev",
                    layout::BRIDGE,
                ],
            )
            .await?;
        let machines = self.lab.state()?.machines.len();
        shell::until(
            &format!("{machines} nodes Ready"),
            Duration::from_secs(600),
            Duration::from_secs(3),
            || async move {
                let nodes = self.sh.seen(&["get", "nodes"]).await?;
                let ready = shell::items(&nodes)
                    .iter()
                    .filter(|n| {
                        n["status"]["conditions"].as_array().is_some_and(|c| {
                            c.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                    })
                    .count();
                if ready == machines {
                    Ok(())
                } else {
                    Err(format!("{ready} Ready"))
                }
            },
        )
        .await?;
        self.clean().await?;
        Ok(format!(
            "{} images in the lab registry; {SERVICE_RANGE} routed via m{FRONT}; {machines} nodes Ready",
            images::IMAGES.len()
        ))
    }

    /// Removes what an earlier run left, and waits for its pods to go.
    async fn clean(&self) -> Result<(), DemoError> {
        let mut args = vec!["delete".to_owned(), "--ignore-not-found".to_owned()];
        for f in [
            files::PSQL,
            files::PGVIEW_CANARY,
            files::PGVIEW_SERVICE,
            files::PGVIEW_RC,
            files::POSTGRES,
        ] {
            args.push("-f".into());
            args.push(self.dir.join(f).display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // Nothing to delete is fine; what is left is waited for below.
        let _ = self.sh.quiet(&args).await;
        shell::until(
            "no pods left from an earlier run",
            Duration::from_secs(300),
            Duration::from_secs(3),
            || async move {
                let pods = self.sh.seen(&["get", "pods"]).await?;
                let left: Vec<_> = shell::items(&pods)
                    .into_iter()
                    .filter(|p| {
                        let n = shell::name(p);
                        n == "postgres" || n == "psql" || n.starts_with("pgview")
                    })
                    .collect();
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(shell::describe(&left))
                }
            },
        )
        .await
    }
}

async fn wait_for_enter(n: u8, title: &'static str) {
    println!("\n[press Enter for step {n}: {title}]");
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)
    })
    .await;
}
