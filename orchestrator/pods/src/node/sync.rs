//! Pod sync: makes Docker match one pod bound to this node. The infra
//! container holds the pod's network namespace (plugged into `herd0`,
//! see [`super::network`]) and its hostname; each app container joins it
//! (`container:<id>` network and IPC) with the pod's env, the service
//! env, volumes and resource limits. Containers that ended are restarted
//! by the pod's restart policy with Kubernetes' back-off; a failed
//! liveness probe kills its container. Every container is labelled with
//! its pod (see [`super::docker::label`]), so what runs is read back from
//! Docker each time — after an agent restart too — and never started
//! twice. The status written back is computed in [`super::status`].

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use bollard::models::{ContainerCreateBody, HostConfig};

use super::Kubelet;
use super::docker::{Container, Docker, DockerError, RunState, label};
use super::network::{self, NetworkError, PodSubnet};
use super::probes::{Kind, Target, Verdict};
use super::service_env::service_env;
use super::status::{ContainerView, Waiting, docker_time, pod_status, restart_delay};
use crate::api::meta::parse_time;
use crate::api::pod::{Container as Spec, EnvVar};
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

/// A Docker name for a new container of the pod (unique per attempt).
fn docker_name(pod: &Pod, container: &str, restart: i32) -> String {
    let uid: String = pod.metadata.uid.chars().take(8).collect();
    format!(
        "herd_{container}_{}_{}_{uid}_{restart}",
        pod.metadata.name, pod.metadata.namespace
    )
}

