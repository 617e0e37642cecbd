//! Memory pressure and eviction (the memory half of Kubernetes' eviction
//! manager): every [`PERIOD`] the kubelet reads two signals and, when
//! either is below the hard threshold (`--eviction-hard
//! memory.available<100Mi`), reports the Node's `MemoryPressure` and
//! evicts one pod — before the kernel's OOM killer picks a process at
//! random, maybe the agent or dockerd.
//!
//! - `memory.available`: the machine's `MemAvailable`.
//! - `allocatableMemory.available`: what pods may hold (capacity less
//!   `--system-reserved memory=…`) less their working sets, as Docker
//!   reports them; with memory reserved for the system this is the signal
//!   that fires first, whatever else runs on the machine.
//!
//! The pod evicted is Kubernetes' choice: pods using more than they
//! request before those within their requests, then the largest excess.
//! It ends `Failed` with reason `Evicted` and a message naming the
//! numbers, in its status and a warning event; its containers are stopped
//! at once (a hard threshold has no grace) and kept for `logs`. Its
//! controller makes a new one, which the scheduler keeps off the node
//! while `MemoryPressure` lasts (until `--eviction-pressure-transition-period`
//! after the signal was last below the threshold, so a node does not
//! flap between pressure and none).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Kubelet;
use super::docker::label;
use crate::api::Pod;
use crate::api::quantity::Quantity;
use crate::registry::from_cache;

/// Time between looks at the signals (Kubernetes' housekeeping interval
/// is 10 s; memory runs out faster than that).
pub const PERIOD: Duration = Duration::from_secs(5);

/// The kubelet's eviction settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvictionConfig {
    /// Evict below this many bytes available.
    pub threshold: u64,
    /// Bytes kept from pods (`--system-reserved memory=`).
    pub reserved: u64,
    /// How long `MemoryPressure` stays after the signal was last low.
    pub transition: Duration,
}

impl Default for EvictionConfig {
    fn default() -> Self {
        EvictionConfig {
            threshold: 100 << 20,
            reserved: 0,
            transition: Duration::from_secs(300),
        }
    }
}

fn bytes(q: &str, flag: &str) -> Result<u64, String> {
    let quantity: Quantity = serde_json::from_value(serde_json::Value::String(q.into()))
        .map_err(|e| format!("{flag}: {q:?} is not a quantity: {e}"))?;
    let millis = quantity
        .millis()
        .ok_or_else(|| format!("{flag}: {q:?} is not a quantity (e.g. 100Mi)"))?;
    u64::try_from(millis / 1000).map_err(|_| format!("{flag}: {q:?} is negative"))
}

/// `memory.available<QUANTITY` (the one signal herd evicts on).
pub fn parse_eviction_hard(s: &str) -> Result<u64, String> {
    let q = s.strip_prefix("memory.available<").ok_or_else(|| {
        format!("--eviction-hard: {s:?}: only memory.available<QUANTITY is supported")
    })?;
    bytes(q, "--eviction-hard")
}

/// `memory=QUANTITY` (the only resource herd reserves).
pub fn parse_system_reserved(s: &str) -> Result<u64, String> {
    let q = s
        .strip_prefix("memory=")
        .ok_or_else(|| format!("--system-reserved: {s:?}: only memory=QUANTITY is supported"))?;
    bytes(q, "--system-reserved")
}

/// When the signal was last below the threshold, and what it said.
#[derive(Debug, Default)]
pub struct Pressure {
    last_low: Mutex<Option<(Instant, String)>>,
}

impl Pressure {
    /// Whether the node is under memory pressure now (the signal was low
    /// within `transition`), with what was seen.
    pub fn current(&self, transition: Duration) -> Option<String> {
        let last = self.last_low.lock().expect("pressure");
        last.as_ref()
            .filter(|(at, _)| at.elapsed() < transition)
            .map(|(_, seen)| seen.clone())
    }

    fn low(&self, seen: String) {
        *self.last_low.lock().expect("pressure") = Some((Instant::now(), seen));
    }
}

/// One pod's memory as the kubelet ranks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub uid: String,
    pub working_set: u64,
    pub request: u64,
}

/// The pod to evict first: over its request before within it, then the
/// largest excess (then the largest use, for pods that requested nothing).
pub fn victim(pods: &[Usage]) -> Option<&Usage> {
    pods.iter().max_by_key(|u| {
        let over = u.working_set > u.request;
        (over, u.working_set.saturating_sub(u.request), u.working_set)
    })
}

/// The lower of the two signals, with its name.
pub fn signal(
    mem_available: u64,
    capacity: u64,
    config: &EvictionConfig,
    pods: u64,
) -> (i128, &'static str) {
    let allocatable = i128::from(capacity) - i128::from(config.reserved) - i128::from(pods);
    let node = i128::from(mem_available);
    if allocatable < node {
        (allocatable, "allocatableMemory.available")
    } else {
        (node, "memory.available")
    }
}

fn mib(b: i128) -> String {
    format!("{}Mi", b.div_euclid(1 << 20))
}

