//! A machine's cloud-config: fetched from the provisioning server (URL from
//! the kernel command line `herd.config=`), parsed strictly (unknown fields
//! are errors that name their path), and turned into the typed settings the
//! agent starts with.
//!
//! ```yaml
//! hostname: m2
//! herd:
//!   token: herd1.…           # the cluster's join token (pins the CA)
//!   ca:                      # only for the machine that founds the cluster
//!     cert: "-----BEGIN CERTIFICATE-----…"
//!     key: "-----BEGIN PRIVATE KEY-----…"
//!   insecure_plaintext: false  # true: no TLS (tests only)
//!   advertise: 10.77.0.12    # this machine's address: listen + advertise
//!   bootstrap: 10.77.0.11    # the one machine that may found the cluster
//!   peers: [10.77.0.11, 10.77.0.12, 10.77.0.13]
//!   roles: [store]
//!   install_disk: /dev/vda   # optional: install to disk on first boot
//!   network:                 # optional: run the cluster network role
//!     network: 10.244.0.0/16 # the cluster's config, set if it has none
//!     subnet_len: 24
//!     backend: host-gw       # or vxlan (vni: 1, port: 8472)
//!     cluster_iface: eth0    # default: the interface carrying `advertise`
//!     public_ip: 10.77.0.12  # default: `advertise`
//!   metadata: {role: db}     # optional: labels units' MachineMetadata matches
//!   agent_api_port: 2381     # optional: the agent's own API (units)
//!   update:                  # optional: OS updates (herd_update::UpdateSettings)
//!     server: http://10.77.0.1:8080
//!     group: stable
//!   api_port: 6443           # optional: the Kubernetes API (default 6443)
//!   api_token: 9b2e…         # optional: bearer token the Kubernetes API requires
//!   kubelet:                 # optional: the node side of pods (flags win)
//!     pod_infra_image: 10.77.0.1:5000/herd/pause:1
//!     docker_host: unix:///run/docker.sock
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Default port of the store's client API.
pub const CLIENT_PORT: u16 = 2379;
/// Default port of the store's peer (Raft) API.
pub const PEER_PORT: u16 = 2380;

/// Why a cloud-config could not be fetched or used.
#[derive(Debug, thiserror::Error)]
pub enum CloudConfigError {
    #[error("reading cloud-config {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("fetching the cloud-config: {0}")]
    Fetch(#[from] herd_http::Error),
    #[error("cloud-config {0} is not UTF-8 text")]
    NotText(String),
    #[error("cloud-config is not valid YAML for herd: {0}")]
    Parse(String),
    #[error("cloud-config field {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

pub use herd_client::keys::Role;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    hostname: String,
    herd: HerdSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HerdSection {
    token: String,
    advertise: IpAddr,
    bootstrap: IpAddr,
    #[serde(default)]
    peers: Vec<IpAddr>,
    #[serde(default = "default_roles")]
    roles: Vec<Role>,
    #[serde(default)]
    install_disk: Option<PathBuf>,
    /// The cluster CA, for the machine that founds the cluster.
    #[serde(default)]
    ca: Option<CaSection>,
    #[serde(default)]
    insecure_plaintext: bool,
    #[serde(default)]
    client_port: Option<u16>,
    #[serde(default)]
    peer_port: Option<u16>,
    /// Raft timing in milliseconds, as etcd's flags of the same names:
    /// slow machines (emulated ones) need longer than the defaults.
    #[serde(default)]
    heartbeat_interval_ms: Option<u64>,
    #[serde(default)]
    election_timeout_ms: Option<u64>,
    #[serde(default)]
    network: Option<NetworkSection>,
    /// The agent's own API's port (default 2381; unit status, journals).
    #[serde(default)]
    agent_api_port: Option<u16>,
    /// The Kubernetes API's port (default 6443).
    #[serde(default)]
    api_port: Option<u16>,
    /// The bearer token the Kubernetes API requires, if any.
    #[serde(default)]
    api_token: Option<String>,
    /// Labels units' MachineMetadata matches (`role: db`).
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    update: Option<herd_update::UpdateSettings>,
    #[serde(default)]
    kubelet: KubeletSection,
}

/// `herd.kubelet`: where this machine's pods run. The agent's flags win
/// over it; left out, the kubelet's defaults hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeletSection {
    /// The infra container's image (a lab pulls it from its registry).
    #[serde(default)]
    pub pod_infra_image: Option<String>,
    /// The dockerd pods run on (`unix:///run/docker.sock`).
    #[serde(default)]
    pub docker_host: Option<String>,
}

/// `herd.network`: this machine's part in the cluster network, and the
/// cluster's network config if the cluster has none yet.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkSection {
    #[serde(default)]
    network: Option<herd_net::cidr::Ipv4Net>,
    #[serde(default)]
    subnet_len: Option<u8>,
    #[serde(default)]
    subnet_min: Option<std::net::Ipv4Addr>,
    #[serde(default)]
    subnet_max: Option<std::net::Ipv4Addr>,
    #[serde(default)]
    backend: Option<herd_net::config::BackendKind>,
    #[serde(default)]
    vni: Option<u32>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    cluster_iface: Option<String>,
    #[serde(default)]
    public_ip: Option<std::net::Ipv4Addr>,
}

