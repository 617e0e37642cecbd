//! Liveness and readiness probes (httpGet, tcpSocket, exec) with
//! Kubernetes' timings: a worker per running container and probe waits
//! `initialDelaySeconds`, probes every `periodSeconds` with
//! `timeoutSeconds`, and flips its verdict after `successThreshold`
//! successes or `failureThreshold` failures in a row. The pod sync reads
//! the verdicts: readiness sets the container's `ready` (and so the
//! pod's Ready condition that endpoints follow); a failed liveness probe
//! gets the container killed and restarted by its policy.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::docker::Docker;
use crate::api::Pod;
use crate::api::meta::IntOrString;
use crate::api::pod::{Container, Probe};
use crate::controllers::events::Recorder;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Liveness,
    Readiness,
}

impl Kind {
    fn title(self) -> &'static str {
        match self {
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// A probe's current verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure(String),
}

/// Where a probe reaches its container.
#[derive(Clone)]
pub struct Target {
    pub docker: Docker,
    pub container_id: String,
    pub pod_ip: Ipv4Addr,
    pub spec: Container,
}

/// Runs one probe once.
pub async fn probe_once(probe: &Probe, target: &Target) -> Result<(), String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    let host = |h: &str| {
        if h.is_empty() {
            target.pod_ip.to_string()
        } else {
            h.to_owned()
        }
    };
    let run = async {
        if let Some(http) = &probe.http_get {
            let port = port_of(&http.port, &target.spec)?;
            let path = if http.path.is_empty() {
                "/"
            } else {
                &http.path
            };
            let url = format!("http://{}:{port}{path}", host(&http.host));
            let client = herd_http::Client::new().with_timeout(timeout);
            let resp = client
                .fetch(herd_http::Request::get(url.clone()))
                .await
                .map_err(|e| format!("Get {url:?}: {e}"))?;
            let code = resp.status.as_u16();
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with statuscode: {code}"))
            }
        } else if let Some(tcp) = &probe.tcp_socket {
            let port = port_of(&tcp.port, &target.spec)?;
            let addr = format!("{}:{port}", host(&tcp.host));
            tokio::net::TcpStream::connect(&addr)
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {addr}: {e}"))
        } else if let Some(exec) = &probe.exec {
            let (code, output) = target
                .docker
                .exec(&target.container_id, &exec.command)
                .await
                .map_err(|e| e.message())?;
            if code == 0 {
                Ok(())
            } else {
                Err(format!(
                    "command {:?} exited with {code}: {}",
                    exec.command,
                    output.trim()
                ))
            }
        } else {
            Err("the probe names no action (httpGet, tcpSocket or exec)".into())
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {}s", timeout.as_secs())),
    }
}

/// A port number, or a named port of the container.
fn port_of(port: &IntOrString, spec: &Container) -> Result<i32, String> {
    match port {
        IntOrString::Int(p) => Ok(*p),
        IntOrString::String(name) => spec
            .ports
            .iter()
            .find(|p| p.name == *name)
            .map(|p| p.container_port)
            .ok_or_else(|| format!("the container has no port named {name:?}")),
    }
}

/// Counts results in a row into a verdict (Kubernetes' thresholds).
#[derive(Debug, Clone)]
pub struct Thresholds {
    successes: i32,
    failures: i32,
    need_success: i32,
    need_failure: i32,
    pub verdict: Option<Verdict>,
}

impl Thresholds {
    pub fn new(probe: &Probe) -> Thresholds {
        Thresholds {
            successes: 0,
            failures: 0,
            need_success: probe.success_threshold.unwrap_or(1).max(1),
            need_failure: probe.failure_threshold.unwrap_or(3).max(1),
            verdict: None,
        }
    }

    /// Adds one result; `true` when the verdict changed.
    pub fn add(&mut self, result: Result<(), String>) -> bool {
        let next = match result {
            Ok(()) => {
                self.failures = 0;
                self.successes += 1;
                (self.successes >= self.need_success).then_some(Verdict::Success)
            }
            Err(why) => {
                self.successes = 0;
                self.failures += 1;
                (self.failures >= self.need_failure).then_some(Verdict::Failure(why))
            }
        };
        match next {
            Some(v) if self.verdict.as_ref() != Some(&v) => {
                let changed = !matches!(
                    (&self.verdict, &v),
                    (Some(Verdict::Failure(_)), Verdict::Failure(_))
                );
                self.verdict = Some(v);
                changed
            }
            _ => false,
        }
    }
}

type Verdicts = Arc<Mutex<HashMap<(String, Kind), Verdict>>>;

