//! The kubelet's logs endpoint on the agent API:
//! `GET /containerLogs/{namespace}/{pod}/{container}?follow=&tailLines=&timestamps=&previous=`
//! (the path Kubernetes' kubelet serves), streaming what Docker kept of
//! the container's output, for the API server's `pods/{name}/log`
//! ([`super::api`]).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures::StreamExt;
use serde::Deserialize;

use super::api::{KubeletApi, plain};

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

pub(crate) async fn container_logs(
    State(s): State<KubeletApi>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    let (docker, runs) = match s.runs(&namespace, &pod, &container).await {
        Ok(found) => found,
        Err(reply) => return reply,
    };
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
