//! The `[Service]` section: how the runner starts, watches, restarts and
//! stops a unit's processes.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{At, UnitError, words};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceType {
    /// Active as soon as the main process is running (`exec` and `idle`
    /// behave the same here).
    Simple,
    /// Runs its `ExecStart` lines to completion; active afterwards only
    /// with `RemainAfterExit=yes`.
    Oneshot,
    /// The `ExecStart` process forks and exits; the daemon it leaves is the
    /// main process (from `PIDFile=`, or the one process left in the group).
    Forking,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    No,
    OnFailure,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KillMode {
    /// Every process of the unit's cgroup gets the signal (the default).
    ControlGroup,
    /// The main process gets the signal; whatever is left, SIGKILL.
    Mixed,
    /// Only the main process is signalled.
    Process,
    /// Nothing is signalled: only `ExecStop=` stops the unit.
    None,
}

/// One `Exec*=` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecCommand {
    /// `-` prefix: a failure of this command is not a failure of the unit.
    pub ignore_failure: bool,
    /// `@` prefix: the second word is argv\[0\].
    pub argv0: Option<String>,
    /// The program (absolute, or looked up in `PATH`) and its arguments;
    /// `$VAR` and `${VAR}` expand from the unit's environment when run.
    pub argv: Vec<String>,
}

impl std::fmt::Display for ExecCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ignore_failure {
            f.write_str("-")?;
        }
        f.write_str(&self.argv.join(" "))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSection {
    pub kind: ServiceType,
    pub exec_start_pre: Vec<ExecCommand>,
    pub exec_start: Vec<ExecCommand>,
    pub exec_start_post: Vec<ExecCommand>,
    pub exec_stop: Vec<ExecCommand>,
    pub exec_stop_post: Vec<ExecCommand>,
    pub remain_after_exit: bool,
    pub pid_file: Option<PathBuf>,
    pub restart: RestartPolicy,
    /// The first restart delay; later ones double up to `restart_max_delay`.
    pub restart_sec: Duration,
    pub restart_max_delay: Duration,
    /// `None`: no limit (`infinity`).
    pub timeout_start: Option<Duration>,
    pub timeout_stop: Option<Duration>,
    pub environment: Vec<(String, String)>,
    /// Paths, each with whether it may be missing (`-` prefix).
    pub environment_files: Vec<(PathBuf, bool)>,
    pub working_directory: Option<(PathBuf, bool)>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub kill_mode: KillMode,
    pub kill_signal: i32,
    pub send_sigkill: bool,
    pub memory_max: Option<u64>,
    /// Percent of one CPU (`CPUQuota=150%` is one and a half).
    pub cpu_quota_percent: Option<u32>,
    pub cpu_weight: Option<u64>,
}

#[derive(Debug, Default)]
pub(super) struct Builder {
    kind: Option<ServiceType>,
    exec_start_pre: Vec<ExecCommand>,
    exec_start: Vec<ExecCommand>,
    exec_start_post: Vec<ExecCommand>,
    exec_stop: Vec<ExecCommand>,
    exec_stop_post: Vec<ExecCommand>,
    remain_after_exit: bool,
    pid_file: Option<PathBuf>,
    restart: Option<RestartPolicy>,
    restart_sec: Option<Duration>,
    restart_max_delay: Option<Duration>,
    timeout_start: Option<Option<Duration>>,
    timeout_stop: Option<Option<Duration>>,
    environment: Vec<(String, String)>,
    environment_files: Vec<(PathBuf, bool)>,
    working_directory: Option<(PathBuf, bool)>,
    user: Option<String>,
    group: Option<String>,
    kill_mode: Option<KillMode>,
    kill_signal: Option<i32>,
    send_sigkill: Option<bool>,
    memory_max: Option<u64>,
    cpu_quota_percent: Option<u32>,
    cpu_weight: Option<u64>,
}

