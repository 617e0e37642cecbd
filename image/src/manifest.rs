//! `manifest.json` (version, sizes, sha256 of every artifact) and `herd image verify`.

use crate::payload::{self, PayloadError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const ARTIFACTS: [&str; 6] = [
    "vmlinuz",
    "initramfs",
    "disk.img",
    "usr.img",
    "update.payload",
    "update.payload.sig",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: String,
    pub kernel: String,
    /// The Debian package the kernel came from (`name version`), for an apt kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_package: Option<String>,
    /// Every Debian package unpacked into the image (`name version`), the
    /// spec's and their dependency closure, sorted.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Hex ed25519 key that signs `update.payload` (also baked into the image).
    pub public_key: String,
    pub artifacts: BTreeMap<String, ArtifactInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArtifactInfo {
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a herd manifest: {reason}")]
    BadManifest { path: PathBuf, reason: String },
    #[error(
        "{name}: sha256 {actual} ({size} bytes) does not match the manifest's {expected}: the file was modified"
    )]
    Mismatch {
        name: String,
        expected: String,
        actual: String,
        size: u64,
    },
    #[error("{name}: listed in the manifest but missing from {dir}")]
    Missing { name: String, dir: PathBuf },
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Manifest, VerifyError> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|source| VerifyError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| VerifyError::BadManifest {
            path,
            reason: e.to_string(),
        })
    }
}

/// Checks every artifact's sha256 and the payload signature (with
/// `public_key`, or the manifest's key when `None`).
pub fn verify(dir: &Path, public_key: Option<&str>) -> Result<Manifest, VerifyError> {
    let manifest = Manifest::read(dir)?;
    // The payload first: a tampered payload is the failure that matters most, and its error is the clearest.
    let key = payload::parse_public_key(public_key.unwrap_or(&manifest.public_key))?;
    payload::verify(
        &dir.join("update.payload"),
        &dir.join("update.payload.sig"),
        &key,
    )?;
    for (name, info) in &manifest.artifacts {
        let path = dir.join(name);
        if !path.exists() {
            return Err(VerifyError::Missing {
                name: name.clone(),
                dir: dir.into(),
            });
        }
        let (size, digest) = payload::sha256_file(&path)?;
        let actual = hex::encode(digest);
        if actual != info.sha256 || size != info.size {
            return Err(VerifyError::Mismatch {
                name: name.clone(),
                expected: info.sha256.clone(),
                actual,
                size,
            });
        }
    }
    Ok(manifest)
}
