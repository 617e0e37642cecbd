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
    #[arg(long, value_name = "URL", conflicts_with_all = ["name", "initial_cluster", "join", "token", "token_file", "ca_cert"])]
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
    /// The join token (`herd1.<CA hash>.<id>.<secret>`): needed to join;
    /// a founding member registers it so others can join with it (without
    /// one it makes one and writes it to DATA_DIR/join-token). With
    /// --insecure-plaintext: the cluster's shared secret.
    #[arg(
        long,
        env = "HERD_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// File holding the token.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The cluster CA's certificate (PEM), for members that found the
    /// cluster together (each then issues its own member certificate).
    #[arg(long, requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// The cluster CA's key (PEM, mode 0600).
    #[arg(long, requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// Run without TLS: peers authenticated only by the shared token,
    /// clients not at all while etcd-style auth is off. For tests and
    /// benchmarks against plaintext peers; it says so loudly in the log.
    #[arg(long)]
    pub insecure_plaintext: bool,
    /// How long member certificates are valid (this member's own, renewed
    /// in place with a third of it left, and those it issues to joiners).
    #[arg(long, value_name = "DURATION", default_value = "90d", value_parser = parse_cert_validity)]
    pub member_cert_validity: std::time::Duration,
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
    /// Milliseconds between the leader's heartbeats; also the deadline of a
    /// replication RPC (etcd's --heartbeat-interval). A cloud-config's
    /// `herd.heartbeat_interval_ms` wins over it.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Milliseconds a follower waits without a heartbeat before it
    /// campaigns, at least 5 heartbeats (etcd's --election-timeout).
    #[arg(long, value_name = "MS", default_value_t = 800)]
    pub election_timeout: u64,
    /// This machine's id: its subnet and units stick to it [default: from
    /// the cloud-config's MAC, else the member name].
    #[arg(long)]
    pub machine_id: Option<String>,
    /// Run the cluster network role on this interface: other machines
    /// route this machine's pod subnet to it.
    #[arg(long, value_name = "IF")]
    pub cluster_iface: Option<String>,
    /// The address other machines route to (must be on --cluster-iface;
    /// default: its first IPv4 address). Also starts the network role.
    #[arg(long, value_name = "IP")]
    pub public_ip: Option<std::net::Ipv4Addr>,
    /// Where the network role writes flannel's subnet.env.
    #[arg(long, value_name = "PATH", default_value = herd_net::env_file::DEFAULT_SUBNET_ENV)]
    pub subnet_env: PathBuf,
    /// TTL of this machine's subnet lease (renewed every third of it).
    #[arg(long, value_name = "SECONDS", default_value_t = 24 * 3600, hide = true)]
    pub subnet_lease_ttl: u64,
    /// How often every route is checked (and put back if deleted).
    #[arg(long, value_name = "SECONDS", default_value_t = 10, hide = true)]
    pub route_check_interval: u64,
    /// Labels for this machine (what units' MachineMetadata matches):
    /// KEY=VALUE,… (added to a cloud-config's herd.metadata).
    #[arg(long, value_name = "KEY=VALUE,…")]
    pub metadata: Option<String>,
    /// Address of the agent's own HTTP API (unit status and journals)
    /// [default: the client address's host on port 2381 with a
    /// cloud-config, on a free port otherwise]; the machine advertises it
    /// in its record. (`--listen-api` is the Kubernetes API's.)
    #[arg(long, value_name = "HOST:PORT")]
    pub listen_agent_api: Option<SocketAddr>,
    /// Seconds a machine's registration outlives its agent.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(2..))]
    pub machine_ttl: u64,
    /// Run the store member without this machine's registration, units or
    /// agent API (the store's own tests and benchmarks, which count every
    /// revision); only roles whose flags are given (network, pods) run.
    #[arg(long)]
    pub store_only: bool,
    /// cgroup v2 group that units run under [default: herd.units under the
    /// cgroup2 mount, mounted on /sys/fs/cgroup if nothing is].
    #[arg(long, value_name = "DIR")]
    pub units_cgroup_root: Option<PathBuf>,
    /// Where unit journals and run state live [default: DATA_DIR/units].
    #[arg(long, value_name = "DIR")]
    pub units_state_dir: Option<PathBuf>,
    /// How long a lost machine keeps its units before they move elsewhere.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub units_grace: std::time::Duration,
    /// The pods role: the Kubernetes API and its controllers.
    #[command(flatten)]
    pub pods: herd_pods::role::PodsArgs,
    /// The kubelet: this machine's pods on its Docker daemon.
    #[command(flatten)]
    pub kubelet: herd_pods::node::KubeletArgs,
    /// The service proxy, wherever the pods role runs.
    #[command(flatten)]
    pub proxy: herd_pods::proxy::ProxyArgs,
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
        None => AgentSettings::from_args(args, version).await?,
    };
    tracing::info!(
        member = %settings.name,
        client = %settings.listen_client,
        peer = %settings.listen_peer,
        "herd agent {version} starting"
    );
    crate::run(settings, shutdown).await
}

/// A certificate validity of at least ten seconds (renewal runs with a
/// third of it left; shorter would spin).
fn parse_cert_validity(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < std::time::Duration::from_secs(10) {
        return Err(format!(
            "{s} is shorter than the 10 s a certificate must last"
        ));
    }
    Ok(d)
}
