//! The installed lab end to end, on one boot of three QEMU machines
//! (TCG boots are the suite's scarcest resource, so everything that needs
//! installed machines shares them).
//!
//! `herd lab up --install`: blank UEFI (OVMF) VMs netboot once, the image's
//! installer writes and verifies `disk.img` (served by `herd pxe serve` as
//! profile files), saves the cloud-config URL on the new STATE, reports the
//! install to the provisioning server and reboots into slot A; the machines
//! form the cluster from disk and their update roles report in. Then one
//! machine loses power and boots again: it comes back from its disk (no
//! netboot, no install) and resumes as the same store member from its own
//! data dir, serving a key written before it went down.
//!
//! Then the power-loss checks: a client writes under load while the power
//! of the leader and one follower is cut at the same instant (QEMU
//! SIGKILLed: whatever the guests had not written to their disks is gone),
//! then the power of all three machines; each time the machines boot from
//! their disks again and every acknowledged write must be there. SIGKILL
//! of a process keeps its page cache, so only this proves the store's
//! fsync before acknowledging.
//!
//! Last, a rolling OS upgrade and a broken release's rollback
//! (`herd_tests::rollout`), built while the machines install.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use herd_tests::lab::{
    Down, endpoint, etcdctl, lab, leader, membership_story, serial, serving, status,
};
use herd_tests::netns::Entry;
use herd_tests::robustness::{WriteProgress, check_acknowledged, run_writers};
use herd_tests::rollout::{
    broken_release_halts_at_the_canary, build_release, rolls_through,
    wait_idle_on_the_first_release,
};
use herd_tests::{bin, require, wait};

/// `etcdctl member list` as (name, hex id) pairs, sorted.
fn members(lab_dir: &Path, endpoint: &str) -> Option<Vec<(String, String)>> {
    let out = etcdctl(lab_dir, endpoint, &["member", "list"]);
    if !out.status.success() {
        return None;
    }
    // Lines: `ID, started, NAME, PEER URLS, CLIENT URLS, IS LEARNER`.
    let mut m: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(", ").collect();
            Some((f.get(2)?.to_string(), f.first()?.to_string()))
        })
        .collect();
    m.sort();
    Some(m)
}

const M1: &str = "10.77.0.11:2379";
const MACHINES: [&str; 3] = ["m1", "m2", "m3"];

