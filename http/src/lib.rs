//! The one HTTP/1.1 client herd's crates fetch with: cloud-configs, the
//! provisioning server's API, disk images and update payloads, status
//! endpoints. One connection per request (these are occasional calls, not
//! a hot path), every call bounded by a timeout, bodies bounded in size
//! unless streamed, and every error naming the URL.
//!
//! Where the socket comes from is pluggable ([`Connect`]): the lab opens
//! its sockets from a thread inside the lab's network namespace.
//! `https://` URLs need a TLS configuration ([`Client::with_tls`]): the
//! cluster's APIs trust the cluster CA, not the system's roots.
//!
//! [`server`] is the other side: serving an API over TLS, each request
//! carrying its caller's certificate identity.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub mod server;

pub use http::{Method, StatusCode};

/// Why a request failed; every variant names the URL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{url:?} is not a usable http(s):// URL: {reason}")]
    Url { url: String, reason: String },
    #[error("connecting to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: TLS: {source}")]
    Tls {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{method} {url}: {source}")]
    Protocol {
        method: Method,
        url: String,
        #[source]
        source: hyper::Error,
    },
    #[error("{method} {url}: no answer within {timeout:?}")]
    Timeout {
        method: Method,
        url: String,
        timeout: Duration,
    },
    #[error("{method} {url}: {status}: {body}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{method} {url}: the body is larger than {limit} bytes")]
    TooLarge {
        method: Method,
        url: String,
        limit: usize,
    },
    #[error("{url}: {what}: {source}")]
    Json {
        url: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{url}: writing the body: {source}")]
    Sink {
        url: String,
        #[source]
        source: std::io::Error,
    },
}

/// A connection HTTP runs over: plain TCP or TLS on it (for callers that
/// open their own, as an upgrade proxy does).
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

type ConnectFuture = Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send>>;

/// Opens the TCP connection for a request to `host:port`.
pub trait Connect: Send + Sync + 'static {
    fn connect(&self, host: String, port: u16) -> ConnectFuture;
}

/// Connects from the calling runtime's network namespace.
#[derive(Debug, Clone, Copy, Default)]
pub struct Direct;

impl Connect for Direct {
    fn connect(&self, host: String, port: u16) -> ConnectFuture {
        Box::pin(async move {
            let stream = TcpStream::connect((host.as_str(), port)).await?;
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    }
}

/// A response whose body was read whole.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A 2xx answer whose body is read as it arrives ([`Client::open`]).
#[derive(Debug)]
pub struct Streaming {
    pub headers: http::HeaderMap,
    body: Incoming,
    method: Method,
    url: String,
}

impl Streaming {
    /// The next piece of the body; `None` once it ended.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        while let Some(frame) = self.body.frame().await {
            let frame = frame.map_err(|source| Error::Protocol {
                method: self.method.clone(),
                url: self.url.clone(),
                source,
            })?;
            if let Ok(data) = frame.into_data() {
                return Ok(Some(data));
            }
        }
        Ok(None)
    }
}

/// A request to send: method, URL, headers, body.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    body: Bytes,
}

