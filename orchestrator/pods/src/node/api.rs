//! The kubelet's routes on the agent API — `containerLogs`
//! ([`super::logs`]) and `exec` ([`super::exec`]) — with the state and the
//! error replies they share. The API server's `pods/{name}/log` and
//! `pods/{name}/exec` proxy here, to the node the pod runs on.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::DockerSlot;
use super::docker::{Container, Docker, label};
use super::{exec, logs};

/// What every kubelet handler needs: this node's Docker and its name.
#[derive(Clone)]
pub(crate) struct KubeletApi {
    docker: Arc<DockerSlot>,
    pub node: String,
}

/// The routes the agent API serves for the kubelet.
pub fn routes(docker: Arc<DockerSlot>, node: &str) -> Router {
    Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(logs::container_logs),
        )
        .route("/exec/{namespace}/{pod}/{container}", get(exec::exec))
        .with_state(KubeletApi {
            docker,
            node: node.to_owned(),
        })
}

/// A plain-text error reply, which kubectl prints as it is.
pub(crate) fn plain(status: StatusCode, text: String) -> Response {
    (status, text).into_response()
}

impl KubeletApi {
    /// Every container named `container` of pod `namespace/pod` on this
    /// node, oldest first (restarts leave earlier runs behind), with the
    /// Docker they run on; an error reply when Docker is down or fails.
    pub(crate) async fn runs(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<(Docker, Vec<Container>), Response> {
        let Some(docker) = self.docker.get() else {
            return Err(plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the container runtime of node {} is down", self.node),
            ));
        };
        let found = docker
            .list(label::POD_NAME, pod)
            .await
            .map_err(|e| plain(StatusCode::BAD_GATEWAY, e.message()))?;
        let mut runs: Vec<_> = found
            .into_iter()
            .filter(|c| c.namespace == namespace && c.name == container)
            .collect();
        runs.sort_by(|a, b| a.created.cmp(&b.created));
        Ok((docker, runs))
    }
}
