//! A container's root filesystem as a sorted map of paths: unpacked Debian
//! packages laid out merged-/usr (as bookworm's debootstrap does), plus the
//! few files every image needs, and path lookups that follow the image's own
//! symlinks (for checking an entrypoint without running anything).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Top-level directories that merged-/usr turns into symlinks into `usr/`.
const MERGED: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Files every image gets unless a package ships its own.
const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// Where an entry's bytes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A file or directory on the host (an unpacked package).
    Disk(PathBuf),
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

/// One path of the image.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub source: Source,
    /// Permission bits (with setuid/setgid/sticky).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

/// What a path is, as far as entrypoint checks care: kept in the layer cache
/// so a cached layer is checked without unpacking anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Kind {
    Dir,
    File { executable: bool },
    Symlink { target: String },
}

/// Paths (relative, no leading `/`) to what they are; sorted, so parents precede children.
pub type Listing = BTreeMap<String, Kind>;

/// The image's tree: relative paths (no leading `/`) in tar order.
#[derive(Debug, Default)]
pub struct Tree {
    pub entries: BTreeMap<String, Entry>,
}

impl Tree {
    /// Reads the unpacked packages under `root` (each `dpkg-deb -x`'d into
    /// it) and lays them out merged-/usr: `bin/x` becomes `usr/bin/x` and
    /// `bin` a symlink to `usr/bin`. Of two files landing on one path the
    /// one a package put under `usr/` wins, so the result never depends on
    /// directory read order.
    pub fn from_unpacked(root: &Path) -> std::io::Result<Tree> {
        let mut tree = Tree::default();
        let mut moved = BTreeMap::new();
        walk(root, root, &mut |rel, path, meta| {
            let first = rel.split('/').next().unwrap_or_default();
            let entry = Entry {
                source: if meta.file_type().is_symlink() {
                    Source::Symlink(std::fs::read_link(path)?.to_string_lossy().into_owned())
                } else if meta.is_dir() {
                    Source::Dir
                } else {
                    Source::Disk(path.to_path_buf())
                },
                mode: meta.mode() & 0o7777,
                uid: meta.uid().into(),
                gid: meta.gid().into(),
            };
            if MERGED.contains(&first) {
                moved.insert(format!("usr/{rel}"), entry);
            } else if meta.is_file() || meta.is_dir() || meta.file_type().is_symlink() {
                tree.entries.insert(rel.to_string(), entry);
            }
            Ok(())
        })?;
        for (path, entry) in moved {
            tree.entries.entry(path).or_insert(entry);
        }
        for dir in MERGED {
            let target = format!("usr/{dir}");
            if tree.entries.contains_key(&target) || matches!(dir, "bin" | "sbin" | "lib") {
                tree.dir(&target, 0o755);
                tree.entries.insert(dir.into(), symlink(&target));
            }
        }
        for (dir, mode) in [
            ("etc", 0o755),
            ("root", 0o700),
            ("tmp", 0o1777),
            ("var/tmp", 0o1777),
        ] {
            tree.dir(dir, mode);
        }
        for (path, text) in [("etc/passwd", PASSWD), ("etc/group", GROUP)] {
            tree.entries.entry(path.into()).or_insert(Entry {
                source: Source::File(text.as_bytes().to_vec()),
                mode: 0o644,
                uid: 0,
                gid: 0,
            });
        }
        Ok(tree)
    }

    /// Adds a directory (and its parents) unless the path exists.
    fn dir(&mut self, path: &str, mode: u32) {
        let mut at = String::new();
        for part in path.split('/') {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            self.entries.entry(at.clone()).or_insert(Entry {
                source: Source::Dir,
                mode: if at == path { mode } else { 0o755 },
                uid: 0,
                gid: 0,
            });
        }
    }

    /// What each path is, for [`resolve`].
    pub fn listing(&self) -> Listing {
        self.entries
            .iter()
            .map(|(path, e)| {
                let kind = match &e.source {
                    Source::Dir => Kind::Dir,
                    Source::Symlink(t) => Kind::Symlink { target: t.clone() },
                    Source::Disk(_) | Source::File(_) => Kind::File {
                        executable: e.mode & 0o111 != 0,
                    },
                };
                (path.clone(), kind)
            })
            .collect()
    }
}

