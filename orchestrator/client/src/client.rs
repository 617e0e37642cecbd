//! A gRPC client of the etcd v3 API (herd's or a real etcd's): one channel
//! over the given endpoints and the service stubs on it.

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::proto::etcdserverpb::{
    auth_client::AuthClient, cluster_client::ClusterClient, kv_client::KvClient,
    lease_client::LeaseClient, maintenance_client::MaintenanceClient, watch_client::WatchClient,
};
use crate::proto::v3electionpb::election_client::ElectionClient;
use crate::proto::v3lockpb::lock_client::LockClient;

/// Why a client could not be built or a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no endpoints given")]
    NoEndpoints,
    #[error("invalid endpoint {endpoint:?}: {source}")]
    BadEndpoint {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("connecting to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("{0}")]
    Status(#[from] tonic::Status),
    #[error("{0}")]
    Protocol(String),
    #[error("TLS: {0}")]
    Tls(String),
}

/// How a client checks the server and proves who it is.
#[derive(Clone, Default)]
pub enum Credentials {
    /// Plaintext: a store started with `--insecure-plaintext`, or etcd
    /// without TLS.
    #[default]
    Plaintext,
    /// TLS: the server must have a certificate from `ca_pem`; `identity`
    /// is this client's certificate (a member's, a user's, `root`'s).
    Tls {
        ca_pem: String,
        identity: Option<herd_pki::CertKey>,
    },
    /// TLS as the holder of `identity`, whose certificate is renewed in
    /// place (a member's own clients): every new connection presents the
    /// current one.
    Renewing(Arc<herd_pki::LiveIdentity>),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Plaintext => f.write_str("Plaintext"),
            Credentials::Tls { identity, .. } => f
                .debug_struct("Tls")
                .field("identity", &identity.as_ref().map(|_| "<certificate>"))
                .finish_non_exhaustive(),
            Credentials::Renewing(_) => f.write_str("Renewing(<certificate>)"),
        }
    }
}

/// Adds an etcd auth token (from `Authenticate`) to every request.
#[derive(Clone, Default)]
pub struct TokenLayer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for TokenLayer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            req.metadata_mut().insert("token", token.clone());
        }
        Ok(req)
    }
}

/// What every stub runs over: the channel, with the auth token added.
pub type Transport = tonic::service::interceptor::InterceptedService<Channel, TokenLayer>;

/// Stubs for every etcd v3 service, sharing one channel.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    token: TokenLayer,
    /// Kept so that a role can reach other members as this client does
    /// (the update role's quorum probe).
    credentials: Credentials,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

/// Dials TCP and completes a TLS handshake, for tonic's custom connector.
#[derive(Clone)]
struct TlsConnector {
    config: std::sync::Arc<rustls::ClientConfig>,
}

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.config.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .unwrap_or("localhost")
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(2379);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = herd_pki::tls::server_name(&host).map_err(std::io::Error::other)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

impl Credentials {
    /// The TLS client configuration these credentials make, offering
    /// `alpn` (`None`: plaintext). The store's gRPC uses it with h2; the
    /// agents' HTTP APIs with http/1.1.
    pub fn tls_config(
        &self,
        alpn: &[&[u8]],
    ) -> Result<Option<Arc<herd_pki::tls::ClientConfig>>, ClientError> {
        let config = match self {
            Credentials::Plaintext => return Ok(None),
            Credentials::Tls { ca_pem, identity } => {
                herd_pki::install_crypto_provider();
                herd_pki::tls::client_config(ca_pem, identity.as_ref(), alpn)
            }
            Credentials::Renewing(identity) => {
                herd_pki::install_crypto_provider();
                herd_pki::tls::client_config_live(Arc::clone(identity), alpn)
            }
        };
        config
            .map(Some)
            .map_err(|e| ClientError::Tls(e.to_string()))
    }
}

fn tls_connector(credentials: &Credentials) -> Result<Option<TlsConnector>, ClientError> {
    Ok(credentials
        .tls_config(&[herd_pki::tls::ALPN_H2])?
        .map(|config| TlsConnector { config }))
}

