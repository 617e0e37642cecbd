//! Serving over TLS: herd's HTTP APIs (the Kubernetes API, the agent API)
//! take connections from [`herd_pki::tls::accept`] (handshakes bounded,
//! refusals logged) and hand every request of a connection the identity
//! its client certificate proved, as a [`Peer`] extension, for the
//! service's own authorization to judge.

use std::convert::Infallible;
use std::sync::Arc;

use herd_pki::Identity;
use herd_pki::tls::{Current, ServerConfig};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What a connection's TLS client certificate proved (`None`: it showed
/// none); attached to every request of the connection.
#[derive(Debug, Clone)]
pub struct Peer(pub Option<Identity>);

/// Serves `service` over TLS with `config` on `listener` (`what` names
/// the server in log lines), one task per connection, upgrades allowed
/// (exec). When `shutdown` fires, each connection finishes the request
/// in flight, and this returns once all are closed.
pub async fn serve_tls<S, B>(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    what: &'static str,
    service: S,
    shutdown: CancellationToken,
) where
    S: tower_service::Service<
            hyper::Request<Incoming>,
            Response = hyper::Response<B>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let config = Arc::new(Current::new(config));
    let mut accepted = herd_pki::tls::accept(listener, config, what);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let conn = tokio::select! {
            c = accepted.recv() => match c {
                Some(c) => c,
                None => break,
            },
            () = shutdown.cancelled() => break,
        };
        while connections.try_join_next().is_some() {}
        let (peer, remote, service) = (Peer(conn.peer), conn.remote, service.clone());
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let each = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(peer.clone());
                service.clone().call(req)
            });
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(conn.stream), each)
                .with_upgrades();
            tokio::pin!(served);
            let ended = tokio::select! {
                r = served.as_mut() => r,
                () = shutdown.cancelled() => {
                    served.as_mut().graceful_shutdown();
                    served.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(server = what, %remote, error = %e, "connection ended with an error");
            }
        });
    }
    while connections.join_next().await.is_some() {}
}
