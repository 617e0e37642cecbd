//! Dependency resolution against the build host's real apt indices.

use herd_image::{apt, depsolve};

fn names(pkgs: &[&herd_image::debindex::Package]) -> Vec<String> {
    pkgs.iter().map(|p| p.name.clone()).collect()
}

/// What apt itself installs for `packages` on an empty system (no Recommends, as herd).
fn apt_closure(packages: &[&str]) -> Vec<String> {
    // `--print-uris` leaves out what the archive cache already holds: a
    // machine where `scripts/deps` just installed docker.io keeps its debs
    // there (Debian's default), so apt gets an empty cache of its own.
    let archives = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("apt-get")
        .args([
            "install",
            "--no-install-recommends",
            "--print-uris",
            "-qq",
            "-o",
            "Debug::NoLocking=1",
            "-o",
            "Dir::State::status=/dev/null",
            "-o",
        ])
        .arg(format!(
            "Dir::Cache::Archives={}",
            archives.path().display()
        ))
        .args(packages)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Lines: 'URL' name_version_arch.deb size hash
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .nth(1)?
                .split('_')
                .next()
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

#[test]
fn closure_matches_apt_get_without_recommends() {
    let index = apt::host_index().unwrap();
    for roots in [&["docker.io"][..], &["busybox-static", "e2fsprogs"][..]] {
        let owned: Vec<String> = roots.iter().map(|s| s.to_string()).collect();
        let got = depsolve::solve(&index, &owned, &[]).unwrap();
        assert_eq!(names(&got), apt_closure(roots), "closure of {roots:?}");
    }
}

#[test]
fn unsatisfiable_dependency_names_the_chain() {
    // The real indices minus libseccomp2, which runc needs.
    let mut all = apt::host_packages().unwrap();
    all.retain(|p| p.name != "libseccomp2");
    let index = depsolve::Index::new(all, apt::ARCH);
    let err = depsolve::solve(&index, &["docker.io".into()], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("libseccomp2"), "{err}");
    assert!(err.contains("docker.io → runc"), "{err}");
    assert!(err.contains("no such package"), "{err}");
}

#[test]
fn docker_io_resolves_to_containerd_runc_iptables_and_libraries() {
    let index = apt::host_index().unwrap();
    let exclude = herd_image::spec::Spec::default_spec().exclude;
    let got = depsolve::solve(&index, &["docker.io".into()], &exclude).unwrap();
    let n = names(&got);
    eprintln!("{} packages: {n:?}", n.len());
    for want in [
        "docker.io",
        "containerd",
        "runc",
        "iptables",
        "libc6",
        "tini",
    ] {
        assert!(n.contains(&want.to_string()), "{want} missing from {n:?}");
    }
    for excluded in &exclude {
        assert!(!n.contains(excluded), "{excluded} is excluded but in {n:?}");
    }
    // Every dependency of every chosen package is met inside the closure.
    for p in &got {
        for group in p.requirements() {
            let ok = group.0.iter().any(|r| {
                exclude.contains(&r.name)
                    || got.iter().any(|q| {
                        (q.name == r.name && r.accepts(&q.version))
                            || q.provides.iter().any(|(v, _)| *v == r.name)
                    })
            });
            assert!(ok, "{} needs {group}, which the closure lacks", p.name);
        }
    }
}
