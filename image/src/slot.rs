//! A/B slots on systemd-boot with boot counting: entries, flipping to the passive slot, marking good.
//!
//! Each slot has a boot entry `loader/entries/slot-<a|b>[+LEFT-DONE].conf`
//! and its kernel and initramfs in `/<a|b>/` on the ESP. A freshly written
//! slot gets `+N-0`; systemd-boot decrements it on every boot and sorts an
//! entry with no tries left below the other slot, which then boots again.
//! [`mark_good`] drops the counter once the agent is healthy. Entries carry
//! `sort-key herd` and a generation in `version`, so the newest slot sorts
//! first (systemd-boot boots the first entry when loader.conf has no `default`).

use crate::rootfs::{RootfsError, run};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
}

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tool(#[from] RootfsError),
    #[error("not booted from a slot: the kernel command line has no herd.usr=USR-A|USR-B")]
    NotSlotBoot,
    #[error("no boot entry for slot {0:?} on the ESP")]
    NoEntry(Slot),
    #[error(transparent)]
    Gpt(#[from] crate::gpt::GptError),
    #[error(transparent)]
    Payload(#[from] crate::payload::PayloadError),
    #[error("payload has no member {0:?}")]
    MissingMember(&'static str),
    #[error(
        "slot {0:?} is the one running: an update goes into the other slot (mark the running slot good first)"
    )]
    WouldOverwriteBooted(Slot),
    #[error("usr.img ({have} bytes) does not fit partition {label} ({size} bytes)")]
    TooBig {
        label: &'static str,
        have: u64,
        size: u64,
    },
}

impl Slot {
    pub fn label(self) -> &'static str {
        match self {
            Slot::A => "USR-A",
            Slot::B => "USR-B",
        }
    }
    pub fn dir(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
    pub fn entry_stem(self) -> &'static str {
        match self {
            Slot::A => "slot-a",
            Slot::B => "slot-b",
        }
    }
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
    pub fn from_label(s: &str) -> Option<Slot> {
        match s {
            "USR-A" => Some(Slot::A),
            "USR-B" => Some(Slot::B),
            _ => None,
        }
    }
}

/// The boot entry text for `slot`.
pub fn entry_text(slot: Slot, generation: u64, os_version: &str, cmdline: &str) -> String {
    let d = slot.dir();
    format!(
        "title herd {os_version} ({})\nsort-key herd\nversion {generation}\nlinux /{d}/vmlinuz\ninitrd /{d}/initrd\noptions {cmdline} herd.usr={}\n",
        slot.label(),
        slot.label()
    )
}

/// One boot entry as found on the ESP.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub slot: Slot,
    pub file: String,
    /// `None`: marked good (no counter). `Some((left, done))`: on trial.
    pub tries: Option<(u32, u32)>,
}

impl Entry {
    pub fn parse(file: &str) -> Option<Entry> {
        let stem = file.strip_suffix(".conf")?;
        let (name, counter) = match stem.split_once('+') {
            Some((n, c)) => (n, Some(c)),
            None => (stem, None),
        };
        let slot = match name {
            "slot-a" => Slot::A,
            "slot-b" => Slot::B,
            _ => return None,
        };
        let tries = match counter {
            None => None,
            Some(c) => {
                let (l, d) = c.split_once('-').unwrap_or((c, "0"));
                Some((l.parse().ok()?, d.parse().ok()?))
            }
        };
        Some(Entry {
            slot,
            file: file.into(),
            tries,
        })
    }
}

/// File access to an ESP: a mounted directory in the OS, or a FAT image (via mtools) on the host.
pub trait Esp {
    fn list(&self, dir: &str) -> Result<Vec<String>, SlotError>;
    fn put(&self, src: &Path, dst: &str) -> Result<(), SlotError>;
    fn read(&self, path: &str) -> Result<String, SlotError>;
    fn rename(&self, from: &str, to: &str) -> Result<(), SlotError>;
    fn remove(&self, path: &str) -> Result<(), SlotError>;
}