/// One look: the signals, and an eviction when one is low.
async fn check(k: &Kubelet) -> Result<(), super::sync::SyncError> {
    let Some(docker) = k.docker.get() else {
        return Ok(());
    };
    let config = k.settings.eviction;
    let mut working: BTreeMap<String, u64> = BTreeMap::new();
    for c in docker.list(label::NODE, &k.settings.node_name).await? {
        if c.is_running()
            && let Some(ws) = docker.memory_working_set(&c.id).await?
        {
            *working.entry(c.pod_uid.clone()).or_default() += ws;
        }
    }
    let Some(available) = super::node_object::meminfo_kib("MemAvailable").map(|k| k * 1024) else {
        return Ok(());
    };
    let capacity = k.capacity.memory_kib * 1024;
    let (value, name) = signal(available, capacity, &config, working.values().sum());
    if value >= i128::from(config.threshold) {
        return Ok(());
    }
    let seen = format!(
        "{name} is {}, below the threshold of {}",
        mib(value),
        mib(i128::from(config.threshold))
    );
    if k.pressure.current(config.transition).is_none() {
        tracing::warn!(node = %k.settings.node_name, "memory pressure: {seen}");
    }
    k.pressure.low(seen);
    let pods: BTreeMap<String, Pod> = k
        .pods
        .list()
        .iter()
        .map(from_cache)
        .filter(|p| p.spec.node_name == k.settings.node_name && p.is_active())
        .map(|p| (p.metadata.uid.clone(), p))
        .collect();
    let ranked: Vec<Usage> = working
        .iter()
        .filter(|(uid, _)| pods.contains_key(*uid))
        .map(|(uid, ws)| Usage {
            uid: uid.clone(),
            working_set: *ws,
            request: pods[uid]
                .requests()
                .get("memory")
                .map_or(0, |m| u64::try_from(m / 1000).unwrap_or(0)),
        })
        .collect();
    let Some(v) = victim(&ranked) else {
        return Ok(());
    };
    let pod = &pods[&v.uid];
    let message = format!(
        "The node was low on resource: memory. Threshold quantity: {}, available: {}. \
         Pod {} was using {}, request is {}, has larger consumption of memory.",
        mib(i128::from(config.threshold)),
        mib(value),
        pod.metadata.name,
        mib(i128::from(v.working_set)),
        mib(i128::from(v.request)),
    );
    tracing::warn!(pod = %pod.metadata.name, "evicting: {message}");
    k.fail_pod(pod, "Evicted", message).await?;
    let containers = docker.list(label::POD_UID, &v.uid).await?;
    let apps = containers
        .iter()
        .filter(|c| !c.is_infra() && c.is_running());
    futures::future::join_all(apps.map(|c| docker.stop(&c.id, 0))).await;
    Ok(())
}

/// Watches the signals every [`PERIOD`] until `cancel`.
pub async fn run(k: Arc<Kubelet>, cancel: CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = k.pods.ready() => {}
    }
    loop {
        if let Err(e) = check(&k).await {
            tracing::warn!("memory pressure check: {e}");
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

    fn u(uid: &str, ws: u64, req: u64) -> Usage {
        Usage {
            uid: uid.into(),
            working_set: ws,
            request: req,
        }
    }

    #[test]
    fn the_largest_excess_over_requests_goes_first() {
        let pods = [
            u("small", 5, 0),
            u("big-but-requested", 900, 1000),
            u("hog", 300, 0),
            u("over", 400, 200),
        ];
        assert_eq!(victim(&pods).unwrap().uid, "hog");
        let within = [u("a", 100, 1000), u("b", 50, 60)];
        assert_eq!(victim(&within).unwrap().uid, "a");
        assert!(victim(&[]).is_none());
    }

    #[test]
    fn the_lower_signal_counts() {
        let c = EvictionConfig {
            threshold: 100,
            reserved: 600,
            transition: Duration::from_secs(1),
        };
        assert_eq!(
            signal(10_000, 1000, &c, 300),
            (100, "allocatableMemory.available")
        );
        assert_eq!(signal(50, 1000, &c, 0), (50, "memory.available"));
        assert_eq!(signal(10_000, 1000, &c, 700).0, -300);
    }

    #[test]
    fn flags_parse_as_kubernetes_writes_them() {
        assert_eq!(parse_eviction_hard("memory.available<100Mi"), Ok(100 << 20));
        assert_eq!(parse_system_reserved("memory=1Gi"), Ok(1 << 30));
        let e = parse_eviction_hard("nodefs.available<10%").unwrap_err();
        assert!(e.contains("only memory.available"), "{e}");
        let e = parse_system_reserved("memory=lots").unwrap_err();
        assert!(e.contains("\"lots\""), "{e}");
    }

    #[test]
    fn pressure_lasts_the_transition_period() {
        let p = Pressure::default();
        assert!(p.current(Duration::from_secs(60)).is_none());
        p.low("low".into());
        assert_eq!(p.current(Duration::from_secs(60)).as_deref(), Some("low"));
        assert!(p.current(Duration::ZERO).is_none());
    }
}
