//! `herd agent`'s command line: the flags, and the step from flags (or a
//! cloud-config) to typed [`AgentSettings`]. The binary's edge: errors get
//! context here.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use herd_client::stage::AgentStage;
use herd_store::StorageKind;
use tokio_util::sync::CancellationToken;

use crate::settings::AgentSettings;

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
    pub storage: Option<StorageKind>,
    /// Seconds a `progress_notify` watch may stay idle before it is sent the
    /// current revision (etcd's --experimental-watch-progress-notify-interval).
    #[arg(long, value_name = "SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub watch_progress_notify_interval: u64,
    /// The pods role: the Kubernetes API and its controllers.
    #[command(flatten)]
    pub pods: herd_pods::role::PodsArgs,
}

/// `herd agent`: settings from the flags or the cloud-config, then the
/// agent until `shutdown` fires or a role fails.
pub async fn run(
    args: AgentArgs,
    version: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    AgentStage::Starting {
        version: version.to_owned(),
        cloud_config: args.cloud_config.clone(),
    }
    .report();
    let settings = match args.cloud_config.clone() {
        Some(url) => AgentSettings::from_cloud_config(args, &url, version).await?,
        None => AgentSettings::from_args(args, version)?,
    };
    tracing::info!(
        member = %settings.name,
        client = %settings.listen_client,
        peer = %settings.listen_peer,
        "herd agent {version} starting"
    );
    crate::run(settings, shutdown).await
}
