//! Init containers: run in the pod's sandbox one at a time, in order,
//! each to success, before any app container starts — Kubernetes' rules.
//! One that fails is run again by the pod's restart policy (with the
//! crash-loop back-off); under `Never` the pod fails. Their runs are read
//! back from Docker like the app containers', so a completed one is not
//! run again after an agent restart; a new sandbox (the old one died)
//! removes them with everything else, and they run again.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Kubelet;
use super::docker::{Container, Docker, RunState};
use super::status::{ContainerView, Waiting};
use super::sync::{RESYNC, SyncError, restart_policy};
use crate::api::Pod;

/// Where a pod's init containers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitProgress {
    /// All succeeded (or there are none): the app containers may run.
    Done,
    /// One runs or waits to run again; the apps wait (`PodInitializing`).
    Running { next: Duration },
    /// One failed under `restartPolicy: Never`: the pod fails.
    Failed,
}

impl Kubelet {
    /// Moves the pod's init containers one step on; `waiting` gets the
    /// reason of one that is not running.
    pub(super) async fn sync_init(
        &self,
        docker: &Docker,
        pod: &Pod,
        grouped: &BTreeMap<String, Vec<&Container>>,
        infra: &Container,
        waiting: &mut BTreeMap<String, Waiting>,
    ) -> Result<InitProgress, SyncError> {
        for spec in &pod.spec.init_containers {
            let mine = grouped.get(&spec.name).cloned().unwrap_or_default();
            let current = mine.last().copied();
            match current.map(|c| &c.state) {
                Some(RunState::Exited { exit_code: 0, .. }) => continue,
                Some(RunState::Running { .. }) => {
                    return Ok(InitProgress::Running { next: RESYNC });
                }
                Some(RunState::Exited { .. }) if restart_policy(pod) == "Never" => {
                    return Ok(InitProgress::Failed);
                }
                Some(RunState::Exited { .. }) => {
                    let (w, again_in) = self
                        .restart_after_backoff(docker, pod, spec, infra, &mine)
                        .await?;
                    if let Some(w) = w {
                        waiting.insert(spec.name.clone(), w);
                    }
                    let next = again_in.unwrap_or(RESYNC).max(Duration::from_millis(200));
                    return Ok(InitProgress::Running { next });
                }
                Some(RunState::Created) | None => {
                    let restarts = current.map_or(0, |c| c.restart_count);
                    if let Some(c) = current {
                        docker.remove(&c.id).await?;
                    }
                    let started = self
                        .start_container(docker, pod, spec, infra, restarts)
                        .await;
                    let next = match started {
                        Ok(()) => RESYNC,
                        Err(w) => {
                            waiting.insert(spec.name.clone(), w);
                            Duration::from_secs(5)
                        }
                    };
                    return Ok(InitProgress::Running { next });
                }
            }
        }
        Ok(InitProgress::Done)
    }
}

/// The views of the pod's init containers, from what Docker holds (one
/// not yet run waits as `PodInitializing`).
pub fn views<'a>(
    pod: &'a Pod,
    grouped: &BTreeMap<String, Vec<&'a Container>>,
    waiting: &BTreeMap<String, Waiting>,
) -> Vec<ContainerView<'a>> {
    pod.spec
        .init_containers
        .iter()
        .map(|spec| {
            let mine = grouped.get(&spec.name);
            ContainerView {
                name: &spec.name,
                image: &spec.image,
                current: mine.and_then(|v| v.last().copied()),
                previous: mine.and_then(|v| v.len().checked_sub(2).map(|i| v[i])),
                waiting: waiting
                    .get(&spec.name)
                    .cloned()
                    .or_else(|| mine.is_none().then(|| Waiting::new("PodInitializing", ""))),
                ready: false,
            }
        })
        .collect()
}
