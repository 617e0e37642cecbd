//! The PKI files a member keeps in `<data-dir>/pki/`: `ca.crt`, `ca.key`
//! (members that may admit others), `member.crt`, `member.key`. Keys are
//! written with mode 0600, every file atomically (temp, fsync, rename,
//! fsync of the directory).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::PkiError;
use crate::ca::{CertKey, ClusterCa};

/// What a member has: the CA certificate (and maybe its key) and its own
/// certificate and key.
#[derive(Debug, Clone)]
pub struct MemberPki {
    pub ca_cert: String,
    /// Present on members that sign certificates for joining machines.
    pub ca_key: Option<String>,
    pub member: CertKey,
}

impl MemberPki {
    pub fn ca(&self) -> Option<ClusterCa> {
        self.ca_key.as_ref().map(|key| ClusterCa {
            pair: CertKey {
                cert_pem: self.ca_cert.clone(),
                key_pem: key.clone(),
            },
        })
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically with `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp: PathBuf = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(io(path))
}

impl MemberPki {
    /// Whether `dir` holds a member's PKI.
    pub fn exists(dir: &Path) -> bool {
        dir.join("member.crt").is_file()
    }

    pub fn load(dir: &Path) -> Result<MemberPki, PkiError> {
        let ca_key = dir.join("ca.key");
        Ok(MemberPki {
            ca_cert: read(&dir.join("ca.crt"))?,
            ca_key: if ca_key.is_file() {
                Some(read(&ca_key)?)
            } else {
                None
            },
            member: CertKey {
                cert_pem: read(&dir.join("member.crt"))?,
                key_pem: read(&dir.join("member.key"))?,
            },
        })
    }

    /// Writes the files; the member's certificate last, so a crash midway
    /// leaves no half set that [`MemberPki::exists`] would accept.
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        write_atomic(&dir.join("ca.crt"), self.ca_cert.as_bytes(), 0o644)?;
        if let Some(key) = &self.ca_key {
            write_atomic(&dir.join("ca.key"), key.as_bytes(), 0o600)?;
        }
        write_atomic(
            &dir.join("member.key"),
            self.member.key_pem.as_bytes(),
            0o600,
        )?;
        write_atomic(
            &dir.join("member.crt"),
            self.member.cert_pem.as_bytes(),
            0o644,
        )
    }
}
