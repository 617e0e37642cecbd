//! The update server's shared handle: the state behind one lock, every
//! change saved before it is acknowledged, and the operations the HTTP
//! routes and the offline CLI share (Omaha requests, publishing, policy,
//! resume, status).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use herd_omaha::{OmahaError, Request, Response, Version};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::policy::{Policy, PolicyPatch};
use super::publish::{self, PublishError};
use super::rollout::{self, Progress};
use super::state::{Group, Halt, Release, StateDir, StateError, UpdateState, UpdatesState};

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Omaha(#[from] OmahaError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("no group {0:?} (groups are made by publishing a release into them)")]
    NoGroup(String),
    #[error("group {group:?}: {reason}")]
    BadPolicy { group: String, reason: String },
}

/// The update server's state, shared by every request.
#[derive(Clone)]
pub struct UpdateService {
    dir: Arc<StateDir>,
    state: Arc<Mutex<UpdatesState>>,
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl UpdateService {
    /// Opens (and locks) `<state_dir>/updates/`, loading what was saved and
    /// dropping unfinished uploads.
    pub async fn open(state_dir: &Path) -> Result<UpdateService, ServiceError> {
        let state_dir = state_dir.to_path_buf();
        let (dir, state) = tokio::task::spawn_blocking(move || -> Result<_, StateError> {
            let dir = StateDir::open(&state_dir)?;
            let state = dir.load()?;
            let _ = std::fs::remove_dir_all(dir.uploads());
            Ok((dir, state))
        })
        .await
        .expect("opening the update state does not panic")?;
        Ok(UpdateService {
            dir: Arc::new(dir),
            state: Arc::new(Mutex::new(state)),
        })
    }

    /// Where uploads are staged before they are published.
    pub fn uploads(&self) -> PathBuf {
        self.dir.uploads()
    }

    /// Saves `state` (the caller holds the lock, so saves never interleave).
    async fn save(&self, state: &UpdatesState) -> Result<(), StateError> {
        let (dir, copy) = (Arc::clone(&self.dir), state.clone());
        tokio::task::spawn_blocking(move || dir.save(&copy))
            .await
            .expect("saving does not panic")
    }

    /// Answers one Omaha request body; changes are saved before the answer.
    pub async fn omaha(&self, body: &[u8], base_url: &str) -> Result<String, ServiceError> {
        let request = Request::parse(body)?;
        let now = now();
        let mut state = self.state.lock().await;
        let mut changed = false;
        let mut apps = Vec::new();
        for app in &request.apps {
            let (answer, c) = rollout::handle_app(&mut state, app, now, base_url);
            changed |= c;
            apps.push(answer);
        }
        if changed {
            self.save(&state).await?;
        }
        Ok(Response {
            server: "herd".into(),
            apps,
        }
        .to_xml())
    }

    /// Publishes the release staged in `staged` into `group` (created with
    /// the default policy if new); see [`publish::verify`] for the checks.
    pub async fn publish(
        &self,
        staged: PathBuf,
        group: &str,
        allow_downgrade: bool,
    ) -> Result<Release, ServiceError> {
        publish::check_group_name(group)?;
        let checked = tokio::task::spawn_blocking(move || publish::verify(&staged))
            .await
            .expect("verifying does not panic")?;
        let mut state = self.state.lock().await;
        let release = publish::admit(&state, &checked, group, allow_downgrade, now())?;
        let dir = Arc::clone(&self.dir);
        let (from, version) = (checked.dir.clone(), release.version.clone());
        tokio::task::spawn_blocking(move || publish::install(&dir, &from, &version))
            .await
            .expect("installing does not panic")?;
        state
            .releases
            .insert(release.version.to_string(), release.clone());
        let g = state
            .groups
            .entry(group.to_owned())
            .or_insert_with(|| Group::new(group));
        g.release = Some(release.version.clone());
        if allow_downgrade {
            g.policy.allow_downgrade = true;
        }
        self.save(&state).await?;
        tracing::info!(group, version = %release.version, "release published");
        Ok(release)
    }

    /// Changes a group's policy.
    pub async fn set_policy(
        &self,
        group: &str,
        patch: &PolicyPatch,
    ) -> Result<Group, ServiceError> {
        let mut state = self.state.lock().await;
        let g = state
            .groups
            .get_mut(group)
            .ok_or_else(|| ServiceError::NoGroup(group.to_owned()))?;
        g.policy = g
            .policy
            .patched(patch)
            .map_err(|reason| ServiceError::BadPolicy {
                group: group.to_owned(),
                reason,
            })?;
        let g = g.clone();
        self.save(&state).await?;
        tracing::info!(group, policy = ?g.policy, "policy changed");
        Ok(g)
    }

    /// Lifts a safe-mode halt.
    pub async fn resume(&self, group: &str) -> Result<Group, ServiceError> {
        let mut state = self.state.lock().await;
        let g = state
            .groups
            .get_mut(group)
            .ok_or_else(|| ServiceError::NoGroup(group.to_owned()))?;
        if let Some(h) = g.halted.take() {
            tracing::info!(group, was = %h.reason(), "rollout resumed");
        }
        let g = g.clone();
        self.save(&state).await?;
        Ok(g)
    }

    /// The path of a published release's file, if there is one.
    pub async fn release_file(&self, version: &str, name: &str) -> Option<PathBuf> {
        if ![rollout::PAYLOAD, rollout::SIGNATURE, "manifest.json"].contains(&name) {
            return None;
        }
        let state = self.state.lock().await;
        let release = state.releases.get(version)?;
        Some(self.dir.release_dir(&release.version).join(name))
    }

    /// Everything, for `herd pxe updates`.
    pub async fn status(&self) -> UpdatesStatus {
        let mut state = self.state.lock().await;
        let now = now();
        let groups: Vec<String> = state.groups.keys().cloned().collect();
        let mut changed = false;
        for g in &groups {
            changed |= rollout::expire(&mut state, g, now);
        }
        if changed && let Err(e) = self.save(&state).await {
            tracing::warn!(error = %e, "saving expired updates");
        }
        UpdatesStatus::of(&state)
    }
}

/// What `herd pxe updates` shows: per group its release, policy, halt and
/// progress; per machine its version, state and last event.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatesStatus {
    pub groups: Vec<GroupStatus>,
    pub machines: Vec<MachineStatus>,
    pub releases: Vec<Release>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupStatus {
    pub id: String,
    pub release: Option<Version>,
    pub policy: Policy,
    pub halted: Option<Halt>,
    /// The halt in words.
    pub halt_reason: Option<String>,
    pub progress: Progress,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineStatus {
    pub machine_id: String,
    pub group: String,
    pub version: Version,
    pub state: UpdateState,
    pub target: Option<Version>,
    /// The newest event, in words (`3/2 0.2.0`).
    pub last_event: Option<String>,
    /// Versions that failed here, with the cause in words.
    pub failed: BTreeMap<String, String>,
    pub last_seen: u64,
}

impl UpdatesStatus {
    pub fn of(state: &UpdatesState) -> UpdatesStatus {
        UpdatesStatus {
            groups: state
                .groups
                .values()
                .map(|g| GroupStatus {
                    id: g.id.clone(),
                    release: g.release.clone(),
                    policy: g.policy.clone(),
                    halt_reason: g.halted.as_ref().map(Halt::reason),
                    halted: g.halted.clone(),
                    progress: rollout::progress(state, g),
                })
                .collect(),
            machines: state
                .machines
                .values()
                .map(|m| MachineStatus {
                    machine_id: m.machine_id.clone(),
                    group: m.group.clone(),
                    version: m.version.clone(),
                    state: m.state,
                    target: m.target.clone(),
                    last_event: m.last_event().map(|e| e.summary()),
                    failed: m
                        .failed
                        .iter()
                        .map(|(v, c)| (v.clone(), super::state::describe_error(*c)))
                        .collect(),
                    last_seen: m.last_seen,
                })
                .collect(),
            releases: state.releases.values().cloned().collect(),
        }
    }
}
