//! Shared helpers for the image tests: one warm stage cache, a fixed signing key, QEMU runs.

#![allow(dead_code)]

use herd_image::build::{self, BuildOptions, Summary};
use herd_image::spec::{HerdSpec, Spec};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const KEY_HEX: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

pub fn scratch(name: &str) -> PathBuf {
    let dir = herd_testkit::bin::workspace_root()
        .join("target/herd-image-tests")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The cache shared by the image tests, so most of them reuse one build.
/// Entries unused for an hour are pruned: every new debug binary adds a set,
/// and no running test still reads an entry that old.
pub fn shared_cache() -> PathBuf {
    let cache = herd_testkit::bin::workspace_root().join("target/herd-image-tests/cache");
    if let Ok(entries) = std::fs::read_dir(&cache) {
        for e in entries.flatten() {
            let stale = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(3600));
            let name = e.file_name();
            if stale && name != "debs" && name != "kernels" && name != "dev-signing.key" {
                let _ = std::fs::remove_file(e.path());
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    cache
}

pub fn key_file(dir: &Path) -> PathBuf {
    let k = dir.join("signing.key");
    std::fs::write(&k, format!("{KEY_HEX}\n")).unwrap();
    k
}

/// The default spec with the workspace's herd binary (dynamic: its libraries are copied in).
/// The binary is snapshotted into `dir` first: other builds replace
/// `target/debug/herd` at any time, and one test must see one binary.
pub fn test_spec(dir: &Path) -> Spec {
    let snapshot = dir.join("herd-under-test");
    if !snapshot.exists() {
        std::fs::copy(herd_testkit::bin::herd(), &snapshot).unwrap();
    }
    let mut spec = Spec::default_spec();
    spec.herd = HerdSpec::Path { path: snapshot };
    spec
}

pub fn build_into(spec: Spec, out: &Path, cache: &Path, key: &Path) -> Summary {
    build::build(&BuildOptions {
        spec,
        out: out.into(),
        signing_key: Some(key.into()),
        cache: cache.into(),
        progress: false,
    })
    .unwrap_or_else(|e| panic!("herd image build: {e}"))
}

/// A QEMU guest killed (with its process group) on drop.
pub struct Vm {
    child: Child,
    pub log: PathBuf,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn qemu(log: &Path) -> Command {
    herd_testkit::require::tool("qemu-system-x86_64", "qemu-system-x86");
    let _ = std::fs::remove_file(log);
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-accel",
        "tcg",
        "-m",
        "768",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
    ])
    .arg("-serial")
    .arg(format!("file:{}", log.display()))
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

/// Netboot: `-kernel`/`-initrd` like iPXE hands them over.
pub fn boot_netboot(out: &Path, log: &Path, append: &str) -> Vm {
    let mut c = qemu(log);
    c.arg("-kernel")
        .arg(out.join("vmlinuz"))
        .arg("-initrd")
        .arg(out.join("initramfs"))
        .arg("-append")
        .arg(append);
    Vm {
        child: c.spawn().expect("qemu-system-x86_64"),
        log: log.into(),
    }
}

/// Netboot with extra virtio disks (`/dev/vda`, `/dev/vdb`, … in order); `true` attaches read-only.
pub fn boot_netboot_with_disks(
    out: &Path,
    log: &Path,
    append: &str,
    disks: &[(&Path, bool)],
) -> Vm {
    let mut c = qemu(log);
    c.arg("-kernel")
        .arg(out.join("vmlinuz"))
        .arg("-initrd")
        .arg(out.join("initramfs"))
        .arg("-append")
        .arg(append);
    for (disk, ro) in disks {
        let ro = if *ro { ",readonly=on" } else { "" };
        c.arg("-drive")
            .arg(format!("if=virtio,format=raw,file={}{ro}", disk.display()));
    }
    Vm {
        child: c.spawn().expect("qemu-system-x86_64"),
        log: log.into(),
    }
}

impl Vm {
    /// Waits for the guest to end QEMU (reboot with `-no-reboot`), failing after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) {
        herd_testkit::wait::until(
            "QEMU to exit after the guest rebooted",
            timeout,
            Duration::from_millis(200),
            || self.child.try_wait().unwrap(),
        );
    }
}

/// Disk boot through OVMF and systemd-boot. `vars` is this disk's writable OVMF variable store.
pub fn boot_disk(disk: &Path, vars: &Path, log: &Path) -> Vm {
    let mut c = boot_disk_command(disk, vars, log);
    Vm {
        child: c.spawn().expect("qemu-system-x86_64"),
        log: log.into(),
    }
}

fn boot_disk_command(disk: &Path, vars: &Path, log: &Path) -> Command {
    let code = herd_testkit::require::file("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf");
    if !vars.exists() {
        std::fs::copy(
            herd_testkit::require::file("/usr/share/OVMF/OVMF_VARS_4M.fd", "ovmf"),
            vars,
        )
        .unwrap();
    }
    let mut c = qemu(log);
    c.args(["-machine", "q35"])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,readonly=on,file={}",
            code.display()
        ))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()))
        .arg("-drive")
        .arg(format!("if=none,id=d0,format=raw,file={}", disk.display()))
        .args(["-device", "virtio-blk-pci,drive=d0,bootindex=0"]);
    c
}

/// Like [`boot_disk`], with a virtio NIC on QEMU's user-mode network: the
/// guest gets 10.0.2.15 by DHCP and reaches the host's loopback as 10.0.2.2.
pub fn boot_disk_with_user_net(disk: &Path, vars: &Path, log: &Path) -> Vm {
    let mut vm = boot_disk_command(disk, vars, log);
    vm.args(["-m", "1024"])
        .args(["-netdev", "user,id=n0"])
        .args(["-device", "virtio-net-pci,netdev=n0"]);
    Vm {
        child: vm.spawn().expect("qemu-system-x86_64"),
        log: log.into(),
    }
}

pub fn wait_for(vm: &Vm, marker: &str) -> String {
    herd_testkit::wait::for_marker(&vm.log, marker, Duration::from_secs(150))
}

/// Like [`wait_for`], for markers that come late under TCG (dockerd).
pub fn wait_for_within(vm: &Vm, marker: &str, deadline: Duration) -> String {
    herd_testkit::wait::for_marker(&vm.log, marker, deadline)
}
