//! `herd logs` and `herd exec`: a container's output and a command in it,
//! through any agent's API — the same `pods/{name}/log` and
//! `pods/{name}/exec` calls kubectl makes (exec: a WebSocket speaking
//! `v5.channel.k8s.io`), so they reach the container on whichever machine
//! it runs. `herd exec -t` puts this terminal in raw mode for the
//! command's terminal and passes its size on, then every resize.

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::Conn;
use crate::api::{Pod, kind::ApiObject};

/// The exit code of a command that ran and failed: the `herd` binary
/// exits with it, as kubectl does.
#[derive(Debug, thiserror::Error)]
#[error("command terminated with exit code {0}")]
pub struct ExitStatus(pub i32);

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The pod.
    pub pod: String,
    /// The container (needed when the pod has several).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Keep streaming new output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
    /// The previous run of a restarted container.
    #[arg(short = 'p', long)]
    pub previous: bool,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The pod.
    pub pod: String,
    /// The container (default: the pod's only one, else an error naming them).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Pass this process's stdin to the command.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Give the command a terminal (this one, in raw mode, when stdin is
    /// a terminal; its output then comes on stdout only).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
    #[command(flatten)]
    pub conn: Conn,
}

fn pod_path(conn: &Conn, pod: &str) -> String {
    format!("{}/{pod}", Pod::INFO.collection_path(Some(conn.ns())))
}

/// `herd logs POD`.
pub async fn logs(a: LogsArgs) -> anyhow::Result<()> {
    let api = a.conn.api().await?;
    let mut query = Vec::new();
    if let Some(c) = &a.container {
        query.push(format!("container={c}"));
    }
    if a.follow {
        query.push("follow=true".into());
    }
    if let Some(n) = a.tail {
        query.push(format!("tailLines={n}"));
    }
    if a.previous {
        query.push("previous=true".into());
    }
    let mut path = format!("{}/log", pod_path(&a.conn, &a.pod));
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let mut body = api.open(&path).await?;
    let mut out = tokio::io::stdout();
    while let Some(chunk) = body.chunk().await? {
        out.write_all(&chunk).await?;
        out.flush().await?;
    }
    Ok(())
}

/// This terminal in raw mode while a `-t` exec runs (keys go to the
/// command's terminal as typed); its settings come back on drop.
struct RawTerminal {
    saved: rustix::termios::Termios,
}

