//! The store's client API is closed by default, tried with Debian's
//! `etcdctl` as users meet it: TLS only, a client certificate from the
//! cluster CA or a user's password, users and roles with key-range
//! permissions enforced on every kind of RPC, and `--insecure-plaintext`
//! as the one, loudly logged, way back to an open store.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use herd_tests::bin;
use herd_tests::store::{Cluster, Etcdctl, Server};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `out` failed, saying `why`.
fn refused(out: &Output, why: &str, what: &str) {
    assert!(!out.status.success(), "{what} was allowed: {}", stdout(out));
    assert!(
        stderr(out).contains(why),
        "{what}: wanted {why:?} in {}",
        stderr(out)
    );
}

/// A second CA, unrelated to the cluster's, and a `root` certificate from it.
fn foreign_root(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let ca = dir.join("other-ca");
    let out = Command::new(bin::herd())
        .args(["admin", "init-ca", "--cluster", "other", "--out"])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(out.status.success(), "init-ca: {}", stderr(&out));
    let creds = dir.join("other-root");
    let out = Command::new(bin::herd())
        .args(["admin", "credentials", "--user", "root"])
        .arg("--ca-cert")
        .arg(ca.join("ca.crt"))
        .arg("--ca-key")
        .arg(ca.join("ca.key"))
        .arg("--out")
        .arg(&creds)
        .output()
        .unwrap();
    assert!(out.status.success(), "credentials: {}", stderr(&out));
    (creds.join("root.crt"), creds.join("root.key"))
}

#[test]
fn only_clients_with_a_certificate_from_the_cluster_ca_get_in() {
    let cluster = Cluster::start(Server::Herd, 1);
    let ep = format!("https://{}", cluster.members[0].client);
    let root = cluster.etcdctl_tool();
    root.ok(&ep, &["put", "/secret", "s3"], None);

    let dir = tempfile::tempdir().unwrap();
    let anonymous = Etcdctl {
        identity: None,
        ..cluster.etcdctl_tool()
    };
    let out = anonymous.run(&ep, &["get", "--prefix", "/"], None);
    refused(&out, "client certificate", "a read without a certificate");
    assert!(!stdout(&out).contains("s3"));
    let out = anonymous.run(&ep, &["put", "/secret", "mine"], None);
    refused(&out, "client certificate", "a write without a certificate");

    let foreign = Etcdctl {
        identity: Some(foreign_root(dir.path())),
        ..cluster.etcdctl_tool()
    };
    let out = foreign.run_for(
        Duration::from_secs(10),
        &ep,
        &["--dial-timeout=3s", "put", "/secret", "foreign"],
        None,
    );
    assert!(
        !out.status.success(),
        "another CA's root got in: {}",
        stdout(&out)
    );

    // An expired certificate from the right CA is refused too.
    let (cert, key) = {
        let out_dir = dir.path().join("brief");
        let pki = cluster.pki.as_ref().unwrap();
        let out = Command::new(bin::herd())
            .args([
                "admin",
                "credentials",
                "--user",
                "root",
                "--valid-for",
                "1s",
            ])
            .arg("--ca-cert")
            .arg(&pki.ca_cert)
            .arg("--ca-key")
            .arg(pki.ca_cert.with_file_name("ca.key"))
            .arg("--out")
            .arg(&out_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        (out_dir.join("root.crt"), out_dir.join("root.key"))
    };
    std::thread::sleep(Duration::from_secs(3));
    let expired = Etcdctl {
        identity: Some((cert, key)),
        ..cluster.etcdctl_tool()
    };
    let out = expired.run_for(
        Duration::from_secs(10),
        &ep,
        &["--dial-timeout=3s", "put", "/secret", "expired"],
        None,
    );
    assert!(!out.status.success(), "an expired certificate got in");

    // Plaintext to the TLS port gets nowhere.
    let plain = Etcdctl {
        cacert: None,
        identity: None,
        ..cluster.etcdctl_tool()
    };
    let http = format!("http://{}", cluster.members[0].client);
    let out = plain.run_for(
        Duration::from_secs(10),
        &http,
        &["--dial-timeout=3s", "put", "/secret", "plain"],
        None,
    );
    assert!(!out.status.success(), "plaintext got in: {}", stdout(&out));

    // A handshake that never completes holds nothing up, and is closed.
    let mut stall = TcpStream::connect(cluster.members[0].client).unwrap();
    stall.write_all(&[0x16, 0x03, 0x01]).unwrap();
    assert_eq!(
        root.ok(&ep, &["get", "--print-value-only", "/secret"], None),
        "s3\n",
        "no refused caller changed anything, and the member still serves"
    );
    stall
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 64];
    let closed = match stall.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "a stalled handshake was left open");
    let log = std::fs::read_to_string(&cluster.members[0].log).unwrap();
    assert!(
        log.contains("TLS handshake"),
        "no log line names the refusals"
    );
}

