//! Disaster recovery with real processes: `etcdctl snapshot save` from a
//! herd cluster, `herd kv snapshot restore` into the data dirs of a new
//! cluster (new names, new ports), `herd agent` started on them, checked
//! with Debian's real `etcdctl`: same keys, values and revisions, old
//! revisions readable, revisions continuing, the new members, replication,
//! a SIGKILLed member's restart; and the refusals.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use herd_tests::bin;
use herd_tests::store::{Cluster, Etcdctl, Server};
use herd_tests::wait;
use serde_json::Value;

fn json(ctl: &Etcdctl, endpoints: &str, args: &[&str]) -> Value {
    let out = ctl.ok(endpoints, args, None);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("etcdctl {args:?}: {e}: {out}"))
}

/// Every key (with its revisions, version and lease) and the revision, as
/// `etcdctl get "" --prefix -w json` reports them.
fn key_space(ctl: &Etcdctl, endpoints: &str, extra: &[&str]) -> (Vec<Value>, i64) {
    let mut args = vec!["get", "", "--prefix", "-w", "json"];
    args.extend_from_slice(extra);
    let v = json(ctl, endpoints, &args);
    let kvs = v["kvs"].as_array().cloned().unwrap_or_default();
    (kvs, v["header"]["revision"].as_i64().expect("a revision"))
}

fn herd_restore(file: &Path, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(bin::herd())
        .args(["kv", "snapshot", "restore"])
        .arg(file)
        .args(args)
        .output()
        .expect("running herd kv snapshot restore")
}

