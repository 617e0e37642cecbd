//! One lab VM: its QEMU command line, power-on inside the lab namespace and
//! power-off. QEMU daemonizes and writes a PID file, so VMs outlive the
//! `herd lab` command that started them.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::layout::MachineId;
use crate::process;

/// Errors starting or stopping a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{what} for {machine}: {source}")]
    Io {
        what: &'static str,
        machine: MachineId,
        source: std::io::Error,
    },
    #[error("{command} for {machine} failed: {stderr}")]
    Failed {
        command: &'static str,
        machine: MachineId,
        stderr: String,
    },
    #[error("QEMU for {machine} daemonized but wrote no PID file {}", pidfile.display())]
    NoPid {
        machine: MachineId,
        pidfile: PathBuf,
    },
}

/// Where one machine keeps its files: `LAB/<name>/`.
#[derive(Debug, Clone)]
pub struct VmFiles {
    pub dir: PathBuf,
}

impl VmFiles {
    pub fn new(lab_dir: &Path, id: MachineId) -> VmFiles {
        VmFiles {
            dir: lab_dir.join(id.to_string()),
        }
    }
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.qcow2")
    }
    pub fn serial(&self) -> PathBuf {
        self.dir.join("serial.log")
    }
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
    pub fn qemu_log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }
    /// This machine's writable copy of the OVMF variable store (UEFI only).
    pub fn ovmf_vars(&self) -> PathBuf {
        self.dir.join("OVMF_VARS.fd")
    }
}

/// OVMF's firmware code (read-only pflash) and the variable store template
/// (Debian's `ovmf`).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// The machine's firmware. Netbooting labs use SeaBIOS (the faster boot);
/// installing labs use OVMF, since the installed disk boots systemd-boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    Bios,
    Uefi,
}

/// Size of each VM's empty disk (qcow2: takes no space until written).
pub const DISK_SIZE: &str = "8G";
/// Guest memory: the whole OS lives in RAM when netbooted.
pub const MEMORY_MB: u32 = 1024;
/// Guest memory of machines that run Docker: dockerd, containerd and the
/// containers on top of the OS (their `/usr` is on disk, not in RAM).
pub const DOCKER_MEMORY_MB: u32 = 2048;

/// The file SeaBIOS reads as `etc/sercon-port`: 0x3f8 (COM1), so iPXE's
/// console reaches the serial log under `-nodefaults`.
pub fn write_sercon_port(lab_dir: &Path) -> std::io::Result<PathBuf> {
    let path = lab_dir.join("sercon-port");
    std::fs::write(&path, [0xf8, 0x03])?;
    Ok(path)
}

/// The QEMU process name of a lab machine, unique per lab directory so that
/// [`process::is_ours`] never mistakes another lab's VM for this one's.
pub fn process_tag(lab_dir: &Path, id: MachineId) -> String {
    format!("herd-lab-{id}:{}", lab_dir.display())
}

/// The arguments after `qemu-system-x86_64`.
pub fn qemu_args(
    lab_dir: &Path,
    id: MachineId,
    files: &VmFiles,
    sercon: &Path,
    firmware: Firmware,
    memory_mb: u32,
) -> Vec<String> {
    let tag = process_tag(lab_dir, id);
    let mut args: Vec<String> = vec![
        "-name".into(),
        format!("{id},debug-threads=off"),
        "-accel".into(),
        "tcg".into(),
        "-m".into(),
        memory_mb.to_string(),
        "-smp".into(),
        "1".into(),
        "-nodefaults".into(),
        "-display".into(),
        "none".into(),
        "-netdev".into(),
        format!("tap,id=net0,ifname={},script=no,downscript=no", id.tap()),
        "-serial".into(),
        format!("file:{}", files.serial().display()),
        "-fw_cfg".into(),
        format!("name=etc/sercon-port,file={}", sercon.display()),
        "-pidfile".into(),
        files.pidfile().display().to_string(),
        "-D".into(),
        files.qemu_log().display().to_string(),
        "-daemonize".into(),
    ];
    match firmware {
        Firmware::Bios => args.extend([
            "-boot".into(),
            "order=n".into(),
            "-device".into(),
            format!("virtio-net-pci,netdev=net0,mac={},bootindex=1", id.mac()),
            "-drive".into(),
            format!("file={},if=virtio,format=qcow2", files.disk().display()),
        ]),
        // Disk first: a blank disk has nothing to boot and OVMF moves on to
        // the network; once installed, the disk boots without asking PXE
        // (whose local-disk script covers firmware that tries the network
        // first). OVMF's boot order comes from `bootindex`, and a fresh vars
        // copy per machine keeps stale `Boot####` entries out.
        Firmware::Uefi => args.extend([
            "-machine".into(),
            "q35".into(),
            "-drive".into(),
            format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
            "-drive".into(),
            format!("if=pflash,format=raw,file={}", files.ovmf_vars().display()),
            "-drive".into(),
            format!("file={},if=none,id=d0,format=qcow2", files.disk().display()),
            "-device".into(),
            "virtio-blk-pci,drive=d0,bootindex=0".into(),
            "-device".into(),
            format!("virtio-net-pci,netdev=net0,mac={},bootindex=1", id.mac()),
        ]),
    }
    // Not an option QEMU reads: a marker in /proc/PID/cmdline that ties the
    // process to this lab. `-uuid` would do too, but a comment is clearer.
    args.extend(["-fw_cfg".into(), format!("name=opt/herd/lab,string={tag}")]);
    args
}