/// The cluster network settings a cloud-config carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkBootstrap {
    /// The config to set when the cluster has none.
    pub config: herd_net::config::NetworkConfig,
    pub cluster_iface: Option<String>,
    pub public_ip: Option<std::net::Ipv4Addr>,
}

/// Default port of the agent's own HTTP API.
pub const AGENT_API_PORT: u16 = 2381;

/// Whether `key=value` is a usable machine label: a key of letters,
/// digits, `-`, `_`, `.`, `/`; a value without `,`, `=` or whitespace.
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
    {
        return Err(format!("key {key:?}: use letters, digits, -, _, . or /"));
    }
    if value.is_empty() || value.contains([',', '=']) || value.contains(char::is_whitespace) {
        return Err(format!(
            "value {value:?} of {key}: not empty, without commas, = or spaces"
        ));
    }
    Ok(())
}

fn default_roles() -> Vec<Role> {
    vec![Role::Store]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaSection {
    cert: String,
    key: String,
}

impl std::fmt::Debug for CaSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaSection(<certificate and key>)")
    }
}

/// How this machine enters the store cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// The designated founder: found a new cluster, unless one of `peers`
    /// already answers (then this is a restart of the founder with an empty
    /// disk, and it must join instead or the cluster would split in two).
    Found { peers: Vec<SocketAddr> },
    /// Join through whichever of `peers` (peer endpoints) answers.
    Join { peers: Vec<SocketAddr> },
}

/// Everything the agent needs from its cloud-config, typed.
#[derive(Debug, Clone)]
pub struct AgentBootstrap {
    pub name: String,
    pub token: String,
    pub advertise: IpAddr,
    pub listen_client: SocketAddr,
    pub listen_peer: SocketAddr,
    pub membership: Membership,
    pub roles: Vec<Role>,
    pub install_disk: Option<PathBuf>,
    /// The cluster CA (certificate and key) for the founding machine.
    pub ca: Option<herd_pki::ClusterCa>,
    pub insecure_plaintext: bool,
    /// Raft timing, when the cloud-config sets it.
    pub timing: Option<crate::timing::RaftTiming>,
    /// `herd.network`: run the cluster network role.
    pub network: Option<NetworkBootstrap>,
    pub agent_api_port: u16,
    pub metadata: std::collections::BTreeMap<String, String>,
    /// OS updates; `None`: the update role only runs the health gate.
    pub update: Option<herd_update::UpdateSettings>,
    /// Where the Kubernetes API listens.
    pub listen_api: SocketAddr,
    /// The bearer token the Kubernetes API requires, if any.
    pub api_token: Option<String>,
    /// `herd.kubelet`.
    pub kubelet: KubeletSection,
}

