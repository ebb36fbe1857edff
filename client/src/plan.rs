//! Which node to ask for which share during a read: a pure state machine with no IO
//! and no clock, driven by the client's fetch loop (`crate::client`). It asks k holders
//! of each record first, one more when the caller's hedge timer fires ([`hedge_at_ms`]),
//! and a replacement whenever a share fails (node unreachable, share missing, digest
//! wrong), until the record has k good shares or no holder is left.

use std::collections::BTreeMap;

use kakera_proto::RecordId;
use kakera_proto::catalog::RecordEntry;

/// A share that could not be used, and why. Reported to the caller (a bad share is
/// what repair fixes); never contains share bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadShare {
    /// The record.
    pub record: RecordId,
    /// The node that holds (or should hold) the share.
    pub node: u64,
    /// What was wrong.
    pub reason: String,
}

/// The hedge never fires sooner than this after the first answer of a round.
pub const HEDGE_MIN_GAP_MS: u64 = 40;
/// The hedge fires this long after a round starts if no holder has answered yet (plus
/// transfer time at [`HEDGE_FALLBACK_BYTES_PER_MS`]).
pub const HEDGE_FALLBACK_MS: u64 = 1_000;
/// The transfer rate the fallback allows for: 10 MB/s, far below loopback or a
/// datacenter link, so a loaded cluster is not mistaken for a stuck holder.
pub const HEDGE_FALLBACK_BYTES_PER_MS: u64 = 10_000;

/// When to ask one more holder, in ms after the fetch round started. Relative to
/// the round's own answers: once a holder has answered (at `first_answer_ms`), a
/// holder that takes twice as long (and at least [`HEDGE_MIN_GAP_MS`] more) is
/// hedged. A fixed delay would fire for every round of a loaded cluster, where every
/// holder is slow alike, and add a (k+1)-th share's bytes to each read exactly when
/// the cluster can least afford them. With no answer yet, the generous fallback for
/// `round_bytes` (the bytes asked of all holders) applies.
pub fn hedge_at_ms(first_answer_ms: Option<u64>, round_bytes: u64) -> u64 {
    match first_answer_ms {
        Some(t) => t.saturating_add(t.max(HEDGE_MIN_GAP_MS)),
        None => HEDGE_FALLBACK_MS.saturating_add(round_bytes / HEDGE_FALLBACK_BYTES_PER_MS),
    }
}

/// Asks to send: node -> records wanted from it.
pub type Asks = BTreeMap<u64, Vec<RecordId>>;

#[derive(Debug)]
struct RecordPlan {
    k: usize,
    /// Holders in the order to ask them.
    order: Vec<u64>,
    /// How many of `order` were asked.
    asked: usize,
    in_flight: usize,
    good: usize,
}

impl RecordPlan {
    fn settled(&self) -> bool {
        self.good >= self.k || self.good + self.in_flight + (self.order.len() - self.asked) < self.k
    }
}

/// The read of one batch of records.
#[derive(Debug)]
pub struct ReadPlan {
    records: BTreeMap<RecordId, RecordPlan>,
    bad: Vec<BadShare>,
}

