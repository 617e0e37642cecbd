//! Stage 4: the GPT disk image — ESP (systemd-boot, one kernel per slot), `USR-A`, `USR-B` (empty), `STATE`.

use crate::rootfs::{RootfsError, run};
use crate::slot::{self, Esp, Slot};
use crate::tool::ToolError;
use sha2::{Digest, Sha256};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const MIB: u64 = 1 << 20;
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// Container Linux's USR partition type.
const USR_TYPE: &str = "5DFBF5F4-2848-4BAC-AA5E-0D9A20B745A6";
const LINUX_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
pub const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "spec field `partitions.{field}`: {have} MiB is too small for {what} ({need} MiB needed)"
    )]
    TooSmall {
        field: &'static str,
        have: u64,
        need: u64,
        what: String,
    },
    #[error(transparent)]
    Tool(#[from] RootfsError),
    #[error(transparent)]
    Slot(#[from] slot::SlotError),
    #[error("systemd-boot is missing ({SYSTEMD_BOOT}): apt-get install systemd-boot-efi")]
    NoBootloader,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        path: path.into(),
        source,
    }
}

/// What goes on the disk.
pub struct DiskInputs<'a> {
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    pub usr_img: &'a Path,
    pub version: &'a str,
    pub cmdline: &'a str,
    pub esp_mib: u64,
    pub usr_mib: u64,
    pub state_mib: u64,
    /// Seeds every UUID and volume id, so the same inputs give the same bytes.
    pub seed: &'a str,
    pub epoch: u64,
}

fn size_mib(path: &Path) -> Result<u64, DiskError> {
    Ok(std::fs::metadata(path)
        .map_err(io(path))?
        .len()
        .div_ceil(MIB))
}

/// Checks the partition sizes fit the content before anything is written.
pub fn check_sizes(inp: &DiskInputs) -> Result<(), DiskError> {
    let usr = size_mib(inp.usr_img)?;
    if usr > inp.usr_mib {
        return Err(DiskError::TooSmall {
            field: "usr_mib",
            have: inp.usr_mib,
            need: usr,
            what: "usr.img".into(),
        });
    }
    // Two slots' kernels and initrds plus FAT overhead.
    let need = 2 * (size_mib(inp.vmlinuz)? + size_mib(inp.initrd)?) + 4;
    if need > inp.esp_mib {
        return Err(DiskError::TooSmall {
            field: "esp_mib",
            have: inp.esp_mib,
            need,
            what: "two kernels and boot initramfs".into(),
        });
    }
    if !Path::new(SYSTEMD_BOOT).is_file() {
        return Err(DiskError::NoBootloader);
    }
    Ok(())
}

