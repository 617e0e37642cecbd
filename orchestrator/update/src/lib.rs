//! The OS update role of the agent (update_engine + locksmith, with a
//! health gate): it checks the Omaha server with jitter, downloads the
//! payload resumably, checks its hashes and signature, writes the passive
//! A/B slot, takes the cluster's reboot lock (a store semaphore that never
//! lets the store lose its quorum), drains, activates the slot with a boot
//! try counter and reboots; after the reboot it marks the slot good only
//! once the machine is healthy in the cluster, then gives the lock back.
//! A slot that does not become healthy is given up and the old one boots.
//!
//! The role is a controller written with the kit: it reconciles this
//! machine's `UpdateStatus` and wakes on changes of the reboot lock;
//! [`engine`] holds the state machine. Roles meet only through the store:
//! the drain record is the contract with the roles that place work
//! (`herd_client::keys::DrainRecord`), and [`health::HealthCheck`] is how
//! they join the gate.

pub mod config;
pub mod download;
pub mod drain;
pub mod engine;
pub mod health;
pub mod local;
pub mod lock;
pub mod omaha;
pub mod quorum;
pub mod reboot;
pub mod slots;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use herd_client::Client;
use herd_client::keys::UpdateStatus;
use herd_client::kit::{Backoff, Controller, Scope};
use tokio_util::sync::CancellationToken;

pub use config::UpdateSettings;
pub use engine::{Engine, Machine};
pub use health::{CheckFuture, Gate, HealthCheck, Verdict};

/// Where the image says which version it is.
pub const VERSION_FILE: &str = "/usr/share/herd/version";

/// Why the role could not be set up on this machine.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Disk(#[from] slots::DiskError),
    #[error(transparent)]
    Local(#[from] local::LocalError),
    #[error("{path}: {reason}")]
    Version { path: String, reason: String },
    #[error("update settings: {0}")]
    Settings(String),
}

/// The running image's version.
pub fn running_version(path: &Path) -> Result<herd_omaha::Version, SetupError> {
    let bad = |reason: String| SetupError::Version {
        path: path.display().to_string(),
        reason,
    };
    std::fs::read_to_string(path)
        .map_err(|e| bad(e.to_string()))?
        .trim()
        .parse()
        .map_err(|e: herd_omaha::version::VersionError| bad(e.to_string()))
}

/// The role for the machine it runs on (a disk boot): its disk, the
/// image's key and version, the remembered state, the gate with the store
/// and image checks plus `extra` (the other roles' checks). Blocking.
pub fn local_engine(
    settings: UpdateSettings,
    machine_id: &str,
    hostname: &str,
    boot_id: &str,
    client: Client,
    extra: Vec<Arc<dyn HealthCheck>>,
) -> Result<Engine, SetupError> {
    settings.validate().map_err(SetupError::Settings)?;
    let version = running_version(Path::new(VERSION_FILE))?;
    let disk = slots::Disk::local(settings.data_dir.join("scratch"))?;
    let state = local::load(&settings.data_dir)?;
    let machine = Machine {
        machine_id: machine_id.to_owned(),
        hostname: hostname.to_owned(),
        boot_id: boot_id.to_owned(),
        version,
    };
    let mut gate = Gate::new()
        .with(health::StoreMember {
            client: client.clone(),
            machine_id: machine_id.to_owned(),
            boot_id: boot_id.to_owned(),
        })
        .with(health::ImageChecks {
            dir: health::IMAGE_CHECKS.into(),
        });
    for c in extra {
        gate = gate.with_arc(c);
    }
    let omaha = settings.server.as_ref().map(|s| {
        omaha::OmahaClient::new(
            herd_http::Client::new().with_timeout(Duration::from_secs(20)),
            s,
            &settings.group,
            machine_id,
        )
    });
    Ok(Engine::new(
        settings,
        machine,
        client,
        omaha,
        Arc::new(disk),
        gate,
        Arc::new(reboot::SystemReboot),
        herd_http::Client::new().with_timeout(Duration::from_secs(60)),
        state,
    ))
}

/// Runs the role until `cancel` fires: sorts out what the last boot left
/// (retrying while the disk cannot be read), then reconciles.
pub async fn run(engine: Arc<Engine>, cancel: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        match engine::boot(&engine).await {
            Ok(()) => break,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::error!(error = %e, ?delay, "update role: cannot resolve the last boot; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    let id = engine.machine.machine_id.clone();
    let mut controller =
        Controller::<UpdateStatus>::new("update", engine.client.clone(), Scope::Name(id.clone()))
            .seed([id.clone()])
            .concurrency(1);
    // A change of the reboot lock may be this machine's turn.
    controller.watches::<lock::Holder>(Scope::All, move |_, _| vec![id.clone()]);
    controller
        .run(
            engine,
            |engine: Arc<Engine>, _request| async move { engine.step().await },
            cancel,
        )
        .await;
}
