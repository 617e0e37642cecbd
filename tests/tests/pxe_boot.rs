//! Real firmware against `herd pxe serve`: a QEMU VM on a bridge in a
//! throwaway namespace network-boots (SeaBIOS → iPXE ROM, and OVMF → UEFI
//! PXE → ipxe.efi), gets its address from herd's DHCP, loads the iPXE
//! script, kernel and initramfs over HTTP, and its /init prints a marker.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use herd_tests::{bin, netns::Netns, process, require, wait};

const MARKER: &str = "HERD-PXE-BOOT-OK";
const DISK_MARKER: &str = "HERD-LOCAL-DISK-BOOT-OK";

/// A disk whose MBR boot code writes `text` to COM1 and halts:
/// the smallest "installed OS" that proves the firmware booted the disk.
fn marker_boot_sector(text: &str) -> Vec<u8> {
    #[rustfmt::skip]
    let code: [u8; 24] = [
        0xfa,                   // cli
        0x31, 0xc0,             // xor ax, ax
        0x8e, 0xd8,             // mov ds, ax
        0xfc,                   // cld
        0xba, 0xf8, 0x03,       // mov dx, 0x3f8 (COM1)
        0xbe, 0x18, 0x7c,       // mov si, 0x7c18 (the text, right after the code)
        0xac,                   // next: lodsb
        0x84, 0xc0,             // test al, al
        0x74, 0x03,             // jz halt
        0xee,                   // out dx, al
        0xeb, 0xf8,             // jmp next
        0xf4,                   // halt: hlt
        0xeb, 0xfd,             // jmp halt
        0x90,                   // nop (pads the code to 24 bytes)
    ];
    // 1 MiB rather than one sector: firmware sizes disks in larger units.
    let mut sector = vec![0u8; 1 << 20];
    sector[..code.len()].copy_from_slice(&code);
    let line = format!("\r\n{text}\r\n");
    sector[code.len()..code.len() + line.len()].copy_from_slice(line.as_bytes());
    sector[510] = 0x55;
    sector[511] = 0xaa;
    sector
}

