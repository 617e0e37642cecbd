//! The Kubernetes API server every agent runs: HTTP/1.1 over TLS with the
//! member's certificate on a listener it is handed (plain HTTP only under
//! `--insecure-plaintext`), callers proven by client certificate or bearer
//! token ([`auth`]), and every request answered for the whole cluster from
//! the store.

mod auth;
pub mod discovery;
mod kubelet;
pub mod openapi;
mod openapi_pb;
mod pod_exec;
mod pod_log;
mod resources;
pub mod respond;
pub mod route;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::Auth;
pub use kubelet::KubeletClient;

use crate::api::{
    ApiError, Deployment, Endpoints, Event, Namespace, Node, Pod, ReplicaSet,
    ReplicationController, Service,
};
use crate::registry::Registry;
use resources::Call;
use respond::Accept;
use route::Route;

/// Largest request body accepted (Kubernetes' limit is 3 MiB; objects
/// are further limited by [`crate::api::ApiConfig::max_object_bytes`]).
pub const MAX_BODY: usize = 3 << 20;

/// What the server needs.
#[derive(Clone)]
pub struct ApiServer {
    pub registry: Registry,
    pub auth: Auth,
    /// How `logs` and `exec` reach the pod's kubelet.
    pub kubelet: KubeletClient,
    /// herd's version, for `/version`.
    pub version: String,
    /// Stops watches when the server stops.
    pub shutdown: CancellationToken,
}

/// The router of the API.
pub fn router(server: ApiServer) -> Router {
    let server = Arc::new(server);
    Router::new()
        .fallback(handle)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&server),
            auth::require,
        ))
        .with_state(server)
}

/// Serves the API on `listener` until `server.shutdown` fires: over TLS
/// with `tls` (its client certificates checked against the cluster CA and
/// handed to [`auth`]), or plain HTTP without.
pub async fn serve(
    listener: TcpListener,
    server: ApiServer,
    tls: Option<Arc<herd_pki::tls::ServerConfig>>,
) -> std::io::Result<()> {
    let shutdown = server.shutdown.clone();
    let addr = listener.local_addr()?;
    let router = router(server);
    match tls {
        Some(config) => {
            tracing::info!(%addr, "Kubernetes API serving (TLS)");
            herd_http::server::serve_tls(listener, config, "kubernetes-api", router, shutdown)
                .await;
            Ok(())
        }
        None => {
            tracing::warn!(
                %addr,
                "INSECURE: the Kubernetes API serves plain HTTP; anyone who reaches it reads its traffic"
            );
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
    }
}

fn query_of(req: &Request) -> HashMap<String, String> {
    req.uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    let decode = |s: &str| {
                        percent_encoding::percent_decode_str(&s.replace('+', " "))
                            .decode_utf8_lossy()
                            .into_owned()
                    };
                    (decode(k), decode(v))
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn handle(State(server): State<Arc<ApiServer>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = std::time::Instant::now();
    let response = match answer(&server, req).await {
        Ok(r) => r,
        Err(e) => respond::error(&e),
    };
    tracing::debug!(%method, %path, status = response.status().as_u16(), elapsed = ?started.elapsed(), "API request");
    response
}

async fn answer(server: &ApiServer, req: Request) -> Result<Response, ApiError> {
    let accept = Accept::of(req.headers());
    let route = route::parse(req.uri().path());
    let get_only = |method: &Method| {
        if method != Method::GET && method != Method::HEAD {
            Err(ApiError::method_not_allowed(format!(
                "{method} is not supported here"
            )))
        } else {
            Ok(())
        }
    };
    let ok = |v: serde_json::Value| Ok(respond::json(StatusCode::OK, &v));
    match route {
        Route::Health => Ok(respond::raw(StatusCode::OK, "text/plain", b"ok".to_vec())),
        Route::Version => ok(discovery::version(&server.version)),
        Route::CoreVersions => {
            get_only(req.method())?;
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            ok(discovery::core_versions(&host))
        }
        Route::Groups => ok(discovery::groups()),
        Route::Group(g) => ok(discovery::group(&g)),
        Route::Resources { group, version } => ok(discovery::resources(&group, &version)),
        Route::OpenApiV2 if accept.protobuf => Ok(respond::raw(
            StatusCode::OK,
            "application/octet-stream",
            openapi::v2_protobuf().to_vec(),
        )),
        Route::OpenApiV2 => ok(openapi::v2().clone()),
        Route::OpenApiV3 => ok(openapi::v3_index()),
        Route::OpenApiV3Doc { group, version } => ok(openapi::v3(&group, &version)),
        Route::NotFound => Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )),
        Route::Resource(target)
            if target.kind.kind == "Pod" && target.sub.as_deref() == Some("exec") =>
        {
            let shutdown = server.shutdown.clone();
            pod_exec::exec(&server.registry, &server.kubelet, target, req, shutdown).await
        }
        Route::Resource(target) => {
            let query = query_of(&req);
            let method = req.method().clone();
            let content_type = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("application/json")
                .to_owned();
            let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
                .await
                .map_err(|_| ApiError::too_large(MAX_BODY))?;
            let call = Call {
                method,
                target,
                query,
                content_type,
                accept,
                body,
                shutdown: server.shutdown.clone(),
            };
            dispatch(server, call).await
        }
    }
}

/// Sends `call` to the handler of its kind.
async fn dispatch(server: &ApiServer, call: Call) -> Result<Response, ApiError> {
    use resources::{handle, scale};
    let registry = &server.registry;
    let scale_call = call.target.sub.as_deref() == Some("scale");
    match call.target.kind.kind {
        "Pod" if call.target.sub.as_deref() == Some("log") => {
            pod_log::logs(registry, &server.kubelet, call).await
        }
        "Pod" => handle::<Pod>(registry, call).await,
        "ReplicationController" if scale_call => {
            scale::<ReplicationController>(registry, call).await
        }
        "ReplicationController" => handle::<ReplicationController>(registry, call).await,
        "ReplicaSet" if scale_call => scale::<ReplicaSet>(registry, call).await,
        "ReplicaSet" => handle::<ReplicaSet>(registry, call).await,
        "Deployment" if scale_call => scale::<Deployment>(registry, call).await,
        "Deployment" => handle::<Deployment>(registry, call).await,
        "Service" => handle::<Service>(registry, call).await,
        "Endpoints" => handle::<Endpoints>(registry, call).await,
        "Namespace" => handle::<Namespace>(registry, call).await,
        "Node" => handle::<Node>(registry, call).await,
        "Event" => handle::<Event>(registry, call).await,
        other => Err(ApiError::internal(format!("no handler for kind {other}"))),
    }
}
