//! Garbage collection of this node's containers, from what Docker holds:
//! containers of pods that are no longer bound here (deleted while the
//! agent was down, or replaced by a pod of the same name), dead app
//! containers beyond the newest run per container (kept for `lastState`
//! and `logs --previous`), dead infra containers, the volume directories
//! and Docker volumes of gone pods, and their host ports. Docker is read
//! every [`PERIOD`]; the store only through the kubelet's pod cache.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Kubelet;
use super::docker::{Container, label};
use super::sync::SyncError;

/// Time between collections.
pub const PERIOD: Duration = Duration::from_secs(15);

/// The uids of the pods bound to this node, as the cache has them.
fn bound_uids(k: &Kubelet) -> HashSet<String> {
    k.pods
        .list()
        .into_iter()
        .filter(|o| o.value.spec.node_name == k.settings.node_name)
        .map(|o| o.value.metadata.uid)
        .collect()
}

/// The dead containers to remove among one pod's, by Kubernetes' rule of
/// keeping the newest dead run of each container.
pub fn dead_to_remove(containers: &[Container]) -> Vec<&Container> {
    let mut by_name: BTreeMap<&str, Vec<&Container>> = BTreeMap::new();
    for c in containers {
        by_name.entry(&c.name).or_default().push(c);
    }
    let mut out = Vec::new();
    for (name, mut runs) in by_name {
        runs.sort_by(|a, b| a.created.cmp(&b.created));
        let dead: Vec<&Container> = runs.into_iter().filter(|c| !c.is_running()).collect();
        // A dead sandbox is of no use; a dead app container's newest run is.
        let keep = usize::from(name != label::INFRA);
        out.extend(&dead[..dead.len().saturating_sub(keep)]);
    }
    out
}

/// One collection.
pub async fn collect(k: &Kubelet) -> Result<(), SyncError> {
    let Some(docker) = k.docker.get() else {
        return Ok(());
    };
    let bound = bound_uids(k);
    let all = docker.list(label::NODE, &k.settings.node_name).await?;
    let mut pods: BTreeMap<String, Vec<Container>> = BTreeMap::new();
    for c in all {
        pods.entry(c.pod_uid.clone()).or_default().push(c);
    }
    // Claims of pods gone from both the store and Docker (deleted while
    // their sync was failing) are freed; the table is re-applied to
    // repair rules deleted behind the kubelet's back.
    k.host_ports
        .retain(|uid| bound.contains(uid) || pods.contains_key(uid));
    k.apply_host_ports(true).await;
    for (uid, containers) in &pods {
        if !bound.contains(uid) {
            tracing::info!(uid, "removing the containers of a pod no longer bound here");
            k.kill_pod(&docker, uid, 0).await?;
            continue;
        }
        for c in dead_to_remove(containers) {
            k.probes.forget(&c.id);
            docker.remove(&c.id).await?;
        }
    }
    for (name, uid) in super::volumes::labelled(&docker, label::NODE, &k.settings.node_name).await?
    {
        if !bound.contains(&uid) && !pods.contains_key(&uid) {
            super::volumes::remove(&docker, &name).await?;
        }
    }
    let pods_dir = k.settings.root_dir.join("pods");
    if let Ok(mut dirs) = tokio::fs::read_dir(&pods_dir).await {
        while let Ok(Some(d)) = dirs.next_entry().await {
            let uid = d.file_name().to_string_lossy().into_owned();
            if !bound.contains(&uid) && !pods.contains_key(&uid) {
                let _ = tokio::fs::remove_dir_all(d.path()).await;
            }
        }
    }
    Ok(())
}

/// Collects every [`PERIOD`] (first once the pod cache is listed) until `cancel`.
pub async fn run(k: Arc<Kubelet>, cancel: CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = k.pods.ready() => {}
    }
    // The host-port table an earlier agent left stays until the running
    // pods that publish ports have claimed them again (at the latest, one
    // period on), so an agent restart does not blink them.
    let publishing = k
        .pods
        .list()
        .into_iter()
        .map(|o| o.value)
        .filter(|p| p.spec.node_name == k.settings.node_name && !p.is_terminal())
        .filter(|p| !p.host_ports().is_empty())
        .map(|p| p.metadata.uid)
        .collect();
    k.host_ports.hold_until(publishing);
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) {
            k.host_ports.release_hold();
        }
        if let Err(e) = collect(&k).await {
            tracing::warn!("container garbage collection: {e}");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(PERIOD) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::docker::RunState;

    fn c(id: &str, name: &str, created: &str, running: bool) -> Container {
        Container {
            id: id.into(),
            pod_uid: "u".into(),
            namespace: "default".into(),
            pod_name: "p".into(),
            name: name.into(),
            restart_count: 0,
            pod_ip: None,
            image: String::new(),
            image_id: String::new(),
            created: created.into(),
            state: if running {
                RunState::Running {
                    started_at: String::new(),
                    pid: 1,
                }
            } else {
                RunState::Exited {
                    exit_code: 1,
                    started_at: String::new(),
                    finished_at: String::new(),
                    oom_killed: false,
                    error: String::new(),
                }
            },
        }
    }

    #[test]
    fn the_newest_dead_run_stays() {
        let cs = vec![
            c("a1", "web", "2026-01-01T00:00:01Z", false),
            c("a2", "web", "2026-01-01T00:00:02Z", false),
            c("a3", "web", "2026-01-01T00:00:03Z", true),
            c("b1", "side", "2026-01-01T00:00:01Z", false),
            c("i1", "POD", "2026-01-01T00:00:00Z", false),
            c("i2", "POD", "2026-01-01T00:00:04Z", true),
        ];
        let mut gone: Vec<&str> = dead_to_remove(&cs).iter().map(|c| c.id.as_str()).collect();
        gone.sort();
        assert_eq!(gone, ["a1", "i1"]);
    }
}
