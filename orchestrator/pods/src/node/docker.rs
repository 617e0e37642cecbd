//! The kubelet's Docker client: bollard on the daemon's socket, reduced
//! to what the kubelet does (containers labelled with their pod, images
//! present or pulled, exec for probes, logs), with every container read
//! back into a typed [`Container`] at this edge.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, ContainerInspectResponse};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StopContainerOptions,
};
use bytes::Bytes;
use futures::{Stream, StreamExt};

/// Labels every container of a pod carries: after an agent or dockerd
/// restart they are how the kubelet finds what it runs.
pub mod label {
    pub const NODE: &str = "io.herd.node";
    pub const POD_UID: &str = "io.herd.pod.uid";
    pub const POD_NAMESPACE: &str = "io.herd.pod.namespace";
    pub const POD_NAME: &str = "io.herd.pod.name";
    /// The container's name in the pod spec; [`INFRA`] for the infra one.
    pub const CONTAINER: &str = "io.herd.container";
    /// The pod's address (on the infra container).
    pub const POD_IP: &str = "io.herd.pod.ip";
    /// How many times this container of the pod was restarted before.
    pub const RESTART_COUNT: &str = "io.herd.restart-count";
    /// The name of the infra container in [`CONTAINER`].
    pub const INFRA: &str = "POD";
}

/// The API version asked for first: dockerd 20.10's (Debian 12); newer
/// daemons are negotiated down to it or up to theirs.
const API_VERSION: bollard::ClientVersion = bollard::ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// A failed Docker call.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("dockerd at {host} is not reachable")]
    Unreachable {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("{what}")]
    Call {
        what: String,
        #[source]
        source: bollard::errors::Error,
    },
}

impl DockerError {
    /// Docker's 404: no such container or image.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            DockerError::Call {
                source: bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    ..
                },
                ..
            }
        )
    }

    /// The daemon's own message, for statuses and events.
    pub fn message(&self) -> String {
        match self {
            DockerError::Call {
                source: bollard::errors::Error::DockerResponseServerError { message, .. },
                what,
            } => format!("{what}: {message}"),
            other => {
                let mut s = other.to_string();
                let mut cause = std::error::Error::source(other);
                while let Some(c) = cause {
                    s.push_str(&format!(": {c}"));
                    cause = c.source();
                }
                s
            }
        }
    }
}

pub(super) fn call(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> DockerError {
    let what = what.into();
    move |source| DockerError::Call { what, source }
}

/// What a container is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    Created,
    Running {
        started_at: String,
        pid: i64,
    },
    Exited {
        exit_code: i64,
        started_at: String,
        finished_at: String,
        oom_killed: bool,
        error: String,
    },
}

/// A container of a pod as Docker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub pod_uid: String,
    pub namespace: String,
    pub pod_name: String,
    /// The spec's container name, or [`label::INFRA`].
    pub name: String,
    pub restart_count: i32,
    pub pod_ip: Option<std::net::Ipv4Addr>,
    pub image: String,
    pub image_id: String,
    /// Docker's creation time (RFC 3339), which orders restarts.
    pub created: String,
    pub state: RunState,
}

impl Container {
    pub fn is_running(&self) -> bool {
        matches!(self.state, RunState::Running { .. })
    }

    pub fn is_infra(&self) -> bool {
        self.name == label::INFRA
    }

