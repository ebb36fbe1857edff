//! Auditors' share verification, decided without a network: what each node reported
//! (light) or the shares fetched (deep) go in, a report per record comes out. The
//! driving loop is `Client::verify` in [`crate::client`].
//!
//! Findings, each naming the node and its rack:
//! - missing: a holder the catalog names has no share;
//! - corrupt: a holder's share does not hash to the catalog digest (bit rot, a
//!   substituted share, another record's share swapped in);
//! - unreachable: a holder did not answer;
//! - unexpected: a node the catalog does not name holds a share of the record;
//! - misplaced: the nodes actually holding shares put more than the policy allows in
//!   one rack (P1);
//! - inconsistent (deep): the good shares do not lie on one polynomial of degree < k,
//!   or k of them do not combine to the sealed digest.
//!
//! A record with fewer than n good shares is also "under-replicated".

use std::collections::BTreeMap;

use kakera_config::ClusterConfig;
use kakera_proto::catalog::RecordEntry;
use kakera_proto::{Digest, HeldShare, RecordId};
use kakera_shamir::{Consistency, Share};
use serde::Serialize;

/// What one node said about one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The node did not answer.
    Unreachable(String),
    /// The node holds no share of the record.
    Absent,
    /// The node holds a share; its digest as re-read by the node.
    Held(HeldShare),
}

/// One problem with a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "finding", rename_all = "kebab-case")]
pub enum Finding {
    /// A catalog holder has no share.
    Missing {
        /// The node.
        node: u64,
        /// Its rack.
        rack: String,
    },
    /// A catalog holder's share does not match the catalog digest.
    Corrupt {
        /// The node.
        node: u64,
        /// Its rack.
        rack: String,
    },
    /// A catalog holder did not answer.
    Unreachable {
        /// The node.
        node: u64,
        /// Its rack.
        rack: String,
        /// What the transport said.
        reason: String,
    },
    /// A node the catalog does not name holds a share.
    Unexpected {
        /// The node.
        node: u64,
        /// Its rack.
        rack: String,
    },
    /// A rack holds more shares of the record than the policy allows.
    Misplaced {
        /// The rack.
        rack: String,
        /// The nodes in it holding shares.
        nodes: Vec<u64>,
        /// The policy's limit.
        max: usize,
    },
    /// The shares do not form one sharing of the sealed record (deep).
    Inconsistent {
        /// What disagrees.
        detail: String,
    },
}

impl Finding {
    /// The short name used in reports and summaries.
    pub fn name(&self) -> &'static str {
        match self {
            Finding::Missing { .. } => "missing",
            Finding::Corrupt { .. } => "corrupt",
            Finding::Unreachable { .. } => "unreachable",
            Finding::Unexpected { .. } => "unexpected",
            Finding::Misplaced { .. } => "misplaced",
            Finding::Inconsistent { .. } => "inconsistent",
        }
    }
}

/// The verdict on one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordReport {
    /// The record.
    pub record: RecordId,
    /// Holders whose share matches the catalog.
    pub good_shares: usize,
    /// Shares the record should have.
    pub n: usize,
    /// What is wrong (empty: ok).
    pub findings: Vec<Finding>,
    /// Share bytes the nodes read for this verdict (for `--rate`).
    pub bytes_read: u64,
}

impl RecordReport {
    /// Whether nothing is wrong.
    pub fn ok(&self) -> bool {
        self.findings.is_empty() && self.good_shares == self.n
    }

