//! `herd kv` (herd's own etcd-v3 client) and `herd agent`'s flag checks,
//! against a single-member cluster started with no cluster flags.

use std::process::{Command, Output};

use herd_tests::bin;
use herd_tests::store::{Cluster, Server};

/// One member's client endpoint with the cluster's client credentials.
struct Endpoint {
    addr: String,
    flags: Vec<String>,
}

impl Endpoint {
    fn of(cluster: &Cluster, member: usize) -> Endpoint {
        Endpoint {
            addr: cluster.members[member].client.to_string(),
            flags: cluster.client_flags(),
        }
    }
}

fn herd_kv(endpoint: &Endpoint, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.arg("20")
        .arg(bin::herd())
        .arg("kv")
        .arg("--endpoints")
        .arg(&endpoint.addr)
        .args(&endpoint.flags)
        .args(args);
    if let Some(input) = stdin {
        use std::io::Write;
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("herd kv");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        return child.wait_with_output().unwrap();
    }
    cmd.output().expect("herd kv")
}

fn ok(endpoint: &Endpoint, args: &[&str]) -> String {
    let out = herd_kv(endpoint, args, None);
    assert!(
        out.status.success(),
        "herd kv {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn herd_kv_reads_writes_and_transacts_on_a_single_member() {
    let cluster = Cluster::start(Server::Herd, 1);
    let ep = Endpoint::of(&cluster, 0);
    assert_eq!(ok(&ep, &["put", "app/a", "1"]), "OK\n");
    assert_eq!(ok(&ep, &["put", "app/b", "2"]), "OK\n");
    assert_eq!(
        ok(&ep, &["get", "--prefix", "app/"]),
        "app/a\n1\napp/b\n2\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&ep, &["get", "app/a", "-o", "json"])).unwrap();
    assert_eq!(json["kvs"][0]["value"], "1", "{json}");
    assert_eq!(json["kvs"][0]["version"], 1, "{json}");
    let out = herd_kv(
        &ep,
        &["txn"],
        Some("value(\"app/a\") = \"1\"\n\nput app/a 10\n\nput app/a lost\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "SUCCESS\n\nOK\n");
    assert_eq!(ok(&ep, &["get", "app/a"]), "app/a\n10\n");
    assert_eq!(ok(&ep, &["del", "--prefix", "app/"]), "2\n");
    let grant = ok(&ep, &["lease", "grant", "30"]);
    let id = grant.split_whitespace().nth(1).unwrap().to_owned();
    assert!(ok(&ep, &["lease", "list"]).contains(&id));
    assert_eq!(
        ok(&ep, &["lease", "revoke", &id]),
        format!("lease {id} revoked\n")
    );
    let members = ok(&ep, &["member", "list"]);
    assert!(members.contains(", m0, "), "{members}");
    assert!(ok(&ep, &["status"]).contains("learner false"));

    // Bad input: a clear error naming the problem, not a crash.
    let out = herd_kv(&ep, &["txn"], Some("size(\"k\") = \"1\"\n"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown target \"size\""));
    let out = herd_kv(&ep, &["lease", "revoke", "123"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("requested lease not found"));
}

#[test]
fn herd_agent_refuses_to_start_without_a_token_or_with_a_bad_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let base = |extra: &[&str]| {
        Command::new(bin::herd())
            .args([
                "agent",
                "--name",
                "x",
                "--listen-client",
                "127.0.0.1:0",
                "--listen-peer",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.path())
            .args(extra)
            .output()
            .unwrap()
    };
    // A founder may start without a token (it makes the cluster CA); a
    // joiner and a plaintext member may not.
    for flags in [&["--join", "127.0.0.1:1"][..], &["--insecure-plaintext"]] {
        let out = base(flags);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--token"),
            "{flags:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // In TLS mode the token is a join token, not any string.
    let out = base(&["--token", "t", "--join", "127.0.0.1:1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("join token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = base(&["--token", "t", "--initial-cluster", "y=127.0.0.1:1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not list this member"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = base(&["--token", "t", "--initial-cluster", "x=nowhere"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad address"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
