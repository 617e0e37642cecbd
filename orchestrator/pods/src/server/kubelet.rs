//! Reaching the kubelet of a pod's node, for the calls the API server
//! proxies there (`pods/{name}/log`, `pods/{name}/exec`): the pod, its
//! node, the node's InternalIP and `daemonEndpoints.kubeletEndpoint.Port`,
//! the container a call means, and the connection — TLS as this member,
//! which the node's agent API admits, checked against the cluster CA for
//! the node's address.

use std::sync::Arc;
use std::time::Duration;

use herd_http::Io;
use tokio::net::TcpStream;

use crate::api::{ApiError, Node, Pod};
use crate::registry::Registry;

/// How long connecting to a kubelet may take.
pub const CONNECT: Duration = Duration::from_secs(10);

/// How the API server reaches kubelets.
#[derive(Debug, Clone, Default)]
pub struct KubeletClient {
    /// This member's TLS client configuration; `None` only under
    /// `--insecure-plaintext`, whose agent APIs are plain HTTP.
    pub tls: Option<Arc<herd_pki::tls::ClientConfig>>,
}

impl KubeletClient {
    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// An HTTP client for kubelet URLs.
    pub fn http(&self) -> herd_http::Client {
        let http = herd_http::Client::new().with_timeout(CONNECT);
        match &self.tls {
            Some(config) => http.with_tls(Arc::clone(config)),
            None => http,
        }
    }

    /// A connection to `addr` (`host:port`, from [`kubelet_addr`]), TLS
    /// checked for `host`, bounded by [`CONNECT`].
    pub async fn connect(&self, addr: &str, host: &str) -> Result<Box<dyn Io>, String> {
        let open = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connecting to {addr}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let Some(config) = &self.tls else {
                return Ok(Box::new(tcp) as Box<dyn Io>);
            };
            let name = herd_pki::tls::server_name(host).map_err(|e| e.to_string())?;
            let tls = tokio_rustls::TlsConnector::from(Arc::clone(config))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {addr}: {e}"))?;
            Ok(Box::new(tls) as Box<dyn Io>)
        };
        tokio::time::timeout(CONNECT, open)
            .await
            .map_err(|_| format!("connecting to {addr} timed out"))?
    }
}

/// `host:port` of `node`'s kubelet endpoint.
pub fn kubelet_addr(node: &Node) -> Result<String, ApiError> {
    let unavailable = |why: &str| {
        ApiError::new(
            502,
            "BadGateway",
            format!("node {:?} {why}", node.metadata.name),
        )
    };
    let ip = node
        .internal_ip()
        .ok_or_else(|| unavailable("reports no InternalIP address"))?;
    let port = node
        .kubelet_port()
        .ok_or_else(|| unavailable("reports no kubelet endpoint (daemonEndpoints)"))?;
    Ok(if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    })
}

/// The pod `namespace/name` and the node it is bound to.
pub async fn pod_and_node(
    registry: &Registry,
    namespace: &str,
    name: &str,
) -> Result<(Pod, Node), ApiError> {
    let pod: Pod = registry.get(namespace, name).await?;
    if pod.spec.node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} is not yet scheduled to a node"
        )));
    }
    let node: Node = registry.get("", &pod.spec.node_name).await.map_err(|e| {
        if e.is_not_found() {
            ApiError::new(
                502,
                "BadGateway",
                format!("node {:?} of pod {name} is gone", pod.spec.node_name),
            )
        } else {
            e
        }
    })?;
    Ok((pod, node))
}

/// The container a call means: the named one, or the only one.
pub fn container_of<'a>(pod: &'a Pod, asked: Option<&'a str>) -> Result<&'a str, ApiError> {
    let names: Vec<&str> = pod
        .spec
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    match asked {
        Some(c) if names.contains(&c) => Ok(c),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {}",
            pod.metadata.name
        ))),
        None if names.len() == 1 => Ok(names[0]),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {}, choose one of: [{}]",
            pod.metadata.name,
            names.join(" ")
        ))),
    }
}
