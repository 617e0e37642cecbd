//! `herd pxe publish` and `herd pxe updates`: the update server's
//! subcommands, at the binary's edge (the part of `crate::cli` about
//! updates, kept beside the code it drives).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use herd_cli::{Output, Table};

use super::client::Target;
use super::policy::{OfficeHours, PolicyPatch};
use super::service::UpdatesStatus;

/// Where `publish` and `updates` act: a running server or a state dir.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// The provisioning server's HTTPS admin address [default:
    /// https://127.0.0.1:8443]; its plain `http://` address serves reading
    /// (`herd pxe updates`) only.
    #[arg(long, env = "HERD_PXE_SERVER", conflicts_with = "state_dir")]
    pub server: Option<String>,
    /// The server's admin CA (its `<state-dir>/admin/ca.crt`), which its
    /// HTTPS certificate must chain to [default: the one in
    /// /var/lib/herd/pxe, when this is the server's machine].
    #[arg(long, env = "HERD_PXE_CACERT", conflicts_with = "state_dir")]
    pub cacert: Option<PathBuf>,
    /// The server's admin token (`<state-dir>/api.token` of the server);
    /// also `HERD_PXE_TOKEN` (the token itself).
    #[arg(long, env = "HERD_PXE_TOKEN_FILE", conflicts_with = "state_dir")]
    pub token_file: Option<PathBuf>,
    /// Act on the state directory of a server that is not running.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

impl TargetArgs {
    fn target(&self, needs_token: bool) -> anyhow::Result<Target> {
        if let Some(dir) = &self.state_dir {
            return Ok(Target::StateDir(dir.clone()));
        }
        let url = self
            .server
            .clone()
            .unwrap_or_else(|| "https://127.0.0.1:8443".into());
        // Reading needs no token: it is not sent, so a plain `http://`
        // server is fine for that.
        let token = match (&self.token_file, std::env::var("HERD_PXE_TOKEN").ok()) {
            _ if !needs_token => None,
            (Some(path), _) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading --token-file {}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            (None, Some(t)) => Some(t),
            (None, None) => bail!(
                "this changes the server: give --token-file (the server's <state-dir>/api.token) or HERD_PXE_TOKEN"
            ),
        };
        let ca = admin_ca(self.cacert.as_deref())?;
        Ok(Target::server(&url, token, ca.as_deref())?)
    }
}

