//! Pod sync: makes Docker match one pod bound to this node. The infra
//! container holds the pod's network namespace and each app container
//! joins it (both started by [`super::start`]). Containers that ended are
//! restarted by the pod's restart policy with Kubernetes' back-off; a
//! failed liveness probe kills its container. Every container is labelled
//! with its pod (see [`super::docker::label`]), so what runs is read back
//! from Docker each time — after an agent restart too — and never started
//! twice. The status written back is computed in [`super::status`].

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use super::Kubelet;
use super::docker::{Container, Docker, DockerError, RunState, label};
use super::host_ports::Admission;
use super::init::{self, InitProgress};
use super::network::{self, NetworkError};
use super::probes::{Kind, Target, Verdict};
use super::status::{ContainerView, Waiting, docker_time, pod_status, restart_delay, with_init};
use crate::api::meta::parse_time;
use crate::api::pod::Container as Spec;
use crate::api::{ApiError, Pod};
use crate::registry::Part;

/// How often a pod with running containers is looked at again (container
/// exits and probe verdicts are read from Docker and the probe workers).
pub const RESYNC: Duration = Duration::from_secs(1);

/// Why a sync did not finish; retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The containers of one pod, by spec name, oldest first.
fn by_name(containers: &[Container]) -> BTreeMap<String, Vec<&Container>> {
    let mut m: BTreeMap<String, Vec<&Container>> = BTreeMap::new();
    for c in containers {
        m.entry(c.name.clone()).or_default().push(c);
    }
    for v in m.values_mut() {
        v.sort_by(|a, b| (&a.created, a.restart_count).cmp(&(&b.created, b.restart_count)));
    }
    m
}

/// The directory of the pod's volumes and other node-side state.
pub fn pod_dir(k: &Kubelet, uid: &str) -> std::path::PathBuf {
    k.settings.root_dir.join("pods").join(uid)
}

