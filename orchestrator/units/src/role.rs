//! The units role as the agent runs it: this machine's runner, a
//! candidate for the cluster's engine, and the API routes that serve the
//! runner's units.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use herd_client::Client;
use tokio_util::sync::CancellationToken;

use crate::engine::{self, EngineConfig};
use crate::runner::{self, Backend, Runner, RunnerConfig};
use crate::store::Stats;
use crate::unit::MachineFacts;

/// The role's settings, from the agent's flags.
#[derive(Debug, Clone)]
pub struct UnitsSettings {
    /// The cgroup units run under; `None`: `herd.units` under the cgroup2
    /// mount (mounted on /sys/fs/cgroup when nothing is).
    pub cgroup_root: Option<PathBuf>,
    /// Journals and run state.
    pub state_dir: PathBuf,
    /// How long a lost machine keeps its units.
    pub grace: Duration,
    pub journal_max_bytes: u64,
}

/// Why the role could not start.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error("no cgroup2 file system is mounted and mounting one on /sys/fs/cgroup failed: {0}")]
    Mount(std::io::Error),
}

/// Where units' groups go when not configured.
fn default_cgroup_root() -> Result<PathBuf, RoleError> {
    if let Some(m) = runner::cgroup::cgroup2_mount() {
        return Ok(m.join("herd.units"));
    }
    // The herd OS mounts nothing there; the runner does.
    let target = std::ffi::CString::new("/sys/fs/cgroup").expect("no NUL");
    let fstype = std::ffi::CString::new("cgroup2").expect("no NUL");
    // SAFETY: mount with valid NUL-terminated strings and no data.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(RoleError::Mount(std::io::Error::last_os_error()));
    }
    Ok(PathBuf::from("/sys/fs/cgroup/herd.units"))
}

/// The role, ready to run.
pub struct UnitsRole {
    runner: Arc<Runner>,
    client: Client,
    engine: EngineConfig,
    stats: Arc<Stats>,
}

impl UnitsRole {
    /// Prepares the role for `machine`. Blocking (looks at mounts): call
    /// from `spawn_blocking` or before the runtime is busy.
    pub fn new(
        client: Client,
        machine: MachineFacts,
        settings: UnitsSettings,
    ) -> Result<UnitsRole, RoleError> {
        let cgroup_root = match settings.cgroup_root {
            Some(r) => r,
            None => default_cgroup_root()?,
        };
        let engine = EngineConfig {
            grace: settings.grace,
            candidate: machine.machine_id.clone(),
            ..EngineConfig::default()
        };
        let runner = Runner::new(RunnerConfig {
            machine,
            backend: Backend::Processes {
                cgroup_root,
                state_dir: settings.state_dir,
                journal_max_bytes: settings.journal_max_bytes,
            },
            report_ttl: Duration::from_secs(60),
        });
        Ok(UnitsRole {
            runner,
            client,
            engine,
            stats: Arc::default(),
        })
    }

    /// The routes this role adds to the agent's API.
    pub fn routes(&self) -> axum::Router {
        crate::api::routes(Arc::clone(&self.runner))
    }

    /// Runs the runner and the engine candidate until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let engine = engine::run(
            self.client.clone(),
            self.engine,
            Arc::clone(&self.stats),
            cancel.clone(),
        );
        let runner = runner::run(self.runner, self.client, self.stats, cancel);
        tokio::join!(engine, runner);
    }
}