#[test]
fn users_and_roles_limit_every_kind_of_rpc() {
    let cluster = Cluster::start(Server::Herd, 1);
    let ep = format!("https://{}", cluster.members[0].client);
    let root = cluster.etcdctl_tool();
    let dir = tempfile::tempdir().unwrap();
    for cmd in [
        &["user", "add", "root", "--new-user-password=rootpw"][..],
        &["role", "add", "app"],
        &[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "/app/",
            "--prefix=true",
        ],
        &["user", "add", "alice", "--new-user-password=alicepw"],
        &["user", "grant-role", "alice", "app"],
        &["role", "add", "reader"],
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "/app/",
            "--prefix=true",
        ],
        &["user", "add", "bob", "--new-user-password=bobpw"],
        &["user", "grant-role", "bob", "reader"],
        &["put", "/other/k", "root's"],
        &["put", "/app/x", "1"],
    ] {
        root.ok(&ep, cmd, None);
    }
    let alice = Etcdctl {
        identity: Some(cluster.user_certificate("alice", &dir.path().join("alice"))),
        ..cluster.etcdctl_tool()
    };
    // Before auth is enabled, any certificate from the CA may do anything.
    alice.ok(&ep, &["put", "/other/before", "1"], None);
    root.ok(&ep, &["auth", "enable"], None);

    const DENIED: &str = "permission denied";
    // Range, put, delete: inside /app/ yes, outside no.
    alice.ok(&ep, &["put", "/app/y", "2"], None);
    assert_eq!(
        alice.ok(&ep, &["get", "--print-value-only", "/app/x"], None),
        "1\n"
    );
    refused(
        &alice.run(&ep, &["put", "/other/k", "alice's"], None),
        DENIED,
        "put",
    );
    refused(&alice.run(&ep, &["get", "/other/k"], None), DENIED, "range");
    refused(
        &alice.run(&ep, &["get", "--prefix", "/"], None),
        DENIED,
        "range over all",
    );
    refused(
        &alice.run(&ep, &["del", "/other/k"], None),
        DENIED,
        "delete",
    );
    alice.ok(&ep, &["del", "/app/y"], None);
    // Txn: every compare and every op is checked.
    refused(
        &alice.run(&ep, &["txn"], Some("\nput /other/k alice's\n\n\n")),
        DENIED,
        "a txn writing outside",
    );
    refused(
        &alice.run(
            &ep,
            &["txn"],
            Some("value(\"/other/k\") = \"root's\"\n\nput /app/t 1\n\n\n"),
        ),
        DENIED,
        "a txn comparing outside",
    );
    alice.ok(
        &ep,
        &["txn"],
        Some("value(\"/app/x\") = \"1\"\n\nput /app/t 1\n\n\n"),
    );
    // Watch: refused outside, events inside.
    let out = alice.run_for(Duration::from_secs(10), &ep, &["watch", "/other/k"], None);
    refused(&out, DENIED, "a watch outside");
    let out = alice.run_for(
        Duration::from_secs(5),
        &ep,
        &["watch", "--rev=1", "/app/x"],
        None,
    );
    assert!(
        stdout(&out).contains("/app/x"),
        "watch inside: {}",
        stderr(&out)
    );
    // Leases are anyone's; what they are attached to is not.
    let grant = alice.ok(&ep, &["lease", "grant", "60"], None);
    let lease = grant
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_owned();
    refused(
        &alice.run(&ep, &["put", "--lease", &lease, "/other/l", "1"], None),
        DENIED,
        "a put with a lease outside",
    );
    // Lock and election write under their names.
    refused(
        &alice.run(&ep, &["lock", "/other/lock", "true"], None),
        DENIED,
        "a lock outside",
    );
    let out = alice.run(&ep, &["lock", "/app/lock", "echo", "held"], None);
    assert!(
        stdout(&out).contains("held"),
        "lock inside: {}",
        stderr(&out)
    );
    refused(
        &alice.run_for(
            Duration::from_secs(10),
            &ep,
            &["elect", "/other/el", "v"],
            None,
        ),
        DENIED,
        "a campaign outside",
    );
    let out = alice.run_for(
        Duration::from_secs(5),
        &ep,
        &["elect", "/app/el", "v"],
        None,
    );
    assert!(
        stdout(&out).contains("/app/el"),
        "campaign inside: {}",
        stderr(&out)
    );
    // Auth management is root's.
    refused(
        &alice.run(
            &ep,
            &["user", "add", "mallory", "--new-user-password=m"],
            None,
        ),
        DENIED,
        "user add",
    );
    refused(
        &alice.run(&ep, &["auth", "disable"], None),
        DENIED,
        "auth disable",
    );

    // Passwords over TLS, with no client certificate: bob only reads.
    let no_cert = Etcdctl {
        identity: None,
        ..cluster.etcdctl_tool()
    };
    assert_eq!(
        no_cert.ok(
            &ep,
            &["--user", "bob:bobpw", "get", "--print-value-only", "/app/x"],
            None
        ),
        "1\n"
    );
    refused(
        &no_cert.run(&ep, &["--user", "bob:bobpw", "put", "/app/x", "2"], None),
        DENIED,
        "a reader's put",
    );
    refused(
        &no_cert.run(&ep, &["--user", "bob:wrong", "get", "/app/x"], None),
        "invalid user ID or password",
        "a wrong password",
    );
    alice.ok(
        &ep,
        &["--user", "alice:alicepw", "put", "/app/p", "1"],
        None,
    );

    root.ok(&ep, &["auth", "disable"], None);
    alice.ok(&ep, &["put", "/other/after", "1"], None);
    assert_eq!(
        root.ok(&ep, &["get", "--print-value-only", "/other/k"], None),
        "root's\n",
        "no refused request changed anything"
    );
    let log = std::fs::read_to_string(&cluster.members[0].log).unwrap();
    for secret in ["alicepw", "bobpw", "rootpw"] {
        assert!(!log.contains(secret), "{secret} in the member's log");
    }
}

