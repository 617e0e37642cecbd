//! The kubelet's exec endpoint on the agent API:
//! `GET /exec/{namespace}/{pod}/{container}?command=…&stdin=&stdout=&stderr=&tty=`
//! upgraded to a WebSocket that speaks Kubernetes' channel protocol
//! (`v5.channel.k8s.io`, or `v4`): every binary message starts with its
//! channel — 0 stdin, 1 stdout, 2 stderr, 3 the final `Status`, 4 terminal
//! resizes, 255 (v5) "this channel is closed" — and carries the bytes of a
//! `docker exec` in the pod's running container. The API server's
//! `pods/{name}/exec` proxies here ([`super::api`]), so `kubectl exec`
//! reaches the container from any agent. Older kubectls upgrade to SPDY
//! instead and get the same streams as SPDY streams ([`super::exec_spdy`]).

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use bollard::container::LogOutput;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::api::{KubeletApi, plain};
use super::docker::Docker;
use super::terminal_size::TerminalSize;

/// The channel protocols spoken, preferred first (kubectl 1.30 and later
/// offer v5 first; v4 cannot say "stdin is closed").
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// What an exec request asks for, from its query (`command` repeats).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ExecRequest {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecRequest {
    /// Parses `command=ls&command=-l&stdout=true…`; a request without a
    /// command is refused by name.
    pub fn parse(query: &str) -> Result<ExecRequest, String> {
        let mut r = ExecRequest::default();
        for (k, v) in url_pairs(query) {
            let on = v == "true" || v == "1";
            match k.as_str() {
                "command" => r.command.push(v),
                "stdin" => r.stdin = on,
                "stdout" => r.stdout = on,
                "stderr" => r.stderr = on,
                "tty" => r.tty = on,
                _ => {}
            }
        }
        if r.command.is_empty() {
            return Err("you must specify at least one command for the container".into());
        }
        Ok(r)
    }
}

/// `k=v` pairs of a query string, percent-decoded (`+` is a space).
pub fn url_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// `GET /exec/{namespace}/{pod}/{container}`: starts the command in the
/// pod's running container, then answers the upgrade the client asked for.
pub(crate) async fn exec(
    State(s): State<KubeletApi>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    req: Request,
) -> Response {
    // SPDY (kubectl before 1.30) or a WebSocket: decided before anything
    // starts, so a request that is neither is refused by name.
    let (mut parts, _) = req.into_parts();
    let transport = if super::exec_spdy::wants_spdy(&parts.headers) {
        match super::exec_spdy::Upgrade::from_parts(&mut parts) {
            Ok(u) => Transport::Spdy(u),
            Err(why) => return plain(StatusCode::BAD_REQUEST, why),
        }
    } else {
        match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(u) => Transport::WebSocket(u),
            Err(e) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "exec needs a WebSocket (v5/v4.channel.k8s.io) or SPDY/3.1 upgrade: {e}"
                    ),
                );
            }
        }
    };
    let request = match ExecRequest::parse(query.as_deref().unwrap_or("")) {
        Ok(r) => r,
        Err(why) => return plain(StatusCode::BAD_REQUEST, why),
    };
    let (docker, runs) = match s.runs(&namespace, &pod, &container).await {
        Ok(found) => found,
        Err(reply) => return reply,
    };
    let Some(target) = runs.into_iter().rev().find(|c| c.is_running()) else {
        return plain(
            StatusCode::NOT_FOUND,
            format!(
                "container {container:?} of pod {pod:?} is not running on node {}",
                s.node
            ),
        );
    };
    // Started before the upgrade, so a command that cannot start is an
    // HTTP error kubectl prints, not a broken stream.
    let attached = match docker
        .exec_attached(
            &target.id,
            request.command.clone(),
            request.stdin,
            request.tty,
        )
        .await
    {
        Ok(a) => a,
        Err(e) => return plain(StatusCode::BAD_GATEWAY, e.message()),
    };
    match transport {
        Transport::Spdy(upgrade) => upgrade.accept(docker, attached, request, pod, container),
        Transport::WebSocket(upgrade) => {
            upgrade
                .protocols(PROTOCOLS)
                .on_upgrade(move |socket| async move {
                    let v5 = socket
                        .protocol()
                        .is_some_and(|p| p.as_bytes() == PROTOCOLS[0].as_bytes());
                    if let Err(e) = relay(socket, docker, attached, request, v5).await {
                        tracing::info!(pod, container, error = %e, "exec stream ended early");
                    }
                })
        }
    }
}

/// How the client's streams travel.
enum Transport {
    WebSocket(WebSocketUpgrade),
    Spdy(super::exec_spdy::Upgrade),
}

/// One message on `channel`.
fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(Bytes::from(v))
}

