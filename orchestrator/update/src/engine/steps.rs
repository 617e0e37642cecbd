//! One step of the state machine per call: whatever the current phase
//! needs next, returning when it must wait.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use herd_client::keys::DrainRecord;
use herd_client::kit::Action;
use herd_client::proto::etcdserverpb::{MemberListRequest, MoveLeaderRequest, StatusRequest};
use herd_client::session::Session;
use herd_client::stage::AgentStage;
use herd_image::payload::PayloadError;
use herd_image::slot::FlipError;
use herd_omaha::{Cause, EventResult, EventType, UpdateCheck};

use super::{Engine, EngineError, unix_now};
use crate::local::{Offer, Phase};
use crate::lock::{self, Acquire, Holder};
use crate::quorum::{self, Verdict};
use crate::slots::{self, DiskError};
use crate::{download, drain, omaha};

/// How soon to look again while waiting on something outside the store.
const SOON: Duration = Duration::from_secs(3);

impl Engine {
    /// Runs the next step (see the module doc of `engine`).
    pub async fn step(self: &Arc<Engine>) -> Result<Action, EngineError> {
        self.give_back().await;
        self.flush(false).await;
        let phase = self.state.lock().await.phase.clone();
        let action = match phase {
            Phase::Idle => self.idle().await?,
            Phase::Downloading { offer } => self.download(offer).await?,
            Phase::Written { offer, slot, from } => self.take_lock(offer, slot, from).await?,
            Phase::Locked {
                offer,
                slot,
                from,
                lease,
            } => self.go_down(offer, slot, from, lease).await?,
            Phase::Activated { offer, .. } => {
                self.reboot(&offer.version).await;
                Action::Requeue(Duration::from_secs(30))
            }
            Phase::Gating {
                version,
                slot,
                lease,
                from,
                started_at,
                ..
            } => self.verify(version, slot, lease, from, started_at).await?,
            Phase::GateFailed { version, slot, .. } => {
                // Still on the failed slot (its tries were not used up, or
                // the reboot did not happen): again.
                if let Some(s) = slots::slot_of(&slot) {
                    slots::exhaust(&self.disk, s).await?;
                }
                self.reboot(&version).await;
                Action::Requeue(Duration::from_secs(30))
            }
        };
        self.report_status().await;
        Ok(action)
    }

    /// A lease left to give back (a failed or finished update) goes now.
    async fn give_back(&self) {
        let Some(lease) = self.state.lock().await.release else {
            return;
        };
        match self.release_lease(lease).await {
            Ok(()) => {
                let mut st = self.state.lock().await;
                st.release = None;
                if let Err(e) = self.save(&st).await {
                    tracing::warn!(error = %e, "saving the released lock");
                }
                self.stage("lock-released", "", None);
            }
            Err(e) => tracing::info!(error = %e, "the reboot lock is not given back yet"),
        }
    }

    async fn idle(&self) -> Result<Action, EngineError> {
        let Some(omaha) = &self.omaha else {
            return Ok(Action::AwaitChange);
        };
        if let Some(wait) = self.until_check().await {
            return Ok(Action::Requeue(wait));
        }
        self.schedule_check().await;
        let next = self.until_check().await.unwrap_or(SOON);
        let pending = self.state.lock().await.pending.clone();
        let answer = omaha
            .exchange(&self.machine.version, &self.machine.boot_id, true, &pending)
            .await;
        let update = match answer {
            Err(e) => {
                let refused = e.cause().is_some();
                tracing::warn!(error = %e, "update check failed");
                if refused {
                    self.stage("refused", "", Some(e.to_string()));
                }
                self.set_detail(format!("update check: {e}")).await;
                return Ok(Action::Requeue(next));
            }
            Ok(check) => {
                let mut st = self.state.lock().await;
                let n = pending.len().min(st.pending.len());
                st.pending.drain(..n);
                self.save(&st).await?;
                match check {
                    Some(UpdateCheck::Update(u)) => u,
                    _ => return Ok(Action::Requeue(next)),
                }
            }
        };
        let version = update.version.to_string();
        if self.state.lock().await.failed.contains(&version) {
            tracing::info!(%version, "offered a version that failed here before; not trying it again");
            return Ok(Action::Requeue(next));
        }
        match omaha::accept(
            &update,
            &self.machine.version,
            self.settings.allow_downgrade,
        ) {
            Err(e) => {
                self.fail(&version, e.cause(), &e.to_string(), None).await?;
                Ok(Action::Requeue(next))
            }
            Ok(offer) => {
                self.stage("download-started", &version, None);
                self.set_detail("").await;
                self.set_phase(Phase::Downloading { offer }).await?;
                self.queue(
                    EventType::DownloadStarted,
                    EventResult::Success,
                    None,
                    Some(self.machine.version.to_string()),
                    Some(version),
                )
                .await?;
                Ok(Action::Requeue(Duration::ZERO))
            }
        }
    }

