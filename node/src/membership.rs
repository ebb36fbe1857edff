//! Membership decisions, free of IO and clocks: how a node starts (restart, bootstrap
//! or join as a new member) and how the leader grows and repairs the voter set. The
//! daemon gathers the facts and carries out the step these functions name.
//!
//! Raft member ids are `kakera_proto::ids::raft_id(node, incarnation)`. A data
//! directory that starts empty draws a new incarnation, so a node that lost its disk
//! comes back as a new member and can never reuse votes its old incarnation cast.
//! The replicated state records each node's current incarnation
//! (`Command::RegisterIncarnation`); the leader replaces an old incarnation by the
//! new one once the new one has caught up.

use std::collections::{BTreeMap, BTreeSet};

use kakera_proto::ids::node_of;

/// A learner counts as caught up when its matched log index is within this many
/// entries of the leader's last log index.
pub const CATCH_UP_SLACK_ENTRIES: u64 = 64;

/// What a peer said about itself while this node decided how to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAnswer {
    /// The peer's config node id.
    pub node_id: u64,
    /// Whether the peer belongs to an initialised Raft group.
    pub initialized: bool,
}

/// How a node starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPlan {
    /// The local log holds a membership: resume from disk.
    Restart,
    /// First start of the whole cluster: initialise a one-voter group; the leader then
    /// adds the others.
    Bootstrap,
    /// Ask the leader to take this (new) member into the group.
    Join,
    /// Not enough peers answered to tell a first start from a lost disk; ask again.
    Wait {
        /// What is missing, for the log.
        reason: String,
    },
}

/// Decides how node `me` starts.
///
/// - A node whose Raft log is initialised restarts.
/// - If any peer belongs to an initialised group, the cluster exists: join it.
/// - Otherwise only the bootstrapper (the lowest id among the initial voters) may
///   initialise, and only after a majority of the initial voters (itself included)
///   confirmed that none of them is initialised; that majority proves no group with
///   a quorum exists yet. Every other node joins.
pub fn plan_start(
    me: u64,
    locally_initialized: bool,
    initial_voters: &[u64],
    answers: &[PeerAnswer],
) -> StartPlan {
    if locally_initialized {
        return StartPlan::Restart;
    }
    if answers.iter().any(|a| a.initialized) {
        return StartPlan::Join;
    }
    let Some(bootstrapper) = initial_voters.iter().copied().min() else {
        return StartPlan::Join;
    };
    if me != bootstrapper {
        return StartPlan::Join;
    }
    let confirmed = 1 + answers
        .iter()
        .filter(|a| a.node_id != me && initial_voters.contains(&a.node_id))
        .map(|a| a.node_id)
        .collect::<BTreeSet<_>>()
        .len();
    let majority = initial_voters.len() / 2 + 1;
    if confirmed >= majority {
        StartPlan::Bootstrap
    } else {
        StartPlan::Wait {
            reason: format!(
                "{confirmed} of the {} initial voters answered; {majority} are needed to \
                 tell a first start from a lost disk",
                initial_voters.len()
            ),
        }
    }
}

/// The leader's view of the group, as plain ids.
#[derive(Debug, Clone, Default)]
pub struct GroupView {
    /// Config ids of every configured node.
    pub config_nodes: BTreeSet<u64>,
    /// Config ids that should vote (from `ClusterConfig::initial_voters`).
    pub wanted_voters: BTreeSet<u64>,
    /// Config id -> the Raft member id of its current incarnation, as committed.
    pub incarnations: BTreeMap<u64, u64>,
    /// Current voters (Raft member ids).
    pub voters: BTreeSet<u64>,
    /// Current learners (Raft member ids).
    pub learners: BTreeSet<u64>,
    /// Raft member id -> matched log index on the leader.
    pub matched: BTreeMap<u64, Option<u64>>,
    /// The leader's last log index.
    pub last_log_index: u64,
    /// The leader's own Raft member id.
    pub leader: u64,
}

