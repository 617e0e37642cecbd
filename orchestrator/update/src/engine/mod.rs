//! The update role's state machine. One machine walks through
//! [`Phase`]s: idle (checking now and then) → downloading (files fetched
//! and checked, the passive slot written) → waiting for the reboot lock →
//! draining (quorum checked, drain record, leadership handed over, the
//! slot activated with a try counter) → rebooting → verifying (the health
//! gate, on the new slot) → idle again, with the slot marked good and the
//! lock released; or, when the gate times out, the trial's tries are used
//! up and the machine reboots into its old slot, and reports the failure.
//!
//! Every step saves its phase before its effect is visible elsewhere, so a
//! power loss anywhere resumes from a phase that is true ([`boot`] sorts
//! out what the last boot left). Every step reports an Omaha event (kept
//! until delivered), an `AgentStage::Update` line on the console, and the
//! machine's `UpdateStatus` in the store.

mod boot;
mod steps;

use std::sync::Arc;
use std::time::Duration;

use herd_client::Client;
use herd_client::keys::UpdateStatus;
use herd_client::kit::Resource;
use herd_client::proto::etcdserverpb::{LeaseRevokeRequest, PutRequest};
use herd_client::session::Session;
use herd_client::stage::AgentStage;
use herd_omaha::{Cause, EventResult, EventType, Version};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::UpdateSettings;
use crate::health::Gate;
use crate::local::{self, LocalState, Pending, Phase};
use crate::omaha::OmahaClient;
use crate::reboot::Rebooter;
use crate::slots::Disk;

pub use boot::boot;

/// What the engine knows about the machine it runs on.
#[derive(Debug, Clone)]
pub struct Machine {
    pub machine_id: String,
    pub hostname: String,
    pub boot_id: String,
    /// The OS version running.
    pub version: Version,
}

