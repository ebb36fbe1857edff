//! Placement: which n nodes hold a record's shares. A pure, deterministic function of
//! the record id, the live topology, the policy and each node's fill, so the client,
//! the leader (which re-checks), repair and the auditor all agree.
//!
//! Rules, in order:
//! 1. n distinct live nodes;
//! 2. at most `max_shares_per_rack` (<= k - 1) of them in any rack (promise P1);
//! 3. least-full node first; ties broken by the highest rendezvous hash
//!    `BLAKE3(record id || node id)`, so records with equal fill spread evenly and each
//!    record's choice is stable.
//!
//! Greedy selection in that order is complete: it skips a node only when the node's
//! rack is full, so it finds n nodes exactly when `sum over racks of
//! min(max_per_rack, live nodes in rack) >= n`.

use std::collections::HashMap;

use crate::config::{NodeConfig, NodeId, Policy};
use crate::error::PlacementError;

/// What placement needs to know of a live node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeView<'a> {
    /// The node.
    pub id: NodeId,
    /// Its rack.
    pub rack: &'a str,
    /// How full it is, in any unit that is the same for all nodes (stored bytes).
    pub fill: u64,
}

/// The rendezvous (highest random weight) score of a node for a record.
pub fn rendezvous_score(record_id: &[u8; 16], node: NodeId) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"kakera placement v1");
    h.update(record_id);
    h.update(&node.to_le_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// The most shares of one record the given nodes can hold under the rack rule.
pub fn capacity(nodes: &[NodeView<'_>], max_per_rack: usize) -> usize {
    let mut per_rack: HashMap<&str, usize> = HashMap::new();
    for n in nodes {
        *per_rack.entry(n.rack).or_default() += 1;
    }
    per_rack.values().map(|&c| c.min(max_per_rack)).sum()
}

/// Chooses the n holders of a record, in share order: share x = i + 1 goes to the i-th
/// node returned. `live` lists the nodes that may receive shares (alive, not draining).
pub fn place(
    record_id: &[u8; 16],
    live: &[NodeView<'_>],
    policy: &Policy,
) -> Result<Vec<NodeId>, PlacementError> {
    let n = usize::from(policy.n);
    let max = usize::from(policy.max_shares_per_rack);
    let mut seen = std::collections::HashSet::new();
    for v in live {
        if !seen.insert(v.id) {
            return Err(PlacementError::DuplicateNode { id: v.id });
        }
    }
    let cap = capacity(live, max);
    if cap < n {
        return Err(PlacementError::InsufficientCapacity {
            n,
            capacity: cap,
            max_per_rack: max,
        });
    }
    let mut order: Vec<(u64, std::cmp::Reverse<u64>, &NodeView<'_>)> = live
        .iter()
        .map(|v| {
            (
                v.fill,
                std::cmp::Reverse(rendezvous_score(record_id, v.id)),
                v,
            )
        })
        .collect();
    order.sort_unstable_by_key(|(fill, score, v)| (*fill, *score, v.id));
    let mut per_rack: HashMap<&str, usize> = HashMap::new();
    let mut chosen = Vec::with_capacity(n);
    for (_, _, v) in order {
        if chosen.len() == n {
            break;
        }
        let used = per_rack.entry(v.rack).or_default();
        if *used < max {
            *used += 1;
            chosen.push(v.id);
        }
    }
    // Completeness of the greedy choice (see the module docs) given cap >= n.
    assert_eq!(
        chosen.len(),
        n,
        "greedy placement is complete when capacity >= n"
    );
    Ok(chosen)
}

/// Chooses the node that receives a record's share in place of one moved off (repair,
/// drain): a node of `candidates` (alive, accepting shares) that holds none of the
/// record's shares (`keeping`: the holders that stay), whose rack stays within the
/// rack rule; least full first, ties by rendezvous score. `None` if no node qualifies
/// (the repair waits).
pub fn choose_replacement(
    record_id: &[u8; 16],
    keeping: &[NodeView<'_>],
    candidates: &[NodeView<'_>],
    policy: &Policy,
) -> Option<NodeId> {
    let max = usize::from(policy.max_shares_per_rack);
    let mut per_rack: HashMap<&str, usize> = HashMap::new();
    for k in keeping {
        *per_rack.entry(k.rack).or_default() += 1;
    }
    candidates
        .iter()
        .filter(|c| keeping.iter().all(|k| k.id != c.id))
        .filter(|c| per_rack.get(c.rack).copied().unwrap_or(0) < max)
        .min_by_key(|c| {
            (
                c.fill,
                std::cmp::Reverse(rendezvous_score(record_id, c.id)),
                c.id,
            )
        })
        .map(|c| c.id)
}

/// Why a given set of holders breaks the placement rules (the leader's re-check, the
/// auditor's "misplaced").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementViolation {
    /// The record has a different number of holders than the policy's n.
    #[error("{found} holders, the policy needs {expected}")]
    WrongCount {
        /// n.
        expected: usize,
        /// Holders given.
        found: usize,
    },
    /// A node holds two shares of one record.
    #[error("node {id} is named as a holder twice")]
    DuplicateHolder {
        /// The node.
        id: NodeId,
    },
    /// A holder is not a node of the cluster.
    #[error("node {id} is not in the cluster topology")]
    UnknownNode {
        /// The node.
        id: NodeId,
    },
    /// A rack holds more shares of one record than the policy allows.
    #[error("rack {rack} would hold {count} shares of one record, more than {max}")]
    RackOverfull {
        /// The rack.
        rack: String,
        /// Shares in it.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// Checks holders against the rules (count, distinct, known, per-rack limit). Does not
/// require them to be the ones [`place`] would pick now: fills change.
pub fn check_holders(
    holders: &[NodeId],
    nodes: &[NodeConfig],
    policy: &Policy,
) -> Result<(), PlacementViolation> {
    if holders.len() != usize::from(policy.n) {
        return Err(PlacementViolation::WrongCount {
            expected: policy.n.into(),
            found: holders.len(),
        });
    }
    let mut per_rack: HashMap<&str, usize> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for &id in holders {
        if !seen.insert(id) {
            return Err(PlacementViolation::DuplicateHolder { id });
        }
        let node = nodes
            .iter()
            .find(|n| n.id == id)
            .ok_or(PlacementViolation::UnknownNode { id })?;
        let count = per_rack.entry(node.rack.as_str()).or_default();
        *count += 1;
        if *count > usize::from(policy.max_shares_per_rack) {
            return Err(PlacementViolation::RackOverfull {
                rack: node.rack.clone(),
                count: *count,
                max: policy.max_shares_per_rack.into(),
            });
        }
    }
    Ok(())
}

/// Problems that make a policy impossible to keep on a topology (config validation).
pub(crate) fn policy_problems(policy: &Policy, nodes: &[NodeConfig]) -> Vec<String> {
    let mut problems = Vec::new();
    let (k, n, max) = (
        usize::from(policy.k),
        usize::from(policy.n),
        usize::from(policy.max_shares_per_rack),
    );
    if nodes.len() < n {
        problems.push(format!(
            "n = {n} shares need at least {n} nodes; the config has {}",
            nodes.len()
        ));
        return problems;
    }
    let views: Vec<NodeView<'_>> = nodes
        .iter()
        .map(|c| NodeView {
            id: c.id,
            rack: &c.rack,
            fill: 0,
        })
        .collect();
    let cap = capacity(&views, max);
    if cap < n {
        problems.push(format!(
            "with at most {max} shares per rack these racks hold only {cap} of the n = {n} \
             shares: some rack would get k = {k} or more; add racks or nodes in other racks"
        ));
    }
    let mut per_rack: HashMap<&str, usize> = HashMap::new();
    for c in nodes {
        *per_rack.entry(c.rack.as_str()).or_default() += 1;
    }
    let largest = per_rack.values().copied().max().unwrap_or(0).min(max);
    if n - largest < k {
        problems.push(format!(
            "losing the largest rack ({largest} shares of a record) would leave {} shares, \
             fewer than k = {k}: raise n or lower max_shares_per_rack",
            n - largest
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: NodeId, rack: &str, fill: u64) -> NodeView<'_> {
        NodeView { id, rack, fill }
    }

    const P35: Policy = Policy {
        k: 3,
        n: 5,
        max_shares_per_rack: 2,
    };

    #[test]
    fn least_full_nodes_are_chosen_first() {
        let live = [
            view(1, "a", 10),
            view(2, "a", 0),
            view(3, "b", 0),
            view(4, "b", 10),
            view(5, "c", 0),
            view(6, "c", 5),
        ];
        let chosen = place(&[1; 16], &live, &P35).unwrap();
        assert_eq!(chosen.len(), 5);
        for id in [2, 3, 5, 6] {
            assert!(chosen.contains(&id), "{id} in {chosen:?}");
        }
    }

    #[test]
    fn not_enough_racks_is_an_error_not_a_panic() {
        let live = [
            view(1, "a", 0),
            view(2, "a", 0),
            view(3, "b", 0),
            view(4, "b", 0),
        ];
        assert_eq!(
            place(&[0; 16], &live, &P35),
            Err(PlacementError::InsufficientCapacity {
                n: 5,
                capacity: 4,
                max_per_rack: 2
            })
        );
        assert_eq!(
            place(&[0; 16], &[view(1, "a", 0), view(1, "b", 0)], &P35),
            Err(PlacementError::DuplicateNode { id: 1 })
        );
    }

    #[test]
    fn ties_are_broken_by_record_so_load_spreads() {
        // Nine equal nodes in three racks: over many records every node is used.
        let racks = ["a", "b", "c"];
        let live: Vec<NodeView<'_>> = (0..9).map(|i| view(i, racks[i as usize % 3], 0)).collect();
        let mut uses = [0usize; 9];
        for r in 0..300u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&r.to_le_bytes());
            for node in place(&id, &live, &P35).unwrap() {
                uses[node as usize] += 1;
            }
        }
        // 1500 shares over 9 nodes: about 167 each.
        for (node, &u) in uses.iter().enumerate() {
            assert!((100..=240).contains(&u), "node {node} used {u} times");
        }
    }

    /// P1, P4: a replacement keeps the rack rule with the holders that stay, never
    /// picks a holder, and is None when no rack has room.
    #[test]
    fn replacement_keeps_the_rack_rule() {
        let policy = Policy {
            k: 3,
            n: 5,
            max_shares_per_rack: 2,
        };
        let v = |id, rack| NodeView { id, rack, fill: 0 };
        // Holders 1, 2 (rack a), 3 (b), 5 (c) stay; 4 (b) is lost.
        let keeping = [v(1, "a"), v(2, "a"), v(3, "b"), v(5, "c")];
        let candidates = [v(1, "a"), v(6, "a"), v(7, "b"), v(8, "c")];
        for id in 0..50u8 {
            let got = choose_replacement(&[id; 16], &keeping, &candidates, &policy).unwrap();
            assert!(got == 7 || got == 8, "{got}");
        }
        // Fill wins over the hash.
        let mut c2 = candidates;
        c2[2].fill = 10;
        assert_eq!(
            choose_replacement(&[1; 16], &keeping, &c2, &policy),
            Some(8)
        );
        // Only rack a has a free node, and rack a is full: the repair waits.
        assert_eq!(
            choose_replacement(&[1; 16], &keeping, &[v(6, "a")], &policy),
            None
        );
    }
}
