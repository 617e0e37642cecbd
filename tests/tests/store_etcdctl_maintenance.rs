//! Conformance of the maintenance side of the API: Debian's real `etcdctl`
//! (3.4) and `herd kv` run `endpoint hashkv`, `snapshot save`, `member
//! update` and `move-leader` against a 3-member herd cluster.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use herd_tests::bin;
use herd_tests::store::{Cluster, Etcdctl, Server};
use herd_tests::wait;
use serde_json::Value;

fn ok(ctl: &Etcdctl, endpoints: &str, args: &[&str]) -> String {
    ctl.ok(endpoints, args, None)
}

fn herd_kv(cluster: &Cluster, endpoints: &str, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("60")
        .arg(bin::herd())
        .arg("kv")
        .arg("--endpoints")
        .arg(endpoints)
        .args(cluster.client_flags())
        .args(args)
        .output()
        .expect("running herd kv");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "herd kv {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `endpoint hashkv` lines (`ENDPOINT, HASH`) → the hashes.
fn hashes(out: &str) -> Vec<u64> {
    out.lines()
        .map(|l| {
            l.rsplit(", ")
                .next()
                .and_then(|h| h.trim().parse().ok())
                .unwrap_or_else(|| panic!("no hash in {l:?}"))
        })
        .collect()
}

/// Each member's (id, the leader it reports; 0 = none), from `endpoint
/// status -w json`; `None` while a member does not answer.
fn statuses(cluster: &Cluster) -> Option<Vec<(u64, u64)>> {
    cluster
        .members
        .iter()
        .map(|m| {
            let out = cluster.etcdctl(
                &m.client.to_string(),
                &["endpoint", "status", "-w", "json"],
                None,
            );
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            let s = &v[0]["Status"];
            // etcdctl leaves a zero leader out of its JSON.
            Some((
                s["header"]["member_id"].as_u64()?,
                s["leader"].as_u64().unwrap_or(0),
            ))
        })
        .collect()
}

/// Waits until every member reports the same leader (`target`, if given).
fn agreed_leader(cluster: &Cluster, target: Option<u64>) -> Vec<(u64, u64)> {
    wait::until(
        "every member to report the same leader",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            let s = statuses(cluster)?;
            let leader = target.unwrap_or(s[0].1);
            (leader != 0 && s.iter().all(|(_, l)| *l == leader)).then_some(s)
        },
    )
}

