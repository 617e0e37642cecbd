//! The agent's HTTP API: roles mount their routes on it (the units role
//! serves unit status and journals, the kubelet its `logs` and `exec`
//! endpoints); the machine advertises its address in its record. Over TLS
//! (the default) it admits only the cluster's members and root, by their
//! certificates: it runs commands in the machine's pods.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use herd_http::server::Peer;
use herd_pki::Identity;
use tokio_util::sync::CancellationToken;

/// Serves `routes` (plus `/healthz`) on `listener` until `cancel` fires:
/// over TLS with `tls` (client certificates required), or plain HTTP.
pub async fn serve(
    listener: tokio::net::TcpListener,
    routes: Router,
    tls: Option<Arc<herd_pki::tls::ServerConfig>>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = routes.route("/healthz", get(|| async { "ok\n" }));
    match tls {
        Some(config) => {
            let app = app.layer(axum::middleware::from_fn(admit));
            herd_http::server::serve_tls(listener, config, "agent-api", app, cancel).await;
            Ok(())
        }
        None => {
            tracing::warn!(
                addr = %listener.local_addr()?,
                "INSECURE: the agent API serves plain HTTP to anyone, exec in pods included"
            );
            axum::serve(listener, app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await
        }
    }
}

/// Members (the API servers proxying `logs` and `exec`) and root (the
/// `herd units` commands of an operator) get in; other users of the
/// store do not.
async fn admit(req: Request, next: Next) -> Response {
    match req.extensions().get::<Peer>().and_then(|p| p.0.as_ref()) {
        Some(Identity::Member(_)) => next.run(req).await,
        Some(Identity::User(user)) if user == "root" => next.run(req).await,
        who => {
            let who = match who {
                Some(id) => format!("{:?}", id.common_name()),
                None => "a caller without a certificate".to_owned(),
            };
            tracing::info!(path = req.uri().path(), caller = %who, "agent API request refused");
            (
                StatusCode::FORBIDDEN,
                format!("the agent API admits the cluster's members and root, not {who}\n"),
            )
                .into_response()
        }
    }
}
