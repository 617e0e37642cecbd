//! The read-only TFTP server: one listening socket, one task and one
//! ephemeral socket per transfer, a cap on concurrent transfers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::packet::{self, ErrorCode, Mode, Packet, Request, RequestOptions};
use super::root::{PathError, Root};

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
                    self.handle(&buf[..len], peer, &mut transfers).await;
                }
            }
        }
        transfers.shutdown().await;
    }

    async fn handle(&self, datagram: &[u8], peer: SocketAddr, transfers: &mut JoinSet<()>) {
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
        transfers.spawn(async move {
            let _permit = permit;
            let filename = request.filename.clone();
            let result = transfer(&shared, peer, request).await;
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

/// Why a transfer ended early.
#[derive(Debug, thiserror::Error)]
enum TransferError {
    #[error("{0}")]
    Path(#[from] PathError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("client stopped answering after {0} retransmissions")]
    TimedOut(u32),
    #[error("client sent error {code:?}: {message}")]
    ClientError { code: ErrorCode, message: String },
    #[error("file shrank while being sent")]
    FileChanged,
}

/// Options the server granted, after applying its own limits.
#[derive(Debug, Clone, Copy)]
struct Granted {
    blksize: usize,
    windowsize: u64,
    timeout: Duration,
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

/// Maps a 16-bit block number from an ACK to the full block index nearest
/// to `reference` (block numbers wrap past 65535 on files over 32 MB).
fn unwrap_block(reference: u64, wire: u16) -> u64 {
    let base = reference & !0xffff;
    let mut candidate = base | u64::from(wire);
    if candidate > reference + 0x8000 && candidate >= 0x10000 {
        candidate -= 0x10000;
    } else if candidate + 0x8000 < reference {
        candidate += 0x10000;
    }
    candidate
}

/// Sequential reader that keeps the bytes from the last acknowledged block
/// onward, so a window can be resent without reading the file again.
struct Window {
    file: tokio::fs::File,
    size: u64,
    blksize: usize,
    /// File offset of `buf[0]`.
    start: u64,
    buf: Vec<u8>,
}

impl Window {
    /// Bytes of block `index` (1-based). Only blocks after the last
    /// [`Window::release`] are available.
    async fn block(&mut self, index: u64) -> Result<&[u8], TransferError> {
        let from = (index - 1) * self.blksize as u64;
        let to = (from + self.blksize as u64).min(self.size);
        let end_in_buf = self.start + self.buf.len() as u64;
        if to > end_in_buf {
            // Read a large chunk per hop to the blocking pool.
            let want = ((to - end_in_buf) as usize).max(256 * 1024);
            let want = want.min((self.size - end_in_buf) as usize);
            let old = self.buf.len();
            self.buf.resize(old + want, 0);
            let mut filled = old;
            while filled < self.buf.len() {
                let n = self.file.read(&mut self.buf[filled..]).await?;
                if n == 0 {
                    return Err(TransferError::FileChanged);
                }
                filled += n;
            }
        }
        let a = (from - self.start) as usize;
        let b = (to - self.start) as usize;
        Ok(&self.buf[a..b])
    }

    /// Forgets blocks up to and including `acked`.
    fn release(&mut self, acked: u64) {
        let offset = (acked * self.blksize as u64).min(self.size);
        if offset > self.start {
            let n = ((offset - self.start) as usize).min(self.buf.len());
            // Compact only once a good part is dead, to keep this O(n) overall.
            if n >= self.buf.len() / 2 || n > 1 << 20 {
                self.buf.drain(..n);
                self.start += n as u64;
            }
        }
    }
}

async fn transfer(
    shared: &Shared,
    peer: SocketAddr,
    request: Request,
) -> Result<u64, TransferError> {
    let sock = UdpSocket::bind(SocketAddr::new(shared.local_ip, 0)).await?;
    sock.connect(peer).await?;
    let root = shared.root.clone();
    let name = request.filename.clone();
    let resolved = tokio::task::spawn_blocking(move || root.resolve(&name))
        .await
        .map_err(std::io::Error::other)?;
    let path = match resolved {
        Ok(p) => p,
        Err(e) => {
            let (code, msg) = match &e {
                PathError::NotFound(_) => (ErrorCode::FileNotFound, "file not found"),
                PathError::NotAFile(_) => (ErrorCode::FileNotFound, "not a file"),
                _ => (ErrorCode::AccessViolation, "access violation"),
            };
            let _ = sock
                .send(
                    &Packet::Error {
                        code,
                        message: msg.to_owned(),
                    }
                    .encode(),
                )
                .await;
            return Err(e.into());
        }
    };
    let file = tokio::fs::File::open(&path).await?;
    let size = file.metadata().await?.len();
    let (granted, oack) = grant(&shared.config, &request.options, size);
    debug!(%peer, file = %request.filename, ?granted, "TFTP transfer starting");

    let mut out = Vec::with_capacity(granted.blksize + 4);
    let mut inbuf = vec![0u8; packet::MAX_REQUEST_LEN];
    let retries = shared.config.retries;

    if !oack.is_empty() {
        let pkt = Packet::Oack(oack).encode();
        let mut tries = 0;
        sock.send(&pkt).await?;
        loop {
            match recv(&sock, &mut inbuf, granted.timeout).await? {
                Some(Packet::Ack { block: 0 }) => break,
                Some(Packet::Error { code, message }) => {
                    return Err(TransferError::ClientError { code, message });
                }
                // Anything else is ignored; only a timeout resends, so a
                // chatty client cannot make us send more than it does.
                Some(_) => {}
                None => {
                    tries += 1;
                    if tries > retries {
                        return Err(TransferError::TimedOut(retries));
                    }
                    sock.send(&pkt).await?;
                }
            }
        }
    }

    // Always one final block shorter than blksize (possibly empty).
    let nblocks = size / granted.blksize as u64 + 1;
    let mut window = Window {
        file,
        size,
        blksize: granted.blksize,
        start: 0,
        buf: Vec::new(),
    };
    let mut acked: u64 = 0;
    let mut next: u64 = 1;
    let mut tries = 0;
    while acked < nblocks {
        while next <= nblocks && next <= acked + granted.windowsize {
            let data = window.block(next).await?;
            packet::encode_data(&mut out, (next & 0xffff) as u16, data);
            sock.send(&out).await?;
            next += 1;
        }
        match recv(&sock, &mut inbuf, granted.timeout).await? {
            Some(Packet::Ack { block }) => {
                let n = unwrap_block(acked, block);
                if n > acked && n < next {
                    acked = n;
                    tries = 0;
                    window.release(acked);
                    // RFC 7440: an ACK short of the window means blocks after
                    // it were lost; resend from there.
                    next = acked + 1;
                }
                // Duplicate or stale ACKs are ignored: answering each would
                // start the Sorcerer's Apprentice syndrome.
            }
            Some(Packet::Error { code, message }) => {
                return Err(TransferError::ClientError { code, message });
            }
            Some(_) => {}
            None => {
                tries += 1;
                if tries > retries {
                    return Err(TransferError::TimedOut(retries));
                }
                next = acked + 1;
            }
        }
    }
    Ok(size)
}

/// Waits up to `timeout` for a decodable packet from the connected peer.
/// `Ok(None)` is a timeout; undecodable datagrams are logged and skipped.
async fn recv(
    sock: &UdpSocket,
    buf: &mut [u8],
    timeout: Duration,
) -> Result<Option<Packet>, TransferError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // The ACK has often arrived already (windowed transfers): skip the
        // timer registration then.
        let ready = match sock.try_recv(buf) {
            Ok(n) => Some(Ok(n)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            Err(e) => Some(Err(e)),
        };
        let received = match ready {
            Some(r) => Ok(r),
            None => tokio::time::timeout_at(deadline, sock.recv(buf)).await,
        };
        let n = match received {
            Err(_) => return Ok(None),
            Ok(Ok(n)) => n,
            // ECONNREFUSED: the client's port is gone; it will not come back.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(TransferError::Io(e));
            }
            Ok(Err(e)) => return Err(e.into()),
        };
        match Packet::decode(&buf[..n]) {
            Ok(p) => return Ok(Some(p)),
            Err(e) => warn!(error = %e, "malformed TFTP packet during transfer dropped"),
        }
    }
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
    fn block_numbers_unwrap_across_rollover() {
        assert_eq!(unwrap_block(0, 1), 1);
        assert_eq!(unwrap_block(65535, 0), 65536);
        assert_eq!(unwrap_block(65536, 65535), 65535);
        assert_eq!(unwrap_block(65540, 3), 65539);
        assert_eq!(unwrap_block(131070, 2), 131074);
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
