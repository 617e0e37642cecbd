//! What the kubelet reports about a pod: each container's state (waiting
//! with its reason, running, terminated with its exit code) and previous
//! state, the pod's phase by Kubernetes' rules, its conditions (Ready
//! follows the readiness probes, which is what endpoints select on) and
//! its address — computed from what Docker says, so the same containers
//! always give the same status and an unchanged pod writes nothing.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::docker::{Container, RunState};
use crate::api::meta::now;
use crate::api::pod::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodCondition, PodIp, PodStatus,
};

/// Why a container is not running (Kubernetes' waiting reasons).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

impl Waiting {
    pub fn new(reason: &str, message: impl Into<String>) -> Waiting {
        Waiting {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// One spec container as the kubelet sees it.
#[derive(Debug, Clone)]
pub struct ContainerView<'a> {
    pub name: &'a str,
    pub image: &'a str,
    /// The newest Docker container for it.
    pub current: Option<&'a Container>,
    /// The one before (for `lastState`).
    pub previous: Option<&'a Container>,
    /// Set when it is not running and the kubelet knows why.
    pub waiting: Option<Waiting>,
    /// Its readiness probe passes (or it runs and has none).
    pub ready: bool,
}

/// How long a container that ended waits before its next start:
/// nothing the first time, then 10 s doubling up to 5 min (Kubernetes'
/// crash-loop back-off).
pub fn restart_delay(restart_count: i32) -> Duration {
    if restart_count <= 0 {
        return Duration::ZERO;
    }
    let exp = (restart_count - 1).min(5) as u32;
    Duration::from_secs(10 * 2u64.pow(exp)).min(Duration::from_secs(300))
}

/// Docker's nanosecond timestamps in Kubernetes' seconds form.
pub fn docker_time(t: &str) -> Option<String> {
    if t.is_empty() || t.starts_with("0001") {
        return None;
    }
    let parsed = humantime::parse_rfc3339_weak(t.trim_end_matches('Z').split('.').next()?)
        .or_else(|_| humantime::parse_rfc3339_weak(t))
        .ok()?;
    Some(humantime::format_rfc3339_seconds(parsed).to_string())
}

fn terminated(c: &Container) -> Option<ContainerState> {
    let RunState::Exited {
        exit_code,
        started_at,
        finished_at,
        oom_killed,
        error,
    } = &c.state
    else {
        return None;
    };
    let reason = if *oom_killed {
        "OOMKilled"
    } else if *exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    Some(ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: *exit_code as i32,
            reason: reason.into(),
            message: error.clone(),
            started_at: docker_time(started_at),
            finished_at: docker_time(finished_at),
            container_id: format!("docker://{}", c.id),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn container_status(v: &ContainerView<'_>) -> ContainerStatus {
    let running = v.current.filter(|c| c.is_running());
    let state = match (&v.waiting, v.current) {
        (Some(w), _) if running.is_none() => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: w.reason.clone(),
                message: w.message.clone(),
            }),
            ..Default::default()
        },
        (_, Some(c)) => match &c.state {
            RunState::Running { started_at, .. } => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: docker_time(started_at),
                }),
                ..Default::default()
            },
            RunState::Exited { .. } => terminated(c).unwrap_or_default(),
            RunState::Created => waiting("ContainerCreating"),
        },
        (_, None) => waiting("ContainerCreating"),
    };
    // A container waiting to be restarted shows its last run as lastState.
    let last = if state.waiting.is_some() {
        v.current.and_then(terminated)
    } else {
        v.previous.and_then(terminated)
    };
    ContainerStatus {
        name: v.name.to_owned(),
        ready: running.is_some() && v.ready,
        restart_count: v.current.map_or(0, |c| c.restart_count),
        image: v.image.to_owned(),
        image_id: v
            .current
            .map(|c| format!("docker://{}", c.image_id))
            .unwrap_or_default(),
        container_id: v
            .current
            .map(|c| format!("docker://{}", c.id))
            .unwrap_or_default(),
        started: Some(running.is_some()),
        state: Some(state),
        last_state: last,
    }
}

fn waiting(reason: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: reason.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Kubernetes' pod phase from its containers' statuses.
pub fn phase(statuses: &[ContainerStatus], restart_policy: &str) -> &'static str {
    let (mut running, mut waiting, mut stopped, mut failed) = (0, 0, 0, 0);
    for s in statuses {
        let state = s.state.clone().unwrap_or_default();
        if state.running.is_some() {
            running += 1;
        } else if let Some(t) = &state.terminated {
            stopped += 1;
            if t.exit_code != 0 {
                failed += 1;
            }
        } else if s
            .last_state
            .as_ref()
            .is_some_and(|l| l.terminated.is_some())
        {
            // Waiting to restart after a run: it ran, it stopped.
            stopped += 1;
            let code = s
                .last_state
                .as_ref()
                .and_then(|l| l.terminated.as_ref())
                .map_or(0, |t| t.exit_code);
            if code != 0 {
                failed += 1;
            }
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        return match restart_policy {
            "Never" if failed > 0 => "Failed",
            "Never" => "Succeeded",
            "OnFailure" if failed > 0 => "Running",
            "OnFailure" => "Succeeded",
            _ => "Running",
        };
    }
    "Pending"
}

/// The condition `kind`, keeping its transition time from `old` when its
/// status did not change.
fn condition(old: Option<&PodStatus>, kind: &str, ok: bool, reason: &str) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let before = old.and_then(|s| s.conditions.iter().find(|c| c.kind == kind));
    let same = before.is_some_and(|c| c.status == status);
    PodCondition {
        kind: kind.into(),
        status: status.into(),
        last_transition_time: if same {
            before.and_then(|c| c.last_transition_time.clone())
        } else {
            Some(now())
        },
        reason: if ok { String::new() } else { reason.into() },
        ..Default::default()
    }
}

