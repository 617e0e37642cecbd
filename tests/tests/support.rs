//! Tests of the test-support code itself: namespaces and process guards
//! must clean up after themselves, or every later test inherits the mess.

use std::process::Command;
use std::time::Duration;

use herd_tests::{netns::Netns, process, wait};

fn netns_exists(name: &str) -> bool {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn namespace_bridge_tap_and_veth_are_removed_on_drop() {
    let ns = Netns::new();
    let name = ns.name().to_owned();
    let br = ns.ifname("br");
    let tap = ns.ifname("tap");
    ns.bridge(&br, "10.201.0.1/24");
    ns.tap(&tap, &br);
    let host = Netns::new();
    let (outer, inner) = (ns.ifname("vo"), ns.ifname("vi"));
    ns.veth_to(&br, &outer, &host, &inner, "10.201.0.2/24");

    // A second "machine" plugged into the bridge reaches the bridge's address.
    let ping = host
        .command("ping")
        .args(["-c1", "-W5", "10.201.0.1"])
        .output()
        .unwrap();
    assert!(ping.status.success(), "ping across the bridge: {ping:?}");

    let links = String::from_utf8_lossy(&ns.ip(&["link"]).stdout).into_owned();
    assert!(links.contains(&tap) && links.contains(&br));
    assert!(netns_exists(&name));
    drop(host);
    drop(ns);
    assert!(!netns_exists(&name), "namespace {name} survived its owner");
}

#[test]
fn namespace_is_removed_when_the_test_panics() {
    let name = std::panic::catch_unwind(|| {
        let ns = Netns::new();
        let name = ns.name().to_owned();
        std::panic::panic_any(name);
    })
    .unwrap_err();
    let name = name.downcast::<String>().unwrap();
    assert!(!netns_exists(&name), "namespace {name} survived a panic");
}

#[test]
fn process_group_is_killed_on_drop() {
    // A shell with a grandchild: both must go when the guard drops.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "sleep 300 & echo $! > /dev/stderr; wait"]);
    let guard = process::spawn("sleeper", &mut cmd);
    let pid = guard.pid();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(guard);
    wait::until(
        "the process group to exit",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || {
            let out = Command::new("pgrep")
                .args(["-g", &pid.to_string()])
                .output()
                .unwrap();
            out.stdout.is_empty().then_some(())
        },
    );
}

#[test]
fn processes_inside_a_namespace_die_with_it() {
    let ns = Netns::new();
    let child = ns.command("sleep").arg("300").spawn().unwrap();
    let pid = child.id();
    wait::until(
        "sleep to enter the namespace",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || {
            let out = Command::new("ip")
                .args(["netns", "pids", ns.name()])
                .output()
                .unwrap();
            (!out.stdout.is_empty()).then_some(())
        },
    );
    drop(ns);
    drop(child); // the `ip netns exec` wrapper exec'd into sleep: same pid
    wait::until(
        "sleep to be killed",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or a zombie waiting to be reaped by us.
            (stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z")).then_some(())
        },
    );
}
