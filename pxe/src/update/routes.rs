//! The update server's HTTP routes, under `/v1/update/`: the Omaha
//! endpoint machines POST to, release files (with Range, so downloads
//! resume), the status, and the admin routes (uploads, publishing,
//! policy, resume), which only the HTTPS admin listener serves
//! ([`crate::http::auth::Admin`]).

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use super::policy::PolicyPatch;
use super::publish::{FILES, PublishError};
use super::service::ServiceError;
use crate::http::AppState;

/// The largest file an upload may be.
const MAX_UPLOAD: u64 = 4 << 30;

/// A publish request: the upload to take the files from, and the group.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    pub upload: String,
    pub group: String,
    #[serde(default)]
    pub allow_downgrade: bool,
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/update", post(omaha))
        .route("/v1/update/", post(omaha))
        .route("/v1/update/status", get(status))
        .route("/v1/update/releases", post(publish))
        .route("/v1/update/releases/{version}/{file}", get(release_file))
        .route(
            "/v1/update/uploads/{id}/{file}",
            put(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/update/groups/{group}/policy", post(policy))
        .route("/v1/update/groups/{group}/resume", post(resume))
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn admin(state: &AppState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    state
        .admin
        .check(headers)
        .map_err(|(status, reason)| Box::new(text(status, reason)))
}

fn service_error(e: ServiceError) -> Response {
    let status = match &e {
        ServiceError::Omaha(_) | ServiceError::BadPolicy { .. } => StatusCode::BAD_REQUEST,
        ServiceError::NoGroup(_) => StatusCode::NOT_FOUND,
        ServiceError::Publish(
            PublishError::Exists(_)
            | PublishError::KeyChanged { .. }
            | PublishError::Downgrade { .. },
        ) => StatusCode::CONFLICT,
        ServiceError::Publish(PublishError::Io { .. } | PublishError::State(_))
        | ServiceError::State(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ServiceError::Publish(_) => StatusCode::BAD_REQUEST,
    };
    text(status, e.to_string())
}

async fn omaha(State(state): State<AppState>, body: Bytes) -> Response {
    match state.updates.omaha(&body, &state.base_url).await {
        Ok(xml) => ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], xml).into_response(),
        Err(e) => {
            warn!(error = %e, "Omaha request refused");
            service_error(e)
        }
    }
}

async fn status(State(state): State<AppState>) -> Response {
    Json(state.updates.status().await).into_response()
}

async fn release_file(
    State(state): State<AppState>,
    Path((version, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    match state.updates.release_file(&version, &file).await {
        Some(path) => crate::http::range::serve_file(&path, &headers).await,
        None => text(
            StatusCode::NOT_FOUND,
            format!("no release file {version}/{file}"),
        ),
    }
}

/// An upload id: what a client names its upload (hex, 8-64 characters).
fn upload_id(id: &str) -> bool {
    (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

async fn upload(
    State(state): State<AppState>,
    Path((id, file)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(r) = admin(&state, &headers) {
        return *r;
    }
    if !upload_id(&id) || !FILES.contains(&file.as_str()) {
        return text(
            StatusCode::NOT_FOUND,
            format!("uploads are /v1/update/uploads/<hex id>/<one of {FILES:?}>"),
        );
    }
    let dir = state.updates.uploads().join(&id);
    let (part, dst) = (dir.join(format!("{file}.part")), dir.join(&file));
    let written = async {
        tokio::fs::create_dir_all(&dir).await?;
        let mut out = tokio::fs::File::create(&part).await?;
        let mut stream = body.into_data_stream();
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(std::io::Error::other)?;
            n += chunk.len() as u64;
            if n > MAX_UPLOAD {
                return Err(std::io::Error::other(format!(
                    "larger than {MAX_UPLOAD} bytes"
                )));
            }
            out.write_all(&chunk).await?;
        }
        out.sync_all().await?;
        tokio::fs::rename(&part, &dst).await?;
        Ok::<u64, std::io::Error>(n)
    }
    .await;
    match written {
        Ok(n) => {
            info!(upload = %id, %file, bytes = n, "upload received");
            text(StatusCode::OK, format!("{n} bytes"))
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            text(
                StatusCode::BAD_REQUEST,
                format!("upload {id}/{file} failed: {e}"),
            )
        }
    }
}

async fn publish(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = admin(&state, &headers) {
        return *r;
    }
    let req: PublishRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("publish request: {e}")),
    };
    if !upload_id(&req.upload) {
        return text(StatusCode::BAD_REQUEST, "publish request: bad upload id");
    }
    let dir = state.updates.uploads().join(&req.upload);
    let result = state
        .updates
        .publish(dir.clone(), &req.group, req.allow_downgrade)
        .await;
    let _ = tokio::fs::remove_dir_all(&dir).await;
    match result {
        Ok(release) => Json(release).into_response(),
        Err(e) => {
            warn!(group = %req.group, error = %e, "publish refused");
            service_error(e)
        }
    }
}

async fn policy(
    State(state): State<AppState>,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = admin(&state, &headers) {
        return *r;
    }
    let patch: PolicyPatch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("policy: {e}")),
    };
    match state.updates.set_policy(&group, &patch).await {
        Ok(g) => Json(g).into_response(),
        Err(e) => service_error(e),
    }
}

async fn resume(
    State(state): State<AppState>,
    Path(group): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admin(&state, &headers) {
        return *r;
    }
    match state.updates.resume(&group).await {
        Ok(g) => Json(g).into_response(),
        Err(e) => service_error(e),
    }
}
