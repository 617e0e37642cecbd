//! The node side of pods: the kubelet every agent runs. It registers the
//! machine's Node and keeps its status, watches the pods bound to it and
//! makes its Docker daemon match them, and serves their logs.
//!
//! - [`docker`]: the Docker client (bollard), containers read back typed.
//! - [`sync`]: one pod made so in Docker — infra container, app
//!   containers, restarts with back-off, probes acted on.
//! - [`init`]: init containers, in order, each to success, before the apps.
//! - [`network`]: the pod's address on this machine's subnet, via a veth
//!   into the pod bridge `herd0`.
//! - [`host_ports`]: `hostPort`s held on the node and DNATed to pods.
//! - [`eviction`]: memory pressure, and the pod evicted under it.
//! - [`volumes`]: emptyDir (on disk, or a tmpfs Docker volume) and hostPath, as binds.
//! - [`status`]: container states, phase and conditions from Docker.
//! - [`probes`]: liveness and readiness probe workers.
//! - [`gc`]: containers of gone pods and dead containers removed.
//! - [`service_env`]: Kubernetes' service environment variables.
//! - [`node_object`]: the Node, its capacity, labels and conditions.
//! - [`logs`]: the logs endpoint the API server proxies to.
//! - [`health`]: the node's part of the update role's health gate.
//! - [`bench`]: `herd bench pod-start`, pod start latency against bare Docker calls.
//!
//! Nothing about a pod is kept only in memory: what runs is read back
//! from Docker by the labels on every container, so an agent restart
//! adopts running pods (never starting one twice) and a dockerd restart
//! gets them started again.

pub mod api;
pub mod bench;
mod bench_setup;
pub mod docker;
pub mod eviction;
pub mod exec;
pub mod exec_spdy;
pub mod gc;
pub mod health;
pub mod host_ports;
pub mod init;
pub mod logs;
pub mod network;
pub mod node_object;
pub mod probes;
pub mod service_env;
pub mod spdy;
pub mod start;
pub mod status;
pub mod sync;
mod terminal_size;
pub mod volumes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_client::Client;
use herd_client::kit::{Action, Cache, Controller, Request, Scope};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiConfig, Pod, Service};
use crate::controllers::events::Recorder;
use crate::registry::{Registry, from_cache};
use docker::{Docker, DockerError, label};
use probes::Probes;
use sync::SyncError;

/// The default Docker socket (Docker's own default).
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
/// The default infra ("pause") image.
pub const DEFAULT_INFRA_IMAGE: &str = "herd/pause:1";

/// `--docker-host` and the other flags of the kubelet.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeletArgs {
    /// The Docker daemon pods run on [default: $DOCKER_HOST, else
    /// unix:///var/run/docker.sock]. An agent whose dockerd does not
    /// answer registers its Node NotReady and keeps trying.
    #[arg(long, value_name = "unix:///PATH")]
    pub docker_host: Option<String>,
    /// Image of each pod's infra container, which holds the pod's network
    /// namespace (any image whose default command runs until killed)
    /// [default: the cloud-config's `kubelet.pod_infra_image`, else
    /// herd/pause:1].
    #[arg(long, value_name = "IMAGE")]
    pub pod_infra_image: Option<String>,
    /// Do not run the kubelet on this machine (no Node, no pods).
    #[arg(long)]
    pub no_kubelet: bool,
    /// Evict a pod when memory available falls below QUANTITY (memory is
    /// the one signal herd evicts on).
    #[arg(long, value_name = "memory.available<QUANTITY", default_value = "memory.available<100Mi", value_parser = eviction::parse_eviction_hard)]
    pub eviction_hard: u64,
    /// Memory kept from pods for the system: the Node's allocatable memory
    /// is its capacity less this and the eviction threshold, and pods
    /// holding more than that are evicted.
    #[arg(long, value_name = "memory=QUANTITY", value_parser = eviction::parse_system_reserved)]
    pub system_reserved: Option<u64>,
    /// How long the Node keeps MemoryPressure after memory was last low.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub eviction_pressure_transition_period: Duration,
}

