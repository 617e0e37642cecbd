//! Noticing that the files the profiles were read from changed on disk.
//!
//! A poll of content hashes on an interval rather than inotify (`notify`):
//! the files are a YAML config and a few cloud-config templates, hashed in
//! microseconds; a poll sees every way a file can change (editors that
//! write a new file and rename it over the old one, symlink swaps as in
//! Kubernetes ConfigMaps, network filesystems, a file that did not exist
//! yet), where an inotify watch has to follow directories and renames; and
//! it debounces for free: a change is acted on only once two polls in a
//! row see the same new contents, so a half-written file is not loaded.

use std::hash::{DefaultHasher, Hasher};
use std::path::PathBuf;

/// Content of each watched file, hashed; `None` for a file that cannot be
/// read (missing, permissions): that is a state like any other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(Vec<Option<u64>>);

impl Fingerprint {
    /// Reads and hashes `paths`. Blocking.
    pub fn of(paths: &[PathBuf]) -> Fingerprint {
        Fingerprint(
            paths
                .iter()
                .map(|p| {
                    std::fs::read(p).ok().map(|bytes| {
                        let mut h = DefaultHasher::new();
                        h.write(&bytes);
                        h.finish()
                    })
                })
                .collect(),
        )
    }
}

/// Decides when the watched files have changed for good.
#[derive(Debug)]
pub struct Watch {
    paths: Vec<PathBuf>,
    /// What the running config was loaded from.
    loaded: Fingerprint,
    /// A different state seen on the previous poll, waiting to settle.
    pending: Option<Fingerprint>,
    /// A state that failed to load: not retried (or logged) until it changes.
    failed: Option<Fingerprint>,
}

impl Watch {
    /// Starts watching `paths`, whose current contents are `loaded`.
    pub fn new(paths: Vec<PathBuf>, loaded: Fingerprint) -> Watch {
        Watch {
            paths,
            loaded,
            pending: None,
            failed: None,
        }
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Feeds one poll's fingerprint of [`Watch::paths`]; returns it when
    /// the profiles should be reloaded now.
    pub fn observe(&mut self, now: Fingerprint) -> Option<Fingerprint> {
        if now == self.loaded {
            self.pending = None;
            return None;
        }
        if self.pending.as_ref() != Some(&now) {
            self.pending = Some(now);
            return None;
        }
        if self.failed.as_ref() == Some(&now) {
            return None;
        }
        Some(now)
    }

    /// A reload from `attempted` succeeded and the config now reads `paths`
    /// (`current` is their fingerprint).
    pub fn loaded(&mut self, paths: Vec<PathBuf>, current: Fingerprint) {
        *self = Watch::new(paths, current);
    }

    /// A reload from `attempted` failed; keep the old config and wait for
    /// the next change.
    pub fn failed(&mut self, attempted: Fingerprint) {
        self.failed = Some(attempted);
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_acted_on_once_it_settles() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, "one").unwrap();
        let paths = vec![a.clone(), dir.path().join("missing")];
        let mut w = Watch::new(paths.clone(), Fingerprint::of(&paths));
        assert_eq!(w.observe(Fingerprint::of(&paths)), None);
        std::fs::write(&a, "two").unwrap();
        assert_eq!(w.observe(Fingerprint::of(&paths)), None, "not settled yet");
        let settled = w.observe(Fingerprint::of(&paths));
        assert_eq!(settled, Some(Fingerprint::of(&paths)));
        w.loaded(paths.clone(), settled.unwrap());
        assert_eq!(w.observe(Fingerprint::of(&paths)), None);
    }

    #[test]
    fn a_failed_state_is_not_retried_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, "good").unwrap();
        let paths = vec![a.clone()];
        let mut w = Watch::new(paths.clone(), Fingerprint::of(&paths));
        std::fs::write(&a, "broken").unwrap();
        w.observe(Fingerprint::of(&paths));
        let attempt = w.observe(Fingerprint::of(&paths)).unwrap();
        w.failed(attempt);
        for _ in 0..3 {
            assert_eq!(w.observe(Fingerprint::of(&paths)), None);
        }
        // Deleting the file is a change too.
        std::fs::remove_file(&a).unwrap();
        w.observe(Fingerprint::of(&paths));
        assert!(w.observe(Fingerprint::of(&paths)).is_some());
        // Back to what is loaded: nothing to do.
        std::fs::write(&a, "good").unwrap();
        assert_eq!(w.observe(Fingerprint::of(&paths)), None);
    }
}
