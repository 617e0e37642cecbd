//! What a watcher saw, in memory: controllers read here, not the store.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use super::resource::Object;
use super::watcher::Event;

struct State<T> {
    objects: BTreeMap<String, Object<T>>,
    revision: i64,
}

/// The objects of one watched scope, as of [`Cache::revision`]. Cheap to
/// clone; clones share the state.
pub struct Cache<T> {
    state: Arc<RwLock<State<T>>>,
    ready: Arc<watch::Sender<bool>>,
}

impl<T> Clone for Cache<T> {
    fn clone(&self) -> Self {
        Cache {
            state: Arc::clone(&self.state),
            ready: Arc::clone(&self.ready),
        }
    }
}

impl<T: Clone> Default for Cache<T> {
    fn default() -> Self {
        Cache::new()
    }
}

impl<T: Clone> Cache<T> {
    pub fn new() -> Cache<T> {
        Cache {
            state: Arc::new(RwLock::new(State {
                objects: BTreeMap::new(),
                revision: 0,
            })),
            ready: Arc::new(watch::channel(false).0),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State<T>> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, name: &str) -> Option<Object<T>> {
        self.read().objects.get(name).cloned()
    }

    /// Every object, by name.
    pub fn list(&self) -> Vec<Object<T>> {
        self.read().objects.values().cloned().collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.read().objects.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The store revision the cache reflects.
    pub fn revision(&self) -> i64 {
        self.read().revision
    }

    /// Whether the first complete listing arrived.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Resolves once the first complete listing arrived.
    pub async fn ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Applies `event`; returns the names whose object appeared, changed or
    /// disappeared.
    pub fn apply(&self, event: Event<T>) -> Vec<String> {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Listed { objects, revision } => {
                let new: BTreeMap<String, Object<T>> =
                    objects.into_iter().map(|o| (o.name.clone(), o)).collect();
                let mut changed: Vec<String> = state
                    .objects
                    .keys()
                    .filter(|n| !new.contains_key(*n))
                    .cloned()
                    .collect();
                changed.extend(
                    new.iter()
                        .filter(|(n, o)| {
                            state
                                .objects
                                .get(*n)
                                .is_none_or(|old| old.mod_revision != o.mod_revision)
                        })
                        .map(|(n, _)| n.clone()),
                );
                state.objects = new;
                state.revision = revision;
                self.ready.send_replace(true);
                changed
            }
            Event::Applied(o) => {
                state.revision = state.revision.max(o.mod_revision);
                let name = o.name.clone();
                state.objects.insert(name.clone(), o);
                vec![name]
            }
            Event::Deleted { name, revision } => {
                state.revision = state.revision.max(revision);
                state
                    .objects
                    .remove(&name)
                    .map(|_| vec![name])
                    .unwrap_or_default()
            }
            Event::Progress(revision) => {
                state.revision = state.revision.max(revision);
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(name: &str, rev: i64) -> Object<u32> {
        Object {
            name: name.into(),
            value: rev as u32,
            mod_revision: rev,
            create_revision: rev,
            lease: 0,
        }
    }

    #[test]
    fn a_relisting_reports_exactly_what_changed_meanwhile() {
        let c = Cache::new();
        assert!(!c.is_ready());
        let mut changed = c.apply(Event::Listed {
            objects: vec![o("a", 1), o("b", 2)],
            revision: 2,
        });
        changed.sort();
        assert_eq!(changed, ["a", "b"]);
        assert!(c.is_ready());
        assert_eq!(c.apply(Event::Applied(o("c", 3))), ["c"]);
        assert_eq!(
            c.apply(Event::Deleted {
                name: "a".into(),
                revision: 4
            }),
            ["a"]
        );
        // Missed while disconnected: b changed, c deleted, d created.
        let mut changed = c.apply(Event::Listed {
            objects: vec![o("b", 7), o("d", 8)],
            revision: 9,
        });
        changed.sort();
        assert_eq!(changed, ["b", "c", "d"]);
        assert_eq!(c.revision(), 9);
        assert_eq!(c.names(), ["b", "d"]);
        assert!(c.apply(Event::Progress(12)).is_empty());
        assert_eq!(c.revision(), 12);
    }
}
