//! Writes a [`Tree`] as one reproducible gzip'd tar layer: entries in path
//! order, every time the image's epoch, owners by number only, no gzip
//! name or time, so the same tree always gives the same digest.

use super::tree::{Source, Tree};
use flate2::Compression;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// The two digests a layer has: of the tar (the config's `diff_id`) and of
/// the gzip'd tar (the blob's name), and the blob's size.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerDigests {
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// `sha256:<hex>` of the gzip'd tar.
    pub digest: String,
    pub size: u64,
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn hashing<W>(inner: W) -> Hashing<W> {
    Hashing {
        inner,
        hash: Sha256::new(),
        len: 0,
    }
}

/// Writes `tree` as a gzip'd tar to `out`, every entry dated `epoch`.
pub fn write(tree: &Tree, epoch: u64, out: &Path) -> std::io::Result<LayerDigests> {
    let file = std::fs::File::create(out)?;
    let blob = hashing(std::io::BufWriter::new(file));
    // Level 6 (gzip's default); the header carries no name and mtime 0.
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(blob, Compression::new(6));
    let mut tar = tar::Builder::new(hashing(gz));
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);
    for (path, entry) in &tree.entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(epoch);
        header.set_uid(entry.uid);
        header.set_gid(entry.gid);
        header.set_mode(entry.mode);
        match &entry.source {
            Source::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                tar.append_data(&mut header, format!("{path}/"), std::io::empty())?;
            }
            Source::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                tar.append_link(&mut header, path, target)?;
            }
            Source::File(bytes) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(bytes.len() as u64);
                tar.append_data(&mut header, path, bytes.as_slice())?;
            }
            Source::Disk(src) => {
                let f = std::fs::File::open(src)?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(f.metadata()?.len());
                tar.append_data(&mut header, path, f)?;
            }
        }
    }
    let tar_writer = tar.into_inner()?;
    let diff_id = hex::encode(tar_writer.hash.finalize());
    let blob = tar_writer.inner.finish()?;
    let digest = hex::encode(blob.hash.finalize());
    let size = blob.len;
    let file = blob.inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(LayerDigests {
        diff_id: format!("sha256:{diff_id}"),
        digest: format!("sha256:{digest}"),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::tree::Entry;

    fn tree() -> Tree {
        let mut t = Tree::default();
        let e = |source, mode| Entry {
            source,
            mode,
            uid: 0,
            gid: 0,
        };
        t.entries
            .insert("bin".into(), e(Source::Symlink("usr/bin".into()), 0o777));
        t.entries.insert("usr".into(), e(Source::Dir, 0o755));
        t.entries.insert("usr/bin".into(), e(Source::Dir, 0o755));
        let long = format!("usr/bin/{}", "x".repeat(150));
        t.entries
            .insert(long, e(Source::File(b"#!/bin/sh\n".to_vec()), 0o4755));
        t
    }

    #[test]
    fn same_tree_same_digests_and_the_tar_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(&tree(), 1_700_000_000, &dir.path().join("a")).unwrap();
        let b = write(&tree(), 1_700_000_000, &dir.path().join("b")).unwrap();
        assert_eq!(a, b);
        let c = write(&tree(), 1_700_000_001, &dir.path().join("c")).unwrap();
        assert_ne!(a.diff_id, c.diff_id, "the epoch is part of the layer");
        let bytes = std::fs::read(dir.path().join("a")).unwrap();
        assert_eq!(a.size, bytes.len() as u64);
        assert_eq!(
            a.digest,
            format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
        );
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
        let got: Vec<(String, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().mode().unwrap(),
                    e.header().mtime().unwrap(),
                )
            })
            .collect();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].0, "bin");
        assert!(got[3].0.ends_with(&"x".repeat(150)), "long names survive");
        assert_eq!(got[3].1, 0o4755, "setuid survives");
        assert!(got.iter().all(|g| g.2 == 1_700_000_000));
    }
}
