//! Firstboot install: writes `disk.img` (from a URL or a file) onto a disk, verifies it, reboots.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::manifest::Manifest;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}: only http:// URLs and local files are supported")]
    BadUrl(String),
    #[error(transparent)]
    Http(#[from] herd_http::Error),
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
    Http(String),
    File(PathBuf),
}

impl Source {
    pub fn parse(s: &str) -> Result<Source, InstallError> {
        if s.starts_with("http://") {
            Ok(Source::Http(s.to_owned()))
        } else if s.contains("://") {
            Err(InstallError::BadUrl(s.into()))
        } else {
            Ok(Source::File(s.into()))
        }
    }

    fn sibling(&self, name: &str) -> Source {
        match self {
            Source::Http(url) => {
                let dir = url.rsplit_once('/').map_or(url.as_str(), |(d, _)| d);
                Source::Http(format!("{dir}/{name}"))
            }
            Source::File(p) => Source::File(p.with_file_name(name)),
        }
    }

    fn describe(&self) -> String {
        match self {
            Source::Http(url) => url.clone(),
            Source::File(p) => p.display().to_string(),
        }
    }

    /// The whole (small) file.
    async fn read(&self) -> Result<Vec<u8>, InstallError> {
        match self {
            Source::File(p) => tokio::fs::read(p)
                .await
                .map_err(io(p.display().to_string())),
            Source::Http(url) => Ok(herd_http::Client::new().get(url).await?.to_vec()),
        }
    }

    /// Streams the file into `sink`; returns its length.
    async fn copy_to<W: AsyncWrite + Unpin>(&self, sink: &mut W) -> Result<u64, InstallError> {
        match self {
            Source::File(p) => {
                let mut f = tokio::fs::File::open(p)
                    .await
                    .map_err(io(p.display().to_string()))?;
                tokio::io::copy(&mut f, sink)
                    .await
                    .map_err(io(p.display().to_string()))
            }
            // A disk image takes a while: the timeout bounds only waiting
            // for the answer to start.
            Source::Http(url) => Ok(herd_http::Client::new()
                .with_timeout(Duration::from_secs(60))
                .download(url, 0, sink, |_| {})
                .await?),
        }
    }
}

/// Hashes everything written through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Hashing<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.hash.update(&buf[..n]);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Writes `image` onto `disk`, checks the sha256 of what was read and of what
/// is on the disk afterwards, and returns the number of bytes written.
/// `expected` defaults to `disk.img` in the `manifest.json` beside the image.
pub async fn install(
    image: &Source,
    disk: &Path,
    expected: Option<String>,
) -> Result<u64, InstallError> {
    let expected = match expected {
        Some(e) => e.to_lowercase(),
        None => {
            let no = |reason: String| InstallError::NoHash {
                image: image.describe(),
                reason,
            };
            let text = image
                .sibling("manifest.json")
                .read()
                .await
                .map_err(|e| no(e.to_string()))?;
            let manifest: Manifest =
                serde_json::from_slice(&text).map_err(|e| no(e.to_string()))?;
            manifest
                .artifacts
                .get("disk.img")
                .ok_or_else(|| no("manifest lists no disk.img".into()))?
                .sha256
                .clone()
        }
    };
    let d = disk.display().to_string();
    let out = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(disk)
        .await
        .map_err(io(&d))?;
    let mut sink = Hashing {
        inner: tokio::io::BufWriter::with_capacity(1 << 20, out),
        hash: Sha256::new(),
    };
    let written = image.copy_to(&mut sink).await?;
    sink.inner.flush().await.map_err(io(&d))?;
    sink.inner.get_ref().sync_all().await.map_err(io(&d))?;
    let got = hex::encode(sink.hash.finalize());
    if got != expected {
        return Err(InstallError::Mismatch {
            disk: disk.into(),
            expected,
            actual: got,
        });
    }
    // Read back what the disk holds now: the transfer hash alone does not
    // prove the write.
    let disk_path = disk.to_path_buf();
    let on_disk = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let mut back = std::fs::File::open(&disk_path)?.take(written);
        let mut h = Sha256::new();
        std::io::copy(&mut back, &mut h)?;
        Ok(hex::encode(h.finalize()))
    })
    .await
    .map_err(|e| InstallError::Io {
        what: format!("reading {d} back"),
        source: std::io::Error::other(e),
    })?
    .map_err(io(&d))?;
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
        let s = Source::parse("http://10.0.0.1:8080/images/disk.img").unwrap();
        assert!(matches!(&s, Source::Http(u) if u == "http://10.0.0.1:8080/images/disk.img"));
        assert!(
            matches!(s.sibling("manifest.json"), Source::Http(u) if u == "http://10.0.0.1:8080/images/manifest.json")
        );
        assert!(Source::parse("https://x/disk.img").is_err());
    }

    #[tokio::test]
    async fn install_from_file_checks_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        std::fs::write(&img, vec![5u8; 3 << 20]).unwrap();
        let sha = hex::encode(Sha256::digest(std::fs::read(&img).unwrap()));
        let target = dir.path().join("vda");
        std::fs::write(&target, vec![0u8; 4 << 20]).unwrap();
        assert_eq!(
            install(&Source::File(img.clone()), &target, Some(sha))
                .await
                .unwrap(),
            3 << 20
        );
        let err = install(&Source::File(img), &target, Some("00".repeat(32)))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("not rebooting"), "{err}");
    }
}
