//! The kubelet's logs endpoint on the agent API:
//! `GET /containerLogs/{namespace}/{pod}/{container}?follow=&tailLines=&timestamps=&previous=`
//! (the path Kubernetes' kubelet serves), streaming what Docker kept of
//! the container's output. The API server's `pods/{name}/log` proxies
//! here, to the node the pod runs on.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;

use super::DockerSlot;
use super::docker::label;

/// The query of a logs request (Kubernetes' names).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogQuery {
    #[serde(default)]
    pub follow: Option<String>,
    #[serde(default)]
    pub tail_lines: Option<u64>,
    #[serde(default)]
    pub timestamps: Option<String>,
    #[serde(default)]
    pub previous: Option<String>,
}

fn flag(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|v| v == "true" || v == "1")
}

#[derive(Clone)]
struct LogState {
    docker: Arc<DockerSlot>,
    node: String,
}

/// The routes the agent API serves for the kubelet.
pub fn routes(docker: Arc<DockerSlot>, node: &str) -> Router {
    Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            axum::routing::get(container_logs),
        )
        .with_state(LogState {
            docker,
            node: node.to_owned(),
        })
}

fn plain(status: StatusCode, text: String) -> Response {
    (status, text).into_response()
}

async fn container_logs(
    State(s): State<LogState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    let Some(docker) = s.docker.get() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the container runtime of node {} is down", s.node),
        );
    };
    let found = match docker.list(label::POD_NAME, &pod).await {
        Ok(found) => found,
        Err(e) => return plain(StatusCode::BAD_GATEWAY, e.message()),
    };
    let mut runs: Vec<_> = found
        .into_iter()
        .filter(|c| c.namespace == namespace && c.name == container)
        .collect();
    runs.sort_by(|a, b| a.created.cmp(&b.created));
    let pick = if flag(&q.previous) {
        runs.len().checked_sub(2).map(|i| &runs[i])
    } else {
        runs.last()
    };
    let Some(c) = pick else {
        let what = if flag(&q.previous) {
            "previous terminated container"
        } else {
            "container"
        };
        return plain(
            StatusCode::NOT_FOUND,
            format!(
                "{what} {container:?} in pod {pod:?} not found on node {}",
                s.node
            ),
        );
    };
    let stream = docker
        .logs(&c.id, flag(&q.follow), q.tail_lines, flag(&q.timestamps))
        .map(|chunk| chunk.map_err(std::io::Error::other));
    Response::builder()
        .header("content-type", "text/plain")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}
