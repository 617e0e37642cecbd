//! The main job end to end: `herd lab up --machines 3` PXE-boots three blank
//! QEMU VMs (real iPXE, the real herd image built by `herd image build`),
//! they form one store cluster by themselves, a key written through one
//! machine reads back through another, the leader's VM is killed and the
//! cluster elects a new one and keeps serving, the killed machine boots
//! again (netboot: empty disk, fresh data) and rejoins, a global unit
//! started from the host with `herd lab exec -- herd units start` runs on
//! every VM with its cgroup limits, and `herd lab down`
//! leaves no namespace, tap or QEMU process behind.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use herd_tests::lab::{
    Down, endpoint, etcdctl, exec, lab, leader, membership_story, serving, status,
};
use herd_tests::{bin, require, wait};
use serde_json::Value;

/// Whether any process's command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(needle) {
            found.push(format!("{}: {text}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

/// Whether `herd units list-units -o json` shows hello.service active on
/// three machines and `herd units status hello.service -o json` shows, on
/// each, the unit's cgroup limits and the line it printed with its
/// hostname (`%H`: the lab names machines m1, m2, …).
fn hello_everywhere(list_units: &[u8], status: &[u8]) -> bool {
    let (Ok(rows), Ok(status)) = (
        serde_json::from_slice::<Vec<Value>>(list_units),
        serde_json::from_slice::<Vec<Value>>(status),
    ) else {
        return false;
    };
    let mut machines: Vec<&str> = rows
        .iter()
        .filter(|r| {
            r["unit"] == "hello.service" && r["active"] == "active" && r["sub"] == "running"
        })
        .filter_map(|r| r["machine"].as_str())
        .collect();
    machines.sort_unstable();
    machines.dedup();
    machines.len() == 3
        && status.len() == 3
        && status.iter().all(|s| {
            let files: Vec<(String, String)> =
                serde_json::from_value(s["cgroup_files"].clone()).unwrap_or_default();
            let printed = s["journal"].as_array().is_some_and(|j| {
                j.iter()
                    .filter_map(Value::as_str)
                    .any(|l| l.contains("stdout hello from m"))
            });
            files.contains(&("memory.max".into(), "67108864".into()))
                && files.contains(&("cpu.max".into(), "50000 100000".into()))
                && printed
        })
}

#[test]
fn qemu_lab_three_blank_vms_form_a_cluster_survive_the_leader_and_go_down_clean() {
    require::root();
    require::tool("qemu-system-x86_64", "qemu-system-x86");
    require::tool("etcdctl", "etcd-client");
    require::file("/usr/lib/ipxe/qemu/efi-virtio.rom", "ipxe-qemu");

    let dir = tempfile::tempdir().unwrap();
    let lab_dir = dir.path().join("lab");
    let netns = format!("herd-lab-e{}", std::process::id());
    let _down = Down::arm(&lab_dir);

    // Up: builds the image (cached), starts the provisioning server, boots
    // three blank VMs and waits until all three joined the cluster.
    let up = lab(
        &lab_dir,
        &[
            "up",
            "--machines",
            "3",
            "--netns",
            &netns,
            "--timeout",
            "6m",
        ],
    );
    let up_text = String::from_utf8_lossy(&up.stdout);
    assert!(
        up_text.contains("cluster healthy: 3 machines joined"),
        "{up_text}"
    );

    let s = status(&lab_dir);
    let mut members: Vec<&str> = s["cluster"]["member_names"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    members.sort();
    assert_eq!(members, ["m1", "m2", "m3"], "{s:#}");
    assert_eq!(serving(&s).len(), 3, "{s:#}");
    let registered = s["cluster"]["registered"].as_array().unwrap();
    assert_eq!(
        registered.len(),
        3,
        "every machine registered itself: {s:#}"
    );
    for r in registered {
        let name = r["hostname"].as_str().unwrap();
        let n: u8 = name.trim_start_matches('m').parse().unwrap();
        assert_eq!(r["mac"], format!("52:54:00:77:00:{n:02x}"), "{r}");
        assert_eq!(r["ip"], format!("10.77.0.{}", 10 + n), "{r}");
        assert_eq!(r["roles"], serde_json::json!(["store"]), "{r}");
        assert_eq!(r["boot_id"].as_str().unwrap().len(), 36, "{r}");
        assert_ne!(r["image_version"], "none (not a herd image)", "{r}");
    }
    for m in s["machines"].as_array().unwrap() {
        assert_eq!(m["powered"], true, "{m}");
        assert!(
            m["inventory"]["last_stage"].is_string(),
            "the provisioning inventory saw {m}"
        );
    }

    // Every machine leased a pod subnet of 10.244.0.0/16 (the network
    // role, from the cloud-config's `herd.network`), and each routes to
    // the others': from the lab network through machine i, the pod
    // bridge address of machine j answers (host-gw: i forwards by its
    // route to j's subnet; redirects off, so every ping takes that path).
    let subnets: Vec<(String, String)> = wait::until(
        "a pod subnet on every machine",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || {
            let s = status(&lab_dir);
            let v: Vec<(String, String)> = s["machines"]
                .as_array()?
                .iter()
                .filter_map(|m| {
                    Some((
                        m["name"].as_str()?.to_owned(),
                        m["subnet"].as_str()?.to_owned(),
                    ))
                })
                .collect();
            (v.len() == 3).then_some(v)
        },
    );
    let mut distinct: Vec<&String> = subnets.iter().map(|(_, s)| s).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{subnets:?}");
    let ok = |out: std::process::Output| {
        assert!(out.status.success(), "{out:?}");
    };
    ok(exec(
        &lab_dir,
        &["sysctl", "-qw", "net.ipv4.conf.all.accept_redirects=0"],
    ));
    for (via, _) in &subnets {
        let n: u8 = via.trim_start_matches('m').parse().unwrap();
        ok(exec(
            &lab_dir,
            &[
                "ip",
                "route",
                "replace",
                "10.244.0.0/16",
                "via",
                &format!("10.77.0.{}", 10 + n),
            ],
        ));
        for (to, subnet) in subnets.iter().filter(|(m, _)| m != via) {
            let net: Vec<u8> = subnet
                .split('/')
                .next()
                .unwrap()
                .split('.')
                .map(|o| o.parse().unwrap())
                .collect();
            let gateway = format!("{}.{}.{}.{}", net[0], net[1], net[2], net[3] + 1);
            wait::until(
                &format!("{to}'s pod bridge {gateway} through {via}"),
                Duration::from_secs(30),
                Duration::from_millis(500),
                || {
                    exec(&lab_dir, &["ping", "-c1", "-W2", &gateway])
                        .status
                        .success()
                        .then_some(())
                },
            );
        }
    }
    ok(exec(&lab_dir, &["ip", "route", "del", "10.244.0.0/16"]));

    // The provisioning server's admin listener: `herd lab exec` points
    // `herd pxe` at it over HTTPS, pinned to its own CA; the plain listener
    // machines boot from is never sent the token.
    let updates = exec(&lab_dir, &["herd", "pxe", "updates", "-o", "json"]);
    assert!(updates.status.success(), "{updates:?}");
    let updates: serde_json::Value = serde_json::from_slice(&updates.stdout).unwrap();
    assert!(updates["groups"].is_array(), "{updates}");
    let plain = exec(
        &lab_dir,
        &[
            "herd",
            "pxe",
            "updates",
            "--server",
            "http://10.77.0.1:8080",
            "resume",
            "stable",
        ],
    );
    let said = String::from_utf8_lossy(&plain.stderr);
    assert!(
        !plain.status.success() && said.contains("plain HTTP"),
        "{said}"
    );

    // Written through one machine, read through another.
    let put = etcdctl(&lab_dir, &endpoint("m2"), &["put", "/lab/hello", "world"]);
    assert!(put.status.success(), "{put:?}");
    let get = etcdctl(
        &lab_dir,
        &endpoint("m3"),
        &["get", "--print-value-only", "/lab/hello"],
    );
    assert_eq!(
        String::from_utf8_lossy(&get.stdout).trim(),
        "world",
        "{get:?}"
    );

    // The host's own CLI through the lab network, no endpoints given: `herd
    // lab exec` points clients at the lab's machines.
    let kv = Command::new(bin::herd())
        .args(["lab", "--lab-dir"])
        .arg(&lab_dir)
        .args([
            "exec",
            "--",
            "herd",
            "kv",
            "get",
            "--prefix",
            "/herd/machines/",
        ])
        .output()
        .unwrap();
    let kv_text = String::from_utf8_lossy(&kv.stdout);
    assert!(kv.status.success(), "{kv:?}");
    for n in 1..=3 {
        assert!(
            kv_text.contains(&format!("/herd/machines/52540077000{n}")),
            "{kv_text}"
        );
    }

    // A global unit started from the host runs on every VM, each in its own
    // cgroup with its limits applied by the VM's kernel.
    let units_dir = tempfile::tempdir().unwrap();
    let hello = units_dir.path().join("hello.service");
    std::fs::write(
        &hello,
        "[Unit]\nDescription=Hello from every machine\n[Service]\nExecStart=/bin/sh -c 'echo hello from %H; exec sleep 100000'\nMemoryMax=64M\nCPUQuota=50%\n[X-Fleet]\nGlobal=true\n",
    )
    .unwrap();
    let herd_units = |args: &[&str]| {
        Command::new(bin::herd())
            .args(["lab", "--lab-dir"])
            .arg(&lab_dir)
            .args(["exec", "--", "herd", "units"])
            .args(args)
            .output()
            .unwrap()
    };
    let start = herd_units(&["start", "--timeout", "5m", hello.to_str().unwrap()]);
    assert!(start.status.success(), "{start:?}");
    // Running on all three, each reporting its cgroup limits and its own
    // hostname in the journal. `start` may return before every machine's
    // placement exists, so look until all three show it; on failure, say
    // what the cluster showed last.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let listed = herd_units(&["list-units", "-o", "json"]);
        let status = herd_units(&["status", "hello.service", "-o", "json"]);
        if hello_everywhere(&listed.stdout, &status.stdout) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "hello.service is not running on every VM with its limits and journal:\n{}\n{}{}",
            String::from_utf8_lossy(&listed.stdout),
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&status.stderr),
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    // Kill the leader's VM: the other two elect a new leader and serve.
    // Joiners start as learners; all three must be voters by now.
    let s = patiently(&lab_dir, "three voters", Duration::from_secs(60), |s| {
        (serving(s).len() == 3).then_some(s.clone())
    });
    let old_leader = leader(&s).expect("a leader");
    lab(&lab_dir, &["kill", &old_leader]);
    let new_leader = patiently(
        &lab_dir,
        "a new leader after killing the old one",
        Duration::from_secs(60),
        |s| leader(s).filter(|l| *l != old_leader),
    );
    let survivors: Vec<String> = ["m1", "m2", "m3"]
        .iter()
        .filter(|m| **m != old_leader)
        .map(|m| endpoint(m))
        .collect();
    let survivors = survivors.join(",");
    wait::until(
        "a write after the leader died",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            etcdctl(
                &lab_dir,
                &survivors,
                &["put", "/lab/after", new_leader.as_str()],
            )
            .status
            .success()
            .then_some(())
        },
    );
    let get = etcdctl(
        &lab_dir,
        &survivors,
        &["get", "--print-value-only", "/lab/hello"],
    );
    assert_eq!(
        String::from_utf8_lossy(&get.stdout).trim(),
        "world",
        "{get:?}"
    );

    // Boot it again: it netboots with an empty disk, finds the running
    // cluster through its peers and rejoins as a fresh member.
    lab(&lab_dir, &["boot", &old_leader]);
    wait::until(
        "the killed machine to rejoin and serve",
        Duration::from_secs(180),
        Duration::from_secs(1),
        || {
            serving(&status(&lab_dir))
                .contains(&old_leader)
                .then_some(())
        },
    );
    // It has the data written while it was away (replicated from the leader).
    wait::until(
        "the rejoined machine to serve the key written while it was off",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            let out = etcdctl(
                &lab_dir,
                &endpoint(&old_leader),
                &["get", "--print-value-only", "/lab/after"],
            );
            (String::from_utf8_lossy(&out.stdout).trim() == new_leader).then_some(())
        },
    );
    let s = status(&lab_dir);
    assert_eq!(serving(&s).len(), 3, "{s:#}");

    // Down: nothing left.
    let down = lab(&lab_dir, &["down"]);
    assert!(String::from_utf8_lossy(&down.stdout).contains("namespace removed"));
    assert!(
        !Path::new("/run/netns").join(&netns).exists(),
        "namespace left behind"
    );
    let lab_dir_text = lab_dir.display().to_string();
    let left = processes_mentioning(&lab_dir_text);
    assert!(left.is_empty(), "processes left behind: {left:#?}");
    // Idempotent.
    let again = lab(&lab_dir, &["down"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("already gone"));
}

/// Polls the lab's status until `check` finds what it wants; on timeout
/// the test fails with the last status and what the consoles said about
/// the store's membership.
fn patiently<T>(
    lab_dir: &Path,
    what: &str,
    timeout: Duration,
    check: impl Fn(&Value) -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let s = status(lab_dir);
        if let Some(found) = check(&s) {
            return found;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}; status:\n{s:#}\n{}",
                membership_story(lab_dir)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
