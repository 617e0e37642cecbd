//! Grows a disk's last GPT partition (STATE) to the end of the disk, for an
//! image written to a bigger disk: moves the backup GPT to the disk's end,
//! extends the entry, fixes both CRCs, and tells the kernel the new size.
//!
//! Order, so that a power loss at any point leaves a bootable disk: (1) the
//! new backup entries and header are written at the new end of the disk
//! (outside everything the old table describes) and synced; (2) then the
//! primary entries and header, synced. Before (2) finishes the old primary
//! is intact (or, mid-write, fails its CRC and firmware and Linux fall back
//! to the backup at the last LBA, which is already the new one). Running
//! again redoes whatever is missing; a grown disk is left alone.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const SECTOR: u64 = 512;

#[derive(Debug, thiserror::Error)]
pub enum GrowError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Table { path: PathBuf, reason: String },
    #[error("{path}: the last partition is {found:?}, not {want:?}: refusing to grow it")]
    NotLast {
        path: PathBuf,
        found: String,
        want: String,
    },
}

/// What [`grow_last`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Grown {
    /// The partition already reaches the end of the disk.
    Already { size: u64 },
    /// Partition `index` now ends at the disk's last usable sector.
    Grown { index: u32, from: u64, to: u64 },
}

struct Header(Vec<u8>);

