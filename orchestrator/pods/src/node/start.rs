//! Starting a pod's containers: the image by its pull policy, the infra
//! container that holds the pod's network namespace (plugged into `herd0`
//! by [`super::network`]) and hostname, and
//! each app container joined to it with the pod's env (service env and
//! `$(VAR)` references expanded), volumes and resource limits.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use bollard::models::{ContainerCreateBody, HostConfig};

use super::Kubelet;
use super::docker::{Container, Docker, RunState, label};
use super::network::{self, NetworkError, PodSubnet};
use super::service_env::service_env;
use super::status::{Waiting, restart_delay};
use super::sync::SyncError;
use crate::api::Pod;
use crate::api::pod::{Container as Spec, EnvVar};

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

impl Kubelet {
    /// Makes the image present as `policy` says; the waiting reason if not.
    /// A failed pull is retried after 10 s doubling to 5 min
    /// (`ImagePullBackOff` meanwhile), as Kubernetes does.
    pub(super) async fn ensure_image(
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
    pub(super) async fn start_sandbox(
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
                binds: Some(self.sandbox_binds(docker, pod).await?),
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
    pub(super) async fn start_container(
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
            .binds(docker, pod, spec)
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