impl Request {
    pub fn new(method: Method, url: impl Into<String>) -> Request {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn get(url: impl Into<String>) -> Request {
        Request::new(Method::GET, url)
    }

    pub fn post(url: impl Into<String>) -> Request {
        Request::new(Method::POST, url)
    }

    /// Adds a header; a name or value that is not valid HTTP is dropped
    /// with a log line (callers pass constants and tokens they checked).
    pub fn header(mut self, name: &str, value: &str) -> Request {
        match (
            http::HeaderName::try_from(name),
            http::HeaderValue::try_from(value),
        ) {
            (Ok(n), Ok(v)) => self.headers.push((n, v)),
            _ => tracing::warn!(header = name, "invalid HTTP header left out"),
        }
        self
    }

    /// `Authorization: Bearer TOKEN`.
    pub fn bearer(self, token: &str) -> Request {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Request {
        self.body = body.into();
        self
    }

    /// A JSON body with its content type.
    pub fn json<T: serde::Serialize + ?Sized>(self, value: &T) -> Request {
        let body = serde_json::to_vec(value).expect("serializing to memory does not fail");
        self.header("content-type", "application/json").body(body)
    }
}

/// The client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    connect: Arc<dyn Connect>,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    max_body: usize,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("timeout", &self.timeout)
            .field("tls", &self.tls.is_some())
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

/// The parts of an `http(s)://` URL a request needs.
struct Target {
    tls: bool,
    host: String,
    port: u16,
    authority: String,
    path: String,
}

fn target(url: &str) -> Result<Target, Error> {
    let bad = |reason: &str| Error::Url {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    let tls = match parsed.scheme() {
        "http" => false,
        "https" => true,
        _ => return Err(bad("only http:// and https:// are supported")),
    };
    let host = parsed.host_str().ok_or_else(|| bad("no host"))?.to_owned();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let authority = match parsed.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let mut path = parsed.path().to_owned();
    if let Some(q) = parsed.query() {
        path.push('?');
        path.push_str(q);
    }
    Ok(Target {
        tls,
        // `[::1]` in a URL is `::1` to connect to.
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
        authority,
        path,
    })
}

/// The TLS client handshake with `host` (the name its certificate must
/// carry) on `stream`.
async fn tls_handshake(
    config: Arc<rustls::ClientConfig>,
    url: &str,
    host: &str,
    stream: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
    let name =
        rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| Error::Url {
            url: url.to_owned(),
            reason: format!("{host} is not a TLS server name: {e}"),
        })?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|source| Error::Tls {
            url: url.to_owned(),
            source,
        })
}

impl Client {
    /// Direct connections, 30 s per request, bodies up to 16 MiB.
    pub fn new() -> Client {
        Client {
            connect: Arc::new(Direct),
            tls: None,
            timeout: Duration::from_secs(30),
            max_body: 16 << 20,
        }
    }

    /// Opens sockets with `connect` instead.
    pub fn with_connect(mut self, connect: impl Connect) -> Client {
        self.connect = Arc::new(connect);
        self
    }

    /// Speaks TLS with `config` to `https://` URLs (whose server
    /// certificate it checks against the configuration's roots for the
    /// URL's host, and to which it presents the configuration's client
    /// certificate, if any).
    pub fn with_tls(mut self, config: Arc<rustls::ClientConfig>) -> Client {
        self.tls = Some(config);
        self
    }

    /// Bounds each request (connect, send, and reading the whole answer;
    /// for [`Client::download`]: until the body starts).
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Bounds the size of bodies read whole.
    pub fn with_max_body(mut self, bytes: usize) -> Client {
        self.max_body = bytes;
        self
    }

    async fn send(&self, req: &Request) -> Result<hyper::Response<Incoming>, Error> {
        let t = target(&req.url)?;
        let tls = match (&self.tls, t.tls) {
            (_, false) => None,
            (Some(config), true) => Some(Arc::clone(config)),
            (None, true) => {
                return Err(Error::Url {
                    url: req.url.clone(),
                    reason: "an https:// URL needs a TLS configuration (the cluster CA)".into(),
                });
            }
        };
        let stream = self
            .connect
            .connect(t.host.clone(), t.port)
            .await
            .map_err(|source| Error::Connect {
                url: req.url.clone(),
                source,
            })?;
        let stream: Box<dyn Io> = match tls {
            Some(config) => Box::new(tls_handshake(config, &req.url, &t.host, stream).await?),
            None => Box::new(stream),
        };
        let protocol = |source| Error::Protocol {
            method: req.method.clone(),
            url: req.url.clone(),
            source,
        };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(protocol)?;
        // The connection task ends with the response body (or its drop).
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
        let mut builder = http::Request::builder()
            .method(req.method.clone())
            .uri(&t.path)
            .header(http::header::HOST, &t.authority)
            .header(http::header::USER_AGENT, "herd")
            .header(http::header::CONNECTION, "close");
        for (name, value) in &req.headers {
            builder = builder.header(name, value);
        }
        let request = builder
            .body(Full::new(req.body.clone()))
            .map_err(|e| Error::Url {
                url: req.url.clone(),
                reason: e.to_string(),
            })?;
        sender.send_request(request).await.map_err(protocol)
    }

    fn timeout_err(&self, req: &Request) -> Error {
        Error::Timeout {
            method: req.method.clone(),
            url: req.url.clone(),
            timeout: self.timeout,
        }
    }