    /// From an inspection; `None` for a container without herd's labels.
    pub fn from_inspect(c: ContainerInspectResponse) -> Option<Container> {
        let config = c.config.unwrap_or_default();
        let labels = config.labels.unwrap_or_default();
        let get = |k: &str| labels.get(k).cloned();
        let s = c.state.unwrap_or_default();
        let time = |t: Option<String>| t.unwrap_or_default();
        let state = if s.running == Some(true) {
            RunState::Running {
                started_at: time(s.started_at),
                pid: s.pid.unwrap_or(0),
            }
        } else if s
            .finished_at
            .as_deref()
            .is_some_and(|f| !f.starts_with("0001"))
            || s.exit_code.is_some_and(|c| c != 0)
        {
            RunState::Exited {
                exit_code: s.exit_code.unwrap_or(0),
                started_at: time(s.started_at),
                finished_at: time(s.finished_at),
                oom_killed: s.oom_killed == Some(true),
                error: s.error.unwrap_or_default(),
            }
        } else {
            RunState::Created
        };
        Some(Container {
            id: c.id.unwrap_or_default(),
            pod_uid: get(label::POD_UID)?,
            namespace: get(label::POD_NAMESPACE).unwrap_or_default(),
            pod_name: get(label::POD_NAME).unwrap_or_default(),
            name: get(label::CONTAINER)?,
            restart_count: get(label::RESTART_COUNT)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            pod_ip: get(label::POD_IP).and_then(|ip| ip.parse().ok()),
            image: config.image.unwrap_or_default(),
            image_id: c.image.unwrap_or_default(),
            created: c.created.map(|d| d.to_string()).unwrap_or_default(),
            state,
        })
    }
}

/// An exec started attached: Docker's output frames and the process's stdin.
pub struct AttachedExec {
    pub id: String,
    pub output: std::pin::Pin<
        Box<
            dyn Stream<Item = Result<bollard::container::LogOutput, bollard::errors::Error>> + Send,
        >,
    >,
    pub input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
}

/// A dockerd, reached through its socket.
#[derive(Clone)]
pub struct Docker {
    inner: bollard::Docker,
    host: String,
}

impl std::fmt::Debug for Docker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Docker").field("host", &self.host).finish()
    }
}

/// `unix:///run/docker.sock` or a plain path → the socket's path.
pub fn socket_path(host: &str) -> &str {
    host.strip_prefix("unix://").unwrap_or(host)
}

impl Docker {
    /// Connects to `host` (`unix:///PATH`) and agrees on an API version.
    pub async fn connect(host: &str) -> Result<Docker, DockerError> {
        let unreachable = |source| DockerError::Unreachable {
            host: host.to_owned(),
            source,
        };
        let inner = bollard::Docker::connect_with_unix(socket_path(host), 60, &API_VERSION)
            .map_err(unreachable)?
            .negotiate_version()
            .await
            .map_err(unreachable)?;
        Ok(Docker {
            inner,
            host: host.to_owned(),
        })
    }

    /// A handle that never connected (for tests of code that holds one).
    #[cfg(test)]
    pub fn unconnected() -> Docker {
        Docker {
            inner: bollard::Docker::connect_with_unix("/", 1, &API_VERSION).expect("a handle"),
            host: "/".into(),
        }
    }

    /// The raw API, for the kubelet's modules that own a kind of Docker
    /// object (volumes).
    pub(super) fn api(&self) -> &bollard::Docker {
        &self.inner
    }

    /// `docker://<version>` for the node's info; fails when dockerd is down.
    pub async fn version(&self) -> Result<String, DockerError> {
        let v = self
            .inner
            .version()
            .await
            .map_err(|source| DockerError::Unreachable {
                host: self.host.clone(),
                source,
            })?;
        Ok(format!("docker://{}", v.version.unwrap_or_default()))
    }