/// The next membership change the leader should make (one at a time: Raft allows
/// one change in flight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipStep {
    /// Record the leader's own incarnation (the bootstrapper's first act).
    RegisterSelf,
    /// Add a registered incarnation as a learner.
    AddLearner(u64),
    /// Replace the voter set (new incarnations in, old ones out, missing voters added).
    ReplaceVoters(BTreeSet<u64>),
    /// Remove learners that are old incarnations or no longer configured.
    RemoveLearners(BTreeSet<u64>),
    /// Nothing to do.
    None,
}

impl GroupView {
    fn caught_up(&self, id: u64) -> bool {
        self.matched
            .get(&id)
            .copied()
            .flatten()
            .is_some_and(|m| m.saturating_add(CATCH_UP_SLACK_ENTRIES) >= self.last_log_index)
    }

    fn is_member(&self, id: u64) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }
}

/// Decides the leader's next membership step. Never removes a voter except to replace
/// it by its own node's newer, caught-up incarnation; never removes the leader.
pub fn plan_membership(view: &GroupView) -> MembershipStep {
    let leader_node = node_of(view.leader);
    if view.incarnations.get(&leader_node) != Some(&view.leader) {
        return MembershipStep::RegisterSelf;
    }
    // Bounded by the number of configured nodes.
    for (node, id) in &view.incarnations {
        if view.config_nodes.contains(node) && !view.is_member(*id) {
            return MembershipStep::AddLearner(*id);
        }
    }
    let current = |node: u64| view.incarnations.get(&node).copied();
    let mut voters = BTreeSet::new();
    for v in &view.voters {
        match current(node_of(*v)) {
            Some(new) if new != *v && view.learners.contains(&new) && view.caught_up(new) => {
                voters.insert(new);
            }
            _ => {
                voters.insert(*v);
            }
        }
    }
    for node in &view.wanted_voters {
        let has_voter = voters.iter().any(|v| node_of(*v) == *node);
        if !has_voter
            && let Some(id) = current(*node)
            && view.learners.contains(&id)
            && view.caught_up(id)
        {
            voters.insert(id);
        }
    }
    debug_assert!(voters.contains(&view.leader), "the leader stays a voter");
    if voters != view.voters {
        return MembershipStep::ReplaceVoters(voters);
    }
    let stale: BTreeSet<u64> = view
        .learners
        .iter()
        .copied()
        .filter(|l| current(node_of(*l)) != Some(*l) || !view.config_nodes.contains(&node_of(*l)))
        .collect();
    if !stale.is_empty() {
        return MembershipStep::RemoveLearners(stale);
    }
    MembershipStep::None
}

#[cfg(test)]
mod tests {
    use kakera_proto::ids::raft_id;

    use super::*;

    fn answers(list: &[(u64, bool)]) -> Vec<PeerAnswer> {
        list.iter()
            .map(|&(node_id, initialized)| PeerAnswer {
                node_id,
                initialized,
            })
            .collect()
    }

    #[test]
    fn a_node_with_a_log_restarts_whatever_peers_say() {
        assert_eq!(plan_start(2, true, &[1, 2, 3], &[]), StartPlan::Restart);
        assert_eq!(
            plan_start(1, true, &[1, 2, 3], &answers(&[(2, true)])),
            StartPlan::Restart
        );
    }

    #[test]
    fn an_empty_node_joins_an_existing_group_even_the_bootstrapper() {
        // The bootstrapper that lost its disk must not initialise a second group.
        assert_eq!(
            plan_start(1, false, &[1, 2, 3, 4, 5], &answers(&[(4, true)])),
            StartPlan::Join
        );
        assert_eq!(
            plan_start(3, false, &[1, 2, 3], &answers(&[(1, true)])),
            StartPlan::Join
        );
    }

