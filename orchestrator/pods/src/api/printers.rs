//! The cells of each kind's table row, as the API server prints them for
//! `kubectl get` (server-side printing): the same columns and the same
//! wording kubectl users know.

use serde_json::{Value, json};

use super::cluster::{Event, Namespace, Node};
use super::meta::{age, map_query};
use super::pod::{Pod, PodTemplateSpec};
use super::service::{Endpoints, Service};
use super::workloads::{Deployment, ReplicaSet, ReplicationController};

fn none_if_empty(s: &str) -> String {
    if s.is_empty() {
        "<none>".to_owned()
    } else {
        s.to_owned()
    }
}

/// The STATUS column of a pod (kubectl's reasoning, for the states herd has).
pub fn pod_status(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let mut reason = if status.reason.is_empty() {
        status.phase.clone()
    } else {
        status.reason.clone()
    };
    let mut running = false;
    // The first init container that has not succeeded speaks for the pod.
    let total = pod.spec.init_containers.len();
    let initializing = status
        .init_container_statuses
        .iter()
        .enumerate()
        .find_map(|(i, c)| {
            let state = c.state.clone().unwrap_or_default();
            match (state.terminated, state.waiting) {
                (Some(t), _) if t.exit_code == 0 => None,
                (Some(t), _) if !t.reason.is_empty() => Some(format!("Init:{}", t.reason)),
                (Some(t), _) => Some(match t.signal.filter(|s| *s != 0) {
                    Some(sig) => format!("Init:Signal:{sig}"),
                    None => format!("Init:ExitCode:{}", t.exit_code),
                }),
                (None, Some(w)) if !w.reason.is_empty() && w.reason != "PodInitializing" => {
                    Some(format!("Init:{}", w.reason))
                }
                _ => Some(format!("Init:{i}/{total}")),
            }
        });
    if let Some(init) = &initializing {
        reason.clone_from(init);
    }
    for c in status
        .container_statuses
        .iter()
        .rev()
        .filter(|_| initializing.is_none())
    {
        let state = c.state.clone().unwrap_or_default();
        if let Some(w) = state.waiting.filter(|w| !w.reason.is_empty()) {
            reason = w.reason;
        } else if let Some(t) = state.terminated {
            reason = if !t.reason.is_empty() {
                t.reason
            } else if let Some(sig) = t.signal.filter(|s| *s != 0) {
                format!("Signal:{sig}")
            } else {
                format!("ExitCode:{}", t.exit_code)
            };
        } else if c.ready && state.running.is_some() {
            running = true;
        }
    }
    if reason == "Completed" && running {
        reason = if pod.is_ready() {
            "Running"
        } else {
            "NotReady"
        }
        .into();
    }
    if pod.metadata.deletion_timestamp.is_some() {
        reason = "Terminating".into();
    }
    if reason.is_empty() {
        reason = "Pending".into();
    }
    reason
}

pub fn pod(p: &Pod) -> Vec<Value> {
    let status = p.status.clone().unwrap_or_default();
    let ready = status.container_statuses.iter().filter(|c| c.ready).count();
    let restarts: i32 = status
        .container_statuses
        .iter()
        .map(|c| c.restart_count)
        .sum();
    json!([
        p.metadata.name,
        format!("{ready}/{}", p.spec.containers.len()),
        pod_status(p),
        restarts.to_string(),
        age(p.metadata.creation_timestamp.as_deref()),
        none_if_empty(&status.pod_ip),
        none_if_empty(&p.spec.node_name),
        "<none>",
        "<none>",
    ])
    .as_array()
    .cloned()
    .unwrap_or_default()
}

fn containers_images(t: Option<&PodTemplateSpec>) -> (String, String) {
    let containers = t.map(|t| t.spec.containers.as_slice()).unwrap_or_default();
    (
        containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(","),
        containers
            .iter()
            .map(|c| c.image.as_str())
            .collect::<Vec<_>>()
            .join(","),
    )
}

pub fn replication_controller(rc: &ReplicationController) -> Vec<Value> {
    let status = rc.status.clone().unwrap_or_default();
    let (containers, images) = containers_images(rc.spec.template.as_ref());
    vec![
        json!(rc.metadata.name),
        json!(rc.spec.replicas.unwrap_or(1)),
        json!(status.replicas),
        json!(status.ready_replicas),
        json!(age(rc.metadata.creation_timestamp.as_deref())),
        json!(containers),
        json!(images),
        json!(map_query(&rc.spec.selector)),
    ]
}

pub fn replica_set(rs: &ReplicaSet) -> Vec<Value> {
    let status = rs.status.clone().unwrap_or_default();
    let (containers, images) = containers_images(Some(&rs.spec.template));
    vec![
        json!(rs.metadata.name),
        json!(rs.spec.replicas.unwrap_or(1)),
        json!(status.replicas),
        json!(status.ready_replicas),
        json!(age(rs.metadata.creation_timestamp.as_deref())),
        json!(containers),
        json!(images),
        json!(rs.spec.selector.to_query()),
    ]
}