impl Header {
    fn u32(&self, o: usize) -> u32 {
        u32::from_le_bytes(self.0[o..o + 4].try_into().expect("4 bytes"))
    }
    fn u64(&self, o: usize) -> u64 {
        u64::from_le_bytes(self.0[o..o + 8].try_into().expect("8 bytes"))
    }
    fn set_u32(&mut self, o: usize, v: u32) {
        self.0[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn set_u64(&mut self, o: usize, v: u64) {
        self.0[o..o + 8].copy_from_slice(&v.to_le_bytes());
    }
    fn size(&self) -> usize {
        self.u32(12) as usize
    }
    /// CRC32 of the header with its own CRC field zeroed.
    fn crc(&self) -> u32 {
        let mut h = self.0[..self.size()].to_vec();
        h[16..20].fill(0);
        crc32fast::hash(&h)
    }
    fn seal(&mut self) {
        let c = self.crc();
        self.set_u32(16, c);
    }
}

/// Grows the last partition of `disk` (an image file or block device),
/// which must be named `name`, to the end of the disk. For a block device
/// the kernel's view of the partition is updated too (BLKPG, which works
/// while other partitions of the disk are mounted).
pub fn grow_last(disk: &Path, name: &str) -> Result<Grown, GrowError> {
    let io = |source| GrowError::Io {
        path: disk.into(),
        source,
    };
    let bad = |reason: String| GrowError::Table {
        path: disk.into(),
        reason,
    };
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .map_err(io)?;
    let disk_sectors = f.seek(SeekFrom::End(0)).map_err(io)? / SECTOR;
    // A primary table that fails its CRCs is what a power loss during step
    // (2) leaves: the backup at the last LBA is then the new one, so rebuild
    // the primary from it.
    let (mut primary, mut entries, from_backup) = match read_table(&mut f, 1) {
        Ok((h, e)) => (h, e, false),
        Err(primary_err) => {
            let (mut h, e) = read_table(&mut f, disk_sectors - 1).map_err(|backup_err| {
                bad(format!(
                    "primary GPT: {primary_err}; backup GPT at the last sector: {backup_err}"
                ))
            })?;
            h.set_u64(24, 1);
            h.set_u64(72, 2);
            (h, e, true)
        }
    };
    let (entries_lba, count, esize) = (
        primary.u64(72),
        primary.u32(80) as usize,
        primary.u32(84) as usize,
    );
    let table_sectors = (count * esize).div_ceil(SECTOR as usize) as u64;
    let last_lba = disk_sectors - 1;
    let backup_entries_lba = last_lba - table_sectors;
    let last_usable = backup_entries_lba - 1;

    // The partition that ends last.
    let (i, first, end) = entries
        .chunks(esize)
        .enumerate()
        .filter(|(_, e)| e[..16].iter().any(|b| *b != 0))
        .map(|(i, e)| {
            let first = u64::from_le_bytes(e[32..40].try_into().expect("8 bytes"));
            let end = u64::from_le_bytes(e[40..48].try_into().expect("8 bytes"));
            (i, first, end)
        })
        .max_by_key(|(_, _, end)| *end)
        .ok_or_else(|| bad("no partitions".into()))?;
    let found = entry_name(&entries[i * esize..(i + 1) * esize]);
    if found != name {
        return Err(GrowError::NotLast {
            path: disk.into(),
            found,
            want: name.into(),
        });
    }
    if end > last_usable {
        return Err(bad(format!(
            "{name} ends at sector {end}, beyond the disk's last usable sector {last_usable}"
        )));
    }
    if end == last_usable && primary.u64(32) == last_lba && !from_backup {
        return Ok(Grown::Already {
            size: (end + 1 - first) * SECTOR,
        });
    }
    entries[i * esize + 40..i * esize + 48].copy_from_slice(&last_usable.to_le_bytes());
    let entries_crc = crc32fast::hash(&entries);

    primary.set_u64(32, last_lba); // alternate LBA
    primary.set_u64(48, last_usable);
    primary.set_u32(88, entries_crc);
    primary.seal();
    let mut backup = Header(primary.0.clone());
    backup.set_u64(24, last_lba); // my LBA
    backup.set_u64(32, 1);
    backup.set_u64(72, backup_entries_lba);
    backup.seal();

    // (1) The backup at the new end, then (2) the primary, each synced.
    write_at(&mut f, backup_entries_lba * SECTOR, &entries).map_err(io)?;
    write_at(&mut f, last_lba * SECTOR, &backup.0).map_err(io)?;
    f.sync_all().map_err(io)?;
    write_at(&mut f, entries_lba * SECTOR, &entries).map_err(io)?;
    write_at(&mut f, SECTOR, &primary.0).map_err(io)?;
    f.sync_all().map_err(io)?;
    // The protective MBR's size (informational for GPT readers).
    let mut mbr = read_at(&mut f, 0, SECTOR as usize).map_err(io)?;
    if mbr[510..512] == [0x55, 0xaa] && mbr[450] == 0xee {
        let size = u32::try_from(disk_sectors - 1).unwrap_or(u32::MAX);
        mbr[458..462].copy_from_slice(&size.to_le_bytes());
        write_at(&mut f, 0, &mbr).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    if f.metadata().map_err(io)?.file_type().is_block_device_like() {
        blkpg_resize(
            &f,
            i as u32 + 1,
            first * SECTOR,
            (last_usable + 1 - first) * SECTOR,
        )
        .map_err(io)?;
    }
    Ok(Grown::Grown {
        index: i as u32 + 1,
        from: (end + 1 - first) * SECTOR,
        to: (last_usable + 1 - first) * SECTOR,
    })
}

/// The GPT header at `lba` and its entry table, both CRC-checked.
fn read_table(f: &mut File, lba: u64) -> Result<(Header, Vec<u8>), String> {
    let h = Header(read_at(f, lba * SECTOR, SECTOR as usize).map_err(|e| e.to_string())?);
    if &h.0[..8] != b"EFI PART" {
        return Err(format!("no GPT signature at LBA {lba}"));
    }
    if !(92..=512).contains(&h.size()) || h.crc() != h.u32(16) {
        return Err(format!("the header at LBA {lba} fails its CRC"));
    }
    let (count, esize) = (h.u32(80) as usize, h.u32(84) as usize);
    if !(128..=1024).contains(&esize) || count == 0 || count > 1024 {
        return Err(format!("odd entry table: {count} entries of {esize} bytes"));
    }
    let entries = read_at(f, h.u64(72) * SECTOR, count * esize).map_err(|e| e.to_string())?;
    if crc32fast::hash(&entries) != h.u32(88) {
        return Err(format!(
            "the entry table of the header at LBA {lba} fails its CRC"
        ));
    }
    Ok((h, entries))
}

fn entry_name(e: &[u8]) -> String {
    let name: Vec<u16> = e[56..128]
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|c| *c != 0)
        .collect();
    String::from_utf16_lossy(&name)
}

fn read_at(f: &mut File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(&mut buf)?;
    Ok(buf)
}

fn write_at(f: &mut File, offset: u64, data: &[u8]) -> std::io::Result<()> {
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(data)
}

trait BlockDeviceLike {
    fn is_block_device_like(&self) -> bool;
}

impl BlockDeviceLike for std::fs::FileType {
    fn is_block_device_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_block_device(self)
    }
}

/// `BLKPG_RESIZE_PARTITION`: the kernel's partition `pno` of the open disk
/// now spans `start..start+length` bytes. Unlike re-reading the whole
/// table (BLKRRPART), this works while the disk's partitions are mounted.
fn blkpg_resize(disk: &File, pno: u32, start: u64, length: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct BlkpgPartition {
        start: libc::c_longlong,
        length: libc::c_longlong,
        pno: libc::c_int,
        devname: [libc::c_char; 64],
        volname: [libc::c_char; 64],
    }
    #[repr(C)]
    struct BlkpgIoctlArg {
        op: libc::c_int,
        flags: libc::c_int,
        datalen: libc::c_int,
        data: *mut libc::c_void,
    }
    const BLKPG: libc::c_ulong = 0x1269;
    const BLKPG_RESIZE_PARTITION: libc::c_int = 3;
    let mut part = BlkpgPartition {
        start: start as libc::c_longlong,
        length: length as libc::c_longlong,
        pno: pno as libc::c_int,
        devname: [0; 64],
        volname: [0; 64],
    };
    let mut arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: `arg` and the `part` it points to live across the call and
    // have the kernel's `struct blkpg_ioctl_arg` / `blkpg_partition` layout.
    let rc = unsafe { libc::ioctl(disk.as_raw_fd(), BLKPG, &mut arg) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A 40 MiB image like disk.rs writes (sfdisk), then made `grow_mib` bigger.
    fn image(dir: &Path, grow_mib: u64) -> PathBuf {
        let img = dir.join("disk.img");
        let f = File::create(&img).unwrap();
        f.set_len(40 << 20).unwrap();
        let mut sfdisk = Command::new("sfdisk")
            .arg("--quiet")
            .arg(&img)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        sfdisk
            .stdin
            .take()
            .unwrap()
            .write_all(b"label: gpt\nsize=8MiB, name=ESP\nsize=8MiB, name=USR-A\nname=STATE\n")
            .unwrap();
        assert!(sfdisk.wait().unwrap().success());
        f.set_len((40 + grow_mib) << 20).unwrap();
        img
    }

    fn sfdisk_verify(img: &Path) -> String {
        let out = Command::new("sfdisk")
            .arg("--verify")
            .arg(img)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    }

    fn state_size(img: &Path) -> u64 {
        crate::gpt::find(img, "STATE").unwrap().size
    }

    #[test]
    fn grows_state_to_the_end_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path(), 24);
        let before = state_size(&img);
        let got = grow_last(&img, "STATE").unwrap();
        let after = state_size(&img);
        // sfdisk left its alignment gap before the backup table: grown by at least 24 MiB.
        assert!(after >= before + (24 << 20), "{before} → {after}: {got:?}");
        let end = crate::gpt::find(&img, "STATE").unwrap();
        assert_eq!(
            end.offset + end.size,
            (64 << 20) - 33 * SECTOR,
            "ends at the last usable sector"
        );
        let v = sfdisk_verify(&img);
        assert!(
            !v.contains("ERR") && !v.to_lowercase().contains("corrupt"),
            "{v}"
        );
        assert!(v.contains("No errors detected"), "{v}");
        assert_eq!(
            grow_last(&img, "STATE").unwrap(),
            Grown::Already { size: after }
        );
    }

    #[test]
    fn a_torn_primary_is_rebuilt_from_the_new_backup() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path(), 16);
        let grown = grow_last(&img, "STATE").unwrap();
        // What a power loss mid-(2) can leave: primary entries written, header not.
        let mut f = OpenOptions::new().write(true).open(&img).unwrap();
        write_at(&mut f, 2 * SECTOR + 40, &[0xff; 8]).unwrap();
        drop(f);
        let Grown::Grown { to, .. } = grown else {
            panic!("{grown:?}")
        };
        match grow_last(&img, "STATE").unwrap() {
            Grown::Grown { to: again, .. } => assert_eq!(again, to, "rewritten from the backup"),
            other => panic!("the torn primary must be rewritten: {other:?}"),
        }
        assert_eq!(
            grow_last(&img, "STATE").unwrap(),
            Grown::Already { size: to }
        );
        let v = sfdisk_verify(&img);
        assert!(v.contains("No errors detected"), "{v}");
    }

    #[test]
    fn a_last_partition_with_another_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path(), 8);
        let err = grow_last(&img, "USR-A").unwrap_err().to_string();
        assert!(err.contains("STATE") && err.contains("USR-A"), "{err}");
    }
}
