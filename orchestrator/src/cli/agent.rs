//! `herd agent`: the daemon on every machine. Its settings come from flags
//! (or, later, from cloud-config) as one typed [`AgentSettings`]; a
//! supervisor owns one task per role and stops them all on shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::kv;
use crate::{api, store};

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Take name, token, addresses and cluster entry from a cloud-config
    /// (`http://…` or a file), as netbooted machines do.
    #[arg(long, value_name = "URL", conflicts_with_all = ["name", "initial_cluster", "join", "token", "token_file"])]
    pub cloud_config: Option<String>,
    /// This member's name (unique in the cluster).
    #[arg(long, required_unless_present = "cloud_config")]
    pub name: Option<String>,
    /// Where the store keeps its log, state and snapshots
    /// (with --cloud-config: /var/lib/herd/store unless given).
    #[arg(long, required_unless_present = "cloud_config")]
    pub data_dir: Option<PathBuf>,
    /// Address of the etcd-v3-compatible client API (gRPC).
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub listen_client: SocketAddr,
    /// Address for Raft traffic between members.
    #[arg(long, default_value = "127.0.0.1:2380")]
    pub listen_peer: SocketAddr,
    /// Bootstrap a fixed set of members: NAME=HOST:PORT,… (peer addresses, this member included).
    #[arg(long, conflicts_with = "join", value_delimiter = ',')]
    pub initial_cluster: Option<Vec<String>>,
    /// Join a running cluster through any member's peer address.
    #[arg(long)]
    pub join: Option<SocketAddr>,
    /// The cluster's shared secret: gates joining and peer traffic.
    #[arg(
        long,
        env = "HERD_TOKEN",
        hide_env_values = true,
        required_unless_present_any = ["token_file", "cloud_config"],
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// File holding the cluster token.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Members beyond this many voters join as learners.
    #[arg(long, default_value_t = 5)]
    pub max_voters: usize,
    /// Largest accepted request (etcd's --max-request-bytes).
    #[arg(long, default_value_t = 1536 * 1024)]
    pub max_request_bytes: usize,
    /// Largest accepted key.
    #[arg(long, default_value_t = 1536)]
    pub max_key_bytes: usize,
    /// Engine keeping the Raft log of a new data dir [default: fjall]. An
    /// existing data dir keeps the engine recorded in its member.json;
    /// naming a different one is refused.
    #[arg(long, value_enum)]
    pub storage: Option<store::StorageKind>,
    /// Seconds a `progress_notify` watch may stay idle before it is sent the
    /// current revision (etcd's --experimental-watch-progress-notify-interval).
    #[arg(long, value_name = "SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub watch_progress_notify_interval: u64,
}

/// Everything the agent needs to run, however it was configured.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client: SocketAddr,
    pub listen_peer: SocketAddr,
    pub initial_cluster: Option<Vec<(String, SocketAddr)>>,
    pub join: Option<SocketAddr>,
    pub token: String,
    pub max_voters: usize,
    pub max_request_bytes: usize,
    pub max_key_bytes: usize,
    pub storage: Option<store::StorageKind>,
    pub watch_progress_notify_interval: std::time::Duration,
    /// Register this machine under /herd/machines (set from cloud-config).
    pub machine: Option<crate::machine::MachineRecord>,
}