impl KubeletArgs {
    /// The Docker host the flags name, else `configured` (a
    /// cloud-config's), else the environment's, else the default.
    pub fn docker_host(&self, configured: Option<&str>) -> String {
        self.docker_host
            .clone()
            .or_else(|| configured.map(str::to_owned))
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_owned())
    }

    /// The eviction settings the flags give.
    pub fn eviction(&self) -> eviction::EvictionConfig {
        eviction::EvictionConfig {
            threshold: self.eviction_hard,
            reserved: self.system_reserved.unwrap_or(0),
            transition: self.eviction_pressure_transition_period,
        }
    }

    /// The infra image the flags name, else `configured`, else the default.
    pub fn infra_image(&self, configured: Option<&str>) -> String {
        self.pod_infra_image
            .as_deref()
            .or(configured)
            .unwrap_or(DEFAULT_INFRA_IMAGE)
            .to_owned()
    }
}

/// What the kubelet needs to know about its machine.
#[derive(Debug, Clone)]
pub struct KubeletSettings {
    /// The Node's name (the agent's name).
    pub node_name: String,
    pub docker_host: String,
    pub infra_image: String,
    /// The net role's `subnet.env`.
    pub subnet_env: PathBuf,
    /// The pod bridge.
    pub bridge: String,
    /// Pods' volumes live under `<root_dir>/pods/<uid>`.
    pub root_dir: PathBuf,
    pub machine_id: String,
    pub hostname: String,
    pub boot_id: String,
    /// The machine's address (the Node's InternalIP).
    pub host_ip: IpAddr,
    /// The machine's metadata, as Node labels.
    pub labels: BTreeMap<String, String>,
    /// Port of the agent API serving [`api::routes`].
    pub daemon_port: Option<u16>,
    /// herd's version.
    pub version: String,
    /// When pods are evicted for memory.
    pub eviction: eviction::EvictionConfig,
}

/// The connection to dockerd, made (again) whenever it is found missing.
pub struct DockerSlot {
    host: String,
    docker: Mutex<Option<Docker>>,
    version: Mutex<Option<String>>,
}

impl DockerSlot {
    pub fn new(host: &str) -> Arc<DockerSlot> {
        Arc::new(DockerSlot {
            host: host.to_owned(),
            docker: Mutex::new(None),
            version: Mutex::new(None),
        })
    }

    /// The client, if dockerd answered the last check.
    pub fn get(&self) -> Option<Docker> {
        self.version.lock().expect("docker version").as_ref()?;
        self.docker.lock().expect("docker slot").clone()
    }

    /// `docker://<version>` as last seen.
    pub fn version(&self) -> Option<String> {
        self.version.lock().expect("docker version").clone()
    }

    /// Connects if needed and asks dockerd its version.
    pub async fn check(&self) -> Result<String, String> {
        let current = self.docker.lock().expect("docker slot").clone();
        let docker = match current {
            Some(d) => d,
            None => match Docker::connect(&self.host).await {
                Ok(d) => {
                    *self.docker.lock().expect("docker slot") = Some(d.clone());
                    d
                }
                Err(e) => {
                    *self.version.lock().expect("docker version") = None;
                    return Err(e.message());
                }
            },
        };
        let result = docker.version().await.map_err(|e: DockerError| e.message());
        *self.version.lock().expect("docker version") = result.as_ref().ok().cloned();
        result
    }
}

/// Everything the kubelet's tasks share.
pub struct Kubelet {
    pub settings: KubeletSettings,
    pub client: Client,
    pub docker: Arc<DockerSlot>,
    pub registry: Registry,
    pub events: Recorder,
    pub probes: Probes,
    pub capacity: node_object::Capacity,
    /// Pods (all; those bound here are synced).
    pub pods: Cache<Pod>,
    /// Services, for the service env.
    pub services: Cache<Service>,
    /// Held while a sandbox takes an address.
    allocating: tokio::sync::Mutex<()>,
    /// Dead containers whose back-off was reported.
    backoff_noted: Mutex<HashSet<String>>,
    /// Failed pulls by `uid/image`: retry time and failures so far.
    pull_backoff: Mutex<HashMap<String, (std::time::Instant, i32)>>,
    /// Grace periods of pods seen, for when they are gone.
    grace: Mutex<HashMap<String, (String, i64)>>,
    /// The host ports pods hold on this node.
    host_ports: host_ports::HostPorts,
    /// When memory was last low.
    pressure: eviction::Pressure,
}

