//! Fetching an offer's files onto STATE, resumably: bytes go to
//! `<name>.part` (fsync'd), a restart continues from its length with an
//! HTTP Range request, and only a file whose size and SHA-256 are the
//! offer's is renamed to its real name.

use std::path::{Path, PathBuf};

use herd_omaha::Cause;
use sha2::{Digest, Sha256};

use crate::local::FileSpec;

/// Why a file could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// Worth retrying later: the network or the server.
    #[error(transparent)]
    Http(#[from] herd_http::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{name}: got {got} bytes, the offer says {size}")]
    Size { name: String, got: u64, size: u64 },
    #[error(
        "{name}: sha256 {actual}, the offer says {expected}: the file was modified in transit or on the server"
    )]
    Hash {
        name: String,
        expected: String,
        actual: String,
    },
}

impl DownloadError {
    /// The cause to report when giving up on the version.
    pub fn cause(&self) -> Cause {
        match self {
            DownloadError::Http(_) | DownloadError::Io { .. } => Cause::Download,
            DownloadError::Size { .. } | DownloadError::Hash { .. } => Cause::HashMismatch,
        }
    }

    /// Whether trying again could succeed (the bytes so far are kept).
    pub fn is_transient(&self) -> bool {
        match self {
            DownloadError::Http(e) => !matches!(
                e,
                herd_http::Error::Status { status, .. } if status.is_client_error()
            ),
            DownloadError::Io { .. } => true,
            // A short body: the connection broke; the rest comes next time.
            DownloadError::Size { got, size, .. } => got < size,
            DownloadError::Hash { .. } => false,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// SHA-256 and length of a file (on a blocking thread).
async fn sha256(path: &Path) -> Result<(u64, String), DownloadError> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<(u64, String)> {
        let mut f = std::fs::File::open(&p)?;
        let mut h = Sha256::new();
        let n = std::io::copy(&mut f, &mut h)?;
        Ok((n, hex::encode(h.finalize())))
    })
    .await
    .expect("hashing does not panic")
    .map_err(io(path))
}

/// Makes `dir/<spec.name>` the file the offer describes, fetching from
/// `url` what is missing. Returns the path and how many bytes this call
/// fetched (0: it was already there).
pub async fn fetch(
    http: &herd_http::Client,
    url: &str,
    spec: &FileSpec,
    dir: &Path,
) -> Result<(PathBuf, u64), DownloadError> {
    tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
    let done = dir.join(&spec.name);
    if let Ok(meta) = tokio::fs::metadata(&done).await
        && meta.len() == spec.size
        && sha256(&done).await?.1 == spec.sha256
    {
        return Ok((done, 0));
    }
    let part = dir.join(format!("{}.part", spec.name));
    let mut offset = tokio::fs::metadata(&part).await.map_or(0, |m| m.len());
    if offset > spec.size {
        tokio::fs::remove_file(&part).await.map_err(io(&part))?;
        offset = 0;
    }
    let mut fetched = 0;
    if offset < spec.size {
        let mut out = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)
            .await
            .map_err(io(&part))?;
        let result = http.download(url, offset, &mut out, |_| {}).await;
        // Whatever arrived is kept for the next attempt.
        out.sync_all().await.map_err(io(&part))?;
        fetched = result?;
    }
    let (got, actual) = sha256(&part).await?;
    if got != spec.size {
        return Err(DownloadError::Size {
            name: spec.name.clone(),
            got,
            size: spec.size,
        });
    }
    if actual != spec.sha256 {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(DownloadError::Hash {
            name: spec.name.clone(),
            expected: spec.sha256.clone(),
            actual,
        });
    }
    tokio::fs::rename(&part, &done).await.map_err(io(&done))?;
    if let Ok(d) = tokio::fs::File::open(dir).await {
        let _ = d.sync_all().await;
    }
    Ok((done, fetched))
}
