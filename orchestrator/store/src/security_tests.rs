//! In-process TLS tests on loopback: founding with a CA, joining with a
//! token that pins it, and every way a peer without the right certificate
//! or token is turned away.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use herd_pki::tls::{ALPN_PEER, Current};
use herd_pki::{ClusterCa, Identity, JoinToken};

use super::peer::{CallError, ClientSecurity, Forward, PeerClient};
use super::types::*;
use super::{Bootstrap, Config, Member, Security, StoreError, TlsSettings, TokenRecord, token_key};

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn tls_config(name: &str, dir: &Path, addr: SocketAddr, tls: TlsSettings) -> Config {
    let mut c = Config::new(name, dir.join(name), addr, "unused");
    c.security = Security::Tls(tls);
    c.heartbeat = Duration::from_millis(50);
    c.election_timeout = (Duration::from_millis(400), Duration::from_millis(800));
    c.join_timeout = Duration::from_secs(10);
    c
}

async fn until<F: FnMut() -> bool>(what: &str, mut f: F) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn until_async<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..400 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A founder that made its own CA (no `ca` given, founding alone).
async fn founder(dir: &Path) -> (Member, SocketAddr) {
    let addr = free_addr();
    let a = Member::start(tls_config("a", dir, addr, TlsSettings::default()))
        .await
        .unwrap();
    until("leader", || a.leader() == Some(a.id())).await;
    (a, addr)
}

fn ca_of(m: &Member) -> ClusterCa {
    m.pki()
        .and_then(|p| p.ca())
        .expect("the founder holds its CA")
}

/// Registers `token` with `record`'s limits on `m`.
async fn register(m: &Member, token: &JoinToken, machine: Option<&str>, uses: Option<u32>) {
    let record = TokenRecord {
        secret_hash: token.secret_hash(),
        machine: machine.map(str::to_owned),
        uses,
        expires: None,
    };
    m.put(PutRequest {
        key: token_key(&token.id).into_bytes(),
        value: serde_json::to_vec(&record).unwrap(),
        ..PutRequest::default()
    })
    .await
    .unwrap();
}

async fn record(m: &Member, token: &JoinToken) -> Option<TokenRecord> {
    m.range(RangeRequest {
        key: token_key(&token.id).into_bytes(),
        ..RangeRequest::default()
    })
    .await
    .unwrap()
    .kvs
    .pop()
    .map(|kv| serde_json::from_slice(&kv.value).unwrap())
}

async fn join(
    dir: &Path,
    name: &str,
    via: SocketAddr,
    token: JoinToken,
) -> Result<Member, StoreError> {
    let mut c = tls_config(
        name,
        dir,
        free_addr(),
        TlsSettings {
            join_token: Some(token),
            ..TlsSettings::default()
        },
    );
    c.bootstrap = Bootstrap::Join(via.to_string());
    Member::start(c).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_joins_with_a_token_and_its_certificate_comes_from_the_cluster_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (a, addr) = founder(dir.path()).await;
    let ca = ca_of(&a);
    let token = JoinToken::generate(ca.fingerprint().unwrap());
    register(&a, &token, Some("b"), Some(1)).await;

    let b = join(dir.path(), "b", addr, token.clone()).await.unwrap();
    let pki = b.pki().expect("b has certificates");
    assert_eq!(pki.ca_cert, ca.pair.cert_pem, "b trusts the cluster's CA");
    let der = herd_pki::tls::certs_from_pem(&pki.member.cert_pem, "b").unwrap();
    assert_eq!(
        Identity::from_der(der[0].as_ref()),
        Some(Identity::Member("b".into()))
    );
    // Saved in b's data dir, where a restart finds it.
    assert!(dir.path().join("b/pki/member.crt").is_file());
    until_async("b in the member list", || async {
        a.member_list()
            .await
            .map(|l| l.members.iter().any(|m| m.name == "b"))
            .unwrap_or(false)
    })
    .await;
    // The one use is gone: the record went with it, and a second
    // machine is refused by name.
    assert_eq!(record(&a, &token).await, None);
    let err = join(dir.path(), "c", addr, token)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("unknown"), "{err}");
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refused_for_the_wrong_ca_secret_or_machine_and_nothing_is_used_up() {
    let dir = tempfile::tempdir().unwrap();
    let (a, addr) = founder(dir.path()).await;
    let ca_hash = ca_of(&a).fingerprint().unwrap();
    let token = JoinToken::generate(ca_hash);
    register(&a, &token, Some("b"), Some(3)).await;

    // A token pinning another CA: the joiner stops before sending its
    // secret (it cannot know it talks to the cluster it wants).
    let other_ca = ClusterCa::generate("other").unwrap();
    let foreign: JoinToken = token
        .reveal()
        .replacen(
            &hex::encode(ca_hash),
            &hex::encode(other_ca.fingerprint().unwrap()),
            1,
        )
        .parse()
        .unwrap();
    let err = join(dir.path(), "b", addr, foreign)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("CA hash"), "{err}");

    // The right CA and id with a wrong secret.
    let wrong: JoinToken = format!(
        "herd1.{}.{}.{}",
        hex::encode(ca_hash),
        token.id,
        "x".repeat(32)
    )
    .parse()
    .unwrap();
    let err = join(dir.path(), "b", addr, wrong)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("wrong secret"), "{err}");

    // The right token from the wrong machine.
    let err = join(dir.path(), "mallory", addr, token.clone())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("another machine"), "{err}");

    assert_eq!(record(&a, &token).await.and_then(|r| r.uses), Some(3));
    assert_eq!(a.member_list().await.unwrap().members.len(), 1);
    a.shutdown().await;
}

