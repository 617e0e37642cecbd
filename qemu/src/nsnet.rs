//! Reaching the lab network from the host: a TCP connection opened from a
//! short-lived thread that has entered the lab namespace. The socket stays
//! in that namespace after the thread exits, so the rest of the lab (on the
//! tokio runtime, in the host namespace) uses it like any other.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

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

/// Opens the HTTP client's sockets inside a namespace.
struct InNamespace {
    netns: String,
    timeout: Duration,
}

impl herd_http::Connect for InNamespace {
    fn connect(
        &self,
        host: String,
        port: u16,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<tokio::net::TcpStream>> + Send>,
    > {
        let (netns, timeout) = (self.netns.clone(), self.timeout);
        Box::pin(async move {
            let ip: std::net::IpAddr = host
                .parse()
                .map_err(|_| std::io::Error::other(format!("{host} is not an IP address")))?;
            connect(&netns, SocketAddr::new(ip, port), timeout)
                .await
                .map_err(std::io::Error::other)
        })
    }
}

/// The HTTP client (`herd-http`) with its sockets in namespace `netns`.
pub fn http(netns: &str, timeout: Duration) -> herd_http::Client {
    herd_http::Client::new()
        .with_timeout(timeout)
        .with_connect(InNamespace {
            netns: netns.to_owned(),
            timeout,
        })
}
