//! `GET /api/v1/namespaces/{ns}/pods/{name}/log`: the API server finds
//! the pod's node and proxies to that node's kubelet endpoint (its
//! InternalIP and `daemonEndpoints.kubeletEndpoint.Port`), streaming the
//! output back — `kubectl logs [-f]` from anywhere reaches the container
//! on whichever machine it runs.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use tokio_util::io::ReaderStream;

use super::kubelet::{KubeletClient, container_of, kubelet_addr, pod_and_node};
use super::resources::Call;
use crate::api::{ApiError, Node, Pod};
use crate::registry::Registry;

/// How long the proxy waits for the first bytes (or the kubelet's error)
/// before it answers and keeps streaming whatever comes.
const FIRST_BYTES: Duration = Duration::from_secs(2);

/// The kubelet's URL for `container` of `pod`, with the log options.
pub fn kubelet_url(
    scheme: &str,
    node: &Node,
    pod: &Pod,
    container: &str,
    query: &HashMap<String, String>,
) -> Result<String, ApiError> {
    let mut url = format!(
        "{scheme}://{}/containerLogs/{}/{}/{container}",
        kubelet_addr(node)?,
        pod.metadata.namespace,
        pod.metadata.name
    );
    let pass: Vec<String> = ["follow", "tailLines", "timestamps", "previous"]
        .iter()
        .filter_map(|k| query.get(*k).map(|v| format!("{k}={v}")))
        .collect();
    if !pass.is_empty() {
        url.push('?');
        url.push_str(&pass.join("&"));
    }
    Ok(url)
}

/// Answers a `pods/{name}/log` call.
pub async fn logs(
    registry: &Registry,
    kubelet: &KubeletClient,
    call: Call,
) -> Result<Response, ApiError> {
    let namespace = call.target.namespace.clone().unwrap_or_default();
    let name = call.target.name.clone().unwrap_or_default();
    let (pod, node) = pod_and_node(registry, &namespace, &name).await?;
    let container = container_of(&pod, call.query.get("container").map(String::as_str))?;
    let url = kubelet_url(kubelet.scheme(), &node, &pod, container, &call.query)?;
    let http = kubelet.http();
    let (mut writer, reader) = tokio::io::duplex(64 * 1024);
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Result<(), herd_http::Error>>();
    let shutdown = call.shutdown.clone();
    tokio::spawn(async move {
        let mut first = Some(first_tx);
        let copy = http.download(&url, 0, &mut writer, |_| {
            if let Some(tx) = first.take() {
                let _ = tx.send(Ok(()));
            }
        });
        // Ends with the kubelet's stream, the client's going away (the
        // pipe's reader dropped) or the server's stop.
        let result = tokio::select! {
            r = copy => r.map(drop),
            _ = shutdown.cancelled() => Ok(()),
        };
        if let Some(tx) = first.take() {
            let _ = tx.send(result);
        }
    });
    match tokio::time::timeout(FIRST_BYTES, first_rx).await {
        Ok(Ok(Err(herd_http::Error::Status { status, body, .. }))) => {
            let code = status.as_u16();
            return Err(ApiError::new(
                if code == 404 { 404 } else { 502 },
                if code == 404 {
                    "NotFound"
                } else {
                    "BadGateway"
                },
                body,
            ));
        }
        Ok(Ok(Err(e))) => {
            return Err(ApiError::new(
                502,
                "BadGateway",
                format!(
                    "the kubelet of node {} did not answer: {e}",
                    node.metadata.name
                ),
            ));
        }
        _ => {}
    }
    let mut r = Response::new(Body::from_stream(ReaderStream::new(reader)));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::cluster::{DaemonEndpoint, NodeAddress, NodeDaemonEndpoints, NodeStatus};

    fn pod(containers: &[&str]) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = "web".into();
        p.metadata.namespace = "default".into();
        p.spec.containers = containers
            .iter()
            .map(|n| crate::api::pod::Container {
                name: (*n).into(),
                ..Default::default()
            })
            .collect();
        p
    }

    #[test]
    fn the_only_container_is_implied() {
        assert_eq!(container_of(&pod(&["app"]), None).unwrap(), "app");
        let two = pod(&["a", "b"]);
        let e = container_of(&two, None).unwrap_err();
        assert!(e.message.contains("choose one of: [a b]"), "{}", e.message);
        assert!(container_of(&two, Some("c")).is_err());
    }

    #[test]
    fn the_kubelet_is_found_by_the_nodes_address_and_endpoint() {
        let mut node = Node::default();
        node.metadata.name = "m1".into();
        let query = HashMap::from([("follow".to_owned(), "true".to_owned())]);
        assert!(kubelet_url("http", &node, &pod(&["app"]), "app", &query).is_err());
        node.status = Some(NodeStatus {
            addresses: vec![NodeAddress {
                kind: "InternalIP".into(),
                address: "10.1.0.5".into(),
            }],
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint { port: 2381 }),
            }),
            ..Default::default()
        });
        assert_eq!(
            kubelet_url("https", &node, &pod(&["app"]), "app", &query).unwrap(),
            "https://10.1.0.5:2381/containerLogs/default/web/app?follow=true"
        );
    }
}