#[test]
fn insecure_plaintext_is_open_and_says_so() {
    let cluster = Cluster::start_plaintext(Server::Herd, 1);
    let ep = format!("http://{}", cluster.members[0].client);
    let open = cluster.etcdctl_tool();
    open.ok(&ep, &["put", "/open", "1"], None);
    assert_eq!(
        open.ok(&ep, &["get", "--print-value-only", "/open"], None),
        "1\n"
    );
    let log = std::fs::read_to_string(&cluster.members[0].log).unwrap();
    assert!(
        log.contains("INSECURE: the store runs without TLS"),
        "{log}"
    );
}

/// When `data_dir`'s member certificate stops being valid (unix seconds).
fn member_cert_expiry(data_dir: &Path) -> i64 {
    let pem = std::fs::read_to_string(data_dir.join("pki/member.crt")).unwrap();
    let der = herd_pki::tls::certs_from_pem(&pem, "member certificate").unwrap();
    herd_pki::identity::not_after(&der[0]).unwrap()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn member_certificates_are_renewed_in_place_before_they_expire() {
    // Certificates that last 30 s: without renewal every member's would
    // have expired by the time the checks below run.
    let mut cluster = Cluster::unstarted(3, "r");
    for m in &mut cluster.members {
        m.extra = vec!["--member-cert-validity".into(), "30s".into()];
    }
    cluster.start_all();
    let first: Vec<i64> = (0..3)
        .map(|i| member_cert_expiry(cluster.data_dir(i)))
        .collect();
    let root = cluster.etcdctl_tool();
    let eps: Vec<String> = cluster
        .members
        .iter()
        .map(|m| format!("https://{}", m.client))
        .collect();
    root.ok(&eps[0], &["put", "/before", "1"], None);
    let latest = *first.iter().max().unwrap();
    while unix_now() <= latest + 2 {
        std::thread::sleep(Duration::from_millis(500));
    }

    for i in 0..3 {
        let renewed = member_cert_expiry(cluster.data_dir(i));
        assert!(
            renewed > first[i],
            "r{i}'s certificate was not renewed (still valid until {renewed})"
        );
        // A new connection: etcdctl checks the member's certificate now.
        root.ok(&eps[i], &["put", &format!("/after/{i}"), "x"], None);
        let log = std::fs::read_to_string(&cluster.members[i].log).unwrap();
        assert!(
            log.contains("renewed the member certificate"),
            "r{i}: {log}"
        );
    }
    // A member restarted after its first certificate expired presents the
    // renewed one to its peers (and accepts theirs): it catches up and
    // serves linearizable reads of what the others wrote.
    cluster.kill(0);
    // r0 may have led: the others elect a leader among themselves first.
    herd_tests::wait::until(
        "a write without r0",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            root.run(&eps[1], &["put", "/while-down", "y"], None)
                .status
                .success()
                .then_some(())
        },
    );
    cluster.restart(0);
    let got = root.ok(&eps[0], &["get", "/while-down", "--print-value-only"], None);
    assert_eq!(got.trim(), "y");
    let got = root.ok(
        &eps[2],
        &["get", "--prefix", "/after/", "--keys-only"],
        None,
    );
    assert_eq!(got.split_whitespace().count(), 3, "{got}");
}
