//! `kubectl exec` over SPDY/3.1, as kubectl before 1.30 (Debian's 1.20
//! among them) speaks it: the upgrade, then one SPDY stream per channel —
//! `error`, `stdin`, `stdout`, `stderr`, `resize` — named by its
//! `streamType` header, each accepted as it is opened; the command's
//! output on `stdout`/`stderr`, and at the end its `Status` on `error`
//! (`v4.channel.k8s.io`; v2/v3 carry only a failure's message there).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bollard::container::LogOutput;
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::sync::Mutex;

use super::docker::{AttachedExec, Docker};
use super::exec::{ExecRequest, close_stdin, exit_status};
use super::spdy::{self, Frame, MAX_DATA};
use super::terminal_size::TerminalSize;

/// The remote-command protocols spoken over SPDY, preferred first.
pub const PROTOCOLS: [&str; 3] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
];
/// The header a client offers its protocols in, and the answer names one.
pub const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
/// How long a client has to open its streams after the upgrade.
const STREAMS_WITHIN: Duration = Duration::from_secs(30);

/// Whether a request asks to become a SPDY connection.
pub fn wants_spdy(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("SPDY/3.1"))
}

/// The best of the protocols a client offers, or why none will do.
pub fn negotiate(headers: &HeaderMap) -> Result<&'static str, String> {
    let offered: Vec<&str> = headers
        .get_all(PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    PROTOCOLS
        .into_iter()
        .find(|p| offered.contains(p))
        .ok_or_else(|| {
            format!(
                "none of the stream protocols offered ({}) is spoken: {}",
                offered.join(", "),
                PROTOCOLS.join(", ")
            )
        })
}

/// An accepted SPDY upgrade, before the answer.
pub struct Upgrade {
    on: hyper::upgrade::OnUpgrade,
    protocol: &'static str,
}

impl Upgrade {
    /// Takes the upgrade out of a request, with the best protocol offered.
    pub fn from_parts(parts: &mut Parts) -> Result<Upgrade, String> {
        let protocol = negotiate(&parts.headers)?;
        let on = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or("this connection cannot be upgraded")?;
        Ok(Upgrade { on, protocol })
    }

    /// Answers 101 and, once the connection is SPDY, relays the exec.
    pub fn accept(
        self,
        docker: Docker,
        attached: AttachedExec,
        request: ExecRequest,
        pod: String,
        container: String,
    ) -> Response {
        let Upgrade { on, protocol } = self;
        tokio::spawn(async move {
            let result = match on.await {
                Ok(io) => relay(TokioIo::new(io), docker, attached, request, protocol).await,
                Err(e) => Err(format!("the upgrade failed: {e}")),
            };
            if let Err(e) = result {
                tracing::info!(pod, container, error = %e, "exec stream ended early");
            }
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = response.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        h.insert(PROTOCOL_HEADER, HeaderValue::from_static(protocol));
        response
    }
}

/// The stream ids the client opened, by `streamType`.
#[derive(Default)]
struct Streams {
    error: Option<u32>,
    stdin: Option<u32>,
    stdout: Option<u32>,
    stderr: Option<u32>,
    resize: Option<u32>,
}

impl Streams {
    fn opened(&self) -> usize {
        [
            self.error,
            self.stdin,
            self.stdout,
            self.stderr,
            self.resize,
        ]
        .iter()
        .filter(|s| s.is_some())
        .count()
    }
}

/// The streams a client opens for `request` (the kubelet's rule).
fn expected(request: &ExecRequest, protocol: &str) -> usize {
    1 + usize::from(request.stdin)
        + usize::from(request.stdout)
        + usize::from(request.stderr && !request.tty)
        + usize::from(request.tty && protocol != PROTOCOLS[2])
}

/// The JSON values one after another in `data`, as text.
fn json_values(data: &[u8]) -> Vec<String> {
    serde_json::Deserializer::from_slice(data)
        .into_iter::<serde_json::Value>()
        .map_while(Result::ok)
        .map(|v| v.to_string())
        .collect()
}

type Out<IO> = Arc<Mutex<WriteHalf<IO>>>;

async fn send<IO: AsyncWrite>(out: &Out<IO>, frame: &[u8]) -> Result<(), String> {
    out.lock()
        .await
        .write_all(frame)
        .await
        .map_err(|e| format!("writing to the client: {e}"))
}

/// Accepts the client's streams, then carries stdin and resizes to the
/// exec and its output back, then the final status; ends when the
/// command has ended.
async fn relay<IO>(
    io: IO,
    docker: Docker,
    attached: AttachedExec,
    request: ExecRequest,
    protocol: &'static str,
) -> Result<(), String>
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, wr) = tokio::io::split(io);
    let out: Out<IO> = Arc::new(Mutex::new(wr));
    let mut reader = spdy::Reader::default();
    let mut writer = spdy::Writer::default();
    let mut streams = Streams::default();
    let mut last = 0;
    let want = expected(&request, protocol);
    let deadline = tokio::time::Instant::now() + STREAMS_WITHIN;
    while streams.opened() < want {
        let frame = tokio::time::timeout_at(deadline, reader.read(&mut rd))
            .await
            .map_err(|_| format!("the client opened {} of {want} streams", streams.opened()))?
            .map_err(|e| e.to_string())?
            .ok_or("the client left before opening its streams")?;
        match frame {
            Frame::SynStream {
                stream, headers, ..
            } => {
                let kind = headers
                    .iter()
                    .find(|(k, _)| k == "streamtype")
                    .map(|(_, v)| v.as_str());
                let slot = match kind {
                    Some("error") => &mut streams.error,
                    Some("stdin") => &mut streams.stdin,
                    Some("stdout") => &mut streams.stdout,
                    Some("stderr") => &mut streams.stderr,
                    Some("resize") => &mut streams.resize,
                    other => return Err(format!("a stream of unknown type {other:?}")),
                };
                *slot = Some(stream);
                last = last.max(stream);
                send(&out, &writer.syn_reply(stream)).await?;
            }
            Frame::Ping(id) => send(&out, &spdy::ping(id)).await?,
            Frame::GoAway => return Err("the client went away before its streams".into()),
            _ => {}
        }
    }
    let error = streams.error.ok_or("the client opened no error stream")?;
    let AttachedExec {
        id,
        mut output,
        mut input,
    } = attached;

