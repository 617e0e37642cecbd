//! The etcd v3 gRPC API over a [`Member`]: every service on the member's
//! client address. The services translate protobuf messages to the store's
//! own types ([`convert`]); Lock and Election reuse the client's algorithms
//! over loopback, as etcd does.

mod cluster;
mod concurrency;
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

use tokio::net::TcpListener;
use tokio_stream::StreamExt;

use self::cluster::ClusterService;
use self::concurrency::{ElectionService, LockService};
use self::kv::KvService;
use self::lease::LeaseService;
use self::maintenance::MaintenanceService;
use self::watch::{DEFAULT_PROGRESS_INTERVAL, WatchService};
use crate::Member;
use herd_client::proto::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use herd_client::proto::v3electionpb::election_server::ElectionServer;
use herd_client::proto::v3lockpb::lock_server::LockServer;
use herd_client::{Client, ClientError};

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
    let own = Client::lazy(&addr.to_string())?;
    // Small gRPC replies must leave at once: without TCP_NODELAY, Nagle's
    // algorithm holds a reply until the client's delayed ACK (40 ms) for
    // clients that send a request's headers and body in separate writes
    // (the `etcd-client` crate: 44 ms per Range, issue 18).
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener.listener).map(
        |conn: std::io::Result<tokio::net::TcpStream>| {
            let conn = conn?;
            conn.set_nodelay(true)?;
            Ok::<_, std::io::Error>(conn)
        },
    );
    tonic::transport::Server::builder()
        .add_service(
            KvServer::new(KvService {
                member: Arc::clone(&member),
            })
            .max_decoding_message_size(max),
        )
        .add_service(WatchServer::new(WatchService {
            member: Arc::clone(&member),
            progress_interval: options.watch_progress_interval,
        }))
        .add_service(LeaseServer::new(LeaseService {
            member: Arc::clone(&member),
        }))
        .add_service(ClusterServer::new(ClusterService {
            member: Arc::clone(&member),
        }))
        .add_service(MaintenanceServer::new(MaintenanceService {
            member: Arc::clone(&member),
        }))
        .add_service(LockServer::new(LockService {
            client: own.clone(),
        }))
        .add_service(ElectionServer::new(ElectionService { client: own }))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|source| ServeError::Serve { addr, source })
}
