//! Stage 1: assembles the OS trees on the host — the boot tree (init, busybox,
//! kernel modules, /etc) and the USR tree (herd, its libraries, packages, modules).

use crate::apt::{self, AptError};
use crate::debindex::Package;
use crate::depsolve::{self, SolveError};
use crate::spec::{HerdSpec, KernelSpec, Spec};
use crate::tool::{self, ToolError};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const INIT: &str = include_str!("../assets/init");
const UDHCPC_SCRIPT: &str = include_str!("../assets/udhcpc.script");

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no kernel found: {0}")]
    NoKernel(String),
    #[error("kernel module {module:?} (spec field `modules`): {reason}")]
    Module { module: String, reason: String },
    #[error("file {path} (spec field `files`) does not exist")]
    MissingFile { path: PathBuf },
    #[error("herd binary {path} (spec field `herd.path`): {reason}")]
    Herd { path: PathBuf, reason: String },
    #[error("the image needs busybox: add busybox-static to the spec's `packages`")]
    NoBusybox,
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Apt(#[from] AptError),
    #[error(transparent)]
    Solve(#[from] SolveError),
    #[error("kernel package {package:?} (spec field `kernel.package`): {reason}")]
    KernelPackage { package: String, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError + '_ {
    move |source| RootfsError::Io {
        path: path.into(),
        source,
    }
}

/// The kernel the image boots.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `<root>/lib/modules/<release>`.
    pub modules: PathBuf,
    /// The tree `modules` lives in: `/` for the host's kernel, the unpacked
    /// package in the cache for an apt kernel.
    pub root: PathBuf,
    /// The package it came from (name and version), for an apt kernel.
    pub package: Option<String>,
}

/// Inputs checked up front, before any long work.
#[derive(Debug)]
pub struct Resolved {
    pub kernel: Kernel,
    pub herd: PathBuf,
    /// Module files (relative to the modules dir), dependency order.
    pub module_files: Vec<PathBuf>,
    /// The spec's packages and their dependency closure, sorted by name.
    pub packages: Vec<Package>,
}

pub(crate) fn run(cmd: &mut Command) -> Result<Vec<u8>, RootfsError> {
    Ok(tool::run(cmd)?)
}

/// Checks every input of `spec` exists (kernel, modules, packages and their
/// dependencies, files, herd binary) so a bad spec fails in seconds, not
/// after a long build. An apt kernel is downloaded and unpacked into
/// `cache` here (once per package version): its modules are inputs too.
pub fn resolve(spec: &Spec, cache: &Path) -> Result<Resolved, RootfsError> {
    let needs_index = !spec.packages.is_empty() || matches!(spec.kernel, KernelSpec::Apt { .. });
    let index = if needs_index {
        Some(apt::host_index()?)
    } else {
        None
    };
    let packages: Vec<Package> = match &index {
        Some(index) => depsolve::solve(index, &spec.packages, &spec.exclude)?
            .into_iter()
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    let kernel = match (&spec.kernel, &index) {
        (KernelSpec::Host { version }, _) => host_kernel(version.as_deref())?,
        (KernelSpec::Apt { package }, Some(index)) => apt_kernel(index, package, cache)?,
        (KernelSpec::Apt { .. }, None) => unreachable!("an apt kernel loads the index"),
    };
    let mut module_files = Vec::new();
    for m in &spec.modules {
        let out = Command::new("modprobe")
            .args(["-S", &kernel.release, "--show-depends", m])
            .arg("-d")
            .arg(&kernel.root)
            .output()
            .map_err(|e| RootfsError::Module {
                module: m.clone(),
                reason: format!("running modprobe (apt-get install kmod): {e}"),
            })?;
        if !out.status.success() {
            return Err(RootfsError::Module {
                module: m.clone(),
                reason: format!(
                    "not found for kernel {}: {}",
                    kernel.release,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "insmod /lib/modules/<kver>/kernel/…/x.ko [opts]" or "builtin x".
            if let Some(rest) = line.strip_prefix("insmod ") {
                let file = rest.split_whitespace().next().unwrap_or_default();
                let rel = Path::new(file).strip_prefix(&kernel.modules).map_err(|_| {
                    RootfsError::Module {
                        module: m.clone(),
                        reason: format!("{file} is outside {}", kernel.modules.display()),
                    }
                })?;
                if !module_files.iter().any(|p: &PathBuf| p == rel) {
                    module_files.push(rel.to_path_buf());
                }
            }
        }
    }
    for f in &spec.files {
        if !f.src.is_file() {
            return Err(RootfsError::MissingFile {
                path: f.src.clone(),
            });
        }
    }
    let herd = match &spec.herd {
        HerdSpec::Current => std::env::current_exe().map_err(|e| RootfsError::Herd {
            path: "(self)".into(),
            reason: e.to_string(),
        })?,
        HerdSpec::Path { path } => path.clone(),
    };
    if !herd.is_file() {
        return Err(RootfsError::Herd {
            path: herd,
            reason: "does not exist".into(),
        });
    }
    Ok(Resolved {
        kernel,
        herd,
        module_files,
        packages,
    })
}

/// Follows `package` (a metapackage such as `linux-image-amd64`, or a
/// versioned `linux-image-<release>`) to the package that ships
/// `/boot/vmlinuz-*`, downloads it and unpacks it into the cache under its
/// name, version and hash, with `depmod` run (the package's postinst would).
fn apt_kernel(index: &depsolve::Index, package: &str, cache: &Path) -> Result<Kernel, RootfsError> {
    let bad = |reason: String| RootfsError::KernelPackage {
        package: package.into(),
        reason,
    };
    let meta = index
        .get(package)
        .ok_or_else(|| bad("not in the apt indices".into()))?;
    // The versioned image package: the metapackage's `linux-image-*`
    // dependency, or the package itself when it has none (already versioned).
    let dep = meta
        .depends
        .iter()
        .flat_map(|g| &g.0)
        .find(|r| r.name.starts_with("linux-image-"));
    let real = match dep {
        None => meta,
        Some(dep) => {
            let p = index
                .get(&dep.name)
                .ok_or_else(|| bad(format!("depends on {dep}, which is not in the apt indices")))?;
            if !dep.accepts(&p.version) {
                return Err(bad(format!(
                    "depends on {dep}, but the index has {}",
                    p.version
                )));
            }
            p
        }
    };
    let dir = cache.join("kernels").join(
        apt::cache_path(Path::new(""), real)
            .with_extension("")
            .file_name()
            .expect("a file name"),
    );
    if !dir.join(".complete").is_file() {
        let mut wanted = vec![meta];
        if real.name != meta.name {
            wanted.push(real);
        }
        let debs = apt::fetch(&cache.join("debs"), &wanted)?;
        let tmp = apt::unique_partial(&cache.join("kernels"));
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(&debs[debs.len() - 1])
            .arg(&tmp))?;
        let release = kernel_release(&tmp).map_err(bad)?;
        run(Command::new("depmod").arg("-b").arg(&tmp).arg(&release))?;
        write(&tmp.join(".complete"), &format!("{release}\n"), 0o644)?;
        // The rename publishes the tree with its marker in one step; if a
        // concurrent build published it first, its copy is as good as ours.
        if let Err(e) = std::fs::rename(&tmp, &dir) {
            let _ = std::fs::remove_dir_all(&tmp);
            if !dir.join(".complete").is_file() {
                return Err(io(&dir)(e));
            }
        }
    }
    let release = std::fs::read_to_string(dir.join(".complete"))
        .map_err(io(&dir))?
        .trim()
        .to_string();
    Ok(Kernel {
        vmlinuz: dir.join("boot").join(format!("vmlinuz-{release}")),
        modules: dir.join("lib/modules").join(&release),
        root: dir,
        package: Some(format!("{} {}", real.name, real.version)),
        release,
    })
}

/// The release of the one `boot/vmlinuz-<release>` in an unpacked kernel package.
fn kernel_release(root: &Path) -> Result<String, String> {
    let boot = root.join("boot");
    let mut found = vmlinuz_releases(&boot)
        .map_err(|e| format!("{}: {e} (not a kernel image package?)", boot.display()))?;
    match (found.pop(), found.is_empty()) {
        (Some(r), true) if root.join("lib/modules").join(&r).is_dir() => Ok(r),
        (Some(r), true) => Err(format!("ships vmlinuz-{r} but no lib/modules/{r}")),
        (Some(_), false) => Err("ships more than one vmlinuz".into()),
        (None, _) => Err("ships no boot/vmlinuz-*".into()),
    }
}

/// The kernel releases of the `vmlinuz-<release>` files in `boot`.
fn vmlinuz_releases(boot: &Path) -> std::io::Result<Vec<String>> {
    Ok(std::fs::read_dir(boot)?
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix("vmlinuz-")
                .map(str::to_string)
        })
        .collect())
}

fn host_kernel(version: Option<&str>) -> Result<Kernel, RootfsError> {
    let release = match version {
        Some(v) => v.to_string(),
        None => {
            let mut found = vmlinuz_releases(Path::new("/boot"))
                .map_err(|e| RootfsError::NoKernel(format!("/boot: {e}")))?;
            found.sort_by(|a, b| version_cmp(a, b));
            found.pop().ok_or_else(|| {
                RootfsError::NoKernel(
                    "no /boot/vmlinuz-*: apt-get install linux-image-amd64".into(),
                )
            })?
        }
    };
    let vmlinuz = PathBuf::from(format!("/boot/vmlinuz-{release}"));
    let modules = PathBuf::from(format!("/lib/modules/{release}"));
    if !vmlinuz.is_file() || !modules.join("modules.dep").is_file() {
        return Err(RootfsError::NoKernel(format!(
            "{} or {}/modules.dep missing",
            vmlinuz.display(),
            modules.display()
        )));
    }
    Ok(Kernel {
        release,
        vmlinuz,
        modules,
        root: "/".into(),
        package: None,
    })
}

/// Orders kernel releases by their numeric parts (6.1.0-9 < 6.1.0-10).
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let nums = |s: &str| -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect()
    };
    nums(a).cmp(&nums(b)).then_with(|| a.cmp(b))
}

