//! What the last boot left, sorted out once when the role starts (from the
//! remembered phase, the slot this boot came from and whether its entry is
//! on trial; nothing here needs the store):
//!
//! - booted the slot being updated to → verify it (the health gate);
//! - booted the old slot while the new one was activated or being
//!   verified → the trial failed: report it (the boot loader ran out of
//!   tries, or the gate used them up) and never try that version again;
//! - booted a slot on trial that no update of ours activated (an
//!   operator's `herd image flip`) → verify it all the same;
//! - anything else → carry on where it stopped.

use herd_omaha::{Cause, EventResult, EventType};

use super::{Engine, EngineError, unix_now};
use crate::local::Phase;
use crate::slots;

/// Resolves the remembered phase against this boot.
pub async fn boot(engine: &Engine) -> Result<(), EngineError> {
    let here = engine.disk.booted.label().to_owned();
    let on_trial = slots::entry(&engine.disk, engine.disk.booted)
        .await?
        .is_some_and(|e| e.tries.is_some());
    let phase = engine.state.lock().await.phase.clone();
    let now = unix_now();
    let boot_id = engine.machine.boot_id.clone();
    let gate = |version: String, lease: Option<i64>, from: Option<String>| Phase::Gating {
        version,
        slot: here.clone(),
        lease,
        from,
        boot_id: boot_id.clone(),
        started_at: now,
    };
    let next = match phase {
        Phase::Gating {
            ref slot,
            boot_id: ref b,
            ..
        } if *slot == here && *b == boot_id => None,
        Phase::Gating {
            slot,
            version,
            lease,
            from,
            ..
        } if slot == here => {
            // A new boot of the slot on trial (power loss mid-gate): its
            // own try, its own timer.
            Some(gate(version, lease, from))
        }
        Phase::Written { offer, slot, from } if slot == here => {
            Some(gate(offer.version, None, Some(from)))
        }
        Phase::Locked {
            offer,
            slot,
            from,
            lease,
        }
        | Phase::Activated {
            offer,
            slot,
            from,
            lease,
        } if slot == here => Some(gate(offer.version, Some(lease), Some(from))),
        Phase::Activated { offer, lease, .. } => {
            rolled_back(
                engine,
                &offer.version,
                Cause::BootFailed,
                "the new slot never came up healthy; the boot loader went back to the old one",
                Some(lease),
            )
            .await?;
            None
        }
        Phase::Gating { version, lease, .. } => {
            rolled_back(
                engine,
                &version,
                Cause::BootFailed,
                "the new slot stopped booting before its health gate passed; the boot loader went back to the old one",
                lease,
            )
            .await?;
            None
        }
        Phase::GateFailed {
            version,
            slot,
            lease,
            reason,
        } if slot != here => {
            rolled_back(engine, &version, Cause::HealthGate, &reason, lease).await?;
            None
        }
        _ if on_trial => Some(gate(engine.machine.version.to_string(), None, None)),
        _ => None,
    };
    if let Some(p) = next {
        if let Phase::Gating { version, .. } = &p {
            engine.stage(
                "gate-started",
                version,
                Some(format!("booted {here} on trial")),
            );
        }
        engine.set_phase(p).await?;
    }
    Ok(())
}

/// The trial of `version` failed and the old slot runs again: remember,
/// report, give the lock back.
async fn rolled_back(
    engine: &Engine,
    version: &str,
    cause: Cause,
    reason: &str,
    lease: Option<i64>,
) -> Result<(), EngineError> {
    tracing::error!(version, %cause, reason, "update rolled back");
    engine.stage("rolled-back", version, Some(format!("{cause}: {reason}")));
    engine
        .set_detail(format!("{version} rolled back: {reason}"))
        .await;
    engine
        .queue(
            EventType::UpdateComplete,
            EventResult::Error,
            Some(cause),
            Some(engine.machine.version.to_string()),
            Some(version.to_owned()),
        )
        .await?;
    let mut st = engine.state.lock().await;
    st.failed.insert(version.to_owned());
    st.phase = Phase::Idle;
    if lease.is_some() {
        st.release = lease;
    }
    engine.save(&st).await
}
