//! Unit files in systemd's format, parsed at the edge into types: the
//! [`lexer`] splits the text, [`words`] reads values, the `[Unit]`,
//! `[Service]`, `[Install]` and `[X-Fleet]` sections become typed fields
//! here and in [`service`] and [`fleet`]. An unknown section or key is an
//! error naming the file, the line and the key (fleet silently ignored
//! them, so a typo ran a unit without its constraint).

pub mod fleet;
pub mod glob;
pub mod lexer;
pub mod name;
pub mod service;
pub mod words;

use std::time::Duration;

pub use fleet::FleetSection;
pub use name::{Kind, UnitName};
pub use service::{ExecCommand, KillMode, RestartPolicy, ServiceSection, ServiceType};
pub use words::{MachineFacts, Specifiers};

/// Why a unit file or name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("unit name {name:?} {reason}")]
    Name { name: String, reason: String },
    #[error("{file}:{line}: {reason}")]
    Syntax {
        file: String,
        line: usize,
        reason: String,
    },
    #[error(
        "{file}:{line}: unknown section [{section}]: herd knows [Unit], [Service], [Install] and [X-Fleet]"
    )]
    UnknownSection {
        file: String,
        line: usize,
        section: String,
    },
    #[error("{file}:{line}: unknown key {key:?} in [{section}]")]
    UnknownKey {
        file: String,
        line: usize,
        section: String,
        key: String,
    },
    #[error("{file}:{line}: {key}: {reason}")]
    Value {
        file: String,
        line: usize,
        key: String,
        reason: String,
    },
    #[error("{file}: {reason}")]
    Invalid { file: String, reason: String },
}

/// The `[Unit]` section.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UnitSection {
    pub description: String,
    pub documentation: Vec<String>,
    /// Ordering and dependencies between units on the same machine.
    pub after: Vec<UnitName>,
    pub before: Vec<UnitName>,
    pub requires: Vec<UnitName>,
    pub wants: Vec<UnitName>,
    /// More than `start_limit_burst` starts within this interval: `failed`.
    pub start_limit_interval: Duration,
    pub start_limit_burst: u32,
}

/// A parsed unit file.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitFile {
    pub name: UnitName,
    pub unit: UnitSection,
    pub service: ServiceSection,
    pub fleet: FleetSection,
}

/// Reads one entry's value; errors name the file, line and key.
pub(crate) struct At<'a> {
    pub file: &'a str,
    pub entry: &'a lexer::Entry,
}

impl At<'_> {
    pub fn err(&self, reason: impl Into<String>) -> UnitError {
        UnitError::Value {
            file: self.file.to_owned(),
            line: self.entry.line,
            key: self.entry.key.clone(),
            reason: reason.into(),
        }
    }

    pub fn words(&self, value: &str) -> Result<Vec<String>, UnitError> {
        words::split(value).map_err(|r| self.err(r))
    }

    pub fn units(&self, value: &str) -> Result<Vec<UnitName>, UnitError> {
        self.words(value)?
            .iter()
            .map(|w| UnitName::parse(w).map_err(|e| self.err(e.to_string())))
            .collect()
    }

    pub fn timespan(&self, value: &str) -> Result<Option<Duration>, UnitError> {
        words::timespan(value).map_err(|r| self.err(r))
    }
}

/// Whether systemd expands `%` specifiers in this setting (not in, say,
/// `CPUQuota=50%`).
fn takes_specifiers(section: &str, key: &str) -> bool {
    section == "X-Fleet"
        || key.starts_with("Exec")
        || matches!(
            key,
            "Description"
                | "Documentation"
                | "After"
                | "Before"
                | "Requires"
                | "Wants"
                | "Environment"
                | "EnvironmentFile"
                | "WorkingDirectory"
                | "User"
                | "Group"
                | "PIDFile"
        )
}