/// The `Status` the error channel carries at the end, as the kubelet
/// writes it: success, or the exit code kubectl exits with.
pub fn final_status(command: &[String], code: Option<i64>) -> serde_json::Value {
    match code {
        Some(0) => json!({"metadata": {}, "status": "Success"}),
        Some(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        None => json!({
            "metadata": {},
            "status": "Failure",
            "message": "the exec ended without an exit code",
            "reason": "InternalError",
        }),
    }
}

/// The final `Status` of exec `id` once it has ended: the output ends as
/// the process does, and dockerd may record the exit code a moment later.
pub(crate) async fn exit_status(
    docker: &Docker,
    id: &str,
    command: &[String],
) -> Result<serde_json::Value, String> {
    let mut code = None;
    for _ in 0..50 {
        code = docker.exit_code(id).await.map_err(|e| e.message())?;
        if code.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(final_status(command, code))
}

/// A chunk of the exec's output, or `None` at its end: an attached
/// terminal's stream can end in an error as the process exits, and the
/// exit code, read from Docker next, is what tells how it ended.
pub(crate) fn output_chunk(chunk: Result<LogOutput, bollard::errors::Error>) -> Option<LogOutput> {
    chunk
        .inspect_err(|e| tracing::debug!(error = %e, "the exec's output ended with an error"))
        .ok()
}

/// Ends the command's stdin when the client's ends — except on a
/// terminal, which has no end of input (^D is a key), and whose output
/// Docker closes along with its stdin, cutting off a command still running.
pub(crate) async fn close_stdin(input: &mut (dyn tokio::io::AsyncWrite + Send + Unpin), tty: bool) {
    if !tty {
        let _ = input.shutdown().await;
    }
}

/// Carries the client's stdin and resizes to the exec, and its output
/// back, then the final status; ends when the command has ended.
async fn relay(
    socket: WebSocket,
    docker: Docker,
    attached: super::docker::AttachedExec,
    request: ExecRequest,
    v5: bool,
) -> Result<(), String> {
    let (mut tx, mut rx) = socket.split();
    let super::docker::AttachedExec {
        id,
        mut output,
        mut input,
    } = attached;
    // The client's side: stdin bytes, "stdin closed" (v5), resizes. It
    // ends with the socket; the command may outlive it by its own stdin.
    let terminal = TerminalSize::new(docker.clone(), id.clone());
    let tty = request.tty;
    let inbound = async move {
        let mut stdin_open = request.stdin;
        while let Some(Ok(msg)) = rx.next().await {
            let Message::Binary(data) = msg else {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
                continue;
            };
            match (data.first(), stdin_open) {
                (Some(&STDIN), true) => stdin_open = input.write_all(&data[1..]).await.is_ok(),
                (Some(&CLOSE), true) if v5 && data.get(1) == Some(&STDIN) => {
                    close_stdin(&mut input, tty).await;
                    stdin_open = false;
                }
                (Some(&RESIZE), _) => terminal.set(&data[1..]),
                _ => {}
            }
        }
        let _ = input.shutdown().await;
    };
    let inbound = tokio::spawn(inbound);
    let result = async {
        while let Some(chunk) = output.next().await {
            let Some(chunk) = output_chunk(chunk) else {
                break;
            };
            let (channel, bytes) = match chunk {
                LogOutput::StdOut { message } | LogOutput::Console { message } => (STDOUT, message),
                LogOutput::StdErr { message } => (STDERR, message),
                LogOutput::StdIn { .. } => continue,
            };
            let wanted = if channel == STDOUT {
                request.stdout
            } else {
                request.stderr
            };
            if wanted {
                tx.send(frame(channel, &bytes))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        let status = exit_status(&docker, &id, &request.command).await?;
        tx.send(frame(ERROR, status.to_string().as_bytes()))
            .await
            .map_err(|e| e.to_string())?;
        // A normal closure (1000): kubectl reads it as the streams' end;
        // a close without a code is an error to it.
        let _ = tx
            .send(Message::Close(Some(CloseFrame {
                code: close_code::NORMAL,
                reason: "".into(),
            })))
            .await;
        Ok(())
    }
    .await;
    inbound.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_repeated_commands_and_flags() {
        let r = ExecRequest::parse(
            "command=sh&command=-c&command=echo+hi%3B+exit+3&stdin=true&stdout=true&stderr=1&tty=false",
        )
        .unwrap();
        assert_eq!(r.command, ["sh", "-c", "echo hi; exit 3"]);
        assert!(r.stdin && r.stdout && r.stderr && !r.tty);
        let err = ExecRequest::parse("stdout=true").unwrap_err();
        assert!(err.contains("command"), "{err}");
    }

    #[test]
    fn a_non_zero_exit_is_a_status_kubectl_exits_with() {
        let s = final_status(&["false".into()], Some(3));
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        assert_eq!(final_status(&[], Some(0))["status"], "Success");
    }
}
