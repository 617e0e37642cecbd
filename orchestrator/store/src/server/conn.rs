//! The client API's connections, plaintext or TLS, carrying who the
//! client's certificate says it is into every request (tonic puts a
//! connection's `ConnectInfo` into each request's extensions).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use herd_pki::Identity;
use herd_pki::tls::Current;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::Stream;
use tonic::transport::server::Connected;

/// What a request knows of its connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Whether the connection is TLS (plaintext is `--insecure-plaintext`).
    pub tls: bool,
    /// The client certificate's identity (TLS with a certificate).
    pub identity: Option<Identity>,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// One client connection.
pub struct ClientConn {
    io: Io,
    info: ConnInfo,
}

impl Connected for ClientConn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for ClientConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

type Incoming = Pin<Box<dyn Stream<Item = io::Result<ClientConn>> + Send>>;

/// Plaintext connections. Small gRPC replies must leave at once: without
/// TCP_NODELAY, Nagle's algorithm holds a reply until the client's delayed
/// ACK (40 ms) for clients that send a request's headers and body in
/// separate writes (the `etcd-client` crate: 44 ms per Range, issue 18).
pub fn plaintext(listener: TcpListener) -> Incoming {
    Box::pin(futures::stream::unfold(listener, |l| async move {
        let next = l.accept().await.and_then(|(s, _)| {
            s.set_nodelay(true)?;
            Ok(ClientConn {
                io: Io::Plain(s),
                info: ConnInfo {
                    tls: false,
                    identity: None,
                },
            })
        });
        Some((next, l))
    }))
}

/// TLS connections, handshakes bounded (see `herd_pki::tls::accept`).
pub fn tls(listener: TcpListener, config: Arc<Current<rustls::ServerConfig>>) -> Incoming {
    let rx = herd_pki::tls::accept(listener, config, "client API");
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        let a = rx.recv().await?;
        Some((
            Ok(ClientConn {
                io: Io::Tls(Box::new(a.stream)),
                info: ConnInfo {
                    tls: true,
                    identity: a.peer,
                },
            }),
            rx,
        ))
    }))
}
