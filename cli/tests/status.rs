//! `kakera status` verdicts from node answers, without a network: an operator must see
//! a lost node, a lagging node, a lost quorum and a split brain for what they are.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

use kakera_cli::status::{Health, LAG_SLACK_ENTRIES, build, render};
use kakera_config::{ClusterConfig, NodeConfig};
use kakera_proto::ids::raft_id;
use kakera_proto::{NodeStatus, NodeUsage, RaftStatus};

fn config() -> ClusterConfig {
    let mut text = String::from(
        "cluster_id = \"t\"\nca_cert = \"ca.pem\"\nracks = [\"a\", \"b\", \"c\"]\n[policy]\nk = 3\nn = 5\n[zones.dc]\n",
    );
    for (id, rack) in [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c")] {
        text.push_str(&format!(
            "[[nodes]]\nid = {id}\nname = \"node-{id}\"\nrack = \"{rack}\"\nzone = \"dc\"\naddr = \"127.0.0.1:{}\"\ndata_dir = \"d{id}\"\n",
            7000 + id
        ));
    }
    ClusterConfig::parse(&text).unwrap()
}

fn member(node: u64) -> u64 {
    raft_id(node, 0x100 + node as u32)
}

/// Node `id`'s answer: following (or leading) `leader` in `term` at `applied`.
fn answer(id: u64, leader: Option<u64>, term: u64, applied: u64) -> NodeStatus {
    let leads = leader == Some(id);
    NodeStatus {
        node_id: id,
        name: format!("node-{id}"),
        rack: "x".into(),
        zone: "dc".into(),
        raft: RaftStatus {
            id: member(id),
            initialized: true,
            state: if leads { "Leader" } else { "Follower" }.into(),
            term,
            leader: leader.map(member),
            last_log_index: Some(applied),
            committed: Some(applied),
            applied: Some(applied),
            snapshot: None,
            purged: None,
            voters: (1..=5).map(member).collect(),
            learners: vec![],
            replication: vec![],
        },
        usage: NodeUsage::default(),
    }
}

fn answers(
    c: &ClusterConfig,
    f: impl Fn(&NodeConfig) -> Result<NodeStatus, String>,
) -> Vec<(NodeConfig, Result<NodeStatus, String>)> {
    c.nodes.iter().map(|n| (n.clone(), f(n))).collect()
}

#[test]
fn a_cluster_whose_nodes_all_follow_one_leader_is_healthy() {
    let c = config();
    let r = build(&c, &answers(&c, |n| Ok(answer(n.id, Some(2), 7, 40))));
    assert!(r.healthy(), "{r:#?}");
    assert_eq!(r.leader, Some(2));
    assert_eq!(r.term, Some(7));
    assert_eq!(r.voters, vec![1, 2, 3, 4, 5]);
    assert!(r.nodes.iter().all(|n| n.member == "voter"));
    let table = render(&r);
    assert!(table.contains("leader node-2 (node 2), term 7"), "{table}");
    assert!(table.contains("5 of 5 nodes healthy"), "{table}");
}

#[test]
fn an_unreachable_node_is_named_and_the_cluster_is_not_healthy() {
    let c = config();
    let r = build(
        &c,
        &answers(&c, |n| {
            if n.id == 4 {
                Err("peer node-4: timed out".into())
            } else {
                Ok(answer(n.id, Some(1), 3, 10))
            }
        }),
    );
    assert!(!r.healthy());
    assert!(r.problems.is_empty(), "4 of 5 voters still answer: {r:#?}");
    assert!(matches!(r.nodes[3].health, Health::Unreachable { .. }));
    assert_eq!(r.nodes[3].member, "voter");
    assert!(render(&r).contains("unreachable: peer node-4: timed out"));
}

#[test]
fn losing_a_majority_of_voters_is_a_cluster_problem() {
    let c = config();
    let r = build(
        &c,
        &answers(&c, |n| {
            if n.id >= 3 {
                Err("down".into())
            } else {
                Ok(answer(n.id, Some(1), 3, 10))
            }
        }),
    );
    assert_eq!(r.problems.len(), 1, "{r:#?}");
    assert!(
        r.problems[0].contains("only 2 of 5 voters"),
        "{}",
        r.problems[0]
    );
}

