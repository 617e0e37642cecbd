//! A machine's cloud-config: fetched from the provisioning server (URL from
//! the kernel command line `herd.config=`), parsed strictly (unknown fields
//! are errors that name their path), and turned into the typed settings the
//! agent starts with.
//!
//! ```yaml
//! hostname: m2
//! herd:
//!   token: 4f1c…            # the cluster's join token
//!   advertise: 10.77.0.12    # this machine's address: listen + advertise
//!   bootstrap: 10.77.0.11    # the one machine that may found the cluster
//!   peers: [10.77.0.11, 10.77.0.12, 10.77.0.13]
//!   roles: [store]
//!   install_disk: /dev/vda   # optional: install to disk on first boot
//!   api_port: 6443           # optional: the Kubernetes API (default 6443)
//!   api_token: 9b2e…         # optional: bearer token the Kubernetes API requires
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
    #[serde(default)]
    client_port: Option<u16>,
    #[serde(default)]
    peer_port: Option<u16>,
    #[serde(default)]
    api_port: Option<u16>,
    #[serde(default)]
    api_token: Option<String>,
}

fn default_roles() -> Vec<Role> {
    vec![Role::Store]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentBootstrap {
    pub name: String,
    pub token: String,
    pub advertise: IpAddr,
    pub listen_client: SocketAddr,
    pub listen_peer: SocketAddr,
    pub membership: Membership,
    pub roles: Vec<Role>,
    pub install_disk: Option<PathBuf>,
    /// Where the Kubernetes API listens.
    pub listen_api: SocketAddr,
    /// The bearer token the Kubernetes API requires, if any.
    pub api_token: Option<String>,
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
        listen_api: SocketAddr::new(
            herd.advertise,
            herd.api_port.unwrap_or(herd_pods::role::API_PORT),
        ),
        api_token: herd.api_token.filter(|t| !t.trim().is_empty()),
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
mod tests {
    use super::*;

    const M2: &str = "hostname: m2\nherd:\n  token: abc123\n  advertise: 10.77.0.12\n  bootstrap: 10.77.0.11\n  peers: [10.77.0.11, 10.77.0.12, 10.77.0.13]\n  roles: [store]\n";

    #[test]
    fn a_joiner_gets_typed_settings_on_its_own_address() {
        let s = parse(M2).unwrap();
        assert_eq!(s.name, "m2");
        assert_eq!(s.token, "abc123");
        assert_eq!(s.listen_client, "10.77.0.12:2379".parse().unwrap());
        assert_eq!(s.listen_peer, "10.77.0.12:2380".parse().unwrap());
        assert_eq!(
            s.membership,
            Membership::Join {
                peers: vec![
                    "10.77.0.11:2380".parse().unwrap(),
                    "10.77.0.13:2380".parse().unwrap()
                ]
            }
        );
        assert_eq!(s.roles, vec![Role::Store]);
        assert_eq!(s.install_disk, None);
    }

    #[test]
    fn the_bootstrap_machine_founds_unless_peers_answer() {
        let yaml = M2.replace("advertise: 10.77.0.12", "advertise: 10.77.0.11");
        let s = parse(&yaml).unwrap();
        assert!(matches!(s.membership, Membership::Found { ref peers } if peers.len() == 2));
    }

    #[test]
    fn unknown_fields_and_bad_values_name_their_path() {
        let e = parse(&M2.replace("  roles:", "  rolez:"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rolez") && e.contains("herd"), "{e}");
        let e = parse(&M2.replace("[store]", "[store, pilot]"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("herd.roles[1]") && e.contains("pilot"), "{e}");
        let e = parse(&M2.replace("10.77.0.12\n", "ten\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("herd.advertise"), "{e}");
        let e = parse("hostname: m2\n").unwrap_err().to_string();
        assert!(e.contains("herd"), "{e}");
        let e = parse(&M2.replace("hostname: m2", "hostname: M_2"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("hostname"), "{e}");
        let e = parse(&M2.replace("abc123", "''")).unwrap_err().to_string();
        assert!(e.contains("herd.token"), "{e}");
        assert!(parse("{{{").is_err());
    }

    #[tokio::test]
    async fn fetch_reads_a_cloud_config_from_an_http_server() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 1024];
            let n = conn.read(&mut request).await.unwrap();
            let request = String::from_utf8_lossy(&request[..n]).into_owned();
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{M2}",
                M2.len()
            );
            conn.write_all(reply.as_bytes()).await.unwrap();
            request
        });
        let url = format!("http://{addr}/cloud-config?mac=52:54:00:77:00:02");
        let settings = load(&url, Duration::from_secs(5)).await.unwrap();
        assert_eq!(settings.name, "m2");
        let request = server.await.unwrap();
        assert!(
            request.starts_with("GET /cloud-config?mac=52:54:00:77:00:02 HTTP/1.1\r\n"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn a_founder_joins_when_a_peer_answers_and_founds_when_none_does() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let alive = listener.local_addr().unwrap();
        // A port nobody listens on: bind, note, drop.
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let found = Membership::Found { peers: vec![dead] };
        assert_eq!(
            found.resolve(Duration::from_millis(500)).await,
            Entry::Found
        );
        let found = Membership::Found {
            peers: vec![dead, alive],
        };
        assert_eq!(
            found.resolve(Duration::from_millis(500)).await,
            Entry::Join(alive)
        );
        let join = Membership::Join { peers: vec![alive] };
        assert_eq!(
            join.resolve(Duration::from_millis(500)).await,
            Entry::Join(alive)
        );
    }
}
