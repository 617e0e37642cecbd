//! Who may use the API: a bearer token, when one is configured (from the
//! cloud-config or `--api-token-file`). A small layer on its own so the
//! security work can replace it with TLS client certificates and users.
//! Health and version answer anyone, as Kubernetes' public-info role does.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiServer, respond};
use crate::api::ApiError;

/// The API's authentication.
#[derive(Clone, Default)]
pub struct Auth {
    token: Option<Arc<str>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("Auth")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Auth {
    /// Anyone may call (tests, a lab behind its own network).
    pub fn open() -> Auth {
        Auth { token: None }
    }

    /// Callers must send `Authorization: Bearer <token>`.
    pub fn bearer(token: &str) -> Auth {
        Auth {
            token: Some(Arc::from(token)),
        }
    }

    fn allows(&self, header: Option<&str>) -> bool {
        let Some(want) = &self.token else { return true };
        let Some(got) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        // Constant-time: the comparison does not reveal a prefix.
        got.len() == want.len()
            && got
                .bytes()
                .zip(want.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

fn public(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
}

/// The middleware: 401 with a `Status` unless the caller is allowed.
pub async fn require(State(server): State<Arc<ApiServer>>, req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    if public(req.uri().path()) || server.auth.allows(header) {
        next.run(req).await
    } else {
        respond::error(&ApiError::unauthorized())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_must_match_exactly() {
        let a = Auth::bearer("s3cret");
        assert!(a.allows(Some("Bearer s3cret")));
        assert!(!a.allows(Some("Bearer s3cre")));
        assert!(!a.allows(Some("Basic s3cret")));
        assert!(!a.allows(None));
        assert!(Auth::open().allows(None));
        assert!(!format!("{a:?}").contains("s3cret"));
    }
}
