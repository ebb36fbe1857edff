//! `kakera status`: the cluster's health from every node's own answer. Pure: the
//! report is built from the config and the answers (or failures) the connection
//! gathered, so every rule is tested without a network.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use kakera_config::{ClusterConfig, NodeConfig};
use kakera_proto::NodeStatus;
use kakera_proto::ids::{describe, node_of};
use serde::Serialize;

/// A node whose applied index trails the leader's commit index by more than this
/// many entries is reported as lagging.
pub const LAG_SLACK_ENTRIES: u64 = 64;

/// How one node is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "health")]
pub enum Health {
    /// Member of the group, follows the leader, caught up.
    Ok,
    /// Did not answer.
    Unreachable {
        /// Why, as the transport saw it.
        reason: String,
    },
    /// Answered, but is not (yet) a member of the group the leader leads: starting,
    /// waiting to join, or an old incarnation.
    NotMember,
    /// Member, but knows of no leader.
    NoLeader,
    /// Member, but its state trails the leader's commit index, or its log trails the
    /// leader's.
    Lagging {
        /// Entries behind.
        behind_entries: u64,
    },
    /// The leader has committed nothing in its term yet (it was just elected, or
    /// it cannot reach a majority): no node is serving, whatever it says.
    Unsettled,
}

/// One node's line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeReport {
    /// Config node id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Rack.
    pub rack: String,
    /// Zone.
    pub zone: String,
    /// QUIC address.
    pub addr: String,
    /// voter, learner, or none (as the leader's membership says).
    pub member: &'static str,
    /// Raft member id (node#incarnation), if the node answered.
    pub raft_member: Option<String>,
    /// Leader, Follower, Candidate, Learner or Shutdown, if the node answered.
    pub state: Option<String>,
    /// The node's term.
    pub term: Option<u64>,
    /// Last log index.
    pub last_log_index: Option<u64>,
    /// Commit index the node knows.
    pub committed: Option<u64>,
    /// Applied index.
    pub applied: Option<u64>,
    /// Entries this node trails the leader by: the larger of commit minus applied
    /// and the leader's last log index minus what it has matched on this node.
    /// `None` without a leader or for the leader itself.
    pub lag_entries: Option<u64>,
    /// Resident memory of the node process, if it answered and could read it.
    pub rss_bytes: Option<u64>,
    /// Health verdict.
    #[serde(flatten)]
    pub health: Health,
}

/// The whole cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterReport {
    /// Cluster id from the config.
    pub cluster_id: String,
    /// Config id of the leader, if one is known.
    pub leader: Option<u64>,
    /// Name of the leader.
    pub leader_name: Option<String>,
    /// The leader's term.
    pub term: Option<u64>,
    /// The leader's commit index.
    pub committed: Option<u64>,
    /// Voters (config ids) in the leader's membership.
    pub voters: Vec<u64>,
    /// Per node, in config order.
    pub nodes: Vec<NodeReport>,
    /// Cluster-level problems, as sentences.
    pub problems: Vec<String>,
}

impl ClusterReport {
    /// Whether every node is healthy and no cluster-level problem was found.
    pub fn healthy(&self) -> bool {
        self.problems.is_empty() && self.nodes.iter().all(|n| n.health == Health::Ok)
    }
}

