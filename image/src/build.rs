//! The pipeline: rootfs → USR filesystem → initramfs → disk image → update payload,
//! each stage cached under the hash of its inputs, with a progress line per stage.

use crate::disk::{self, DiskInputs};
use crate::manifest::{ArtifactInfo, Manifest};
use crate::payload;
use crate::rootfs::{self, run};
use crate::spec::Spec;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Used when SOURCE_DATE_EPOCH is unset: any fixed value keeps builds reproducible.
pub const DEFAULT_EPOCH: u64 = 1_700_000_000;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Rootfs(#[from] rootfs::RootfsError),
    #[error(transparent)]
    Disk(#[from] disk::DiskError),
    #[error(transparent)]
    Payload(#[from] payload::PayloadError),
    #[error("SOURCE_DATE_EPOCH={0:?} is not a number of seconds")]
    BadEpoch(String),
    #[error("output {0}: exists and is not a directory")]
    BadOut(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.into(),
        source,
    }
}

pub struct BuildOptions {
    pub spec: Spec,
    pub out: PathBuf,
    /// None: a development key kept in the cache (generated once).
    pub signing_key: Option<PathBuf>,
    pub cache: PathBuf,
    pub progress: bool,
}

#[derive(Debug, Clone)]
pub struct StageReport {
    pub name: &'static str,
    pub cached: bool,
    pub elapsed: Duration,
}

#[derive(Debug)]
pub struct Summary {
    pub out: PathBuf,
    pub manifest: Manifest,
    pub stages: Vec<StageReport>,
    pub elapsed: Duration,
    /// Set when no `--signing-key` was given.
    pub generated_key: Option<PathBuf>,
}

/// The default cache: `$HERD_IMAGE_CACHE`, else `$XDG_CACHE_HOME/herd/image`, else `~/.cache/herd/image`.
pub fn default_cache() -> PathBuf {
    if let Some(p) = std::env::var_os("HERD_IMAGE_CACHE") {
        return p.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("herd/image")
}

struct Stages {
    multi: MultiProgress,
    reports: Vec<StageReport>,
}

impl Stages {
    /// Runs `make` into a temp path unless `cache/<name>-<key>` exists, then returns the cached path.
    fn cached(
        &mut self,
        cache: &Path,
        name: &'static str,
        key: &str,
        make: impl FnOnce(&Path) -> Result<(), BuildError>,
    ) -> Result<PathBuf, BuildError> {
        let path = cache.join(format!("{name}-{}", &key[..16]));
        let started = Instant::now();
        let bar = self.bar(name);
        let cached = path.exists();
        if cached {
            // Touch on use, so pruning by age keeps what builds still use.
            let _ = std::fs::File::open(&path)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        } else {
            let tmp = cache.join(format!(".{name}-{}.tmp-{}", &key[..16], std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_dir_all(&tmp);
            make(&tmp)?;
            if let Err(e) = std::fs::rename(&tmp, &path) {
                // Another build filled the same entry meanwhile: equal keys, equal bytes.
                if !path.exists() {
                    return Err(io(&path)(e));
                }
                let _ = std::fs::remove_file(&tmp);
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
        self.finish(bar, name, cached, started);
        Ok(path)
    }

    fn bar(&self, name: &str) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix:>10} {msg}").expect("valid template"),
        );
        bar.set_prefix(name.to_string());
        bar.set_message("building…");
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    fn finish(&mut self, bar: ProgressBar, name: &'static str, cached: bool, started: Instant) {
        let elapsed = started.elapsed();
        bar.finish_with_message(if cached {
            "cached".to_string()
        } else {
            format!("built in {:.1} s", elapsed.as_secs_f64())
        });
        self.reports.push(StageReport {
            name,
            cached,
            elapsed,
        });
    }
}

fn key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Hash of a directory tree: sorted paths, types, modes, contents, link targets.
pub fn tree_hash(root: &Path) -> Result<String, BuildError> {
    fn walk(root: &Path, dir: &Path, h: &mut Sha256) -> Result<(), BuildError> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        names.sort();
        for p in names {
            let meta = std::fs::symlink_metadata(&p).map_err(io(&p))?;
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            h.update(rel.as_bytes());
            h.update([0]);
            h.update(meta.mode().to_le_bytes());
            if meta.is_dir() {
                walk(root, &p, h)?;
            } else if meta.file_type().is_symlink() {
                h.update(
                    std::fs::read_link(&p)
                        .map_err(io(&p))?
                        .as_os_str()
                        .as_encoded_bytes(),
                );
            } else {
                let mut f = std::fs::File::open(&p).map_err(io(&p))?;
                h.update(meta.len().to_le_bytes());
                std::io::copy(&mut f, h).map_err(io(&p))?;
            }
        }
        Ok(())
    }
    let mut h = Sha256::new();
    walk(root, root, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// `SOURCE_DATE_EPOCH`, else [`DEFAULT_EPOCH`]: the one time every artifact carries.
pub fn epoch() -> Result<u64, BuildError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse().map_err(|_| BuildError::BadEpoch(v)),
        Err(_) => Ok(DEFAULT_EPOCH),
    }
}

pub fn build(opts: &BuildOptions) -> Result<Summary, BuildError> {
    let started = Instant::now();
    let spec = &opts.spec;
    let epoch = epoch()?;
    if opts.out.exists() && !opts.out.is_dir() {
        return Err(BuildError::BadOut(opts.out.clone()));
    }
    // Everything that can be wrong with the inputs fails here, in seconds.
    let resolved = rootfs::resolve(spec, &opts.cache)?;
    std::fs::create_dir_all(&opts.cache).map_err(io(&opts.cache))?;
    let mut generated_key = None;
    let signing = match &opts.signing_key {
        Some(p) => payload::read_signing_key(p)?,
        None => {
            let p = opts.cache.join("dev-signing.key");
            if p.exists() {
                payload::read_signing_key(&p)?
            } else {
                payload::generate_signing_key(&p)?
            }
        }
    };
    if opts.signing_key.is_none() {
        generated_key = Some(opts.cache.join("dev-signing.key"));
    }
    let public_hex = hex::encode(signing.verifying_key().as_bytes());
    let mut stages = Stages {
        multi: MultiProgress::with_draw_target(if opts.progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        }),
        reports: Vec::new(),
    };

    // Stage 1: the trees are restaged every time (seconds) and hashed; the
    // hashes key every later stage, so only what changed is rebuilt.
    let t = Instant::now();
    let bar = stages.bar("rootfs");
    let work = opts.cache.join(format!(".work-{}", std::process::id()));
    let trees = rootfs::stage(
        spec,
        &resolved,
        &public_hex,
        &opts.cache.join("debs"),
        &work,
    )?;
    let boot_hash = tree_hash(&trees.boot)?;
    let usr_hash = tree_hash(&trees.usr)?;
    stages.finish(bar, "rootfs", false, t);
    let epoch_s = epoch.to_string();

    let usr_img = stages.cached(
        &opts.cache,
        "usr.img",
        &key(&["usr.img", &usr_hash, &epoch_s]),
        |tmp| {
            run(Command::new("mksquashfs")
                .arg(&trees.usr)
                .arg(tmp)
                .args([
                    "-noappend",
                    "-quiet",
                    "-no-progress",
                    "-comp",
                    "xz",
                    "-all-root",
                    "-no-xattrs",
                ])
                .args(["-mkfs-time", &epoch_s, "-all-time", &epoch_s]))?;
            Ok(())
        },
    )?;
    let cpio = |trees_: &[(&Path, &str)], tmp: &Path| -> Result<(), BuildError> {
        let f = std::fs::File::create(tmp).map_err(io(tmp))?;
        let mut w = std::io::BufWriter::new(f);
        crate::cpio::write_trees(trees_, epoch as u32, &mut w).map_err(io(tmp))?;
        let f = w.into_inner().map_err(|e| io(tmp)(e.into_error()))?;
        f.sync_all().map_err(io(tmp))
    };
    let initrd_key = key(&["initrd", &boot_hash, &epoch_s]);
    let initrd = stages.cached(&opts.cache, "initrd", &initrd_key, |tmp| {
        cpio(&[(&trees.boot, "")], tmp)
    })?;
    let initramfs = stages.cached(
        &opts.cache,
        "initramfs",
        &key(&["initramfs", &boot_hash, &usr_hash, &epoch_s]),
        |tmp| cpio(&[(&trees.boot, ""), (&trees.usr, "usr")], tmp),
    )?;
    std::fs::remove_dir_all(&work).map_err(io(&work))?;

    let (_, vmlinuz_digest) = payload::sha256_file(&resolved.kernel.vmlinuz)?;
    let vmlinuz_hex = hex::encode(vmlinuz_digest);
    let usr_name = usr_img
        .file_name()
        .expect("file")
        .to_string_lossy()
        .into_owned();
    let initrd_name = initrd
        .file_name()
        .expect("file")
        .to_string_lossy()
        .into_owned();
    let p = &spec.partitions;
    let sizes = format!("{}/{}/{}", p.esp_mib, p.usr_mib, p.state_mib);
    let disk_key = key(&[
        "disk",
        &vmlinuz_hex,
        &initrd_name,
        &usr_name,
        &spec.version,
        &spec.cmdline,
        &sizes,
        &epoch_s,
    ]);
    let inputs = DiskInputs {
        vmlinuz: &resolved.kernel.vmlinuz,
        initrd: &initrd,
        usr_img: &usr_img,
        version: &spec.version,
        cmdline: &spec.cmdline,
        esp_mib: p.esp_mib,
        usr_mib: p.usr_mib,
        state_mib: p.state_mib,
        seed: &disk_key,
        epoch,
    };
    disk::check_sizes(&inputs)?;
    let disk_work = opts
        .cache
        .join(format!(".disk-work-{}", std::process::id()));
    let disk_img = stages.cached(&opts.cache, "disk.img", &disk_key, |tmp| {
        disk::build(&inputs, &disk_work, tmp)?;
        Ok(())
    })?;
    let _ = std::fs::remove_dir_all(&disk_work);

    let payload_key = key(&[
        "payload",
        &vmlinuz_hex,
        &initrd_name,
        &usr_name,
        &spec.version,
        &public_hex,
    ]);
    // The payload stage's output is a directory: the payload and its signature are one unit.
    let payload_dir = stages.cached(&opts.cache, "payload", &payload_key, |tmp| {
        let _ = std::fs::remove_dir_all(tmp);
        std::fs::create_dir_all(tmp).map_err(io(tmp))?;
        let members: [(&str, &Path); 3] = [
            ("vmlinuz", &resolved.kernel.vmlinuz),
            ("initrd", &initrd),
            ("usr.img", &usr_img),
        ];
        payload::write(
            &spec.version,
            &members,
            &signing,
            &tmp.join("update.payload"),
            &tmp.join("update.payload.sig"),
        )?;
        Ok(())
    })?;
    let payload_path = payload_dir.join("update.payload");
    let payload_sig = payload_dir.join("update.payload.sig");

    // Assemble the output in a temp dir beside it and rename at the end, so
    // no half-written artifact ever sits under the real name.
    let parent = opts
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let name = opts
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let staging = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    let sources: [(&str, &Path); 6] = [
        ("vmlinuz", &resolved.kernel.vmlinuz),
        ("initramfs", &initramfs),
        ("disk.img", &disk_img),
        ("usr.img", &usr_img),
        ("update.payload", &payload_path),
        ("update.payload.sig", &payload_sig),
    ];
    let mut artifacts = BTreeMap::new();
    for (name, src) in sources {
        let dst = staging.join(name);
        std::fs::copy(src, &dst).map_err(io(&dst))?;
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o644)).map_err(io(&dst))?;
        let (size, digest) = payload::sha256_file(&dst)?;
        artifacts.insert(
            name.to_string(),
            ArtifactInfo {
                size,
                sha256: hex::encode(digest),
            },
        );
    }
    let manifest = Manifest {
        version: spec.version.clone(),
        kernel: resolved.kernel.release.clone(),
        kernel_package: resolved.kernel.package.clone(),
        packages: resolved
            .packages
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect(),
        public_key: public_hex,
        artifacts,
    };
    let mpath = staging.join("manifest.json");
    std::fs::write(
        &mpath,
        serde_json::to_string_pretty(&manifest).expect("manifest serialises") + "\n",
    )
    .map_err(io(&mpath))?;
    for entry in std::fs::read_dir(&staging).map_err(io(&staging))? {
        let p = entry.map_err(io(&staging))?.path();
        std::fs::File::open(&p)
            .and_then(|f| f.sync_all())
            .map_err(io(&p))?;
    }
    if opts.out.exists() {
        std::fs::remove_dir_all(&opts.out).map_err(io(&opts.out))?;
    }
    std::fs::rename(&staging, &opts.out).map_err(io(&opts.out))?;
    Ok(Summary {
        out: opts.out.clone(),
        manifest,
        stages: stages.reports,
        elapsed: started.elapsed(),
        generated_key,
    })
}