/// Paths of the two staged trees.
#[derive(Debug)]
pub struct Trees {
    pub boot: PathBuf,
    pub usr: PathBuf,
}

/// Builds the boot and USR trees under `work`. `debs` caches downloaded packages.
pub fn stage(
    spec: &Spec,
    resolved: &Resolved,
    public_key_hex: &str,
    debs: &Path,
    work: &Path,
) -> Result<Trees, RootfsError> {
    let boot = work.join("boot");
    let usr = work.join("usr");
    let pkgs = work.join("pkgs");
    for d in [&boot, &usr, &pkgs] {
        if d.exists() {
            std::fs::remove_dir_all(d).map_err(io(d))?;
        }
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    // Packages: the resolved closure, downloaded once (verified against the
    // index) and unpacked in name order, so overlapping files always end
    // up the same.
    let wanted: Vec<&Package> = resolved.packages.iter().collect();
    for deb in apt::fetch(debs, &wanted)? {
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&pkgs))?;
    }
    // Boot tree: everything needed before /usr is mounted.
    for d in [
        "bin", "sbin", "etc/herd", "usr", "proc", "sys", "dev", "run", "tmp", "var", "state",
        "boot", "root",
    ] {
        mkdir(&boot.join(d))?;
    }
    symlink("usr/lib", &boot.join("lib"))?;
    symlink("usr/lib64", &boot.join("lib64"))?;
    let busybox = ["bin/busybox", "usr/bin/busybox"]
        .iter()
        .map(|p| pkgs.join(p))
        .find(|p| p.is_file())
        .ok_or(RootfsError::NoBusybox)?;
    copy(&busybox, &boot.join("bin/busybox"), 0o755)?;
    let list = run(Command::new(&busybox).arg("--list-full"))?;
    for applet in String::from_utf8_lossy(&list).lines() {
        let (dir, name) = applet.rsplit_once('/').unwrap_or(("bin", applet));
        // `busybox --list` names busybox itself: linking it would overwrite the binary.
        if name == "busybox" || name.is_empty() {
            continue;
        }
        let dir = if dir.ends_with("sbin") { "sbin" } else { "bin" };
        let link = boot.join(dir).join(name);
        if !link.exists() {
            symlink("/bin/busybox", &link)?;
        }
    }
    write(&boot.join("init"), INIT, 0o755)?;
    write(&boot.join("etc/herd/udhcpc.script"), UDHCPC_SCRIPT, 0o755)?;
    write(
        &boot.join("etc/herd/version"),
        &format!("{}\n", spec.version),
        0o644,
    )?;
    write(
        &boot.join("etc/herd/modules"),
        &format!("{}\n", spec.modules.join("\n")),
        0o644,
    )?;
    write(&boot.join("etc/hostname"), "herd\n", 0o644)?;
    write(
        &boot.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n",
        0o644,
    )?;
    write(&boot.join("etc/group"), "root:x:0:\n", 0o644)?;
    write(
        &boot.join("etc/os-release"),
        &format!("NAME=herd\nID=herd\nVERSION_ID={}\n", spec.version),
        0o644,
    )?;
    // Modules go in both trees: the boot tree needs them to reach /usr, USR
    // needs them later (bridge, veth) once it hides the boot tree's /usr.
    for tree in [&boot, &usr] {
        stage_modules(&resolved.kernel, &resolved.module_files, tree)?;
    }
    // USR tree: herd and its libraries, packages' files, spec files, the update key.
    let usr_root = usr.join("usr");
    for d in ["bin", "sbin", "lib", "lib64", "share/herd"] {
        mkdir(&usr_root.join(d))?;
    }
    copy(&resolved.herd, &usr_root.join("bin/herd"), 0o755)?;
    // A debug build carries far more debug info than code; the OS has no
    // use for it, and a netbooted machine holds all of /usr in RAM.
    tool::run(
        Command::new("strip")
            .arg("--strip-debug")
            .arg(usr_root.join("bin/herd")),
    )?;
    for lib in shared_libraries(&resolved.herd)? {
        let rel = lib.strip_prefix("/").expect("ldd prints absolute paths");
        // Merged /usr: /lib/x → /usr/lib/x.
        let rel = rel.strip_prefix("usr").unwrap_or(rel);
        copy(&lib, &usr_root.join(rel), 0o755)?;
    }
    merge_packages(&pkgs, &usr_root)?;
    write(
        &usr_root.join("share/herd/update.pub"),
        &format!("{public_key_hex}\n"),
        0o644,
    )?;
    write(
        &usr_root.join("share/herd/version"),
        &format!("{}\n", spec.version),
        0o644,
    )?;
    for f in &spec.files {
        let rel = f.dst.trim_start_matches('/');
        let dst = if let Some(r) = rel.strip_prefix("usr/") {
            usr_root.join(r)
        } else {
            boot.join(rel)
        };
        copy(&f.src, &dst, f.mode)?;
    }
    std::fs::remove_dir_all(&pkgs).map_err(io(&pkgs))?;
    Ok(Trees {
        boot,
        usr: usr_root,
    })
}

