//! Reaching the lab network from the host: a TCP connection opened from a
//! short-lived thread that has entered the lab namespace. The socket stays
//! in that namespace after the thread exits, so the rest of the lab (on the
//! tokio runtime, in the host namespace) uses it like any other.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Errors talking to a service inside the lab namespace.
#[derive(Debug, thiserror::Error)]
pub enum NsNetError {
    #[error("entering namespace {netns}: {source}")]
    Enter {
        netns: String,
        source: std::io::Error,
    },
    #[error("connecting to {addr} in namespace {netns}: {source}")]
    Connect {
        netns: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP GET http://{addr}{path}: {source}")]
    Io {
        addr: SocketAddr,
        path: String,
        source: std::io::Error,
    },
    #[error("HTTP GET http://{addr}{path}: {reason}")]
    Http {
        addr: SocketAddr,
        path: String,
        reason: String,
    },
}

/// Moves the calling thread into namespace `netns` (for good).
pub fn enter(netns: &str) -> std::io::Result<()> {
    let file = std::fs::File::open(format!("/run/netns/{netns}"))?;
    // SAFETY: setns on a valid namespace fd; it only changes this thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Opens a TCP connection to `addr` inside namespace `netns`.
pub async fn connect(
    netns: &str,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<tokio::net::TcpStream, NsNetError> {
    let ns = netns.to_owned();
    // A fresh thread (not a pooled blocking thread): it leaves the host
    // namespace for good and must not run anything else afterwards.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = enter(&ns)
            .map_err(|source| NsNetError::Enter {
                netns: ns.clone(),
                source,
            })
            .and_then(|()| {
                std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|source| {
                    NsNetError::Connect {
                        netns: ns.clone(),
                        addr,
                        source,
                    }
                })
            });
        let _ = tx.send(result);
    });
    let stream = rx.await.expect("connect thread always answers")?;
    stream
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpStream::from_std(stream))
        .map_err(|source| NsNetError::Connect {
            netns: netns.to_owned(),
            addr,
            source,
        })
}

/// A plain HTTP/1.1 GET inside the namespace; returns the body of a 200.
pub async fn http_get(
    netns: &str,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<Vec<u8>, NsNetError> {
    let io = |source| NsNetError::Io {
        addr,
        path: path.to_owned(),
        source,
    };
    let exchange = async {
        let mut stream = connect(netns, addr, timeout).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.map_err(io)?;
        parse_response(&response).map_err(|reason| NsNetError::Http {
            addr,
            path: path.to_owned(),
            reason,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(NsNetError::Http {
                addr,
                path: path.to_owned(),
                reason: format!("no answer within {timeout:?}"),
            })
        })
}

/// The body of a `200` response (`Content-Length` or read-to-close; chunked
/// encoding is decoded too, as hyper-based servers use it).
pub fn parse_response(response: &[u8]) -> Result<Vec<u8>, String> {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("response has no end of headers")?;
    let head = String::from_utf8_lossy(&response[..split]);
    let body = &response[split + 4..];
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        return Err(format!("server answered {status:?}"));
    }
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Ok(body.to_vec());
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_chunked_bodies_decode() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]";
        assert_eq!(parse_response(plain).unwrap(), b"[]");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), b"abcde");
        let e = parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n").unwrap_err();
        assert!(e.contains("404"), "{e}");
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
    }
}
