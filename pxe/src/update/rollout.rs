//! The rollout's decisions, as pure functions of the state and the time:
//! what a request's events change, whether a machine is offered its
//! group's release (policy, halt, office hours, rate, canaries), and what
//! an expired update does. The service around it persists the result.

use herd_omaha::{
    App, AppResponse, AppStatus, Cause, Event, EventResult, EventType, Package, Update,
    UpdateCheck, Version,
};

use super::state::{EventRecord, Group, Halt, MachineUpdate, UpdateState, UpdatesState};

/// Names of the two files of a release, as packages and on disk.
pub const PAYLOAD: &str = "update.payload";
pub const SIGNATURE: &str = "update.payload.sig";

/// Why a machine was not offered an update (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoUpdate {
    NoGroup,
    NoRelease,
    Disabled,
    UpToDate,
    Newer,
    FailedBefore,
    Halted,
    OutsideOfficeHours,
    RateLimited,
    WaitingForCanaries { done: u32, canary: u32 },
}

/// One request's app, handled: the answer, and whether the state changed
/// in a way worth saving (not every `last_seen`).
pub fn handle_app(
    state: &mut UpdatesState,
    app: &App,
    now: u64,
    base_url: &str,
) -> (AppResponse, bool) {
    let mut answer = AppResponse {
        app_id: app.app_id.clone(),
        status: AppStatus::Ok,
        ping: app.ping,
        update_check: None,
        events: app.events.len(),
    };
    if app.app_id != herd_omaha::APP_ID {
        answer.status = AppStatus::UnknownApplication;
        answer.events = 0;
        return (answer, false);
    }
    let mut changed = false;
    let m = state
        .machines
        .entry(app.machine_id.clone())
        .or_insert_with(|| {
            changed = true;
            MachineUpdate {
                machine_id: app.machine_id.clone(),
                group: app.track.clone(),
                version: app.version.clone(),
                boot_id: app.boot_id.clone(),
                state: UpdateState::Idle,
                target: None,
                granted_at: None,
                failed: Default::default(),
                events: Default::default(),
                last_seen: now,
            }
        });
    m.last_seen = now;
    if m.group != app.track || m.version != app.version || m.boot_id != app.boot_id {
        m.group = app.track.clone();
        m.version = app.version.clone();
        m.boot_id = app.boot_id.clone();
        changed = true;
    }
    changed |= expire(state, &app.track, now);
    for e in &app.events {
        changed |= apply_event(state, &app.machine_id, e, now);
    }
    changed |= follow_version(state.machines.get_mut(&app.machine_id).expect("inserted"));
    if app.update_check {
        let check = match decide(state, &app.machine_id, now) {
            Ok(release) => {
                changed |= grant(state, &app.machine_id, &release, now);
                offer(state, &release, base_url)
            }
            Err(why) => {
                tracing::debug!(machine = %app.machine_id, group = %app.track, ?why, "no update");
                UpdateCheck::NoUpdate
            }
        };
        answer.update_check = Some(check);
    }
    (answer, changed)
}

/// A machine that reports the version it was updating to has rebooted
/// into it: it is verifying its health now.
fn follow_version(m: &mut MachineUpdate) -> bool {
    let arrived = m.target.as_ref() == Some(&m.version);
    if arrived && matches!(m.state, UpdateState::Downloading | UpdateState::Rebooting) {
        m.state = UpdateState::Verifying;
        return true;
    }
    false
}

/// Applies one event of machine `id`.
pub fn apply_event(state: &mut UpdatesState, id: &str, e: &Event, now: u64) -> bool {
    let m = state.machines.get_mut(id).expect("the machine is recorded");
    let about = e.next_version.clone().or_else(|| m.target.clone());
    m.record(EventRecord {
        at: now,
        kind: e.kind,
        result: e.result,
        version: about.clone(),
        error_code: e.error_code,
        cause: e.cause(),
    });
    let ours = about.is_some() && about == m.target;
    match (e.kind, e.result) {
        (_, EventResult::Error) => {
            let Some(version) = about else { return true };
            let rolled_back = e.cause().is_some_and(Cause::is_rollback);
            m.state = if rolled_back {
                UpdateState::RolledBack
            } else {
                UpdateState::Failed
            };
            m.failed.insert(version.to_string(), e.error_code);
            let group = m.group.clone();
            halt(state, &group, id, &version, e.error_code, now);
        }
        (EventType::DownloadStarted | EventType::DownloadFinished, _) if ours => {
            m.state = UpdateState::Downloading;
        }
        (EventType::UpdateComplete, EventResult::Success) if ours => {
            m.state = UpdateState::Rebooting;
        }
        (EventType::UpdateComplete, EventResult::SuccessReboot)
            if about.as_ref() == Some(&m.version) =>
        {
            m.state = UpdateState::Done;
        }
        _ => {}
    }
    true
}

/// Safe mode: a failure stops the group's rollout.
fn halt(
    state: &mut UpdatesState,
    group: &str,
    machine: &str,
    version: &Version,
    code: Option<i32>,
    now: u64,
) {
    let Some(g) = state.groups.get_mut(group) else {
        return;
    };
    if g.policy.safe_mode && g.halted.is_none() {
        let h = Halt {
            at: now,
            machine: machine.to_owned(),
            version: version.clone(),
            error_code: code,
        };
        tracing::warn!(group, reason = %h.reason(), "safe mode: rollout halted");
        g.halted = Some(h);
    }
}