/// A hostname the way DNS and the store's member names accept it.
fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Parses a cloud-config document. Errors name the field path (`herd.roles[1]`).
pub fn parse(yaml: &str) -> Result<AgentBootstrap, CloudConfigError> {
    let doc: Document = serde_saphyr::with_deserializer_from_str(yaml, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            <serde_saphyr::Error as serde::de::Error>::custom(format!("at {path}: {inner}"))
        })
    })
    .map_err(|e| CloudConfigError::Parse(e.to_string()))?;
    let herd = doc.herd;
    if !valid_hostname(&doc.hostname) {
        return Err(CloudConfigError::Invalid {
            field: "hostname",
            reason: format!(
                "{:?} is not a lowercase DNS label (a-z, 0-9, -; at most 63)",
                doc.hostname
            ),
        });
    }
    if herd.token.trim().is_empty() {
        return Err(CloudConfigError::Invalid {
            field: "herd.token",
            reason: "empty: the machine could not prove it may join".into(),
        });
    }
    if herd.roles.is_empty() {
        return Err(CloudConfigError::Invalid {
            field: "herd.roles",
            reason: "empty: give at least one of store, worker".into(),
        });
    }
    let defaults = crate::timing::RaftTiming::default();
    let timing = match (herd.heartbeat_interval_ms, herd.election_timeout_ms) {
        (None, None) => None,
        (heartbeat, election) => Some(
            crate::timing::RaftTiming::new(
                heartbeat.unwrap_or(defaults.heartbeat_ms),
                election.unwrap_or(defaults.election_ms),
            )
            .map_err(|e| CloudConfigError::Invalid {
                field: "herd.election_timeout_ms",
                reason: e.to_string(),
            })?,
        ),
    };
    let network = herd.network.map(network_bootstrap).transpose()?;
    for (k, v) in &herd.metadata {
        check_label(k, v).map_err(|reason| CloudConfigError::Invalid {
            field: "herd.metadata",
            reason,
        })?;
    }
    if let Some(u) = &herd.update {
        u.validate().map_err(|reason| CloudConfigError::Invalid {
            field: "herd.update",
            reason,
        })?;
    }
    let client_port = herd.client_port.unwrap_or(CLIENT_PORT);
    let peer_port = herd.peer_port.unwrap_or(PEER_PORT);
    // The founder first: it is the most likely to be up already.
    let mut peers: Vec<SocketAddr> = Vec::new();
    for ip in std::iter::once(&herd.bootstrap).chain(&herd.peers) {
        let addr = SocketAddr::new(*ip, peer_port);
        if *ip != herd.advertise && !peers.contains(&addr) {
            peers.push(addr);
        }
    }
    let membership = if herd.bootstrap == herd.advertise {
        Membership::Found { peers }
    } else {
        Membership::Join { peers }
    };
    Ok(AgentBootstrap {
        name: doc.hostname,
        token: herd.token,
        advertise: herd.advertise,
        listen_client: SocketAddr::new(herd.advertise, client_port),
        listen_peer: SocketAddr::new(herd.advertise, peer_port),
        membership,
        roles: herd.roles,
        install_disk: herd.install_disk,
        ca: herd.ca.map(|c| herd_pki::ClusterCa {
            pair: herd_pki::CertKey {
                cert_pem: c.cert,
                key_pem: c.key,
            },
        }),
        insecure_plaintext: herd.insecure_plaintext,
        timing,
        network,
        agent_api_port: herd.agent_api_port.unwrap_or(AGENT_API_PORT),
        metadata: herd.metadata,
        update: herd.update,
        listen_api: SocketAddr::new(
            herd.advertise,
            herd.api_port.unwrap_or(herd_pods::role::API_PORT),
        ),
        api_token: herd.api_token.filter(|t| !t.trim().is_empty()),
        kubelet: herd.kubelet,
    })
}

