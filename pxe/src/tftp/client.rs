//! A small read-only TFTP client (RFC 1350 + 2347/2348/2349/7440) for the
//! benchmark and for checking a server by hand (`herd pxe tftp-get`).
//!
//! It asks for blksize, windowsize and tsize and falls back to what the
//! server grants: a server without RFC 7440 (dnsmasq) leaves windowsize out
//! of its OACK, and the transfer runs lockstep with one ACK per block. It
//! checks what it receives: block order, the final short block, and the
//! total against the tsize the server announced.
//!
//! Blocking: run it on a blocking thread.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use super::packet::{self, ErrorCode, Mode, Packet, Request, RequestOptions};

/// What to ask the server for.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// RFC 2348 block size; `None` keeps RFC 1350's 512 bytes.
    pub blksize: Option<u16>,
    /// RFC 7440 window; `None` (or a server that ignores it) means lockstep.
    pub windowsize: Option<u16>,
    /// Wait this long for a packet before resending our last one.
    pub timeout: Duration,
    /// Resends of one packet before giving up.
    pub retries: u32,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            blksize: None,
            windowsize: None,
            timeout: Duration::from_secs(1),
            retries: 5,
        }
    }
}

/// What a finished transfer looked like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub bytes: u64,
    /// Block size and window the server granted.
    pub blksize: u16,
    pub windowsize: u16,
    /// ACKs we sent that were not at a window's end: gaps and timeouts.
    pub recoveries: u64,
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("server sent error {code:?}: {message}")]
    Server { code: ErrorCode, message: String },
    #[error("no answer from the server after {0} retransmissions")]
    TimedOut(u32),
    #[error("server granted option {name}={value}, which was not asked for or is out of range")]
    BadOack { name: String, value: String },
    #[error("server announced {announced} bytes (tsize) but sent {received}")]
    SizeMismatch { announced: u64, received: u64 },
    #[error("block {block} carries {len} bytes, more than the {blksize}-byte block size")]
    OversizedBlock {
        block: u16,
        len: usize,
        blksize: u16,
    },
}