/// Turns `HOST:PORT` (or `http://HOST:PORT`, `https://HOST:PORT`) into an
/// endpoint. Whether the connection is TLS is the credentials' choice, not
/// the scheme's, as with etcdctl; the scheme only has to agree with them.
fn endpoint(addr: &str, credentials: &Credentials) -> Result<Endpoint, ClientError> {
    let (scheme, host) = match addr.split_once("://") {
        Some((scheme, host)) => (Some(scheme), host),
        None => (None, addr),
    };
    let tls = !matches!(credentials, Credentials::Plaintext);
    match (scheme, tls) {
        (None, _) | (Some("http"), false) | (Some("https"), true) => {}
        (Some("https"), false) => {
            return Err(ClientError::Tls(format!(
                "{addr}: an https endpoint needs the cluster CA (--cacert)"
            )));
        }
        (Some(other), _) => {
            return Err(ClientError::Tls(format!(
                "{addr}: scheme {other}:// does not go with {}",
                if tls {
                    "TLS credentials"
                } else {
                    "a plaintext connection"
                }
            )));
        }
    }
    // tonic sees plain http: the TLS (if any) is our connector's.
    Ok(Endpoint::from_shared(format!("http://{host}"))
        .map_err(|source| ClientError::BadEndpoint {
            endpoint: addr.to_owned(),
            source,
        })?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true))
}

impl Client {
    /// Connects to the first reachable endpoint of `endpoints` (plaintext).
    pub async fn connect(endpoints: &[String]) -> Result<Client, ClientError> {
        Client::connect_with(endpoints, &Credentials::Plaintext).await
    }

    /// Connects to the first reachable endpoint of `endpoints` with
    /// `credentials`.
    pub async fn connect_with(
        endpoints: &[String],
        credentials: &Credentials,
    ) -> Result<Client, ClientError> {
        let tls = tls_connector(credentials)?;
        let mut last = None;
        for addr in endpoints {
            let ep = endpoint(addr, credentials)?;
            let connected = match &tls {
                Some(c) => ep.connect_with_connector(c.clone()).await,
                None => ep.connect().await,
            };
            match connected {
                Ok(channel) => {
                    return Ok(Client {
                        channel,
                        token: TokenLayer::default(),
                        credentials: credentials.clone(),
                    });
                }
                Err(source) => {
                    last = Some(ClientError::Connect {
                        endpoint: addr.clone(),
                        source,
                    })
                }
            }
        }
        Err(last.unwrap_or(ClientError::NoEndpoints))
    }

    /// A client whose connection is made on first use (and re-made after
    /// failures), plaintext.
    pub fn lazy(addr: &str) -> Result<Client, ClientError> {
        Client::lazy_with(addr, &Credentials::Plaintext)
    }

    /// [`Client::lazy`] with `credentials`.
    pub fn lazy_with(addr: &str, credentials: &Credentials) -> Result<Client, ClientError> {
        let ep = endpoint(addr, credentials)?;
        let channel = match tls_connector(credentials)? {
            Some(c) => ep.connect_with_connector_lazy(c),
            None => ep.connect_lazy(),
        };
        Ok(Client {
            channel,
            token: TokenLayer::default(),
            credentials: credentials.clone(),
        })
    }

    /// The credentials this client connects with.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Logs in as an etcd auth user (`Authenticate`); every later request
    /// carries the token.
    pub async fn authenticate(mut self, name: &str, password: &str) -> Result<Client, ClientError> {
        let resp = crate::proto::etcdserverpb::auth_client::AuthClient::new(self.channel.clone())
            .authenticate(crate::proto::etcdserverpb::AuthenticateRequest {
                name: name.to_owned(),
                password: password.to_owned(),
            })
            .await?
            .into_inner();
        let token = resp
            .token
            .parse()
            .map_err(|_| ClientError::Protocol("the server sent an unusable auth token".into()))?;
        self.token = TokenLayer(Some(token));
        Ok(self)
    }

    fn transport(&self) -> Transport {
        tonic::service::interceptor::InterceptedService::new(
            self.channel.clone(),
            self.token.clone(),
        )
    }

    pub fn auth(&self) -> AuthClient<Transport> {
        AuthClient::new(self.transport())
    }

    pub fn kv(&self) -> KvClient<Transport> {
        KvClient::new(self.transport())
    }

    pub fn watch(&self) -> WatchClient<Transport> {
        WatchClient::new(self.transport())
    }

    pub fn lease(&self) -> LeaseClient<Transport> {
        LeaseClient::new(self.transport())
    }

    pub fn cluster(&self) -> ClusterClient<Transport> {
        ClusterClient::new(self.transport())
    }

    pub fn maintenance(&self) -> MaintenanceClient<Transport> {
        MaintenanceClient::new(self.transport())
    }

    pub fn lock(&self) -> LockClient<Transport> {
        LockClient::new(self.transport())
    }

    pub fn election(&self) -> ElectionClient<Transport> {
        ElectionClient::new(self.transport())
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's
/// `GetPrefixRangeEnd`); `[0]` (all keys) when no such key exists.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_increments_last_byte_and_drops_trailing_ff() {
        assert_eq!(prefix_end(b"ab"), b"ac");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
