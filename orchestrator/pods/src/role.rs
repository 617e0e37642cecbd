//! The pods role of the agent: the Kubernetes API server on the listener
//! the agent hands it, the namespaces every cluster has, and the
//! controllers — each campaigning for its own election, so each runs once
//! per cluster whichever agents are up.

use std::net::SocketAddr;
use std::time::Duration;

use herd_client::Client;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::ApiConfig;
use crate::registry::Registry;
use crate::server::{ApiServer, Auth};

/// The API's port when only a host is given.
pub const API_PORT: u16 = 6443;

/// The pods role's settings, however the agent got them.
#[derive(Debug, Clone)]
pub struct PodsConfig {
    pub listen_api: SocketAddr,
    /// Bearer token API callers may present instead of a certificate
    /// (over plaintext, without TLS: the only guard; none: open).
    pub token: Option<String>,
    /// The API's TLS (the member's certificate; clients checked against
    /// the cluster CA); `None` only under `--insecure-plaintext`.
    pub tls: Option<std::sync::Arc<herd_pki::tls::ServerConfig>>,
    /// How the API server reaches kubelets (as this member, over TLS).
    pub kubelet: crate::server::KubeletClient,
    pub api: ApiConfig,
    /// How long a node may be NotReady before its pods are evicted.
    pub eviction_timeout: Duration,
    /// This agent's name in controller elections.
    pub candidate: String,
    /// herd's version, for `/version`.
    pub version: String,
}

/// `--listen-api` and the other flags of the pods role.
#[derive(Debug, Clone, clap::Args)]
pub struct PodsArgs {
    /// Serve the Kubernetes API on HOST[:PORT] (port 6443 if left out)
    /// and run the pod controllers. Netbooted machines serve it on their
    /// advertised address by default.
    #[arg(long, value_name = "HOST[:PORT]", value_parser = parse_listen)]
    pub listen_api: Option<SocketAddr>,
    /// File holding a bearer token API callers may present instead of a
    /// client certificate (with `--insecure-plaintext`: must present).
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<std::path::PathBuf>,
    /// The range cluster IPs of services come from.
    #[arg(long, value_name = "CIDR", default_value = "10.0.0.0/16", value_parser = parse_cidr)]
    pub service_cluster_ip_range: (std::net::Ipv4Addr, u8),
    /// Seconds a node may stay NotReady before its pods are evicted.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub pod_eviction_timeout: u64,
}

/// `HOST` or `HOST:PORT`.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, API_PORT))
        .map_err(|_| format!("{s:?} is not HOST or HOST:PORT (an IP address)"))
}

/// `A.B.C.D/N`.
pub fn parse_cidr(s: &str) -> Result<(std::net::Ipv4Addr, u8), String> {
    let (ip, bits) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not A.B.C.D/N"))?;
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| format!("{s:?}: bad address"))?;
    let bits: u8 = bits
        .parse()
        .map_err(|_| format!("{s:?}: bad prefix length"))?;
    if !(8..=30).contains(&bits) {
        return Err(format!("{s:?}: the prefix length must be between 8 and 30"));
    }
    Ok((ip, bits))
}

/// Why the role stopped.
#[derive(Debug, thiserror::Error)]
pub enum PodsError {
    #[error("serving the Kubernetes API: {0}")]
    Serve(#[source] std::io::Error),
}

/// Runs the API server on `listener` and the controllers until `cancel`.
pub async fn run(
    client: Client,
    listener: TcpListener,
    config: PodsConfig,
    cancel: CancellationToken,
) -> Result<(), PodsError> {
    let registry = Registry::new(client.clone(), config.api.clone());
    let mut tasks = JoinSet::new();
    {
        let registry = registry.clone();
        let cancel = cancel.clone();
        tasks.spawn(async move {
            let mut backoff =
                herd_client::kit::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
            loop {
                match registry.ensure_namespaces().await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::debug!(error = %e, "creating the default namespaces; retrying")
                    }
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        });
    }
    crate::controllers::spawn_all(&mut tasks, &client, &registry, &config, &cancel);
    let server = ApiServer {
        registry,
        auth: match (&config.tls, config.token.as_deref()) {
            (Some(_), token) => Auth::certificates(token),
            (None, Some(token)) => Auth::bearer(token),
            (None, None) => Auth::open(),
        },
        kubelet: config.kubelet.clone(),
        version: config.version.clone(),
        shutdown: cancel.clone(),
    };
    let served = crate::server::serve(listener, server, config.tls.clone()).await;
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
    served.map_err(PodsError::Serve)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_default_the_port() {
        assert_eq!(parse_listen("10.0.0.1").unwrap().port(), 6443);
        assert_eq!(parse_listen("10.0.0.1:8080").unwrap().port(), 8080);
        assert!(parse_listen("example.org").is_err());
        assert_eq!(parse_cidr("10.0.0.0/16").unwrap().1, 16);
        assert!(parse_cidr("10.0.0.0/33").is_err());
    }
}
