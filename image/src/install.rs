//! Firstboot install: writes `disk.img` (from a URL or a file) onto a disk, verifies it, reboots.

use crate::manifest::Manifest;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}: only http:// URLs and local files are supported")]
    BadUrl(String),
    #[error("GET {url}: {status}")]
    Http { url: String, status: String },
    #[error("no sha256 given and no usable manifest.json beside {image}: {reason}")]
    NoHash { image: String, reason: String },
    #[error("{disk}: written image has sha256 {actual}, expected {expected}: not rebooting")]
    Mismatch {
        disk: PathBuf,
        expected: String,
        actual: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> InstallError {
    let what = what.into();
    move |source| InstallError::Io { what, source }
}

/// Where the image comes from.
#[derive(Debug, Clone)]
pub enum Source {
    Http {
        host: String,
        port: u16,
        path: String,
    },
    File(PathBuf),
}

impl Source {
    pub fn parse(s: &str) -> Result<Source, InstallError> {
        if let Some(rest) = s.strip_prefix("http://") {
            let (authority, path) = rest
                .split_once('/')
                .map(|(a, p)| (a, format!("/{p}")))
                .unwrap_or((rest, "/".into()));
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse().map_err(|_| InstallError::BadUrl(s.into()))?,
                ),
                None => (authority.to_string(), 80),
            };
            if host.is_empty() {
                return Err(InstallError::BadUrl(s.into()));
            }
            Ok(Source::Http { host, port, path })
        } else if s.contains("://") {
            Err(InstallError::BadUrl(s.into()))
        } else {
            Ok(Source::File(s.into()))
        }
    }

    fn sibling(&self, name: &str) -> Source {
        match self {
            Source::Http { host, port, path } => {
                let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                Source::Http {
                    host: host.clone(),
                    port: *port,
                    path: format!("{dir}/{name}"),
                }
            }
            Source::File(p) => Source::File(p.with_file_name(name)),
        }
    }

    fn describe(&self) -> String {
        match self {
            Source::Http { host, port, path } => format!("http://{host}:{port}{path}"),
            Source::File(p) => p.display().to_string(),
        }
    }

    /// Opens the source for reading (HTTP/1.0 GET: the body ends at EOF).
    fn open(&self) -> Result<Box<dyn Read>, InstallError> {
        match self {
            Source::File(p) => Ok(Box::new(
                std::fs::File::open(p).map_err(io(p.display().to_string()))?,
            )),
            Source::Http { host, port, path } => {
                let url = self.describe();
                let mut s = std::net::TcpStream::connect((host.as_str(), *port))
                    .map_err(io(format!("connecting to {url}")))?;
                s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
                    .map_err(io(&url))?;
                write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").map_err(io(&url))?;
                let mut r = BufReader::new(s);
                let mut status = String::new();
                r.read_line(&mut status).map_err(io(&url))?;
                if status.split_whitespace().nth(1) != Some("200") {
                    return Err(InstallError::Http {
                        url,
                        status: status.trim().into(),
                    });
                }
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).map_err(io(&url))? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                Ok(Box::new(r))
            }
        }
    }
}

/// Writes `image` onto `disk`, checks the sha256 of what was read and of what
/// is on the disk afterwards, and returns the number of bytes written.
/// `expected` defaults to `disk.img` in the `manifest.json` beside the image.
pub fn install(image: &Source, disk: &Path, expected: Option<String>) -> Result<u64, InstallError> {
    let expected = match expected {
        Some(e) => e.to_lowercase(),
        None => {
            let m = image.sibling("manifest.json");
            let no = |reason: String| InstallError::NoHash {
                image: image.describe(),
                reason,
            };
            let mut text = String::new();
            m.open()
                .map_err(|e| no(e.to_string()))?
                .read_to_string(&mut text)
                .map_err(|e| no(e.to_string()))?;
            let manifest: Manifest = serde_json::from_str(&text).map_err(|e| no(e.to_string()))?;
            manifest
                .artifacts
                .get("disk.img")
                .ok_or_else(|| no("manifest lists no disk.img".into()))?
                .sha256
                .clone()
        }
    };
    let mut src = image.open()?;
    let d = disk.display().to_string();
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(disk)
        .map_err(io(&d))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(io(image.describe()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io(&d))?;
        written += n as u64;
    }
    out.sync_all().map_err(io(&d))?;
    let got = hex::encode(h.finalize());
    if got != expected {
        return Err(InstallError::Mismatch {
            disk: disk.into(),
            expected,
            actual: got,
        });
    }
    // Read back what the disk holds now: the transfer hash alone does not prove the write.
    let mut back = std::fs::File::open(disk).map_err(io(&d))?.take(written);
    let mut h = Sha256::new();
    std::io::copy(&mut back, &mut h).map_err(io(&d))?;
    let on_disk = hex::encode(h.finalize());
    if on_disk != expected {
        return Err(InstallError::Mismatch {
            disk: disk.into(),
            expected,
            actual: on_disk,
        });
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        match Source::parse("http://10.0.0.1:8080/images/disk.img").unwrap() {
            Source::Http { host, port, path } => assert_eq!(
                (host.as_str(), port, path.as_str()),
                ("10.0.0.1", 8080, "/images/disk.img")
            ),
            s => panic!("{s:?}"),
        }
        assert!(Source::parse("https://x/disk.img").is_err());
    }

    #[test]
    fn install_from_file_checks_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        std::fs::write(&img, vec![5u8; 3 << 20]).unwrap();
        let sha = hex::encode(Sha256::digest(std::fs::read(&img).unwrap()));
        let target = dir.path().join("vda");
        std::fs::write(&target, vec![0u8; 4 << 20]).unwrap();
        assert_eq!(
            install(&Source::File(img.clone()), &target, Some(sha)).unwrap(),
            3 << 20
        );
        let err = install(&Source::File(img), &target, Some("00".repeat(32)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not rebooting"), "{err}");
    }
}
