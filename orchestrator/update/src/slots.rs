//! This machine's disk as the update role uses it: the A/B slots through
//! `herd_image::slot` (write the passive slot, activate it with a try
//! counter, mark it good, use up a failed trial), each on a blocking
//! thread. Which disk, which ESP and which slot booted are found once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use herd_image::payload::VerifyingKey;
use herd_image::slot::{self, Entry, Esp, FlipError, Flipped, Slot, SlotError, Target, Update};

/// Why the machine's slots cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("no disk holds a partition named ESP (is this a disk boot?)")]
    NoDisk,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the update key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error(transparent)]
    Flip(#[from] FlipError),
}

/// The machine's disk and boot facts.
pub struct Disk {
    /// The whole disk (`/dev/vda`, or a disk image in tests).
    pub disk: PathBuf,
    pub esp: Box<dyn Esp + Send + Sync>,
    /// The slot this boot came from.
    pub booted: Slot,
    /// The key payloads must be signed with (the image's).
    pub public_key: VerifyingKey,
    /// Where payloads are unpacked while being written.
    pub scratch: PathBuf,
}

/// The image's payload key.
pub const PUBLIC_KEY: &str = "/usr/share/herd/update.pub";

/// The disk holding the partition named `ESP`, from sysfs.
pub fn discover_disk() -> Result<PathBuf, DiskError> {
    let root = Path::new("/sys/class/block");
    let entries = std::fs::read_dir(root).map_err(|source| DiskError::Io {
        path: root.into(),
        source,
    })?;
    for e in entries.flatten() {
        let uevent = std::fs::read_to_string(e.path().join("uevent")).unwrap_or_default();
        if uevent.lines().any(|l| l == "PARTNAME=ESP") {
            // A partition's sysfs directory sits inside its disk's.
            let real = std::fs::canonicalize(e.path()).map_err(|source| DiskError::Io {
                path: e.path(),
                source,
            })?;
            if let Some(disk) = real.parent().and_then(|p| p.file_name()) {
                return Ok(Path::new("/dev").join(disk));
            }
        }
    }
    Err(DiskError::NoDisk)
}

impl Disk {
    /// The running machine's disk: found from sysfs, ESP mounted on
    /// `/boot`, booted slot from the kernel command line, key from the image.
    pub fn local(scratch: PathBuf) -> Result<Disk, DiskError> {
        let key_path = PathBuf::from(PUBLIC_KEY);
        let text = std::fs::read_to_string(&key_path).map_err(|source| DiskError::Io {
            path: key_path.clone(),
            source,
        })?;
        let public_key =
            herd_image::payload::parse_public_key(&text).map_err(|e| DiskError::Key {
                path: key_path,
                reason: e.to_string(),
            })?;
        Ok(Disk {
            disk: discover_disk()?,
            esp: Box::new(slot::DirEsp("/boot".into())),
            booted: slot::booted_slot()?,
            public_key,
            scratch,
        })
    }

    /// The booted entry's kernel command line without `herd.usr=`, which
    /// the new entry gets for its own slot: site settings carry over.
    fn cmdline(&self) -> Result<String, DiskError> {
        let entry = slot::entry_of(self.esp.as_ref(), self.booted)?
            .ok_or(SlotError::NoEntry(self.booted))?;
        let text = self.esp.read(&format!("loader/entries/{}", entry.file))?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("options "))
            .unwrap_or("console=ttyS0")
            .split_whitespace()
            .filter(|a| !a.starts_with("herd.usr="))
            .collect::<Vec<_>>()
            .join(" "))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DiskError> + Send + 'static,
) -> Result<T, DiskError> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("slot work does not panic")
}

/// Verifies `payload` and writes it into the passive slot (not bootable yet).
pub async fn write(
    disk: &Arc<Disk>,
    payload: PathBuf,
    signature: PathBuf,
) -> Result<Flipped, DiskError> {
    let d = Arc::clone(disk);
    blocking(move || {
        let update = Update {
            payload: &payload,
            signature: &signature,
            public_key: &d.public_key,
            slot: None,
            booted: Some(d.booted),
            tries: 0,
            cmdline: String::new(),
        };
        Ok(slot::write(&d.disk, d.esp.as_ref(), &update)?)
    })
    .await
}

/// Gives the written slot a boot entry with `tries` attempts: it boots next.
pub async fn activate(
    disk: &Arc<Disk>,
    slot: Slot,
    version: String,
    tries: u8,
) -> Result<(), DiskError> {
    let d = Arc::clone(disk);
    blocking(move || {
        let target = Target {
            slot,
            cmdline: d.cmdline()?,
            tries,
        };
        Ok(slot::activate(d.esp.as_ref(), &target, &version)?)
    })
    .await
}

pub async fn mark_good(disk: &Arc<Disk>, slot: Slot) -> Result<(), DiskError> {
    let d = Arc::clone(disk);
    blocking(move || Ok(slot::mark_good_on(d.esp.as_ref(), slot)?)).await
}

/// Uses up the tries of `slot`'s entry: the other slot boots next.
pub async fn exhaust(disk: &Arc<Disk>, slot: Slot) -> Result<bool, DiskError> {
    let d = Arc::clone(disk);
    blocking(move || Ok(slot::exhaust(d.esp.as_ref(), slot)?)).await
}

pub async fn entry(disk: &Arc<Disk>, slot: Slot) -> Result<Option<Entry>, DiskError> {
    let d = Arc::clone(disk);
    blocking(move || Ok(slot::entry_of(d.esp.as_ref(), slot)?)).await
}

/// A slot from its label (`USR-A`).
pub fn slot_of(label: &str) -> Option<Slot> {
    Slot::from_label(label)
}
