//! What the lab needs on the host, checked up front. Nothing is installed
//! silently: a missing piece is an error saying which package provides it.

use std::path::{Path, PathBuf};

/// A missing prerequisite and how to get it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{what} is missing ({path}): install it with `apt-get install --no-install-recommends {package}` (scripts/deps installs everything)"
)]
pub struct Missing {
    pub what: &'static str,
    pub path: String,
    pub package: &'static str,
}

/// The iPXE ROM QEMU loads for `virtio-net-pci` (Debian's `ipxe-qemu`).
pub const VIRTIO_ROM: &str = "/usr/lib/ipxe/qemu/efi-virtio.rom";

fn on_path(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Checks the host tools of the lab; returns every missing one.
pub fn check_host() -> Vec<Missing> {
    let mut missing = Vec::new();
    for (program, what, package) in [
        ("qemu-system-x86_64", "QEMU", "qemu-system-x86"),
        ("qemu-img", "qemu-img", "qemu-utils"),
        ("ip", "iproute2's ip", "iproute2"),
        (
            "docker-registry",
            "the lab's container registry",
            "docker-registry",
        ),
    ] {
        if on_path(program).is_none() {
            missing.push(Missing {
                what,
                path: program.to_owned(),
                package,
            });
        }
    }
    if !Path::new(VIRTIO_ROM).is_file() {
        missing.push(Missing {
            what: "the iPXE ROM for virtio-net",
            path: VIRTIO_ROM.to_owned(),
            package: "ipxe-qemu",
        });
    }
    missing
}

/// Checks for OVMF, which machines that install to disk boot with.
pub fn check_ovmf() -> Vec<Missing> {
    [crate::vm::OVMF_CODE, crate::vm::OVMF_VARS]
        .into_iter()
        .filter(|p| !Path::new(p).is_file())
        .map(|p| Missing {
            what: "OVMF (UEFI firmware for --install)",
            path: p.to_owned(),
            package: "ovmf",
        })
        .collect()
}

/// Checks that an image directory holds what a firstboot install fetches.
pub fn check_disk_image(dir: &Path) -> Vec<Missing> {
    ["disk.img", "manifest.json"]
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .map(|f| Missing {
            what: "the herd disk image (built by `herd image build --out DIR`)",
            path: dir.join(f).display().to_string(),
            package: "linux-image-amd64",
        })
        .collect()
}

/// Checks that an image directory holds a netboot kernel and initramfs.
pub fn check_image(dir: &Path) -> Vec<Missing> {
    ["vmlinuz", "initramfs"]
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .map(|f| Missing {
            what: "the herd image (build it with `herd image build --out DIR`, which needs the kernel)",
            path: dir.join(f).display().to_string(),
            package: "linux-image-amd64 busybox-static",
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_image_dir_names_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = check_image(dir.path());
        assert_eq!(missing.len(), 2);
        let text = missing[0].to_string();
        assert!(
            text.contains("vmlinuz") && text.contains("apt-get install"),
            "{text}"
        );
    }
}
