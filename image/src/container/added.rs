//! Files from the host laid into an image (`--add SRC:DEST`, as a
//! Dockerfile's `COPY`): parsed and checked at the edge, placed under the
//! real directories of the package layer (so `/bin/x` lands in `usr/bin`
//! and never replaces merged-/usr's `bin` symlink), and written as the
//! image's second layer, apart from the cached package layer.

use super::tree::{self, Entry, Kind, Listing, Source, Tree};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// One `--add SRC:DEST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// A regular file on the host.
    pub src: PathBuf,
    /// Where it goes in the image, absolute, without `.` or `..`.
    pub dest: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddError {
    #[error("--add {given:?}: expected SRC:DEST (a host file and an absolute path in the image)")]
    Syntax { given: String },
    #[error("--add {given:?}: DEST {reason}")]
    Dest { given: String, reason: &'static str },
    #[error("--add {src}: {reason}")]
    Source { src: PathBuf, reason: String },
    #[error("--add …:{dest}: {reason}")]
    Place { dest: String, reason: String },
}

impl FromStr for Added {
    type Err = AddError;

    fn from_str(given: &str) -> Result<Added, AddError> {
        let (src, dest) = given.rsplit_once(':').ok_or_else(|| AddError::Syntax {
            given: given.into(),
        })?;
        if src.is_empty() {
            return Err(AddError::Syntax {
                given: given.into(),
            });
        }
        let bad = |reason| AddError::Dest {
            given: given.into(),
            reason,
        };
        if !dest.starts_with('/') {
            return Err(bad("must be an absolute path"));
        }
        if dest.ends_with('/') {
            return Err(bad("must name a file, not a directory"));
        }
        if dest
            .split('/')
            .skip(1)
            .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(bad("must not contain empty, `.` or `..` components"));
        }
        Ok(Added {
            src: src.into(),
            dest: dest.into(),
        })
    }
}

/// The files' layer: each file at its destination's real path in `base`
/// (the package layer's listing), with the directories leading to it.
pub fn tree(added: &[Added], base: &Listing) -> Result<Tree, AddError> {
    let mut out = Tree::default();
    for a in added {
        let meta = std::fs::metadata(&a.src).map_err(|e| AddError::Source {
            src: a.src.clone(),
            reason: e.to_string(),
        })?;
        if !meta.is_file() {
            return Err(AddError::Source {
                src: a.src.clone(),
                reason: "is not a regular file".into(),
            });
        }
        let (parent, name) = a.dest.rsplit_once('/').expect("DEST is absolute");
        let dir = real_dir(base, parent).map_err(|reason| AddError::Place {
            dest: a.dest.clone(),
            reason,
        })?;
        let path = if dir.is_empty() {
            name.to_owned()
        } else {
            format!("{dir}/{name}")
        };
        if let Some(Kind::Dir) = base.get(&path) {
            return Err(AddError::Place {
                dest: a.dest.clone(),
                reason: format!("/{path} is a directory in the image"),
            });
        }
        let mut at = String::new();
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            out.entries.entry(at.clone()).or_insert(Entry {
                source: Source::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
            });
        }
        out.entries.insert(
            path,
            Entry {
                source: Source::Disk(a.src.clone()),
                mode: meta.mode() & 0o7777,
                uid: 0,
                gid: 0,
            },
        );
    }
    Ok(out)
}

/// Where directory `dir` (absolute) really is in the image: its longest
/// existing prefix resolved through the image's symlinks, the rest as
/// given. A prefix that is a file is an error.
fn real_dir(base: &Listing, dir: &str) -> Result<String, String> {
    let parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for n in (1..=parts.len()).rev() {
        let prefix = parts[..n].join("/");
        match tree::resolve(base, &prefix) {
            Some((real, Kind::Dir)) => {
                let mut out: Vec<&str> = real.split('/').filter(|p| !p.is_empty()).collect();
                out.extend_from_slice(&parts[n..]);
                return Ok(out.join("/"));
            }
            Some((real, _)) => return Err(format!("{real} is not a directory in the image")),
            None => {}
        }
    }
    Ok(parts.join("/"))
}

/// `base` with the added files, for checking an entrypoint among them.
pub fn merged_listing(base: &Listing, added: &Tree) -> Listing {
    let mut out = base.clone();
    out.extend(added.listing());
    out
}

/// The `created_by` of the files' layer in the image history.
pub fn history(added: &[Added]) -> String {
    let parts: Vec<String> = added
        .iter()
        .map(|a| {
            let name = Path::new(&a.src).file_name().map_or_else(
                || a.src.display().to_string(),
                |n| n.to_string_lossy().into(),
            );
            format!("--add {name}:{}", a.dest)
        })
        .collect();
    format!("herd image container {}", parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Listing {
        let mut l = Listing::new();
        l.insert(
            "bin".into(),
            Kind::Symlink {
                target: "usr/bin".into(),
            },
        );
        l.insert("usr".into(), Kind::Dir);
        l.insert("usr/bin".into(), Kind::Dir);
        l.insert("usr/bin/tool".into(), Kind::File { executable: true });
        l
    }

    #[test]
    fn bad_arguments_are_named() {
        for (given, says) in [
            ("nocolon", "expected SRC:DEST"),
            (":/x", "expected SRC:DEST"),
            ("a:rel/x", "absolute"),
            ("a:/dir/", "not a directory"),
            ("a:/x/../etc/shadow", "`..`"),
            ("a:/x//y", "empty"),
        ] {
            let err = given.parse::<Added>().unwrap_err().to_string();
            assert!(err.contains(given) && err.contains(says), "{given}: {err}");
        }
        let a: Added = "app.py:/srv/app.py".parse().unwrap();
        assert_eq!(a.src, PathBuf::from("app.py"));
        assert_eq!(a.dest, "/srv/app.py");
    }

    #[test]
    fn files_land_under_real_directories_with_their_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("start.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let added = vec![
            Added {
                src: script.clone(),
                dest: "/bin/start".into(),
            },
            Added {
                src: script.clone(),
                dest: "/srv/app/start".into(),
            },
        ];
        let t = tree(&added, &base()).unwrap();
        let paths: Vec<&str> = t.entries.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                "srv",
                "srv/app",
                "srv/app/start",
                "usr",
                "usr/bin",
                "usr/bin/start"
            ]
        );
        assert_eq!(t.entries["usr/bin/start"].mode, 0o755);
        let listing = merged_listing(&base(), &t);
        assert!(matches!(
            tree::resolve(&listing, "/bin/start"),
            Some((_, Kind::File { executable: true }))
        ));
        assert!(
            matches!(listing["bin"], Kind::Symlink { .. }),
            "the symlink stays"
        );
    }

    #[test]
    fn impossible_places_and_sources_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let add = |src: &Path, dest: &str| {
            tree(
                &[Added {
                    src: src.into(),
                    dest: dest.into(),
                }],
                &base(),
            )
            .unwrap_err()
            .to_string()
        };
        assert!(add(&file, "/usr/bin/tool/x").contains("not a directory"));
        assert!(add(&file, "/usr/bin").contains("is a directory"));
        assert!(add(dir.path(), "/x").contains("not a regular file"));
        assert!(add(&dir.path().join("missing"), "/x").contains("missing"));
    }
}