impl AgentSettings {
    /// Validates the flags into settings (reads the token file).
    pub fn from_args(args: AgentArgs) -> anyhow::Result<AgentSettings> {
        let name = args.name.context("--name is required")?;
        let data_dir = args.data_dir.context("--data-dir is required")?;
        let token = match (args.token, args.token_file) {
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
        Ok(AgentSettings {
            name,
            data_dir,
            listen_client: args.listen_client,
            listen_peer: args.listen_peer,
            initial_cluster,
            join: args.join,
            token,
            max_voters: args.max_voters,
            max_request_bytes: args.max_request_bytes,
            max_key_bytes: args.max_key_bytes,
            storage: args.storage,
            watch_progress_notify_interval: std::time::Duration::from_secs(
                args.watch_progress_notify_interval,
            ),
            machine: None,
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
        let (initial_cluster, join) = if store::has_state(&data_dir) {
            tracing::info!(name = %boot.name, data_dir = %data_dir.display(), "cloud-config loaded; resuming the store member from its data dir");
            (None, None)
        } else {
            let entry = boot.membership.resolve(Duration::from_secs(2)).await;
            tracing::info!(name = %boot.name, ?entry, "cloud-config loaded");
            match entry {
                Entry::Found => (Some(vec![(boot.name.clone(), boot.listen_peer)]), None),
                Entry::Join(peer) => (None, Some(peer)),
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
            tokio::task::spawn_blocking(move || crate::machine::describe(&name, ip, &roles, &v))
                .await
                .context("gathering machine facts")?
                .context("gathering machine facts")?;
        Ok(AgentSettings {
            name: boot.name,
            data_dir,
            listen_client: boot.listen_client,
            listen_peer: boot.listen_peer,
            initial_cluster,
            join,
            token: boot.token,
            max_voters: args.max_voters,
            max_request_bytes: args.max_request_bytes,
            max_key_bytes: args.max_key_bytes,
            storage: args.storage,
            watch_progress_notify_interval: std::time::Duration::from_secs(
                args.watch_progress_notify_interval,
            ),
            machine: Some(record),
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
    fn store_config(&self) -> store::Config {
        let mut config = store::Config::new(
            self.name.clone(),
            self.data_dir.clone(),
            self.listen_peer,
            self.token.clone(),
        );
        config.advertise_client = Some(self.listen_client.to_string());
        config.initial_cluster = self.initial_cluster.as_ref().map(|members| {
            members
                .iter()
                .map(|(name, addr)| (name.clone(), addr.to_string()))
                .collect()
        });
        config.join = self.join.map(|a| a.to_string());
        config.max_voters = self.max_voters;
        config.limits.max_request_bytes = self.max_request_bytes;
        config.limits.max_key_bytes = self.max_key_bytes;
        config.storage = self.storage;
        config
    }
}

/// The agent's roles: each runs as one task, all owned here and stopped
/// together (later roles — subnets, units, pods — join the same set).
struct Supervisor {
    tasks: JoinSet<(&'static str, anyhow::Result<()>)>,
    stop: watch::Sender<bool>,
}

impl Supervisor {
    fn new() -> Supervisor {
        Supervisor {
            tasks: JoinSet::new(),
            stop: watch::channel(false).0,
        }
    }

    /// A future that resolves when the supervisor stops its roles.
    fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    fn spawn(
        &mut self,
        role: &'static str,
        task: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.tasks.spawn(async move { (role, task.await) });
    }

    /// Runs until a signal or until a role ends; then stops every role.
    async fn run(mut self) -> anyhow::Result<()> {
        let first = tokio::select! {
            _ = kv::shutdown_signal() => {
                tracing::info!("signal received; shutting down");
                None
            }
            joined = self.tasks.join_next() => joined,
        };
        let _ = self.stop.send(true);
        let mut result = match first {
            Some(Ok((role, Ok(())))) => Err(anyhow::anyhow!("role {role} stopped unexpectedly")),
            Some(Ok((role, Err(e)))) => Err(e.context(format!("role {role} failed"))),
            Some(Err(e)) => Err(anyhow::anyhow!("a role panicked: {e}")),
            None => Ok(()),
        };
        let drain = async {
            while let Some(joined) = self.tasks.join_next().await {
                if let Ok((role, Err(e))) = joined {
                    tracing::warn!(role, error = %e, "role failed while stopping");
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .is_err()
        {
            tracing::warn!("roles did not stop within 10s; aborting them");
            self.tasks.abort_all();
            if result.is_ok() {
                result = Err(anyhow::anyhow!("roles did not stop in time"));
            }
        }
        result
    }
}

pub async fn run_agent(args: AgentArgs, version: &str) -> anyhow::Result<()> {
    let settings = match args.cloud_config.clone() {
        Some(url) => {
            // The lab's progress view reads this line on the serial console.
            eprintln!("herd agent starting: cloud-config {url}");
            AgentSettings::from_cloud_config(args, &url, version).await?
        }
        None => AgentSettings::from_args(args)?,
    };
    eprintln!(
        "herd agent {version} starting: member {} client {} peer {}",
        settings.name, settings.listen_client, settings.listen_peer
    );
    run(settings).await
}

/// Runs the agent with `settings` until SIGTERM/SIGINT or a role fails.
pub async fn run(settings: AgentSettings) -> anyhow::Result<()> {
    // Bind first: a taken client port should fail before the store starts.
    let listener = api::Listener::bind(settings.listen_client).await?;
    let member = store::Member::start(settings.store_config())
        .await
        .with_context(|| format!("starting store member {}", settings.name))?;
    let member = Arc::new(member);
    tracing::info!(
        member = %settings.name,
        id = format!("{:x}", member.id()),
        client = %listener.local_addr(),
        "store member running"
    );
    let mut supervisor = Supervisor::new();
    let stopped = supervisor.stopped();
    let api_member = Arc::clone(&member);
    let options = api::ServeOptions {
        watch_progress_interval: settings.watch_progress_notify_interval,
        ..api::ServeOptions::new(settings.max_request_bytes)
    };
    supervisor.spawn("client-api", async move {
        api::serve_with(api_member, listener, options, stopped).await?;
        Ok(())
    });
    if let Some(record) = settings.machine.clone() {
        let client = api::client::Client::lazy(&settings.listen_client.to_string())?;
        let stopped = supervisor.stopped();
        supervisor.spawn("machine-registration", async move {
            let registration =
                crate::machine::Registration::start(client, record, crate::machine::DEFAULT_TTL);
            stopped.await;
            // Leaving cleanly: drop out of the machine list now.
            if let Err(e) = registration.close().await {
                tracing::debug!(error = %e, "removing the machine entry at shutdown");
            }
            Ok(())
        });
    }
    let result = supervisor.run().await;
    // The API tasks are gone, so this is the last handle: stop Raft cleanly.
    match Arc::try_unwrap(member) {
        Ok(member) => member.shutdown().await,
        Err(_) => tracing::warn!("store member still referenced at shutdown; dropping it"),
    }
    eprintln!("herd agent stopped");
    result
}