#[test]
fn etcdctl_hashkv_snapshot_member_update_and_move_leader_against_herd() {
    let cluster = Cluster::start(Server::Herd, 3);
    let ctl = cluster.etcdctl_tool();
    let all = cluster.endpoints();
    let one = cluster.members[0].client.to_string();

    for i in 0..50 {
        ok(
            &ctl,
            &all,
            &["put", &format!("key/{}", i % 10), &format!("v{i}")],
        );
    }
    ok(&ctl, &all, &["del", "key/3"]);
    ok(&ctl, &all, &["compaction", "20"]);
    let rev = 51; // 50 puts and a delete

    // hashkv: every member hashes the same key space at the same revision.
    let out = ok(&ctl, &all, &["endpoint", "hashkv", &format!("--rev={rev}")]);
    let at_rev = hashes(&out);
    assert_eq!(at_rev.len(), 3, "{out}");
    assert!(at_rev.iter().all(|h| *h == at_rev[0]), "{out}");
    // A new write changes the current hash but not the one at `rev`.
    ok(&ctl, &all, &["put", "key/new", "x"]);
    let out = ok(&ctl, &all, &["endpoint", "hashkv"]);
    let now = hashes(&out);
    assert!(now.iter().all(|h| *h == now[0]), "{out}");
    assert_ne!(now[0], at_rev[0]);
    let out = ok(&ctl, &all, &["endpoint", "hashkv", &format!("--rev={rev}")]);
    assert_eq!(hashes(&out), at_rev, "{out}");
    // herd kv asks each endpoint too.
    let json: Value = serde_json::from_str(&herd_kv(
        &cluster,
        &all,
        &["endpoint", "hashkv", "-o", "json"],
    ))
    .unwrap();
    let rows = json.as_array().expect("rows");
    assert_eq!(rows.len(), 3, "{json}");
    for r in rows {
        assert_eq!(r["hash"].as_u64(), Some(now[0]), "{json}");
        assert_eq!(r["compact_revision"], 20, "{json}");
    }
    // Below the compaction there is nothing to hash.
    let out = ctl.run(&one, &["endpoint", "hashkv", "--rev=5"], None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("required revision has been compacted"),
        "{out:?}"
    );

    // snapshot save: etcdctl keeps the file (it checks etcd's size/sha256
    // framing); herd decodes it and finds the key space that hashkv hashed.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap.db");
    let file = file.to_str().unwrap();
    let saved = ok(&ctl, &one, &["snapshot", "save", file]);
    assert!(
        saved.contains(&format!("Snapshot saved at {file}")),
        "{saved}"
    );
    let status: Value = serde_json::from_str(&herd_kv(
        &cluster,
        &one,
        &["snapshot", "status", file, "-o", "json"],
    ))
    .unwrap();
    assert_eq!(status["revision"], rev + 1, "{status}");
    assert_eq!(status["total_keys"], 10, "{status}"); // key/0..9 minus key/3, plus key/new
    assert_eq!(status["hash"].as_u64(), Some(now[0]), "{status}");
    // herd kv's own download lands the same key space.
    let file2 = dir.path().join("snap2.db");
    let file2 = file2.to_str().unwrap();
    let saved: Value = serde_json::from_str(&herd_kv(
        &cluster,
        &one,
        &["snapshot", "save", file2, "-o", "json"],
    ))
    .unwrap();
    assert_eq!(saved["revision"], rev + 1, "{saved}");
    let status2: Value = serde_json::from_str(&herd_kv(
        &cluster,
        &one,
        &["snapshot", "status", file2, "-o", "json"],
    ))
    .unwrap();
    assert_eq!(status2["hash"], status["hash"]);
    // A damaged file is refused with the reason.
    let mut bytes = std::fs::read(file).unwrap();
    bytes[100] ^= 0xff;
    let bad = dir.path().join("bad.db");
    std::fs::write(&bad, bytes).unwrap();
    let out = Command::new(bin::herd())
        .args(["kv", "snapshot", "status"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sha256"),
        "{out:?}"
    );

    // member update: a registered (not yet started) member gets a new peer URL.
    let spare = herd_tests::store::free_addr();
    let moved = herd_tests::store::free_addr();
    let added = ok(
        &ctl,
        &all,
        &[
            "member",
            "add",
            "spare",
            &format!("--peer-urls=https://{spare}"),
        ],
    );
    let spare_id = added.split_whitespace().nth(1).expect("id").to_owned();
    let updated = ok(
        &ctl,
        &all,
        &[
            "member",
            "update",
            &spare_id,
            &format!("--peer-urls=https://{moved}"),
        ],
    );
    assert_eq!(
        updated.split_whitespace().take(3).collect::<Vec<_>>(),
        ["Member", spare_id.as_str(), "updated"],
        "{updated}"
    );
    let list = ok(&ctl, &all, &["member", "list"]);
    assert!(list.contains(&format!("https://{moved}")), "{list}");
    assert!(!list.contains(&format!("https://{spare}")), "{list}");
    let back = herd_tests::store::free_addr();
    let json: Value = serde_json::from_str(&herd_kv(
        &cluster,
        &all,
        &[
            "member",
            "update",
            &spare_id,
            &format!("--peer-urls=https://{back}"),
            "-o",
            "json",
        ],
    ))
    .unwrap();
    assert!(
        json.to_string().contains(&format!("https://{back}")),
        "{json}"
    );
    let out = ctl.run(
        &all,
        &[
            "member",
            "update",
            "abcdef",
            "--peer-urls=https://127.0.0.1:1",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("member not found"),
        "{out:?}"
    );
    let out = ctl.run(
        &all,
        &[
            "member",
            "update",
            &spare_id,
            "--peer-urls=https://host.invalid:1",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad peer URL"),
        "{out:?}"
    );
    ok(&ctl, &all, &["member", "remove", &spare_id]);

    // move-leader: leadership really moves (every member reports it) while
    // a client keeps writing, and the cluster keeps serving writes.
    let before = agreed_leader(&cluster, None);
    let leader = before[0].1;
    let target = before
        .iter()
        .map(|(id, _)| *id)
        .find(|id| *id != leader)
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, all, ctl) = (Arc::clone(&stop), all.clone(), ctl.clone());
        std::thread::spawn(move || {
            let mut acked = 0;
            while !stop.load(Ordering::Relaxed) {
                // A write may fail while the election runs; later ones must not.
                if ctl
                    .run(&all, &["put", "load", &acked.to_string()], None)
                    .status
                    .success()
                {
                    acked += 1;
                }
            }
            acked
        })
    };
    let out = ok(&ctl, &all, &["move-leader", &format!("{target:x}")]);
    assert!(
        out.contains(&format!(
            "Leadership transferred from {leader:x} to {target:x}"
        )),
        "{out}"
    );
    agreed_leader(&cluster, Some(target));
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0);
    ok(&ctl, &all, &["put", "after-move", "1"]);
    // herd kv moves it on to the third member.
    let third = before
        .iter()
        .map(|(id, _)| *id)
        .find(|id| *id != leader && *id != target)
        .unwrap();
    let out = herd_kv(&cluster, &one, &["move-leader", &format!("{third:x}")]);
    assert_eq!(out, format!("leadership moved to {third:x}\n"));
    agreed_leader(&cluster, Some(third));
    assert_eq!(
        ok(&ctl, &all, &["get", "after-move", "--print-value-only"]),
        "1\n"
    );
    // Moving to the leader itself is a no-op; an unknown member is an error.
    herd_kv(&cluster, &one, &["move-leader", &format!("{third:x}")]);
    let out = Command::new(bin::herd())
        .args(["kv", "--endpoints", &one])
        .args(cluster.client_flags())
        .args(["move-leader", "abcdef"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("member not found"),
        "{out:?}"
    );
}