fn valid_env_name(n: &str) -> bool {
    let mut b = n.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn exec(at: &At<'_>, value: &str) -> Result<Option<ExecCommand>, UnitError> {
    let mut rest = value.trim_start();
    let (mut ignore_failure, mut at_sign) = (false, false);
    loop {
        match rest.chars().next() {
            Some('-') => ignore_failure = true,
            Some('@') => at_sign = true,
            Some(c @ ('+' | '!' | ':')) => {
                return Err(at.err(format!(
                    "the {c} prefix is not supported (herd runs units with the unit's User=)"
                )));
            }
            _ => break,
        }
        rest = &rest[1..];
    }
    let mut argv = at.words(rest)?;
    if argv.is_empty() {
        if ignore_failure || at_sign {
            return Err(at.err("a prefix but no command"));
        }
        return Ok(None);
    }
    let argv0 = if at_sign {
        if argv.len() < 2 {
            return Err(at.err("@ needs the program and then argv[0]"));
        }
        Some(argv.remove(1))
    } else {
        None
    };
    if argv[0].is_empty() || argv[0].contains('/') && !argv[0].starts_with('/') {
        return Err(at.err(format!(
            "{:?} is neither an absolute path nor a program name",
            argv[0]
        )));
    }
    Ok(Some(ExecCommand {
        ignore_failure,
        argv0,
        argv,
    }))
}

fn path_opt(at: &At<'_>, value: &str) -> Result<(PathBuf, bool), UnitError> {
    let (optional, p) = match value.strip_prefix('-') {
        Some(p) => (true, p),
        None => (false, value),
    };
    if !p.starts_with('/') {
        return Err(at.err(format!("{p:?} is not an absolute path")));
    }
    Ok((PathBuf::from(p), optional))
}

impl Builder {
    /// Applies one entry; `false` when the key is not a `[Service]` key.
    pub(super) fn set(&mut self, at: &At<'_>, value: &str) -> Result<bool, UnitError> {
        let list = |l: &mut Vec<ExecCommand>| -> Result<(), UnitError> {
            match exec(at, value)? {
                Some(c) => l.push(c),
                // An empty assignment resets the list, as in systemd.
                None => l.clear(),
            }
            Ok(())
        };
        match at.entry.key.as_str() {
            "Type" => {
                self.kind = Some(match value {
                    "simple" | "exec" | "idle" => ServiceType::Simple,
                    "oneshot" => ServiceType::Oneshot,
                    "forking" => ServiceType::Forking,
                    "notify" | "notify-reload" | "dbus" => {
                        return Err(at.err(format!("Type={value} is not supported: there is no sd_notify or D-Bus here (use simple, oneshot or forking)")));
                    }
                    other => {
                        return Err(at.err(format!(
                            "{other:?} is not a service type (simple, exec, oneshot, forking)"
                        )));
                    }
                })
            }
            "ExecStartPre" => list(&mut self.exec_start_pre)?,
            "ExecStart" => list(&mut self.exec_start)?,
            "ExecStartPost" => list(&mut self.exec_start_post)?,
            "ExecStop" => list(&mut self.exec_stop)?,
            "ExecStopPost" => list(&mut self.exec_stop_post)?,
            "RemainAfterExit" => {
                self.remain_after_exit = words::boolean(value).map_err(|r| at.err(r))?
            }
            "PIDFile" => self.pid_file = Some(path_opt(at, value)?.0),
            "Restart" => {
                self.restart = Some(match value {
                    "no" => RestartPolicy::No,
                    "on-failure" | "on-abnormal" | "on-abort" | "on-watchdog" => {
                        RestartPolicy::OnFailure
                    }
                    "always" => RestartPolicy::Always,
                    other => {
                        return Err(at.err(format!(
                            "{other:?} is not a restart policy (no, on-failure, always)"
                        )));
                    }
                })
            }
            "RestartSec" => self.restart_sec = Some(at.timespan(value)?.unwrap_or(Duration::MAX)),
            "RestartMaxDelaySec" => {
                self.restart_max_delay =
                    Some(at.timespan(value)?.unwrap_or(Duration::from_secs(3600)))
            }
            "TimeoutStartSec" => self.timeout_start = Some(at.timespan(value)?),
            "TimeoutStopSec" => self.timeout_stop = Some(at.timespan(value)?),
            "TimeoutSec" => {
                let t = at.timespan(value)?;
                self.timeout_start = Some(t);
                self.timeout_stop = Some(t);
            }
            "Environment" => {
                if value.is_empty() {
                    self.environment.clear();
                }
                for w in at.words(value)? {
                    let Some((k, v)) = w.split_once('=') else {
                        return Err(at.err(format!("{w:?} is not NAME=VALUE")));
                    };
                    if !valid_env_name(k) {
                        return Err(at.err(format!("{k:?} is not a variable name")));
                    }
                    self.environment.retain(|(n, _)| n != k);
                    self.environment.push((k.to_owned(), v.to_owned()));
                }
            }
            "EnvironmentFile" => {
                if value.is_empty() {
                    self.environment_files.clear();
                } else {
                    self.environment_files.push(path_opt(at, value)?);
                }
            }
            "WorkingDirectory" => {
                self.working_directory = match value {
                    "" => None,
                    "~" => Some((PathBuf::from("~"), false)),
                    v => Some(path_opt(at, v)?),
                }
            }
            "User" => self.user = Some(value.to_owned()).filter(|v| !v.is_empty()),
            "Group" => self.group = Some(value.to_owned()).filter(|v| !v.is_empty()),
            "KillMode" => {
                self.kill_mode = Some(match value {
                    "control-group" => KillMode::ControlGroup,
                    "mixed" => KillMode::Mixed,
                    "process" => KillMode::Process,
                    "none" => KillMode::None,
                    other => {
                        return Err(at.err(format!(
                            "{other:?} is not a kill mode (control-group, mixed, process, none)"
                        )));
                    }
                })
            }
            "KillSignal" => self.kill_signal = Some(words::signal(value).map_err(|r| at.err(r))?),
            "SendSIGKILL" => {
                self.send_sigkill = Some(words::boolean(value).map_err(|r| at.err(r))?)
            }
            "MemoryMax" | "MemoryLimit" => {
                self.memory_max = words::size(value).map_err(|r| at.err(r))?
            }
            "CPUQuota" => {
                let p = value
                    .strip_suffix('%')
                    .and_then(|p| p.parse::<u32>().ok())
                    .filter(|p| *p > 0)
                    .ok_or_else(|| at.err(format!("{value:?} is not a percentage (e.g. 50%)")))?;
                self.cpu_quota_percent = Some(p);
            }
            "CPUWeight" => {
                let w = value
                    .parse::<u64>()
                    .ok()
                    .filter(|w| (1..=10000).contains(w))
                    .ok_or_else(|| at.err(format!("{value:?} is not a weight (1 to 10000)")))?;
                self.cpu_weight = Some(w);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub(super) fn finish(self, file: &str) -> Result<ServiceSection, UnitError> {
        let invalid = |reason: &str| UnitError::Invalid {
            file: file.to_owned(),
            reason: reason.to_owned(),
        };
        let kind = self.kind.unwrap_or(ServiceType::Simple);
        let restart = self.restart.unwrap_or(RestartPolicy::No);
        if self.exec_start.is_empty() {
            return Err(invalid("has no ExecStart="));
        }
        if kind != ServiceType::Oneshot && self.exec_start.len() > 1 {
            return Err(invalid(
                "has more than one ExecStart=, which only Type=oneshot allows",
            ));
        }
        if kind == ServiceType::Oneshot && restart == RestartPolicy::Always {
            return Err(invalid(
                "Restart=always is not allowed for Type=oneshot (it would run forever)",
            ));
        }
        let restart_sec = self.restart_sec.unwrap_or(Duration::from_millis(100));
        Ok(ServiceSection {
            kind,
            exec_start_pre: self.exec_start_pre,
            exec_start: self.exec_start,
            exec_start_post: self.exec_start_post,
            exec_stop: self.exec_stop,
            exec_stop_post: self.exec_stop_post,
            remain_after_exit: self.remain_after_exit,
            pid_file: self.pid_file,
            restart,
            restart_sec,
            restart_max_delay: self
                .restart_max_delay
                .unwrap_or(Duration::from_secs(30))
                .max(restart_sec),
            timeout_start: self.timeout_start.unwrap_or(Some(Duration::from_secs(90))),
            timeout_stop: self.timeout_stop.unwrap_or(Some(Duration::from_secs(90))),
            environment: self.environment,
            environment_files: self.environment_files,
            working_directory: self.working_directory,
            user: self.user,
            group: self.group,
            kill_mode: self.kill_mode.unwrap_or(KillMode::ControlGroup),
            kill_signal: self.kill_signal.unwrap_or(libc::SIGTERM),
            send_sigkill: self.send_sigkill.unwrap_or(true),
            memory_max: self.memory_max,
            cpu_quota_percent: self.cpu_quota_percent,
            cpu_weight: self.cpu_weight,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{UnitFile, UnitName};

    fn err(text: &str) -> String {
        UnitFile::parse(&UnitName::parse("a.service").unwrap(), text, None)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn impossible_services_are_refused() {
        assert!(err("[Service]\nType=simple\n").contains("no ExecStart"));
        assert!(
            err("[Service]\nExecStart=/bin/a\nExecStart=/bin/b\n").contains("only Type=oneshot")
        );
        assert!(
            err("[Service]\nType=oneshot\nExecStart=/bin/a\nRestart=always\n").contains("oneshot")
        );
        assert!(err("[Service]\nType=notify\nExecStart=/bin/a\n").contains("sd_notify"));
        assert!(err("[Service]\nExecStart=bin/a\n").contains("absolute"));
        assert!(err("[Service]\nExecStart=+/bin/a\n").contains("prefix"));
        assert!(err("[Service]\nExecStart=/bin/a\nEnvironment=1X=2\n").contains("variable name"));
        assert!(err("[Service]\nExecStart=/bin/a\nCPUQuota=lots\n").contains("percentage"));
    }

    #[test]
    fn empty_assignments_reset_lists() {
        let u = UnitFile::parse(
            &UnitName::parse("a.service").unwrap(),
            "[Service]\nExecStartPre=/bin/a\nExecStartPre=\nExecStart=@/bin/sh mysh -c true\n",
            None,
        )
        .unwrap();
        assert!(u.service.exec_start_pre.is_empty());
        assert_eq!(u.service.exec_start[0].argv0.as_deref(), Some("mysh"));
        assert_eq!(u.service.exec_start[0].argv, ["/bin/sh", "-c", "true"]);
    }
}
