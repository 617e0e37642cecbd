//! The client against a raw TCP server answering canned responses.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// Serves each connection with `answer(request head)`, once per connection.
async fn serve(answer: fn(&str) -> Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let head = String::from_utf8_lossy(&got).into_owned();
                let _ = s.write_all(&answer(&head)).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn get_returns_the_body_and_sends_host_and_path() {
    let addr = serve(|head| {
        let line = head.lines().next().unwrap().to_owned();
        let host = head
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .unwrap_or("?")
            .to_owned();
        ok(&format!("{line} {host}"))
    })
    .await;
    let body = Client::new()
        .get(&format!("http://{addr}/cloud-config?mac=52:54"))
        .await
        .unwrap();
    assert_eq!(
        body,
        format!("GET /cloud-config?mac=52:54 HTTP/1.1 {addr}").as_bytes()
    );
}

#[tokio::test]
async fn chunked_bodies_are_read_whole() {
    let addr = serve(|_| {
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            .to_vec()
    })
    .await;
    let body = Client::new().get(&format!("http://{addr}/")).await.unwrap();
    assert_eq!(body, "hello world");
}

#[tokio::test]
async fn an_error_status_names_the_url_and_carries_the_body() {
    let addr =
        serve(|_| b"HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n\r\nno such x".to_vec()).await;
    let url = format!("http://{addr}/x");
    let err = Client::new().get(&url).await.unwrap_err();
    assert!(matches!(
        err,
        Error::Status {
            status: StatusCode::NOT_FOUND,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        format!("GET {url}: 404 Not Found: no such x")
    );
}

#[tokio::test]
async fn a_silent_server_times_out_and_a_huge_body_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let _conns: Vec<_> = vec![listener.accept().await];
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    let err = Client::new()
        .with_timeout(Duration::from_millis(300))
        .get(&format!("http://{addr}/"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");

    let addr = serve(|_| ok(&"x".repeat(4096))).await;
    let err = Client::new()
        .with_max_body(1024)
        .get(&format!("http://{addr}/"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 1024, .. }), "{err}");
}

#[tokio::test]
async fn bad_urls_are_refused_before_connecting() {
    for url in ["https://example.invalid/", "not a url", "ftp://h/x"] {
        let err = Client::new().get(url).await.unwrap_err();
        assert!(matches!(err, Error::Url { .. }), "{url}: {err}");
    }
}

#[tokio::test]
async fn download_resumes_with_a_range_request() {
    let addr = serve(|head| {
        let body = b"0123456789";
        match head.lines().find_map(|l| l.strip_prefix("range: bytes=")) {
            Some(r) => {
                let from: usize = r.trim_end_matches('-').parse().unwrap();
                let part = &body[from..];
                let mut out = format!(
                    "HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\ncontent-range: bytes {from}-9/10\r\n\r\n",
                    part.len()
                )
                .into_bytes();
                out.extend_from_slice(part);
                out
            }
            None => ok("0123456789"),
        }
    })
    .await;
    let url = format!("http://{addr}/payload");
    let mut whole = Vec::new();
    assert_eq!(
        Client::new()
            .download(&url, 0, &mut whole, |_| {})
            .await
            .unwrap(),
        10
    );
    assert_eq!(whole, b"0123456789");
    let mut rest = b"0123".to_vec();
    let mut seen = 0;
    let n = Client::new()
        .download(&url, 4, &mut rest, |n| seen = n)
        .await
        .unwrap();
    assert_eq!((n, seen), (6, 6));
    assert_eq!(rest, b"0123456789");
}

#[tokio::test]
async fn a_server_ignoring_the_range_is_not_appended_twice() {
    let addr = serve(|_| ok("0123456789")).await;
    let mut sink = b"0123".to_vec();
    let err = Client::new()
        .download(&format!("http://{addr}/p"), 4, &mut sink, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Status {
                status: StatusCode::OK,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(sink, b"0123");
}

#[tokio::test]
async fn post_sends_json_and_the_bearer_token() {
    let addr = serve(|head| {
        let auth = head
            .lines()
            .find_map(|l| l.strip_prefix("authorization: "))
            .unwrap_or("none")
            .to_owned();
        let ctype = head
            .lines()
            .find_map(|l| l.strip_prefix("content-type: "))
            .unwrap_or("none")
            .to_owned();
        ok(&format!("{auth} {ctype}"))
    })
    .await;
    let resp = Client::new()
        .call(
            Request::post(format!("http://{addr}/api"))
                .bearer("t0k")
                .json(&serde_json::json!({"a": 1})),
        )
        .await
        .unwrap();
    assert_eq!(resp.text(), "Bearer t0k application/json");
}

#[tokio::test]
async fn open_hands_over_each_piece_as_it_arrives() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (more_tx, more_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let _ = s.read(&mut buf).await;
        s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\nfirst\n\r\n")
            .await
            .unwrap();
        // The second piece only once the client has read the first: a
        // client that waits for the whole body never gets here.
        more_rx.await.unwrap();
        s.write_all(b"7\r\nsecond\n\r\n0\r\n\r\n").await.unwrap();
    });
    let mut body = Client::new()
        .open(Request::get(format!("http://{addr}/watch")))
        .await
        .unwrap();
    assert_eq!(body.chunk().await.unwrap().unwrap(), "first\n");
    more_tx.send(()).unwrap();
    assert_eq!(body.chunk().await.unwrap().unwrap(), "second\n");
    assert!(body.chunk().await.unwrap().is_none());
}

/// A TLS server on loopback with a certificate from `ca` for 127.0.0.1,
/// answering every request with `ok(who)`, `who` being the client
/// certificate's common name (or `-`).
async fn serve_tls(ca: &herd_pki::ClusterCa) -> SocketAddr {
    use herd_pki::tls::{ALPN_HTTP1, ClientAuth, Current, accept, server_config};
    let leaf = ca
        .issue(
            &herd_pki::Identity::Member("m".into()),
            &[],
            &["127.0.0.1".parse().unwrap()],
            Duration::from_secs(3600),
        )
        .unwrap();
    let config = server_config(
        &ca.pair.cert_pem,
        &leaf,
        ClientAuth::Optional,
        &[ALPN_HTTP1],
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut accepted = accept(listener, Arc::new(Current::new(config)), "test");
    tokio::spawn(async move {
        while let Some(mut conn) = accepted.recv().await {
            let who = conn.peer.map_or("-".to_owned(), |p| p.common_name());
            let mut buf = vec![0u8; 8192];
            let _ = conn.stream.read(&mut buf).await;
            let _ = conn.stream.write_all(&ok(&who)).await;
            let _ = conn.stream.shutdown().await;
        }
    });
    addr
}

#[tokio::test]
async fn https_checks_the_server_against_the_ca_and_presents_a_certificate() {
    herd_pki::install_crypto_provider();
    let ca = herd_pki::ClusterCa::generate("t").unwrap();
    let addr = serve_tls(&ca).await;
    let url = format!("https://{addr}/");

    let anonymous = herd_pki::tls::client_config(&ca.pair.cert_pem, None, &[]).unwrap();
    let body = Client::new().with_tls(anonymous).get(&url).await.unwrap();
    assert_eq!(&body[..], b"-");

    let alice = ca
        .issue(
            &herd_pki::Identity::User("alice".into()),
            &[],
            &[],
            Duration::from_secs(3600),
        )
        .unwrap();
    let config = herd_pki::tls::client_config(&ca.pair.cert_pem, Some(&alice), &[]).unwrap();
    let body = Client::new().with_tls(config).get(&url).await.unwrap();
    assert_eq!(&body[..], b"alice");

    // A server whose certificate another CA signed is refused.
    let other = herd_pki::ClusterCa::generate("other").unwrap();
    let config = herd_pki::tls::client_config(&other.pair.cert_pem, None, &[]).unwrap();
    let err = Client::new().with_tls(config).get(&url).await.unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");

    // Without a TLS configuration an https:// URL is refused outright.
    let err = Client::new().get(&url).await.unwrap_err();
    assert!(
        err.to_string().contains("needs a TLS configuration"),
        "{err}"
    );
}
