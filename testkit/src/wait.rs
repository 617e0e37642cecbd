//! Polling helpers with deadlines, so no test can hang forever.

use std::path::Path;
use std::time::{Duration, Instant};

/// Polls `check` every `every` until it returns `Some`, or fails the test
/// after `timeout` with `what` in the message.
pub fn until<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(every);
    }
}

/// Waits until the file at `path` (e.g. a VM's serial log) contains
/// `marker`, and returns the whole file. On timeout the test fails with the
/// file's last lines, which is usually what explains the failure.
pub fn for_marker(path: &Path, marker: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if text.contains(marker) {
            return text;
        }
        if Instant::now() >= deadline {
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "timed out after {timeout:?} waiting for {marker:?} in {}; last lines:\n{}",
                path.display(),
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
