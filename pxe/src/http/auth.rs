//! Who may change the server (publish releases, change policies, resume
//! rollouts, send a machine to be reinstalled): one bearer token, kept in
//! `<state-dir>/api.token` (made on first start) or a file the operator
//! names, accepted only on the HTTPS admin listener ([`super::admin_tls`]).
//! The plain HTTP listener machines boot from refuses the admin routes, so
//! the token never has a reason to cross the boot network in the clear.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};

/// Decides whether a request may use the admin routes.
pub trait AdminAuth: Send + Sync + 'static {
    /// `Err` carries the reason, for the 401 answer.
    fn check(&self, headers: &HeaderMap) -> Result<(), String>;
}

/// Where a listener stands on the admin routes.
#[derive(Clone)]
pub enum Admin {
    /// Served here (the HTTPS admin listener), to requests `auth` admits.
    Here(Arc<dyn AdminAuth>),
    /// Served only on the admin listener at `url`; this one refuses them.
    Elsewhere { url: String },
}

impl Admin {
    /// `Err`: the status and reason to answer with.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
        match self {
            Admin::Here(auth) => auth
                .check(headers)
                .map_err(|reason| (StatusCode::UNAUTHORIZED, reason)),
            Admin::Elsewhere { url } => Err((
                StatusCode::FORBIDDEN,
                format!(
                    "this listener is plain HTTP, for booting machines; changes are served only over HTTPS at {url} (herd pxe … --server {url} --cacert <state-dir>/admin/ca.crt)"
                ),
            )),
        }
    }
}

/// `Authorization: Bearer <token>` with the server's token.
pub struct BearerToken {
    token: String,
}

impl BearerToken {
    pub fn new(token: String) -> BearerToken {
        BearerToken { token }
    }

    /// The token in `path`, or a new random one written there (mode 0600)
    /// when the file does not exist. Blocking.
    pub fn load_or_create(path: &Path) -> std::io::Result<BearerToken> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => return Ok(BearerToken::new(text.trim().into())),
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{} is empty",
                    path.display()
                )));
            }
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            Err(_) => {}
        }
        let token = hex_token();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        writeln!(f, "{token}")?;
        f.sync_all()?;
        Ok(BearerToken::new(token))
    }
}

fn hex_token() -> String {
    let bytes: [u8; 24] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl AdminAuth for BearerToken {
    fn check(&self, headers: &HeaderMap) -> Result<(), String> {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or("this needs the server's token: Authorization: Bearer <token> (herd pxe … --token-file <state-dir>/api.token)")?;
        if same(given.trim().as_bytes(), self.token.as_bytes()) {
            Ok(())
        } else {
            Err("the token is not this server's".into())
        }
    }
}

/// Where the token lives by default.
pub fn default_token_file(state_dir: &Path) -> PathBuf {
    state_dir.join("api.token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_made_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.token");
        let a = BearerToken::load_or_create(&path).unwrap();
        let b = BearerToken::load_or_create(&path).unwrap();
        assert_eq!(a.token, b.token);
        assert_eq!(a.token.len(), 48);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let mut h = HeaderMap::new();
        assert!(a.check(&h).unwrap_err().contains("Bearer"));
        h.insert("authorization", "Bearer nope".parse().unwrap());
        assert!(a.check(&h).is_err());
        h.insert(
            "authorization",
            format!("Bearer {}", a.token).parse().unwrap(),
        );
        assert!(a.check(&h).is_ok());
    }
}
