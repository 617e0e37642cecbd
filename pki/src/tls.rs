//! TLS for herd's servers and clients (rustls with the ring provider):
//! configurations from the cluster's PEM files, a verifier that pins the
//! CA by hash (a joining machine's only knowledge of the cluster), and an
//! acceptor that bounds handshakes so a client that never finishes one
//! (slowloris) holds nothing but its own socket.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
pub use rustls::{ClientConfig, ServerConfig};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use crate::PkiError;
use crate::ca::CertKey;
use crate::identity::Identity;
use crate::live::LiveIdentity;

/// ALPN for gRPC (HTTP/2).
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN for the HTTP APIs (HTTP/1.1).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// ALPN of the store's peer protocol.
pub const ALPN_PEER: &[u8] = b"herd-peer/1";

// See `install_crypto_provider`: ring is deprecated only for lacking
// post-quantum key exchange.
#[allow(deprecated)]
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM text.
pub fn certs_from_pem(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem {
            what: what.to_owned(),
            reason: e.to_string(),
        })
}

pub(crate) fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Pem {
        what: "private key".into(),
        reason: e.to_string(),
    })
}

fn roots(ca_pem: &str) -> Result<RootCertStore, PkiError> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(ca_pem, "CA certificate")? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// Whether servers ask clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A certificate from the cluster CA is required.
    Required,
    /// A certificate is checked if given; the server decides per request
    /// what a client without one may do (etcd users with a password, a
    /// machine joining with a token).
    Optional,
}

/// A server configuration: `leaf` (with the CA appended to its chain),
/// clients checked against the CA.
pub fn server_config(
    ca_pem: &str,
    leaf: &CertKey,
    client_auth: ClientAuth,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, PkiError> {
    server_config_live(LiveIdentity::new(ca_pem, leaf)?, client_auth, alpn)
}

/// [`server_config`] presenting whatever `identity` holds at each handshake.
pub fn server_config_live(
    identity: Arc<LiveIdentity>,
    client_auth: ClientAuth,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, PkiError> {
    let roots = Arc::new(roots(identity.ca_pem())?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
    let verifier = match client_auth {
        ClientAuth::Required => verifier.build(),
        ClientAuth::Optional => verifier.allow_unauthenticated().build(),
    }
    .map_err(|e| PkiError::Tls(rustls::Error::General(e.to_string())))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(identity);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client configuration: servers checked against the CA; `identity`
/// presented when given.
pub fn client_config(
    ca_pem: &str,
    identity: Option<&CertKey>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, PkiError> {
    match identity {
        Some(id) => client_config_live(LiveIdentity::new(ca_pem, id)?, alpn),
        None => {
            let mut config = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots(ca_pem)?)
                .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(Arc::new(config))
        }
    }
}

/// [`client_config`] presenting whatever `identity` holds at each handshake.
pub fn client_config_live(
    identity: Arc<LiveIdentity>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, PkiError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(identity.ca_pem())?)
        .with_client_cert_resolver(identity);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Accepts a server only if its chain carries the CA certificate whose
/// sha256 is `ca_hash` and the server's certificate verifies against that
/// CA for the name dialled: a joining machine knows nothing else of the
/// cluster, so a man in the middle with another CA is refused before the
/// join token's secret is sent.
#[derive(Debug)]
struct PinnedCa {
    ca_hash: [u8; 32],
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| Sha256::digest(c.as_ref()).as_slice() == self.ca_hash)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the server's CA does not match the join token's CA hash".into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?
            .verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration for a machine that knows the cluster only by its
/// CA's hash (see [`PinnedCa`]); it presents no certificate.
pub fn pinned_client_config(
    ca_hash: [u8; 32],
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, PkiError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa { ca_hash }))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The name to check a server's certificate against for `addr`.
pub fn server_name(host: &str) -> Result<ServerName<'static>, PkiError> {
    ServerName::try_from(host.to_owned())
        .map_err(|e| PkiError::Tls(rustls::Error::General(format!("{host}: {e}"))))
}

/// A value replaced at run time (a server's configuration after a member
/// joined or renewed its certificate); readers take the current one.
#[derive(Debug)]
pub struct Current<T>(RwLock<Arc<T>>);

impl<T> Current<T> {
    pub fn new(value: Arc<T>) -> Current<T> {
        Current(RwLock::new(value))
    }

    pub fn get(&self) -> Arc<T> {
        Arc::clone(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn set(&self, value: Arc<T>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = value;
    }
}

/// One accepted TLS connection and who its client certificate says it is.
pub struct Accepted {
    pub stream: TlsStream<TcpStream>,
    pub remote: SocketAddr,
    /// `None`: no client certificate (see [`ClientAuth::Optional`]).
    pub peer: Option<Identity>,
}

impl Accepted {
    fn peer_of(stream: &TlsStream<TcpStream>) -> Option<Identity> {
        let (_, conn) = stream.get_ref();
        conn.peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|c| Identity::from_der(c.as_ref()))
    }
}

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; connections beyond wait in the kernel's
/// backlog.
const MAX_HANDSHAKES: usize = 256;

/// Accepts TCP connections on `listener` and completes their TLS
/// handshakes (each bounded by [`HANDSHAKE_TIMEOUT`], many at once) with
/// the configuration current at the time; yields the finished ones. A
/// failed or abandoned handshake is logged with its cause and the address,
/// and costs nobody else anything. The task stops when the receiver is
/// dropped.
pub fn accept(
    listener: TcpListener,
    config: Arc<Current<ServerConfig>>,
    what: &'static str,
) -> mpsc::Receiver<Accepted> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        loop {
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let (tcp, remote) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(server = what, error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(config.get());
            let tx = tx.clone();
            tokio::spawn(async move {
                let _slot = slot;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let peer = Accepted::peer_of(&stream);
                        let _ = tx
                            .send(Accepted {
                                stream,
                                remote,
                                peer,
                            })
                            .await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(server = what, %remote, error = %e, "TLS handshake refused")
                    }
                    Err(_) => tracing::warn!(
                        server = what,
                        %remote,
                        "TLS handshake not finished within {HANDSHAKE_TIMEOUT:?}; closed"
                    ),
                }
            });
        }
    });
    rx
}

#[cfg(test)]
mod tests;