impl Kubelet {
    /// Brings Docker in line with `pod` and writes its status.
    pub async fn sync_pod(&self, pod: &Pod) -> Result<Duration, SyncError> {
        let Some(docker) = self.docker.get() else {
            // The node reports dockerd's absence; look again soon.
            return Ok(Duration::from_secs(2));
        };
        let uid = pod.metadata.uid.clone();
        let containers = docker.list(label::POD_UID, &uid).await?;
        let grouped = by_name(&containers);
        let infra = grouped
            .get(label::INFRA)
            .and_then(|v| v.last().copied())
            .filter(|c| c.is_running());
        let already_done = pod.is_terminal();
        if already_done && containers.is_empty() {
            // Ended (or rejected) and cleaned up: nothing to look at again.
            self.release_host_ports(&uid).await;
            return Ok(Duration::from_secs(60));
        }
        let mut next = RESYNC;
        let mut sandbox_waiting: Option<Waiting> = None;
        if !already_done {
            match self.admit_host_ports(pod, infra.is_some()) {
                Admission::Admitted => {}
                Admission::Reject { reason, message } => {
                    self.fail_pod(pod, reason, format!("Pod was rejected: {message}"))
                        .await?;
                    return Ok(RESYNC);
                }
                Admission::Wait(message) => {
                    sandbox_waiting = Some(self.sandbox_failed(pod, message).await);
                    next = Duration::from_secs(5);
                }
            }
        }
        let infra = match infra {
            Some(c) => Some(c.clone()),
            None if already_done || sandbox_waiting.is_some() => None,
            None => match self.start_sandbox(&docker, pod, &containers).await {
                Ok(c) => Some(c),
                Err(e) => {
                    let message = match &e {
                        SyncError::Docker(d) => d.message(),
                        other => other.to_string(),
                    };
                    sandbox_waiting = Some(self.sandbox_failed(pod, message).await);
                    next = Duration::from_secs(5);
                    None
                }
            },
        };
        // After a new sandbox the old containers are gone: read again.
        let containers = if infra
            .as_ref()
            .is_some_and(|i| !containers.iter().any(|c| c.id == i.id))
        {
            docker.list(label::POD_UID, &uid).await?
        } else {
            containers
        };
        let grouped = by_name(&containers);
        let policy = restart_policy(pod);
        let host_ip = match self.settings.host_ip {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(_) => None,
        };
        if let Some(ip) = infra.as_ref().and_then(|i| i.pod_ip) {
            self.publish_host_ports(&uid, ip).await;
        }
        let pod_ip = infra.as_ref().and_then(|i| i.pod_ip).or(infra
            .as_ref()
            .filter(|_| pod.spec.host_network == Some(true))
            .and(host_ip));
        let mut waiting: BTreeMap<String, Waiting> = BTreeMap::new();
        let mut ready: BTreeMap<String, bool> = BTreeMap::new();
        let mut live = HashSet::new();
        let init = match &infra {
            Some(i) if !already_done => {
                self.sync_init(&docker, pod, &grouped, i, &mut waiting)
                    .await?
            }
            _ => InitProgress::Done,
        };
        if let InitProgress::Running { next: n } = init {
            next = next.min(n);
        }
        for spec in &pod.spec.containers {
            let mine = grouped.get(&spec.name).cloned().unwrap_or_default();
            let current = mine.last().copied();
            if let Some(w) = &sandbox_waiting {
                waiting.insert(spec.name.clone(), w.clone());
                continue;
            }
            if init != InitProgress::Done && current.is_none() {
                waiting.insert(spec.name.clone(), Waiting::new("PodInitializing", ""));
                continue;
            }
            let Some(infra) = &infra else { continue };
            match current.map(|c| &c.state) {
                Some(RunState::Running { .. }) => {
                    let c = current.expect("matched");
                    live.insert(c.id.clone());
                    let r = self.check_probes(&docker, pod, spec, c, pod_ip).await;
                    ready.insert(spec.name.clone(), r);
                }
                Some(RunState::Exited { exit_code, .. }) => {
                    let again = match policy {
                        "Never" => false,
                        "OnFailure" => *exit_code != 0,
                        _ => true,
                    };
                    if !again || already_done {
                        continue;
                    }
                    let (w, again_in) = self
                        .restart_after_backoff(&docker, pod, spec, infra, &mine)
                        .await?;
                    if let Some(w) = w {
                        waiting.insert(spec.name.clone(), w);
                    }
                    if let Some(d) = again_in {
                        next = next.min(d).max(Duration::from_millis(200));
                    }
                }
                Some(RunState::Created) | None => {
                    // A container created but never started (a start that
                    // failed) is replaced.
                    let restarts = current.map_or(0, |c| c.restart_count);
                    if let Some(c) = current {
                        docker.remove(&c.id).await?;
                    }
                    if let Err(w) = self
                        .start_container(&docker, pod, spec, infra, restarts)
                        .await
                    {
                        next = Duration::from_secs(5);
                        waiting.insert(spec.name.clone(), w);
                    }
                }
            }
        }
        self.probes_retain_pod(&containers, &live);
        let containers = docker.list(label::POD_UID, &uid).await?;
        let grouped = by_name(&containers);
        let views: Vec<ContainerView<'_>> = pod
            .spec
            .containers
            .iter()
            .map(|spec| {
                let mine = grouped.get(&spec.name);
                let current = mine.and_then(|v| v.last().copied());
                let previous = mine.and_then(|v| v.len().checked_sub(2).map(|i| v[i]));
                let w = waiting.get(&spec.name).cloned();
                ContainerView {
                    name: &spec.name,
                    image: &spec.image,
                    current,
                    previous,
                    waiting: w,
                    ready: current.is_some_and(|c| {
                        *ready
                            .get(&spec.name)
                            .unwrap_or(&(spec.readiness_probe.is_none() && c.is_running()))
                    }),
                }
            })
            .collect();
        let mut status = pod_status(
            pod.status.as_ref(),
            &views,
            policy,
            pod_ip,
            &self.settings.host_ip.to_string(),
        );
        with_init(
            &mut status,
            pod.status.as_ref(),
            &init::views(pod, &grouped, &waiting),
            policy,
        );
        keep_terminal(pod, &mut status);
        if status.phase == "Succeeded" || status.phase == "Failed" {
            // Nothing will run again: the sandbox (and its address and
            // host ports) goes.
            if let Some(i) = &infra {
                docker.remove(&i.id).await?;
            }
            self.release_host_ports(&uid).await;
        }
        self.write_status(pod, status).await?;
        Ok(next)
    }