struct Worker {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// The probe workers of this node's containers.
#[derive(Default)]
pub struct Probes {
    workers: Mutex<HashMap<(String, Kind), Worker>>,
    verdicts: Verdicts,
}

impl Probes {
    /// The verdict of `kind` for container `id` (`None`: not yet decided).
    pub fn verdict(&self, id: &str, kind: Kind) -> Option<Verdict> {
        self.verdicts
            .lock()
            .expect("probe verdicts")
            .get(&(id.to_owned(), kind))
            .cloned()
    }

    /// Starts the worker of `kind` for `target` unless it runs.
    pub fn ensure(&self, kind: Kind, probe: &Probe, target: Target, pod: &Pod, events: &Recorder) {
        let key = (target.container_id.clone(), kind);
        let mut workers = self.workers.lock().expect("probe workers");
        if workers.contains_key(&key) {
            return;
        }
        let cancel = CancellationToken::new();
        let task = tokio::spawn(work(
            kind,
            probe.clone(),
            target,
            pod.clone(),
            events.clone(),
            Arc::clone(&self.verdicts),
            cancel.clone(),
        ));
        workers.insert(key, Worker { cancel, task });
    }

    /// Stops the workers (and forgets the verdicts) of containers not in `live`.
    pub fn retain(&self, live: &HashSet<String>) {
        let mut workers = self.workers.lock().expect("probe workers");
        workers.retain(|(id, _), w| {
            let keep = live.contains(id);
            if !keep {
                w.cancel.cancel();
                w.task.abort();
            }
            keep
        });
        self.verdicts
            .lock()
            .expect("probe verdicts")
            .retain(|(id, _), _| live.contains(id));
    }

    /// Stops the workers of one container.
    pub fn forget(&self, id: &str) {
        let mut others: HashSet<String> = self
            .workers
            .lock()
            .expect("probe workers")
            .keys()
            .map(|(i, _)| i.clone())
            .collect();
        others.remove(id);
        self.retain(&others);
    }

    /// Stops every worker.
    pub fn stop_all(&self) {
        self.retain(&HashSet::new());
    }
}

async fn work(
    kind: Kind,
    probe: Probe,
    target: Target,
    pod: Pod,
    events: Recorder,
    verdicts: Verdicts,
    cancel: CancellationToken,
) {
    let key = (target.container_id.clone(), kind);
    let initial = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
    let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = tokio::time::sleep(initial) => {}
    }
    let mut counts = Thresholds::new(&probe);
    loop {
        let result = probe_once(&probe, &target).await;
        if let Err(why) = &result {
            tracing::debug!(pod = %pod.metadata.name, container = %target.spec.name, ?kind, "probe failed: {why}");
        }
        if counts.add(result)
            && let Some(v) = counts.verdict.clone()
        {
            if let Verdict::Failure(why) = &v {
                events
                    .warning(
                        &pod,
                        "Unhealthy",
                        format!("{} probe failed: {why}", kind.title()),
                    )
                    .await;
            }
            verdicts
                .lock()
                .expect("probe verdicts")
                .insert(key.clone(), v);
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_need_results_in_a_row() {
        let probe = Probe {
            success_threshold: Some(2),
            failure_threshold: Some(2),
            ..Default::default()
        };
        let mut t = Thresholds::new(&probe);
        assert!(!t.add(Ok(())));
        assert_eq!(t.verdict, None);
        assert!(t.add(Ok(())));
        assert_eq!(t.verdict, Some(Verdict::Success));
        assert!(!t.add(Err("x".into())));
        assert!(!t.add(Ok(())), "a success breaks the failure run");
        assert!(!t.add(Err("x".into())));
        assert!(t.add(Err("y".into())));
        assert_eq!(t.verdict, Some(Verdict::Failure("y".into())));
        assert!(!t.add(Err("z".into())), "still failing is no change");
    }

    #[test]
    fn named_ports_resolve_from_the_container() {
        let mut c = Container::default();
        c.ports.push(crate::api::pod::ContainerPort {
            name: "http".into(),
            container_port: 8080,
            ..Default::default()
        });
        assert_eq!(port_of(&IntOrString::String("http".into()), &c), Ok(8080));
        assert_eq!(port_of(&IntOrString::Int(81), &c), Ok(81));
        assert!(port_of(&IntOrString::String("nope".into()), &c).is_err());
    }

    #[tokio::test]
    async fn tcp_probes_see_a_listener_and_its_absence() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let probe = Probe {
            tcp_socket: Some(crate::api::pod::TcpSocketAction {
                port: IntOrString::Int(port.into()),
                host: String::new(),
            }),
            ..Default::default()
        };
        let target = Target {
            docker: Docker::unconnected(),
            container_id: "c".into(),
            pod_ip: Ipv4Addr::LOCALHOST,
            spec: Container::default(),
        };
        assert_eq!(probe_once(&probe, &target).await, Ok(()));
        drop(listener);
        assert!(probe_once(&probe, &target).await.is_err());
    }
}
