//! The agent's HTTP API: roles mount their routes on it (the units role
//! serves unit status and journals); the machine advertises its address
//! in its record. The server is built from a listener it is handed, so
//! TLS can be put in front without touching the routes.

use axum::Router;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

/// Serves `routes` (plus `/healthz`) on `listener` until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    routes: Router,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = routes.route("/healthz", get(|| async { "ok\n" }));
    axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
}