fn labels(
    pod: &Pod,
    node: &str,
    container: &str,
    restart: i32,
) -> std::collections::HashMap<String, String> {
    std::collections::HashMap::from([
        (label::NODE.to_owned(), node.to_owned()),
        (label::POD_UID.to_owned(), pod.metadata.uid.clone()),
        (
            label::POD_NAMESPACE.to_owned(),
            pod.metadata.namespace.clone(),
        ),
        (label::POD_NAME.to_owned(), pod.metadata.name.clone()),
        (label::CONTAINER.to_owned(), container.to_owned()),
        (label::RESTART_COUNT.to_owned(), restart.to_string()),
    ])
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
        let mut next = RESYNC;
        let mut sandbox_waiting: Option<Waiting> = None;
        let infra = match infra {
            Some(c) => Some(c.clone()),
            None if already_done => None,
            None => match self.start_sandbox(&docker, pod, &containers).await {
                Ok(c) => Some(c),
                Err(e) => {
                    let message = match &e {
                        SyncError::Docker(d) => d.message(),
                        other => other.to_string(),
                    };
                    self.events
                        .warning(
                            pod,
                            "FailedCreatePodSandBox",
                            format!("Failed to create pod sandbox: {message}"),
                        )
                        .await;
                    sandbox_waiting = Some(Waiting::new("ContainerCreating", message));
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
        let pod_ip = infra.as_ref().and_then(|i| i.pod_ip).or(infra
            .as_ref()
            .filter(|_| pod.spec.host_network == Some(true))
            .and(host_ip));
        let mut waiting: BTreeMap<String, Waiting> = BTreeMap::new();
        let mut ready: BTreeMap<String, bool> = BTreeMap::new();
        let mut live = HashSet::new();
        for spec in &pod.spec.containers {
            let mine = grouped.get(&spec.name).cloned().unwrap_or_default();
            let current = mine.last().copied();
            if let Some(w) = &sandbox_waiting {
                waiting.insert(spec.name.clone(), w.clone());
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
                Some(RunState::Exited {
                    exit_code,
                    finished_at,
                    ..
                }) => {
                    let c = current.expect("matched");
                    let again = match policy {
                        "Never" => false,
                        "OnFailure" => *exit_code != 0,
                        _ => true,
                    };
                    if !again || already_done {
                        continue;
                    }
                    let delay = restart_delay(c.restart_count);
                    let ended = docker_time(finished_at)
                        .as_deref()
                        .and_then(parse_time)
                        .and_then(|t| SystemTime::now().duration_since(t).ok())
                        .unwrap_or(delay);
                    if ended >= delay {
                        if let Err(w) = self
                            .start_container(&docker, pod, spec, infra, c.restart_count + 1)
                            .await
                        {
                            waiting.insert(spec.name.clone(), w);
                        }
                        // Keep one dead run (lastState); older ones go.
                        for old in &mine[..mine.len().saturating_sub(1)] {
                            docker.remove(&old.id).await?;
                        }
                    } else {
                        let left = delay - ended;
                        let message = format!(
                            "back-off {}s restarting failed container={} pod={}_{}({uid})",
                            delay.as_secs(),
                            spec.name,
                            pod.metadata.name,
                            pod.metadata.namespace
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
                        waiting
                            .insert(spec.name.clone(), Waiting::new("CrashLoopBackOff", message));
                        next = next
                            .min(left + Duration::from_millis(50))
                            .max(Duration::from_millis(200));
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
        let status = pod_status(
            pod.status.as_ref(),
            &views,
            policy,
            pod_ip,
            &self.settings.host_ip.to_string(),
        );
        if status.phase == "Succeeded" || status.phase == "Failed" {
            // Nothing will run again: the sandbox (and its address) goes.
            if let Some(i) = &infra {
                docker.remove(&i.id).await?;
            }
        }
        self.write_status(pod, status).await?;
        Ok(next)
    }

    /// Writes `status` unless the store has it already.
    async fn write_status(
        &self,
        pod: &Pod,
        status: crate::api::pod::PodStatus,
    ) -> Result<(), SyncError> {
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
                    p.status = Some(status.clone());
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

    /// Makes the image present as `policy` says; the waiting reason if not.
    /// A failed pull is retried after 10 s doubling to 5 min
    /// (`ImagePullBackOff` meanwhile), as Kubernetes does.
    async fn ensure_image(
        &self,
        docker: &Docker,
        pod: &Pod,
        image: &str,
        policy: &str,
    ) -> Result<(), Waiting> {
        let present = docker
            .has_image(image)
            .await
            .map_err(|e| Waiting::new("ErrImagePull", e.message()))?;
        let pull = match policy {
            "Always" => true,
            "Never" if !present => {
                let m =
                    format!("Container image {image:?} is not present with pull policy of Never");
                self.events
                    .warning(pod, "ErrImageNeverPull", m.clone())
                    .await;
                return Err(Waiting::new("ErrImageNeverPull", m));
            }
            "Never" => false,
            _ => !present,
        };
        if !pull {
            return Ok(());
        }
        let key = format!("{}/{image}", pod.metadata.uid);
        let failures = {
            let backoff = self.pull_backoff.lock().expect("pull back-off");
            match backoff.get(&key) {
                Some((until, _)) if std::time::Instant::now() < *until => {
                    return Err(Waiting::new(
                        "ImagePullBackOff",
                        format!("Back-off pulling image {image:?}"),
                    ));
                }
                Some((_, n)) => *n,
                None => 0,
            }
        };
        match docker.pull(image).await {
            Ok(()) => {
                self.pull_backoff
                    .lock()
                    .expect("pull back-off")
                    .remove(&key);
                Ok(())
            }
            Err(e) => {
                let m = format!("Failed to pull image {image:?}: {}", e.message());
                self.events.warning(pod, "Failed", m.clone()).await;
                let wait = restart_delay(failures + 1);
                self.pull_backoff
                    .lock()
                    .expect("pull back-off")
                    .insert(key, (std::time::Instant::now() + wait, failures + 1));
                Err(Waiting::new("ErrImagePull", m))
            }
        }
    }

    /// Creates and starts the pod's infra container and plugs in its
    /// network; first removes what is left of an earlier sandbox (app
    /// containers cannot outlive the namespace they joined).
    async fn start_sandbox(
        &self,
        docker: &Docker,
        pod: &Pod,
        old: &[Container],
    ) -> Result<Container, SyncError> {
        let host_network = pod.spec.host_network == Some(true);
        let subnet = if host_network {
            None
        } else {
            Some(PodSubnet::read(&self.settings.subnet_env).await?)
        };
        let image = self.settings.infra_image.clone();
        if !docker.has_image(&image).await? {
            docker.pull(&image).await?;
        }
        let _alloc = self.allocating.lock().await;
        let previous_ip = old.iter().filter(|c| c.is_infra()).find_map(|c| c.pod_ip);
        for c in old {
            self.probes.forget(&c.id);
            docker.remove(&c.id).await?;
        }
        let ip = match &subnet {
            Some(s) => {
                let used: BTreeSet<Ipv4Addr> = docker
                    .list(label::NODE, &self.settings.node_name)
                    .await?
                    .into_iter()
                    .filter(|c| c.is_infra() && !matches!(c.state, RunState::Exited { .. }))
                    .filter_map(|c| c.pod_ip)
                    .collect();
                Some(
                    match previous_ip.filter(|ip| s.contains(*ip) && !used.contains(ip)) {
                        Some(ip) => ip,
                        None => s.allocate(&used)?,
                    },
                )
            }
            None => None,
        };
        let restarts = old
            .iter()
            .filter(|c| c.is_infra())
            .map(|c| c.restart_count + 1)
            .max()
            .unwrap_or(0);
        let mut labels = labels(pod, &self.settings.node_name, label::INFRA, restarts);
        if let Some(ip) = ip {
            labels.insert(label::POD_IP.to_owned(), ip.to_string());
        }
        let hostname = if pod.spec.hostname.is_empty() {
            &pod.metadata.name
        } else {
            &pod.spec.hostname
        };
        let body = ContainerCreateBody {
            image: Some(image),
            hostname: (!host_network).then(|| hostname.chars().take(63).collect()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(if host_network { "host" } else { "none" }.into()),
                ipc_mode: Some("shareable".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = docker
            .create(&docker_name(pod, label::INFRA, restarts), body)
            .await?;
        let plugged = async {
            docker.start(&id).await?;
            let c = docker
                .inspect(&id)
                .await?
                .ok_or_else(|| NetworkError::Command {
                    command: format!("inspect {id}"),
                    stderr: "the infra container lost its labels".into(),
                })?;
            if let (Some(s), Some(ip), RunState::Running { pid, .. }) = (&subnet, ip, &c.state) {
                network::attach(
                    &self.settings.bridge,
                    s,
                    *pid,
                    ip,
                    &network::host_ifname(&pod.metadata.uid),
                )
                .await?;
            }
            Ok::<_, SyncError>(c)
        }
        .await;
        match plugged {
            Ok(c) => {
                tracing::info!(pod = %pod.metadata.name, namespace = %pod.metadata.namespace, ip = ?ip, "pod sandbox started");
                Ok(c)
            }
            Err(e) => {
                let _ = docker.remove(&id).await;
                Err(e)
            }
        }
    }

    /// Creates and starts container `spec` of `pod` in `infra`'s
    /// namespaces; the waiting reason when it could not.
    async fn start_container(
        &self,
        docker: &Docker,
        pod: &Pod,
        spec: &Spec,
        infra: &Container,
        restarts: i32,
    ) -> Result<(), Waiting> {
        let policy = if spec.image_pull_policy.is_empty() {
            if super::docker::split_image(&spec.image).1 == "latest" {
                "Always"
            } else {
                "IfNotPresent"
            }
        } else {
            spec.image_pull_policy.as_str()
        };
        self.ensure_image(docker, pod, &spec.image, policy).await?;
        let binds = self
            .binds(pod, spec)
            .await
            .map_err(|e| Waiting::new("CreateContainerConfigError", e.to_string()))?;
        let env = self.env(pod, spec, infra);
        let (limits, requests) = (
            crate::api::quantity::millis_of(&spec.resources.limits),
            crate::api::quantity::millis_of(&spec.resources.requests),
        );
        let cpu_limit = limits.get("cpu").copied();
        let cpu_request = requests.get("cpu").copied().or(cpu_limit);
        let memory = limits.get("memory").map(|m| (m / 1000) as i64);
        let join = format!("container:{}", infra.id);
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: (!spec.command.is_empty()).then(|| spec.command.clone()),
            cmd: (!spec.args.is_empty()).then(|| spec.args.clone()),
            env: Some(env),
            working_dir: (!spec.working_dir.is_empty()).then(|| spec.working_dir.clone()),
            labels: Some(labels(pod, &self.settings.node_name, &spec.name, restarts)),
            host_config: Some(HostConfig {
                network_mode: Some(join.clone()),
                ipc_mode: Some(join),
                binds: Some(binds),
                cpu_shares: cpu_request.map(|m| ((m * 1024 / 1000) as i64).max(2)),
                cpu_period: cpu_limit.map(|_| 100_000),
                cpu_quota: cpu_limit.map(|m| ((m * 100) as i64).max(1000)),
                memory,
                privileged: spec.security_context.as_ref().and_then(|s| s.privileged),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = docker_name(pod, &spec.name, restarts);
        let id = match docker.create(&name, body).await {
            Ok(id) => id,
            Err(e) => {
                let m = format!("Error: {}", e.message());
                self.events.warning(pod, "Failed", m.clone()).await;
                return Err(Waiting::new("CreateContainerError", m));
            }
        };
        if let Err(e) = docker.start(&id).await {
            let m = e.message();
            self.events
                .warning(pod, "Failed", format!("Error: {m}"))
                .await;
            let _ = docker.remove(&id).await;
            return Err(Waiting::new("RunContainerError", m));
        }
        let verb = if restarts > 0 { "Restarted" } else { "Started" };
        self.events
            .normal(pod, "Started", format!("{verb} container {}", spec.name))
            .await;
        Ok(())
    }

    /// The container's environment: the service env first (for services
    /// existing now, in the pod's namespace), then the spec's own.
    fn env(&self, pod: &Pod, spec: &Spec, infra: &Container) -> Vec<String> {
        let services: Vec<crate::api::Service> = self
            .services
            .list()
            .into_iter()
            .map(|o| o.value)
            .filter(|s| s.metadata.namespace == pod.metadata.namespace)
            .collect();
        let mut vars: Vec<(String, String)> = service_env(&services);
        for EnvVar {
            name,
            value,
            value_from,
        } in &spec.env
        {
            let v = match (value, value_from) {
                (Some(v), _) => expand(v, &vars),
                (None, Some(src)) => match src.field_ref.field_path.as_str() {
                    "metadata.name" => pod.metadata.name.clone(),
                    "metadata.namespace" => pod.metadata.namespace.clone(),
                    "metadata.uid" => pod.metadata.uid.clone(),
                    "spec.nodeName" => pod.spec.node_name.clone(),
                    "status.hostIP" => self.settings.host_ip.to_string(),
                    "status.podIP" => infra.pod_ip.map(|i| i.to_string()).unwrap_or_default(),
                    _ => String::new(),
                },
                (None, None) => String::new(),
            };
            vars.retain(|(n, _)| n != name);
            vars.push((name.clone(), v));
        }
        vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// `host:container[:ro]` binds of the container's volume mounts.
    async fn binds(&self, pod: &Pod, spec: &Spec) -> Result<Vec<String>, SyncError> {
        let mut binds = Vec::new();
        for m in &spec.volume_mounts {
            let Some(v) = pod.spec.volumes.iter().find(|v| v.name == m.name) else {
                continue;
            };
            let host = if v.empty_dir.is_some() {
                pod_dir(self, &pod.metadata.uid)
                    .join("volumes")
                    .join(&v.name)
            } else if let Some(hp) = &v.host_path {
                std::path::PathBuf::from(&hp.path)
            } else {
                continue;
            };
            let create = v.empty_dir.is_some()
                || v.host_path
                    .as_ref()
                    .is_some_and(|h| h.kind == "DirectoryOrCreate");
            if create {
                tokio::fs::create_dir_all(&host)
                    .await
                    .map_err(|source| SyncError::Io {
                        what: "creating volume directory",
                        path: host.display().to_string(),
                        source,
                    })?;
            }
            let ro = if m.read_only == Some(true) { ":ro" } else { "" };
            binds.push(format!("{}:{}{ro}", host.display(), m.mount_path));
        }
        Ok(binds)
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

/// `$(VAR)` references to earlier variables, as Kubernetes expands them.
fn expand(value: &str, vars: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find(')') {
            Some(end) => {
                let name = &after[..end];
                match vars.iter().rev().find(|(n, _)| n == name) {
                    Some((_, v)) => out.push_str(v),
                    None => out.push_str(&rest[start..start + 3 + end]),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_expand_to_earlier_variables() {
        let vars = vec![("A".to_owned(), "1".to_owned())];
        assert_eq!(expand("x$(A)y", &vars), "x1y");
        assert_eq!(expand("$(B)", &vars), "$(B)");
        assert_eq!(expand("$(A", &vars), "$(A");
    }

    #[test]
    fn docker_names_are_unique_per_attempt() {
        let mut pod = Pod::default();
        pod.metadata.name = "web".into();
        pod.metadata.namespace = "default".into();
        pod.metadata.uid = "0123456789".into();
        assert_eq!(
            docker_name(&pod, "app", 2),
            "herd_app_web_default_01234567_2"
        );
        assert_ne!(docker_name(&pod, "app", 2), docker_name(&pod, "app", 3));
    }
}