/// Creates the machine's directory and empty disk (kept if it exists: a
/// machine that installed to disk must find its data after a power cycle).
pub async fn prepare(
    lab_dir: &Path,
    id: MachineId,
    firmware: Firmware,
) -> Result<VmFiles, VmError> {
    let files = VmFiles::new(lab_dir, id);
    tokio::fs::create_dir_all(&files.dir)
        .await
        .map_err(|source| VmError::Io {
            what: "creating the machine directory",
            machine: id,
            source,
        })?;
    if !files.disk().exists() {
        let out = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(files.disk())
            .arg(DISK_SIZE)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| VmError::Io {
                what: "running qemu-img",
                machine: id,
                source,
            })?;
        if !out.status.success() {
            return Err(VmError::Failed {
                command: "qemu-img create",
                machine: id,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
    }
    if firmware == Firmware::Uefi && !files.ovmf_vars().exists() {
        tokio::fs::copy(OVMF_VARS, files.ovmf_vars())
            .await
            .map_err(|source| VmError::Io {
                what: "copying the OVMF variable store",
                machine: id,
                source,
            })?;
    }
    Ok(files)
}

/// Powers the machine on inside `netns` and returns QEMU's PID. The previous
/// serial log is kept as `serial.log.1`.
pub async fn power_on(
    lab_dir: &Path,
    netns: &str,
    id: MachineId,
    files: &VmFiles,
    sercon: &Path,
    firmware: Firmware,
    memory_mb: u32,
) -> Result<u32, VmError> {
    let io = |what| {
        move |source| VmError::Io {
            what,
            machine: id,
            source,
        }
    };
    if files.serial().exists() {
        tokio::fs::rename(files.serial(), files.dir.join("serial.log.1"))
            .await
            .map_err(io("keeping the previous serial log"))?;
    }
    let _ = tokio::fs::remove_file(files.pidfile()).await;
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "qemu-system-x86_64"])
        .args(qemu_args(lab_dir, id, files, sercon, firmware, memory_mb))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(io("starting QEMU"))?;
    if !out.status.success() {
        return Err(VmError::Failed {
            command: "qemu-system-x86_64",
            machine: id,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    process::read_pidfile(&files.pidfile()).ok_or_else(|| VmError::NoPid {
        machine: id,
        pidfile: files.pidfile(),
    })
}

/// Whether `pid` is this lab's QEMU for machine `id`.
pub fn is_running(lab_dir: &Path, id: MachineId, pid: u32) -> bool {
    process::is_ours(pid, &process_tag(lab_dir, id))
}

/// Powers the machine off (QEMU quits on SIGTERM; SIGKILL after 5 s).
/// Pulls the plugs of `machines` (id, QEMU pid) at the same instant: QEMU
/// is SIGKILLed, so the guests lose everything not yet written to their
/// disks, as in a power cut. Returns, per machine, whether it was on.
pub async fn power_off(lab_dir: &Path, machines: &[(MachineId, u32)]) -> Vec<bool> {
    let pids: Vec<(u32, String)> = machines
        .iter()
        .map(|(id, pid)| (*pid, process_tag(lab_dir, *id)))
        .collect();
    process::kill_at_once(&pids).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_has_the_lab_essentials() {
        let lab = Path::new("/lab");
        let id = MachineId::new(2).unwrap();
        let files = VmFiles::new(lab, id);
        let args = qemu_args(
            lab,
            id,
            &files,
            Path::new("/lab/sercon-port"),
            Firmware::Bios,
            MEMORY_MB,
        )
        .join(" ");
        for needle in [
            "-accel tcg",
            "-nodefaults",
            "ifname=htap2,script=no",
            "mac=52:54:00:77:00:02",
            "file=/lab/m2/disk.qcow2,if=virtio",
            "-serial file:/lab/m2/serial.log",
            "name=etc/sercon-port,file=/lab/sercon-port",
            "-pidfile /lab/m2/qemu.pid",
            "-daemonize",
            "herd-lab-m2:/lab",
        ] {
            assert!(args.contains(needle), "missing {needle:?} in {args}");
        }
        assert!(!args.contains("pflash"), "{args}");
    }

    #[test]
    fn installing_machines_boot_ovmf_disk_first() {
        let lab = Path::new("/lab");
        let id = MachineId::new(1).unwrap();
        let files = VmFiles::new(lab, id);
        let args = qemu_args(lab, id, &files, Path::new("/s"), Firmware::Uefi, MEMORY_MB).join(" ");
        for needle in [
            "-machine q35",
            "readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
            "if=pflash,format=raw,file=/lab/m1/OVMF_VARS.fd",
            "file=/lab/m1/disk.qcow2,if=none,id=d0",
            "drive=d0,bootindex=0",
            "mac=52:54:00:77:00:01,bootindex=1",
        ] {
            assert!(args.contains(needle), "missing {needle:?} in {args}");
        }
    }
}
