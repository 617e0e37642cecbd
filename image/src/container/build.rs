//! `herd image container`: a recipe's packages resolved and fetched by the
//! OS pipeline's own resolver and cache, unpacked into one reproducible
//! layer (cached under the packages' names, versions and hashes), the
//! added host files in a second layer, the entrypoint checked against the
//! image's files, and an OCI layout written.

use super::added::{self, AddError};
use super::layer::{self, LayerDigests};
use super::layout::{self, Descriptor, ImageConfig, LayoutError, Manifest, RootFs, RunConfig};
use super::recipe::Recipe;
use super::tree::{self, Kind, Listing, Tree};
use crate::apt::{self, AptError};
use crate::debindex::Package;
use crate::depsolve::{self, SolveError};
use crate::tool::{self, ToolError};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// Bumped when the layer's layout changes, so old cache entries are not reused.
const LAYER_FORMAT: &str = "container-layer-v1";

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("output {path}: {reason}")]
    BadOut { path: PathBuf, reason: String },
    #[error(transparent)]
    Apt(#[from] AptError),
    #[error(transparent)]
    Solve(#[from] SolveError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Add(#[from] AddError),
    #[error("--entrypoint {command:?}: {reason}")]
    Entrypoint { command: String, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ContainerError + '_ {
    move |source| ContainerError::Io {
        path: path.into(),
        source,
    }
}

/// What was built.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Built {
    pub out: PathBuf,
    pub tag: String,
    /// The manifest's digest: the image's identity in a registry.
    pub manifest: String,
    pub config: String,
    pub layer: LayerDigests,
    /// The added files' layer, when the recipe adds any.
    pub files_layer: Option<LayerDigests>,
    /// Whether the layer came from the cache.
    pub cached: bool,
    /// `name version` of every package in the image, sorted.
    pub packages: Vec<String>,
    #[serde(with = "secs")]
    pub elapsed: Duration,
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64((d.as_secs_f64() * 10.0).round() / 10.0)
    }
}

/// Builds `recipe` into an OCI layout at `out`, stamped with `epoch`.
pub fn build(
    recipe: &Recipe,
    out: &Path,
    cache: &Path,
    epoch: u64,
) -> Result<Built, ContainerError> {
    let started = Instant::now();
    let staging = staging_dir(out)?;
    let result = stage(recipe, cache, epoch, &staging);
    let (packages, digests, cached, written) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(io(out))?;
    }
    std::fs::rename(&staging, out).map_err(io(out))?;
    Ok(Built {
        out: out.into(),
        tag: recipe.tag.clone(),
        manifest: written.digest,
        config: written.config,
        layer: digests,
        files_layer: written.files_layer,
        cached,
        packages: packages
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect(),
        elapsed: started.elapsed(),
    })
}

type Staged = (Vec<Package>, LayerDigests, bool, Written);

/// Everything but the final rename: resolve, layer, check, write the layout into `staging`.
fn stage(
    recipe: &Recipe,
    cache: &Path,
    epoch: u64,
    staging: &Path,
) -> Result<Staged, ContainerError> {
    // Bad packages fail here, before any download.
    let index = apt::host_index()?;
    let packages: Vec<Package> = depsolve::solve(&index, &recipe.packages, &recipe.exclude)?
        .into_iter()
        .cloned()
        .collect();
    let (layer_dir, cached) = cached_layer(&packages, cache, epoch)?;
    let digests: LayerDigests = read_json(&layer_dir.join("layer.json"))?;
    let listing: Listing = read_json(&layer_dir.join("listing.json"))?;
    let files = added::tree(&recipe.files, &listing)?;
    check_entrypoint(recipe, &added::merged_listing(&listing, &files))?;
    let layers = Layers {
        packages: (&layer_dir, &digests),
        files: (!recipe.files.is_empty()).then_some(&files),
    };
    let written = write_layout(recipe, &packages, layers, epoch, staging)?;
    Ok((packages, digests, cached, written))
}

