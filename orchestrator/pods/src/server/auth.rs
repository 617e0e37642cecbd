//! Who may use the API. Over TLS (the default) a caller proves itself with
//! a client certificate from the cluster CA — `root`'s or a member's; other
//! users are known but have no grant here, as herd has no RBAC — or with
//! the bearer token, when one is configured. Over `--insecure-plaintext`
//! only the token, if any, guards it. Health and version answer anyone, as
//! Kubernetes' public-info role does.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use herd_http::server::Peer;
use herd_pki::Identity;

use super::{ApiServer, respond};
use crate::api::ApiError;

/// The API's authentication.
#[derive(Clone, Default)]
pub struct Auth {
    token: Option<Arc<str>>,
    /// Callers may (and without the token must) present a certificate.
    certificates: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("Auth")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("certificates", &self.certificates)
            .finish()
    }
}

/// What [`Auth`] says of one request.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Allowed,
    /// No credential, or a wrong one.
    Unauthorized(&'static str),
    /// A known user without a grant.
    Forbidden(String),
}

impl Auth {
    /// Anyone may call (`--insecure-plaintext` without a token).
    pub fn open() -> Auth {
        Auth::default()
    }

    /// Callers must send `Authorization: Bearer <token>`.
    pub fn bearer(token: &str) -> Auth {
        Auth {
            token: Some(Arc::from(token)),
            certificates: false,
        }
    }

    /// TLS: a certificate of root or a member, or the token if given.
    pub fn certificates(token: Option<&str>) -> Auth {
        Auth {
            token: token.map(Arc::from),
            certificates: true,
        }
    }

    fn token_matches(&self, header: Option<&str>) -> bool {
        let (Some(want), Some(got)) = (&self.token, header.and_then(|h| h.strip_prefix("Bearer ")))
        else {
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

    fn judge(&self, peer: Option<&Identity>, header: Option<&str>) -> Verdict {
        if self.token_matches(header) {
            return Verdict::Allowed;
        }
        if header.is_some() && self.token.is_some() {
            return Verdict::Unauthorized("a wrong bearer token");
        }
        match peer.filter(|_| self.certificates) {
            Some(Identity::Member(_)) => Verdict::Allowed,
            Some(Identity::User(user)) if user == "root" => Verdict::Allowed,
            Some(Identity::User(user)) => Verdict::Forbidden(user.clone()),
            None if !self.certificates && self.token.is_none() => Verdict::Allowed,
            None => Verdict::Unauthorized("no client certificate and no bearer token"),
        }
    }
}

fn public(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
}

/// The middleware: 401 or 403 with a `Status` unless the caller is allowed.
pub async fn require(State(server): State<Arc<ApiServer>>, req: Request, next: Next) -> Response {
    if public(req.uri().path()) {
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let peer = req.extensions().get::<Peer>().and_then(|p| p.0.as_ref());
    match server.auth.judge(peer, header) {
        Verdict::Allowed => next.run(req).await,
        Verdict::Unauthorized(cause) => {
            tracing::info!(
                path = req.uri().path(),
                cause,
                "API request refused: unauthorized"
            );
            respond::error(&ApiError::unauthorized())
        }
        Verdict::Forbidden(user) => {
            tracing::info!(path = req.uri().path(), %user, "API request refused: forbidden");
            respond::error(&ApiError::new(
                403,
                "Forbidden",
                format!(
                    "user \"{user}\" cannot use the Kubernetes API: herd grants it to root and the cluster's members"
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_must_match_exactly() {
        let a = Auth::bearer("s3cret");
        assert_eq!(a.judge(None, Some("Bearer s3cret")), Verdict::Allowed);
        for wrong in [Some("Bearer s3cre"), Some("Basic s3cret"), None] {
            assert!(
                matches!(a.judge(None, wrong), Verdict::Unauthorized(_)),
                "{wrong:?}"
            );
        }
        assert_eq!(Auth::open().judge(None, None), Verdict::Allowed);
        assert_eq!(Auth::open().judge(None, Some("Bearer x")), Verdict::Allowed);
        assert!(!format!("{a:?}").contains("s3cret"));
    }

    #[test]
    fn certificates_of_root_and_members_are_allowed_other_users_forbidden() {
        let root = Identity::User("root".into());
        let member = Identity::Member("m1".into());
        let alice = Identity::User("alice".into());
        for auth in [Auth::certificates(None), Auth::certificates(Some("t"))] {
            assert_eq!(auth.judge(Some(&root), None), Verdict::Allowed);
            assert_eq!(auth.judge(Some(&member), None), Verdict::Allowed);
            assert_eq!(
                auth.judge(Some(&alice), None),
                Verdict::Forbidden("alice".into())
            );
            assert!(matches!(auth.judge(None, None), Verdict::Unauthorized(_)));
        }
        let with_token = Auth::certificates(Some("t"));
        // A wrong token is refused even with a good certificate: a caller
        // that sends one means to be judged by it.
        assert!(matches!(
            with_token.judge(Some(&root), Some("Bearer nope")),
            Verdict::Unauthorized(_)
        ));
        // Without a configured token, a header is not a credential at all.
        assert_eq!(
            Auth::certificates(None).judge(Some(&root), Some("Bearer x")),
            Verdict::Allowed
        );
        assert_eq!(with_token.judge(None, Some("Bearer t")), Verdict::Allowed);
        assert_eq!(
            with_token.judge(Some(&alice), Some("Bearer t")),
            Verdict::Allowed
        );
        // Without TLS a certificate cannot have been shown.
        assert!(matches!(
            Auth::bearer("t").judge(Some(&root), None),
            Verdict::Unauthorized(_)
        ));
    }
}
