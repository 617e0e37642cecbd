//! `pods/{name}/exec`: the API server finds the pod's node and hands the
//! client's WebSocket upgrade to that node's kubelet endpoint
//! (`/exec/{namespace}/{pod}/{container}`, see `node::exec`), then copies
//! bytes both ways — an upgrade-aware proxy, as Kubernetes' API server is,
//! so the channel protocol is the kubelet's business. `kubectl exec` from
//! any agent reaches the container on whichever machine it runs.
//!
//! Both upgrades kubectl makes are passed on: a WebSocket (kubectl 1.30
//! and later) and SPDY/3.1 (older kubectls).

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use herd_http::Io;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::kubelet::{KubeletClient, container_of, kubelet_addr, pod_and_node};
use super::route::Target;
use crate::api::ApiError;
use crate::node::exec::url_pairs;
use crate::node::exec_spdy::{PROTOCOL_HEADER, wants_spdy};
use crate::registry::Registry;

/// The most a kubelet's answer to the upgrade may carry before its body.
const MAX_HEAD: usize = 16 * 1024;

/// The headers of a handshake passed on to the kubelet (WebSocket's, and
/// the remote-command protocols a SPDY client offers).
const HANDSHAKE: [&str; 5] = [
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    PROTOCOL_HEADER,
];

/// The kubelet's handshake answers passed back to the client.
const ANSWER: [&str; 4] = [
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    PROTOCOL_HEADER,
];

fn bad_gateway(message: String) -> ApiError {
    ApiError::new(502, "BadGateway", message)
}

/// The protocol `req` asks to upgrade to, as the kubelet is asked for it.
fn upgrade_of(req: &Request) -> Option<&'static str> {
    let asked = req.headers().get(header::UPGRADE)?.to_str().ok()?.trim();
    if asked.eq_ignore_ascii_case("websocket") {
        Some("websocket")
    } else if wants_spdy(req.headers()) {
        Some("SPDY/3.1")
    } else {
        None
    }
}

/// Answers a `pods/{name}/exec` call.
pub async fn exec(
    registry: &Registry,
    kubelet: &KubeletClient,
    target: Target,
    mut req: Request,
    shutdown: CancellationToken,
) -> Result<Response, ApiError> {
    let namespace = target.namespace.unwrap_or_default();
    let name = target.name.unwrap_or_default();
    let query = req.uri().query().unwrap_or("").to_owned();
    let (pod, node) = pod_and_node(registry, &namespace, &name).await?;
    let asked = url_pairs(&query)
        .into_iter()
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v);
    let container = container_of(&pod, asked.as_deref())?.to_owned();
    // After the pod and container checks, so their errors come first.
    let Some(protocol) = upgrade_of(&req) else {
        return Err(ApiError::bad_request(
            "exec needs an upgrade to a WebSocket (v5/v4.channel.k8s.io) or to SPDY/3.1",
        ));
    };
    let addr = kubelet_addr(&node)?;

    let mut head = format!(
        "GET /exec/{namespace}/{name}/{container}?{query} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n"
    );
    for h in HANDSHAKE {
        for v in req.headers().get_all(h) {
            let v = v
                .to_str()
                .map_err(|_| ApiError::bad_request(format!("header {h} is not text")))?;
            head.push_str(&format!("{h}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    let unreachable = |e: String| {
        bad_gateway(format!(
            "the kubelet of node {} did not answer: {e}",
            node.metadata.name
        ))
    };
    let host = node.internal_ip().unwrap_or_default().to_owned();
    let mut kubelet = kubelet.connect(&addr, &host).await.map_err(unreachable)?;
    kubelet
        .write_all(head.as_bytes())
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let (status, headers, rest) = read_head(&mut kubelet).await.map_err(unreachable)?;
    if status != 101 {
        // The kubelet's refusal (container not running, bad command…),
        // with its own words.
        let length = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok());
        let body = read_body(&mut kubelet, rest, length).await;
        return Err(ApiError::new(
            if status == 404 || status == 400 {
                status
            } else {
                502
            },
            match status {
                404 => "NotFound",
                400 => "BadRequest",
                _ => "BadGateway",
            },
            body,
        ));
    }

    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let copy = async {
            let mut client = TokioIo::new(upgrade.await.map_err(|e| e.to_string())?);
            if !rest.is_empty() {
                client.write_all(&rest).await.map_err(|e| e.to_string())?;
            }
            tokio::io::copy_bidirectional(&mut client, &mut kubelet)
                .await
                .map_err(|e| e.to_string())
        };
        tokio::select! {
            r = copy => if let Err(e) = r {
                tracing::debug!(error = %e, "exec proxy ended");
            },
            _ = shutdown.cancelled() => {}
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static(protocol));
    for (k, v) in headers {
        if !ANSWER.iter().any(|p| k.eq_ignore_ascii_case(p)) {
            continue;
        }
        if let (Ok(k), Ok(v)) = (
            header::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            h.insert(k, v);
        }
    }
    Ok(response)
}

/// Reads an HTTP response head: its status, headers, and whatever bytes
/// came after it.
async fn read_head(
    stream: &mut Box<dyn Io>,
) -> Result<(u16, Vec<(String, String)>, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(1024);
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(format!("an answer head over {MAX_HEAD} bytes"));
        }
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
            .await
            .map_err(|_| "no answer within 30 s".to_owned())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the connection closed before an answer".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {:?}", text.lines().next()))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok((status, headers, buf[end + 4..].to_vec()))
}

/// The body of a refusal: `length` bytes if the head said, else what
/// comes before the kubelet closes; at most 64 KiB.
async fn read_body(stream: &mut Box<dyn Io>, mut body: Vec<u8>, length: Option<usize>) -> String {
    let mut chunk = [0u8; 4096];
    let want = length.unwrap_or(64 * 1024).min(64 * 1024);
    while body.len() < want {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => body.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&body).trim().to_owned()
}