    #[test]
    fn only_the_bootstrapper_initialises_and_only_with_a_majority_of_voters_confirmed() {
        let voters = [1, 3, 5, 7, 9];
        // Alone, or with one other voter: wait (the others may hold a group).
        assert!(matches!(
            plan_start(1, false, &voters, &[]),
            StartPlan::Wait { .. }
        ));
        assert!(matches!(
            plan_start(
                1,
                false,
                &voters,
                &answers(&[(3, false), (2, false), (4, false)])
            ),
            StartPlan::Wait { .. }
        ));
        // Duplicate answers from one voter count once.
        assert!(matches!(
            plan_start(1, false, &voters, &answers(&[(3, false), (3, false)])),
            StartPlan::Wait { .. }
        ));
        assert_eq!(
            plan_start(1, false, &voters, &answers(&[(3, false), (9, false)])),
            StartPlan::Bootstrap
        );
        // Not the bootstrapper: join, never initialise.
        assert_eq!(
            plan_start(
                3,
                false,
                &voters,
                &answers(&[(1, false), (5, false), (7, false)])
            ),
            StartPlan::Join
        );
    }

    fn view(voters: &[u64], learners: &[u64], incarnations: &[(u64, u64)]) -> GroupView {
        GroupView {
            config_nodes: (1..=5).collect(),
            wanted_voters: (1..=5).collect(),
            incarnations: incarnations.iter().copied().collect(),
            voters: voters.iter().copied().collect(),
            learners: learners.iter().copied().collect(),
            matched: BTreeMap::new(),
            last_log_index: 1000,
            leader: raft_id(1, 7),
        }
    }

    #[test]
    fn the_bootstrap_leader_registers_itself_first_then_adds_joiners() {
        let me = raft_id(1, 7);
        let v = view(&[me], &[], &[]);
        assert_eq!(plan_membership(&v), MembershipStep::RegisterSelf);
        let two = raft_id(2, 9);
        let v = view(&[me], &[], &[(1, me), (2, two)]);
        assert_eq!(plan_membership(&v), MembershipStep::AddLearner(two));
    }

    #[test]
    fn learners_become_voters_only_once_caught_up() {
        let me = raft_id(1, 7);
        let two = raft_id(2, 9);
        let mut v = view(&[me], &[two], &[(1, me), (2, two)]);
        v.matched.insert(two, Some(10));
        assert_eq!(plan_membership(&v), MembershipStep::None);
        v.matched.insert(two, Some(1000 - CATCH_UP_SLACK_ENTRIES));
        assert_eq!(
            plan_membership(&v),
            MembershipStep::ReplaceVoters([me, two].into())
        );
        // A configured node that is not a wanted voter stays a learner.
        v.wanted_voters.remove(&2);
        assert_eq!(plan_membership(&v), MembershipStep::None);
    }

    #[test]
    fn a_new_incarnation_replaces_the_old_voter_once_caught_up_and_the_old_learner_goes() {
        let me = raft_id(1, 7);
        let old = raft_id(3, 1);
        let new = raft_id(3, 2);
        let others = [raft_id(2, 5), raft_id(4, 5), raft_id(5, 5)];
        let mut voters = vec![me, old];
        voters.extend(others);
        let mut inc = vec![(1, me), (3, new)];
        inc.extend(others.iter().map(|&o| (node_of(o), o)));
        let mut v = view(&voters, &[new], &inc);
        // Not caught up: the old voter stays (it may only be slow, not wiped).
        assert_eq!(plan_membership(&v), MembershipStep::None);
        v.matched.insert(new, Some(999));
        let MembershipStep::ReplaceVoters(next) = plan_membership(&v) else {
            panic!("expected a voter change")
        };
        assert!(next.contains(&new) && !next.contains(&old) && next.contains(&me));
        assert_eq!(next.len(), 5);
        // An old incarnation left as a learner is removed.
        let v = view(&[me], &[old, new], &[(1, me), (3, new)]);
        assert_eq!(
            plan_membership(&v),
            MembershipStep::RemoveLearners([old].into())
        );
    }

    #[test]
    fn registered_but_unconfigured_nodes_are_not_added() {
        let me = raft_id(1, 7);
        let ghost = raft_id(42, 1);
        let v = view(&[me], &[], &[(1, me), (42, ghost)]);
        assert_eq!(plan_membership(&v), MembershipStep::None);
        let v = view(&[me], &[ghost], &[(1, me), (42, ghost)]);
        assert_eq!(
            plan_membership(&v),
            MembershipStep::RemoveLearners([ghost].into())
        );
    }
}