/// Why a step failed (retried with backoff by the controller).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Local(#[from] local::LocalError),
    #[error(transparent)]
    Store(#[from] herd_client::ClientError),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error(transparent)]
    Quorum(#[from] crate::quorum::QuorumError),
    #[error(transparent)]
    Disk(#[from] crate::slots::DiskError),
}

/// The update role of one machine.
pub struct Engine {
    pub settings: UpdateSettings,
    pub machine: Machine,
    pub client: Client,
    pub omaha: Option<OmahaClient>,
    pub disk: Arc<Disk>,
    pub gate: Gate,
    pub rebooter: Arc<dyn Rebooter>,
    /// Downloads.
    pub http: herd_http::Client,
    state: Mutex<LocalState>,
    next_check: Mutex<Instant>,
    /// The session whose lease holds the reboot lock.
    lock_session: Mutex<Option<Session>>,
    /// What the last report said (not written again unless it changes).
    reported: Mutex<Option<UpdateStatus>>,
    /// Why the role waits or what failed last, for the status.
    detail: Mutex<String>,
    pinged: std::sync::atomic::AtomicBool,
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Engine {
    /// An engine resuming from `state` (loaded by the caller).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: UpdateSettings,
        machine: Machine,
        client: Client,
        omaha: Option<OmahaClient>,
        disk: Arc<Disk>,
        gate: Gate,
        rebooter: Arc<dyn Rebooter>,
        http: herd_http::Client,
        state: LocalState,
    ) -> Engine {
        // The first check comes soon after start, spread by the jitter.
        let first = Instant::now() + jitter(settings.jitter);
        Engine {
            settings,
            machine,
            client,
            omaha,
            disk,
            gate,
            rebooter,
            http,
            state: Mutex::new(state),
            next_check: Mutex::new(first),
            lock_session: Mutex::new(None),
            reported: Mutex::new(None),
            detail: Mutex::new(String::new()),
            pinged: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A copy of the remembered state.
    pub async fn state(&self) -> LocalState {
        self.state.lock().await.clone()
    }

    async fn save(&self, state: &LocalState) -> Result<(), EngineError> {
        let (dir, copy) = (self.settings.data_dir.clone(), state.clone());
        tokio::task::spawn_blocking(move || local::save(&dir, &copy))
            .await
            .expect("saving does not panic")?;
        Ok(())
    }

    /// Changes the phase, durably.
    async fn set_phase(&self, phase: Phase) -> Result<(), EngineError> {
        let mut st = self.state.lock().await;
        st.phase = phase;
        self.save(&st).await
    }

    /// Queues an Omaha event, durably (nothing is queued without a server).
    async fn queue(
        &self,
        kind: EventType,
        result: EventResult,
        cause: Option<Cause>,
        previous: Option<String>,
        next: Option<String>,
    ) -> Result<(), EngineError> {
        if self.omaha.is_none() {
            return Ok(());
        }
        let mut st = self.state.lock().await;
        st.pending.push(Pending {
            kind,
            result,
            error_code: cause.map(Cause::code),
            previous,
            next,
        });
        self.save(&st).await
    }

    /// Delivers queued events (and says which version runs); best effort.
    async fn flush(&self, force: bool) {
        let Some(omaha) = &self.omaha else { return };
        let pending = self.state.lock().await.pending.clone();
        if pending.is_empty() && !force {
            return;
        }
        match omaha
            .exchange(
                &self.machine.version,
                &self.machine.boot_id,
                false,
                &pending,
            )
            .await
        {
            Ok(_) => {
                let mut st = self.state.lock().await;
                let n = pending.len().min(st.pending.len());
                st.pending.drain(..n);
                if let Err(e) = self.save(&st).await {
                    tracing::warn!(error = %e, "saving delivered events");
                }
            }
            Err(e) => {
                tracing::info!(error = %e, events = pending.len(), "events not delivered yet")
            }
        }
    }

    /// One console line and log line for a step.
    fn stage(&self, step: &str, version: &str, detail: Option<String>) {
        tracing::info!(
            step,
            version,
            detail = detail.as_deref().unwrap_or(""),
            "update"
        );
        AgentStage::Update {
            step: step.to_owned(),
            version: version.to_owned(),
            detail,
        }
        .report();
    }

    async fn set_detail(&self, detail: impl Into<String>) {
        *self.detail.lock().await = detail.into();
    }

    /// Writes the machine's `UpdateStatus` when it changed.
    async fn report_status(&self) {
        let (phase, target) = {
            let st = self.state.lock().await;
            (
                st.phase.name().to_owned(),
                st.phase.target().map(str::to_owned),
            )
        };
        let status = UpdateStatus {
            machine_id: self.machine.machine_id.clone(),
            hostname: self.machine.hostname.clone(),
            version: self.machine.version.to_string(),
            phase,
            target,
            detail: self.detail.lock().await.clone(),
            at: unix_now(),
        };
        let mut reported = self.reported.lock().await;
        let same = reported.as_ref().is_some_and(|r| {
            UpdateStatus { at: 0, ..r.clone() }
                == UpdateStatus {
                    at: 0,
                    ..status.clone()
                }
        });
        if same {
            return;
        }
        let put = self
            .client
            .kv()
            .put(PutRequest {
                key: status.key_name().into_bytes(),
                value: status.encode(),
                ..Default::default()
            })
            .await;
        match put {
            Ok(_) => *reported = Some(status),
            Err(e) => tracing::debug!(error = %e.message(), "update status not written yet"),
        }
    }

    /// Gives back a lock lease (with the lock and the drain record).
    async fn release_lease(&self, lease: i64) -> Result<(), EngineError> {
        crate::lock::release(&self.client, &self.machine.machine_id).await?;
        crate::drain::end(&self.client, &self.machine.machine_id).await?;
        if let Some(s) = self.lock_session.lock().await.take() {
            drop(s);
        }
        let revoked = self
            .client
            .lease()
            .lease_revoke(LeaseRevokeRequest { id: lease })
            .await;
        if let Err(e) = revoked
            && e.code() != tonic::Code::NotFound
        {
            return Err(herd_client::ClientError::from(e).into());
        }
        Ok(())
    }

    /// Time to the next update check.
    async fn until_check(&self) -> Option<Duration> {
        let at = *self.next_check.lock().await;
        at.checked_duration_since(Instant::now())
    }

    async fn schedule_check(&self) {
        *self.next_check.lock().await =
            Instant::now() + self.settings.interval + jitter(self.settings.jitter);
    }
}

trait KeyName {
    fn key_name(&self) -> String;
}

impl KeyName for UpdateStatus {
    fn key_name(&self) -> String {
        herd_client::keys::UPDATE_STATUS.key(&self.machine_id)
    }
}

/// A random share of `up_to`, so machines do not check in lockstep.
fn jitter(up_to: Duration) -> Duration {
    let ms = up_to.as_millis() as u64;
    if ms == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(rand::random::<u64>() % ms)
    }
}
