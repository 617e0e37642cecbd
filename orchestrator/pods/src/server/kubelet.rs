//! Reaching the kubelet of a pod's node, for the calls the API server
//! proxies there (`pods/{name}/log`, `pods/{name}/exec`): the pod, its
//! node, the node's InternalIP and `daemonEndpoints.kubeletEndpoint.Port`,
//! and the container a call means.

use std::time::Duration;

use crate::api::{ApiError, Node, Pod};
use crate::registry::Registry;

/// How long connecting to a kubelet may take.
pub const CONNECT: Duration = Duration::from_secs(10);

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