fn network_bootstrap(n: NetworkSection) -> Result<NetworkBootstrap, CloudConfigError> {
    use herd_net::config::{Backend, BackendKind, DEFAULT_VNI, DEFAULT_VXLAN_PORT, NetworkConfig};
    let defaults = NetworkConfig::default();
    let backend = match n.backend.unwrap_or(BackendKind::HostGw) {
        BackendKind::HostGw => {
            if n.vni.is_some() || n.port.is_some() {
                return Err(CloudConfigError::Invalid {
                    field: "herd.network.vni",
                    reason: "vni and port are for the vxlan backend".into(),
                });
            }
            Backend::HostGw
        }
        BackendKind::Vxlan => Backend::Vxlan {
            vni: n.vni.unwrap_or(DEFAULT_VNI),
            port: n.port.unwrap_or(DEFAULT_VXLAN_PORT),
        },
    };
    let config = NetworkConfig {
        network: n.network.unwrap_or(defaults.network),
        subnet_len: n.subnet_len.unwrap_or(defaults.subnet_len),
        subnet_min: n.subnet_min,
        subnet_max: n.subnet_max,
        backend,
    };
    config.validate().map_err(|e| CloudConfigError::Invalid {
        field: "herd.network",
        reason: e.to_string(),
    })?;
    Ok(NetworkBootstrap {
        config,
        cluster_iface: n.cluster_iface,
        public_ip: n.public_ip,
    })
}

/// Fetches the cloud-config at `url` (`http://…` or a file path) once.
pub async fn fetch(url: &str, timeout: Duration) -> Result<String, CloudConfigError> {
    if !url.contains("://") {
        return tokio::fs::read_to_string(url)
            .await
            .map_err(|source| CloudConfigError::Read {
                path: url.to_owned(),
                source,
            });
    }
    // Cloud-configs are small; a server sending more is misbehaving.
    let body = herd_http::Client::new()
        .with_timeout(timeout)
        .with_max_body(1 << 20)
        .get(url)
        .await?;
    String::from_utf8(body.to_vec()).map_err(|_| CloudConfigError::NotText(url.to_owned()))
}

/// Fetches and parses the cloud-config, retrying fetch failures (the
/// network may still be coming up) until `deadline` passes. Parse errors
/// are not retried: the same document would fail again.
pub async fn load(url: &str, deadline: Duration) -> Result<AgentBootstrap, CloudConfigError> {
    let end = tokio::time::Instant::now() + deadline;
    let mut wait = Duration::from_millis(250);
    loop {
        match fetch(url, Duration::from_secs(5)).await {
            Ok(text) => return parse(&text),
            Err(e @ CloudConfigError::Fetch(herd_http::Error::Url { .. })) => return Err(e),
            Err(e) if tokio::time::Instant::now() + wait >= end => return Err(e),
            Err(e) => {
                tracing::info!(error = %e, "cloud-config not available yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(3));
            }
        }
    }
}

/// Whether something accepts TCP connections at `addr` within `timeout`.
async fn answers(addr: SocketAddr, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// The decision `Membership` leads to at this moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Found a new single-member cluster.
    Found,
    /// Join through the member at this peer endpoint.
    Join(SocketAddr),
}

impl Membership {
    /// Decides how to enter the cluster: a founder probes the peers once and
    /// founds only if none answers; a joiner waits (forever, logging) until
    /// one answers, as a racked machine may boot before its peers.
    pub async fn resolve(&self, probe_timeout: Duration) -> Entry {
        let peers = match self {
            Membership::Found { peers } | Membership::Join { peers } => peers,
        };
        loop {
            let probes = peers
                .iter()
                .map(|p| async move { (*p, answers(*p, probe_timeout).await) });
            let results = futures::future::join_all(probes).await;
            if let Some((peer, _)) = results.into_iter().find(|(_, ok)| *ok) {
                return Entry::Join(peer);
            }
            if matches!(self, Membership::Found { .. }) {
                return Entry::Found;
            }
            tracing::info!(?peers, "no cluster peer answers yet; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests;