    /// Labels for the report: `ok`, or each finding's name, plus `under-replicated`
    /// when fewer than n shares are good.
    pub fn labels(&self) -> Vec<&'static str> {
        if self.ok() {
            return vec!["ok"];
        }
        let mut out: Vec<&'static str> = self.findings.iter().map(Finding::name).collect();
        if self.good_shares < self.n {
            out.push("under-replicated");
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

fn rack_of(config: &ClusterConfig, node: u64) -> String {
    config.node(node).map_or_else(
        || format!("(node {node} not in config)"),
        |n| n.rack.clone(),
    )
}

/// The light verdict: each node's re-read digest against the catalog, and the rack
/// rule over the nodes that actually hold shares. `seen` has one observation per node
/// asked (every node of the config).
pub fn judge(
    entry: &RecordEntry,
    config: &ClusterConfig,
    seen: &BTreeMap<u64, Observation>,
) -> RecordReport {
    let mut findings = Vec::new();
    let mut good = 0;
    let mut holding: Vec<u64> = Vec::new();
    for h in &entry.holders {
        let rack = rack_of(config, h.node);
        match seen.get(&h.node) {
            None | Some(Observation::Absent) => {
                findings.push(Finding::Missing { node: h.node, rack })
            }
            Some(Observation::Unreachable(reason)) => {
                // Unknown whether it holds the share: count it where the catalog says.
                holding.push(h.node);
                findings.push(Finding::Unreachable {
                    node: h.node,
                    rack,
                    reason: reason.clone(),
                });
            }
            Some(Observation::Held(s)) => {
                holding.push(h.node);
                if s.computed_digest == h.digest {
                    good += 1;
                } else {
                    findings.push(Finding::Corrupt { node: h.node, rack });
                }
            }
        }
    }
    for (node, obs) in seen {
        if entry.holder_on(*node).is_none() && matches!(obs, Observation::Held(_)) {
            holding.push(*node);
            findings.push(Finding::Unexpected {
                node: *node,
                rack: rack_of(config, *node),
            });
        }
    }
    let max = usize::from(config.policy.max_shares_per_rack);
    let mut per_rack: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for node in holding {
        per_rack
            .entry(rack_of(config, node))
            .or_default()
            .push(node);
    }
    for (rack, nodes) in per_rack {
        if nodes.len() > max {
            findings.push(Finding::Misplaced { rack, nodes, max });
        }
    }
    let bytes_read = seen
        .values()
        .map(|o| match o {
            Observation::Held(h) => h.size_bytes,
            _ => 0,
        })
        .sum();
    RecordReport {
        record: entry.id,
        good_shares: good,
        n: entry.holders.len(),
        findings,
        bytes_read,
    }
}

/// The deep verdict on the shares fetched from the holders (`fetched` node -> the
/// share's bytes, or why none came) and what the other nodes reported (`others`):
/// digests and placement as in [`judge`], then whether the good shares lie on one
/// polynomial of degree < k and whether k of them combine to the sealed digest. Never
/// needs the zone key: the combination is ciphertext.
pub fn judge_deep(
    entry: &RecordEntry,
    config: &ClusterConfig,
    fetched: &BTreeMap<u64, Result<Option<Vec<u8>>, String>>,
    others: &BTreeMap<u64, Observation>,
) -> RecordReport {
    let mut seen: BTreeMap<u64, Observation> = others
        .iter()
        .filter(|(node, _)| entry.holder_on(**node).is_none())
        .map(|(n, o)| (*n, o.clone()))
        .collect();
    seen.extend(fetched.iter().map(|(node, r)| {
        let obs = match r {
            Err(reason) => Observation::Unreachable(reason.clone()),
            Ok(None) => Observation::Absent,
            Ok(Some(bytes)) => {
                let d = Digest::of(bytes);
                Observation::Held(HeldShare {
                    stored_digest: d,
                    computed_digest: d,
                    size_bytes: bytes.len() as u64,
                })
            }
        };
        (*node, obs)
    }));
    let mut report = judge(entry, config, &seen);
    let mut good: Vec<(u64, Share)> = Vec::new();
    for h in &entry.holders {
        if let Some(Ok(Some(bytes))) = fetched.get(&h.node)
            && Digest::of(bytes) == h.digest
        {
            match Share::decode(bytes) {
                Ok(s) if s.x() == h.x && s.threshold() == entry.k => good.push((h.node, s)),
                _ => report.findings.push(Finding::Inconsistent {
                    detail: format!(
                        "node {}'s share matches its digest but not its x or threshold",
                        h.node
                    ),
                }),
            }
        }
    }
    let k = usize::from(entry.k);
    let shares: Vec<Share> = good.iter().map(|(_, s)| s.clone()).collect();
    if shares.len() > k {
        match kakera_shamir::check_consistency(&shares) {
            Ok(Consistency::Consistent) => {}
            Ok(Consistency::Outliers(xs)) => {
                let nodes: Vec<u64> = good
                    .iter()
                    .filter(|(_, s)| xs.contains(&s.x()))
                    .map(|(n, _)| *n)
                    .collect();
                report.findings.push(Finding::Inconsistent {
                    detail: format!(
                        "the shares of nodes {nodes:?} do not lie on the others' polynomial"
                    ),
                });
            }
            Ok(Consistency::Ambiguous) => report.findings.push(Finding::Inconsistent {
                detail: "the shares disagree and no majority polynomial exists".into(),
            }),
            Err(e) => report.findings.push(Finding::Inconsistent {
                detail: format!("the shares do not form one sharing: {e}"),
            }),
        }
    }
    if shares.len() >= k {
        match kakera_shamir::combine(&shares[..k]) {
            Ok(sealed)
                if Digest::of(&sealed) == entry.sealed_digest
                    && sealed.len() as u64 == entry.sealed_len => {}
            Ok(_) => report.findings.push(Finding::Inconsistent {
                detail: "k good shares do not combine to the catalog's sealed digest".into(),
            }),
            Err(e) => report.findings.push(Finding::Inconsistent {
                detail: format!("combining k good shares failed: {e}"),
            }),
        }
    }
    report
}

/// What one node said about holding anything of one record (erasure check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The node did not answer.
    Unreachable(String),
    /// What it stores: (committed, staged).
    Answered {
        /// A committed share is stored.
        committed: bool,
        /// A staged share is stored.
        staged: bool,
    },
}

/// A node that still stores something of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Remnant {
    /// The node.
    pub node: u64,
    /// Its rack.
    pub rack: String,
    /// A committed share is stored.
    pub committed: bool,
    /// A staged share is stored.
    pub staged: bool,
}

