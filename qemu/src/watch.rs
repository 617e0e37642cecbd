//! Following machines through their boot: polls the console logs and the
//! cluster and records when each machine first reached each stage (for the
//! progress view and for `herd bench lab`'s per-stage breakdown).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::{self, ClusterError};
use crate::lab::Lab;
use crate::layout::MachineId;
use crate::stage::Stage;
use crate::status;

/// First-seen times of each machine's stages, relative to a start instant.
#[derive(Debug)]
pub struct Tracker {
    start: Instant,
    seen: BTreeMap<MachineId, BTreeMap<Stage, Duration>>,
}

/// A machine reaching a stage.
#[derive(Debug, Clone, Copy)]
pub struct Transition {
    pub machine: MachineId,
    pub stage: Stage,
    pub at: Duration,
}

impl Tracker {
    /// Tracks `machines`, all powered on at `start`.
    pub fn new(start: Instant, machines: &[MachineId]) -> Tracker {
        let mut seen = BTreeMap::new();
        for id in machines {
            seen.insert(*id, BTreeMap::from([(Stage::PoweredOn, Duration::ZERO)]));
        }
        Tracker { start, seen }
    }

    /// Records that `machine` was powered on `at` after the start.
    pub fn powered_on_at(&mut self, machine: MachineId, at: Duration) {
        self.seen
            .entry(machine)
            .or_default()
            .insert(Stage::PoweredOn, at);
    }

    /// Looks once at every console and (once any agent runs) the cluster;
    /// returns the stages reached since the last look. A stage seen implies
    /// every earlier one (a short stage may fall between two looks).
    pub async fn poll(&mut self, lab: &Lab, netns: &str) -> Result<Vec<Transition>, ClusterError> {
        let now = self.start.elapsed();
        let ids: Vec<MachineId> = self.seen.keys().copied().collect();
        let mut reached: Vec<(MachineId, Stage)> = ids
            .iter()
            .map(|id| (*id, status::console_stage(&lab.dir, *id)))
            .collect();
        if reached.iter().any(|(_, s)| *s >= Stage::Agent) {
            let view = cluster::view(&lab.dir, netns, ids.clone()).await?;
            for (id, stage) in &mut reached {
                if view.has_joined(*id) {
                    *stage = Stage::Joined;
                }
            }
        }
        let mut transitions = Vec::new();
        for (id, stage) in reached {
            let seen = self.seen.entry(id).or_default();
            for s in Stage::ALL.into_iter().filter(|s| *s <= stage) {
                if let std::collections::btree_map::Entry::Vacant(e) = seen.entry(s) {
                    e.insert(now);
                    transitions.push(Transition {
                        machine: id,
                        stage: s,
                        at: now,
                    });
                }
            }
        }
        Ok(transitions)
    }

    /// Whether every tracked machine has joined.
    pub fn all_joined(&self) -> bool {
        self.seen.values().all(|s| s.contains_key(&Stage::Joined))
    }

    /// When `machine` first reached `stage`.
    pub fn at(&self, machine: MachineId, stage: Stage) -> Option<Duration> {
        self.seen.get(&machine)?.get(&stage).copied()
    }

    /// Time spent reaching each stage from the previous one (DHCP, iPXE
    /// script, kernel, agent, joined) from power-on, once the machine has
    /// joined.
    pub fn breakdown(&self, machine: MachineId) -> Option<Vec<(Stage, Duration)>> {
        let seen = self.seen.get(&machine)?;
        seen.get(&Stage::Joined)?;
        let mut out = Vec::new();
        let mut previous = *seen.get(&Stage::PoweredOn)?;
        for stage in [
            Stage::Dhcp,
            Stage::Script,
            Stage::Kernel,
            Stage::Agent,
            Stage::Joined,
        ] {
            let at = *seen.get(&stage)?;
            out.push((stage, at.saturating_sub(previous)));
            previous = at;
        }
        Some(out)
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Follows `machines` until all joined or `timeout`, calling `report` for
/// every stage reached.
pub async fn until_joined(
    lab: &Lab,
    netns: &str,
    tracker: &mut Tracker,
    timeout: Duration,
    mut report: impl FnMut(&Transition),
) -> Result<bool, ClusterError> {
    let deadline = Instant::now() + timeout;
    loop {
        for t in tracker.poll(lab, netns).await? {
            report(&t);
        }
        if tracker.all_joined() {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breakdown_counts_from_power_on_and_needs_a_join() {
        let m1 = MachineId::new(1).unwrap();
        let mut t = Tracker::new(Instant::now(), &[m1]);
        t.powered_on_at(m1, Duration::from_secs(2));
        let secs = [
            (Stage::Dhcp, 7),
            (Stage::Script, 9),
            (Stage::Kernel, 15),
            (Stage::Agent, 30),
        ];
        for (stage, s) in secs {
            t.seen
                .get_mut(&m1)
                .unwrap()
                .insert(stage, Duration::from_secs(s));
        }
        assert!(t.breakdown(m1).is_none(), "not joined yet");
        assert!(!t.all_joined());
        t.seen
            .get_mut(&m1)
            .unwrap()
            .insert(Stage::Joined, Duration::from_secs(33));
        assert!(t.all_joined());
        let b: Vec<u64> = t
            .breakdown(m1)
            .unwrap()
            .iter()
            .map(|(_, d)| d.as_secs())
            .collect();
        assert_eq!(b, vec![5, 2, 6, 15, 3]);
    }
}