#[test]
fn no_leader_and_no_answer_are_reported_as_such() {
    let c = config();
    let r = build(&c, &answers(&c, |n| Ok(answer(n.id, None, 9, 10))));
    assert!(r.problems[0].starts_with("no leader"), "{r:#?}");
    assert!(r.nodes.iter().all(|n| n.health == Health::NoLeader));
    assert!(render(&r).contains("cluster t: no leader"));

    let r = build(&c, &answers(&c, |_| Err("refused".into())));
    assert!(r.problems[0].starts_with("no node answered"), "{r:#?}");
}

#[test]
fn two_leaders_in_one_term_is_flagged() {
    let c = config();
    let r = build(
        &c,
        &answers(&c, |n| match n.id {
            1 | 2 => Ok(answer(n.id, Some(n.id), 5, 10)),
            _ => Ok(answer(n.id, Some(1), 5, 10)),
        }),
    );
    assert!(
        r.problems
            .iter()
            .any(|p| p.contains("claim to lead term 5")),
        "{r:#?}"
    );
}

#[test]
fn a_node_behind_the_commit_index_is_lagging() {
    let c = config();
    let r = build(
        &c,
        &answers(&c, |n| {
            let mut a = answer(n.id, Some(1), 2, 500);
            if n.id == 5 {
                a.raft.applied = Some(500 - LAG_SLACK_ENTRIES - 1);
            }
            if n.id == 4 {
                a.raft.applied = Some(500 - LAG_SLACK_ENTRIES);
            }
            Ok(a)
        }),
    );
    assert_eq!(
        r.nodes[4].health,
        Health::Lagging {
            behind_entries: LAG_SLACK_ENTRIES + 1
        }
    );
    assert_eq!(r.nodes[3].health, Health::Ok);
}

#[test]
fn an_old_incarnation_or_a_starting_node_is_not_a_member() {
    let c = config();
    let r = build(
        &c,
        &answers(&c, |n| {
            let mut a = answer(n.id, Some(1), 2, 10);
            if n.id == 3 {
                // Restarted with an empty disk: a new member id the leader has not
                // taken in yet.
                a.raft.id = raft_id(3, 0xffff);
                a.raft.initialized = false;
            }
            Ok(a)
        }),
    );
    assert_eq!(r.nodes[2].health, Health::NotMember);
    assert_eq!(r.nodes[2].member, "none");
    assert!(!r.healthy());
    // JSON carries the same verdicts.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["nodes"][2]["health"], "not_member");
    assert_eq!(json["nodes"][0]["health"], "ok");
    assert_eq!(json["leader"], 1);
}

/// Issue 21 (P4 operations): a leader that has committed nothing (`committed -`) is
/// not a serving cluster; no node is called healthy and the report says why.
#[test]
fn a_leader_without_a_commit_leaves_no_node_healthy() {
    let c = config();
    let r = build(
        &c,
        &answers(&c, |n| {
            let mut a = answer(n.id, Some(1), 36, 10);
            a.raft.committed = None;
            Ok(a)
        }),
    );
    assert!(!r.healthy());
    assert!(
        r.nodes.iter().all(|n| n.health == Health::Unsettled),
        "{r:#?}"
    );
    assert!(r.problems[0].contains("committed nothing"), "{r:#?}");
    assert!(
        render(&r).contains("0 of 5 nodes healthy"),
        "{}",
        render(&r)
    );
}

/// Issue 21: a follower whose log the leader has matched only far behind is lagging
/// even when its own applied index looks current, and every node shows its lag.
#[test]
fn a_follower_behind_in_replication_is_lagging_and_lags_are_shown() {
    let c = config();
    let behind = LAG_SLACK_ENTRIES + 500;
    let r = build(
        &c,
        &answers(&c, |n| {
            let mut a = answer(n.id, Some(1), 3, 1_000);
            if n.id == 1 {
                a.raft.last_log_index = Some(1_000 + behind);
                a.raft.replication = (2..=5)
                    .map(|id| {
                        (
                            member(id),
                            Some(if id == 5 { 1_000 } else { 1_000 + behind }),
                        )
                    })
                    .collect();
            }
            Ok(a)
        }),
    );
    assert_eq!(
        r.nodes[4].health,
        Health::Lagging {
            behind_entries: behind
        }
    );
    assert_eq!(r.nodes[4].lag_entries, Some(behind));
    assert_eq!(r.nodes[1].lag_entries, Some(0));
    assert!(
        r.nodes[..4].iter().all(|n| n.health == Health::Ok),
        "{r:#?}"
    );
    assert!(render(&r).contains(&format!("lagging {behind} entries")));
}