pub fn deployment(d: &Deployment) -> Vec<Value> {
    let status = d.status.clone().unwrap_or_default();
    let (containers, images) = containers_images(Some(&d.spec.template));
    vec![
        json!(d.metadata.name),
        json!(format!(
            "{}/{}",
            status.ready_replicas,
            d.spec.replicas.unwrap_or(1)
        )),
        json!(status.updated_replicas),
        json!(status.available_replicas),
        json!(age(d.metadata.creation_timestamp.as_deref())),
        json!(containers),
        json!(images),
        json!(d.spec.selector.to_query()),
    ]
}

/// `80/TCP,443:30443/TCP`, as kubectl writes a service's ports.
pub fn service_ports(s: &Service) -> String {
    if s.spec.ports.is_empty() {
        return "<none>".into();
    }
    s.spec
        .ports
        .iter()
        .map(|p| match p.node_port.filter(|n| *n > 0) {
            Some(np) => format!("{}:{np}/{}", p.port, p.protocol),
            None => format!("{}/{}", p.port, p.protocol),
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub fn service(s: &Service) -> Vec<Value> {
    let mut external: Vec<String> = s.spec.external_ips.clone();
    if let Some(st) = &s.status {
        external.extend(st.load_balancer.ingress.iter().map(|i| {
            if i.ip.is_empty() {
                i.hostname.clone()
            } else {
                i.ip.clone()
            }
        }));
    }
    let external = match (external.is_empty(), s.spec.kind.as_str()) {
        (true, "LoadBalancer") => "<pending>".to_owned(),
        (true, _) => "<none>".to_owned(),
        (false, _) => external.join(","),
    };
    vec![
        json!(s.metadata.name),
        json!(s.spec.kind),
        json!(none_if_empty(&s.spec.cluster_ip)),
        json!(external),
        json!(service_ports(s)),
        json!(age(s.metadata.creation_timestamp.as_deref())),
        json!(if s.spec.selector.is_empty() {
            "<none>".to_owned()
        } else {
            map_query(&s.spec.selector)
        }),
    ]
}

/// `10.1.0.5:6379,10.1.1.7:6379 + 2 more...`, as kubectl writes endpoints.
pub fn endpoint_list(e: &Endpoints) -> String {
    let mut all = Vec::new();
    for s in &e.subsets {
        for a in &s.addresses {
            if s.ports.is_empty() {
                all.push(a.ip.clone());
            }
            for p in &s.ports {
                all.push(format!("{}:{}", a.ip, p.port));
            }
        }
    }
    match all.len() {
        0 => "<none>".into(),
        n if n > 3 => format!("{} + {} more...", all[..3].join(","), n - 3),
        _ => all.join(","),
    }
}

pub fn endpoints(e: &Endpoints) -> Vec<Value> {
    vec![
        json!(e.metadata.name),
        json!(endpoint_list(e)),
        json!(age(e.metadata.creation_timestamp.as_deref())),
    ]
}

pub fn namespace(n: &Namespace) -> Vec<Value> {
    vec![
        json!(n.metadata.name),
        json!(n.status.as_ref().map_or("Active", |s| s.phase.as_str())),
        json!(age(n.metadata.creation_timestamp.as_deref())),
    ]
}

/// `Ready`, `NotReady`, `Unknown`, with `,SchedulingDisabled` when cordoned.
pub fn node_status(n: &Node) -> String {
    let mut s = match n.ready().map(|c| c.status.as_str()) {
        Some("True") => "Ready".to_owned(),
        Some(_) => "NotReady".to_owned(),
        None => "Unknown".to_owned(),
    };
    if n.spec.unschedulable == Some(true) {
        s.push_str(",SchedulingDisabled");
    }
    s
}

pub fn node(n: &Node) -> Vec<Value> {
    let roles: Vec<&str> = n
        .metadata
        .labels
        .keys()
        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
        .collect();
    let info = n
        .status
        .as_ref()
        .and_then(|s| s.node_info.clone())
        .unwrap_or_default();
    let addr = |kind: &str| {
        n.status
            .as_ref()
            .and_then(|s| s.addresses.iter().find(|a| a.kind == kind))
            .map_or("<none>".to_owned(), |a| a.address.clone())
    };
    vec![
        json!(n.metadata.name),
        json!(node_status(n)),
        json!(if roles.is_empty() {
            "<none>".to_owned()
        } else {
            roles.join(",")
        }),
        json!(age(n.metadata.creation_timestamp.as_deref())),
        json!(info.kubelet_version),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        json!(none_if_empty(&info.os_image)),
        json!(none_if_empty(&info.kernel_version)),
        json!(none_if_empty(&info.container_runtime_version)),
    ]
}

pub fn event(e: &Event) -> Vec<Value> {
    let last = e
        .last_timestamp
        .as_deref()
        .or(e.event_time.as_deref())
        .or(e.metadata.creation_timestamp.as_deref());
    let first = e.first_timestamp.as_deref().or(last);
    let o = &e.involved_object;
    let source = e.source.as_ref().map_or(String::new(), |s| {
        if s.host.is_empty() {
            s.component.clone()
        } else {
            format!("{}, {}", s.component, s.host)
        }
    });
    vec![
        json!(age(last)),
        json!(e.kind_of_event),
        json!(e.reason),
        json!(format!("{}/{}", o.kind.to_ascii_lowercase(), o.name)),
        json!(o.field_path),
        json!(source),
        json!(e.message),
        json!(age(first)),
        json!(e.count.unwrap_or(1).to_string()),
        json!(e.metadata.name),
    ]
}
