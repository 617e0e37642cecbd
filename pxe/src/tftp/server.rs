//! The read-only TFTP server: one listening task, one blocking thread and
//! one ephemeral socket per transfer (see `transfer`), a cap on transfers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::packet::{self, ErrorCode, Mode, Packet, Request, RequestOptions};
use super::root::Root;
use super::transfer::{self, Granted, TransferError};

/// An IPv4 network (`10.0.0.0/24`): requests from outside every configured
/// subnet get no answer, so the server cannot be used as a reflector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    addr: Ipv4Addr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid subnet {0:?}: expected ADDRESS/PREFIX such as 10.0.0.0/24")]
pub struct SubnetError(String);

impl Subnet {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Subnet, SubnetError> {
        if prefix > 32 {
            return Err(SubnetError(format!("{addr}/{prefix}")));
        }
        Ok(Subnet { addr, prefix })
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => (u32::from(v4) & self.mask()) == (u32::from(self.addr) & self.mask()),
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .is_some_and(|v4| self.contains(v4.into())),
        }
    }
}

impl FromStr for Subnet {
    type Err = SubnetError;
    fn from_str(s: &str) -> Result<Subnet, SubnetError> {
        let err = || SubnetError(s.to_owned());
        let (a, p) = s.split_once('/').ok_or_else(err)?;
        Subnet::new(a.parse().map_err(|_| err())?, p.parse().map_err(|_| err())?)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What the server serves and to whom.
#[derive(Debug, Clone)]
pub struct Config {
    pub root: PathBuf,
    /// Clients allowed to talk to the server; an empty list answers nobody.
    pub allowed: Vec<Subnet>,
    /// Transfers running at once; requests beyond it get a "busy" error.
    pub max_transfers: usize,
    /// Ignore the blksize option (512-byte blocks) for firmware that
    /// negotiates it and then mishandles it.
    pub refuse_blksize: bool,
    /// Retransmission timeout when the client does not ask for one.
    pub timeout: Duration,
    /// Retransmissions of one window before the transfer is abandoned.
    pub retries: u32,
    /// Largest windowsize granted (RFC 7440 lets the server lower it).
    pub max_windowsize: u16,
}

impl Config {
    pub fn new(root: PathBuf, allowed: Vec<Subnet>) -> Config {
        Config {
            root,
            allowed,
            max_transfers: 64,
            refuse_blksize: false,
            timeout: Duration::from_secs(1),
            retries: 5,
            max_windowsize: 64,
        }
    }
}

/// A finished (or abandoned) transfer, for the inventory.
#[derive(Debug, Clone)]
pub struct TransferEvent {
    pub peer: SocketAddr,
    pub filename: String,
    pub bytes: u64,
    pub completed: bool,
}

/// Called when a transfer ends.
pub type TransferHook = Arc<dyn Fn(TransferEvent) + Send + Sync>;

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("TFTP root {path}: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("binding TFTP socket on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A bound TFTP server, ready to [`Server::run`].
pub struct Server {
    socket: UdpSocket,
    shared: Arc<Shared>,
}

struct Shared {
    root: Root,
    config: Config,
    permits: Arc<Semaphore>,
    hook: Option<TransferHook>,
    /// Address transfer sockets bind to, so replies leave from the address
    /// the client talked to.
    local_ip: IpAddr,
}

impl Server {
    /// Binds the listening socket on `addr` (port 69 in production).
    pub async fn bind(
        addr: SocketAddr,
        config: Config,
        hook: Option<TransferHook>,
    ) -> Result<Server, ServerError> {
        let root = Root::new(&config.root).map_err(|source| ServerError::Root {
            path: config.root.clone(),
            source,
        })?;
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Server {
            socket,
            shared: Arc::new(Shared {
                root,
                permits: Arc::new(Semaphore::new(config.max_transfers)),
                config,
                hook,
                local_ip: addr.ip(),
            }),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Serves until `shutdown` is cancelled; running transfers are aborted then.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut transfers = JoinSet::new();
        let mut buf = vec![0u8; packet::MAX_REQUEST_LEN + 1];
        info!(addr = ?self.socket.local_addr().ok(), root = %self.shared.root.path().display(), "TFTP serving");
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(_) = transfers.join_next(), if !transfers.is_empty() => {}
                received = self.socket.recv_from(&mut buf) => {
                    let (len, peer) = match received {
                        Ok(r) => r,
                        Err(e) => {
                            // ICMP errors from earlier sends surface here; keep serving.
                            debug!(error = %e, "TFTP recv");
                            continue;
                        }
                    };
                    self.handle(&buf[..len], peer, &mut transfers, &shutdown).await;
                }
            }
        }
        transfers.shutdown().await;
    }

    async fn handle(
        &self,
        datagram: &[u8],
        peer: SocketAddr,
        transfers: &mut JoinSet<()>,
        shutdown: &CancellationToken,
    ) {
        let shared = &self.shared;
        if !shared.config.allowed.iter().any(|s| s.contains(peer.ip())) {
            warn!(%peer, "TFTP request from outside the served subnets dropped");
            return;
        }
        let packet = match Packet::decode(datagram) {
            Ok(p) => p,
            Err(e) => {
                warn!(%peer, error = %e, "malformed TFTP packet dropped");
                return;
            }
        };
        let request = match packet {
            Packet::Rrq(r) => r,
            Packet::Wrq(r) => {
                info!(%peer, file = %r.filename, "TFTP write request refused");
                self.reply_error(peer, ErrorCode::AccessViolation, "this server is read-only")
                    .await;
                return;
            }
            other => {
                debug!(%peer, packet = ?other, "stray TFTP packet on the listening port dropped");
                return;
            }
        };
        if request.mode != Mode::Octet {
            self.reply_error(
                peer,
                ErrorCode::IllegalOperation,
                "only octet (binary) mode is supported",
            )
            .await;
            return;
        }
        let Ok(permit) = shared.permits.clone().try_acquire_owned() else {
            warn!(%peer, file = %request.filename, "TFTP transfer limit reached");
            self.reply_error(peer, ErrorCode::NotDefined, "server busy, try again")
                .await;
            return;
        };
        let shared = shared.clone();
        let cancel = shutdown.clone();
        // A blocking thread per transfer: see `transfer` for why. It checks
        // `cancel` while waiting, so shutdown does not wait on a client.
        transfers.spawn_blocking(move || {
            let _permit = permit;
            let filename = request.filename.clone();
            let result = transfer(&shared, peer, request, &cancel);
            let (bytes, completed) = match &result {
                Ok(bytes) => {
                    info!(%peer, file = %filename, bytes, "TFTP transfer complete");
                    (*bytes, true)
                }
                Err(e) => {
                    warn!(%peer, file = %filename, error = %e, "TFTP transfer failed");
                    (0, false)
                }
            };
            if let Some(hook) = &shared.hook {
                hook(TransferEvent {
                    peer,
                    filename,
                    bytes,
                    completed,
                });
            }
        });
    }

    async fn reply_error(&self, peer: SocketAddr, code: ErrorCode, message: &str) {
        let pkt = Packet::Error {
            code,
            message: message.to_owned(),
        }
        .encode();
        if let Err(e) = self.socket.send_to(&pkt, peer).await {
            debug!(%peer, error = %e, "sending TFTP error");
        }
    }
}

fn grant(config: &Config, asked: &RequestOptions, size: u64) -> (Granted, Vec<(String, String)>) {
    let mut oack = Vec::new();
    let mut g = Granted {
        blksize: 512,
        windowsize: 1,
        timeout: config.timeout,
    };
    if let Some(b) = asked.blksize
        && !config.refuse_blksize
    {
        g.blksize = usize::from(b);
        oack.push(("blksize".to_owned(), b.to_string()));
    }
    if asked.tsize.is_some() {
        oack.push(("tsize".to_owned(), size.to_string()));
    }
    if let Some(t) = asked.timeout {
        g.timeout = Duration::from_secs(u64::from(t));
        oack.push(("timeout".to_owned(), t.to_string()));
    }
    if let Some(w) = asked.windowsize {
        let w = w.min(config.max_windowsize.max(1));
        g.windowsize = u64::from(w);
        oack.push(("windowsize".to_owned(), w.to_string()));
    }
    (g, oack)
}

/// Runs one transfer on the calling (blocking) thread. Returns the bytes sent.
fn transfer(
    shared: &Shared,
    peer: SocketAddr,
    request: Request,
    cancel: &CancellationToken,
) -> Result<u64, TransferError> {
    let sock = transfer::bind(SocketAddr::new(shared.local_ip, 0), peer)?;
    let path = match shared.root.resolve(&request.filename) {
        Ok(p) => p,
        Err(e) => {
            transfer::refuse(&sock, &e);
            return Err(e.into());
        }
    };
    let file = std::fs::File::open(&path)?;
    let size = file.metadata()?.len();
    let (granted, oack) = grant(&shared.config, &request.options, size);
    debug!(%peer, path = %path.display(), ?granted, "TFTP transfer starting");
    transfer::send_file(
        &sock,
        size,
        file,
        granted,
        oack,
        shared.config.retries,
        cancel,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_membership() {
        let s: Subnet = "10.9.0.0/24".parse().unwrap();
        assert!(s.contains("10.9.0.77".parse().unwrap()));
        assert!(!s.contains("10.9.1.1".parse().unwrap()));
        assert!(s.contains("::ffff:10.9.0.5".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Subnet>().is_err());
        assert!("10.0.0.0".parse::<Subnet>().is_err());
        let all: Subnet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn refused_blksize_is_left_out_of_the_oack() {
        let mut c = Config::new(PathBuf::from("/"), vec![]);
        c.refuse_blksize = true;
        let asked = RequestOptions {
            blksize: Some(1468),
            tsize: Some(0),
            ..Default::default()
        };
        let (g, oack) = grant(&c, &asked, 1234);
        assert_eq!(g.blksize, 512);
        assert_eq!(oack, vec![("tsize".to_owned(), "1234".to_owned())]);
        c.max_windowsize = 4;
        let asked = RequestOptions {
            windowsize: Some(16),
            ..Default::default()
        };
        let (g, oack) = grant(&c, &asked, 0);
        assert_eq!(g.windowsize, 4);
        assert_eq!(oack, vec![("windowsize".to_owned(), "4".to_owned())]);
    }
}