/// A mounted ESP (`/boot` in the herd OS).
pub struct DirEsp(pub PathBuf);

impl Esp for DirEsp {
    fn list(&self, dir: &str) -> Result<Vec<String>, SlotError> {
        let p = self.0.join(dir);
        let io = |source| SlotError::Io {
            path: p.clone(),
            source,
        };
        let mut names = Vec::new();
        for e in std::fs::read_dir(&p).map_err(io)? {
            names.push(e.map_err(io)?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
    fn put(&self, src: &Path, dst: &str) -> Result<(), SlotError> {
        let d = self.0.join(dst);
        // Write beside, fsync, rename: a crash never leaves a half-written kernel under the real name.
        let tmp = self.0.join(format!("{dst}.tmp"));
        std::fs::copy(src, &tmp).map_err(|source| SlotError::Io {
            path: tmp.clone(),
            source,
        })?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|source| SlotError::Io {
                path: tmp.clone(),
                source,
            })?;
        std::fs::rename(&tmp, &d).map_err(|source| SlotError::Io {
            path: d.clone(),
            source,
        })?;
        sync_renamed(&d)
    }
    fn read(&self, path: &str) -> Result<String, SlotError> {
        let p = self.0.join(path);
        std::fs::read_to_string(&p).map_err(|source| SlotError::Io { path: p, source })
    }
    fn rename(&self, from: &str, to: &str) -> Result<(), SlotError> {
        let (f, t) = (self.0.join(from), self.0.join(to));
        std::fs::rename(&f, &t).map_err(|source| SlotError::Io { path: f, source })?;
        sync_renamed(&t)
    }
    fn remove(&self, path: &str) -> Result<(), SlotError> {
        let p = self.0.join(path);
        std::fs::remove_file(&p).map_err(|source| SlotError::Io {
            path: p.clone(),
            source,
        })?;
        sync_parent(&p)
    }
}

/// Makes a rename to `path` durable. On vfat a rename writes a *new*
/// directory entry with size 0 and no first cluster; the file's real size
/// and cluster reach that entry only when its inode is written back, which
/// flushing the directory does not do. A power cut after the directory
/// flush alone left `slot-b+3-0.conf` empty on the ESP, so systemd-boot
/// skipped it and booted the old slot (found by the QEMU rollout's power
/// cut between flip and first boot). So: the file's inode, then the
/// directory.
fn sync_renamed(path: &Path) -> Result<(), SlotError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| SlotError::Io {
            path: path.into(),
            source,
        })?;
    sync_parent(path)
}

/// Flushes the directory holding `path`: on the ESP (vfat) a rename or
/// removal sits in the directory's blocks until then, and the order of
/// these changes is what keeps a slot bootable through power loss.
fn sync_parent(path: &Path) -> Result<(), SlotError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| SlotError::Io {
            path: dir.into(),
            source,
        })
}

/// A FAT filesystem inside an image file at `offset` (an ESP partition of disk.img), edited with mtools.
pub struct ImageEsp {
    pub image: PathBuf,
    pub offset: u64,
    /// Timestamps written into the FAT (SOURCE_DATE_EPOCH for mtools).
    pub epoch: u64,
}

impl ImageEsp {
    fn cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.arg("-i")
            .arg(format!("{}@@{}", self.image.display(), self.offset))
            .env("MTOOLS_SKIP_CHECK", "1")
            .env("SOURCE_DATE_EPOCH", self.epoch.to_string());
        c
    }
    pub fn mkdirs(&self, dirs: &[&str]) -> Result<(), SlotError> {
        let mut c = self.cmd("mmd");
        for d in dirs {
            c.arg(format!("::/{d}"));
        }
        run(&mut c)?;
        Ok(())
    }
}