fn symlink(target: &str) -> Entry {
    Entry {
        source: Source::Symlink(target.into()),
        mode: 0o777,
        uid: 0,
        gid: 0,
    }
}

fn walk(
    root: &Path,
    dir: &Path,
    f: &mut impl FnMut(&str, &Path, &std::fs::Metadata) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for path in names {
        let meta = std::fs::symlink_metadata(&path)?;
        let rel = path
            .strip_prefix(root)
            .expect("walk stays under its root")
            .to_string_lossy()
            .into_owned();
        f(&rel, &path, &meta)?;
        if meta.is_dir() {
            walk(root, &path, f)?;
        }
    }
    Ok(())
}

/// Resolves an absolute path inside the image, following the image's
/// symlinks (never the host's); `None` when it does not exist or loops.
pub fn resolve<'a>(listing: &'a Listing, path: &str) -> Option<(String, &'a Kind)> {
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut at: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                at.pop();
                continue;
            }
            _ => {}
        }
        at.push(part);
        let joined = at.join("/");
        match listing.get(&joined)? {
            Kind::Symlink { target } => {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                at.pop();
                if target.starts_with('/') {
                    at.clear();
                }
                pending.extend(
                    target
                        .split('/')
                        .filter(|p| !p.is_empty())
                        .rev()
                        .map(str::to_string),
                );
            }
            Kind::File { .. } if !pending.is_empty() => return None,
            _ => {}
        }
    }
    let joined = at.join("/");
    let kind = listing.get(&joined)?;
    Some((format!("/{joined}"), kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(items: &[(&str, Kind)]) -> Listing {
        items
            .iter()
            .map(|(p, k)| (p.to_string(), k.clone()))
            .collect()
    }

    #[test]
    fn resolves_through_merged_usr_and_relative_links() {
        let l = listing(&[
            (
                "bin",
                Kind::Symlink {
                    target: "usr/bin".into(),
                },
            ),
            ("usr", Kind::Dir),
            ("usr/bin", Kind::Dir),
            ("usr/bin/busybox", Kind::File { executable: true }),
            (
                "usr/bin/sh",
                Kind::Symlink {
                    target: "../bin/./busybox".into(),
                },
            ),
            (
                "usr/bin/loop",
                Kind::Symlink {
                    target: "/bin/loop".into(),
                },
            ),
        ]);
        let (path, kind) = resolve(&l, "/bin/sh").unwrap();
        assert_eq!(path, "/usr/bin/busybox");
        assert_eq!(kind, &Kind::File { executable: true });
        assert!(resolve(&l, "/bin/loop").is_none(), "a loop ends");
        assert!(
            resolve(&l, "/bin/busybox/x").is_none(),
            "a file has no children"
        );
        assert!(resolve(&l, "/sbin/busybox").is_none());
    }

    #[test]
    fn unpacked_packages_are_laid_out_merged_usr() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("bin/busybox"), "old").unwrap();
        std::fs::write(root.join("usr/bin/busybox"), "usr wins").unwrap();
        std::fs::write(root.join("bin/only"), "x").unwrap();
        std::fs::write(root.join("etc/passwd"), "mine\n").unwrap();
        let tree = Tree::from_unpacked(root).unwrap();
        let e = &tree.entries;
        assert_eq!(
            e["usr/bin/busybox"].source,
            Source::Disk(root.join("usr/bin/busybox"))
        );
        assert_eq!(
            e["usr/bin/only"].source,
            Source::Disk(root.join("bin/only"))
        );
        assert_eq!(e["bin"].source, Source::Symlink("usr/bin".into()));
        assert_eq!(
            e["etc/passwd"].source,
            Source::Disk(root.join("etc/passwd"))
        );
        assert!(matches!(e["etc/group"].source, Source::File(_)));
        assert_eq!(e["tmp"].mode, 0o1777);
        assert!(!e.contains_key("lib64"), "no lib64 link without usr/lib64");
        let keys: Vec<&String> = e.keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }
}