/// Whether a record is gone from every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErasureReport {
    /// The record.
    pub record: RecordId,
    /// The record is still live in the catalog (not erased).
    pub in_catalog: bool,
    /// Nodes that still store something of it.
    pub remnants: Vec<Remnant>,
    /// Nodes that did not answer (nothing can be said of them), with their racks.
    pub unreachable: Vec<(u64, String, String)>,
    /// How many nodes answered.
    pub nodes_checked: usize,
}

impl ErasureReport {
    /// Confirmed gone: not in the catalog, no node stores anything, every node answered.
    pub fn confirmed(&self) -> bool {
        !self.in_catalog && self.remnants.is_empty() && self.unreachable.is_empty()
    }
}

/// Judges one record's erasure from every node's probe. Nodes of the config that sent
/// no probe count as unreachable.
pub fn judge_erasure(
    record: RecordId,
    in_catalog: bool,
    config: &ClusterConfig,
    probes: &BTreeMap<u64, Probe>,
) -> ErasureReport {
    let mut report = ErasureReport {
        record,
        in_catalog,
        remnants: Vec::new(),
        unreachable: Vec::new(),
        nodes_checked: 0,
    };
    for n in &config.nodes {
        match probes.get(&n.id) {
            Some(Probe::Answered { committed, staged }) => {
                report.nodes_checked += 1;
                if *committed || *staged {
                    report.remnants.push(Remnant {
                        node: n.id,
                        rack: n.rack.clone(),
                        committed: *committed,
                        staged: *staged,
                    });
                }
            }
            Some(Probe::Unreachable(reason)) => {
                report
                    .unreachable
                    .push((n.id, n.rack.clone(), reason.clone()));
            }
            None => report.unreachable.push((
                n.id,
                n.rack.clone(),
                "no answer was recorded".to_string(),
            )),
        }
    }
    report
}

