//! Placement over random topologies. Guards P1 (never more than k - 1 shares of a
//! record in one rack) and P4 (losing any one rack leaves at least k shares).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

use std::collections::HashMap;

use kakera_config::{
    NodeConfig, NodeView, PlacementError, PlacementViolation, Policy, capacity, check_holders,
    place,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Topology {
    /// (rack index, fill) per node; node id = index + 1.
    nodes: Vec<(usize, u64)>,
    policy: Policy,
}

impl Topology {
    fn racks(&self) -> Vec<String> {
        (0..8).map(|r| format!("rack-{r}")).collect()
    }
    fn views<'a>(&self, racks: &'a [String]) -> Vec<NodeView<'a>> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, &(r, fill))| NodeView {
                id: i as u64 + 1,
                rack: &racks[r],
                fill,
            })
            .collect()
    }
    fn configs(&self) -> Vec<NodeConfig> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, &(r, _))| NodeConfig {
                id: i as u64 + 1,
                name: format!("node-{}", i + 1),
                rack: format!("rack-{r}"),
                zone: "dc".into(),
                addr: format!("127.0.0.1:{}", 7000 + i).parse().unwrap(),
                data_dir: format!("d{i}").into(),
                metrics_addr: None,
            })
            .collect()
    }
}

/// Random topologies: 1-8 racks, 1-6 nodes per rack, a policy with
/// max_shares_per_rack <= k - 1 and n - max >= k (what config validation allows).
fn topology() -> impl Strategy<Value = Topology> {
    (
        2u8..=6,
        0u8..=4,
        proptest::collection::vec((0usize..8, 0u64..5), 1..40),
    )
        .prop_flat_map(|(k, extra, nodes)| {
            let max_range = 1u8..k;
            (Just(k), Just(extra), Just(nodes), max_range)
        })
        .prop_map(|(k, extra, nodes, max)| {
            let n = k + max + extra; // at most 6 + 5 + 4
            Topology {
                nodes,
                policy: Policy {
                    k,
                    n,
                    max_shares_per_rack: max,
                },
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_placement_obeys_the_rules(topo in topology(), record in any::<[u8; 16]>()) {
        let racks = topo.racks();
        let live = topo.views(&racks);
        let max = usize::from(topo.policy.max_shares_per_rack);
        match place(&record, &live, &topo.policy) {
            Err(PlacementError::InsufficientCapacity { capacity: c, .. }) => {
                prop_assert!(c < usize::from(topo.policy.n));
                prop_assert_eq!(c, capacity(&live, max));
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
            Ok(chosen) => {
                let n = usize::from(topo.policy.n);
                let k = usize::from(topo.policy.k);
                prop_assert_eq!(chosen.len(), n);
                check_holders(&chosen, &topo.configs(), &topo.policy).unwrap();
                let mut per_rack: HashMap<&str, usize> = HashMap::new();
                for id in &chosen {
                    let v = live.iter().find(|v| v.id == *id).unwrap();
                    *per_rack.entry(v.rack).or_default() += 1;
                }
                // P1: no rack holds k shares.
                prop_assert!(per_rack.values().all(|&c| c < k));
                // P4: losing any one rack leaves at least k shares.
                for (rack, lost) in &per_rack {
                    prop_assert!(n - lost >= k, "losing {} leaves {}", rack, n - lost);
                }
                // Least-full first: a skipped node with lower fill than a chosen one
                // was skipped only because its rack was full.
                for skipped in live.iter().filter(|v| !chosen.contains(&v.id)) {
                    if chosen.iter().any(|c| live.iter().find(|v| v.id == *c).unwrap().fill > skipped.fill) {
                        prop_assert_eq!(per_rack.get(skipped.rack).copied(), Some(max));
                    }
                }
                // Deterministic.
                prop_assert_eq!(place(&record, &live, &topo.policy).unwrap(), chosen);
            }
        }
    }
}

#[test]
fn holder_checks_name_each_violation() {
    let topo = Topology {
        nodes: vec![(0, 0), (0, 0), (1, 0), (1, 0), (2, 0), (2, 0)],
        policy: Policy {
            k: 3,
            n: 5,
            max_shares_per_rack: 2,
        },
    };
    let cfg = topo.configs();
    let p = &topo.policy;
    assert_eq!(check_holders(&[1, 3, 5, 2, 4], &cfg, p), Ok(()));
    assert_eq!(
        check_holders(&[1, 3, 5, 2], &cfg, p),
        Err(PlacementViolation::WrongCount {
            expected: 5,
            found: 4
        })
    );
    assert_eq!(
        check_holders(&[1, 3, 5, 2, 1], &cfg, p),
        Err(PlacementViolation::DuplicateHolder { id: 1 })
    );
    assert_eq!(
        check_holders(&[1, 3, 5, 2, 99], &cfg, p),
        Err(PlacementViolation::UnknownNode { id: 99 })
    );
    // A third share in rack-0 breaks the rule (the auditor's "misplaced").
    let mut cfg2 = cfg.clone();
    cfg2[2].rack = "rack-0".into();
    assert_eq!(
        check_holders(&[1, 2, 3, 4, 5], &cfg2, p),
        Err(PlacementViolation::RackOverfull {
            rack: "rack-0".into(),
            count: 3,
            max: 2
        })
    );
}