/// Adds the init containers to `status`: their statuses (ready once they
/// succeeded), the Initialized condition, and the phase while one has not
/// succeeded yet — Pending, or Failed when one failed under
/// `restartPolicy: Never`.
pub fn with_init(
    status: &mut PodStatus,
    old: Option<&PodStatus>,
    init: &[ContainerView<'_>],
    restart_policy: &str,
) {
    if init.is_empty() {
        return;
    }
    let mut statuses: Vec<ContainerStatus> = init.iter().map(container_status).collect();
    let exit = |s: &ContainerStatus| {
        s.state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .map(|t| t.exit_code)
    };
    for s in &mut statuses {
        s.ready = exit(s) == Some(0);
    }
    let pending: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    if !pending.is_empty() {
        let mut initialized = condition(old, "Initialized", false, "ContainersNotInitialized");
        initialized.message = format!("containers with incomplete status: [{}]", pending.join(" "));
        status.conditions.retain(|c| c.kind != "Initialized");
        status.conditions.insert(0, initialized);
        let failed =
            restart_policy == "Never" && statuses.iter().any(|s| exit(s).is_some_and(|c| c != 0));
        status.phase = if failed { "Failed" } else { "Pending" }.into();
    }
    status.init_container_statuses = statuses;
}

/// The pod's whole status: `old` (what the store has) keeps the
/// scheduler's condition, the start time and unchanged transition times.
pub fn pod_status(
    old: Option<&PodStatus>,
    views: &[ContainerView<'_>],
    restart_policy: &str,
    pod_ip: Option<Ipv4Addr>,
    host_ip: &str,
) -> PodStatus {
    let statuses: Vec<ContainerStatus> = views.iter().map(container_status).collect();
    let phase = phase(&statuses, restart_policy);
    let all_ready = !statuses.is_empty() && statuses.iter().all(|s| s.ready);
    let ready = all_ready && phase == "Running";
    let mut conditions = vec![condition(old, "Initialized", true, "")];
    conditions.push(condition(old, "Ready", ready, "ContainersNotReady"));
    conditions.push(condition(
        old,
        "ContainersReady",
        all_ready,
        "ContainersNotReady",
    ));
    if let Some(scheduled) =
        old.and_then(|s| s.conditions.iter().find(|c| c.kind == "PodScheduled"))
    {
        conditions.push(scheduled.clone());
    }
    let pod_ip = pod_ip.map(|ip| ip.to_string()).unwrap_or_default();
    PodStatus {
        phase: phase.into(),
        conditions,
        host_ip: host_ip.to_owned(),
        pod_ips: if pod_ip.is_empty() {
            Vec::new()
        } else {
            vec![PodIp { ip: pod_ip.clone() }]
        },
        pod_ip,
        start_time: old
            .and_then(|s| s.start_time.clone())
            .or_else(|| Some(now())),
        qos_class: old.map(|s| s.qos_class.clone()).unwrap_or_default(),
        container_statuses: statuses,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(state: RunState, restarts: i32) -> Container {
        Container {
            id: "c1".into(),
            pod_uid: "u".into(),
            namespace: "default".into(),
            pod_name: "p".into(),
            name: "web".into(),
            restart_count: restarts,
            pod_ip: None,
            image: "bb".into(),
            image_id: "sha256:1".into(),
            created: String::new(),
            state,
        }
    }

    fn exited(code: i64) -> RunState {
        RunState::Exited {
            exit_code: code,
            started_at: "2026-12-06T18:00:00.5Z".into(),
            finished_at: "2026-12-06T18:00:05.123456789Z".into(),
            oom_killed: false,
            error: String::new(),
        }
    }

    fn view<'a>(
        c: Option<&'a Container>,
        waiting: Option<Waiting>,
        ready: bool,
    ) -> ContainerView<'a> {
        ContainerView {
            name: "web",
            image: "bb",
            current: c,
            previous: None,
            waiting,
            ready,
        }
    }

    #[test]
    fn init_containers_hold_the_pod_pending_and_fail_it_under_never() {
        fn init<'a>(first: &'a Container, second: &'a Container) -> [ContainerView<'a>; 2] {
            let mut v = view(Some(second), None, false);
            v.name = "second";
            [view(Some(first), None, false), v]
        }
        let running = container(
            RunState::Running {
                started_at: "2026-12-06T18:00:00Z".into(),
                pid: 7,
            },
            0,
        );
        let (done, failed) = (container(exited(0), 0), container(exited(2), 0));
        let apps = [view(None, Some(Waiting::new("PodInitializing", "")), false)];
        let mut st = pod_status(None, &apps, "Always", None, "");
        with_init(&mut st, None, &init(&done, &running), "Always");
        assert_eq!(st.phase, "Pending");
        let initialized = &st.conditions[0];
        assert_eq!(
            (initialized.kind.as_str(), initialized.status.as_str()),
            ("Initialized", "False")
        );
        assert_eq!(
            initialized.message,
            "containers with incomplete status: [second]"
        );
        assert!(st.init_container_statuses[0].ready && !st.init_container_statuses[1].ready);

        let mut st = pod_status(None, &apps, "Never", None, "");
        with_init(&mut st, None, &init(&done, &failed), "Never");
        assert_eq!(st.phase, "Failed");
        let mut st = pod_status(None, &apps, "OnFailure", None, "");
        with_init(&mut st, None, &init(&done, &failed), "OnFailure");
        assert_eq!(st.phase, "Pending");

        // All succeeded: the apps' phase stands.
        let mut st = pod_status(
            None,
            &[view(Some(&running), None, true)],
            "Always",
            None,
            "",
        );
        with_init(&mut st, None, &init(&done, &done), "Always");
        assert_eq!(st.phase, "Running");
        assert_eq!(st.conditions[0].status, "True");
    }

    #[test]
    fn running_and_probed_ready_makes_the_pod_ready() {
        let c = container(
            RunState::Running {
                started_at: "2026-12-06T18:00:00.1Z".into(),
                pid: 9,
            },
            0,
        );
        let s = pod_status(
            None,
            &[view(Some(&c), None, true)],
            "Always",
            Some(Ipv4Addr::new(10, 5, 1, 2)),
            "10.1.0.5",
        );
        assert_eq!(s.phase, "Running");
        assert_eq!(s.pod_ip, "10.5.1.2");
        let ready = s.conditions.iter().find(|c| c.kind == "Ready").unwrap();
        assert_eq!(ready.status, "True");
        let not_probed = pod_status(Some(&s), &[view(Some(&c), None, false)], "Always", None, "");
        let ready2 = not_probed
            .conditions
            .iter()
            .find(|c| c.kind == "Ready")
            .unwrap();
        assert_eq!(ready2.status, "False");
        assert_eq!(
            not_probed.container_statuses[0]
                .state
                .as_ref()
                .unwrap()
                .running
                .as_ref()
                .unwrap()
                .started_at
                .as_deref(),
            Some("2026-12-06T18:00:00Z")
        );
    }

    #[test]
    fn crash_loops_wait_with_the_last_run_as_last_state() {
        let c = container(exited(1), 2);
        let w = Waiting::new(
            "CrashLoopBackOff",
            "back-off 20s restarting failed container=web",
        );
        let s = pod_status(None, &[view(Some(&c), Some(w), true)], "Always", None, "");
        let cs = &s.container_statuses[0];
        assert_eq!(
            cs.state.as_ref().unwrap().waiting.as_ref().unwrap().reason,
            "CrashLoopBackOff"
        );
        assert_eq!(
            cs.last_state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            1
        );
        assert_eq!(cs.restart_count, 2);
        assert!(!cs.ready);
        assert_eq!(s.phase, "Running");
    }

    #[test]
    fn phases_follow_the_restart_policy() {
        let ok = container(exited(0), 0);
        let bad = container(exited(3), 0);
        let st = |c: &Container, policy| {
            pod_status(None, &[view(Some(c), None, false)], policy, None, "").phase
        };
        assert_eq!(st(&ok, "Never"), "Succeeded");
        assert_eq!(st(&bad, "Never"), "Failed");
        assert_eq!(st(&bad, "OnFailure"), "Running");
        assert_eq!(st(&ok, "OnFailure"), "Succeeded");
        let pending = pod_status(
            None,
            &[view(
                None,
                Some(Waiting::new("ErrImagePull", "no such image")),
                false,
            )],
            "Always",
            None,
            "",
        );
        assert_eq!(pending.phase, "Pending");
    }

    #[test]
    fn back_off_doubles_to_five_minutes() {
        assert_eq!(restart_delay(0), Duration::ZERO);
        assert_eq!(restart_delay(1), Duration::from_secs(10));
        assert_eq!(restart_delay(3), Duration::from_secs(40));
        assert_eq!(restart_delay(50), Duration::from_secs(300));
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let mut old = PodStatus::default();
        old.conditions.push(PodCondition {
            kind: "Initialized".into(),
            status: "True".into(),
            last_transition_time: Some("2020-01-01T00:00:00Z".into()),
            ..Default::default()
        });
        let s = pod_status(Some(&old), &[view(None, None, false)], "Always", None, "");
        assert_eq!(
            s.conditions[0].last_transition_time.as_deref(),
            Some("2020-01-01T00:00:00Z")
        );
        assert_eq!(docker_time("0001-01-01T00:00:00Z"), None);
    }
}
