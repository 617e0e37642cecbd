//! The OCI image layout on disk (`oci-layout`, `index.json`,
//! `blobs/sha256/…`) and the documents in it: image config, manifest, index.
//! Fields are declared in a fixed order, so the same image serialises to the
//! same bytes and therefore the same digests.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The annotation that names a manifest's tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid {what}: {source}")]
    Json {
        path: PathBuf,
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("{path}: not an OCI image layout ({reason})")]
    NotLayout { path: PathBuf, reason: String },
    #[error("{dir}: index.json lists {count} images; name the one to use with its tag ({tags})")]
    Ambiguous {
        dir: PathBuf,
        count: usize,
        tags: String,
    },
    #[error("{dir}: index.json has no image tagged {tag:?} (it has: {tags})")]
    NoSuchTag {
        dir: PathBuf,
        tag: String,
        tags: String,
    },
    #[error("{path}: content has digest {actual}, but it is listed as {expected}")]
    Digest {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{digest:?} is not a sha256 digest (sha256:<64 hex>)")]
    BadDigest { digest: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LayoutError + '_ {
    move |source| LayoutError::Io {
        path: path.into(),
        source,
    }
}

/// A reference to a blob: what it is, its digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// The image config (the OCI spec's field names, which Docker's are too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub created: String,
    pub architecture: String,
    pub os: String,
    pub config: RunConfig,
    pub rootfs: RootFs,
    #[serde(default)]
    pub history: Vec<History>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RunConfig {
    #[serde(rename = "Env", default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(rename = "Entrypoint", default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub working_dir: String,
    #[serde(rename = "Labels", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub created: String,
    pub created_by: String,
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a `sha256:` digest, checked.
pub fn digest_hex(digest: &str) -> Result<&str, LayoutError> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(h),
        _ => Err(LayoutError::BadDigest {
            digest: digest.into(),
        }),
    }
}

/// The path of a blob in a layout.
pub fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf, LayoutError> {
    Ok(dir.join("blobs/sha256").join(digest_hex(digest)?))
}

/// Serialises `value` and stores it as a blob; returns its descriptor.
pub fn put_json<T: Serialize>(
    dir: &Path,
    media_type: &str,
    value: &T,
) -> Result<Descriptor, LayoutError> {
    let bytes = serde_json::to_vec(value).expect("image documents serialise");
    let digest = digest_of(&bytes);
    let path = blob_path(dir, &digest)?;
    std::fs::write(&path, &bytes).map_err(io(&path))?;
    Ok(Descriptor {
        media_type: media_type.into(),
        digest,
        size: bytes.len() as u64,
        annotations: BTreeMap::new(),
    })
}

/// Creates the layout's skeleton in `dir` (which must be empty or absent).
pub fn create(dir: &Path) -> Result<(), LayoutError> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(io(&blobs))?;
    let marker = dir.join("oci-layout");
    std::fs::write(&marker, b"{\"imageLayoutVersion\":\"1.0.0\"}").map_err(io(&marker))
}

/// Writes `index.json` naming `manifest` with `tag`.
pub fn write_index(dir: &Path, manifest: &Descriptor, tag: &str) -> Result<Index, LayoutError> {
    let mut m = manifest.clone();
    m.annotations.insert(REF_NAME.into(), tag.into());
    let index = Index {
        schema_version: 2,
        media_type: Some(INDEX_TYPE.into()),
        manifests: vec![m],
    };
    let path = dir.join("index.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&index).expect("the index serialises"),
    )
    .map_err(io(&path))?;
    Ok(index)
}

/// An image read back from a layout.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest_descriptor: Descriptor,
    pub manifest_bytes: Vec<u8>,
    pub manifest: Manifest,
}

/// Reads the image tagged `tag` from the layout in `dir` (or its only
/// image when `tag` is `None`), checking the manifest's digest.
pub fn open(dir: &Path, tag: Option<&str>) -> Result<Image, LayoutError> {
    let marker = dir.join("oci-layout");
    let text = std::fs::read_to_string(&marker).map_err(|e| LayoutError::NotLayout {
        path: dir.into(),
        reason: format!("oci-layout: {e}"),
    })?;
    if !text.contains("imageLayoutVersion") {
        return Err(LayoutError::NotLayout {
            path: dir.into(),
            reason: "oci-layout has no imageLayoutVersion".into(),
        });
    }
    let index: Index = read_json(&dir.join("index.json"), "OCI image index")?;
    let tags = || {
        index
            .manifests
            .iter()
            .map(|m| m.annotations.get(REF_NAME).map_or("(untagged)", |s| s))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen = match tag {
        None if index.manifests.len() == 1 => &index.manifests[0],
        None => {
            return Err(LayoutError::Ambiguous {
                dir: dir.into(),
                count: index.manifests.len(),
                tags: tags(),
            });
        }
        Some(t) => index
            .manifests
            .iter()
            .find(|m| m.annotations.get(REF_NAME).map(String::as_str) == Some(t))
            .or(match index.manifests.as_slice() {
                // One image: the tag it is pushed as may differ from its name here.
                [only] => Some(only),
                _ => None,
            })
            .ok_or_else(|| LayoutError::NoSuchTag {
                dir: dir.into(),
                tag: t.into(),
                tags: tags(),
            })?,
    };
    let path = blob_path(dir, &chosen.digest)?;
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    let actual = digest_of(&bytes);
    if actual != chosen.digest {
        return Err(LayoutError::Digest {
            path,
            expected: chosen.digest.clone(),
            actual,
        });
    }
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|source| LayoutError::Json {
            path: path.clone(),
            what: "OCI image manifest",
            source,
        })?;
    Ok(Image {
        manifest_descriptor: chosen.clone(),
        manifest_bytes: bytes,
        manifest,
    })
}

fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &'static str,
) -> Result<T, LayoutError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&bytes).map_err(|source| LayoutError::Json {
        path: path.into(),
        what,
        source,
    })
}

/// Reads a blob whole and checks it against its descriptor.
pub fn read_blob(dir: &Path, d: &Descriptor) -> Result<Vec<u8>, LayoutError> {
    let path = blob_path(dir, &d.digest)?;
    let mut bytes = Vec::with_capacity(d.size as usize);
    std::fs::File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io(&path))?;
    let actual = digest_of(&bytes);
    if actual != d.digest || bytes.len() as u64 != d.size {
        return Err(LayoutError::Digest {
            path,
            expected: format!("{} ({} bytes)", d.digest, d.size),
            actual: format!("{actual} ({} bytes)", bytes.len()),
        });
    }
    Ok(bytes)
}