fn restore_ok(file: &Path, args: &[&str]) -> String {
    let out = herd_restore(file, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "herd kv snapshot restore {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Refused, with `expected` in its error, and no data dir left behind.
fn restore_refused(file: &Path, args: &[&str], data_dir: &Path, expected: &str) {
    let out = herd_restore(file, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "restore {args:?} was accepted");
    assert!(
        stderr.contains(expected),
        "restore {args:?}: expected {expected:?} in:\n{stderr}"
    );
    assert!(
        !data_dir.exists() || data_dir.join("x").exists(),
        "a refused restore left {} behind",
        data_dir.display()
    );
}

/// Saves a snapshot of `endpoint`'s key space into `dir`, once that
/// member applied revision `rev` (a member snapshots its own state, and
/// reads through it are served by the leader, so it may lag a little).
fn save_snapshot(ctl: &Etcdctl, endpoint: &str, rev: i64, dir: &Path) -> PathBuf {
    wait::until(
        "the member to apply every write",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || (key_space(ctl, endpoint, &["--consistency=s"]).1 >= rev).then_some(()),
    );
    let file = dir.join("backup.db");
    ctl.ok(
        endpoint,
        &["snapshot", "save", file.to_str().expect("utf-8 path")],
        None,
    );
    file
}

fn cluster_id(ctl: &Etcdctl, endpoint: &str) -> u64 {
    json(ctl, endpoint, &["get", "x", "-w", "json"])["header"]["cluster_id"]
        .as_u64()
        .expect("a cluster id")
}

/// `etcdctl endpoint hashkv --rev=REV` of one endpoint.
fn hashkv(ctl: &Etcdctl, endpoint: &str, rev: i64) -> u64 {
    let out = ctl.ok(
        endpoint,
        &["endpoint", "hashkv", &format!("--rev={rev}")],
        None,
    );
    out.trim()
        .rsplit(", ")
        .next()
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("no hash in {out:?}"))
}

#[test]
fn store_snapshot_restore_into_a_new_three_member_cluster() {
    let mut old = Cluster::start(Server::Herd, 3);
    let ctl = old.etcdctl_tool();
    let ep = old.endpoints();
    // Several revisions of one key, a deleted key, a key on a lease.
    let mut revs_of_a = Vec::new();
    for i in 1..=3 {
        let v = json(&ctl, &ep, &["put", "a", &format!("a{i}"), "-w", "json"]);
        revs_of_a.push(v["header"]["revision"].as_i64().expect("revision"));
    }
    for i in 0..20 {
        ctl.ok(
            &ep,
            &["put", &format!("dir/{i:02}"), &format!("v{i}")],
            None,
        );
    }
    ctl.ok(&ep, &["put", "gone", "soon"], None);
    ctl.ok(&ep, &["del", "gone"], None);
    let lease = json(&ctl, &ep, &["lease", "grant", "600", "-w", "json"])["ID"]
        .as_i64()
        .expect("lease id");
    let lease_hex = format!("{lease:x}");
    ctl.ok(&ep, &["put", "leased", "yes", "--lease", &lease_hex], None);
    let (before, before_rev) = key_space(&ctl, &ep, &[]);
    assert_eq!(before.len(), 22, "{before:?}");
    let old_cluster_id = cluster_id(&ctl, &ep);
    let before_hash = hashkv(&ctl, &old.members[0].client.to_string(), before_rev);

    let backup = tempfile::tempdir().expect("scratch dir");
    let file = save_snapshot(
        &ctl,
        &old.members[1].client.to_string(),
        before_rev,
        backup.path(),
    );
    for i in 0..3 {
        old.kill(i);
    }
    drop(old);

    let mut new = Cluster::unstarted(3, "r");
    let peers = new.peer_list();
    let mut restored_ids = Vec::new();
    for m in &new.members {
        let out = restore_ok(
            &file,
            &[
                "--name",
                &m.name,
                "--data-dir",
                m.data_dir.to_str().expect("utf-8 path"),
                "--initial-cluster",
                &peers,
            ],
        );
        assert!(
            out.contains("restored snapshot") && out.contains(&format!("revision {before_rev}")),
            "{out}"
        );
        let id = out
            .split("of new cluster ")
            .nth(1)
            .and_then(|rest| rest.split(':').next())
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .unwrap_or_else(|| panic!("no cluster id in {out:?}"));
        restored_ids.push(id);
    }
    assert!(
        restored_ids.windows(2).all(|w| w[0] == w[1]),
        "{restored_ids:x?}"
    );
    new.start_all();
    let ctl = new.etcdctl_tool();
    let ep = new.endpoints();
    // Each member runs the restored data dir as it was built (its
    // member.json), not a fresh bootstrap.
    for m in &new.members {
        assert_eq!(
            cluster_id(&ctl, &m.client.to_string()),
            restored_ids[0],
            "{}",
            m.name
        );
    }

    // The key space, revisions included, is the snapshot's.
    let (after, after_rev) = key_space(&ctl, &ep, &[]);
    assert_eq!(after, before);
    assert_eq!(after_rev, before_rev);
    // History came along: every past value of `a` is readable.
    for (i, rev) in revs_of_a.iter().enumerate() {
        let out = ctl.ok(&ep, &["get", "a", &format!("--rev={rev}")], None);
        assert_eq!(out, format!("a\na{}\n", i + 1), "get a --rev={rev}");
    }
    // The whole MVCC history hashes the same on every new member.
    for m in &new.members {
        assert_eq!(
            hashkv(&ctl, &m.client.to_string(), before_rev),
            before_hash,
            "{}",
            m.name
        );
    }
    let out = ctl.ok(&ep, &["get", "gone"], None);
    assert_eq!(out, "", "a deleted key came back");
    // Leases survive a restore (as in etcd) and keep their keys.
    let leases = ctl.ok(&ep, &["lease", "list"], None);
    assert!(leases.contains(&lease_hex), "{leases}");

    // A new cluster: its own identity, the new members only.
    assert_ne!(cluster_id(&ctl, &ep), old_cluster_id);
    let list = json(&ctl, &ep, &["member", "list", "-w", "json"]);
    let mut members: Vec<(String, String)> = list["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().to_owned(),
                m["peerURLs"][0].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    members.sort();
    let expected: Vec<(String, String)> = new
        .members
        .iter()
        .map(|m| (m.name.clone(), format!("https://{}", m.peer)))
        .collect();
    assert_eq!(members, expected);
    // etcdctl 3.4 prints health results on stderr.
    let out = ctl.run(&ep, &["endpoint", "health"], None);
    let health =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{health}");
    assert_eq!(
        health
            .matches("is healthy: successfully committed proposal")
            .count(),
        3,
        "{health}"
    );

    // Revisions continue after the snapshot's, and writes reach every member.
    let put = json(&ctl, &ep, &["put", "after", "restore", "-w", "json"]);
    let put_rev = put["header"]["revision"].as_i64().expect("revision");
    assert!(put_rev > before_rev, "{put_rev} after {before_rev}");
    for m in &new.members {
        let endpoint = m.client.to_string();
        wait::until(
            &format!("{} to have the new write", m.name),
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                let out = ctl.run(&endpoint, &["get", "after", "--consistency=s"], None);
                (String::from_utf8_lossy(&out.stdout) == "after\nrestore\n").then_some(())
            },
        );
    }

    // The restored cluster survives losing its leader, and the SIGKILLed
    // member restarts from its own data dir with everything.
    let down = new.leader();
    new.kill(down);
    let up = new.members[(down + 1) % 3].client.to_string();
    wait::until(
        "a write after the leader was killed",
        Duration::from_secs(60),
        Duration::from_millis(300),
        || {
            ctl.run(&up, &["put", "while", "down"], None)
                .status
                .success()
                .then_some(())
        },
    );
    new.restart(down);
    let (expected, rev) = key_space(&ctl, &up, &[]);
    let endpoint = new.members[down].client.to_string();
    // Its own (serializable) view catches up to the cluster's, then equals it.
    let restarted = wait::until(
        "the restarted member to reach the cluster's revision",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let (kvs, r) = key_space(&ctl, &endpoint, &["--consistency=s"]);
            (r >= rev).then_some(kvs)
        },
    );
    assert_eq!(restarted, expected);
    assert_eq!(
        ctl.ok(
            &endpoint,
            &["get", "a", &format!("--rev={}", revs_of_a[0])],
            None
        ),
        "a\na1\n"
    );

    // A member joining the restored cluster later gets the restored state
    // (by snapshot: the restored log starts after it).
    let joined = new.join_new(0);
    let endpoint = new.members[joined].client.to_string();
    let caught_up = wait::until(
        "the joined member to reach the cluster's revision",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let (kvs, r) = key_space(&ctl, &endpoint, &["--consistency=s"]);
            (r >= rev).then_some(kvs)
        },
    );
    assert_eq!(caught_up, expected);
    assert_eq!(hashkv(&ctl, &endpoint, before_rev), before_hash);
}

