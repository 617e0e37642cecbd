use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use openraft::{CommittedLeaderId, LogId, Membership, RaftMetrics, ServerState, StoredMembership};

use super::{Step, next_step};
use crate::types::PeerNode;

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

/// A leader's metrics: `configs` (two for a joint configuration) over
/// members 1..=3, the membership stored at `at`, `applied` entries applied,
/// `last` the last log index and each member's matched index.
fn leader(
    configs: Vec<BTreeSet<u64>>,
    at: u64,
    applied: u64,
    last: u64,
    matched: &[(u64, u64)],
) -> RaftMetrics<u64, PeerNode> {
    let nodes: BTreeMap<u64, PeerNode> = (1..=3).map(|id| (id, PeerNode::default())).collect();
    let mut m = RaftMetrics::new_initial(1);
    m.state = ServerState::Leader;
    m.membership_config = Arc::new(StoredMembership::new(
        Some(log_id(at)),
        Membership::new(configs, nodes),
    ));
    m.last_applied = Some(log_id(applied));
    m.last_log_index = Some(last);
    m.replication = Some(
        matched
            .iter()
            .map(|(id, index)| (*id, Some(log_id(*index))))
            .collect(),
    );
    m
}

fn set(ids: &[u64]) -> BTreeSet<u64> {
    ids.iter().copied().collect()
}

#[test]
fn a_committed_joint_configuration_left_for_a_tick_is_finished_to_its_new_voters() {
    let joint = leader(vec![set(&[1]), set(&[1, 2])], 10, 12, 12, &[(2, 12)]);
    let mut seen = None;
    // First sight: its second step may be on its way.
    assert_eq!(next_step(&joint, 5, &mut seen), None);
    assert_eq!(
        next_step(&joint, 5, &mut seen),
        Some(Step::FinishJoint(set(&[1, 2])))
    );
    // A removal cut short finishes the same way: to the new, smaller set.
    let removal = leader(vec![set(&[1, 2, 3]), set(&[1, 2])], 20, 20, 20, &[]);
    let mut seen = None;
    next_step(&removal, 5, &mut seen);
    assert_eq!(
        next_step(&removal, 5, &mut seen),
        Some(Step::FinishJoint(set(&[1, 2])))
    );
}

#[test]
fn an_uncommitted_joint_configuration_or_a_follower_is_left_alone() {
    let uncommitted = leader(vec![set(&[1]), set(&[1, 2])], 10, 9, 10, &[(2, 10)]);
    let mut seen = None;
    for _ in 0..3 {
        assert_eq!(next_step(&uncommitted, 5, &mut seen), None);
    }
    let mut follower = leader(vec![set(&[1]), set(&[1, 2])], 10, 12, 12, &[]);
    follower.state = ServerState::Follower;
    let mut seen = None;
    for _ in 0..3 {
        assert_eq!(next_step(&follower, 5, &mut seen), None);
    }
}

#[test]
fn a_caught_up_learner_is_promoted_while_voters_are_missing() {
    // 2 caught up, 3 far behind.
    let m = leader(vec![set(&[1])], 5, 500, 500, &[(2, 450), (3, 10)]);
    assert_eq!(next_step(&m, 5, &mut None), Some(Step::Promote(2)));
    let behind = leader(vec![set(&[1])], 5, 500, 500, &[(2, 300), (3, 10)]);
    assert_eq!(next_step(&behind, 5, &mut None), None);
    // Enough voters already.
    assert_eq!(next_step(&m, 1, &mut None), None);
}
