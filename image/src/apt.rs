//! The build host's apt as a package source: its indices (through
//! `apt-cache dumpavail`) and `apt-get download`s verified against them and
//! cached by name, version and SHA-256.

use crate::debindex::{self, IndexError, Package};
use crate::depsolve::Index;
use crate::tool::{ToolError, run};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The only architecture herd images are built for.
pub const ARCH: &str = "amd64";

#[derive(Debug, thiserror::Error)]
pub enum AptError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("the apt indices: {0}")]
    Index(#[from] IndexError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "apt-get download {package} {version}: no downloaded file has the index's sha256 {sha256}"
    )]
    Mismatch {
        package: String,
        version: String,
        sha256: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AptError + '_ {
    move |source| AptError::Io {
        path: path.into(),
        source,
    }
}

/// The host's package indices, one candidate per package. `dumpavail`
/// rather than reading `/var/lib/apt/lists/*_Packages` ourselves: the lists
/// are stored compressed (lz4 here) and apt already merges the suites
/// (bookworm, -updates, -security) into one candidate per package.
pub fn host_index() -> Result<Index, AptError> {
    Ok(Index::new(host_packages()?, ARCH))
}

/// Every downloadable package record of the host's indices.
pub fn host_packages() -> Result<Vec<Package>, AptError> {
    let text = run(Command::new("apt-cache").arg("dumpavail"))?;
    Ok(debindex::parse(&String::from_utf8_lossy(&text), ARCH)?)
}

/// Where a package's verified `.deb` lives in the cache. The name carries
/// name, version and (a prefix of) the SHA-256, so a new version or a
/// rebuilt archive file never reuses a stale download.
pub fn cache_path(debs: &Path, p: &Package) -> PathBuf {
    let version = p.version.to_string().replace(':', "%3a");
    debs.join(format!("{}_{}_{}.deb", p.name, version, &p.sha256[..16]))
}

/// Makes sure every package's `.deb` is in `debs` (downloading the missing
/// ones with one `apt-get download`), each checked against the index's
/// SHA-256 before it is renamed into the cache. Returns the paths, in order.
pub fn fetch(debs: &Path, packages: &[&Package]) -> Result<Vec<PathBuf>, AptError> {
    std::fs::create_dir_all(debs).map_err(io(debs))?;
    let missing: Vec<&Package> = packages
        .iter()
        .copied()
        .filter(|p| !cache_path(debs, p).is_file())
        .collect();
    if !missing.is_empty() {
        let partial = unique_partial(debs);
        std::fs::create_dir_all(&partial).map_err(io(&partial))?;
        tracing::info!(count = missing.len(), "downloading packages");
        let result = download_into(&partial, debs, &missing);
        let _ = std::fs::remove_dir_all(&partial);
        result?;
    }
    Ok(packages.iter().map(|p| cache_path(debs, p)).collect())
}

/// A scratch directory under `parent` no other build (process or thread) uses.
pub fn unique_partial(parent: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    parent.join(format!(".partial-{}-{n}", std::process::id()))
}

fn download_into(partial: &Path, debs: &Path, missing: &[&Package]) -> Result<(), AptError> {
    let mut cmd = Command::new("apt-get");
    cmd.args(["download", "-q"]).current_dir(partial);
    for p in missing {
        cmd.arg(format!("{}={}", p.name, p.version));
    }
    run(&mut cmd)?;
    let mut by_hash = std::collections::HashMap::new();
    for entry in std::fs::read_dir(partial).map_err(io(partial))? {
        let path = entry.map_err(io(partial))?.path();
        by_hash.insert(sha256_file(&path)?, path);
    }
    for p in missing {
        let got = by_hash.get(&p.sha256).ok_or_else(|| AptError::Mismatch {
            package: p.name.clone(),
            version: p.version.to_string(),
            sha256: p.sha256.clone(),
        })?;
        let dst = cache_path(debs, p);
        std::fs::rename(got, &dst).map_err(io(&dst))?;
    }
    Ok(())
}

fn sha256_file(path: &Path) -> Result<String, AptError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}
