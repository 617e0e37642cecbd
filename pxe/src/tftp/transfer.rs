//! One TFTP read transfer, on its own blocking thread with its own socket.
//!
//! Why a thread and not a task: TFTP without windowsize (every PXE ROM,
//! iPXE) is one round trip per block, so its speed is the latency of one
//! wake-up. A blocking `recv` is woken directly by the kernel; a tokio task
//! is woken through epoll, the reactor and a worker hand-off, which measured
//! about twice as slow per block as dnsmasq's poll loop. Transfers are
//! capped by the server's semaphore, so threads are too.
//!
//! Windows (RFC 7440) are sent with UDP generic segmentation offload when
//! the kernel allows it: one `send` carries up to 64 blocks and the stack
//! splits it into datagrams late, instead of one syscall and one trip
//! through the stack per block. Where GSO is refused (old kernels, blocks
//! larger than the path MTU) the transfer falls back to one send per block.

use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::packet::{self, ErrorCode, Packet};
use super::root::PathError;

/// Why a transfer ended early.
#[derive(Debug, thiserror::Error)]
pub(super) enum TransferError {
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
    #[error("server shutting down")]
    Cancelled,
}

/// Options the server granted, after applying its own limits.
#[derive(Debug, Clone, Copy)]
pub(super) struct Granted {
    pub blksize: usize,
    pub windowsize: u64,
    pub timeout: Duration,
}

/// How often a waiting transfer looks at the shutdown token.
const CANCEL_CHECK: Duration = Duration::from_millis(200);

/// `UDP_SEGMENT` from `<linux/udp.h>` (the libc crate lacks it for glibc).
const UDP_SEGMENT: libc::c_int = 103;
/// Segments per GSO send: the kernel's limit is 64 or 128 depending on
/// version, and a send's payload must fit a 64 KiB datagram.
const GSO_MAX_SEGMENTS: usize = 64;
const GSO_MAX_BYTES: usize = 65_000;

/// Maps a 16-bit block number from an ACK to the full block index nearest
/// to `reference` (block numbers wrap past 65535 on files over 32 MB).
pub(super) fn unwrap_block(reference: u64, wire: u16) -> u64 {
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
    file: std::fs::File,
    size: u64,
    blksize: usize,
    /// File offset of `buf[0]`.
    start: u64,
    buf: Vec<u8>,
}