    fn downloads(&self, version: &str) -> std::path::PathBuf {
        self.settings.data_dir.join("downloads").join(version)
    }

    async fn download(&self, offer: Offer) -> Result<Action, EngineError> {
        let dir = self.downloads(&offer.version);
        let (mut files, mut fetched_now, mut total) = (Vec::new(), 0, 0);
        for spec in [&offer.payload, &offer.signature] {
            let url = format!("{}{}", offer.urls[0], spec.name);
            match download::fetch(&self.http, &url, spec, &dir).await {
                Ok((path, fetched)) => {
                    tracing::info!(file = %spec.name, fetched, "downloaded");
                    files.push(path);
                    fetched_now += fetched;
                    total += spec.size;
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "download interrupted; resuming later");
                    self.set_detail(format!("download: {e}")).await;
                    return Ok(Action::Requeue(Duration::from_secs(10)));
                }
                Err(e) => {
                    self.fail(&offer.version, e.cause(), &e.to_string(), None)
                        .await?;
                    return Ok(Action::Requeue(SOON));
                }
            }
        }
        // What an earlier attempt (before a power cut, say) left is kept.
        self.stage(
            "downloaded",
            &offer.version,
            Some(format!(
                "{fetched_now} of {total} bytes fetched by this attempt"
            )),
        );
        self.queue(
            EventType::DownloadFinished,
            EventResult::Success,
            None,
            Some(self.machine.version.to_string()),
            Some(offer.version.clone()),
        )
        .await?;
        self.stage("slot-writing", &offer.version, None);
        let written = slots::write(&self.disk, files[0].clone(), files[1].clone()).await;
        let flipped = match written {
            Ok(f) => f,
            Err(e) => {
                let cause = match &e {
                    DiskError::Flip(FlipError::Payload(
                        PayloadError::BadSignature { .. } | PayloadError::BadPublicKey(_),
                    )) => Cause::BadSignature,
                    DiskError::Flip(FlipError::Payload(
                        PayloadError::MemberHash { .. } | PayloadError::Format { .. },
                    )) => Cause::BadPayload,
                    _ => Cause::SlotWrite,
                };
                self.fail(&offer.version, cause, &e.to_string(), None)
                    .await?;
                return Ok(Action::Requeue(SOON));
            }
        };
        if flipped.version != offer.version {
            let why = format!(
                "the payload says it is {}, the server offered {}",
                flipped.version, offer.version
            );
            self.fail(&offer.version, Cause::BadPayload, &why, None)
                .await?;
            return Ok(Action::Requeue(SOON));
        }
        self.stage(
            "slot-written",
            &offer.version,
            Some(flipped.slot.label().to_owned()),
        );
        self.set_phase(Phase::Written {
            offer,
            slot: flipped.slot.label().to_owned(),
            from: self.machine.version.to_string(),
        })
        .await?;
        Ok(Action::Requeue(Duration::ZERO))
    }

    /// This machine's store member id (0: none answers).
    async fn member_id(&self) -> u64 {
        match self.client.maintenance().status(StatusRequest {}).await {
            Ok(s) => s.into_inner().header.map_or(0, |h| h.member_id),
            Err(_) => 0,
        }
    }

    /// A live session for the lock, reusing the last one.
    async fn lock_lease(&self) -> Result<i64, EngineError> {
        let mut s = self.lock_session.lock().await;
        if let Some(session) = s.as_ref()
            && !session.has_ended()
        {
            return Ok(session.lease());
        }
        let fresh = Session::new(&self.client, self.settings.reboot_lock_ttl).await?;
        let lease = fresh.lease();
        *s = Some(fresh);
        Ok(lease)
    }

    async fn take_lock(
        &self,
        offer: Offer,
        slot: String,
        from: String,
    ) -> Result<Action, EngineError> {
        let lease = self.lock_lease().await?;
        let me = Holder {
            machine_id: self.machine.machine_id.clone(),
            hostname: self.machine.hostname.clone(),
            member_id: Some(self.member_id().await).filter(|id| *id != 0),
            version: offer.version.clone(),
            since: unix_now(),
        };
        match lock::acquire(&self.client, &me, lease).await? {
            Acquire::Busy(holders) => {
                let who: Vec<String> = holders
                    .iter()
                    .map(|h| format!("{} (to {})", h.hostname, h.version))
                    .collect();
                self.set_detail(format!(
                    "waiting for the reboot lock, held by {}",
                    who.join(", ")
                ))
                .await;
                // A change of the lock wakes the controller before this.
                Ok(Action::Requeue(Duration::from_secs(30)))
            }
            Acquire::Held => {
                self.stage("lock-acquired", &offer.version, None);
                self.set_detail("").await;
                self.set_phase(Phase::Locked {
                    offer,
                    slot,
                    from,
                    lease,
                })
                .await?;
                Ok(Action::Requeue(Duration::ZERO))
            }
        }
    }

    /// Quorum, drain, leadership, activation, reboot.
    async fn go_down(
        &self,
        offer: Offer,
        slot: String,
        from: String,
        lease: i64,
    ) -> Result<Action, EngineError> {
        let holders = lock::holders(&self.client).await?;
        let mine = holders
            .iter()
            .any(|h| h.value.machine_id == self.machine.machine_id && h.lease == lease);
        if !mine {
            // The lease ran out while this machine was down: take it again.
            tracing::warn!("the reboot lock is no longer held; taking it again");
            *self.lock_session.lock().await = None;
            self.set_phase(Phase::Written { offer, slot, from }).await?;
            return Ok(Action::Requeue(Duration::ZERO));
        }
        if self.lock_session.lock().await.is_none() {
            *self.lock_session.lock().await = Some(Session::keep(
                &self.client,
                lease,
                self.settings.reboot_lock_ttl.as_secs() as i64,
            ));
        }
        let others: Vec<Holder> = holders
            .into_iter()
            .filter(|h| h.value.machine_id != self.machine.machine_id)
            .map(|h| h.value)
            .collect();
        let me = self.member_id().await;
        match quorum::check(&self.client, me, &others).await? {
            Verdict::Unsafe(why) => {
                self.set_detail(format!("holding the reboot lock, but {why}"))
                    .await;
                return Ok(Action::Requeue(Duration::from_secs(10)));
            }
            Verdict::Safe(why) => {
                tracing::info!(%why, "the store keeps its quorum without this machine")
            }
        }
        let record = DrainRecord {
            machine_id: self.machine.machine_id.clone(),
            hostname: self.machine.hostname.clone(),
            version: offer.version.clone(),
            since: unix_now(),
        };
        drain::begin(&self.client, &record, lease).await?;
        self.stage("draining", &offer.version, None);
        tokio::time::sleep(self.settings.drain_grace).await;
        self.hand_over_leadership(me).await;
        let s = slots::slot_of(&slot).expect("a slot label we wrote");
        slots::activate(
            &self.disk,
            s,
            offer.version.clone(),
            self.settings.boot_tries,
        )
        .await?;
        let version = offer.version.clone();
        self.set_phase(Phase::Activated {
            offer,
            slot,
            from: from.clone(),
            lease,
        })
        .await?;
        self.queue(
            EventType::UpdateComplete,
            EventResult::Success,
            None,
            Some(from),
            Some(version.clone()),
        )
        .await?;
        self.flush(false).await;
        self.stage(
            "activated",
            &version,
            Some(format!("rebooting; {} tries", self.settings.boot_tries)),
        );
        self.report_status().await;
        self.reboot(&version).await;
        Ok(Action::Requeue(Duration::from_secs(30)))
    }

    /// A leader going down costs every client an election: hand the
    /// leadership to another voter first.
    async fn hand_over_leadership(&self, me: u64) {
        let Ok(status) = self.client.maintenance().status(StatusRequest {}).await else {
            return;
        };
        if me == 0 || status.get_ref().leader != me {
            return;
        }
        let Ok(list) = self
            .client
            .cluster()
            .member_list(MemberListRequest { linearizable: true })
            .await
        else {
            return;
        };
        let Some(target) = list
            .get_ref()
            .members
            .iter()
            .find(|m| m.id != me && !m.is_learner)
        else {
            return;
        };
        let moved = tokio::time::timeout(
            Duration::from_secs(10),
            self.client.maintenance().move_leader(MoveLeaderRequest {
                target_id: target.id,
            }),
        )
        .await;
        match moved {
            Ok(Ok(_)) => {
                tracing::info!(to = %target.name, "leadership handed over before the reboot")
            }
            Ok(Err(e)) => tracing::warn!(error = %e.message(), "leadership not handed over"),
            Err(_) => tracing::warn!("leadership hand-over timed out"),
        }
    }

    async fn reboot(&self, version: &str) {
        let e = self.rebooter.reboot().await;
        tracing::error!(error = %e, version, "reboot failed; trying again later");
    }

    /// The health gate on a slot on trial.
    async fn verify(
        &self,
        version: String,
        slot: String,
        lease: Option<i64>,
        from: Option<String>,
        started_at: u64,
    ) -> Result<Action, EngineError> {
        let s = slots::slot_of(&slot).expect("a slot label we wrote");
        let trial = slots::entry(&self.disk, s)
            .await?
            .is_some_and(|e| e.tries.is_some());
        if let Some(lease) = lease
            && self.lock_session.lock().await.is_none()
        {
            // Keep the lock through the gate: the machine is not done yet.
            *self.lock_session.lock().await = Some(Session::keep(
                &self.client,
                lease,
                self.settings.reboot_lock_ttl.as_secs() as i64,
            ));
        }
        if !self.pinged.swap(true, Ordering::SeqCst) {
            self.flush(true).await;
        }
        if trial {
            match self.gate.evaluate().await {
                Ok(()) => {
                    slots::mark_good(&self.disk, s).await?;
                    AgentStage::SlotMarkedGood { slot: slot.clone() }.report();
                }
                Err(failing) => {
                    let why = failing.join("; ");
                    let deadline = started_at + self.settings.health_timeout.as_secs();
                    if unix_now() < deadline {
                        self.set_detail(format!("not healthy yet: {why}")).await;
                        return Ok(Action::Requeue(SOON));
                    }
                    return self.gate_failed(version, slot, lease, why).await;
                }
            }
        }
        // Good (just marked, or before a restart): finish.
        self.stage("marked-good", &version, Some(slot));
        {
            let mut st = self.state.lock().await;
            st.phase = Phase::Idle;
            if lease.is_some() {
                st.release = lease;
            }
            self.save(&st).await?;
        }
        self.queue(
            EventType::UpdateComplete,
            EventResult::SuccessReboot,
            None,
            from,
            Some(version.clone()),
        )
        .await?;
        self.set_detail("").await;
        self.give_back().await;
        self.flush(false).await;
        let _ = tokio::fs::remove_dir_all(self.settings.data_dir.join("downloads")).await;
        self.schedule_check().await;
        Ok(Action::Requeue(Duration::ZERO))
    }

    async fn gate_failed(
        &self,
        version: String,
        slot: String,
        lease: Option<i64>,
        why: String,
    ) -> Result<Action, EngineError> {
        tracing::error!(%version, %why, "health gate timed out; going back to the old slot");
        self.stage("gate-failed", &version, Some(why.clone()));
        self.set_phase(Phase::GateFailed {
            version: version.clone(),
            slot: slot.clone(),
            lease,
            reason: why,
        })
        .await?;
        let s = slots::slot_of(&slot).expect("a slot label we wrote");
        slots::exhaust(&self.disk, s).await?;
        self.report_status().await;
        self.reboot(&version).await;
        Ok(Action::Requeue(Duration::from_secs(30)))
    }

    /// Gives up on `version`: reported, remembered, files and lock released.
    async fn fail(
        &self,
        version: &str,
        cause: Cause,
        why: &str,
        lease: Option<i64>,
    ) -> Result<(), EngineError> {
        tracing::error!(version, %cause, why, "update refused");
        self.stage("failed", version, Some(format!("{cause}: {why}")));
        self.set_detail(format!("{version} failed: {why}")).await;
        self.queue(
            EventType::UpdateComplete,
            EventResult::Error,
            Some(cause),
            Some(self.machine.version.to_string()),
            Some(version.to_owned()),
        )
        .await?;
        {
            let mut st = self.state.lock().await;
            st.failed.insert(version.to_owned());
            st.phase = Phase::Idle;
            if lease.is_some() {
                st.release = lease;
            }
            self.save(&st).await?;
        }
        let _ = tokio::fs::remove_dir_all(self.downloads(version)).await;
        self.flush(false).await;
        Ok(())
    }
}
