//! The lab's plumbing with a real VM: namespace, bridge, tap, QEMU with
//! Debian's iPXE ROM and the serial console, and `down` removing it all.
//! No provisioning server runs here (that is the end-to-end test's job), so
//! the VM only gets as far as iPXE asking for DHCP on the lab bridge.

use std::path::Path;
use std::time::{Duration, Instant};

use herd_qemu::lab::{Lab, LabError, UpOptions};
use herd_qemu::layout::{BRIDGE, MachineId};
use herd_qemu::state::LabState;
use herd_qemu::{net, prereq, process, vm};

fn wait_for(path: &Path, marker: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if text.contains(marker) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no {marker:?} in {} after {timeout:?}; it holds:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn bridge_learned(netns: &str, mac: &str) -> bool {
    let out = std::process::Command::new("bridge")
        .args(["-n", netns, "fdb", "show", "br", BRIDGE])
        .output()
        .expect("bridge (iproute2)");
    String::from_utf8_lossy(&out.stdout).contains(mac)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_vm_reaches_ipxe_on_the_lab_bridge_and_down_removes_everything() {
    herd_testkit::require::root();
    let missing = prereq::check_host();
    assert!(missing.is_empty(), "{missing:?}");

    let dir = tempfile::tempdir().unwrap();
    let netns = format!("herd-lab-t{}", std::process::id());
    let lab = Lab::new(dir.path().to_path_buf(), "/nonexistent/herd".into());
    let mut state = LabState::new(
        netns.clone(),
        "token".into(),
        dir.path().join("image"),
        false,
    );
    state.save(&lab.dir).unwrap();
    net::create(&netns).await.unwrap();

    let id = MachineId::new(1).unwrap();
    lab.power_on_new(&mut state, id).await.unwrap();
    let pid = state.machine(id).unwrap().pid.expect("pid recorded");
    assert!(vm::is_running(&lab.dir, id, pid));
    assert_eq!(
        LabState::load(&lab.dir).unwrap().unwrap(),
        state,
        "state file is current"
    );

    // A second `up` on a live lab refuses without touching it.
    let again = lab
        .up(&UpOptions {
            machines: 1,
            install: false,
            docker: false,
            image: None,
            netns: netns.clone(),
        })
        .await;
    assert!(
        matches!(again, Err(LabError::AlreadyUp { .. })),
        "{again:?}"
    );

    // Real iPXE, on the console thanks to the sercon fw_cfg file, with the
    // machine's MAC, sending on the tap into the lab bridge.
    let serial = vm::VmFiles::new(&lab.dir, id).serial();
    wait_for(
        &serial,
        "Configuring (net0 52:54:00:77:00:01)",
        Duration::from_secs(120),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !bridge_learned(&netns, "52:54:00:77:00:01") {
        assert!(Instant::now() < deadline, "bridge never saw the VM's MAC");
        std::thread::sleep(Duration::from_millis(200));
    }

    // kill / boot keep the state file right.
    assert_eq!(lab.kill(&[id]).await.unwrap(), [true]);
    assert!(!vm::is_running(&lab.dir, id, pid));
    assert_eq!(
        lab.kill(&[id]).await.unwrap(),
        [false],
        "second kill finds it off"
    );
    lab.boot(id).await.unwrap();
    let pid = lab.state().unwrap().machine(id).unwrap().pid.unwrap();
    assert!(vm::is_running(&lab.dir, id, pid));
    assert!(matches!(lab.boot(id).await, Err(LabError::AlreadyOn(_))));

    let report = lab.down().await.unwrap();
    assert_eq!(report.vms_stopped, 1);
    assert!(report.namespace_removed);
    assert!(!net::exists(&netns));
    assert!(!process::is_ours(pid, &vm::process_tag(&lab.dir, id)));
    assert!(LabState::load(&lab.dir).unwrap().is_none());
    // Idempotent.
    let report = lab.down().await.unwrap();
    assert!(!report.namespace_removed && report.vms_stopped == 0);
}

#[tokio::test]
async fn down_after_a_crash_finds_the_namespace_from_the_state_file() {
    herd_testkit::require::root();
    let dir = tempfile::tempdir().unwrap();
    let netns = format!("herd-lab-c{}", std::process::id());
    let lab = Lab::new(dir.path().to_path_buf(), "/nonexistent/herd".into());
    // A lab that crashed right after creating its network: state + netns,
    // a tap, and a stray process inside, nothing else.
    let state = LabState::new(
        netns.clone(),
        "token".into(),
        dir.path().join("image"),
        false,
    );
    state.save(&lab.dir).unwrap();
    net::create(&netns).await.unwrap();
    net::add_tap(&netns, "htap1").await.unwrap();
    assert!(
        net::links(&netns)
            .await
            .unwrap()
            .contains(&"htap1".to_string())
    );
    let mut stray = std::process::Command::new("ip")
        .args(["netns", "exec", &netns, "sleep", "600"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while net::pids(&netns).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "sleep never entered the namespace"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = lab.down().await.unwrap();
    assert!(report.namespace_removed);
    assert_eq!(report.servers_stopped, 1, "the stray process was stopped");
    assert!(!net::exists(&netns));
    assert!(stray.wait().unwrap().code().is_none(), "killed by a signal");
}