/// Debian's kernel (`linux-image-amd64`).
fn debian_kernel() -> PathBuf {
    let mut kernels: Vec<PathBuf> = std::fs::read_dir("/boot")
        .expect("/boot exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    kernels.sort();
    kernels
        .pop()
        .expect("no /boot/vmlinuz-*: apt-get install linux-image-amd64 (scripts/deps does this)")
}

/// A busybox initramfs whose /init prints the marker and powers off.
fn initramfs(dir: &Path) -> PathBuf {
    let busybox = require::file("/bin/busybox", "busybox-static");
    require::tool("cpio", "cpio");
    let root = dir.join("initramfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
    std::fs::write(
        root.join("init"),
        format!(
            "#!/bin/busybox sh\n/bin/busybox mkdir -p /dev /proc\n/bin/busybox mount -t devtmpfs dev /dev\n/bin/busybox mount -t proc proc /proc\necho {MARKER} mac=$(/bin/busybox cat /proc/cmdline) > /dev/console\n/bin/busybox poweroff -f\n"
        ),
    )
    .unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg("chmod 755 init && find . | cpio -o -H newc --quiet > ../initrd.cpio")
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(status.success(), "building the initramfs with cpio");
    dir.join("initrd.cpio")
}

struct Lab {
    dir: tempfile::TempDir,
    ns: Netns,
    tap: String,
    _server: process::Guard,
    url: String,
}

fn lab(subnet: u8) -> Lab {
    require::root();
    let dir = tempfile::tempdir().unwrap();
    let kernel = debian_kernel();
    let initrd = initramfs(dir.path());
    let ns = Netns::new();
    let br = ns.ifname("br");
    let tap = ns.ifname("tap");
    let server_ip = format!("10.{subnet}.0.1");
    ns.bridge(&br, &format!("{server_ip}/24"));
    ns.tap(&tap, &br);
    let mut cmd = ns.command(bin::herd());
    cmd.args([
        "pxe",
        "serve",
        "--interface",
        &br,
        "--address",
        &format!("{server_ip}/24"),
    ])
    .args(["--range", &format!("10.{subnet}.0.100-10.{subnet}.0.150")])
    .arg("--kernel")
    .arg(&kernel)
    .arg("--initrd")
    .arg(&initrd)
    .args([
        "--cmdline",
        "console=ttyS0 panic=-1 herd.mac={{ mac }} herd.url={{ server_url }}",
    ])
    .arg("--state-dir")
    .arg(dir.path().join("state"))
    .stdout(std::fs::File::create(dir.path().join("server.log")).unwrap())
    .stderr(std::fs::File::create(dir.path().join("server.err")).unwrap());
    let server = process::spawn("herd pxe serve", &mut cmd);
    let url = format!("http://{server_ip}:8080");
    wait::until(
        "herd pxe serve to answer HTTP",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let out = ns
                .command("curl")
                .args(["-sf", &format!("{url}/boot.ipxe")])
                .output()
                .ok()?;
            out.status.success().then_some(())
        },
    );
    Lab {
        dir,
        ns,
        tap,
        _server: server,
        url,
    }
}

impl Lab {
    fn machines_json(&self) -> String {
        let out = self
            .ns
            .command(bin::herd())
            .args(["pxe", "machines", "--server", &self.url, "-o", "json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "herd pxe machines: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Netboots `mac` until the initramfs prints [`MARKER`] with the
    /// command line herd rendered for it.
    fn boot(&self, mac: &str, firmware: &[String]) -> String {
        let text = self.boot_until(mac, firmware, MARKER);
        // The command line the kernel got was rendered for this machine.
        assert!(
            text.contains(&format!("herd.mac={mac}")),
            "kernel command line not rendered for {mac}:\n{text}"
        );
        text
    }

    /// Powers on a VM that tries the network first, with `extra` QEMU
    /// arguments (firmware, disks), and waits for `marker` on its serial line.
    fn boot_until(&self, mac: &str, extra: &[String], marker: &str) -> String {
        let qemu = require::tool("qemu-system-x86_64", "qemu-system-x86");
        let log = self
            .dir
            .path()
            .join(format!("serial-{}.log", mac.replace(':', "")));
        let sercon = self.dir.path().join("sercon");
        // SeaBIOS (and the iPXE ROM it runs) print to serial only when told.
        std::fs::write(&sercon, [0xf8, 0x03]).unwrap();
        let mut cmd = self.ns.command(qemu);
        cmd.args([
            "-accel",
            "tcg",
            "-m",
            "512",
            "-nographic",
            "-nodefaults",
            "-no-reboot",
        ])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .args(["-boot", "n"])
        .arg("-fw_cfg")
        .arg(format!("name=etc/sercon-port,file={}", sercon.display()))
        .arg("-netdev")
        .arg(format!(
            "tap,id=n0,ifname={},script=no,downscript=no",
            self.tap
        ))
        .arg("-device")
        .arg(format!("virtio-net-pci,netdev=n0,mac={mac},bootindex=0"))
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(self.dir.path().join("qemu.out")).unwrap())
        .stderr(std::fs::File::create(self.dir.path().join("qemu.err")).unwrap());
        let _vm = process::spawn("qemu", &mut cmd);
        wait::for_marker(&log, marker, Duration::from_secs(240))
    }
}

#[test]
fn qemu_bios_ipxe_rom_netboots_from_herd() {
    let lab = lab(77);
    let mac = "52:54:00:4b:00:01";
    lab.boot(mac, &[]);
    let json = lab.machines_json();
    let machines: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let m = machines
        .iter()
        .find(|m| m["mac"] == mac)
        .unwrap_or_else(|| panic!("{mac} not in the inventory: {json}"));
    assert!(
        m["ip"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.77.0.")),
        "{m}"
    );
    assert_eq!(m["profile"], "default", "{m}");
    assert_eq!(m["last_stage"], "initramfs", "{m}");
    assert_eq!(m["installed"], false, "{m}");
    assert_eq!(m["arch"], "bios", "{m}");

    // Boot once, then disk: after the agent reports the install, the same
    // machine is sent to its local disk instead of being reinstalled.
    let post = |what: &str| {
        let out = lab
            .ns
            .command("curl")
            .args([
                "-sf",
                "-X",
                "POST",
                &format!("{}/api/machines/{mac}/{what}", lab.url),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "POST {what}: {out:?}");
    };
    let script = || {
        let out = lab
            .ns
            .command("curl")
            .args([
                "-sf",
                &format!("{}/boot.ipxe?mac={}", lab.url, mac.replace(':', "-")),
            ])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    post("installed");
    assert!(
        script().contains("sanboot --no-describe --drive 0x80"),
        "{}",
        script()
    );
    // And real iPXE follows that script: the same machine, netbooting first,
    // ends up running its disk's boot sector.
    let disk = lab.dir.path().join("disk.img");
    std::fs::write(&disk, marker_boot_sector(DISK_MARKER)).unwrap();
    let disk_args = [
        "-drive".to_owned(),
        format!("if=none,id=d0,format=raw,file={}", disk.display()),
        "-device".to_owned(),
        "virtio-blk-pci,drive=d0,bootindex=1".to_owned(),
    ];
    let text = lab.boot_until(mac, &disk_args, DISK_MARKER);
    assert!(
        text.contains("is installed, booting from local disk"),
        "{text}"
    );
    // Sending it back to the installer is an operator's change: refused on
    // the plain listener, taken on the HTTPS admin listener (pinned to the
    // server's own CA) with the server's token.
    let plain = lab
        .ns
        .command("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            &format!("{}/api/machines/{mac}/reinstall", lab.url),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "403", "{plain:?}");
    let state = lab.dir.path().join("state");
    let token = std::fs::read_to_string(state.join("api.token")).unwrap();
    let admin = lab
        .url
        .replace("http://", "https://")
        .replace(":8080", ":8443");
    let out = lab
        .ns
        .command("curl")
        .args(["-sf", "-X", "POST", "--cacert"])
        .arg(state.join("admin/ca.crt"))
        .args([
            "-H",
            &format!("Authorization: Bearer {}", token.trim()),
            &format!("{admin}/api/machines/{mac}/reinstall"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "POST reinstall: {out:?}");
    assert!(script().contains("kernel http://"), "{}", script());
}

#[test]
fn qemu_uefi_ovmf_netboots_from_herd() {
    let code = require::file("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf");
    let vars_template = require::file("/usr/share/OVMF/OVMF_VARS_4M.fd", "ovmf");
    let lab = lab(78);
    let vars = lab.dir.path().join("vars.fd");
    std::fs::copy(vars_template, &vars).unwrap();
    let firmware = [
        "-drive".to_owned(),
        format!("if=pflash,format=raw,readonly=on,file={}", code.display()),
        "-drive".to_owned(),
        format!("if=pflash,format=raw,file={}", vars.display()),
    ];
    let mac = "52:54:00:4b:00:02";
    lab.boot(mac, &firmware);
    let json = lab.machines_json();
    assert!(
        json.contains("\"efi-x86_64\""),
        "UEFI arch not recorded: {json}"
    );
}