    // The client's side: stdin (its FIN closes the command's stdin),
    // resizes, pings. It ends with the connection.
    let pings = Arc::clone(&out);
    let terminal = TerminalSize::new(docker.clone(), id.clone());
    let (stdin, resizes, tty) = (streams.stdin, streams.resize, request.tty);
    let inbound = tokio::spawn(async move {
        let mut stdin_open = stdin.is_some();
        while let Ok(Some(frame)) = reader.read(&mut rd).await {
            match frame {
                Frame::Data { stream, fin, data } if Some(stream) == stdin && stdin_open => {
                    stdin_open = input.write_all(&data).await.is_ok();
                    if fin {
                        close_stdin(&mut input, tty).await;
                        stdin_open = false;
                    }
                }
                Frame::Data { stream, data, .. } if Some(stream) == resizes => {
                    // kubectl's JSON encoder writes one size per frame,
                    // but a frame may carry several.
                    for size in json_values(&data) {
                        terminal.set(size.as_bytes());
                    }
                }
                Frame::Ping(id) if send(&pings, &spdy::ping(id)).await.is_err() => break,
                Frame::GoAway => break,
                _ => {}
            }
        }
        let _ = input.shutdown().await;
    });

    let result = async {
        while let Some(chunk) = output.next().await {
            let Some(chunk) = super::exec::output_chunk(chunk) else {
                break;
            };
            let (stream, bytes) = match chunk {
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    (streams.stdout, message)
                }
                LogOutput::StdErr { message } => (streams.stderr, message),
                LogOutput::StdIn { .. } => continue,
            };
            if let Some(stream) = stream {
                for piece in bytes.chunks(MAX_DATA) {
                    send(&out, &spdy::data(stream, false, piece)).await?;
                }
            }
        }
        let status = exit_status(&docker, &id, &request.command).await?;
        for stream in [streams.stdout, streams.stderr].into_iter().flatten() {
            send(&out, &spdy::data(stream, true, &[])).await?;
        }
        let report = if protocol == PROTOCOLS[0] {
            status.to_string()
        } else if status["status"] == "Success" {
            String::new()
        } else {
            status["message"].as_str().unwrap_or_default().to_owned()
        };
        send(&out, &spdy::data(error, true, report.as_bytes())).await?;
        Ok(())
    }
    .await;
    // The client closes once it has read the status; a client that does
    // not is closed on.
    let mut inbound = inbound;
    if tokio::time::timeout(Duration::from_secs(5), &mut inbound)
        .await
        .is_err()
    {
        inbound.abort();
    }
    let mut out = out.lock().await;
    let _ = out.write_all(&spdy::goaway(last)).await;
    let _ = out.shutdown().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_streams_expected_follow_the_request_and_protocol() {
        let r = |stdin, stderr, tty| ExecRequest {
            command: vec!["sh".into()],
            stdin,
            stdout: true,
            stderr,
            tty,
        };
        assert_eq!(expected(&r(false, true, false), PROTOCOLS[0]), 3);
        assert_eq!(expected(&r(true, true, false), PROTOCOLS[0]), 4);
        // A terminal merges stderr into stdout and adds the resize stream
        // (not in v2).
        assert_eq!(expected(&r(true, true, true), PROTOCOLS[0]), 4);
        assert_eq!(expected(&r(true, true, true), PROTOCOLS[2]), 3);
    }

    #[test]
    fn the_best_offered_protocol_is_taken_and_none_is_refused_by_name() {
        let headers = |offer: &[&str]| {
            let mut h = HeaderMap::new();
            h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            for o in offer {
                h.append(PROTOCOL_HEADER, HeaderValue::from_str(o).unwrap());
            }
            h
        };
        assert!(wants_spdy(&headers(&[])));
        let offer = ["v4.channel.k8s.io", "v3.channel.k8s.io", "channel.k8s.io"];
        assert_eq!(negotiate(&headers(&offer)).unwrap(), "v4.channel.k8s.io");
        let offer = ["channel.k8s.io, v2.channel.k8s.io"];
        assert_eq!(negotiate(&headers(&offer)).unwrap(), "v2.channel.k8s.io");
        let err = negotiate(&headers(&["channel.k8s.io"])).unwrap_err();
        assert!(
            err.contains("channel.k8s.io") && err.contains("v4"),
            "{err}"
        );
    }
}