/// A fresh directory beside `out` that is renamed onto it at the end, so
/// no half-written layout ever sits under the real name; making it is also
/// the check that `out` can be written at all.
fn staging_dir(out: &Path) -> Result<PathBuf, ContainerError> {
    let bad = |reason: String| ContainerError::BadOut {
        path: out.into(),
        reason,
    };
    if out.exists() && !out.is_dir() {
        return Err(bad("exists and is not a directory".into()));
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .ok_or_else(|| bad("has no file name".into()))?
        .to_string_lossy();
    std::fs::create_dir_all(parent)
        .map_err(|e| bad(format!("cannot create {}: {e}", parent.display())))?;
    let staging = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir(&staging)
        .map_err(|e| bad(format!("cannot write in {}: {e}", parent.display())))?;
    Ok(staging)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ContainerError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| ContainerError::Io {
        path: path.into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// The cache key of a layer: exactly what goes into it.
fn layer_key(packages: &[Package], epoch: u64) -> String {
    let mut h = Sha256::new();
    h.update(LAYER_FORMAT);
    h.update(epoch.to_le_bytes());
    for p in packages {
        h.update(format!("\n{} {} {}", p.name, p.version, p.sha256));
    }
    hex::encode(h.finalize())
}

/// The layer of `packages` in the cache (`layer.tar.gz`, `layer.json`,
/// `listing.json`), made on a miss; returns its directory and whether it was cached.
fn cached_layer(
    packages: &[Package],
    cache: &Path,
    epoch: u64,
) -> Result<(PathBuf, bool), ContainerError> {
    let key = layer_key(packages, epoch);
    let dir = cache.join(format!("container-layer-{}", &key[..16]));
    if dir.join("layer.json").is_file() {
        return Ok((dir, true));
    }
    std::fs::create_dir_all(cache).map_err(io(cache))?;
    let wanted: Vec<&Package> = packages.iter().collect();
    let debs = apt::fetch(&cache.join("debs"), &wanted)?;
    let work = apt::unique_partial(cache);
    let result = (|| {
        let root = work.join("root");
        let tmp = work.join("layer");
        for d in [&root, &tmp] {
            std::fs::create_dir_all(d).map_err(io(d))?;
        }
        // Name order, as the OS image does: overlapping files end up the same.
        for deb in &debs {
            tool::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
        }
        let tree = Tree::from_unpacked(&root).map_err(io(&root))?;
        let layer_path = tmp.join("layer.tar.gz");
        let digests = layer::write(&tree, epoch, &layer_path).map_err(io(&layer_path))?;
        for (name, value) in [
            ("listing.json", serde_json::to_vec(&tree.listing())),
            ("layer.json", serde_json::to_vec(&digests)),
        ] {
            let p = tmp.join(name);
            std::fs::write(&p, value.expect("serialises")).map_err(io(&p))?;
        }
        // The rename publishes layer and metadata at once; a concurrent
        // build that got there first made the same bytes.
        if let Err(e) = std::fs::rename(&tmp, &dir)
            && !dir.join("layer.json").is_file()
        {
            return Err(io(&dir)(e));
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&work);
    result?;
    Ok((dir, false))
}

/// The entrypoint's program must be in the image and executable: an
/// absolute path as given, or a bare name found on the recipe's `PATH`.
pub fn check_entrypoint(recipe: &Recipe, listing: &Listing) -> Result<(), ContainerError> {
    let Some(command) = recipe.entrypoint.first() else {
        return Ok(());
    };
    let fail = |reason: String| ContainerError::Entrypoint {
        command: command.clone(),
        reason,
    };
    let candidates: Vec<String> = if command.contains('/') {
        if !command.starts_with('/') {
            return Err(fail(
                "a path must be absolute (or give a bare name found on PATH)".into(),
            ));
        }
        vec![command.clone()]
    } else {
        recipe
            .path()
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| format!("{}/{command}", d.trim_end_matches('/')))
            .collect()
    };
    for c in &candidates {
        match tree::resolve(listing, c) {
            Some((_, Kind::File { executable: true })) => return Ok(()),
            Some((real, Kind::File { executable: false })) if command.contains('/') => {
                return Err(fail(format!("{real} is not executable")));
            }
            Some((real, Kind::Dir)) if command.contains('/') => {
                return Err(fail(format!("{real} is a directory")));
            }
            _ => {}
        }
    }
    Err(fail(if command.contains('/') {
        "no such file in the image (its packages do not ship it)".into()
    } else {
        format!("not found on the image's PATH {}", recipe.path())
    }))
}

struct Written {
    digest: String,
    config: String,
    files_layer: Option<LayerDigests>,
}

/// The image's layers: the cached packages' (its directory and digests)
/// and the added files', if any.
struct Layers<'a> {
    packages: (&'a Path, &'a LayerDigests),
    files: Option<&'a Tree>,
}

fn write_layout(
    recipe: &Recipe,
    packages: &[Package],
    layers: Layers<'_>,
    epoch: u64,
    dir: &Path,
) -> Result<Written, ContainerError> {
    layout::create(dir)?;
    let (layer_dir, digests) = layers.packages;
    let blob = layout::blob_path(dir, &digests.digest)?;
    let src = layer_dir.join("layer.tar.gz");
    std::fs::copy(&src, &blob).map_err(io(&src))?;
    let created =
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(epoch)).to_string();
    let names: Vec<&str> = recipe.packages.iter().map(String::as_str).collect();
    let mut all = vec![(
        digests.clone(),
        format!("herd image container --packages {}", names.join(",")),
    )];
    if let Some(files) = layers.files {
        // Written beside the blobs, then named by its digest.
        let tmp = dir.join("files-layer.tmp");
        let d = layer::write(files, epoch, &tmp).map_err(io(&tmp))?;
        let blob = layout::blob_path(dir, &d.digest)?;
        std::fs::rename(&tmp, &blob).map_err(io(&blob))?;
        all.push((d, added::history(&recipe.files)));
    }
    let config = ImageConfig {
        created: created.clone(),
        architecture: apt::ARCH.into(),
        os: "linux".into(),
        config: RunConfig {
            env: recipe.env_list(),
            entrypoint: recipe.entrypoint.clone(),
            cmd: recipe.cmd.clone(),
            working_dir: recipe.workdir.clone().unwrap_or_default(),
            labels: [(
                "org.herd.packages".to_string(),
                packages
                    .iter()
                    .map(|p| format!("{}={}", p.name, p.version))
                    .collect::<Vec<_>>()
                    .join(" "),
            )]
            .into(),
        },
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: all.iter().map(|(d, _)| d.diff_id.clone()).collect(),
        },
        history: all
            .iter()
            .map(|(_, by)| layout::History {
                created: created.clone(),
                created_by: by.clone(),
            })
            .collect(),
    };
    let config_d = layout::put_json(dir, layout::CONFIG_TYPE, &config)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: layout::MANIFEST_TYPE.into(),
        config: config_d.clone(),
        layers: all
            .iter()
            .map(|(d, _)| Descriptor {
                media_type: layout::LAYER_TYPE.into(),
                digest: d.digest.clone(),
                size: d.size,
                annotations: Default::default(),
            })
            .collect(),
    };
    let manifest_d = layout::put_json(dir, layout::MANIFEST_TYPE, &manifest)?;
    layout::write_index(dir, &manifest_d, &recipe.tag)?;
    Ok(Written {
        digest: manifest_d.digest,
        config: config_d.digest,
        files_layer: all.into_iter().nth(1).map(|(d, _)| d),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing() -> Listing {
        let mut t = Tree::default();
        let e = |source, mode| tree::Entry {
            source,
            mode,
            uid: 0,
            gid: 0,
        };
        t.entries.insert(
            "bin".into(),
            e(tree::Source::Symlink("usr/bin".into()), 0o777),
        );
        t.entries.insert("usr".into(), e(tree::Source::Dir, 0o755));
        t.entries
            .insert("usr/bin".into(), e(tree::Source::Dir, 0o755));
        t.entries
            .insert("usr/bin/tool".into(), e(tree::Source::File(vec![]), 0o755));
        t.entries
            .insert("usr/bin/data".into(), e(tree::Source::File(vec![]), 0o644));
        t.listing()
    }

    fn recipe(entrypoint: &str) -> Recipe {
        Recipe::new(
            vec!["x".into()],
            vec![],
            vec![entrypoint.into()],
            vec![],
            &[],
            None,
            "1".into(),
        )
        .unwrap()
    }

    #[test]
    fn entrypoints_are_checked_against_the_image() {
        let l = listing();
        for ok in ["/bin/tool", "tool", "/usr/bin/tool"] {
            check_entrypoint(&recipe(ok), &l).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, says) in [
            ("/bin/data", "not executable"),
            ("/usr/bin", "is a directory"),
            ("/bin/nope", "no such file"),
            ("nope", "not found on the image's PATH"),
            ("bin/tool", "must be absolute"),
        ] {
            let err = check_entrypoint(&recipe(bad), &l).unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn unwritable_output_is_refused_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let err = staging_dir(&file).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
        let err = staging_dir(&file.join("out")).unwrap_err().to_string();
        assert!(err.contains(&file.display().to_string()), "{err}");
    }
}
