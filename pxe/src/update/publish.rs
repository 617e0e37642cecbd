//! Publishing a release: the output of `herd image build` (its
//! `manifest.json`, `update.payload` and `update.payload.sig`) is checked
//! whole — the payload and signature against the manifest's sizes and
//! hashes, the signature against the manifest's key, the payload's own
//! version against the manifest's — then admitted into a group (no
//! silent overwrite, no key change, no unasked downgrade) and installed
//! under `releases/<version>/`.

use std::path::{Path, PathBuf};

use herd_image::manifest::{Manifest, VerifyError};
use herd_image::payload::{self, PayloadError};
use herd_omaha::Version;

use super::rollout::{PAYLOAD, SIGNATURE};
use super::state::{FileInfo, Release, StateDir, StateError, UpdatesState, sync_dir};

/// The files a release is made of.
pub const FILES: [&str; 3] = ["manifest.json", PAYLOAD, SIGNATURE];

/// Why a release was refused; the group is as it was.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{dir}: no {file} (publish the output directory of `herd image build`)")]
    Missing { dir: PathBuf, file: &'static str },
    #[error(transparent)]
    Manifest(#[from] VerifyError),
    #[error("manifest.json does not list {0}")]
    NotInManifest(&'static str),
    #[error(
        "{file}: {size} bytes with sha256 {actual}, but manifest.json says {expected_size} bytes with sha256 {expected}: the file was modified or truncated"
    )]
    Mismatch {
        file: &'static str,
        size: u64,
        actual: String,
        expected_size: u64,
        expected: String,
    },
    #[error("the payload does not verify: {0}")]
    Payload(#[from] PayloadError),
    #[error("manifest.json says version {manifest}, the payload itself says {payload}")]
    VersionMismatch { manifest: String, payload: String },
    #[error("version: {0}")]
    Version(#[from] herd_omaha::version::VersionError),
    #[error(
        "version {0} is already published with different contents: publish it under a new version"
    )]
    Exists(String),
    #[error(
        "group {group:?} takes releases signed by {current}; this one is signed by {new} (machines would refuse it)"
    )]
    KeyChanged {
        group: String,
        current: String,
        new: String,
    },
    #[error(
        "{version} is older than group {group:?}'s release {current}: pass --allow-downgrade to publish it anyway"
    )]
    Downgrade {
        group: String,
        version: String,
        current: String,
    },
    #[error("group name {0:?}: use 1-64 characters a-z, 0-9, '-', '_' or '.'")]
    BadGroup(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A release directory that checked out.
#[derive(Debug, Clone)]
pub struct Checked {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub version: Version,
    pub payload: FileInfo,
    pub signature: FileInfo,
}

pub fn check_group_name(group: &str) -> Result<(), PublishError> {
    let ok = !group.is_empty()
        && group.len() <= 64
        && group
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && group != "."
        && group != "..";
    if ok {
        Ok(())
    } else {
        Err(PublishError::BadGroup(group.to_owned()))
    }
}

/// Checks a release directory (blocking: hashes the payload).
pub fn verify(dir: &Path) -> Result<Checked, PublishError> {
    for file in FILES {
        if !dir.join(file).is_file() {
            return Err(PublishError::Missing {
                dir: dir.to_path_buf(),
                file,
            });
        }
    }
    let manifest = Manifest::read(dir)?;
    let mut infos = Vec::new();
    for file in [PAYLOAD, SIGNATURE] {
        let listed = manifest
            .artifacts
            .get(file)
            .ok_or(PublishError::NotInManifest(file))?;
        let (size, digest) = payload::sha256_file(&dir.join(file))?;
        let actual = hex::encode(digest);
        if size != listed.size || actual != listed.sha256 {
            return Err(PublishError::Mismatch {
                file,
                size,
                actual,
                expected_size: listed.size,
                expected: listed.sha256.clone(),
            });
        }
        infos.push(FileInfo {
            size,
            sha256: actual,
        });
    }
    let key = payload::parse_public_key(&manifest.public_key)?;
    let verified = payload::verify(&dir.join(PAYLOAD), &dir.join(SIGNATURE), &key)?;
    if verified.header.version != manifest.version {
        return Err(PublishError::VersionMismatch {
            manifest: manifest.version.clone(),
            payload: verified.header.version,
        });
    }
    let version: Version = manifest.version.parse()?;
    let signature = infos.pop().expect("two files");
    let payload = infos.pop().expect("two files");
    Ok(Checked {
        dir: dir.to_path_buf(),
        manifest,
        version,
        payload,
        signature,
    })
}

/// Whether `checked` may go into `group`; the release record if so.
pub fn admit(
    state: &UpdatesState,
    checked: &Checked,
    group: &str,
    allow_downgrade: bool,
    now: u64,
) -> Result<Release, PublishError> {
    if let Some(existing) = state.releases.get(checked.version.as_str())
        && (existing.payload != checked.payload || existing.signature != checked.signature)
    {
        return Err(PublishError::Exists(checked.version.to_string()));
    }
    if let Some(current) = state.groups.get(group).and_then(|g| g.release.clone()) {
        if let Some(r) = state.releases.get(current.as_str())
            && r.public_key != checked.manifest.public_key
        {
            return Err(PublishError::KeyChanged {
                group: group.to_owned(),
                current: r.public_key.clone(),
                new: checked.manifest.public_key.clone(),
            });
        }
        if checked.version < current && !allow_downgrade {
            return Err(PublishError::Downgrade {
                group: group.to_owned(),
                version: checked.version.to_string(),
                current: current.to_string(),
            });
        }
    }
    Ok(state
        .releases
        .get(checked.version.as_str())
        .cloned()
        .unwrap_or_else(|| Release {
            version: checked.version.clone(),
            payload: checked.payload.clone(),
            signature: checked.signature.clone(),
            public_key: checked.manifest.public_key.clone(),
            kernel: checked.manifest.kernel.clone(),
            published_at: now,
        }))
}

/// Puts the release's files under `releases/<version>/` (blocking): moved
/// out of an upload, copied from anywhere else; assembled beside, fsync'd,
/// renamed. An already installed version is left as it is.
pub fn install(dir: &StateDir, from: &Path, version: &Version) -> Result<(), PublishError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PublishError::Io { path, source }
    };
    let target = dir.release_dir(version);
    if target.exists() {
        return Ok(());
    }
    let parent = target.parent().expect("under releases/");
    let tmp = parent.join(format!(".{version}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let moving = from.starts_with(dir.uploads());
    for file in FILES {
        let (src, dst) = (from.join(file), tmp.join(file));
        if moving {
            std::fs::rename(&src, &dst).map_err(io(&src))?;
        } else {
            std::fs::copy(&src, &dst).map_err(io(&src))?;
        }
        std::fs::File::open(&dst)
            .and_then(|f| f.sync_all())
            .map_err(io(&dst))?;
    }
    sync_dir(&tmp)?;
    std::fs::rename(&tmp, &target).map_err(io(&target))?;
    sync_dir(parent)?;
    Ok(())
}