fn stage_modules(kernel: &Kernel, files: &[PathBuf], tree: &Path) -> Result<(), RootfsError> {
    let dst = tree.join("usr/lib/modules").join(&kernel.release);
    mkdir(&dst)?;
    for f in files {
        copy(&kernel.modules.join(f), &dst.join(f), 0o644)?;
    }
    for meta in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        let src = kernel.modules.join(meta);
        if src.is_file() {
            copy(&src, &dst.join(meta), 0o644)?;
        }
    }
    run(Command::new("depmod")
        .arg("-b")
        .arg(tree.join("usr"))
        .arg(&kernel.release))?;
    Ok(())
}

/// The shared libraries (and loader) a dynamically linked binary needs; empty for a static one.
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>, RootfsError> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .map_err(|e| RootfsError::Herd {
            path: bin.into(),
            reason: format!("ldd: {e}"),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success()
        || text.contains("not a dynamic executable")
        || text.contains("statically linked")
    {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        } else if line.contains("not found") {
            return Err(RootfsError::Herd {
                path: bin.into(),
                reason: format!("library missing: {}", line.trim()),
            });
        }
    }
    libs.sort();
    Ok(libs)
}

/// Moves package contents under /usr (merged-usr: /bin → /usr/bin); /etc is dropped
/// because the image's /etc comes from the spec.
fn merge_packages(pkgs: &Path, usr_root: &Path) -> Result<(), RootfsError> {
    for entry in std::fs::read_dir(pkgs).map_err(io(pkgs))? {
        let entry = entry.map_err(io(pkgs))?;
        let name = entry.file_name();
        let target = match name.to_str() {
            Some("usr") => usr_root.to_path_buf(),
            Some("bin" | "sbin" | "lib" | "lib64") => usr_root.join(&name),
            _ => continue,
        };
        copy_tree(&entry.path(), &target)?;
    }
    Ok(())
}