/// Downloads `filename` from `server` into `out`.
pub fn get(
    server: SocketAddr,
    filename: &str,
    opts: &Options,
    out: &mut impl Write,
) -> Result<Summary, ClientError> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal address")
    } else {
        "[::]:0".parse().expect("literal address")
    };
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(server),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // A whole window arrives back to back; a default-sized buffer drops the
    // tail of large windows and the measurement would be of retransmits.
    let _ = sock.set_recv_buffer_size(8 << 20);
    sock.bind(&bind.into())?;
    let sock: UdpSocket = sock.into();
    sock.set_read_timeout(Some(opts.timeout))?;

    let rrq = Packet::Rrq(Request {
        filename: filename.to_owned(),
        mode: Mode::Octet,
        options: RequestOptions {
            blksize: opts.blksize,
            tsize: Some(0),
            timeout: None,
            windowsize: opts.windowsize,
        },
    })
    .encode();

    let mut buf = vec![0u8; usize::from(packet::MAX_BLKSIZE) + 4];
    let mut blksize: u16 = 512;
    let mut windowsize: u16 = 1;
    let mut tsize: Option<u64> = None;
    // The server's transfer port (RFC 1350's TID), learnt from its first reply.
    let mut peer: Option<SocketAddr> = None;
    sock.send_to(&rrq, server)?;
    let mut tries = 0;
    let mut received: u64 = 0;
    // Full block index of the last in-order block (0 = none yet).
    let mut have: u64 = 0;
    let mut in_window: u16 = 0;
    let mut recoveries = 0;
    // After a gap we ACK once and then wait for the block we need, so a
    // burst of out-of-order blocks does not turn into a burst of ACKs.
    let mut gap_reported = false;
    let mut ack = Vec::with_capacity(4);
    loop {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                tries += 1;
                if tries > opts.retries {
                    return Err(ClientError::TimedOut(opts.retries));
                }
                recoveries += 1;
                match peer {
                    None => sock.send_to(&rrq, server)?,
                    // RFC 7440 §4: on a timeout the receiver ACKs the last
                    // block it has in order; the server resends from there.
                    Some(p) => {
                        Packet::Ack {
                            block: (have & 0xffff) as u16,
                        }
                        .encode_into(&mut ack);
                        in_window = 0;
                        sock.send_to(&ack, p)?
                    }
                };
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if from.ip() != server.ip() || peer.is_some_and(|p| p != from) {
            // RFC 1350: a packet from another TID gets an error and changes nothing.
            let _ = sock.send_to(
                &Packet::Error {
                    code: ErrorCode::UnknownTransferId,
                    message: "unknown transfer id".to_owned(),
                }
                .encode(),
                from,
            );
            continue;
        }
        let Ok(packet) = Packet::decode(&buf[..n]) else {
            continue;
        };
        match packet {
            Packet::Oack(granted) if peer.is_none() => {
                peer = Some(from);
                for (name, value) in granted {
                    let bad = || ClientError::BadOack {
                        name: name.clone(),
                        value: value.clone(),
                    };
                    match name.to_ascii_lowercase().as_str() {
                        "blksize" => {
                            let v: u16 = value.parse().map_err(|_| bad())?;
                            // RFC 2348: the server may only lower what we asked for.
                            if v < packet::MIN_BLKSIZE || Some(v) > opts.blksize {
                                return Err(bad());
                            }
                            blksize = v;
                        }
                        "windowsize" => {
                            let v: u16 = value.parse().map_err(|_| bad())?;
                            if v == 0 || Some(v) > opts.windowsize {
                                return Err(bad());
                            }
                            windowsize = v;
                        }
                        "tsize" => tsize = Some(value.parse().map_err(|_| bad())?),
                        _ => return Err(bad()),
                    }
                }
                Packet::Ack { block: 0 }.encode_into(&mut ack);
                sock.send_to(&ack, from)?;
                tries = 0;
            }
            Packet::Data { block, data } => {
                if peer.is_none() {
                    // An RFC 1350 server: no OACK, 512-byte lockstep.
                    peer = Some(from);
                }
                tries = 0;
                let expected = ((have + 1) & 0xffff) as u16;
                if block != expected {
                    // Old duplicates are ignored; a block from the future
                    // means some were lost: ACK what we have so the server
                    // resends from there (RFC 7440 §4).
                    let ahead = block.wrapping_sub(expected) < 0x8000;
                    if ahead && !gap_reported {
                        Packet::Ack {
                            block: (have & 0xffff) as u16,
                        }
                        .encode_into(&mut ack);
                        sock.send_to(&ack, from)?;
                        recoveries += 1;
                        gap_reported = true;
                        in_window = 0;
                    }
                    continue;
                }
                if data.len() > usize::from(blksize) {
                    return Err(ClientError::OversizedBlock {
                        block,
                        len: data.len(),
                        blksize,
                    });
                }
                out.write_all(&data)?;
                received += data.len() as u64;
                have += 1;
                in_window += 1;
                gap_reported = false;
                let last = data.len() < usize::from(blksize);
                if last || in_window >= windowsize {
                    Packet::Ack { block }.encode_into(&mut ack);
                    sock.send_to(&ack, from)?;
                    in_window = 0;
                }
                if last {
                    if let Some(announced) = tsize
                        && announced != received
                    {
                        return Err(ClientError::SizeMismatch {
                            announced,
                            received,
                        });
                    }
                    out.flush()?;
                    return Ok(Summary {
                        bytes: received,
                        blksize,
                        windowsize,
                        recoveries,
                    });
                }
            }
            Packet::Error { code, message } => {
                return Err(ClientError::Server { code, message });
            }
            // Duplicate OACKs (our ACK 0 was lost) are answered by the
            // timeout path; anything else is not for a reader.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;
    use tokio_util::sync::CancellationToken;

    use crate::tftp::{Config, Server, Subnet};

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Serves `files` from a temporary root on loopback; returns the address.
    async fn serve(
        files: &[(&str, &[u8])],
        max_windowsize: u16,
    ) -> (SocketAddr, CancellationToken, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        for (name, data) in files {
            std::fs::write(dir.path().join(name), data).unwrap();
        }
        let mut config = Config::new(
            dir.path().to_owned(),
            vec![Subnet::new("127.0.0.0".parse().unwrap(), 8).unwrap()],
        );
        config.max_windowsize = max_windowsize;
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), config, None)
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let token = CancellationToken::new();
        tokio::spawn(server.run(token.clone()));
        (addr, token, dir)
    }

    async fn fetch(addr: SocketAddr, name: &str, opts: Options) -> (Vec<u8>, Summary) {
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let s = get(addr, &name, &opts, &mut out).unwrap();
            (out, s)
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn windowed_download_matches_the_file() {
        // Not a multiple of any window: the last window is partial.
        let data = pattern(1468 * 100 + 77);
        let (addr, stop, _dir) = serve(&[("f.bin", &data)], 64).await;
        for w in [1, 16, 64] {
            let opts = Options {
                blksize: Some(1468),
                windowsize: Some(w),
                ..Options::default()
            };
            let (got, s) = fetch(addr, "f.bin", opts).await;
            assert_eq!(got, data, "windowsize {w}");
            assert_eq!(
                (s.blksize, s.windowsize, s.bytes),
                (1468, w, data.len() as u64)
            );
        }
        stop.cancel();
    }

    #[tokio::test]
    async fn server_limits_are_honoured() {
        // Exactly one full block: the transfer ends with an empty block.
        let data = pattern(512);
        let (addr, stop, _dir) = serve(&[("one.bin", &data)], 4).await;
        let opts = Options {
            blksize: None,
            windowsize: Some(32),
            ..Options::default()
        };
        let (got, s) = fetch(addr, "one.bin", opts).await;
        assert_eq!(got, data);
        assert_eq!((s.blksize, s.windowsize), (512, 4));
        stop.cancel();
    }

    #[tokio::test]
    async fn missing_file_is_the_servers_error() {
        let (addr, stop, _dir) = serve(&[], 64).await;
        let err = tokio::task::spawn_blocking(move || {
            get(addr, "nope", &Options::default(), &mut Vec::new()).unwrap_err()
        })
        .await
        .unwrap();
        assert!(
            matches!(
                err,
                ClientError::Server {
                    code: ErrorCode::FileNotFound,
                    ..
                }
            ),
            "{err}"
        );
        stop.cancel();
    }

    /// A hand-driven server that drops one block of the first window: the
    /// client must ACK the last in-order block and take the resend.
    #[test]
    fn a_lost_block_is_recovered() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let addr = server.local_addr().unwrap();
        let data = Arc::new(pattern(8 * 4 + 3));
        let expect = data.clone();
        let client = std::thread::spawn(move || {
            let opts = Options {
                blksize: Some(8),
                windowsize: Some(4),
                ..Options::default()
            };
            let mut out = Vec::new();
            let s = get(addr, "x", &opts, &mut out).unwrap();
            (out, s)
        });
        let mut buf = [0u8; 600];
        let (_, peer) = server.recv_from(&mut buf).unwrap();
        let send = |p: Packet| server.send_to(&p.encode(), peer).unwrap();
        let recv_ack = || {
            let mut b = [0u8; 64];
            let (n, _) = server.recv_from(&mut b).unwrap();
            match Packet::decode(&b[..n]).unwrap() {
                Packet::Ack { block } => block,
                other => panic!("expected an ACK, got {other:?}"),
            }
        };
        let block = |i: u16| Packet::Data {
            block: i,
            data: data[usize::from(i - 1) * 8..(usize::from(i) * 8).min(data.len())].to_vec(),
        };
        send(Packet::Oack(vec![
            ("blksize".into(), "8".into()),
            ("tsize".into(), data.len().to_string()),
            ("windowsize".into(), "4".into()),
        ]));
        assert_eq!(recv_ack(), 0);
        // Window 1..=4 with block 2 lost.
        for i in [1, 3, 4] {
            send(block(i));
        }
        assert_eq!(recv_ack(), 1, "the gap is reported once, at block 1");
        for i in 2..=5 {
            send(block(i));
        }
        assert_eq!(recv_ack(), 5);
        let (out, s) = client.join().unwrap();
        assert_eq!(out, *expect);
        assert_eq!(s.recoveries, 1);
    }
}