/// The admin CA to pin (PEM): `--cacert`, or on the server's own machine
/// the one in its default state dir; `None` when neither exists.
pub(crate) fn admin_ca(cacert: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    let default_ca =
        crate::http::admin_tls::ca_file(std::path::Path::new(crate::server::DEFAULT_STATE_DIR));
    let path = match cacert {
        Some(path) => path.to_path_buf(),
        None if default_ca.is_file() => default_ca,
        None => return Ok(None),
    };
    std::fs::read_to_string(&path)
        .map(Some)
        .with_context(|| format!("reading --cacert {}", path.display()))
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The output directory of `herd image build` (manifest.json,
    /// update.payload, update.payload.sig).
    pub dir: PathBuf,
    /// The group (Omaha track) whose machines get it.
    #[arg(long, default_value = "stable")]
    pub group: String,
    /// Publish a version older than the group's release (and let the group
    /// offer downgrades).
    #[arg(long)]
    pub allow_downgrade: bool,
    #[command(flatten)]
    pub target: TargetArgs,
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct UpdatesArgs {
    #[command(subcommand)]
    pub action: Option<UpdatesAction>,
    #[command(flatten)]
    pub target: TargetArgs,
    #[arg(short, long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
}

#[derive(Debug, Subcommand)]
pub enum UpdatesAction {
    /// Lift a safe-mode halt: the group's rollout goes on.
    Resume { group: String },
    /// Change a group's rollout policy (only the options given).
    Policy(PolicyArgs),
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    pub group: String,
    #[arg(long)]
    pub enabled: Option<bool>,
    /// Machines that must succeed before the rest are offered a release.
    #[arg(long)]
    pub canary: Option<u32>,
    /// A failed or timed-out update halts the rollout until resumed.
    #[arg(long)]
    pub safe_mode: Option<bool>,
    /// Updates that may start per --period (0: no limit).
    #[arg(long)]
    pub max_per_period: Option<u32>,
    #[arg(long, value_parser = humantime::parse_duration)]
    pub period: Option<Duration>,
    /// How long one machine's update may take, offer to healthy.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// `HH:MM-HH:MM` in UTC, or `none`.
    #[arg(long)]
    pub office_hours: Option<String>,
    #[arg(long)]
    pub allow_downgrade: Option<bool>,
}

pub async fn publish(a: PublishArgs) -> anyhow::Result<()> {
    let target = a.target.target(true)?;
    let release = target
        .publish(&a.dir, &a.group, a.allow_downgrade)
        .await
        .with_context(|| format!("publishing {} into group {}", a.dir.display(), a.group))?;
    a.output.print(&release, |r| {
        format!(
            "published {} into group {}: payload {} bytes (sha256 {}), kernel {}\n",
            r.version, a.group, r.payload.size, r.payload.sha256, r.kernel
        )
    })?;
    Ok(())
}

pub async fn updates(a: UpdatesArgs) -> anyhow::Result<()> {
    match a.action {
        None => {
            let status = a.target.target(false)?.status().await?;
            a.output.print(&status, table)?;
        }
        Some(UpdatesAction::Resume { group }) => {
            let g = a.target.target(true)?.resume(&group).await?;
            a.output
                .print(&g, |g| format!("group {}: rollout resumed\n", g.id))?;
        }
        Some(UpdatesAction::Policy(p)) => {
            let office_hours = match p.office_hours.as_deref() {
                None => None,
                Some("none") => Some(None),
                Some(s) => Some(Some(s.parse::<OfficeHours>().map_err(anyhow::Error::msg)?)),
            };
            let patch = PolicyPatch {
                updates_enabled: p.enabled,
                canary: p.canary,
                safe_mode: p.safe_mode,
                max_updates_per_period: p.max_per_period,
                period: p.period,
                update_timeout: p.timeout,
                office_hours,
                allow_downgrade: p.allow_downgrade,
            };
            let g = a.target.target(true)?.set_policy(&p.group, &patch).await?;
            a.output
                .print(&g, |g| format!("group {}: {:?}\n", g.id, g.policy))?;
        }
    }
    Ok(())
}

fn table(s: &UpdatesStatus) -> String {
    let dash = |o: Option<String>| o.unwrap_or_else(|| "-".into());
    let mut groups = Table::new([
        "GROUP",
        "RELEASE",
        "UPDATED",
        "UPDATING",
        "FAILED",
        "WAITING",
        "CANARY",
        "SAFE MODE",
        "STATE",
    ]);
    for g in &s.groups {
        groups.row([
            g.id.clone(),
            dash(g.release.as_ref().map(ToString::to_string)),
            g.progress.updated.to_string(),
            g.progress.in_flight.to_string(),
            g.progress.failed.to_string(),
            g.progress.waiting.to_string(),
            g.policy.canary.to_string(),
            if g.policy.safe_mode { "on" } else { "off" }.into(),
            match (&g.halt_reason, g.policy.updates_enabled) {
                (Some(r), _) => format!("halted: {r}"),
                (None, false) => "disabled".into(),
                (None, true) => "rolling".into(),
            },
        ]);
    }
    let mut machines = Table::new([
        "MACHINE",
        "GROUP",
        "VERSION",
        "STATE",
        "TARGET",
        "LAST EVENT",
    ]);
    for m in &s.machines {
        machines.row([
            m.machine_id.clone(),
            m.group.clone(),
            m.version.to_string(),
            m.state.to_string(),
            dash(m.target.as_ref().map(ToString::to_string)),
            dash(m.last_event.clone()),
        ]);
    }
    format!("{}\n{}", groups.render(), machines.render())
}
