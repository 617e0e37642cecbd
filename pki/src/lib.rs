//! The cluster's PKI: its certificate authority ([`ca`]), the identities
//! certificates carry ([`identity`]), join tokens that pin the CA
//! ([`token`]), the files a member keeps ([`files`]) and people use
//! ([`bundle`]), the TLS configurations herd's servers and clients use
//! ([`tls`]), and a certificate renewed in place under them ([`live`]).
//!
//! Trust model, in short: the cluster CA signs every member's and user's
//! certificate; a joining machine knows the CA only by the hash its join
//! token carries, checks the cluster against it before sending anything
//! secret, and receives its member certificate over that channel.

pub mod bundle;
pub mod ca;
pub mod files;
pub mod identity;
pub mod live;
pub mod tls;
pub mod token;

pub use ca::{CertKey, ClusterCa};
pub use identity::Identity;
pub use live::LiveIdentity;
pub use token::JoinToken;

/// Why a PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating {what}: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("{what} is not a valid PEM certificate or key: {reason}")]
    Pem { what: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the certificate signing request is not valid: {0}")]
    Csr(String),
    #[error("{0}")]
    Tls(#[from] rustls::Error),
    #[error("join token: {0}")]
    Token(String),
    #[error("{0:?} is not a user name (letters, digits, '-', '_', '.'; not member:…)")]
    BadUser(String),
    #[error("{0} exists; refusing to replace a CA")]
    Exists(std::path::PathBuf),
}

/// Installs rustls's ring provider for the process (idempotent); every TLS
/// configuration here names it explicitly too.
// ring, not aws-lc: no C toolchain in the build (notes/crates.md). rustls
// deprecates it only for lacking post-quantum key exchange.
#[allow(deprecated)]
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