    /// Reports a sandbox that could not be made (retried): the event, and
    /// the state its containers wait in.
    async fn sandbox_failed(&self, pod: &Pod, message: String) -> Waiting {
        self.events
            .warning(
                pod,
                "FailedCreatePodSandBox",
                format!("Failed to create pod sandbox: {message}"),
            )
            .await;
        Waiting::new("ContainerCreating", message)
    }

    /// Fails a pod for good — rejected at admission, or evicted — as
    /// Kubernetes' kubelet does: phase Failed, the reason and message in
    /// its status and in a warning event. A terminal phase is final (see
    /// [`Self::write_status`]), so nothing of it runs again; its
    /// controller, if any, makes a new pod.
    pub(super) async fn fail_pod(
        &self,
        pod: &Pod,
        reason: &str,
        message: String,
    ) -> Result<(), SyncError> {
        tracing::info!(pod = %pod.metadata.name, reason, "pod failed: {message}");
        self.events.warning(pod, reason, message.clone()).await;
        let mut old = pod.status.clone().unwrap_or_default();
        for c in &mut old.conditions {
            if (c.kind == "Ready" || c.kind == "ContainersReady") && c.status != "False" {
                c.status = "False".into();
                c.reason = "PodFailed".into();
                c.last_transition_time = Some(crate::api::meta::now());
            }
        }
        let status = crate::api::pod::PodStatus {
            phase: "Failed".into(),
            reason: reason.into(),
            message,
            host_ip: self.settings.host_ip.to_string(),
            start_time: old
                .start_time
                .clone()
                .or_else(|| Some(crate::api::meta::now())),
            conditions: old.conditions,
            qos_class: old.qos_class,
            ..Default::default()
        };
        self.write_status(pod, status).await
    }

    /// The newest run of `spec` (last of `mine`) ended and is to run
    /// again: it starts now if its back-off has passed (older dead runs go,
    /// the newest stays as `lastState`), else waits as `CrashLoopBackOff`.
    /// Returns why it is not running, if so, and when to look again.
    pub(super) async fn restart_after_backoff(
        &self,
        docker: &Docker,
        pod: &Pod,
        spec: &Spec,
        infra: &Container,
        mine: &[&Container],
    ) -> Result<(Option<Waiting>, Option<Duration>), SyncError> {
        let Some(c) = mine.last().copied() else {
            return Ok((None, None));
        };
        let finished_at = match &c.state {
            RunState::Exited { finished_at, .. } => finished_at.as_str(),
            _ => "",
        };
        let delay = restart_delay(c.restart_count);
        let ended = docker_time(finished_at)
            .as_deref()
            .and_then(parse_time)
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or(delay);
        if ended >= delay {
            let started = self
                .start_container(docker, pod, spec, infra, c.restart_count + 1)
                .await;
            // Keep one dead run (lastState); older ones go.
            for old in &mine[..mine.len().saturating_sub(1)] {
                docker.remove(&old.id).await?;
            }
            return Ok((started.err(), None));
        }
        let left = delay - ended;
        let message = format!(
            "back-off {}s restarting failed container={} pod={}_{}({})",
            delay.as_secs(),
            spec.name,
            pod.metadata.name,
            pod.metadata.namespace,
            pod.metadata.uid
        );
        if self
            .backoff_noted
            .lock()
            .expect("back-off notes")
            .insert(c.id.clone())
        {
            self.events
                .warning(
                    pod,
                    "BackOff",
                    format!(
                        "Back-off restarting failed container {} in pod {}",
                        spec.name, pod.metadata.name
                    ),
                )
                .await;
        }
        Ok((
            Some(Waiting::new("CrashLoopBackOff", message)),
            Some(left + Duration::from_millis(50)),
        ))
    }

