//! The outgoing side: connections to other members (TLS with this
//! member's certificate, or plaintext with the token), pooled per peer, one
//! request frame and one response frame per call; and the one call a
//! machine without a certificate makes, [`PeerClient::join`].

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::secure::ClientSecurity;
use super::{
    ACCEPTED, Forward, ForwardResponse, HELLO, JOIN_MAGIC, JoinGrant, JoinRequest, MAGIC,
    Partition, PeerRequest, PeerResponse, Refusal, WireError, read_frame, write_frame,
};

const POOL_PER_PEER: usize = 64;

/// A connection to a peer, plaintext or TLS.
pub(super) trait PeerIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> PeerIo for T {}
type PeerStream = Box<dyn PeerIo>;

/// Why a peer call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("partitioned from member {0:x} (fault injection)")]
    Partitioned(u64),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("unexpected response kind")]
    Protocol,
}

/// Outgoing side: connection pools per peer address.
pub struct PeerClient {
    my_id: u64,
    security: ClientSecurity,
    cluster: Arc<AtomicU64>,
    partition: Partition,
    pool: Mutex<HashMap<String, Vec<PeerStream>>>,
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

async fn tls_connect(addr: &str, config: Arc<rustls::ClientConfig>) -> io::Result<PeerStream> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = herd_pki::tls::server_name(host_of(addr)).map_err(io::Error::other)?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    Ok(Box::new(tls))
}

impl PeerClient {
    /// `cluster` is this member's cluster id (0 until it has one), read at
    /// every new connection.
    pub fn new(
        my_id: u64,
        security: ClientSecurity,
        cluster: Arc<AtomicU64>,
        partition: Partition,
    ) -> Self {
        PeerClient {
            my_id,
            security,
            cluster,
            partition,
            pool: Mutex::new(HashMap::new()),
        }
    }

    async fn connect(&self, addr: &str) -> io::Result<PeerStream> {
        let (mut s, token_hash): (PeerStream, [u8; 32]) = match &self.security {
            ClientSecurity::Token(token) => {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                (Box::new(tcp), token.0)
            }
            ClientSecurity::Tls(config) => (tls_connect(addr, config.get()).await?, [0; 32]),
        };
        let mut hello = Vec::with_capacity(HELLO);
        hello.extend_from_slice(MAGIC);
        hello.extend_from_slice(&self.my_id.to_le_bytes());
        hello.extend_from_slice(&token_hash);
        hello.extend_from_slice(&self.cluster.load(Ordering::SeqCst).to_le_bytes());
        s.write_all(&hello).await?;
        let code = s.read_u8().await.ok();
        if code == Some(ACCEPTED) {
            return Ok(s);
        }
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("peer rejected the handshake: {}", Refusal::explain(code)),
        ))
    }

    pub(super) async fn call(
        &self,
        target: u64,
        addr: &str,
        req: &PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, CallError> {
        if self.partition.blocks(target) {
            return Err(CallError::Partitioned(target));
        }
        let payload = postcard::to_allocvec(req).map_err(|e| io::Error::other(e.to_string()))?;
        let pooled = self
            .pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(addr)
            .and_then(Vec::pop);
        let work = async {
            let mut stream = match pooled {
                Some(s) => s,
                None => self.connect(addr).await?,
            };
            write_frame(&mut stream, &payload).await?;
            let bytes = read_frame(&mut stream).await?;
            let resp: PeerResponse = postcard::from_bytes(&bytes)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            Ok::<_, io::Error>((stream, resp))
        };
        let (stream, resp) = tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| CallError::Timeout(timeout))??;
        if self.partition.blocks(target) {
            return Err(CallError::Partitioned(target));
        }
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        let conns = pool.entry(addr.to_string()).or_default();
        if conns.len() < POOL_PER_PEER {
            conns.push(stream);
        }
        Ok(resp)
    }

    /// Sends a forwarded request to the member at `addr`.
    pub async fn forward(
        &self,
        target: u64,
        addr: &str,
        req: Forward,
        timeout: Duration,
    ) -> Result<Result<ForwardResponse, WireError>, CallError> {
        match self
            .call(target, addr, &PeerRequest::Forward(req), timeout)
            .await?
        {
            PeerResponse::Forward(r) => Ok(r),
            _ => Err(CallError::Protocol),
        }
    }
}

/// Asks the member at `addr` to admit this machine (TLS mode): the
/// connection trusts only a server whose CA matches `tls` (the join
/// token's pinned hash) and carries no certificate of its own.
pub async fn join(
    addr: &str,
    tls: Arc<rustls::ClientConfig>,
    req: &JoinRequest,
    timeout: Duration,
) -> Result<Result<JoinGrant, WireError>, CallError> {
    let work = async {
        let mut s = tls_connect(addr, tls).await?;
        s.write_all(JOIN_MAGIC).await?;
        let payload = postcard::to_allocvec(req).map_err(|e| io::Error::other(e.to_string()))?;
        write_frame(&mut s, &payload).await?;
        let bytes = read_frame(&mut s).await?;
        postcard::from_bytes::<Result<JoinGrant, WireError>>(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    };
    Ok(tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| CallError::Timeout(timeout))??)
}