impl ReadPlan {
    /// A plan for `entries`. Record i starts at holder i mod n, so a batch spreads its
    /// load over all holders.
    pub fn new(entries: &[RecordEntry]) -> ReadPlan {
        let records = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let n = e.holders.len().max(1);
                let mut order: Vec<u64> = e.holders.iter().map(|h| h.node).collect();
                order.rotate_left(i % n);
                let plan = RecordPlan {
                    k: usize::from(e.k),
                    order,
                    asked: 0,
                    in_flight: 0,
                    good: 0,
                };
                (e.id, plan)
            })
            .collect();
        ReadPlan {
            records,
            bad: Vec::new(),
        }
    }

    fn ask_more(plan: &mut RecordPlan, id: RecordId, count: usize, asks: &mut Asks) {
        for _ in 0..count {
            if plan.asked == plan.order.len() {
                break;
            }
            let node = plan.order[plan.asked];
            plan.asked += 1;
            plan.in_flight += 1;
            asks.entry(node).or_default().push(id);
        }
    }

    /// The first asks: k holders of every record.
    pub fn start(&mut self) -> Asks {
        let mut asks = Asks::new();
        for (id, plan) in &mut self.records {
            let k = plan.k;
            Self::ask_more(plan, *id, k, &mut asks);
        }
        asks
    }

    /// The hedge: one more holder for every record still short of k good shares
    /// with fewer than k + 1 shares good or in flight.
    pub fn hedge(&mut self) -> Asks {
        let mut asks = Asks::new();
        for (id, plan) in &mut self.records {
            if plan.good < plan.k && plan.good + plan.in_flight <= plan.k {
                Self::ask_more(plan, *id, 1, &mut asks);
            }
        }
        asks
    }

    /// A good share of `record` arrived.
    pub fn good(&mut self, record: &RecordId) {
        if let Some(p) = self.records.get_mut(record) {
            p.in_flight = p.in_flight.saturating_sub(1);
            p.good += 1;
        }
    }

    /// A share of `record` from `node` failed; returns the replacement asks.
    pub fn failed(&mut self, record: &RecordId, node: u64, reason: String) -> Asks {
        let mut asks = Asks::new();
        self.bad.push(BadShare {
            record: *record,
            node,
            reason,
        });
        if let Some(p) = self.records.get_mut(record) {
            p.in_flight = p.in_flight.saturating_sub(1);
            if p.good < p.k {
                let short = p.k.saturating_sub(p.good + p.in_flight);
                Self::ask_more(p, *record, short, &mut asks);
            }
        }
        asks
    }

    /// Whether `record` has k good shares.
    pub fn complete(&self, record: &RecordId) -> bool {
        self.records.get(record).is_some_and(|p| p.good >= p.k)
    }

    /// Whether every record has k good shares or can no longer get them.
    pub fn settled(&self) -> bool {
        self.records.values().all(RecordPlan::settled)
    }

    /// The shares reported bad so far.
    pub fn bad_shares(&self) -> &[BadShare] {
        &self.bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kakera_proto::catalog::Holder;
    use kakera_proto::{Date, Digest, RecordKind, RecordMeta, SubjectTag};

    fn entry(i: u8) -> RecordEntry {
        RecordEntry {
            id: RecordId([i; 16]),
            meta: RecordMeta {
                subject: SubjectTag([0; 32]),
                kind: RecordKind::Claim,
                source: "s".into(),
                effective: Date::new(2024, 1, 1).unwrap(),
                data_kind: None,
            },
            sealed_len: 10,
            sealed_digest: Digest([0; 32]),
            k: 3,
            holders: (1..=5)
                .map(|x| Holder {
                    node: u64::from(x),
                    x,
                    digest: Digest([x; 32]),
                })
                .collect(),
            committed_at_ms: 1,
        }
    }

    fn count(asks: &Asks) -> usize {
        asks.values().map(Vec::len).sum()
    }

    #[test]
    fn asks_k_then_hedges_one_more_and_spreads_load() {
        let entries: Vec<_> = (0..5).map(entry).collect();
        let mut plan = ReadPlan::new(&entries);
        let first = plan.start();
        assert_eq!(count(&first), 15);
        // Five records rotated over five holders: each node is asked three times.
        assert!(first.values().all(|r| r.len() == 3), "{first:?}");
        let hedge = plan.hedge();
        assert_eq!(count(&hedge), 5);
        // Already k + 1 in flight: no second hedge.
        assert_eq!(count(&plan.hedge()), 0);
        assert!(!plan.settled());
        for e in &entries {
            for _ in 0..3 {
                plan.good(&e.id);
            }
        }
        assert!(plan.settled());
        assert!(entries.iter().all(|e| plan.complete(&e.id)));
    }

    /// P3 (reads stay available when a holder stalls, without doubling the load when
    /// all are slow): the hedge follows the round's own answers.
    #[test]
    fn the_hedge_waits_for_twice_the_first_answer() {
        // Nothing answered yet: one second plus 10 MB/s for the round's bytes.
        assert_eq!(hedge_at_ms(None, 0), 1_000);
        assert_eq!(hedge_at_ms(None, 48_000_000), 5_800);
        // A fast first answer: at least the minimum gap after it.
        assert_eq!(hedge_at_ms(Some(3), 1 << 30), 43);
        // A loaded cluster (first answer after 3 s): the others get as long again.
        assert_eq!(hedge_at_ms(Some(3_000), 1 << 30), 6_000);
        assert_eq!(hedge_at_ms(Some(u64::MAX), 0), u64::MAX);
    }

    /// P3: a bad share is replaced by another holder's until none is left; the read
    /// settles as failed only when fewer than k good shares can exist.
    #[test]
    fn failures_are_replaced_until_holders_run_out() {
        let e = entry(1);
        let mut plan = ReadPlan::new(std::slice::from_ref(&e));
        let first = plan.start();
        assert_eq!(first.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        plan.good(&e.id);
        let r = plan.failed(&e.id, 2, "digest mismatch".into());
        assert_eq!(r.keys().copied().collect::<Vec<_>>(), vec![4]);
        let r = plan.failed(&e.id, 3, "unreachable".into());
        assert_eq!(r.keys().copied().collect::<Vec<_>>(), vec![5]);
        assert!(!plan.settled());
        let r = plan.failed(&e.id, 4, "missing".into());
        assert!(r.is_empty(), "no holder left");
        // One good, one in flight, none left to ask: k = 3 is out of reach.
        assert!(plan.settled());
        assert!(!plan.complete(&e.id));
        assert_eq!(plan.bad_shares().len(), 3);
        assert_eq!(plan.bad_shares()[0].node, 2);
    }
}
