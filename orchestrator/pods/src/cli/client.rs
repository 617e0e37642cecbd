//! The verbs' client of the Kubernetes API: paths of kinds and objects,
//! requests through `herd-http` with the bearer token, the API's `Status`
//! errors read back as the server gave them, and watches as a stream of
//! events.

use std::time::Duration;

use herd_http::{Method, Request};
use serde_json::Value;

use crate::api::KindInfo;

/// The accept header asking for a server-side `meta.k8s.io/v1` Table.
pub const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

/// Content types of the patches the verbs send.
pub const MERGE_PATCH: &str = "application/merge-patch+json";
pub const STRATEGIC_PATCH: &str = "application/strategic-merge-patch+json";

/// An answer the API refused: its `Status`, as the server gave it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Error from server ({reason}): {message}")]
pub struct Refused {
    pub code: u16,
    /// `NotFound`, `AlreadyExists`, `Invalid`, `Conflict`…
    pub reason: String,
    pub message: String,
}

impl Refused {
    /// Reads a `Status` body (or whatever else the server answered).
    pub fn from_body(code: u16, body: &[u8]) -> Refused {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let text = || String::from_utf8_lossy(body).trim().to_owned();
        Refused {
            code,
            reason: v["reason"]
                .as_str()
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{code}")),
            message: v["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(text),
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code == 404
    }

    pub fn is_already_exists(&self) -> bool {
        self.code == 409 && self.reason == "AlreadyExists"
    }

    pub fn is_conflict(&self) -> bool {
        self.code == 409 && self.reason == "Conflict"
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error(transparent)]
    Http(#[from] herd_http::Error),
    #[error("{url}: the answer is not JSON: {source}")]
    Json {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

impl CallError {
    /// The API's refusal, if that is what this is.
    pub fn refused(&self) -> Option<&Refused> {
        match self {
            CallError::Refused(r) => Some(r),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.refused().is_some_and(Refused::is_not_found)
    }
}

/// Where the API is and how to present ourselves to it.
#[derive(Debug, Clone)]
pub struct Api {
    http: herd_http::Client,
    base: String,
    token: Option<String>,
    tls: Option<std::sync::Arc<herd_pki::tls::ClientConfig>>,
}

/// The path of `kind`'s collection in `namespace` (all namespaces: `None`).
pub fn collection(kind: &KindInfo, namespace: Option<&str>) -> String {
    kind.collection_path(namespace)
}

/// The path of one object.
pub fn object(kind: &KindInfo, namespace: &str, name: &str) -> String {
    format!("{}/{name}", kind.collection_path(Some(namespace)))
}

impl Api {
    /// A client of the API at `base` (`https://host:port`, or `http://`
    /// for a plaintext agent).
    pub fn new(http: herd_http::Client, base: &str, token: Option<String>) -> Api {
        Api {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
            tls: None,
        }
    }

    /// Speaks TLS with `config` (the cluster CA, and the client's
    /// certificate if it has one).
    pub fn with_tls(mut self, config: std::sync::Arc<herd_pki::tls::ClientConfig>) -> Api {
        self.http = self.http.with_tls(std::sync::Arc::clone(&config));
        self.tls = Some(config);
        self
    }

    /// The TLS configuration, for connections made outside `herd-http`.
    pub fn tls(&self) -> Option<&std::sync::Arc<herd_pki::tls::ClientConfig>> {
        self.tls.as_ref()
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> Request {
        let req = Request::new(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer(t),
            None => req,
        }
    }

    /// Sends `method path` (with a body of `content_type`); the JSON answer
    /// of a 2xx, the `Status` of anything else.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        accept: &str,
    ) -> Result<Value, CallError> {
        let mut req = self.request(method, path).header("accept", accept);
        if let Some((content_type, bytes)) = body {
            req = req.header("content-type", content_type).body(bytes);
        }
        let url = format!("{}{path}", self.base);
        let resp = self.http.fetch(req).await?;
        if !resp.status.is_success() {
            return Err(Refused::from_body(resp.status.as_u16(), &resp.body).into());
        }
        serde_json::from_slice(&resp.body).map_err(|source| CallError::Json { url, source })
    }

    pub async fn get(&self, path: &str) -> Result<Value, CallError> {
        self.send(Method::GET, path, None, "application/json").await
    }

    /// `path` as a server-side Table.
    pub async fn get_table(&self, path: &str) -> Result<Value, CallError> {
        self.send(Method::GET, path, None, TABLE).await
    }

    pub async fn create(&self, collection: &str, object: &Value) -> Result<Value, CallError> {
        self.send(
            Method::POST,
            collection,
            Some(json_body(object)),
            "application/json",
        )
        .await
    }

    pub async fn replace(&self, path: &str, object: &Value) -> Result<Value, CallError> {
        self.send(
            Method::PUT,
            path,
            Some(json_body(object)),
            "application/json",
        )
        .await
    }

    pub async fn patch(
        &self,
        path: &str,
        content_type: &str,
        patch: &Value,
    ) -> Result<Value, CallError> {
        let bytes = serde_json::to_vec(patch).expect("JSON values serialize");
        self.send(
            Method::PATCH,
            path,
            Some((content_type, bytes)),
            "application/json",
        )
        .await
    }

    /// Deletes `path` with `propagation` (`Background`, `Foreground`, `Orphan`).
    pub async fn delete(&self, path: &str, propagation: &str) -> Result<Value, CallError> {
        let options = serde_json::json!({
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "propagationPolicy": propagation,
        });
        self.send(
            Method::DELETE,
            path,
            Some(json_body(&options)),
            "application/json",
        )
        .await
    }

    /// Watches `path` (a collection path with its query) from
    /// `resource_version`; events arrive through [`Watch::next`].
    pub async fn watch(
        &self,
        path: &str,
        resource_version: &str,
        accept: &str,
    ) -> Result<Watch, CallError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!(
            "{path}{sep}watch=true&allowWatchBookmarks=false&resourceVersion={resource_version}"
        );
        let req = self.request(Method::GET, &path).header("accept", accept);
        let body = match self.http.open(req).await {
            Ok(b) => b,
            Err(herd_http::Error::Status { status, body, .. }) => {
                return Err(Refused::from_body(status.as_u16(), body.as_bytes()).into());
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Watch {
            body,
            pending: Vec::new(),
            url: format!("{}{path}", self.base),
        })
    }

    /// Opens `path` as a stream (a pod's log), or its refusal.
    pub async fn open(&self, path: &str) -> Result<herd_http::Streaming, CallError> {
        let req = self.request(Method::GET, path);
        match self.http.open(req).await {
            Ok(b) => Ok(b),
            Err(herd_http::Error::Status { status, body, .. }) => {
                Err(Refused::from_body(status.as_u16(), body.as_bytes()).into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The bearer token requests carry, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The client's own HTTP client (for benchmarks that pace requests).
    pub fn http(&self) -> &herd_http::Client {
        &self.http
    }
}

fn json_body(v: &Value) -> (&'static str, Vec<u8>) {
    (
        "application/json",
        serde_json::to_vec(v).expect("JSON values serialize"),
    )
}

/// One watch event: `ADDED`, `MODIFIED`, `DELETED` (or `ERROR`) and its object.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: String,
    pub object: Value,
}

/// A watch's events, one JSON line each.
pub struct Watch {
    body: herd_http::Streaming,
    pending: Vec<u8>,
    url: String,
}

impl Watch {
    /// The next event; `None` when the server ended the watch.
    pub async fn next(&mut self) -> Result<Option<Event>, CallError> {
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let v: Value = serde_json::from_slice(&line).map_err(|source| CallError::Json {
                    url: self.url.clone(),
                    source,
                })?;
                if v["type"] == "ERROR" {
                    let status = serde_json::to_vec(&v["object"]).unwrap_or_default();
                    let code = v["object"]["code"].as_u64().unwrap_or(500) as u16;
                    return Err(Refused::from_body(code, &status).into());
                }
                return Ok(Some(Event {
                    kind: v["type"].as_str().unwrap_or_default().to_owned(),
                    object: v["object"].clone(),
                }));
            }
            match self.body.chunk().await? {
                Some(data) => self.pending.extend_from_slice(&data),
                None => return Ok(None),
            }
        }
    }
}

/// Polls `check` every `every` until it gives a value or `cancel` fires.
pub async fn poll<T, F, Fut>(
    cancel: &tokio_util::sync::CancellationToken,
    every: Duration,
    mut check: F,
) -> Result<Option<T>, CallError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, CallError>>,
{
    loop {
        if let Some(v) = check().await? {
            return Ok(Some(v));
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_body_reads_back_with_its_reason() {
        let r = Refused::from_body(
            422,
            br#"{"kind":"Status","reason":"Invalid","message":"Pod \"bad\" is invalid: spec.containers[0].bogus: Invalid value"}"#,
        );
        assert_eq!(r.reason, "Invalid");
        assert_eq!(
            r.to_string(),
            "Error from server (Invalid): Pod \"bad\" is invalid: spec.containers[0].bogus: Invalid value"
        );
        let r = Refused::from_body(502, b"bad gateway\n");
        assert_eq!(r.to_string(), "Error from server (502): bad gateway");
        assert!(Refused::from_body(409, br#"{"reason":"AlreadyExists"}"#).is_already_exists());
    }
}