/// Waits until every machine serves in the cluster again after `cut`
/// lost power; one that does not come back in 400 s fails the test with
/// the lab's status and the last lines of the cut machines' consoles.
fn wait_back(lab_dir: &Path, cut: &[&str]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(400);
    while serving(&status(lab_dir)).len() < MACHINES.len() {
        if std::time::Instant::now() > deadline {
            let consoles: Vec<String> = cut
                .iter()
                .map(|m| {
                    let log = serial(lab_dir, m);
                    let tail: Vec<&str> = log.lines().rev().take(25).collect();
                    format!(
                        "--- {m}'s console, last lines:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                })
                .collect();
            panic!(
                "the machines are not all back in the cluster 400 s after the power cut of {cut:?}; status:\n{:#}\n{}\n{}",
                status(lab_dir),
                consoles.join("\n"),
                membership_story(lab_dir)
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Waits until `progress` counts `target` acknowledged writes; a cluster
/// that cannot get there in minutes is broken, and the writers say how.
fn wait_for_writes(progress: &WriteProgress, target: usize, when: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while progress.acked() < target {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {target} writes acknowledged {when}; {}",
            progress.acked(),
            progress.failures()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Writers load the cluster (one per machine) for a while, then the power
/// of `cut` is pulled at the same instant while they keep writing; the
/// machines boot from their disks, and every write acknowledged before,
/// during or after the cut must be readable once all three serve again.
fn power_cut_under_load(
    lab_dir: &Path,
    rt: &tokio::runtime::Runtime,
    prefix: &'static str,
    cut: &[&str],
) {
    let endpoints: Vec<String> = MACHINES.iter().map(|m| endpoint(m)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(WriteProgress::default());
    let credentials = herd_tests::lab::credentials(lab_dir);
    let writers = rt.spawn(run_writers(
        endpoints.clone(),
        credentials.clone(),
        6,
        prefix,
        Duration::ZERO,
        Arc::clone(&stop),
        Arc::clone(&progress),
    ));
    // Dozens of acknowledged writes before the cut, however slowly TCG
    // guests sharing the host with the rest of the suite commit them.
    wait_for_writes(&progress, 40, "before the power cut");
    let mut kill = vec!["kill"];
    kill.extend_from_slice(cut);
    lab(lab_dir, &kill);
    eprintln!("power cut: {cut:?} after {} writes", progress.acked());
    std::thread::sleep(Duration::from_secs(3));
    for m in cut {
        lab(lab_dir, &["boot", m]);
    }
    wait_back(lab_dir, cut);
    // The cluster takes writes again once it is whole.
    wait_for_writes(
        &progress,
        progress.acked() + 10,
        "after the power came back",
    );
    stop.store(true, Ordering::Relaxed);
    let acked = rt.block_on(writers).expect("writers");
    let stored = wait::until(
        "a linearizable read of everything written",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || {
            let endpoints = endpoints.clone();
            let (acked, credentials) = (acked.clone(), credentials.clone());
            match rt
                .block_on(rt.spawn(async move {
                    check_acknowledged(&endpoints, &credentials, prefix, &acked).await
                }))
                .expect("check task")
            {
                Ok(n) => Some(n),
                Err(e) if e.contains("lost") => panic!("after cutting the power of {cut:?}: {e}"),
                Err(e) => {
                    eprintln!("not yet: {e}");
                    None
                }
            }
        },
    );
    eprintln!(
        "power cut of {cut:?}: all {} acknowledged writes survived ({stored} keys stored)",
        acked.len()
    );
    for m in cut {
        // The console log starts afresh with each power-on.
        let log = serial(lab_dir, m);
        assert!(
            log.contains("herd-init: /usr is USR-A") && !log.contains("iPXE"),
            "{m} did not boot from its disk again:\n{log}"
        );
    }
}
const M2: &str = "10.77.0.12:2379";

#[test]
fn qemu_lab_installed_machines_survive_power_cuts_and_roll_an_os_upgrade() {
    require::root();
    require::tool("qemu-system-x86_64", "qemu-system-x86");
    require::tool("etcdctl", "etcd-client");
    require::file("/usr/lib/ipxe/qemu/efi-virtio.rom", "ipxe-qemu");
    require::file("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf");

    let dir = tempfile::tempdir().unwrap();
    let lab_dir = dir.path().join("lab");
    let netns = format!("herd-lab-i{}", std::process::id());
    let _down = Down::arm(&lab_dir);

    // The lab's image is built first, exactly as `herd lab up` builds it,
    // so the two releases can build while the VMs install and boot.
    std::fs::create_dir_all(&lab_dir).unwrap();
    let built = Command::new(bin::herd())
        .args(["image", "build", "--out"])
        .arg(lab_dir.join("image"))
        .arg("--herd-bin")
        .arg(bin::herd())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "building the lab's image: {built:?}"
    );
    // Three machines: a power cut of the leader and one follower must leave
    // one member up, without a quorum.
    let up = {
        let (lab_dir, netns) = (lab_dir.clone(), netns.clone());
        std::thread::spawn(move || {
            lab(
                &lab_dir,
                &[
                    "up",
                    "--machines",
                    "3",
                    "--install",
                    "--netns",
                    &netns,
                    "--timeout",
                    "20m",
                ],
            )
        })
    };
    let release_b = build_release(dir.path(), "0.2.0", false);
    let release_c = build_release(dir.path(), "0.3.0", true);
    let up = up.join().expect("lab up");
    let up_text = String::from_utf8_lossy(&up.stdout);
    assert!(
        up_text.contains("cluster healthy: 3 machines joined"),
        "{up_text}"
    );
    for m in MACHINES {
        // The same QEMU process ran the install and then the disk boot.
        let log = serial(&lab_dir, m);
        for needle in [
            "herd-init: installing http://10.77.0.1:8080/assets/lab/files/disk.img onto /dev/vda",
            "wrote and verified",
            "herd-init: cloud-config URL saved on /dev/vda",
            "herd-init: reported the install to",
            "herd-init: /usr is USR-A",
        ] {
            assert!(log.contains(needle), "{m}: no {needle:?} in\n{log}");
        }
    }
    let s = status(&lab_dir);
    for m in s["machines"].as_array().unwrap() {
        assert_eq!(m["inventory"]["installed"], true, "pxe knows: {m}");
    }
    // Each machine's update role runs on the installed slot (good from the
    // start: the installer verified it, and there is nothing to fall back
    // to) and reports in the store, where `herd lab status` reads it.
    wait_idle_on_the_first_release(&lab_dir);

    let put = etcdctl(&lab_dir, M1, &["put", "/lab/before", "kept-on-disk"]);
    assert!(put.status.success(), "{put:?}");
    let before = wait::until(
        "member list",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || members(&lab_dir, M1),
    );
    assert_eq!(before.len(), 3, "{before:?}");

    // Pull m2's plug and power it on again: it boots from its disk.
    lab(&lab_dir, &["kill", "m2"]);
    lab(&lab_dir, &["boot", "m2"]);
    wait_back(&lab_dir, &["m2"]);
    let log = serial(&lab_dir, "m2");
    assert!(log.contains("herd-init: /usr is USR-A"), "{log}");
    assert!(
        !log.contains("herd-init: installing") && !log.contains("iPXE"),
        "m2 netbooted instead of booting its disk:\n{log}"
    );
    // Its data came from its own STATE: it resumed, it did not join anew.
    assert!(
        log.contains("resuming the store member from its data dir"),
        "{log}"
    );
    assert!(!log.contains("joined the cluster"), "{log}");
    // A linearizable read through m2: it must have caught up with the
    // leader's commit index. On failure, what etcdctl said last.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let out = etcdctl(&lab_dir, M2, &["get", "--print-value-only", "/lab/before"]);
        if String::from_utf8_lossy(&out.stdout).trim() == "kept-on-disk" {
            break;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "m2 does not serve the key written before it went down after 120 s; etcdctl: {out:?}\nstatus:\n{:#}\n{}",
                status(&lab_dir),
                membership_story(&lab_dir)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let after = members(&lab_dir, M2).expect("member list through m2");
    assert_eq!(after, before, "m2 is the same member");

    // Power loss under load: the leader and one follower, then everyone.
    let rt = Entry::named(&netns).expect("the lab's namespace").runtime();
    let leader_now = wait::until(
        "a leader",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || leader(&status(&lab_dir)),
    );
    let follower = MACHINES
        .iter()
        .find(|m| **m != leader_now)
        .expect("a follower")
        .to_string();
    power_cut_under_load(&lab_dir, &rt, "/power/a/", &[&leader_now, &follower]);
    power_cut_under_load(&lab_dir, &rt, "/power/b/", &MACHINES);

    // The machines were power-cycled: back on 0.1.0 and idle before the
    // rollout.
    wait_idle_on_the_first_release(&lab_dir);
    rolls_through(&lab_dir, &rt, &release_b);
    broken_release_halts_at_the_canary(&lab_dir, &release_c);

    lab(&lab_dir, &["down"]);
    assert!(
        !Path::new("/run/netns").join(&netns).exists(),
        "namespace left behind"
    );
}
