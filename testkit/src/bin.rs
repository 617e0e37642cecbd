//! Where the `herd` binary under test lives.

use std::path::PathBuf;

/// Path of the `herd` binary built alongside this test.
///
/// Test executables live in `target/<profile>/deps/`, so the binary is two
/// levels up; `scripts/test` builds it (`cargo build --bin herd`) before
/// running the suite, since test runners build only test targets.
/// `HERD_BIN` overrides it (e.g. to test a release build).
pub fn herd() -> PathBuf {
    if let Some(path) = std::env::var_os("HERD_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let herd = profile_dir.join("herd");
    assert!(
        herd.exists(),
        "{} does not exist: build it first with `cargo build --bin herd` (scripts/test does)",
        herd.display()
    );
    herd
}

/// The workspace root (for test data and scripts).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}