impl Esp for ImageEsp {
    fn list(&self, dir: &str) -> Result<Vec<String>, SlotError> {
        let out = run(self.cmd("mdir").args(["-b", &format!("::/{dir}")]))?;
        let mut names: Vec<String> = String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| {
                l.trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .map(str::to_string)
            })
            .filter(|n| !n.is_empty() && n != "." && n != "..")
            .collect();
        names.sort();
        Ok(names)
    }
    fn put(&self, src: &Path, dst: &str) -> Result<(), SlotError> {
        run(self
            .cmd("mcopy")
            .args(["-D", "o"])
            .arg(src)
            .arg(format!("::/{dst}")))?;
        Ok(())
    }
    fn read(&self, path: &str) -> Result<String, SlotError> {
        let out = run(self.cmd("mtype").arg(format!("::/{path}")))?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
    fn rename(&self, from: &str, to: &str) -> Result<(), SlotError> {
        let to_name = to.rsplit('/').next().unwrap_or(to);
        run(self
            .cmd("mren")
            .args(["-D", "o", &format!("::/{from}"), to_name]))?;
        Ok(())
    }
    fn remove(&self, path: &str) -> Result<(), SlotError> {
        run(self.cmd("mdel").arg(format!("::/{path}")))?;
        Ok(())
    }
}

const ENTRIES: &str = "loader/entries";

/// The slot entries on `esp`.
pub fn entries(esp: &dyn Esp) -> Result<Vec<Entry>, SlotError> {
    Ok(esp
        .list(ENTRIES)?
        .iter()
        .filter_map(|f| Entry::parse(f))
        .collect())
}

/// The slot this OS booted from (`herd.usr=` on the kernel command line).
pub fn booted_slot() -> Result<Slot, SlotError> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").map_err(|source| SlotError::Io {
        path: "/proc/cmdline".into(),
        source,
    })?;
    cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix("herd.usr=").and_then(Slot::from_label))
        .ok_or(SlotError::NotSlotBoot)
}

/// Marks `slot` good: drops its boot counter so systemd-boot keeps booting it.
/// Called by the agent once it is healthy and back in the cluster.
pub fn mark_good_on(esp: &dyn Esp, slot: Slot) -> Result<(), SlotError> {
    let entry = entries(esp)?
        .into_iter()
        .find(|e| e.slot == slot)
        .ok_or(SlotError::NoEntry(slot))?;
    if entry.tries.is_some() {
        esp.rename(
            &format!("{ENTRIES}/{}", entry.file),
            &format!("{ENTRIES}/{}.conf", slot.entry_stem()),
        )?;
    }
    Ok(())
}

/// Marks the booted slot good on the ESP mounted at `/boot` by the image's init.
pub fn mark_good() -> Result<Slot, SlotError> {
    let slot = booted_slot()?;
    mark_good_on(&DirEsp("/boot".into()), slot)?;
    Ok(slot)
}

/// The boot entry of `slot`, if it has one.
pub fn entry_of(esp: &dyn Esp, slot: Slot) -> Result<Option<Entry>, SlotError> {
    Ok(entries(esp)?.into_iter().find(|e| e.slot == slot))
}

/// Uses up the tries of `slot`'s entry (`+L-D` becomes `+0-(L+D)`), so the
/// boot loader skips it and boots the other slot next: what the agent does
/// when a slot on trial failed its health gate, instead of rebooting into
/// it again for each try left. Returns whether there was anything to use
/// up (an entry on trial with tries left).
pub fn exhaust(esp: &dyn Esp, slot: Slot) -> Result<bool, SlotError> {
    let Some(entry) = entry_of(esp, slot)? else {
        return Ok(false);
    };
    let Some((left, done)) = entry.tries else {
        return Ok(false);
    };
    if left == 0 {
        return Ok(false);
    }
    esp.rename(
        &format!("{ENTRIES}/{}", entry.file),
        &format!("{ENTRIES}/{}+0-{}.conf", slot.entry_stem(), left + done),
    )?;
    Ok(true)
}

