//! Real TLS handshakes on loopback between configurations built here.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::ca::{ClusterCa, LEAF_VALIDITY, signing_request};

const LOCAL: [IpAddr; 1] = [IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)];

fn member(ca: &ClusterCa, name: &str) -> CertKey {
    ca.issue(
        &Identity::Member(name.into()),
        &[name.into()],
        &LOCAL,
        LEAF_VALIDITY,
    )
    .unwrap()
}

/// A server echoing one byte back and reporting who the client is.
async fn server(config: Arc<ServerConfig>) -> (SocketAddr, mpsc::Receiver<Option<Identity>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut conns = accept(listener, Arc::new(Current::new(config)), "test");
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        while let Some(mut c) = conns.recv().await {
            let _ = tx.send(c.peer.clone()).await;
            let mut b = [0u8; 1];
            if c.stream.read_exact(&mut b).await.is_ok() {
                let _ = c.stream.write_all(&b).await;
            }
        }
    });
    (addr, rx)
}

async fn talk(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<(), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(server_name("127.0.0.1").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"x").await.map_err(|e| e.to_string())?;
    let mut b = [0u8; 1];
    tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
    Ok(())
}

#[tokio::test]
async fn members_talk_and_strangers_are_refused() {
    crate::install_crypto_provider();
    let ca = ClusterCa::generate("test").unwrap();
    let other = ClusterCa::generate("other").unwrap();
    let srv = member(&ca, "m1");
    let config =
        server_config(&ca.pair.cert_pem, &srv, ClientAuth::Required, &[ALPN_PEER]).unwrap();
    let (addr, mut who) = server(config).await;

    let m2 = member(&ca, "m2");
    talk(
        addr,
        client_config(&ca.pair.cert_pem, Some(&m2), &[ALPN_PEER]).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        who.recv().await.unwrap(),
        Some(Identity::Member("m2".into()))
    );

    // No certificate, or one from another CA: refused in the handshake.
    let anonymous = client_config(&ca.pair.cert_pem, None, &[ALPN_PEER]).unwrap();
    assert!(talk(addr, anonymous).await.is_err());
    let foreign = member(&other, "m2");
    let e = talk(
        addr,
        client_config(&ca.pair.cert_pem, Some(&foreign), &[ALPN_PEER]).unwrap(),
    )
    .await
    .unwrap_err();
    assert!(!e.is_empty());
    // A client that does not trust the cluster CA refuses the server.
    assert!(
        talk(
            addr,
            client_config(&other.pair.cert_pem, Some(&m2), &[ALPN_PEER]).unwrap()
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn a_joiner_pins_the_ca_by_hash() {
    crate::install_crypto_provider();
    let ca = ClusterCa::generate("test").unwrap();
    let srv = member(&ca, "m1");
    let config =
        server_config(&ca.pair.cert_pem, &srv, ClientAuth::Optional, &[ALPN_PEER]).unwrap();
    let (addr, mut who) = server(config).await;
    let hash = ca.fingerprint().unwrap();
    talk(addr, pinned_client_config(hash, &[ALPN_PEER]).unwrap())
        .await
        .unwrap();
    assert_eq!(
        who.recv().await.unwrap(),
        None,
        "the joiner has no certificate yet"
    );

    // A man in the middle with a CA of its own: the hash does not match.
    let mitm = ClusterCa::generate("mitm").unwrap();
    let fake = member(&mitm, "m1");
    let config = server_config(
        &mitm.pair.cert_pem,
        &fake,
        ClientAuth::Optional,
        &[ALPN_PEER],
    )
    .unwrap();
    let (addr, _) = server(config).await;
    let e = talk(addr, pinned_client_config(hash, &[ALPN_PEER]).unwrap())
        .await
        .unwrap_err();
    assert!(e.contains("CA does not match"), "{e}");
}

#[tokio::test]
async fn a_signed_request_gets_the_identity_the_ca_decides() {
    crate::install_crypto_provider();
    let ca = ClusterCa::generate("test").unwrap();
    // The request claims to be root; the CA signs it as member m3.
    let (csr, key) = signing_request(&Identity::User("root".into())).unwrap();
    let cert = ca
        .sign_request(
            &csr,
            &Identity::Member("m3".into()),
            &["m3".into()],
            &LOCAL,
            LEAF_VALIDITY,
        )
        .unwrap();
    let der = &certs_from_pem(&cert, "c").unwrap()[0];
    assert_eq!(
        Identity::from_der(der.as_ref()),
        Some(Identity::Member("m3".into()))
    );
    let pair = CertKey {
        cert_pem: cert,
        key_pem: key,
    };
    let config = server_config(
        &ca.pair.cert_pem,
        &member(&ca, "m1"),
        ClientAuth::Required,
        &[ALPN_PEER],
    )
    .unwrap();
    let (addr, mut who) = server(config).await;
    talk(
        addr,
        client_config(&ca.pair.cert_pem, Some(&pair), &[ALPN_PEER]).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        who.recv().await.unwrap(),
        Some(Identity::Member("m3".into()))
    );
    assert!(
        ca.sign_request(
            "garbage",
            &Identity::Member("x".into()),
            &[],
            &[],
            LEAF_VALIDITY
        )
        .is_err()
    );
}

#[tokio::test]
async fn a_handshake_that_never_finishes_does_not_block_others() {
    crate::install_crypto_provider();
    let ca = ClusterCa::generate("test").unwrap();
    let config = server_config(
        &ca.pair.cert_pem,
        &member(&ca, "m1"),
        ClientAuth::Required,
        &[ALPN_PEER],
    )
    .unwrap();
    let (addr, _who) = server(config).await;
    // Slowloris: connections that send half a hello, or nothing.
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        idle.push(s);
    }
    let m2 = member(&ca, "m2");
    tokio::time::timeout(
        Duration::from_secs(5),
        talk(
            addr,
            client_config(&ca.pair.cert_pem, Some(&m2), &[ALPN_PEER]).unwrap(),
        ),
    )
    .await
    .expect("a real client is served while others stall")
    .unwrap();
}
