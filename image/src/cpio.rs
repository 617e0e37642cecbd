//! A reproducible `newc` cpio writer (the initramfs format): sorted paths, fixed owner and mtime.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes the union of `trees` (each a host directory and the archive prefix
/// it lands under) as one newc archive. Paths are sorted, owners are root and
/// every mtime is `mtime`, so equal trees give equal bytes. Later trees win
/// on a path clash.
pub fn write_trees(trees: &[(&Path, &str)], mtime: u32, out: &mut impl Write) -> io::Result<()> {
    let mut entries: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (root, prefix) in trees {
        collect(root, root, prefix, &mut entries)?;
    }
    for (ino, (name, src)) in (1u32..).zip(&entries) {
        let meta = std::fs::symlink_metadata(src)?;
        let ft = meta.file_type();
        let perm = meta.permissions().mode() & 0o7777;
        if ft.is_dir() {
            header(out, ino, 0o040000 | perm, 2, mtime, 0, name)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(src)?;
            let target = target.as_os_str().as_encoded_bytes();
            header(out, ino, 0o120000 | 0o777, 1, mtime, target.len(), name)?;
            out.write_all(target)?;
            pad(out, target.len())?;
        } else if ft.is_file() {
            let size = meta.size() as usize;
            header(out, ino, 0o100000 | perm, 1, mtime, size, name)?;
            let mut f = std::fs::File::open(src)?;
            let copied = io::copy(&mut f, out)? as usize;
            if copied != size {
                return Err(io::Error::other(format!(
                    "{} changed while archiving",
                    src.display()
                )));
            }
            pad(out, size)?;
        } else {
            return Err(io::Error::other(format!(
                "{}: only files, directories and symlinks belong in an image",
                src.display()
            )));
        }
    }
    header(out, 0, 0, 1, 0, 0, "TRAILER!!!")?;
    Ok(())
}

fn collect(
    root: &Path,
    dir: &Path,
    prefix: &str,
    entries: &mut BTreeMap<String, PathBuf>,
) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let rel = path.strip_prefix(root).expect("walk stays under root");
        let rel = rel
            .to_str()
            .ok_or_else(|| io::Error::other(format!("{}: non-UTF-8 path", path.display())))?;
        let name = if prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{prefix}/{rel}")
        };
        let is_dir = entry.file_type()?.is_dir();
        entries.insert(name, path.clone());
        if is_dir {
            collect(root, &path, prefix, entries)?;
        }
    }
    if !prefix.is_empty() && dir == root {
        // The prefix directory itself (and its parents) must exist in the archive.
        let mut acc = String::new();
        for part in prefix.split('/') {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            entries
                .entry(acc.clone())
                .or_insert_with(|| root.to_path_buf());
        }
    }
    Ok(())
}

fn header(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: usize,
    name: &str,
) -> io::Result<()> {
    let namesize = name.len() + 1;
    let size =
        u32::try_from(size).map_err(|_| io::Error::other(format!("{name}: larger than 4 GiB")))?;
    write!(
        out,
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{mtime:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
        0, 0, 0, 0, 0, 0, 0
    )?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    pad(out, 110 + namesize)
}

fn pad(out: &mut impl Write, len: usize) -> io::Result<()> {
    let n = (4 - len % 4) % 4;
    out.write_all(&[0u8; 3][..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_round_trips_through_gnu_cpio() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::create_dir_all(a.join("bin")).unwrap();
        std::fs::write(a.join("bin/hello"), b"hello world\n").unwrap();
        std::os::unix::fs::symlink("hello", a.join("bin/hi")).unwrap();
        let b = dir.path().join("b");
        std::fs::create_dir_all(b.join("lib")).unwrap();
        std::fs::write(b.join("lib/x"), b"x").unwrap();
        let mut bytes = Vec::new();
        write_trees(&[(&a, ""), (&b, "usr")], 1_000_000, &mut bytes).unwrap();
        let mut again = Vec::new();
        write_trees(&[(&a, ""), (&b, "usr")], 1_000_000, &mut again).unwrap();
        assert_eq!(bytes, again);

        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-idm", "--quiet"])
            .current_dir(&out)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("cpio (apt-get install cpio)");
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(
            std::fs::read(out.join("bin/hello")).unwrap(),
            b"hello world\n"
        );
        assert_eq!(
            std::fs::read_link(out.join("bin/hi")).unwrap(),
            Path::new("hello")
        );
        assert_eq!(std::fs::read(out.join("usr/lib/x")).unwrap(), b"x");
        let mtime = std::fs::metadata(out.join("usr/lib/x")).unwrap().mtime();
        assert_eq!(mtime, 1_000_000);
    }
}