impl UnitFile {
    /// Parses `text` as the unit `name` (for an instance, pass its
    /// template's text). `machine` expands `%H %m %b`; without it they stay
    /// as written.
    pub fn parse(
        name: &UnitName,
        text: &str,
        machine: Option<&MachineFacts>,
    ) -> Result<UnitFile, UnitError> {
        let file = name.as_str();
        let spec = Specifiers {
            name: name.to_string(),
            name_no_suffix: name.without_suffix().to_owned(),
            prefix: name.prefix().to_owned(),
            instance: name.instance().to_owned(),
            machine: machine.cloned(),
        };
        let entries = lexer::lex(file, text)?;
        let mut unit = UnitSection {
            start_limit_interval: Duration::from_secs(10),
            start_limit_burst: 5,
            ..Default::default()
        };
        let mut service = service::Builder::default();
        let mut fleet = fleet::Builder::default();
        let mut seen_service = false;
        for entry in &entries {
            let at = At { file, entry };
            let fleet_section = entry.section == "X-Fleet";
            let value = if takes_specifiers(&entry.section, &entry.key) {
                words::expand(&entry.value, &spec, fleet_section).map_err(|r| at.err(r))?
            } else {
                entry.value.clone()
            };
            let unknown = || UnitError::UnknownKey {
                file: file.to_owned(),
                line: entry.line,
                section: entry.section.clone(),
                key: entry.key.clone(),
            };
            match entry.section.as_str() {
                "Unit" => match entry.key.as_str() {
                    "Description" => unit.description = value,
                    "Documentation" => unit.documentation.extend(at.words(&value)?),
                    "After" => unit.after.extend(at.units(&value)?),
                    "Before" => unit.before.extend(at.units(&value)?),
                    "Requires" => unit.requires.extend(at.units(&value)?),
                    "Wants" => unit.wants.extend(at.units(&value)?),
                    "StartLimitIntervalSec" | "StartLimitInterval" => {
                        unit.start_limit_interval = at.timespan(&value)?.unwrap_or(Duration::ZERO)
                    }
                    "StartLimitBurst" => {
                        unit.start_limit_burst = value
                            .parse()
                            .map_err(|_| at.err(format!("{value:?} is not a count")))?
                    }
                    _ => return Err(unknown()),
                },
                "Service" => {
                    seen_service = true;
                    if !service.set(&at, &value)? {
                        // Older systemd spelled these in [Service].
                        match entry.key.as_str() {
                            "StartLimitIntervalSec" | "StartLimitInterval" => {
                                unit.start_limit_interval =
                                    at.timespan(&value)?.unwrap_or(Duration::ZERO)
                            }
                            "StartLimitBurst" => {
                                unit.start_limit_burst = value
                                    .parse()
                                    .map_err(|_| at.err(format!("{value:?} is not a count")))?
                            }
                            _ => return Err(unknown()),
                        }
                    }
                }
                // Enablement has no meaning here: a unit runs when its
                // desired state says so. Accepted so fleet-era files load.
                "Install" => match entry.key.as_str() {
                    "WantedBy" | "RequiredBy" | "Alias" | "Also" | "DefaultInstance" => {}
                    _ => return Err(unknown()),
                },
                "X-Fleet" => {
                    if !fleet.set(&at, &value)? {
                        return Err(unknown());
                    }
                }
                other => {
                    return Err(UnitError::UnknownSection {
                        file: file.to_owned(),
                        line: entry.section_line,
                        section: other.to_owned(),
                    });
                }
            }
        }
        if !seen_service {
            return Err(UnitError::Invalid {
                file: file.to_owned(),
                reason: "has no [Service] section".into(),
            });
        }
        let service = service.finish(file)?;
        let fleet = fleet.finish(name)?;
        Ok(UnitFile {
            name: name.clone(),
            unit,
            service,
            fleet,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, text: &str) -> Result<UnitFile, UnitError> {
        UnitFile::parse(&UnitName::parse(name).unwrap(), text, None)
    }

    const WEB: &str = "\
[Unit]
Description=Web %i
After=db.service
Requires=db.service

[Service]
Type=simple
Environment=\"PORT=%i\" MODE=prod
ExecStartPre=-/usr/bin/docker rm -f %p-%i
ExecStart=/usr/bin/docker run --name %p-%i -p %i:80 \\
    nginx
ExecStop=/usr/bin/docker stop %p-%i
Restart=always
RestartSec=2s
TimeoutStopSec=20
KillMode=mixed
KillSignal=SIGINT
MemoryMax=256M
CPUQuota=50%
CPUWeight=200
User=nobody

[Install]
WantedBy=multi-user.target

[X-Fleet]
Conflicts=web@*.service
MachineMetadata=\"zone=a\" zone=b role=web
";

    #[test]
    fn a_fleet_era_template_instance_parses_into_types() {
        let u = parse("web@8080.service", WEB).unwrap();
        assert_eq!(u.unit.description, "Web 8080");
        assert_eq!(u.unit.after, [UnitName::parse("db.service").unwrap()]);
        let s = &u.service;
        assert_eq!(s.kind, ServiceType::Simple);
        assert_eq!(
            s.environment,
            [
                ("PORT".into(), "8080".into()),
                ("MODE".into(), "prod".into())
            ]
        );
        assert!(s.exec_start_pre[0].ignore_failure);
        assert_eq!(
            s.exec_start_pre[0].argv,
            ["/usr/bin/docker", "rm", "-f", "web-8080"]
        );
        assert_eq!(s.exec_start[0].argv.last().unwrap(), "nginx");
        assert_eq!(s.restart, RestartPolicy::Always);
        assert_eq!(s.restart_sec, Duration::from_secs(2));
        assert_eq!(s.timeout_stop, Some(Duration::from_secs(20)));
        assert_eq!(s.kill_mode, KillMode::Mixed);
        assert_eq!(s.kill_signal, libc::SIGINT);
        assert_eq!(s.memory_max, Some(256 << 20));
        assert_eq!(s.cpu_quota_percent, Some(50));
        assert_eq!(s.cpu_weight, Some(200));
        assert_eq!(s.user.as_deref(), Some("nobody"));
        assert_eq!(u.fleet.conflicts, ["web@*.service"]);
        assert_eq!(u.fleet.metadata["zone"], ["a", "b"]);
        assert_eq!(u.fleet.metadata["role"], ["web"]);
    }

    #[test]
    fn unknown_keys_and_sections_name_file_line_and_key() {
        let e = parse(
            "a.service",
            "[Service]\nExecStart=/bin/true\nRestart=always\nMachineID=x\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "a.service:4: unknown key \"MachineID\" in [Service]"
        );
        let e = parse(
            "a.service",
            "[Service]\nExecStart=/bin/true\n[X-Fleet]\nMachineMetdata=a=b\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "a.service:4: unknown key \"MachineMetdata\" in [X-Fleet]"
        );
        let e = parse("a.service", "[Socket]\nListenStream=80\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("a.service:1: unknown section [Socket]"),
            "{e}"
        );
        let e = parse(
            "a.service",
            "[Service]\nExecStart=/bin/true\nRestart=sometimes\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("a.service:3: Restart:"), "{e}");
        let e = parse("a.service", "[Unit]\nDescription=x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no [Service]"), "{e}");
        let e = parse("a.service", "[Service]\nExecStart=/bin/echo %x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.service:2") && e.contains("%x"), "{e}");
        let e = parse(
            "a.service",
            "[Service]\nExecStart=/bin/true\n[X-Fleet]\nMachineOf=%H.service\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("a.service:4") && e.contains("%H"), "{e}");
    }

    #[test]
    fn machine_specifiers_expand_on_the_machine() {
        let text = "[Service]\nExecStart=/bin/echo %H %m %b\n";
        let name = UnitName::parse("a.service").unwrap();
        let u = UnitFile::parse(&name, text, None).unwrap();
        assert_eq!(
            u.service.exec_start[0].argv,
            ["/bin/echo", "%H", "%m", "%b"]
        );
        let facts = MachineFacts {
            hostname: "m1".into(),
            machine_id: "42".into(),
            boot_id: "b00t".into(),
        };
        let u = UnitFile::parse(&name, text, Some(&facts)).unwrap();
        assert_eq!(
            u.service.exec_start[0].argv,
            ["/bin/echo", "m1", "42", "b00t"]
        );
    }
}