    /// Sends `req` and reads the whole answer, whatever its status.
    pub async fn fetch(&self, req: Request) -> Result<Response, Error> {
        let exchange = async {
            let resp = self.send(&req).await?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, self.max_body)
                .collect()
                .await
                .map_err(|e| match e.downcast::<hyper::Error>() {
                    Ok(source) => Error::Protocol {
                        method: req.method.clone(),
                        url: req.url.clone(),
                        source: *source,
                    },
                    Err(_) => Error::TooLarge {
                        method: req.method.clone(),
                        url: req.url.clone(),
                        limit: self.max_body,
                    },
                })?
                .to_bytes();
            Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(self.timeout_err(&req)))
    }

    /// Sends `req` and returns once the answer's head arrived (bounded by
    /// the timeout); its body is then read piece by piece, unbounded in
    /// time, as a watch's events arrive. A status other than 2xx is an
    /// error carrying the body.
    pub async fn open(&self, req: Request) -> Result<Streaming, Error> {
        let resp = tokio::time::timeout(self.timeout, self.send(&req))
            .await
            .unwrap_or_else(|_| Err(self.timeout_err(&req)))?;
        let status = resp.status();
        if !status.is_success() {
            let text = match tokio::time::timeout(self.timeout, resp.into_body().collect()).await {
                Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).trim().to_owned(),
                _ => String::new(),
            };
            return Err(Error::Status {
                method: req.method,
                url: req.url,
                status,
                body: text,
            });
        }
        let (parts, body) = resp.into_parts();
        Ok(Streaming {
            headers: parts.headers,
            body,
            method: req.method,
            url: req.url,
        })
    }

    /// Sends `req`; a status other than 2xx is an error carrying the body.
    pub async fn call(&self, req: Request) -> Result<Response, Error> {
        let (method, url) = (req.method.clone(), req.url.clone());
        let resp = self.fetch(req).await?;
        if !resp.status.is_success() {
            return Err(Error::Status {
                method,
                url,
                status: resp.status,
                body: resp.text().trim().to_owned(),
            });
        }
        Ok(resp)
    }

    /// `GET url`: the body of a 2xx answer.
    pub async fn get(&self, url: &str) -> Result<Bytes, Error> {
        Ok(self.call(Request::get(url)).await?.body)
    }

    /// `GET url` decoded as JSON.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, Error> {
        let body = self.get(url).await?;
        serde_json::from_slice(&body).map_err(|source| Error::Json {
            url: url.to_owned(),
            what: "decoding the answer",
            source,
        })
    }

    /// Streams the body of `GET url` from byte `offset` (an HTTP Range
    /// request, so an interrupted download resumes) into `sink`; returns
    /// the bytes written. A server that ignores the range (200 instead of
    /// 206) is only accepted from offset 0.
    pub async fn download<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        url: &str,
        offset: u64,
        sink: &mut W,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, Error> {
        let mut req = Request::get(url);
        if offset > 0 {
            req = req.header("range", &format!("bytes={offset}-"));
        }
        let resp = tokio::time::timeout(self.timeout, self.send(&req))
            .await
            .unwrap_or_else(|_| Err(self.timeout_err(&req)))?;
        let status = resp.status();
        let resumed = status == StatusCode::PARTIAL_CONTENT;
        if !(status.is_success() && (resumed || offset == 0)) {
            let text = match tokio::time::timeout(self.timeout, resp.into_body().collect()).await {
                Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).trim().to_owned(),
                _ => String::new(),
            };
            return Err(Error::Status {
                method: Method::GET,
                url: url.to_owned(),
                status,
                body: text,
            });
        }
        let mut body = resp.into_body();
        let mut written = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|source| Error::Protocol {
                method: Method::GET,
                url: url.to_owned(),
                source,
            })?;
            if let Ok(data) = frame.into_data() {
                sink.write_all(&data).await.map_err(|source| Error::Sink {
                    url: url.to_owned(),
                    source,
                })?;
                written += data.len() as u64;
                progress(written);
            }
        }
        sink.flush().await.map_err(|source| Error::Sink {
            url: url.to_owned(),
            source,
        })?;
        Ok(written)
    }
}

#[cfg(test)]
mod tests;
