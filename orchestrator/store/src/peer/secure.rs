//! How peers prove who they are: mutual TLS with member certificates, or
//! (`--insecure-plaintext`) a shared token's hash in the handshake.

use std::sync::Arc;

use herd_pki::tls::Current;
use sha2::{Digest, Sha256};

/// The cluster token, kept only as its hash.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub(super) [u8; 32]);

impl Token {
    pub fn new(secret: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"herd-peer-token:");
        h.update(secret.as_bytes());
        Token(h.finalize().into())
    }

    pub(super) fn matches(&self, other: &[u8]) -> bool {
        // Constant-time: do not leak how many bytes matched.
        other.len() == 32
            && self
                .0
                .iter()
                .zip(other)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// The client side's credentials.
#[derive(Debug, Clone)]
pub enum ClientSecurity {
    /// Plaintext TCP with the token's hash in the handshake.
    Token(Token),
    /// TLS with this member's certificate (replaced when it is renewed).
    Tls(Arc<Current<rustls::ClientConfig>>),
}

/// The server side's credentials.
#[derive(Debug, Clone)]
pub enum ServerSecurity {
    Token(Token),
    /// TLS, client certificates optional at the handshake (a joining
    /// machine has none) and required for everything but joining.
    Tls(Arc<Current<rustls::ServerConfig>>),
}