impl Window {
    /// Bytes of block `index` (1-based). Only blocks after the last
    /// [`Window::release`] are available.
    fn block(&mut self, index: u64) -> Result<&[u8], TransferError> {
        let from = (index - 1) * self.blksize as u64;
        let to = (from + self.blksize as u64).min(self.size);
        let end_in_buf = self.start + self.buf.len() as u64;
        if to > end_in_buf {
            let want = ((to - end_in_buf) as usize).max(256 * 1024);
            let want = want.min((self.size - end_in_buf) as usize);
            let old = self.buf.len();
            self.buf.resize(old + want, 0);
            let mut filled = old;
            while filled < self.buf.len() {
                let n = self.file.read(&mut self.buf[filled..])?;
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

/// Sends DATA packets, batched with UDP GSO while the kernel takes it.
struct Sender<'a> {
    sock: &'a UdpSocket,
    /// Datagram size GSO is set to (`blksize + 4`), or `None` per packet.
    gso: Option<usize>,
    batch: Vec<u8>,
    segments: usize,
    single: Vec<u8>,
}

impl<'a> Sender<'a> {
    fn new(sock: &'a UdpSocket, blksize: usize, windowsize: u64) -> Sender<'a> {
        let datagram = blksize + 4;
        let gso = (windowsize > 1 && datagram <= GSO_MAX_BYTES / 2)
            .then_some(datagram)
            .filter(|&d| set_gso(sock, d).is_ok());
        Sender {
            sock,
            gso,
            batch: Vec::new(),
            segments: 0,
            single: Vec::with_capacity(datagram),
        }
    }

    /// Queues block `block` (wire number) with `data`. Only the last block
    /// of a batch may be shorter than the others (GSO's rule, and TFTP's:
    /// only the file's final block is short).
    fn push(&mut self, block: u16, data: &[u8]) -> std::io::Result<()> {
        let Some(datagram) = self.gso else {
            packet::encode_data(&mut self.single, block, data);
            self.sock.send(&self.single)?;
            return Ok(());
        };
        let start = self.batch.len();
        self.batch.extend_from_slice(&3u16.to_be_bytes());
        self.batch.extend_from_slice(&block.to_be_bytes());
        self.batch.extend_from_slice(data);
        self.segments += 1;
        let short = self.batch.len() - start < datagram;
        if short || self.segments >= GSO_MAX_SEGMENTS || self.batch.len() + datagram > GSO_MAX_BYTES
        {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let result = self.sock.send(&self.batch);
        match result {
            Ok(_) => {}
            // EIO: no checksum offload on the route; EINVAL: segment larger
            // than the path MTU or too many segments for this kernel.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL)) => {
                debug!(error = %e, "UDP GSO refused; sending block by block");
                let datagram = self.gso.take().unwrap_or(self.batch.len());
                let _ = set_gso(self.sock, 0);
                for d in self.batch.chunks(datagram) {
                    self.sock.send(d)?;
                }
            }
            Err(e) => return Err(e),
        }
        self.batch.clear();
        self.segments = 0;
        Ok(())
    }
}

fn set_gso(sock: &UdpSocket, size: usize) -> std::io::Result<()> {
    let value = libc::c_int::try_from(size).map_err(std::io::Error::other)?;
    // SAFETY: a plain setsockopt on a socket we own, with a correctly
    // sized int argument.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_UDP,
            UDP_SEGMENT,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Waits up to `timeout` for a decodable packet from the connected peer.
/// `Ok(None)` is a timeout; undecodable datagrams are logged and skipped.
fn recv(
    sock: &UdpSocket,
    buf: &mut [u8],
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<Option<Packet>, TransferError> {
    let deadline = Instant::now() + timeout;
    loop {
        let n = match sock.recv(buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if cancel.is_cancelled() {
                    return Err(TransferError::Cancelled);
                }
                if Instant::now() >= deadline {
                    return Ok(None);
                }
                continue;
            }
            // ECONNREFUSED: the client's port is gone; it will not come back.
            Err(e) => return Err(e.into()),
        };
        match Packet::decode(&buf[..n]) {
            Ok(p) => return Ok(Some(p)),
            Err(e) => warn!(error = %e, "malformed TFTP packet during transfer dropped"),
        }
    }
}

fn send_error(sock: &UdpSocket, code: ErrorCode, message: &str) {
    let _ = sock.send(
        &Packet::Error {
            code,
            message: message.to_owned(),
        }
        .encode(),
    );
}

/// Sends `path` to `sock`'s peer: OACK (if `oack` is not empty), then the
/// blocks in windows. Returns the bytes sent. Blocking.
pub(super) fn send_file(
    sock: &UdpSocket,
    size: u64,
    file: std::fs::File,
    granted: Granted,
    oack: Vec<(String, String)>,
    retries: u32,
    cancel: &CancellationToken,
) -> Result<u64, TransferError> {
    sock.set_read_timeout(Some(CANCEL_CHECK.min(granted.timeout)))?;
    let mut inbuf = vec![0u8; packet::MAX_REQUEST_LEN];

    if !oack.is_empty() {
        let pkt = Packet::Oack(oack).encode();
        let mut tries = 0;
        sock.send(&pkt)?;
        loop {
            match recv(sock, &mut inbuf, granted.timeout, cancel)? {
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
                    sock.send(&pkt)?;
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
    let mut sender = Sender::new(sock, granted.blksize, granted.windowsize);
    let mut acked: u64 = 0;
    let mut next: u64 = 1;
    let mut tries = 0;
    while acked < nblocks {
        while next <= nblocks && next <= acked + granted.windowsize {
            let data = window.block(next)?;
            sender.push((next & 0xffff) as u16, data)?;
            next += 1;
        }
        sender.flush()?;
        match recv(sock, &mut inbuf, granted.timeout, cancel)? {
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

/// Binds the transfer socket (RFC 1350's new TID) to `local`, connected to
/// `peer`, with a send buffer that holds a whole window.
pub(super) fn bind(local: SocketAddr, peer: SocketAddr) -> std::io::Result<UdpSocket> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(local),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = sock.set_send_buffer_size(1 << 20);
    sock.bind(&SocketAddr::new(local.ip(), 0).into())?;
    sock.connect(&peer.into())?;
    Ok(sock.into())
}

/// Answers a request whose path was refused, naming the reason in TFTP terms.
pub(super) fn refuse(sock: &UdpSocket, e: &PathError) {
    let (code, msg) = match e {
        PathError::NotFound(_) => (ErrorCode::FileNotFound, "file not found"),
        PathError::NotAFile(_) => (ErrorCode::FileNotFound, "not a file"),
        _ => (ErrorCode::AccessViolation, "access violation"),
    };
    send_error(sock, code, msg);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_numbers_unwrap_across_rollover() {
        assert_eq!(unwrap_block(0, 1), 1);
        assert_eq!(unwrap_block(65535, 0), 65536);
        assert_eq!(unwrap_block(65536, 65535), 65535);
        assert_eq!(unwrap_block(65540, 3), 65539);
        assert_eq!(unwrap_block(131070, 2), 131074);
    }

    /// GSO batches arrive as separate datagrams, each one block, in order,
    /// with the short final block last.
    #[test]
    fn gso_batches_arrive_as_single_blocks() {
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let sock = bind("127.0.0.1:0".parse().unwrap(), client.local_addr().unwrap()).unwrap();
        let mut sender = Sender::new(&sock, 100, 8);
        let data: Vec<u8> = (0..750u32).map(|i| i as u8).collect();
        for (i, chunk) in data.chunks(100).enumerate() {
            sender.push(i as u16 + 1, chunk).unwrap();
        }
        sender.flush().unwrap();
        let mut buf = [0u8; 2048];
        for (i, chunk) in data.chunks(100).enumerate() {
            let n = client.recv(&mut buf).unwrap();
            assert_eq!(
                Packet::decode(&buf[..n]).unwrap(),
                Packet::Data {
                    block: i as u16 + 1,
                    data: chunk.to_vec()
                }
            );
        }
    }
}
