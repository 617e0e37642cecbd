//! The etcd v3 gRPC API over a [`Member`]: every service on the member's
//! client address. The services translate protobuf messages to the store's
//! own types ([`convert`]); Lock and Election reuse the client's algorithms
//! over loopback, as etcd does.

mod access;
mod auth;
mod cluster;
mod concurrency;
mod conn;
pub mod convert;
mod kv;
mod lease;
mod maintenance;
mod watch;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use herd_pki::tls::{ClientAuth, Current};
use tokio::net::TcpListener;

use self::access::Access;
use self::auth::AuthService;
use self::cluster::ClusterService;
use self::concurrency::{ElectionService, LockService};
use self::kv::KvService;
use self::lease::LeaseService;
use self::maintenance::MaintenanceService;
use self::watch::{DEFAULT_PROGRESS_INTERVAL, WatchService};
use crate::Member;
use herd_client::proto::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use herd_client::proto::v3electionpb::election_server::ElectionServer;
use herd_client::proto::v3lockpb::lock_server::LockServer;
use herd_client::{Client, ClientError, Credentials};

/// Why the client API stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding the client address {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("client API on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        source: tonic::transport::Error,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("client API TLS: {0}")]
    Tls(String),
}

/// gRPC room around the largest request the store accepts (etcd adds the same 512 KiB).
const GRPC_OVERHEAD: usize = 512 * 1024;

/// A bound client listener, ready to serve.
pub struct Listener {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Listener {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> Result<Listener, ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        Ok(Listener { listener, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Tunables of the client API.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The store's request size limit (the gRPC limit adds room around it).
    pub max_request_bytes: usize,
    /// Idle time after which a `progress_notify` watch gets a progress notice.
    pub watch_progress_interval: Duration,
}

impl ServeOptions {
    pub fn new(max_request_bytes: usize) -> ServeOptions {
        ServeOptions {
            max_request_bytes,
            watch_progress_interval: DEFAULT_PROGRESS_INTERVAL,
        }
    }
}

/// The client API's TLS: the server configuration (client certificates
/// optional at the handshake: users may come with a password token), and
/// the member's own credentials for the loopback client the Lock and
/// Election services use.
struct ClientApiTls {
    config: Arc<Current<rustls::ServerConfig>>,
    loopback: Credentials,
}

/// TLS for `member`'s client API when it has certificates (`None` in
/// plaintext mode).
fn tls_for(member: &Member) -> Result<Option<ClientApiTls>, ServeError> {
    let Some(identity) = member.identity() else {
        return Ok(None);
    };
    let config = herd_pki::tls::server_config_live(
        Arc::clone(&identity),
        ClientAuth::Optional,
        &[herd_pki::tls::ALPN_H2],
    )
    .map_err(|e| ServeError::Tls(e.to_string()))?;
    Ok(Some(ClientApiTls {
        config: Arc::new(Current::new(config)),
        loopback: Credentials::Renewing(identity),
    }))
}

/// Serves the KV, Watch, Lease, Cluster, Maintenance, Lock and Election
/// services of `member` until `shutdown` resolves.
pub async fn serve(
    member: Arc<Member>,
    listener: Listener,
    max_request_bytes: usize,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_with(
        member,
        listener,
        ServeOptions::new(max_request_bytes),
        shutdown,
    )
    .await
}

/// [`serve`] with every tunable.
pub async fn serve_with(
    member: Arc<Member>,
    listener: Listener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let addr = listener.addr;
    let max = options.max_request_bytes + GRPC_OVERHEAD;
    let tls = tls_for(&member)?;
    let own = match &tls {
        Some(t) => Client::lazy_with(&loopback(addr), &t.loopback)?,
        None => Client::lazy(&loopback(addr))?,
    };
    let incoming = match tls {
        Some(t) => conn::tls(listener.listener, t.config),
        None => conn::plaintext(listener.listener),
    };
    let access = Access {
        member: Arc::clone(&member),
    };
    tonic::transport::Server::builder()
        .add_service(
            KvServer::new(KvService {
                member: Arc::clone(&member),
                access: access.clone(),
            })
            .max_decoding_message_size(max),
        )
        .add_service(WatchServer::new(WatchService {
            member: Arc::clone(&member),
            access: access.clone(),
            progress_interval: options.watch_progress_interval,
        }))
        .add_service(LeaseServer::new(LeaseService {
            member: Arc::clone(&member),
            access: access.clone(),
        }))
        .add_service(ClusterServer::new(ClusterService {
            member: Arc::clone(&member),
            access: access.clone(),
        }))
        .add_service(MaintenanceServer::new(MaintenanceService {
            member: Arc::clone(&member),
            access: access.clone(),
        }))
        .add_service(AuthServer::new(AuthService {
            member: Arc::clone(&member),
            access: access.clone(),
        }))
        .add_service(LockServer::new(LockService {
            client: own.clone(),
            access: access.clone(),
        }))
        .add_service(ElectionServer::new(ElectionService {
            client: own,
            access,
        }))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|source| ServeError::Serve { addr, source })
}

/// Where the member's own client reaches this listener: the listening
/// address, or loopback for a wildcard one.
fn loopback(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port()).to_string()
    } else {
        addr.to_string()
    }
}
