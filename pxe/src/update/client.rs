//! The operator's side of the update server, for `herd pxe publish` and
//! `herd pxe updates`: the same operations against a running server (its
//! HTTPS admin listener, with its token) or directly on a stopped server's
//! `--state-dir`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::policy::PolicyPatch;
use super::publish::{self, FILES};
use super::routes::PublishRequest;
use super::service::{ServiceError, UpdateService, UpdatesStatus};
use super::state::{Group, Release};

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Http(#[from] herd_http::Error),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Publish(#[from] publish::PublishError),
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "refusing to send the admin token over plain HTTP to {url}: use the server's HTTPS admin listener (https://HOST:8443) with --cacert <state-dir>/admin/ca.crt"
    )]
    Plaintext { url: String },
    #[error("{url} is HTTPS: give --cacert, the server's <state-dir>/admin/ca.crt")]
    NoCa { url: String },
    #[error("--cacert: {0}")]
    Ca(#[source] herd_pki::PkiError),
    #[error("{url}: the answer is not what the update server sends: {source}")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Where the operations go.
pub enum Target {
    /// A running `herd pxe serve`; made by [`Target::server`].
    Server(Remote),
    /// The state directory of a server that is not running.
    StateDir(PathBuf),
}

/// A client for the server at `url`: over TLS pinned to `ca_pem` (the
/// admin CA) when it is `https://`.
pub fn http_client(url: &str, ca_pem: Option<&str>) -> Result<herd_http::Client, ClientError> {
    let http = herd_http::Client::new();
    if !url.starts_with("https://") {
        return Ok(http);
    }
    let ca = ca_pem.ok_or_else(|| ClientError::NoCa { url: url.into() })?;
    let tls = herd_pki::tls::client_config(ca, None, &[b"http/1.1"]).map_err(ClientError::Ca)?;
    Ok(http.with_tls(tls))
}

/// A running server: private, so the check in [`Target::server`] (no
/// token over plain HTTP) cannot be skipped.
pub struct Remote {
    url: String,
    token: Option<String>,
    http: herd_http::Client,
}

impl Target {
    /// A running server at `url`: its admin listener (`https://…`, checked
    /// against `ca_pem`, the server's admin CA), or its plain listener
    /// (`http://…`) for reading only — with a token, plain HTTP is refused
    /// here, before anything is sent.
    pub fn server(
        url: &str,
        token: Option<String>,
        ca_pem: Option<&str>,
    ) -> Result<Target, ClientError> {
        if token.is_some() && !url.starts_with("https://") {
            return Err(ClientError::Plaintext { url: url.into() });
        }
        // Payloads are uploaded whole: allow for slow links.
        let http = http_client(url, ca_pem)?.with_timeout(Duration::from_secs(600));
        Ok(Target::Server(Remote {
            url: url.to_owned(),
            token,
            http,
        }))
    }

    fn url(url: &str, path: &str) -> String {
        format!("{}{path}", url.trim_end_matches('/'))
    }

    async fn call<T: serde::de::DeserializeOwned>(
        http: &herd_http::Client,
        req: herd_http::Request,
        url: &str,
    ) -> Result<T, ClientError> {
        let resp = http.call(req).await?;
        serde_json::from_slice(&resp.body).map_err(|source| ClientError::Decode {
            url: url.to_owned(),
            source,
        })
    }

    fn authorized(req: herd_http::Request, token: &Option<String>) -> herd_http::Request {
        match token {
            Some(t) => req.bearer(t),
            None => req,
        }
    }

    /// Publishes the `herd image build` output in `dir` into `group`. The
    /// release is checked here first, so a bad one fails before uploading.
    pub async fn publish(
        &self,
        dir: &Path,
        group: &str,
        allow_downgrade: bool,
    ) -> Result<Release, ClientError> {
        publish::check_group_name(group)?;
        let local = dir.to_path_buf();
        tokio::task::spawn_blocking(move || publish::verify(&local))
            .await
            .expect("verifying does not panic")?;
        match self {
            Target::StateDir(state_dir) => Ok(UpdateService::open(state_dir)
                .await?
                .publish(dir.to_path_buf(), group, allow_downgrade)
                .await?),
            Target::Server(Remote { url, token, http }) => {
                let id = format!("{:016x}", rand::random::<u64>());
                for file in FILES {
                    let path = dir.join(file);
                    let bytes = tokio::fs::read(&path)
                        .await
                        .map_err(|source| ClientError::Read { path, source })?;
                    let target = Target::url(url, &format!("/v1/update/uploads/{id}/{file}"));
                    let req = herd_http::Request::new(herd_http::Method::PUT, &target)
                        .header("content-type", "application/octet-stream")
                        .body(bytes);
                    http.call(Target::authorized(req, token)).await?;
                }
                let target = Target::url(url, "/v1/update/releases");
                let req = herd_http::Request::post(&target).json(&PublishRequest {
                    upload: id,
                    group: group.to_owned(),
                    allow_downgrade,
                });
                Target::call(http, Target::authorized(req, token), &target).await
            }
        }
    }

    pub async fn status(&self) -> Result<UpdatesStatus, ClientError> {
        match self {
            Target::StateDir(d) => Ok(UpdateService::open(d).await?.status().await),
            Target::Server(Remote { url, http, .. }) => {
                let target = Target::url(url, "/v1/update/status");
                Target::call(http, herd_http::Request::get(&target), &target).await
            }
        }
    }

    pub async fn set_policy(&self, group: &str, patch: &PolicyPatch) -> Result<Group, ClientError> {
        match self {
            Target::StateDir(d) => Ok(UpdateService::open(d)
                .await?
                .set_policy(group, patch)
                .await?),
            Target::Server(Remote { url, token, http }) => {
                let target = Target::url(url, &format!("/v1/update/groups/{group}/policy"));
                let req = herd_http::Request::post(&target).json(patch);
                Target::call(http, Target::authorized(req, token), &target).await
            }
        }
    }

    pub async fn resume(&self, group: &str) -> Result<Group, ClientError> {
        match self {
            Target::StateDir(d) => Ok(UpdateService::open(d).await?.resume(group).await?),
            Target::Server(Remote { url, token, http }) => {
                let target = Target::url(url, &format!("/v1/update/groups/{group}/resume"));
                let req = herd_http::Request::post(&target);
                Target::call(http, Target::authorized(req, token), &target).await
            }
        }
    }
}