impl RawTerminal {
    fn enter() -> anyhow::Result<RawTerminal> {
        use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).context("reading the terminal's settings")?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Now, &raw)
            .context("putting the terminal in raw mode")?;
        Ok(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

/// A resize message (channel 4) with this terminal's size, if it has one.
fn resize_message() -> Option<Vec<u8>> {
    let ws = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
    (ws.ws_col > 0 && ws.ws_row > 0).then(|| {
        let mut m = vec![4u8];
        m.extend_from_slice(
            format!(r#"{{"Width":{},"Height":{}}}"#, ws.ws_col, ws.ws_row).as_bytes(),
        );
        m
    })
}

/// The exec URL's query: the command (repeated) and the streams (a
/// terminal merges stderr into stdout, as kubectl asks).
fn exec_query(a: &ExecArgs, tty: bool) -> String {
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let mut q: Vec<String> = a
        .command
        .iter()
        .map(|c| format!("command={}", enc(c)))
        .collect();
    if let Some(c) = &a.container {
        q.push(format!("container={}", enc(c)));
    }
    q.push(format!("stdin={}", a.stdin));
    q.push(format!("stdout=true&stderr={}&tty={tty}", !tty));
    q.join("&")
}

/// `herd exec POD -- CMD…`: runs, relays, and returns the command's
/// failure as [`ExitStatus`].
pub async fn exec(a: ExecArgs) -> anyhow::Result<()> {
    let api = a.conn.api().await?;
    let tty = a.tty && rustix::termios::isatty(std::io::stdin());
    if a.tty && !tty {
        eprintln!("Unable to use a TTY - input is not a terminal");
    }
    let base = api.base();
    let (scheme, authority) = match (base.split_once("://"), api.tls()) {
        (Some(("https", authority)), Some(_)) => ("wss", authority),
        (Some(("http", authority)), _) => ("ws", authority),
        _ => bail!("--server {base}: herd exec needs https:// (with --cacert) or http://"),
    };
    let url = format!(
        "{scheme}://{authority}{}/exec?{}",
        pod_path(&a.conn, &a.pod),
        exec_query(&a, tty)
    );
    let mut request = url.as_str().into_client_request()?;
    let headers = request.headers_mut();
    headers.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("v5.channel.k8s.io"),
    );
    if let Some(token) = api.token() {
        headers.insert("authorization", format!("Bearer {token}").parse()?);
    }
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    let stream: Box<dyn herd_http::Io> = match api.tls() {
        Some(config) if scheme == "wss" => {
            let host = request
                .uri()
                .host()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .to_owned();
            let name = herd_pki::tls::server_name(&host)?;
            Box::new(
                tokio_rustls::TlsConnector::from(std::sync::Arc::clone(config))
                    .connect(name, tcp)
                    .await
                    .with_context(|| format!("TLS with {authority}"))?,
            )
        }
        _ => Box::new(tcp),
    };
    let (socket, response) = match tokio_tungstenite::client_async(request, stream).await {
        Ok(ok) => ok,
        Err(tokio_tungstenite::tungstenite::Error::Http(refused)) => {
            let body = refused
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or(body);
            bail!("exec in pod {}: {message}", a.pod);
        }
        Err(e) => return Err(e).context("opening the exec stream"),
    };
    if response
        .headers()
        .get("sec-websocket-protocol")
        .is_none_or(|p| p != "v5.channel.k8s.io")
    {
        bail!("the server did not agree to v5.channel.k8s.io");
    }
    let (mut tx, mut rx) = socket.split();
    let (stdin_tx, mut stdin_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    // Raw from here to the end: errors before it print on a sane terminal.
    let _raw = tty.then(RawTerminal::enter).transpose()?;
    if let Some(size) = tty.then(resize_message).flatten() {
        tx.send(Message::Binary(size.into())).await?;
    }
    let resizes = tty.then(|| {
        let stdin_tx = stdin_tx.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut changes) = signal(SignalKind::window_change()) else {
                return;
            };
            while changes.recv().await.is_some() {
                if let Some(size) = resize_message()
                    && stdin_tx.send(size).await.is_err()
                {
                    return;
                }
            }
        })
    });
    let pump = a.stdin.then(|| {
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match input.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut msg = vec![0u8];
                        msg.extend_from_slice(&buf[..n]);
                        if stdin_tx.send(msg).await.is_err() {
                            return;
                        }
                    }
                }
            }
            // v5: "stdin is closed".
            let _ = stdin_tx.send(vec![255, 0]).await;
        })
    });
    let (mut out, mut err) = (tokio::io::stdout(), tokio::io::stderr());
    let mut status = None;
    loop {
        tokio::select! {
            Some(msg) = stdin_rx.recv() => tx.send(Message::Binary(msg.into())).await?,
            msg = rx.next() => match msg {
                Some(Ok(Message::Binary(data))) => match data.first() {
                    Some(1) => { out.write_all(&data[1..]).await?; out.flush().await?; }
                    Some(2) => { err.write_all(&data[1..]).await?; err.flush().await?; }
                    Some(3) => status = Some(serde_json::from_slice::<serde_json::Value>(&data[1..])?),
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("reading the exec stream"),
            },
        }
    }
    for task in [pump, resizes].into_iter().flatten() {
        task.abort();
    }
    let status = status.context("the exec stream ended without a status")?;
    if status["status"] == "Success" {
        return Ok(());
    }
    if status["reason"] == "NonZeroExitCode"
        && let Some(code) = status["details"]["causes"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["reason"] == "ExitCode"))
            .and_then(|c| c["message"].as_str()?.parse().ok())
    {
        return Err(ExitStatus(code).into());
    }
    bail!(
        "exec in pod {}: {}",
        a.pod,
        status["message"].as_str().unwrap_or("failed")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        exec: ExecArgs,
    }

    #[test]
    fn the_command_is_everything_after_the_dashes() {
        let cli = Cli::parse_from([
            "herd", "web", "-c", "app", "-i", "--", "sh", "-c", "echo a b",
        ]);
        assert_eq!(cli.exec.command, ["sh", "-c", "echo a b"]);
        let q = exec_query(&cli.exec, false);
        assert_eq!(
            q,
            "command=sh&command=%2Dc&command=echo%20a%20b&container=app&stdin=true&stdout=true&stderr=true&tty=false"
        );
        let parsed = crate::node::exec::ExecRequest::parse(&q).unwrap();
        assert_eq!(parsed.command, ["sh", "-c", "echo a b"]);
        // A terminal carries stderr on stdout.
        let parsed = crate::node::exec::ExecRequest::parse(&exec_query(&cli.exec, true)).unwrap();
        assert!(parsed.tty && parsed.stdout && !parsed.stderr);
    }
}