    /// Writes `status` unless the store has it already. A pod that ended
    /// (Succeeded or Failed) keeps its phase, reason and message: a sync
    /// that read the pod before it was evicted must not bring it back.
    async fn write_status(
        &self,
        pod: &Pod,
        mut status: crate::api::pod::PodStatus,
    ) -> Result<(), SyncError> {
        keep_terminal(pod, &mut status);
        if pod.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let uid = pod.metadata.uid.clone();
        match self
            .registry
            .modify::<Pod>(
                &pod.metadata.namespace,
                &pod.metadata.name,
                Part::Status,
                |p| {
                    if p.metadata.uid != uid {
                        return Err(ApiError::conflict(
                            <Pod as crate::api::ApiObject>::INFO.what(),
                            &p.metadata.name,
                        ));
                    }
                    let mut status = status.clone();
                    keep_terminal(p, &mut status);
                    p.status = Some(status);
                    Ok(())
                },
            )
            .await
        {
            Ok(_) => Ok(()),
            // Deleted (or replaced) meanwhile: the next reconcile cleans up.
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts the probe workers of a running container; whether it is ready.
    async fn check_probes(
        &self,
        docker: &Docker,
        pod: &Pod,
        spec: &Spec,
        c: &Container,
        pod_ip: Option<Ipv4Addr>,
    ) -> bool {
        let target = Target {
            docker: docker.clone(),
            container_id: c.id.clone(),
            pod_ip: pod_ip.unwrap_or(Ipv4Addr::LOCALHOST),
            spec: spec.clone(),
        };
        if let Some(p) = &spec.liveness_probe {
            self.probes
                .ensure(Kind::Liveness, p, target.clone(), pod, &self.events);
            if let Some(Verdict::Failure(why)) = self.probes.verdict(&c.id, Kind::Liveness) {
                self.events
                    .normal(
                        pod,
                        "Killing",
                        format!(
                            "Container {} failed liveness probe, will be restarted: {why}",
                            spec.name
                        ),
                    )
                    .await;
                self.probes.forget(&c.id);
                if let Err(e) = docker.stop(&c.id, grace_of(pod)).await {
                    tracing::warn!(container = %c.id, "stopping a container that failed its liveness probe: {}", e.message());
                }
                return false;
            }
        }
        match &spec.readiness_probe {
            Some(p) => {
                self.probes
                    .ensure(Kind::Readiness, p, target, pod, &self.events);
                self.probes.verdict(&c.id, Kind::Readiness) == Some(Verdict::Success)
            }
            None => true,
        }
    }

    fn probes_retain_pod(&self, containers: &[Container], live: &HashSet<String>) {
        for c in containers {
            if !live.contains(&c.id) {
                self.probes.forget(&c.id);
            }
        }
    }
    /// Stops and removes every container of `uid` (a deleted pod).
    pub async fn kill_pod(&self, docker: &Docker, uid: &str, grace: i64) -> Result<(), SyncError> {
        let containers = docker.list(label::POD_UID, uid).await?;
        // App containers first, together, then the sandbox.
        let apps = containers
            .iter()
            .filter(|c| !c.is_infra() && c.is_running());
        futures::future::join_all(apps.map(|c| docker.stop(&c.id, grace))).await;
        for c in &containers {
            self.probes.forget(&c.id);
            self.backoff_noted
                .lock()
                .expect("back-off notes")
                .remove(&c.id);
            docker.remove(&c.id).await?;
        }
        self.pull_backoff
            .lock()
            .expect("pull back-off")
            .retain(|k, _| !k.starts_with(&format!("{uid}/")));
        network::detach(&network::host_ifname(uid)).await;
        self.release_host_ports(uid).await;
        super::volumes::remove_pod_volumes(docker, uid).await?;
        let dir = pod_dir(self, uid);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(SyncError::Io {
                    what: "removing pod directory",
                    path: dir.display().to_string(),
                    source,
                });
            }
        }
        if !containers.is_empty() {
            tracing::info!(uid, "pod containers removed");
        }
        Ok(())
    }
}

/// Keeps an ended pod's phase, reason and message in `status`.
fn keep_terminal(pod: &Pod, status: &mut crate::api::pod::PodStatus) {
    if let Some(old) = pod.status.as_ref().filter(|_| pod.is_terminal()) {
        status.phase.clone_from(&old.phase);
        status.reason.clone_from(&old.reason);
        status.message.clone_from(&old.message);
    }
}

/// Always, OnFailure or Never.
pub fn restart_policy(pod: &Pod) -> &str {
    match pod.spec.restart_policy.as_str() {
        "" => "Always",
        p => p,
    }
}

/// The pod's termination grace period in seconds.
pub fn grace_of(pod: &Pod) -> i64 {
    pod.spec
        .termination_grace_period_seconds
        .unwrap_or(30)
        .max(0)
}
