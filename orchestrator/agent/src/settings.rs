//! The agent's settings, typed, however they were given: flags or a
//! cloud-config.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use herd_store::{Bootstrap, StorageKind};

use crate::cli::AgentArgs;

/// Everything the agent needs to run, however it was configured.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client: SocketAddr,
    pub listen_peer: SocketAddr,
    /// How the store member enters its cluster when its data dir is new.
    pub bootstrap: Bootstrap,
    pub token: String,
    pub max_voters: usize,
    pub max_request_bytes: usize,
    pub max_key_bytes: usize,
    pub storage: Option<StorageKind>,
    pub watch_progress_notify_interval: Duration,
    /// Register this machine under /herd/machines (set from cloud-config).
    pub machine: Option<herd_client::keys::MachineRecord>,
    /// The pods role (the Kubernetes API and its controllers), if enabled.
    pub pods: Option<herd_pods::role::PodsConfig>,
}

/// The pods role's settings from its flags; `listen` overrides
/// `--listen-api` (a cloud-config's address), `token` the token file.
fn pods_config(
    args: &herd_pods::role::PodsArgs,
    listen: Option<SocketAddr>,
    token: Option<String>,
    candidate: &str,
    version: &str,
) -> anyhow::Result<Option<herd_pods::role::PodsConfig>> {
    let Some(listen_api) = args.listen_api.or(listen) else {
        return Ok(None);
    };
    let token = match (&args.api_token_file, token) {
        (Some(path), _) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading --api-token-file {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        (None, token) => token,
    };
    if token.as_deref().is_some_and(str::is_empty) {
        bail!("the API token is empty");
    }
    Ok(Some(herd_pods::role::PodsConfig {
        listen_api,
        token,
        api: herd_pods::api::ApiConfig {
            service_cidr: args.service_cluster_ip_range,
            ..Default::default()
        },
        eviction_timeout: Duration::from_secs(args.pod_eviction_timeout),
        candidate: candidate.to_owned(),
        version: version.to_owned(),
    }))
}

impl AgentSettings {
    /// Validates the flags into settings (reads the token file).
    pub fn from_args(args: AgentArgs, version: &str) -> anyhow::Result<AgentSettings> {
        let name = args.name.clone().context("--name is required")?;
        let pods = pods_config(&args.pods, None, None, &name, version)?;
        let data_dir = args.data_dir.clone().context("--data-dir is required")?;
        let token = match (args.token.clone(), args.token_file.clone()) {
            (Some(t), _) => t,
            (None, Some(path)) => std::fs::read_to_string(&path)
                .with_context(|| format!("reading --token-file {}", path.display()))?
                .trim()
                .to_owned(),
            (None, None) => bail!("--token or --token-file is required"),
        };
        if token.is_empty() {
            bail!("the cluster token is empty");
        }
        let initial_cluster = args
            .initial_cluster
            .clone()
            .map(|members| {
                members
                    .iter()
                    .map(|m| parse_member(m))
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .transpose()?;
        if let Some(members) = &initial_cluster
            && !members.iter().any(|(member, _)| *member == name)
        {
            bail!("--initial-cluster does not list this member ({name})");
        }
        let bootstrap = match (initial_cluster, args.join) {
            (Some(members), None) => Bootstrap::Found(
                members
                    .into_iter()
                    .map(|(n, a)| (n, a.to_string()))
                    .collect(),
            ),
            (None, Some(peer)) => Bootstrap::Join(peer.to_string()),
            (None, None) => Bootstrap::Found(vec![(name.clone(), args.listen_peer.to_string())]),
            (Some(_), Some(_)) => bail!("--initial-cluster and --join are mutually exclusive"),
        };
        Ok(AgentSettings {
            name,
            data_dir,
            listen_client: args.listen_client,
            listen_peer: args.listen_peer,
            bootstrap,
            token,
            max_voters: args.max_voters,
            max_request_bytes: args.max_request_bytes,
            max_key_bytes: args.max_key_bytes,
            storage: args.storage,
            watch_progress_notify_interval: Duration::from_secs(
                args.watch_progress_notify_interval,
            ),
            machine: None,
            pods,
        })
    }

    /// Settings from a cloud-config: fetched (retrying while the network
    /// comes up), parsed, the cluster entry decided (found or join), and
    /// this machine's registration record gathered.
    pub async fn from_cloud_config(
        args: AgentArgs,
        url: &str,
        version: &str,
    ) -> anyhow::Result<AgentSettings> {
        use crate::cloud_config::{self, Entry};
        let boot = cloud_config::load(url, Duration::from_secs(120))
            .await
            .with_context(|| format!("loading the cloud-config from {url}"))?;
        let data_dir = args
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/herd/store"));
        // A machine booted from its installed disk finds its member on
        // STATE: it resumes as that member (even while no peer answers)
        // instead of founding or joining anew.
        let bootstrap = if herd_store::has_state(&data_dir) {
            tracing::info!(name = %boot.name, data_dir = %data_dir.display(), "cloud-config loaded; resuming the store member from its data dir");
            Bootstrap::Resume
        } else {
            let entry = boot.membership.resolve(Duration::from_secs(2)).await;
            tracing::info!(name = %boot.name, ?entry, "cloud-config loaded");
            match entry {
                Entry::Found => {
                    Bootstrap::Found(vec![(boot.name.clone(), boot.listen_peer.to_string())])
                }
                Entry::Join(peer) => Bootstrap::Join(peer.to_string()),
            }
        };
        if let Some(disk) = &boot.install_disk {
            // The image's init installs (kernel `herd.install=`) before the
            // agent runs; the agent only marks the booted slot good.
            tracing::debug!(disk = %disk.display(), "machine installs to disk");
        }
        let (name, ip, roles, v) = (
            boot.name.clone(),
            boot.advertise,
            boot.roles.clone(),
            version.to_owned(),
        );
        let record =
            tokio::task::spawn_blocking(move || crate::facts::describe(&name, ip, &roles, &v))
                .await
                .context("gathering machine facts")?
                .context("gathering machine facts")?;
        let pods = pods_config(
            &args.pods,
            Some(boot.listen_api),
            boot.api_token.clone(),
            &boot.name,
            version,
        )?;
        Ok(AgentSettings {
            name: boot.name,
            data_dir,
            listen_client: boot.listen_client,
            listen_peer: boot.listen_peer,
            bootstrap,
            token: boot.token,
            max_voters: args.max_voters,
            max_request_bytes: args.max_request_bytes,
            max_key_bytes: args.max_key_bytes,
            storage: args.storage,
            watch_progress_notify_interval: Duration::from_secs(
                args.watch_progress_notify_interval,
            ),
            machine: Some(record),
            pods,
        })
    }
}

/// Parses one `NAME=HOST:PORT` of `--initial-cluster`.
fn parse_member(s: &str) -> anyhow::Result<(String, SocketAddr)> {
    let (name, addr) = s
        .split_once('=')
        .with_context(|| format!("--initial-cluster entry {s:?} is not NAME=HOST:PORT"))?;
    let addr = addr
        .trim_start_matches("http://")
        .parse()
        .with_context(|| format!("--initial-cluster entry {s:?}: bad address"))?;
    if name.is_empty() {
        bail!("--initial-cluster entry {s:?} has an empty name");
    }
    Ok((name.to_owned(), addr))
}

impl AgentSettings {
    /// The store configuration these settings describe.
    pub fn store_config(&self) -> herd_store::Config {
        let mut config = herd_store::Config::new(
            self.name.clone(),
            self.data_dir.clone(),
            self.listen_peer,
            self.token.clone(),
        );
        config.advertise_client = Some(self.listen_client.to_string());
        config.bootstrap = self.bootstrap.clone();
        config.max_voters = self.max_voters;
        config.limits.max_request_bytes = self.max_request_bytes;
        config.limits.max_key_bytes = self.max_key_bytes;
        config.storage = self.storage;
        config
    }
}