fn copy_tree(src: &Path, dst: &Path) -> Result<(), RootfsError> {
    mkdir(dst)?;
    for entry in std::fs::read_dir(src).map_err(io(src))? {
        let entry = entry.map_err(io(src))?;
        let (s, d) = (entry.path(), dst.join(entry.file_name()));
        let ft = entry.file_type().map_err(io(&s))?;
        if ft.is_dir() {
            copy_tree(&s, &d)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&s).map_err(io(&s))?;
            if !d.exists() {
                std::os::unix::fs::symlink(target, &d).map_err(io(&d))?;
            }
        } else {
            let mode = entry.metadata().map_err(io(&s))?.permissions().mode();
            copy(&s, &d, mode & 0o7777)?;
        }
    }
    Ok(())
}

fn mkdir(p: &Path) -> Result<(), RootfsError> {
    std::fs::create_dir_all(p).map_err(io(p))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).map_err(io(p))
}

fn symlink(target: &str, link: &Path) -> Result<(), RootfsError> {
    std::os::unix::fs::symlink(target, link).map_err(io(link))
}

fn copy(src: &Path, dst: &Path, mode: u32) -> Result<(), RootfsError> {
    if let Some(parent) = dst.parent() {
        mkdir(parent)?;
    }
    std::fs::copy(src, dst).map_err(io(src))?;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode)).map_err(io(dst))
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), RootfsError> {
    if let Some(parent) = path.parent() {
        mkdir(parent)?;
    }
    std::fs::write(path, text).map_err(io(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_sort_numerically() {
        assert_eq!(
            version_cmp("6.1.0-9-amd64", "6.1.0-10-amd64"),
            std::cmp::Ordering::Less
        );
    }

    #[test]
    fn missing_module_and_package_fail_fast_with_names() {
        let cache = std::env::temp_dir().join(format!("herd-rootfs-unit-{}", std::process::id()));
        let mut spec = Spec::default_spec();
        spec.kernel = KernelSpec::Host { version: None };
        spec.modules.push("no_such_module_xyz".into());
        let err = resolve(&spec, &cache).unwrap_err().to_string();
        assert!(err.contains("no_such_module_xyz"), "{err}");
        spec.modules.pop();
        spec.packages.push("no-such-package-herd".into());
        let err = resolve(&spec, &cache).unwrap_err().to_string();
        assert!(err.contains("no-such-package-herd"), "{err}");
        spec.packages.pop();
        spec.exclude.push("busybox-static".into());
        let err = resolve(&spec, &cache).unwrap_err().to_string();
        assert!(
            err.contains("busybox-static") && err.contains("exclude"),
            "{err}"
        );
        assert!(!cache.exists(), "resolving a host kernel writes nothing");
    }
}
