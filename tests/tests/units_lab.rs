//! The units role on a namespace lab of real `herd agent` processes, each
//! in its own network namespace with its own cgroup subtree: placement as
//! fleet would (global units, joiners, MachineMetadata, Conflicts,
//! templates and instances), status and journals from every machine,
//! ExecStop and KillMode with no orphans, bad input, an OS update's drain;
//! then a lost machine whose unit runs elsewhere exactly once, a store
//! leader kill that restarts no unit, and a machine that comes back and
//! stops its stale copy.

use std::time::Duration;

use herd_tests::units::{UnitsLab, start_time};
use herd_tests::wait;
use serde_json::Value;

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// Whether `pid` runs (a zombie waiting for init to reap it does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

fn until(what: &str, secs: u64, f: impl FnMut() -> Option<()>) {
    wait::until(
        what,
        Duration::from_secs(secs),
        Duration::from_millis(300),
        f,
    );
}

fn active_on(lab: &UnitsLab, unit: &str) -> Vec<String> {
    active_via(lab, 0, unit)
}

/// The machines where `unit` is active, as machine `ask` sees it.
fn active_via(lab: &UnitsLab, ask: usize, unit: &str) -> Vec<String> {
    lab.rows(ask, unit)
        .iter()
        .filter(|r| r["active"] == "active")
        .filter_map(|r| r["machine"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn units_lab_places_like_fleet_and_answers_from_every_machine() {
    let mut lab = UnitsLab::start(3, "5s", |i| {
        ["zone=a,disk=ssd", "zone=b", "zone=a", "zone=c"][i].to_owned()
    });
    let files = tempfile::tempdir().unwrap();
    let d = files.path();
    let ids: Vec<String> = (0..3).map(|i| lab.machine_id(i)).collect();

    // A global unit runs on every machine.
    let hello = write(
        d,
        "hello.service",
        "[Unit]\nDescription=Hello\n[Service]\nExecStart=/bin/sh -c 'echo hello from %H; exec sleep 1000'\n[X-Fleet]\nGlobal=true\n",
    );
    lab.units_ok(0, &["start", &hello]);
    until("hello on all three", 60, || {
        (active_on(&lab, "hello.service").len() == 3).then_some(())
    });
    assert_eq!(lab.running_on("hello.service"), [0, 1, 2]);

    // MachineMetadata: keys AND, repeated key OR.
    let zoned = write(
        d,
        "zoned.service",
        "[Service]\nExecStart=/bin/sleep 1000\n[X-Fleet]\nMachineMetadata=zone=b\n",
    );
    let ssd = write(
        d,
        "ssd.service",
        "[Service]\nExecStart=/bin/sleep 1000\n[X-Fleet]\nMachineMetadata=zone=a disk=ssd\n",
    );
    let either = write(
        d,
        "either.service",
        "[Service]\nExecStart=/bin/sleep 1000\n[X-Fleet]\nMachineMetadata=zone=c\nMachineMetadata=zone=b\n",
    );
    lab.units_ok(1, &["start", &zoned, &ssd, &either]);
    assert_eq!(active_on(&lab, "zoned.service"), [ids[1].clone()]);
    assert_eq!(active_on(&lab, "ssd.service"), [ids[0].clone()]);
    assert_eq!(active_on(&lab, "either.service"), [ids[1].clone()]);

    // A template, its instances, and Conflicts: one web per machine.
    write(
        d,
        "web@.service",
        "[Unit]\nDescription=Web %i\n[Service]\nExecStart=/bin/sh -c 'echo instance %i on %H; exec sleep 1000'\n[X-Fleet]\nConflicts=web@*.service\n",
    );
    lab.units_ok(
        0,
        &["submit", &d.join("web@.service").display().to_string()],
    );
    lab.units_ok(
        2,
        &["start", "web@1.service", "web@2.service", "web@3.service"],
    );
    let mut webs: Vec<String> = (1..=3)
        .flat_map(|n| active_on(&lab, &format!("web@{n}.service")))
        .collect();
    webs.sort();
    let mut all = ids.clone();
    all.sort();
    assert_eq!(webs, all, "one web per machine");
    // A fourth cannot be placed: the command says why.
    let out = lab.units(0, &["start", "web@4.service"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cannot be placed") && err.contains("conflicting"),
        "{err}"
    );

    // Status and journal of a unit on another machine, from every machine.
    for i in 0..3 {
        let status = lab.units_ok(i, &["status", "web@2.service"]);
        assert!(
            status.contains("active (running)") && status.contains("Web 2"),
            "m{i}: {status}"
        );
        let journal = lab.units_ok(i, &["journal", "web@2.service", "-n", "20"]);
        assert!(
            journal.contains("stdout instance 2 on m"),
            "m{i}: {journal}"
        );
        let json = lab.units_json(i, &["status", "web@2.service"]);
        assert_eq!(json[0]["processes"].as_array().unwrap().len(), 1, "{json}");
    }
    // The agent API admits root and members only: alice, whose certificate
    // the store takes (its auth is off), cannot read a journal there.
    let pki = lab.cluster.pki.as_ref().expect("a TLS cluster");
    let alice = lab.cluster.dir.path().join("alice");
    let made = std::process::Command::new(herd_tests::bin::herd())
        .args(["admin", "credentials", "--user", "alice", "--ca-cert"])
        .arg(&pki.ca_cert)
        .arg("--ca-key")
        .arg(pki.ca_cert.with_file_name("ca.key"))
        .arg("--out")
        .arg(&alice)
        .output()
        .expect("running herd admin credentials");
    assert!(made.status.success(), "{made:?}");
    let as_alice = [
        ("HERD_CERT", alice.join("alice.crt")),
        ("HERD_KEY", alice.join("alice.key")),
    ];
    assert!(
        lab.units_with(0, &as_alice, &["list-units"])
            .status
            .success()
    );
    let out = lab.units_with(0, &as_alice, &["journal", "web@2.service", "-n", "5"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not \"alice\""),
        "alice read a journal: {err}"
    );

    // ExecStop runs and KillMode=control-group leaves no process behind.
    let marker = d.join("stopped");
    let stopper = write(
        d,
        "stopper.service",
        &format!(
            "[Service]\nExecStart=/bin/sh -c 'sleep 1001 & sleep 1002 & wait'\nExecStop=/bin/sh -c 'echo $MAINPID > {}'\nTimeoutStopSec=5\n[X-Fleet]\nMachineID={}\n",
            marker.display(),
            ids[2]
        ),
    );
    lab.units_ok(0, &["start", &stopper]);
    until("stopper's three processes", 30, || {
        (lab.pids(2, "stopper.service").len() == 3).then_some(())
    });
    let pids = lab.pids(2, "stopper.service");
    lab.units_ok(0, &["stop", "stopper.service"]);
    assert!(
        std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse::<u32>()
            .is_ok(),
        "ExecStop ran with $MAINPID"
    );
    for p in &pids {
        assert!(!alive(*p), "pid {p} outlived its unit");
    }
    assert_eq!(lab.rows(0, "stopper.service")[0]["state"], "loaded");

    // KillMode=process: only the main process goes (systemd's meaning).
    let lone = write(
        d,
        "lone.service",
        &format!(
            "[Service]\nExecStart=/bin/sh -c 'sleep 1003 & exec sleep 1004'\nKillMode=process\n[X-Fleet]\nMachineID={}\n",
            ids[1]
        ),
    );
    lab.units_ok(0, &["start", &lone]);
    until("lone's two processes", 30, || {
        (lab.pids(1, "lone.service").len() == 2).then_some(())
    });
    lab.units_ok(0, &["stop", "lone.service"]);
    assert_eq!(
        lab.pids(1, "lone.service").len(),
        1,
        "the helper stays with KillMode=process"
    );
    lab.units_ok(0, &["destroy", "lone.service"]);

    // Order on one machine: the app requires the db, which takes a while
    // to become ready; started together, the app starts only once the db
    // runs (its ExecStart fails without the db's marker), an explicit
    // stop of the db stops the app, and the app follows the db back.
    let ready = d.join("db-ready");
    let db = write(
        d,
        "db.service",
        &format!(
            "[Service]\nExecStartPre=/bin/sleep 2\nExecStartPre=/bin/touch {r}\nExecStart=/bin/sleep 1000\nExecStopPost=/bin/rm -f {r}\n[X-Fleet]\nMachineID={}\n",
            ids[1],
            r = ready.display()
        ),
    );
    let app = write(
        d,
        "app.service",
        &format!(
            "[Unit]\nRequires=db.service\nAfter=db.service\n[Service]\nExecStart=/bin/sh -c 'test -e {} && exec sleep 1000'\n[X-Fleet]\nMachineOf=db.service\n",
            ready.display()
        ),
    );
    lab.units_ok(0, &["start", &db, &app]);
    until("app after db", 30, || {
        (active_on(&lab, "app.service") == [ids[1].clone()]).then_some(())
    });
    let journal = lab.units_ok(0, &["journal", "app.service", "-n", "50"]);
    assert!(journal.contains("waiting for db.service"), "{journal}");
    lab.units_ok(0, &["stop", "db.service"]);
    until("app stopped with its requirement", 30, || {
        let row = lab.rows(0, "app.service").into_iter().next()?;
        (row["active"] == "inactive").then_some(())
    });
    assert!(lab.pids(1, "app.service").is_empty());
    lab.units_ok(0, &["start", "db.service"]);
    until("app back after db", 30, || {
        (active_on(&lab, "app.service") == [ids[1].clone()]).then_some(())
    });
    lab.units_ok(0, &["destroy", "app.service", "db.service"]);

    // Bad input: clear errors, the rest keeps running.
    let typo = write(
        d,
        "typo.service",
        "[Service]\nExecStart=/bin/true\n[X-Fleet]\nMachineMetdata=zone=a\n",
    );
    let out = lab.units(0, &["submit", &typo]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("typo.service:4: unknown key \"MachineMetdata\" in [X-Fleet]"),
        "{err}"
    );
    let noexec = write(
        d,
        "noexec.service",
        "[Service]\nExecStart=/nonexistent/daemon\n",
    );
    let out = lab.units(0, &["start", &noexec]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("203/EXEC"), "{err}");
    let crash = write(
        d,
        "crash.service",
        "[Service]\nExecStart=/bin/false\nRestart=always\nRestartSec=100ms\n",
    );
    // A simple service is active once it runs (systemd's rule), so `start`
    // may catch the moment between two crashes and succeed; when it does
    // not, it must say the unit failed. Either way the unit ends failed.
    let out = lab.units(0, &["start", &crash]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() || err.contains("failed"), "{err}");
    until("crash reported failed", 30, || {
        (lab.rows(0, "crash.service")
            .first()
            .is_some_and(|r| r["active"] == "failed"))
        .then_some(())
    });
    let journal = lab.units_ok(0, &["journal", "crash.service", "-n", "200"]);
    let starts = journal.matches("Starting").count();
    assert!(
        (2..=6).contains(&starts),
        "back-off and a start limit, not a hot loop: {starts} starts\n{journal}"
    );
    assert!(
        journal.contains("start request repeated too quickly"),
        "{journal}"
    );
    assert_eq!(
        active_on(&lab, "hello.service").len(),
        3,
        "the rest keeps running"
    );

    // An OS update's drain of the machine a unit runs on (the update
    // role's record for it): the unit moves off now; the global unit and
    // the web instance there (which conflicts with every other machine's)
    // can go nowhere else, so they stay and would reboot with it.
    let free = write(d, "free.service", "[Service]\nExecStart=/bin/sleep 1000\n");
    lab.units_ok(0, &["start", &free]);
    let from = active_on(&lab, "free.service").pop().expect("free runs");
    let webs_before: Vec<Vec<String>> = (1..=3)
        .map(|n| active_on(&lab, &format!("web@{n}.service")))
        .collect();
    lab.cluster.set_drain(&from, true);
    until("free off the draining machine", 60, || {
        let on = active_on(&lab, "free.service");
        (on.len() == 1 && on[0] != from).then_some(())
    });
    let moved_to = active_on(&lab, "free.service");
    assert_eq!(active_on(&lab, "hello.service").len(), 3);
    let webs_after: Vec<Vec<String>> = (1..=3)
        .map(|n| active_on(&lab, &format!("web@{n}.service")))
        .collect();
    assert_eq!(webs_after, webs_before, "web instances can go nowhere else");
    // The drain's end moves nothing back.
    lab.cluster.set_drain(&from, false);

    // A fourth machine joins: the global unit runs there too, and the
    // instance that had nowhere to go lands on it.
    let m3 = lab.join();
    let id3 = lab.machine_id(m3);
    until("hello on the joiner", 60, || {
        (active_on(&lab, "hello.service").len() == 4).then_some(())
    });
    assert!(lab.running_on("hello.service").contains(&m3));
    until("web@4 on the joiner", 60, || {
        (active_on(&lab, "web@4.service") == [id3.clone()]).then_some(())
    });
    let journal = lab.units_ok(m3, &["journal", "hello.service", "--machine", &id3]);
    assert!(journal.contains("hello from m3"), "{journal}");
    assert_eq!(
        active_on(&lab, "free.service"),
        moved_to,
        "the drained unit stayed where it moved"
    );

    // Unload and destroy take units off their machines.
    lab.units_ok(0, &["unload", "web@1.service"]);
    lab.units_ok(0, &["destroy", "hello.service"]);
    until("hello gone everywhere", 60, || {
        lab.running_on("hello.service").is_empty().then_some(())
    });
    assert!(lab.rows(0, "hello.service").is_empty());
    let files: Value = lab.units_json(0, &["list-unit-files"]);
    assert!(
        files
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["unit"] == "web@.service"),
        "{files}"
    );
}

#[test]
fn units_lab_a_lost_machine_moves_its_unit_once_and_a_leader_kill_restarts_none() {
    let mut lab = UnitsLab::start(3, "12s", |_| String::new());
    let files = tempfile::tempdir().unwrap();
    let d = files.path();
    let solo = write(
        d,
        "solo.service",
        "[Service]\nExecStart=/bin/sleep 1000\nRestart=always\n",
    );
    let g = write(
        d,
        "g.service",
        "[Service]\nExecStart=/bin/sleep 1001\n[X-Fleet]\nGlobal=true\n",
    );
    lab.units_ok(0, &["start", &solo, &g]);
    until("g everywhere", 60, || {
        (active_on(&lab, "g.service").len() == 3).then_some(())
    });
    let snapshot = |lab: &UnitsLab| -> Vec<(usize, &'static str, u32, Option<u64>)> {
        let mut v = Vec::new();
        for i in 0..lab.cluster.members.len() {
            for unit in ["solo.service", "g.service"] {
                for p in lab.pids(i, unit) {
                    v.push((i, unit, p, start_time(p)));
                }
            }
        }
        v.sort();
        v
    };
    let before = snapshot(&lab);
    assert_eq!(before.len(), 4, "{before:?}");

    // The store leader's agent dies and comes back: no unit anywhere is
    // stopped or started again (same pids, same start times).
    let leader = lab.cluster.leader();
    lab.cluster.kill(leader);
    let other = (leader + 1) % 3;
    until("a new store leader", 60, || {
        (lab.cluster.leader() != leader).then_some(())
    });
    lab.cluster.restart(leader);
    until("every unit reported active again", 60, || {
        (active_via(&lab, other, "g.service").len() == 3
            && active_via(&lab, other, "solo.service").len() == 1)
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        snapshot(&lab),
        before,
        "a store leader kill restarted a unit"
    );
    let status = lab.units_ok(other, &["status", "g.service", "-o", "json"]);
    assert!(status.contains("\"active\": \"active\""), "{status}");

    // The machine running solo dies: after the grace period solo runs on
    // exactly one other machine.
    let host = lab.running_on("solo.service")[0];
    lab.kill_machine(host);
    let alive: Vec<usize> = (0..3).filter(|i| *i != host).collect();
    until("solo moved", 90, || {
        (lab.running_on("solo.service").len() == 1).then_some(())
    });
    let new_host = lab.running_on("solo.service")[0];
    assert_ne!(new_host, host);
    for _ in 0..10 {
        assert_eq!(lab.running_on("solo.service"), [new_host], "exactly once");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(alive.contains(&new_host));
    let ask = alive[0];
    until("g leaves the dead machine", 60, || {
        (active_via(&lab, ask, "g.service").len() == 2).then_some(())
    });

    // The dead machine boots again (its store member keeps the quorum for
    // what follows) and gets the global unit back.
    lab.cluster.restart(host);
    until("g back on the rebooted machine", 60, || {
        (active_via(&lab, ask, "g.service").len() == 3).then_some(())
    });

    // A machine that is away long enough has its unit moved; when it
    // comes back it stops its stale copy.
    lab.cluster.signal(new_host, libc::SIGSTOP);
    until(
        "solo started elsewhere while its machine was away",
        90,
        || (lab.running_on("solo.service").len() == 2).then_some(()),
    );
    let moved_to = lab
        .running_on("solo.service")
        .into_iter()
        .find(|i| *i != new_host)
        .unwrap();
    lab.cluster.signal(new_host, libc::SIGCONT);
    until("the stale copy stopped", 60, || {
        (lab.running_on("solo.service") == [moved_to]).then_some(())
    });
}