/// Counts per label over many reports.
pub fn summary(reports: &[RecordReport]) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for r in reports {
        for l in r.labels() {
            *out.entry(l).or_default() += 1;
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kakera_proto::catalog::Holder;
    use kakera_proto::{Date, RecordKind, RecordMeta, SubjectTag};

    /// A 3-of-5 config over six nodes in three racks (other modules' tests use it too).
    pub(crate) fn config() -> ClusterConfig {
        let mut toml = String::from(
            "cluster_id = \"c\"\nca_cert = \"ca.pem\"\nracks = [\"a\", \"b\", \"c\"]\n[policy]\nk = 3\nn = 5\n[zones.dc]\n",
        );
        for (id, rack) in [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "a")] {
            toml.push_str(&format!(
                "[[nodes]]\nid = {id}\nname = \"n{id}\"\nrack = \"{rack}\"\nzone = \"dc\"\naddr = \"127.0.0.1:{id}\"\ndata_dir = \"d{id}\"\n"
            ));
        }
        ClusterConfig::parse(&toml).unwrap()
    }

    /// A real 3-of-5 sharing of some bytes over nodes 1..=5, and its catalog entry.
    fn sharing() -> (RecordEntry, Vec<Vec<u8>>) {
        let sealed = b"sealed bytes stand-in, never plaintext".to_vec();
        let shares: Vec<Vec<u8>> = kakera_shamir::split(&sealed, 3, 5)
            .unwrap()
            .iter()
            .map(Share::encode)
            .collect();
        let entry = RecordEntry {
            id: RecordId([1; 16]),
            meta: RecordMeta {
                subject: SubjectTag([0; 32]),
                kind: RecordKind::Claim,
                source: "s".into(),
                effective: Date::new(2025, 1, 1).unwrap(),
                data_kind: None,
            },
            sealed_len: sealed.len() as u64,
            sealed_digest: Digest::of(&sealed),
            k: 3,
            holders: shares
                .iter()
                .enumerate()
                .map(|(i, s)| Holder {
                    node: i as u64 + 1,
                    x: i as u8 + 1,
                    digest: Digest::of(s),
                })
                .collect(),
            committed_at_ms: 1,
        };
        (entry, shares)
    }

    fn held(bytes: &[u8]) -> Observation {
        let d = Digest::of(bytes);
        Observation::Held(HeldShare {
            stored_digest: d,
            computed_digest: d,
            size_bytes: bytes.len() as u64,
        })
    }

    fn light(shares: &[Vec<u8>]) -> BTreeMap<u64, Observation> {
        let mut seen: BTreeMap<u64, Observation> = shares
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u64 + 1, held(s)))
            .collect();
        seen.insert(6, Observation::Absent);
        seen
    }

    /// P3: every kind of damage is named with its node and rack.
    #[test]
    fn light_findings_name_node_and_rack() {
        let c = config();
        let (entry, shares) = sharing();
        let clean = judge(&entry, &c, &light(&shares));
        assert!(clean.ok(), "{clean:?}");
        assert_eq!(clean.labels(), vec!["ok"]);

        let mut seen = light(&shares);
        seen.insert(2, Observation::Absent);
        let mut flipped = shares[3].clone();
        flipped[40] ^= 1;
        seen.insert(4, held(&flipped));
        seen.insert(5, Observation::Unreachable("timeout".into()));
        let r = judge(&entry, &c, &seen);
        assert_eq!(r.good_shares, 2);
        assert_eq!(
            r.findings,
            vec![
                Finding::Missing {
                    node: 2,
                    rack: "a".into()
                },
                Finding::Corrupt {
                    node: 4,
                    rack: "b".into()
                },
                Finding::Unreachable {
                    node: 5,
                    rack: "c".into(),
                    reason: "timeout".into()
                },
            ]
        );
        assert_eq!(
            r.labels(),
            vec!["corrupt", "missing", "under-replicated", "unreachable"]
        );
    }

    /// P1: a share moved to a node in a rack that already holds k - 1 shares is both
    /// unexpected there and breaks the rack rule.
    #[test]
    fn a_moved_share_is_unexpected_and_misplaced() {
        let c = config();
        let (entry, shares) = sharing();
        let mut seen = light(&shares);
        seen.insert(5, Observation::Absent);
        seen.insert(6, held(&shares[4]));
        let r = judge(&entry, &c, &seen);
        assert_eq!(
            r.findings,
            vec![
                Finding::Missing {
                    node: 5,
                    rack: "c".into()
                },
                Finding::Unexpected {
                    node: 6,
                    rack: "a".into()
                },
                Finding::Misplaced {
                    rack: "a".into(),
                    nodes: vec![1, 2, 6],
                    max: 2
                },
            ]
        );
    }

    /// Deep: a share swapped for another sharing's share with a forged catalog digest
    /// is caught by the polynomial check and by the combination.
    #[test]
    fn deep_checks_the_polynomial_and_the_sealed_digest() {
        let c = config();
        let (entry, shares) = sharing();
        let fetched: BTreeMap<u64, Result<Option<Vec<u8>>, String>> = shares
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u64 + 1, Ok(Some(s.clone()))))
            .collect();
        let none = BTreeMap::new();
        let r = judge_deep(&entry, &c, &fetched, &none);
        assert!(r.ok(), "{r:?}");

        // A share of another sharing at x = 2 whose digest the catalog was made to
        // carry (a forged commit): digests pass, the polynomial does not.
        let other = kakera_shamir::split(b"a different record of the same len!!!!", 3, 5).unwrap();
        let mut forged_entry = entry.clone();
        let mut forged = fetched.clone();
        let alien = Share::from_parts(shares_set(&shares[0]), 3, 2, other[1].data().to_vec())
            .unwrap()
            .encode();
        forged_entry.holders[1].digest = Digest::of(&alien);
        forged.insert(2, Ok(Some(alien)));
        let r = judge_deep(&forged_entry, &c, &forged, &none);
        assert!(
            r.findings
                .iter()
                .any(|f| matches!(f, Finding::Inconsistent { detail } if detail.contains("[2]"))),
            "{r:?}"
        );
        assert!(r.labels().contains(&"inconsistent"));

        // Digest mismatch and absence are reported as in the light check.
        let mut damaged = fetched.clone();
        damaged.insert(3, Ok(None));
        damaged.insert(5, Err("unreachable".into()));
        let r = judge_deep(&entry, &c, &damaged, &none);
        assert_eq!(r.good_shares, 3);
        assert!(r.labels().contains(&"missing") && r.labels().contains(&"unreachable"));
        assert!(!r.labels().contains(&"inconsistent"));
        assert_eq!(summary(&[r.clone(), r]).get("missing"), Some(&2));
    }

    fn shares_set(bytes: &[u8]) -> kakera_shamir::SetId {
        Share::decode(bytes).unwrap().set_id()
    }

    /// P6: an erasure is confirmed only when the record is out of the catalog, every
    /// node answered, and none stores anything, committed or staged; each remnant and
    /// each silent node is named with its rack.
    #[test]
    fn erasure_needs_every_node_clean() {
        let c = config();
        let id = RecordId([9; 16]);
        let clean = |_: u64| Probe::Answered {
            committed: false,
            staged: false,
        };
        let mut probes: BTreeMap<u64, Probe> = (1..=6).map(|n| (n, clean(n))).collect();
        assert!(judge_erasure(id, false, &c, &probes).confirmed());
        assert!(!judge_erasure(id, true, &c, &probes).confirmed());

        probes.insert(
            4,
            Probe::Answered {
                committed: false,
                staged: true,
            },
        );
        probes.insert(6, Probe::Unreachable("timed out".into()));
        probes.remove(&2);
        let r = judge_erasure(id, false, &c, &probes);
        assert!(!r.confirmed());
        assert_eq!(
            r.remnants,
            vec![Remnant {
                node: 4,
                rack: "b".into(),
                committed: false,
                staged: true
            }]
        );
        let silent: Vec<(u64, &str)> = r
            .unreachable
            .iter()
            .map(|(n, rack, _)| (*n, rack.as_str()))
            .collect();
        assert_eq!(silent, vec![(2, "a"), (6, "a")]);
        assert_eq!(r.nodes_checked, 4);
    }
}