/// Builds the report from each configured node's answer.
pub fn build(
    config: &ClusterConfig,
    answers: &[(NodeConfig, Result<NodeStatus, String>)],
) -> ClusterReport {
    let mut problems = Vec::new();
    let up: Vec<&NodeStatus> = answers
        .iter()
        .filter_map(|(_, a)| a.as_ref().ok())
        .collect();
    // The leader: the node that says it leads in the highest term.
    let mut leaders_by_term: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for s in &up {
        if s.raft.state == "Leader" {
            leaders_by_term
                .entry(s.raft.term)
                .or_default()
                .insert(s.node_id);
        }
    }
    for (term, ids) in &leaders_by_term {
        if ids.len() > 1 {
            problems.push(format!(
                "nodes {ids:?} all claim to lead term {term}: Raft safety is broken, stop \
                 writes and collect the nodes' logs"
            ));
        }
    }
    let leader = leaders_by_term
        .iter()
        .next_back()
        .and_then(|(_, ids)| ids.iter().next())
        .and_then(|id| up.iter().find(|s| s.node_id == *id))
        .copied();
    // Membership as the leader sees it; without a leader, as the most recent term's
    // node sees it.
    let membership_source = leader.or_else(|| up.iter().max_by_key(|s| s.raft.term).copied());
    let voters_raft: BTreeSet<u64> = membership_source
        .map(|l| l.raft.voters.iter().copied().collect())
        .unwrap_or_default();
    let learners_raft: BTreeSet<u64> = membership_source
        .map(|l| l.raft.learners.iter().copied().collect())
        .unwrap_or_default();
    match leader {
        None if up.is_empty() => problems.push(
            "no node answered: check that the nodes run, the addresses in the config, and \
             that this certificate is issued by the cluster CA"
                .into(),
        ),
        None => problems.push(
            "no leader: the group cannot commit; check that a majority of voters run and \
             reach each other"
                .into(),
        ),
        Some(l) if l.raft.committed.is_none() => problems.push(format!(
            "the leader ({}) has committed nothing yet: the group is not serving; if this \
             lasts, check that a majority of voters run and reach each other",
            l.name
        )),
        Some(_) => {
            let reachable_voters = voters_raft
                .iter()
                .filter(|v| up.iter().any(|s| s.raft.id == **v))
                .count();
            if reachable_voters * 2 <= voters_raft.len() {
                problems.push(format!(
                    "only {reachable_voters} of {} voters answered: one more failure may \
                     stop commits",
                    voters_raft.len()
                ));
            }
        }
    }
    let nodes = answers
        .iter()
        .map(|(n, answer)| node_report(n, answer, leader, &voters_raft, &learners_raft))
        .collect();
    let mut voters: Vec<u64> = voters_raft.iter().map(|v| node_of(*v)).collect();
    voters.sort_unstable();
    ClusterReport {
        cluster_id: config.cluster_id.clone(),
        leader: leader.map(|l| l.node_id),
        leader_name: leader.map(|l| l.name.clone()),
        term: leader.map(|l| l.raft.term),
        committed: leader.and_then(|l| l.raft.committed),
        voters,
        nodes,
        problems,
    }
}

