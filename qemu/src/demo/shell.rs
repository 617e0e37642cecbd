//! The commands the demo runs, as a person would type them: `herd` verbs
//! inside the lab network (what `herd lab exec -- herd …` does, with the
//! first machine's Kubernetes API), each printed before it runs and its
//! output after; the quiet `-o json` queries its checks poll; and the
//! polling itself.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use super::DemoError;

/// How long one command may take (a rolling update of three pods on
/// emulated machines included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20 * 60);

pub struct Shell {
    herd: PathBuf,
    netns: String,
    /// What the commands are given: the API's address and root's
    /// credentials (as `herd lab exec` gives them).
    env: Vec<(&'static str, std::ffi::OsString)>,
    /// The last command printed: named when a step fails.
    last: Mutex<String>,
}

impl Shell {
    pub fn new(
        herd: PathBuf,
        netns: String,
        env: Vec<(&'static str, std::ffi::OsString)>,
    ) -> Shell {
        Shell {
            herd,
            netns,
            env,
            last: Mutex::new(String::new()),
        }
    }

    /// Prints a line of the story (stdout is the narration).
    pub fn say(&self, line: &str) {
        println!("{line}");
    }

    /// Prints a command the demo runs through the library, not a process
    /// (a lab verb, an image build), as a person would type it.
    pub fn announce(&self, command: &str) {
        *self.last.lock().expect("last command") = command.to_owned();
        self.say(&format!("$ {command}"));
    }

    /// The last command announced or run.
    pub fn last(&self) -> String {
        self.last.lock().expect("last command").clone()
    }

    /// Runs `herd ARGS` in the lab network, printed with its output.
    pub async fn run(&self, args: &[&str]) -> Result<String, DemoError> {
        self.announce(&format!("herd lab exec -- herd {}", args.join(" ")));
        let out = self.exec(args).await?;
        for line in out.lines() {
            self.say(&format!("  {line}"));
        }
        Ok(out)
    }

    /// Runs `herd ARGS -o json` quietly and parses its answer.
    pub async fn json(&self, args: &[&str]) -> Result<Value, DemoError> {
        let mut full = args.to_vec();
        full.extend(["-o", "json"]);
        let out = self.exec(&full).await?;
        serde_json::from_str(&out).map_err(|e| DemoError::Unexpected {
            expected: format!("JSON from `herd {}`", full.join(" ")),
            got: format!("{e}: {}", out.chars().take(200).collect::<String>()),
        })
    }

    /// [`Shell::json`] for a probe of [`until`]: a failed command is what
    /// the probe saw this time, not the end of the wait.
    pub async fn seen(&self, args: &[&str]) -> Result<Value, String> {
        self.json(args).await.map_err(|e| e.to_string())
    }

    /// Runs a command (not `herd`) in the lab network, printed.
    pub async fn run_tool(&self, program: &str, args: &[&str]) -> Result<String, DemoError> {
        self.announce(&format!("herd lab exec -- {program} {}", args.join(" ")));
        self.spawn(program, args).await
    }

    /// Runs `herd ARGS` in the lab network without printing it.
    pub async fn quiet(&self, args: &[&str]) -> Result<String, DemoError> {
        self.exec(args).await
    }

    async fn exec(&self, args: &[&str]) -> Result<String, DemoError> {
        let herd = self.herd.display().to_string();
        self.spawn(&herd, args).await
    }

    async fn spawn(&self, program: &str, args: &[&str]) -> Result<String, DemoError> {
        let command = format!("{program} {}", args.join(" "));
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, program])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(COMMAND_TIMEOUT, cmd.output())
            .await
            .map_err(|_| DemoError::Command {
                command: command.clone(),
                status: format!("still running after {COMMAND_TIMEOUT:?}"),
                output: String::new(),
            })?
            .map_err(|e| DemoError::Command {
                command: command.clone(),
                status: format!("could not start: {e}"),
                output: String::new(),
            })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(DemoError::Command {
                command,
                status: out.status.to_string(),
                output: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
            });
        }
        Ok(stdout)
    }
}

/// Calls `probe` every `every` until it answers `Ok`, or fails with what
/// was expected and the last thing it saw after `within`.
pub async fn until<T, F, Fut>(
    expected: &str,
    within: Duration,
    every: Duration,
    mut probe: F,
) -> Result<T, DemoError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let last = match probe().await {
            Ok(v) => return Ok(v),
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(DemoError::Timeout {
                expected: expected.to_owned(),
                within,
                last,
            });
        }
        tokio::time::sleep(every).await;
    }
}

/// The objects of a `-o json` answer: a list's items, or the one object.
pub fn items(v: &Value) -> Vec<Value> {
    match v.get("items").and_then(Value::as_array) {
        Some(items) => items.clone(),
        None if v.is_object() => vec![v.clone()],
        None => Vec::new(),
    }
}

/// Whether a pod is Running and Ready.
pub fn ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

pub fn name(object: &Value) -> String {
    object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

pub fn node(pod: &Value) -> String {
    pod["spec"]["nodeName"].as_str().unwrap_or("-").to_owned()
}

/// `name@node (phase)` of each pod, for "last seen" messages.
pub fn describe(pods: &[Value]) -> String {
    if pods.is_empty() {
        return "no pods".into();
    }
    pods.iter()
        .map(|p| {
            format!(
                "{}@{} ({}{})",
                name(p),
                node(p),
                p["status"]["phase"].as_str().unwrap_or("Pending"),
                if ready(p) { ", ready" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