async fn reconcile(k: Arc<Kubelet>, req: Request<Pod>) -> Result<Action, SyncError> {
    let pod = req
        .object
        .as_ref()
        .map(from_cache)
        .filter(|p| p.spec.node_name == k.settings.node_name);
    let Some(pod) = pod else {
        // Gone, or not (or no longer) bound here: whatever of it runs goes.
        let known = k.grace.lock().expect("grace").remove(&req.name);
        if let (Some((uid, grace)), Some(docker)) = (known, k.docker.get()) {
            k.kill_pod(&docker, &uid, grace).await?;
        }
        return Ok(Action::AwaitChange);
    };
    let key = req.name.clone();
    let replaced = {
        let mut g = k.grace.lock().expect("grace");
        let before = g.insert(key, (pod.metadata.uid.clone(), sync::grace_of(&pod)));
        before.filter(|(uid, _)| *uid != pod.metadata.uid)
    };
    if let (Some((uid, grace)), Some(docker)) = (replaced, k.docker.get()) {
        k.kill_pod(&docker, &uid, grace).await?;
    }
    if pod.metadata.deletion_timestamp.is_some() {
        if let Some(docker) = k.docker.get() {
            k.kill_pod(&docker, &pod.metadata.uid, sync::grace_of(&pod))
                .await?;
        }
        return Ok(Action::AwaitChange);
    }
    let next = k.sync_pod(&pod).await?;
    Ok(Action::Requeue(next))
}

/// Runs the kubelet until `cancel`: the Node, the pods bound here, garbage collection.
pub async fn run(
    client: Client,
    settings: KubeletSettings,
    docker: Arc<DockerSlot>,
    cancel: CancellationToken,
) {
    let registry = Registry::new(client.clone(), ApiConfig::default());
    let mut controller = Controller::<Pod>::new("kubelet-pods", client.clone(), Scope::All);
    let services = controller.watches::<Service>(Scope::All, |_, _| Vec::new());
    let kubelet = Arc::new(Kubelet {
        events: Recorder::new(registry.clone(), "kubelet", &settings.node_name),
        capacity: node_object::Capacity::of_machine(),
        pods: controller.cache(),
        services,
        client,
        registry,
        docker,
        probes: Probes::default(),
        allocating: tokio::sync::Mutex::new(()),
        backoff_noted: Mutex::new(HashSet::new()),
        pull_backoff: Mutex::new(HashMap::new()),
        grace: Mutex::new(HashMap::new()),
        host_ports: host_ports::HostPorts::default(),
        pressure: eviction::Pressure::default(),
        settings,
    });
    if let Err(e) = kubelet.docker.check().await {
        tracing::warn!(node = %kubelet.settings.node_name, "the kubelet's dockerd does not answer (the Node stays NotReady until it does): {e}");
    }
    let mut tasks = JoinSet::new();
    tasks.spawn(node_object::run(Arc::clone(&kubelet), cancel.clone()));
    tasks.spawn(gc::run(Arc::clone(&kubelet), cancel.clone()));
    tasks.spawn(eviction::run(Arc::clone(&kubelet), cancel.clone()));
    controller
        .concurrency(4)
        .run(Arc::clone(&kubelet), reconcile, cancel.clone())
        .await;
    while tasks.join_next().await.is_some() {}
    kubelet.probes.stop_all();
}

/// How long the agent's shutdown waits for the kubelet (containers keep
/// running: the next agent adopts them).
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// The label key a pod's containers are found by (for tests and tools).
pub const POD_UID_LABEL: &str = label::POD_UID;