/// A UUID derived from the seed and a label.
pub fn uuid(seed: &str, label: &str) -> String {
    let h = Sha256::digest(format!("{seed}/{label}"));
    let mut b: [u8; 16] = h[..16].try_into().expect("16 bytes");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

/// Writes the disk image to `out`, using `work` for scratch files.
pub fn build(inp: &DiskInputs, work: &Path, out: &Path) -> Result<(), DiskError> {
    check_sizes(inp)?;
    std::fs::create_dir_all(work).map_err(io(work))?;
    let esp = work.join("esp.img");
    build_esp(inp, work, &esp)?;
    let state = work.join("state.img");
    let _ = std::fs::remove_file(&state);
    std::fs::File::create(&state)
        .map_err(io(&state))?
        .set_len(inp.state_mib * MIB)
        .map_err(io(&state))?;
    let state_uuid = uuid(inp.seed, "STATE-fs");
    run(Command::new("mke2fs")
        .args(["-q", "-t", "ext4", "-L", "STATE", "-U", &state_uuid])
        .arg("-E")
        .arg(format!("hash_seed={state_uuid},root_owner=0:0"))
        .arg(&state)
        .env("E2FSPROGS_FAKE_TIME", inp.epoch.to_string()))?;

    let sectors = |mib: u64| mib * MIB / 512;
    let total = 1 + inp.esp_mib + 2 * inp.usr_mib + inp.state_mib + 1;
    let _ = std::fs::remove_file(out);
    std::fs::File::create(out)
        .map_err(io(out))?
        .set_len(total * MIB)
        .map_err(io(out))?;
    let mut script = format!(
        "label: gpt\nlabel-id: {}\nunit: sectors\nfirst-lba: 2048\n",
        uuid(inp.seed, "disk")
    );
    let mut start = 2048;
    for (name, mib, ty) in [
        ("ESP", inp.esp_mib, ESP_TYPE),
        (Slot::A.label(), inp.usr_mib, USR_TYPE),
        (Slot::B.label(), inp.usr_mib, USR_TYPE),
        ("STATE", inp.state_mib, LINUX_TYPE),
    ] {
        script.push_str(&format!(
            "start={start}, size={}, type={ty}, uuid={}, name=\"{name}\"\n",
            sectors(mib),
            uuid(inp.seed, name)
        ));
        start += sectors(mib);
    }
    let mut child = Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(out)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| {
            RootfsError::Tool(ToolError {
                command: "sfdisk (apt-get install fdisk)".into(),
                reason: e.to_string(),
            })
        })?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .map_err(io(out))?;
    let status = child.wait().map_err(io(out))?;
    if !status.success() {
        return Err(RootfsError::Tool(ToolError {
            command: format!("sfdisk {}", out.display()),
            reason: status.to_string(),
        })
        .into());
    }
    for (name, src) in [
        ("ESP", &esp),
        (Slot::A.label(), &inp.usr_img.to_path_buf()),
        ("STATE", &state),
    ] {
        let part = crate::gpt::find(out, name).map_err(|e| io(out)(std::io::Error::other(e)))?;
        write_at(out, part.offset, src)?;
    }
    std::fs::File::open(out)
        .map_err(io(out))?
        .sync_all()
        .map_err(io(out))?;
    Ok(())
}

/// Copies `src` into `disk` at byte `offset`.
pub fn write_at(disk: &Path, offset: u64, src: &Path) -> Result<(), DiskError> {
    let mut d = std::fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .map_err(io(disk))?;
    d.seek(SeekFrom::Start(offset)).map_err(io(disk))?;
    let mut s = std::fs::File::open(src).map_err(io(src))?;
    std::io::copy(&mut s, &mut d).map_err(io(disk))?;
    d.sync_all().map_err(io(disk))
}

fn build_esp(inp: &DiskInputs, work: &Path, esp: &Path) -> Result<(), DiskError> {
    let _ = std::fs::remove_file(esp);
    std::fs::File::create(esp)
        .map_err(io(esp))?
        .set_len(inp.esp_mib * MIB)
        .map_err(io(esp))?;
    let volid = &uuid(inp.seed, "ESP-fs").replace('-', "")[..8];
    run(Command::new("mkfs.fat")
        .args(["-F", "32", "-n", "ESP", "-i", volid, "--invariant"])
        .arg(esp))?;
    let files = work.join("esp-files");
    let _ = std::fs::remove_dir_all(&files);
    std::fs::create_dir_all(&files).map_err(io(&files))?;
    let entry = files.join("entry.conf");
    std::fs::write(
        &entry,
        slot::entry_text(Slot::A, 1, inp.version, inp.cmdline),
    )
    .map_err(io(&entry))?;
    let loader = files.join("loader.conf");
    // timeout 0: no menu; the counting entries decide. No `default`: it would override counting.
    std::fs::write(&loader, "timeout 0\nconsole-mode keep\n").map_err(io(&loader))?;
    let esp_fs = slot::ImageEsp {
        image: esp.to_path_buf(),
        offset: 0,
        epoch: inp.epoch,
    };
    esp_fs.mkdirs(&["EFI", "EFI/BOOT", "loader", "loader/entries", "a", "b"])?;
    esp_fs.put(Path::new(SYSTEMD_BOOT), "EFI/BOOT/BOOTX64.EFI")?;
    esp_fs.put(&loader, "loader/loader.conf")?;
    esp_fs.put(inp.vmlinuz, "a/vmlinuz")?;
    esp_fs.put(inp.initrd, "a/initrd")?;
    esp_fs.put(
        &entry,
        &format!("loader/entries/{}.conf", Slot::A.entry_stem()),
    )?;
    Ok(())
}