/// Machines of `group` whose update has run longer than the group's
/// timeout fail (and halt the group in safe mode).
pub fn expire(state: &mut UpdatesState, group: &str, now: u64) -> bool {
    let Some(timeout) = state.groups.get(group).map(|g| g.policy.update_timeout) else {
        return false;
    };
    let late: Vec<String> = state
        .machines
        .values()
        .filter(|m| {
            m.group == group
                && m.state.in_flight()
                && m.granted_at
                    .is_some_and(|t| now.saturating_sub(t) > timeout.as_secs())
        })
        .map(|m| m.machine_id.clone())
        .collect();
    for id in &late {
        let e = Event {
            next_version: state.machines[id].target.clone(),
            ..Event::failure(Cause::Timeout)
        };
        apply_event(state, id, &e, now);
    }
    !late.is_empty()
}

/// The release machine `id` should be offered now, or why not.
pub fn decide(state: &UpdatesState, id: &str, now: u64) -> Result<Version, NoUpdate> {
    let m = &state.machines[id];
    let g = state.groups.get(&m.group).ok_or(NoUpdate::NoGroup)?;
    let release = g.release.clone().ok_or(NoUpdate::NoRelease)?;
    // An update under way is offered again (the machine restarted midway).
    if m.state.in_flight() && m.target.as_ref() == Some(&release) {
        return Ok(release);
    }
    let p = &g.policy;
    if !p.updates_enabled {
        return Err(NoUpdate::Disabled);
    }
    match m.version.cmp(&release) {
        std::cmp::Ordering::Equal => return Err(NoUpdate::UpToDate),
        std::cmp::Ordering::Greater if !p.allow_downgrade => return Err(NoUpdate::Newer),
        _ => {}
    }
    if m.failed.contains_key(release.as_str()) {
        return Err(NoUpdate::FailedBefore);
    }
    if g.halted.is_some() {
        return Err(NoUpdate::Halted);
    }
    if p.office_hours.is_some_and(|o| !o.contains(now)) {
        return Err(NoUpdate::OutsideOfficeHours);
    }
    let recent = g
        .grants
        .iter()
        .filter(|(t, _)| now.saturating_sub(*t) < p.period.as_secs())
        .count();
    if p.max_updates_per_period > 0 && recent >= p.max_updates_per_period as usize {
        return Err(NoUpdate::RateLimited);
    }
    if p.canary > 0 {
        let on = |pred: &dyn Fn(&MachineUpdate) -> bool| {
            state
                .machines
                .values()
                .filter(|o| o.group == m.group && o.target.as_ref() == Some(&release) && pred(o))
                .count() as u32
        };
        let done = on(&|o| o.state == UpdateState::Done);
        if done < p.canary {
            let flying = on(&|o| o.state.in_flight());
            if done + flying >= p.canary {
                return Err(NoUpdate::WaitingForCanaries {
                    done,
                    canary: p.canary,
                });
            }
        }
    }
    Ok(release)
}

/// Records that machine `id` starts updating to `release`.
fn grant(state: &mut UpdatesState, id: &str, release: &Version, now: u64) -> bool {
    let m = state.machines.get_mut(id).expect("recorded");
    if m.state.in_flight() && m.target.as_ref() == Some(release) {
        return false;
    }
    m.target = Some(release.clone());
    m.granted_at = Some(now);
    m.state = UpdateState::Downloading;
    let g: &mut Group = state
        .groups
        .get_mut(&m.group)
        .expect("decide found the group");
    let period = g.policy.period.as_secs();
    g.grants.retain(|(t, _)| now.saturating_sub(*t) < period);
    g.grants.push((now, id.to_owned()));
    tracing::info!(machine = id, group = %g.id, %release, "update granted");
    true
}

/// The update check's answer for `release`.
fn offer(state: &UpdatesState, release: &Version, base_url: &str) -> UpdateCheck {
    let r = &state.releases[release.as_str()];
    let sha = |hex: &str| -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("stored hashes are hex");
        }
        out
    };
    let payload = sha(&r.payload.sha256);
    UpdateCheck::Update(Update {
        urls: vec![format!(
            "{}/v1/update/releases/{}/",
            base_url.trim_end_matches('/'),
            r.version
        )],
        version: r.version.clone(),
        packages: vec![
            Package {
                name: PAYLOAD.into(),
                size: r.payload.size,
                sha256: payload,
                required: true,
            },
            Package {
                name: SIGNATURE.into(),
                size: r.signature.size,
                sha256: sha(&r.signature.sha256),
                required: true,
            },
        ],
        postinstall_sha256: Some(payload),
    })
}

/// A group's progress on its release.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    pub machines: usize,
    /// Running the group's release.
    pub updated: usize,
    pub in_flight: usize,
    /// Failed or rolled back on the group's release.
    pub failed: usize,
    /// Neither: not offered yet (canaries, rate, halt) or not asked yet.
    pub waiting: usize,
}

pub fn progress(state: &UpdatesState, group: &Group) -> Progress {
    let mut p = Progress::default();
    for m in state.machines.values().filter(|m| m.group == group.id) {
        p.machines += 1;
        let on_release = group.release.as_ref() == Some(&m.version);
        let target = group.release.is_some() && m.target == group.release;
        if on_release && !m.state.in_flight() {
            p.updated += 1;
        } else if target && m.state.in_flight() {
            p.in_flight += 1;
        } else if group
            .release
            .as_ref()
            .is_some_and(|r| m.failed.contains_key(r.as_str()))
        {
            p.failed += 1;
        } else {
            p.waiting += 1;
        }
    }
    p
}

#[cfg(test)]
mod tests;