fn generation(esp: &dyn Esp, e: &Entry) -> u64 {
    esp.read(&format!("{ENTRIES}/{}", e.file))
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("version ")
                    .and_then(|v| v.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// The slot to write an update into: the one that is not the newest good slot.
pub fn passive_slot(esp: &dyn Esp) -> Result<Slot, SlotError> {
    let good = entries(esp)?
        .into_iter()
        .filter(|e| e.tries.is_none())
        .max_by_key(|e| generation(esp, e));
    Ok(good.map(|e| e.slot.other()).unwrap_or(Slot::B))
}

/// The ESP inside a disk image or block device (found by its GPT name),
/// edited with mtools.
pub fn esp_of(disk: &Path) -> Result<ImageEsp, SlotError> {
    let p = crate::gpt::find(disk, "ESP")?;
    Ok(ImageEsp {
        image: disk.into(),
        offset: p.offset,
        epoch: crate::build::DEFAULT_EPOCH,
    })
}

/// Why a flip did not happen; the slots are as they were.
#[derive(Debug, thiserror::Error)]
pub enum FlipError {
    #[error(transparent)]
    Payload(#[from] crate::payload::PayloadError),
    #[error(transparent)]
    Slot(#[from] SlotError),
}

/// An update to flip to: a signed payload and how its boot entry boots.
#[derive(Debug, Clone)]
pub struct Update<'a> {
    pub payload: &'a Path,
    /// The payload's detached signature.
    pub signature: &'a Path,
    pub public_key: &'a crate::payload::VerifyingKey,
    /// The slot to write; `None`: the passive one.
    pub slot: Option<Slot>,
    /// The slot the running system booted from (`None`: not booted from
    /// this disk); it is never written.
    pub booted: Option<Slot>,
    /// Boot attempts before the boot loader falls back to the other slot.
    pub tries: u8,
    /// Kernel command line of the new entry (`herd.usr=` is appended).
    pub cmdline: String,
}

/// The slot written and the version it now holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flipped {
    pub slot: Slot,
    pub version: String,
}

/// The whole flip, as `herd image flip` does it: [`write`], then
/// [`activate`]. Nothing is written unless the payload verifies; a crash
/// midway leaves the old slot booting.
pub fn flip(disk: &Path, esp: &dyn Esp, update: &Update) -> Result<Flipped, FlipError> {
    let written = write(disk, esp, update)?;
    activate(
        esp,
        &Target {
            slot: written.slot,
            cmdline: update.cmdline.clone(),
            tries: update.tries,
        },
        &written.version,
    )?;
    Ok(written)
}

/// The first half of a flip, done before the cluster's reboot lock is
/// taken: verify the payload's signature and every member's hash, then
/// write it into its slot of `disk` (the passive one unless given) —
/// removing that slot's boot entry first, so a crash midway boots the old
/// slot. The slot boots only once [`activate`]d.
pub fn write(disk: &Path, esp: &dyn Esp, update: &Update) -> Result<Flipped, FlipError> {
    let verified = crate::payload::verify(update.payload, update.signature, update.public_key)?;
    let slot = match update.slot {
        Some(s) => s,
        None => passive_slot(esp)?,
    };
    if update.booted == Some(slot) {
        return Err(SlotError::WouldOverwriteBooted(slot).into());
    }
    let scratch = tempfile_dir()?;
    let result = write_payload(disk, esp, slot, update.payload, &verified, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    result?;
    Ok(Flipped {
        slot,
        version: verified.header.version,
    })
}

/// Where and how an update is written.
#[derive(Debug, Clone)]
pub struct Target {
    pub slot: Slot,
    /// Kernel command line of the new entry (`herd.usr=` is appended).
    pub cmdline: String,
    /// Boot attempts before systemd-boot falls back to the other slot.
    pub tries: u8,
}

/// Writes a verified payload into `slot` of `disk` (USR partition and the
/// kernel/initrd on `esp`) and makes it the next boot with `tries` attempts.
pub fn install_payload(
    disk: &Path,
    esp: &dyn Esp,
    target: &Target,
    payload: &Path,
    verified: &crate::payload::Verified,
    scratch: &Path,
) -> Result<(), SlotError> {
    write_payload(disk, esp, target.slot, payload, verified, scratch)?;
    activate(esp, target, &verified.header.version)
}

/// Writes a verified payload into `slot` without a boot entry. Order, for
/// power loss at any point: the slot's old entry goes first (a half-written
/// slot must never be bootable), then the USR partition (fsync'd), then
/// kernel and initrd (each written beside, fsync'd, renamed).
pub fn write_payload(
    disk: &Path,
    esp: &dyn Esp,
    slot: Slot,
    payload: &Path,
    verified: &crate::payload::Verified,
    scratch: &Path,
) -> Result<(), SlotError> {
    let member = |name: &'static str| -> Result<(u64, u64), SlotError> {
        let i = verified
            .header
            .members
            .iter()
            .position(|m| m.name == name)
            .ok_or(SlotError::MissingMember(name))?;
        Ok((verified.offsets[i], verified.header.members[i].size))
    };
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| SlotError::Io { path: p, source }
    };
    for e in entries(esp)?.into_iter().filter(|e| e.slot == slot) {
        esp.remove(&format!("{ENTRIES}/{}", e.file))?;
    }
    let part = crate::gpt::find(disk, slot.label())?;
    let (off, size) = member("usr.img")?;
    if size > part.size {
        return Err(SlotError::TooBig {
            label: slot.label(),
            have: size,
            size: part.size,
        });
    }
    copy_range(payload, off, size, disk, part.offset).map_err(io(disk))?;
    std::fs::create_dir_all(scratch).map_err(io(scratch))?;
    for (name, dst) in [("vmlinuz", "vmlinuz"), ("initrd", "initrd")] {
        let (off, size) = member(name)?;
        let tmp = scratch.join(dst);
        let _ = std::fs::remove_file(&tmp);
        copy_range(payload, off, size, &tmp, 0).map_err(io(&tmp))?;
        esp.put(&tmp, &format!("{}/{dst}", slot.dir()))?;
    }
    Ok(())
}

/// The second half of a flip: a boot entry for the written slot with
/// `target.tries` attempts and the newest generation, so it boots next.
/// Written beside and renamed, so a crash leaves no entry or a whole one.
pub fn activate(esp: &dyn Esp, target: &Target, version: &str) -> Result<(), SlotError> {
    let slot = target.slot;
    for e in entries(esp)?.into_iter().filter(|e| e.slot == slot) {
        esp.remove(&format!("{ENTRIES}/{}", e.file))?;
    }
    let next_gen = entries(esp)?
        .iter()
        .map(|e| generation(esp, e))
        .max()
        .unwrap_or(0)
        + 1;
    let scratch = tempfile_dir()?;
    let entry = scratch.join("entry.conf");
    let result = std::fs::write(&entry, entry_text(slot, next_gen, version, &target.cmdline))
        .map_err(|source| SlotError::Io {
            path: entry.clone(),
            source,
        })
        .and_then(|()| {
            esp.put(
                &entry,
                &format!("{ENTRIES}/{}+{}-0.conf", slot.entry_stem(), target.tries),
            )
        });
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// A fresh private scratch directory under the temp dir.
fn tempfile_dir() -> Result<PathBuf, SlotError> {
    let dir = std::env::temp_dir().join(format!(
        "herd-slot-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).map_err(|source| SlotError::Io {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

fn copy_range(src: &Path, src_off: u64, len: u64, dst: &Path, dst_off: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut s = std::fs::File::open(src)?;
    s.seek(SeekFrom::Start(src_off))?;
    let mut d = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dst)?;
    d.seek(SeekFrom::Start(dst_off))?;
    let n = std::io::copy(&mut s.take(len), &mut d)?;
    if n != len {
        return Err(std::io::Error::other(format!(
            "{}: short read",
            src.display()
        )));
    }
    d.sync_all()
}

#[cfg(test)]
mod tests;
