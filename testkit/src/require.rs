//! Preconditions of tests that use real peers. A missing tool fails the test
//! with the install command, rather than skipping it silently.

use std::path::Path;

/// Fails the calling test unless it runs as root (network namespaces, taps).
pub fn root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test creates network namespaces and must run as root (CI runs as root)"
    );
}

/// Fails the calling test unless `program` is on `PATH` (or is an existing
/// absolute path); `package` names the Debian package that provides it.
pub fn tool(program: &str, package: &str) -> std::path::PathBuf {
    if program.starts_with('/') {
        let path = Path::new(program);
        assert!(
            path.exists(),
            "{program} is missing: install it with `apt-get install {package}` (scripts/deps does this)"
        );
        return path.to_path_buf();
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain(["/usr/sbin", "/sbin"].map(Into::into))
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{program}` is not installed: run `apt-get install {package}` (scripts/deps does this)"
        )
    })
}

/// Fails the calling test unless `path` exists; `package` provides it.
pub fn file(path: &str, package: &str) -> std::path::PathBuf {
    tool(path, package)
}
