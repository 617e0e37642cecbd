//! Maps a requested TFTP filename to a file under the served root, refusing
//! anything that would escape it (`..`, absolute paths, symlinks out).

use std::path::{Component, Path, PathBuf};

/// Why a requested filename is not served.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("{0:?} contains a `..` component")]
    ParentComponent(String),
    #[error("{0:?} does not exist")]
    NotFound(String),
    #[error("{0:?} resolves outside the TFTP root")]
    OutsideRoot(String),
    #[error("{0:?} is not a regular file")]
    NotAFile(String),
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The served directory, canonicalized once at startup.
#[derive(Debug, Clone)]
pub struct Root {
    canonical: PathBuf,
}

impl Root {
    /// Opens `dir` as the TFTP root (it must exist).
    pub fn new(dir: &Path) -> std::io::Result<Root> {
        Ok(Root {
            canonical: dir.canonicalize()?,
        })
    }

    pub fn path(&self) -> &Path {
        &self.canonical
    }

    /// Resolves `requested` to a regular file inside the root. Blocking
    /// (filesystem calls): run it off the async runtime.
    ///
    /// A leading `/` is taken relative to the root, as tftpd-hpa's `-s` does,
    /// because PXE ROMs commonly send `/pxelinux.0`; `\` separators (sent by
    /// Windows-era firmware) are treated as `/`.
    pub fn resolve(&self, requested: &str) -> Result<PathBuf, PathError> {
        let normalized = requested.replace('\\', "/");
        let relative = normalized.trim_start_matches('/');
        let rel = Path::new(relative);
        for c in rel.components() {
            match c {
                Component::Normal(_) | Component::CurDir => {}
                Component::ParentDir => {
                    return Err(PathError::ParentComponent(requested.to_owned()));
                }
                // Cannot happen after trimming the leading slashes, but a
                // prefix or root here would mean escaping: refuse.
                Component::RootDir | Component::Prefix(_) => {
                    return Err(PathError::OutsideRoot(requested.to_owned()));
                }
            }
        }
        let joined = self.canonical.join(rel);
        let real = joined.canonicalize().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => PathError::NotFound(requested.to_owned()),
            _ => PathError::Io {
                path: requested.to_owned(),
                source: e,
            },
        })?;
        // Symlinks are followed by canonicalize: the target must still be inside.
        if !real.starts_with(&self.canonical) {
            return Err(PathError::OutsideRoot(requested.to_owned()));
        }
        let meta = std::fs::metadata(&real).map_err(|e| PathError::Io {
            path: requested.to_owned(),
            source: e,
        })?;
        if !meta.is_file() {
            return Err(PathError::NotAFile(requested.to_owned()));
        }
        Ok(real)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_inside_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let root_dir = dir.path().join("root");
        std::fs::create_dir_all(root_dir.join("sub")).unwrap();
        std::fs::write(root_dir.join("sub/a.bin"), b"a").unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root_dir.join("link-out")).unwrap();
        std::os::unix::fs::symlink("sub/a.bin", root_dir.join("link-in")).unwrap();
        let root = Root::new(&root_dir).unwrap();

        assert!(root.resolve("sub/a.bin").unwrap().ends_with("sub/a.bin"));
        assert!(root.resolve("/sub/a.bin").is_ok());
        assert!(root.resolve("sub\\a.bin").is_ok());
        assert!(root.resolve("link-in").is_ok());
        assert!(matches!(
            root.resolve("../secret"),
            Err(PathError::ParentComponent(_))
        ));
        assert!(matches!(
            root.resolve("sub/../../secret"),
            Err(PathError::ParentComponent(_))
        ));
        assert!(matches!(
            root.resolve("..\\secret"),
            Err(PathError::ParentComponent(_))
        ));
        assert!(matches!(
            root.resolve("link-out"),
            Err(PathError::OutsideRoot(_))
        ));
        assert!(matches!(
            root.resolve("/etc/passwd"),
            Err(PathError::NotFound(_))
        ));
        assert!(matches!(root.resolve("sub"), Err(PathError::NotAFile(_))));
    }
}