#[test]
fn store_snapshot_restore_single_member() {
    let mut old = Cluster::start(Server::Herd, 1);
    let ctl = old.etcdctl_tool();
    let ep = old.endpoints();
    ctl.ok(&ep, &["put", "k", "v1"], None);
    ctl.ok(&ep, &["put", "k", "v2"], None);
    let (before, before_rev) = key_space(&ctl, &ep, &[]);
    let backup = tempfile::tempdir().expect("scratch dir");
    let file = save_snapshot(&ctl, &ep, before_rev, backup.path());
    old.kill(0);
    drop(old);

    // No --initial-cluster: a single member at --listen-peer, as `herd agent` starts one.
    let mut new = Cluster::unstarted(1, "solo");
    let m = &new.members[0];
    let out = restore_ok(
        &file,
        &[
            "-o",
            "json",
            "--name",
            &m.name,
            "--data-dir",
            m.data_dir.to_str().expect("utf-8 path"),
            "--listen-peer",
            &m.peer.to_string(),
            "--storage",
            "file",
        ],
    );
    let report: Value = serde_json::from_str(&out).expect("json output");
    assert_eq!(report["revision"].as_i64(), Some(before_rev), "{report}");
    assert_eq!(
        report["members"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    // `herd agent` takes the engine from the restored member.json.
    new.start_all();
    let ctl = new.etcdctl_tool();
    let raft = new.data_dir(0).join("raft");
    assert!(
        raft.join("raft.log").is_file(),
        "no file-engine log in {}",
        raft.display()
    );
    assert!(!raft.join("log.redb").exists());
    let ep = new.endpoints();
    let (after, after_rev) = key_space(&ctl, &ep, &[]);
    assert_eq!((after, after_rev), (before, before_rev));
    assert_eq!(ctl.ok(&ep, &["get", "k", "--rev=1"], None), "k\nv1\n");
    let list = json(&ctl, &ep, &["member", "list", "-w", "json"]);
    assert_eq!(list["members"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list["members"][0]["name"], "solo0");
    let put = json(&ctl, &ep, &["put", "k", "v3", "-w", "json"]);
    assert_eq!(put["header"]["revision"].as_i64(), Some(before_rev + 1));
}

#[test]
fn store_snapshot_restore_refusals() {
    let mut old = Cluster::start(Server::Herd, 1);
    let ctl = old.etcdctl_tool();
    ctl.ok(&old.endpoints(), &["put", "k", "v"], None);
    let scratch = tempfile::tempdir().expect("scratch dir");
    let file = save_snapshot(&ctl, &old.endpoints(), 1, scratch.path());
    old.kill(0);
    let dir = |name: &str| scratch.path().join(name);
    let arg = |p: &Path| p.to_str().expect("utf-8 path").to_owned();

    // An existing, non-empty data dir (etcdutl refuses it too).
    let used = dir("used");
    std::fs::create_dir_all(&used).expect("mkdir");
    std::fs::write(used.join("x"), b"keep me").expect("write");
    restore_refused(
        &file,
        &["--name", "a", "--data-dir", &arg(&used)],
        &used,
        "already exists and is not empty",
    );
    assert_eq!(std::fs::read(used.join("x")).expect("kept"), b"keep me");

    // One flipped byte fails the file's sha256.
    let mut bytes = std::fs::read(&file).expect("read snapshot");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let corrupt = dir("corrupt.db");
    std::fs::write(&corrupt, bytes).expect("write");
    let target = dir("from-corrupt");
    restore_refused(
        &corrupt,
        &["--name", "a", "--data-dir", &arg(&target)],
        &target,
        "fails its sha256 check",
    );

    // The member must be one of the new cluster.
    let target = dir("stranger");
    restore_refused(
        &file,
        &[
            "--name",
            "z",
            "--data-dir",
            &arg(&target),
            "--initial-cluster",
            "a=127.0.0.1:12380,b=127.0.0.1:12381",
        ],
        &target,
        "does not list this member's name \"z\"",
    );

    // A good restore works into what was refused before, once it is empty.
    std::fs::remove_file(used.join("x")).expect("rm");
    restore_ok(&file, &["--name", "a", "--data-dir", &arg(&used)]);
    assert!(used.join("member.json").is_file());
}