/// A peer client speaking `security` to `a` as member `id`.
fn peer_client(id: u64, security: ClientSecurity) -> PeerClient {
    PeerClient::new(
        id,
        security,
        Arc::new(AtomicU64::new(0)),
        super::Partition::default(),
    )
}

fn tls_with(ca_pem: &str, identity: &herd_pki::CertKey) -> ClientSecurity {
    let config = herd_pki::tls::client_config(ca_pem, Some(identity), &[ALPN_PEER]).unwrap();
    ClientSecurity::Tls(Arc::new(Current::new(config)))
}

async fn ask(client: &PeerClient, a: &Member, addr: SocketAddr) -> Result<(), String> {
    match client
        .forward(
            a.id(),
            &addr.to_string(),
            Forward::ReadIndex,
            Duration::from_secs(5),
        )
        .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("{e:?}")),
        Err(CallError::Io(e)) => Err(e.to_string()),
        Err(e) => Err(format!("{e:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_need_a_member_certificate_of_a_current_member() {
    let dir = tempfile::tempdir().unwrap();
    let (a, addr) = founder(dir.path()).await;
    let ca = ca_of(&a);
    let issue = |identity: Identity| {
        ca.issue(&identity, &[], &[], Duration::from_secs(3600))
            .unwrap()
    };
    let b_id = super::member_id("b");

    // Plaintext with a token, against a TLS peer port.
    let plain = peer_client(
        b_id,
        ClientSecurity::Token(super::peer::Token::new("unused")),
    );
    let err = ask(&plain, &a, addr).await.unwrap_err();
    assert!(err.contains("hung up") || err.contains("TLS"), "{err}");

    // A certificate from another CA fails the TLS handshake.
    let other = ClusterCa::generate("other").unwrap();
    let stranger = other
        .issue(
            &Identity::Member("b".into()),
            &[],
            &[],
            Duration::from_secs(3600),
        )
        .unwrap();
    let err = ask(
        &peer_client(b_id, tls_with(&ca.pair.cert_pem, &stranger)),
        &a,
        addr,
    )
    .await
    .unwrap_err();
    assert!(!err.is_empty());

    // The cluster's CA, but a user's certificate, or a member that is not
    // in the cluster, or one speaking for another member.
    for (identity, sender) in [
        (Identity::User("root".into()), b_id),
        (Identity::Member("ghost".into()), super::member_id("ghost")),
        (Identity::Member("a".into()), b_id),
    ] {
        let client = peer_client(
            sender,
            tls_with(&ca.pair.cert_pem, &issue(identity.clone())),
        );
        let err = ask(&client, &a, addr).await.unwrap_err();
        assert!(err.contains("not a member"), "{identity}: {err}");
    }

    // A member that was removed can no longer talk to the others.
    let token = JoinToken::generate(ca.fingerprint().unwrap());
    register(&a, &token, None, None).await;
    let b = join(dir.path(), "b", addr, token).await.unwrap();
    let b_cert = b.pki().unwrap().member.clone();
    let as_b = peer_client(b_id, tls_with(&ca.pair.cert_pem, &b_cert));
    until_async("b answered as a member", || async {
        ask(&as_b, &a, addr).await.is_ok()
    })
    .await;
    b.shutdown().await;
    a.member_remove(b_id).await.unwrap();
    let fresh = peer_client(b_id, tls_with(&ca.pair.cert_pem, &b_cert));
    let err = ask(&fresh, &a, addr).await.unwrap_err();
    assert!(err.contains("not a member"), "{err}");
    a.shutdown().await;
}