    /// Every container (running or not) carrying `key=value`.
    pub async fn list(&self, key: &str, value: &str) -> Result<Vec<Container>, DockerError> {
        let filters = HashMap::from([("label".to_owned(), vec![format!("{key}={value}")])]);
        let summaries = self
            .inner
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(call("listing containers"))?;
        let mut out = Vec::new();
        for s in summaries {
            let Some(id) = s.id else { continue };
            match self.inspect(&id).await {
                Ok(Some(c)) => out.push(c),
                Ok(None) => {}
                // Removed between the listing and the inspection.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub async fn inspect(&self, id: &str) -> Result<Option<Container>, DockerError> {
        let c = self
            .inner
            .inspect_container(id, None)
            .await
            .map_err(call(format!("inspecting container {id}")))?;
        Ok(Container::from_inspect(c))
    }

    /// Creates a container named `name`; returns its id.
    pub async fn create(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<String, DockerError> {
        let r = self
            .inner
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_owned()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(call(format!("creating container {name}")))?;
        Ok(r.id)
    }

    pub async fn start(&self, id: &str) -> Result<(), DockerError> {
        self.inner
            .start_container(id, None)
            .await
            .map_err(call(format!("starting container {id}")))
    }

    /// Stops `id` (SIGTERM, SIGKILL after `grace_seconds`); a container
    /// already gone or stopped is fine.
    pub async fn stop(&self, id: &str, grace_seconds: i64) -> Result<(), DockerError> {
        match self
            .inner
            .stop_container(
                id,
                Some(StopContainerOptions {
                    t: Some(grace_seconds.clamp(0, i64::from(i32::MAX)) as i32),
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => Ok(()),
            Err(e) => Err(call(format!("stopping container {id}"))(e)),
        }
    }

    /// The memory `id` holds and cannot easily give back (its cgroup's
    /// usage less inactive file pages: Kubernetes' "working set"), in
    /// bytes; `None` for a container that is not running.
    pub async fn memory_working_set(&self, id: &str) -> Result<Option<u64>, DockerError> {
        let options = bollard::query_parameters::StatsOptionsBuilder::new()
            .stream(false)
            .one_shot(true)
            .build();
        let mut stats = self.inner.stats(id, Some(options));
        let Some(first) = stats.next().await else {
            return Ok(None);
        };
        let memory = match first {
            Ok(s) => s.memory_stats,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(call(format!("reading the stats of container {id}"))(e)),
        };
        let Some(m) = memory.filter(|m| m.usage.is_some()) else {
            return Ok(None);
        };
        // cgroup v1 names it total_inactive_file, v2 inactive_file.
        let inactive = m.stats.as_ref().and_then(|s| {
            s.get("total_inactive_file")
                .or_else(|| s.get("inactive_file"))
                .copied()
        });
        let usage = m.usage.unwrap_or(0);
        Ok(Some(usage.saturating_sub(inactive.unwrap_or(0))))
    }

    /// Removes `id`, killing it if it runs; a container already gone is fine.
    pub async fn remove(&self, id: &str) -> Result<(), DockerError> {
        match self
            .inner
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            // Removal already under way (two cleanups racing).
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(call(format!("removing container {id}"))(e)),
        }
    }

    /// Whether `image` is present locally.
    pub async fn has_image(&self, image: &str) -> Result<bool, DockerError> {
        match self.inner.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(call(format!("inspecting image {image}"))(e)),
        }
    }

    /// Pulls `image` (`repo[:tag]`, tag `latest` when left out).
    pub async fn pull(&self, image: &str) -> Result<(), DockerError> {
        let (repo, tag) = split_image(image);
        let mut progress = self.inner.create_image(
            Some(CreateImageOptions {
                from_image: Some(repo.to_owned()),
                tag: Some(tag.to_owned()),
                ..Default::default()
            }),
            None,
            None,
        );
        while let Some(step) = progress.next().await {
            step.map_err(call(format!("pulling image {image}")))?;
        }
        Ok(())
    }

    /// Runs `cmd` in container `id`; its exit code and output.
    pub async fn exec(&self, id: &str, cmd: &[String]) -> Result<(i64, String), DockerError> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let exec = self
            .inner
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(cmd.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(call(format!("exec in container {id}")))?;
        let mut output = String::new();
        if let StartExecResults::Attached {
            output: mut out, ..
        } = self
            .inner
            .start_exec(&exec.id, None)
            .await
            .map_err(call(format!("exec in container {id}")))?
        {
            while let Some(chunk) = out.next().await {
                let chunk = chunk.map_err(call(format!("exec in container {id}")))?;
                if output.len() < 4096 {
                    output.push_str(&chunk.to_string());
                }
            }
        }
        let inspect = self
            .inner
            .inspect_exec(&exec.id)
            .await
            .map_err(call(format!("exec in container {id}")))?;
        Ok((inspect.exit_code.unwrap_or(-1), output))
    }

    /// Starts `cmd` in container `id` attached: its output as Docker
    /// frames it, and its stdin when `stdin` (closing it is the
    /// command's end of input). The exit code comes from [`Docker::exit_code`].
    pub async fn exec_attached(
        &self,
        id: &str,
        cmd: Vec<String>,
        stdin: bool,
        tty: bool,
    ) -> Result<AttachedExec, DockerError> {
        use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
        let what = || format!("exec in container {id}");
        let exec = self
            .inner
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(cmd),
                    attach_stdin: Some(stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(tty),
                    ..Default::default()
                },
            )
            .await
            .map_err(call(what()))?;
        let options = StartExecOptions {
            tty,
            ..Default::default()
        };
        match self
            .inner
            .start_exec(&exec.id, Some(options))
            .await
            .map_err(call(what()))?
        {
            StartExecResults::Attached { output, input } => Ok(AttachedExec {
                id: exec.id,
                output,
                input,
            }),
            StartExecResults::Detached => Err(DockerError::Call {
                what: what(),
                source: bollard::errors::Error::DockerResponseServerError {
                    status_code: 500,
                    message: "dockerd started the exec detached".into(),
                },
            }),
        }
    }

    /// The exit code of exec `id` once its process ended (`None` while it
    /// runs).
    pub async fn exit_code(&self, id: &str) -> Result<Option<i64>, DockerError> {
        let inspect = self
            .inner
            .inspect_exec(id)
            .await
            .map_err(call(format!("inspecting exec {id}")))?;
        Ok(match inspect.running {
            Some(true) => None,
            _ => inspect.exit_code,
        })
    }

    /// Resizes exec `id`'s terminal.
    pub async fn resize_exec(&self, id: &str, width: u16, height: u16) -> Result<(), DockerError> {
        self.inner
            .resize_exec(id, bollard::exec::ResizeExecOptions { height, width })
            .await
            .map_err(call(format!("resizing exec {id}")))
    }

    /// The output of container `id` (stdout and stderr interleaved as
    /// Docker kept them), following it when `follow`.
    pub fn logs(
        &self,
        id: &str,
        follow: bool,
        tail: Option<u64>,
        timestamps: bool,
    ) -> impl Stream<Item = Result<Bytes, DockerError>> + Send + 'static {
        let what = format!("reading the logs of container {id}");
        self.inner
            .logs(
                id,
                Some(LogsOptions {
                    follow,
                    stdout: true,
                    stderr: true,
                    timestamps,
                    tail: tail.map_or_else(|| "all".to_owned(), |n| n.to_string()),
                    ..Default::default()
                }),
            )
            .map(move |chunk| chunk.map(|c| c.into_bytes()).map_err(call(what.clone())))
    }
}

/// `repo[:tag]` → (repo, tag); a registry's port is not a tag.
pub fn split_image(image: &str) -> (&str, &str) {
    let image = image.split('@').next().unwrap_or(image);
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_split_at_the_tag_not_the_port() {
        assert_eq!(split_image("busybox"), ("busybox", "latest"));
        assert_eq!(split_image("local/bb:1"), ("local/bb", "1"));
        assert_eq!(split_image("reg:5000/app"), ("reg:5000/app", "latest"));
        assert_eq!(split_image("reg:5000/app:v2"), ("reg:5000/app", "v2"));
        assert_eq!(socket_path("unix:///run/d.sock"), "/run/d.sock");
    }

    #[test]
    fn inspections_without_herd_labels_are_not_pods() {
        assert!(Container::from_inspect(ContainerInspectResponse::default()).is_none());
        let mut c = ContainerInspectResponse {
            id: Some("abc".into()),
            ..Default::default()
        };
        c.config = Some(bollard::models::ContainerConfig {
            labels: Some(HashMap::from([
                (label::POD_UID.to_owned(), "u1".to_owned()),
                (label::CONTAINER.to_owned(), "web".to_owned()),
                (label::RESTART_COUNT.to_owned(), "3".to_owned()),
            ])),
            ..Default::default()
        });
        c.state = Some(bollard::models::ContainerState {
            running: Some(false),
            exit_code: Some(137),
            finished_at: Some("2026-12-06T18:00:00Z".into()),
            ..Default::default()
        });
        let got = Container::from_inspect(c).unwrap();
        assert_eq!((got.name.as_str(), got.restart_count), ("web", 3));
        assert!(matches!(got.state, RunState::Exited { exit_code: 137, .. }));
    }
}
