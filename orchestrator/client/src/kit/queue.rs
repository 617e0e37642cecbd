//! The controller's work queue: names due at a time, each at most once,
//! earliest time wins.

use std::collections::{BTreeSet, HashMap};

use tokio::time::Instant;

#[derive(Debug, Default)]
pub(super) struct Queue {
    due: BTreeSet<(Instant, u64)>,
    names: HashMap<(Instant, u64), String>,
    when: HashMap<String, (Instant, u64)>,
    seq: u64,
}

impl Queue {
    /// Schedules `name` at `at`, unless it is already due earlier.
    pub(super) fn push(&mut self, name: String, at: Instant) {
        if let Some(&slot) = self.when.get(&name) {
            if slot.0 <= at {
                return;
            }
            self.due.remove(&slot);
            self.names.remove(&slot);
        }
        self.seq += 1;
        let slot = (at, self.seq);
        self.due.insert(slot);
        self.names.insert(slot, name.clone());
        self.when.insert(name, slot);
    }

    /// The earliest due time.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.due.first().map(|(t, _)| *t)
    }

    /// Takes a name due at or before `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<String> {
        let slot = *self.due.first().filter(|(t, _)| *t <= now)?;
        self.due.remove(&slot);
        let name = self.names.remove(&slot).expect("slots and names agree");
        self.when.remove(&name);
        Some(name)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_name_is_queued_once_at_its_earliest_time() {
        let now = Instant::now();
        let mut q = Queue::default();
        q.push("a".into(), now + Duration::from_secs(5));
        q.push("b".into(), now + Duration::from_secs(1));
        q.push("a".into(), now);
        q.push("b".into(), now + Duration::from_secs(9));
        assert_eq!(q.when.len(), 2);
        assert_eq!(q.pop_due(now).as_deref(), Some("a"));
        assert_eq!(q.pop_due(now), None);
        assert_eq!(q.next_due(), Some(now + Duration::from_secs(1)));
        assert_eq!(
            q.pop_due(now + Duration::from_secs(1)).as_deref(),
            Some("b")
        );
    }
}