fn node_report(
    n: &NodeConfig,
    answer: &Result<NodeStatus, String>,
    leader: Option<&NodeStatus>,
    voters: &BTreeSet<u64>,
    learners: &BTreeSet<u64>,
) -> NodeReport {
    // Membership by the node's own member id if it answered, else by config id.
    let member_of = |set: &BTreeSet<u64>| match answer {
        Ok(s) => set.contains(&s.raft.id),
        Err(_) => set.iter().any(|m| node_of(*m) == n.id),
    };
    let member = if member_of(voters) {
        "voter"
    } else if member_of(learners) {
        "learner"
    } else {
        "none"
    };
    let lag = |s: &NodeStatus, l: &NodeStatus| -> Option<u64> {
        let committed = l.raft.committed?;
        let applied = s.raft.applied.unwrap_or(0);
        let behind_apply = committed.saturating_sub(applied);
        let behind_log = match l.raft.replication.iter().find(|(id, _)| *id == s.raft.id) {
            _ if s.raft.id == l.raft.id => 0,
            Some((_, matched)) => l
                .raft
                .last_log_index
                .unwrap_or(0)
                .saturating_sub(matched.unwrap_or(0)),
            None => 0,
        };
        Some(behind_apply.max(behind_log))
    };
    let lag_entries = match (answer, leader) {
        (Ok(s), Some(l)) if s.raft.id != l.raft.id => lag(s, l),
        (Ok(s), Some(l)) => l
            .raft
            .committed
            .map(|c| c.saturating_sub(s.raft.applied.unwrap_or(0))),
        _ => None,
    };
    let health = match (answer, leader) {
        (Err(reason), _) => Health::Unreachable {
            reason: reason.clone(),
        },
        (Ok(_), _) if member == "none" => Health::NotMember,
        (Ok(_), None) => Health::NoLeader,
        (Ok(_), Some(l)) if l.raft.committed.is_none() => Health::Unsettled,
        (Ok(s), Some(l)) if s.raft.leader != Some(l.raft.id) => Health::NoLeader,
        (Ok(_), Some(_)) => {
            let behind = lag_entries.unwrap_or(0);
            if behind > LAG_SLACK_ENTRIES {
                Health::Lagging {
                    behind_entries: behind,
                }
            } else {
                Health::Ok
            }
        }
    };
    let s = answer.as_ref().ok();
    NodeReport {
        id: n.id,
        name: n.name.clone(),
        rack: n.rack.clone(),
        zone: n.zone.clone(),
        addr: n.addr.to_string(),
        member,
        raft_member: s.map(|s| describe(s.raft.id)),
        state: s.map(|s| s.raft.state.clone()),
        term: s.map(|s| s.raft.term),
        last_log_index: s.and_then(|s| s.raft.last_log_index),
        committed: s.and_then(|s| s.raft.committed),
        rss_bytes: s.map(|s| s.usage.rss_bytes).filter(|b| *b > 0),
        applied: s.and_then(|s| s.raft.applied),
        lag_entries,
        health,
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// The report as a table for a terminal.
pub fn render(report: &ClusterReport) -> String {
    let mut out = String::new();
    let ok = report
        .nodes
        .iter()
        .filter(|n| n.health == Health::Ok)
        .count();
    match (&report.leader_name, report.leader) {
        (Some(name), Some(id)) => {
            let _ = writeln!(
                out,
                "cluster {}: leader {name} (node {id}), term {}, committed {}; voters {:?}; \
                 {ok} of {} nodes healthy",
                report.cluster_id,
                opt(report.term),
                opt(report.committed),
                report.voters,
                report.nodes.len()
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "cluster {}: no leader; {ok} of {} nodes healthy",
                report.cluster_id,
                report.nodes.len()
            );
        }
    }
    let _ = writeln!(
        out,
        "{:>4}  {:<12} {:<8} {:<5} {:<8} {:<10} {:>5} {:>8} {:>8} {:>8} {:>6} {:>7}  HEALTH",
        "ID",
        "NAME",
        "RACK",
        "ZONE",
        "MEMBER",
        "STATE",
        "TERM",
        "LOG",
        "COMMIT",
        "APPLIED",
        "LAG",
        "RSS MiB"
    );
    for n in &report.nodes {
        let health = match &n.health {
            Health::Ok => "ok".to_string(),
            Health::Unreachable { reason } => format!("unreachable: {reason}"),
            Health::NotMember => "not a member (starting or joining)".into(),
            Health::NoLeader => "no leader".into(),
            Health::Lagging { behind_entries } => format!("lagging {behind_entries} entries"),
            Health::Unsettled => "not serving: the leader has committed nothing yet".into(),
        };
        let _ = writeln!(
            out,
            "{:>4}  {:<12} {:<8} {:<5} {:<8} {:<10} {:>5} {:>8} {:>8} {:>8} {:>6} {:>7}  {health}",
            n.id,
            n.name,
            n.rack,
            n.zone,
            n.member,
            n.state.as_deref().unwrap_or("-"),
            opt(n.term),
            opt(n.last_log_index),
            opt(n.committed),
            opt(n.applied),
            opt(n.lag_entries),
            opt(n.rss_bytes.map(|b| b >> 20)),
        );
    }
    for p in &report.problems {
        let _ = writeln!(out, "problem: {p}");
    }
    out
}
