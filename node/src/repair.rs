//! Failure detection and repair decisions, free of IO: the leader's view of each node
//! (alive, suspect, dead from the time since it last answered), which shares must move
//! and where (placement rules), in which order, and the helpers' session memory for
//! masked repair. The daemon pings, scans and carries out what these functions decide.
//!
//! A share moves when its holder is dead (cause `Dead`) or draining/decommissioned
//! (cause `Drain`). Its new holder is chosen by `kakera_config::choose_replacement`
//! among alive, active non-holders within the rack rule; if none qualifies the share
//! waits and is counted. Records with the fewest live holders go first; dead before
//! drain.

use std::collections::{BTreeMap, HashMap};

use kakera_config::{ClusterConfig, NodeView, choose_replacement};
use kakera_proto::catalog::{NodeMode, RecordEntry, RepairCause, RepairTask};
use kakera_proto::message::RepairSession;
use kakera_shamir::repair::PadSeed;

/// The leader's verdict on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HealthState {
    /// Answered within `suspect_after_ms`.
    Alive,
    /// Silent for longer: no new shares go there.
    Suspect,
    /// Silent for longer than `dead_after_ms`: its shares are regenerated elsewhere.
    Dead,
}

impl HealthState {
    /// The lowercase name in status.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Alive => "alive",
            HealthState::Suspect => "suspect",
            HealthState::Dead => "dead",
        }
    }
}

/// When each node last answered, on the leader's monotonic clock (ms).
#[derive(Debug, Clone, Default)]
pub struct HealthTracker {
    /// When the tracker started (a new leader gives every node the full grace period).
    started_ms: Option<u64>,
    last_ok_ms: BTreeMap<u64, u64>,
}

impl HealthTracker {
    /// Notes that `node` answered at `now_ms`.
    pub fn answered(&mut self, node: u64, now_ms: u64) {
        self.started_ms.get_or_insert(now_ms);
        self.last_ok_ms.insert(node, now_ms);
    }

    /// Notes that a probe round ran at `now_ms` (starts the grace period).
    pub fn probed(&mut self, now_ms: u64) {
        self.started_ms.get_or_insert(now_ms);
    }

    /// Milliseconds since `node` last answered, if it ever did.
    pub fn silent_ms(&self, node: u64, now_ms: u64) -> Option<u64> {
        self.last_ok_ms
            .get(&node)
            .map(|t| now_ms.saturating_sub(*t))
    }

    /// The verdict on `node` at `now_ms`. A node never heard from is judged from the
    /// tracker's start, so a new leader does not declare everyone dead at once.
    pub fn state(&self, node: u64, now_ms: u64, config: &ClusterConfig) -> HealthState {
        let since = self
            .last_ok_ms
            .get(&node)
            .copied()
            .or(self.started_ms)
            .unwrap_or(now_ms);
        let silent = now_ms.saturating_sub(since);
        if silent > config.health.dead_after_ms {
            HealthState::Dead
        } else if silent > config.health.suspect_after_ms {
            HealthState::Suspect
        } else {
            HealthState::Alive
        }
    }
}

/// What the planner knows of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// The config node id.
    pub id: u64,
    /// Its rack.
    pub rack: String,
    /// The operator's mode.
    pub mode: NodeMode,
    /// The failure detector's verdict.
    pub health: HealthState,
    /// Shares it holds (for least-full choice).
    pub shares: u64,
}

impl NodeFacts {
    /// May receive new shares.
    pub fn accepts(&self) -> bool {
        self.mode == NodeMode::Active && self.health == HealthState::Alive
    }

    /// Why its shares must move, if they must.
    pub fn evicts(&self) -> Option<RepairCause> {
        if self.health == HealthState::Dead {
            Some(RepairCause::Dead)
        } else if self.mode != NodeMode::Active {
            Some(RepairCause::Drain)
        } else {
            None
        }
    }
}

/// A share that must move, found by [`plan_record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// Holders of the record not dead: fewer means more urgent.
    pub live_holders: usize,
    /// The move; `to` is `None` when no node qualifies (it waits).
    pub task: RepairTask,
    /// Whether a node was found.
    pub placed: bool,
}

/// Holders of `entry` that are not dead.
fn live_holders(entry: &RecordEntry, nodes: &BTreeMap<u64, NodeFacts>) -> usize {
    entry
        .holders
        .iter()
        .filter(|h| {
            nodes
                .get(&h.node)
                .is_some_and(|n| n.health != HealthState::Dead)
        })
        .count()
}

/// The first share of `entry` that must move, and where to. `pending` is the record's
/// assigned move, if any: kept while its new holder can still take it. Plain replicas
/// (a benchmark cluster's baseline, k = 1) are never planned: repair regenerates
/// shares.
pub fn plan_record(
    entry: &RecordEntry,
    nodes: &BTreeMap<u64, NodeFacts>,
    config: &ClusterConfig,
    pending: Option<&RepairTask>,
) -> Option<Need> {
    if entry.is_plain_replica() {
        return None;
    }
    let live_holders = live_holders(entry, nodes);
    if let Some(p) = pending
        && nodes.get(&p.to).is_some_and(NodeFacts::accepts)
    {
        return Some(Need {
            live_holders,
            task: p.clone(),
            placed: true,
        });
    }
    // Dead holders before draining ones.
    let (holder, cause) = entry
        .holders
        .iter()
        .filter_map(|h| {
            let cause = match nodes.get(&h.node) {
                Some(n) => n.evicts()?,
                // A holder no longer in the config counts as dead.
                None => RepairCause::Dead,
            };
            Some((h, cause))
        })
        .min_by_key(|(h, cause)| (*cause, h.x))?;
    fn view(n: &NodeFacts) -> NodeView<'_> {
        NodeView {
            id: n.id,
            rack: n.rack.as_str(),
            fill: n.shares,
        }
    }
    let keeping: Vec<NodeView<'_>> = entry
        .holders
        .iter()
        .filter(|h| h.node != holder.node)
        .filter_map(|h| nodes.get(&h.node).map(view))
        .collect();
    let candidates: Vec<NodeView<'_>> = nodes.values().filter(|n| n.accepts()).map(view).collect();
    let to = choose_replacement(&entry.id.0, &keeping, &candidates, &config.policy);
    Some(Need {
        live_holders,
        task: RepairTask {
            record: entry.id,
            x: holder.x,
            from: holder.node,
            to: to.unwrap_or(0),
            cause,
            assigned_at_ms: 0,
            assigned_index: 0,
        },
        placed: to.is_some(),
    })
}

/// Catalog pages the leader's repair scan reads per tick at full pace.
pub const SCAN_PAGES_URGENT: usize = 8;
/// Catalog pages it reads per tick at its routine pace.
pub const SCAN_PAGES_ROUTINE: usize = 1;
// A routine pass still ends, and never goes faster than an urgent one.
const _: () = assert!(SCAN_PAGES_ROUTINE >= 1 && SCAN_PAGES_ROUTINE <= SCAN_PAGES_URGENT);

/// What the leader's repair scan knows when it chooses its pace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanState {
    /// This leader has finished a whole pass since it began to lead.
    pub passed_once: bool,
    /// The last finished pass, or the current one so far, found shares to move.
    pub found_needs: bool,
}

/// Pages the repair scan reads this tick. [`plan_record`] finds a share to move
/// only on a holder that is dead, draining or gone from the config, or where a move
/// is pending; so while every node in `nodes` is up and active, the last pass found
/// nothing and this leader has finished one (which also found the pending moves an
/// earlier leader assigned), a pass can find only what a change of these facts
/// brings, and the scan goes at its routine pace ([`SCAN_PAGES_ROUTINE`]: it keeps
/// the share counts current). Any of them, and it goes at full pace. At 10^7
/// records a routine pass reads 500 entries a second instead of 4,000.
pub fn scan_pages_per_tick(nodes: &BTreeMap<u64, NodeFacts>, state: ScanState) -> usize {
    let moving = nodes.values().any(|n| n.evicts().is_some());
    if moving || state.found_needs || !state.passed_once {
        SCAN_PAGES_URGENT
    } else {
        SCAN_PAGES_ROUTINE
    }
}

/// The in-place repair of a bad share its holder confirmed (`report`), if it is
/// still due: the holder still holds that share in the catalog, is healthy and
/// active (a share on a dead or draining node moves by [`plan_record`] instead), and
/// no other move of the record is pending. `bad_on` counts the record's holders with
/// a confirmed bad share: fewer good shares means more urgent.
pub fn plan_in_place(
    entry: &RecordEntry,
    report: &kakera_proto::catalog::ShareReport,
    nodes: &BTreeMap<u64, NodeFacts>,
    pending: Option<&RepairTask>,
    bad_on: usize,
) -> Option<Need> {
    if entry.is_plain_replica() || pending.is_some() {
        return None;
    }
    let holder = entry.holder_on(report.node)?;
    if !nodes.get(&report.node).is_some_and(NodeFacts::accepts) {
        return None;
    }
    let live_holders = live_holders(entry, nodes).saturating_sub(bad_on);
    Some(Need {
        live_holders,
        task: RepairTask {
            record: entry.id,
            x: holder.x,
            from: report.node,
            to: report.node,
            cause: RepairCause::Corrupt,
            assigned_at_ms: 0,
            assigned_index: 0,
        },
        placed: true,
    })
}

/// Orders needs most urgent first: fewest live holders, dead before drain, then record.
pub fn prioritize(needs: &mut [Need]) {
    needs.sort_by_key(|n| (n.live_holders, n.task.cause, n.task.record));
}

/// The helpers a new holder asks: `k` holders other than itself, skipping `excluded`
/// (failed in an earlier attempt); nodes the leader called unhealthy (`avoid`) and the
/// leaving node (it may be dead) come last, so a lost rack's nodes are not tried
/// first while live holders suffice.
pub fn choose_helpers(
    entry: &RecordEntry,
    task: &RepairTask,
    excluded: &[u64],
    avoid: &[u64],
) -> Option<Vec<(u64, u8)>> {
    let mut order: Vec<(u64, u8)> = entry
        .holders
        .iter()
        .filter(|h| h.node != task.to && !excluded.contains(&h.node))
        .map(|h| (h.node, h.x))
        .collect();
    order.sort_by_key(|(node, _)| (avoid.contains(node), *node == task.from));
    order.truncate(usize::from(entry.k));
    (order.len() == usize::from(entry.k)).then_some(order)
}

/// How long to wait before starting a move that makes helpers read `cost_bytes`,
/// when `spent_bytes` were started `elapsed_ms` ago under `rate_mb_s` (10^6 bytes
/// per second). A token bucket holding one second of the rate: a burst of up to a
/// second's bytes starts at once, then moves start as the rate allows. A move larger
/// than a second's bytes starts when the bucket is full (never waits forever).
pub fn pace_wait_ms(spent_bytes: u64, cost_bytes: u64, elapsed_ms: u64, rate_mb_s: u32) -> u64 {
    // In u128: no product here can overflow it.
    let per_s = u128::from(rate_mb_s.max(1)) * 1_000_000;
    // The bucket refills at per_s bytes per second and holds at most per_s.
    let allowed = per_s + per_s * u128::from(elapsed_ms) / 1_000;
    let need = u128::from(spent_bytes) + u128::from(cost_bytes).min(per_s);
    if need <= allowed {
        return 0;
    }
    // Round up so that the wait always reaches the allowance.
    u64::try_from(((need - allowed) * 1_000).div_ceil(per_s)).unwrap_or(u64::MAX)
}

/// Pending moves waiting to run, by new holder, cut into batches: at most
/// `max_moves` moves to one node whose helpers read at most `budget_bytes` together
/// (one second of the repair rate; a move larger than that goes alone), the new
/// holders taken in turn.
#[derive(Debug, Default)]
pub struct BatchQueue {
    by_holder: BTreeMap<u64, std::collections::VecDeque<(RepairTask, u64)>>,
    turn: std::collections::VecDeque<u64>,
}

impl BatchQueue {
    /// Queues `task`, whose helpers read `cost_bytes`.
    pub fn push(&mut self, task: RepairTask, cost_bytes: u64) {
        let q = self.by_holder.entry(task.to).or_default();
        if q.is_empty() {
            self.turn.push_back(task.to);
        }
        q.push_back((task, cost_bytes));
    }

    /// Whether no move waits.
    pub fn is_empty(&self) -> bool {
        self.turn.is_empty()
    }

    /// The next batch and what its helpers read, or `None` when empty.
    pub fn next_batch(
        &mut self,
        max_moves: usize,
        budget_bytes: u64,
    ) -> Option<(Vec<RepairTask>, u64)> {
        let to = self.turn.pop_front()?;
        let q = self.by_holder.get_mut(&to)?;
        let (mut batch, mut cost) = (Vec::new(), 0u64);
        while let Some((_, c)) = q.front() {
            if !batch.is_empty()
                && (batch.len() >= max_moves.max(1) || cost.saturating_add(*c) > budget_bytes)
            {
                break;
            }
            cost = cost.saturating_add(*c);
            if let Some((t, _)) = q.pop_front() {
                batch.push(t);
            }
        }
        if q.is_empty() {
            self.by_holder.remove(&to);
        } else {
            self.turn.push_back(to);
        }
        Some((batch, cost))
    }
}

/// Most helper sessions and received pads a node keeps at once.
pub const MAX_SESSIONS: usize = 1024;
/// How long a helper keeps a session or a pad that is not used.
pub const SESSION_TTL_MS: u64 = 60_000;

/// A helper's memory of one session: the session and the seeds it drew.
#[derive(Debug)]
pub struct HelperSession {
    /// The session.
    pub session: RepairSession,
    /// Seeds this helper drew for the helpers after it.
    pub drawn: Vec<PadSeed>,
    /// When it was prepared (monotonic ms).
    pub at_ms: u64,
}

/// A helper's memory of one batched session.
#[derive(Debug)]
pub struct HelperBatch {
    /// The session.
    pub session: kakera_proto::RepairBatchSession,
    /// Seeds this helper drew for the helpers after it.
    pub drawn: Vec<PadSeed>,
    /// When it was prepared (monotonic ms).
    pub at_ms: u64,
}

/// Sessions and pads on a helper, bounded in count and age.
#[derive(Debug, Default)]
pub struct Sessions {
    sessions: HashMap<[u8; 16], HelperSession>,
    batches: HashMap<[u8; 16], HelperBatch>,
    pads: HashMap<([u8; 16], u64), (PadSeed, u64)>,
}

impl Sessions {
    fn expire(&mut self, now_ms: u64) {
        self.sessions
            .retain(|_, s| now_ms.saturating_sub(s.at_ms) < SESSION_TTL_MS);
        self.batches
            .retain(|_, s| now_ms.saturating_sub(s.at_ms) < SESSION_TTL_MS);
        self.pads
            .retain(|_, (_, at)| now_ms.saturating_sub(*at) < SESSION_TTL_MS);
    }

    /// Keeps a prepared session. False if the node holds too many already.
    pub fn insert(&mut self, s: HelperSession, now_ms: u64) -> bool {
        self.expire(now_ms);
        if self.sessions.len() >= MAX_SESSIONS {
            return false;
        }
        self.sessions.insert(s.session.id, s);
        true
    }

    /// Keeps a prepared batched session. False if the node holds too many already.
    pub fn insert_batch(&mut self, s: HelperBatch, now_ms: u64) -> bool {
        self.expire(now_ms);
        if self.sessions.len() + self.batches.len() >= MAX_SESSIONS {
            return false;
        }
        self.batches.insert(s.session.id, s);
        true
    }

    /// Takes a batched session and every pad it needs, as [`Sessions::take`].
    pub fn take_batch(
        &mut self,
        id: [u8; 16],
        me: u64,
    ) -> Result<(kakera_proto::RepairBatchSession, Vec<PadSeed>), String> {
        let s = self
            .batches
            .get(&id)
            .ok_or("no such repair session here (expired or never prepared)")?;
        let before = self.pads_before(id, &s.session.helpers, me)?;
        let s = self
            .batches
            .remove(&id)
            .ok_or("no such repair session here")?;
        Ok((s.session, self.seeds(id, s.drawn, &before)))
    }

    /// Keeps a pad received from helper `from`. False if too many are held.
    pub fn pad(&mut self, session: [u8; 16], from: u64, seed: PadSeed, now_ms: u64) -> bool {
        self.expire(now_ms);
        if self.pads.len() >= MAX_SESSIONS * 8 {
            return false;
        }
        self.pads.insert((session, from), (seed, now_ms));
        true
    }

    /// Takes a session and every pad it needs: the seeds this helper drew and those
    /// received from each helper before it. `Err` names what is missing.
    pub fn take(&mut self, id: [u8; 16], me: u64) -> Result<(RepairSession, Vec<PadSeed>), String> {
        let s = self
            .sessions
            .get(&id)
            .ok_or("no such repair session here (expired or never prepared)")?;
        let helpers: Vec<u64> = s.session.helpers.iter().map(|(n, _)| *n).collect();
        let before = self.pads_before(id, &helpers, me)?;
        let s = self
            .sessions
            .remove(&id)
            .ok_or("no such repair session here")?;
        Ok((s.session, self.seeds(id, s.drawn, &before)))
    }

    /// The helpers before `me` in session `id`, once every one's pad is here.
    fn pads_before(&self, id: [u8; 16], helpers: &[u64], me: u64) -> Result<Vec<u64>, String> {
        let pos = helpers
            .iter()
            .position(|n| *n == me)
            .ok_or("this node is not a helper of the session")?;
        let before = helpers[..pos].to_vec();
        if let Some(missing) = before.iter().find(|n| !self.pads.contains_key(&(id, **n))) {
            return Err(format!("the pad from node {missing} has not arrived"));
        }
        Ok(before)
    }

    /// The seeds `drawn` here, then the pads received from `before`, taken out.
    fn seeds(&mut self, id: [u8; 16], drawn: Vec<PadSeed>, before: &[u64]) -> Vec<PadSeed> {
        let mut seeds = drawn;
        for n in before {
            if let Some((seed, _)) = self.pads.remove(&(id, *n)) {
                seeds.push(seed);
            }
        }
        seeds
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use kakera_proto::catalog::Holder;
    use kakera_proto::{Date, Digest, RecordId, RecordKind, RecordMeta, SubjectTag};

    use super::*;

    /// P3 (a bad share is repaired): a confirmed bad share is regenerated in place on
    /// its healthy holder at its x; a share whose holder is draining or dead moves by
    /// the usual plan instead; a non-holder, a record with a move pending, or a
    /// suspect holder gets nothing; records with fewer good shares come first.
    #[test]
    fn a_bad_share_is_regenerated_in_place_on_its_healthy_holder() {
        use kakera_proto::catalog::{ShareProblem, ShareReport};
        let c = config();
        let e = entry(1, [1, 3, 5, 2, 4]);
        let report = |node| ShareReport {
            record: e.id,
            node,
            problem: ShareProblem::Corrupt,
        };
        let healthy = facts(&c, |_| (NodeMode::Active, HealthState::Alive));
        let need = plan_in_place(&e, &report(3), &healthy, None, 1).unwrap();
        assert_eq!(
            (need.task.from, need.task.to, need.task.x, need.task.cause),
            (3, 3, 2, RepairCause::Corrupt)
        );
        assert_eq!(need.live_holders, 4);
        // Two bad shares of one record: more urgent than one.
        let worse = plan_in_place(&e, &report(5), &healthy, None, 2).unwrap();
        let mut needs = vec![need.clone(), worse.clone()];
        prioritize(&mut needs);
        assert_eq!(needs[0], worse);
        // Not a holder; a move already pending.
        assert!(plan_in_place(&e, &report(6), &healthy, None, 1).is_none());
        assert!(plan_in_place(&e, &report(3), &healthy, Some(&need.task), 1).is_none());
        // Its holder draining, suspect or dead: no in-place repair.
        for state in [
            (NodeMode::Draining, HealthState::Alive),
            (NodeMode::Active, HealthState::Suspect),
            (NodeMode::Active, HealthState::Dead),
        ] {
            let f = facts(&c, |n| {
                if n == 3 {
                    state
                } else {
                    (NodeMode::Active, HealthState::Alive)
                }
            });
            assert!(
                plan_in_place(&e, &report(3), &f, None, 1).is_none(),
                "{state:?}"
            );
        }
    }

    /// P4 (repair at the configured rate, many moves per session): batches hold at
    /// most `max_moves` moves to one new holder and one second of the rate's bytes
    /// (a larger move alone), and new holders take turns.
    #[test]
    fn batches_are_cut_by_count_bytes_and_holder() {
        let task = |record: u8, to: u64| RepairTask {
            record: RecordId([record; 16]),
            x: 1,
            from: 9,
            to,
            cause: RepairCause::Dead,
            assigned_at_ms: 0,
            assigned_index: 1,
        };
        let mut q = BatchQueue::default();
        for r in 0..5 {
            q.push(task(r, 6), 10);
        }
        q.push(task(50, 7), 10);
        q.push(task(60, 6), 1_000);
        let ids = |b: &[RepairTask]| b.iter().map(|t| t.record.0[0]).collect::<Vec<_>>();
        // Count: 3 moves; then node 7's turn; then bytes: 2 x 10 fit under 25.
        let (b, cost) = q.next_batch(3, 25).unwrap();
        assert_eq!((ids(&b), cost), (vec![0, 1], 20));
        let (b, _) = q.next_batch(3, 1_000).unwrap();
        assert_eq!(ids(&b), vec![50]);
        let (b, cost) = q.next_batch(3, 1_000).unwrap();
        assert_eq!((ids(&b), cost), (vec![2, 3, 4], 30));
        // A move over the budget goes alone.
        let (b, cost) = q.next_batch(3, 25).unwrap();
        assert_eq!((ids(&b), cost), (vec![60], 1_000));
        assert!(q.is_empty() && q.next_batch(3, 25).is_none());
    }

    /// P4 (repair runs at the configured rate and no faster): the pacing of moves.
    #[test]
    fn repair_moves_are_paced_to_the_configured_rate() {
        // 10 MB/s: the first second's bytes start at once.
        assert_eq!(pace_wait_ms(0, 4_000_000, 0, 10), 0);
        assert_eq!(pace_wait_ms(6_000_000, 4_000_000, 0, 10), 0);
        // 2 MB more than the bucket holds: 200 ms at 10 MB/s.
        assert_eq!(pace_wait_ms(8_000_000, 4_000_000, 0, 10), 200);
        // After that wait the same move may start.
        assert_eq!(pace_wait_ms(8_000_000, 4_000_000, 200, 10), 0);
        // Sustained: 100 MB in 9 s at 10 MB/s is exactly on schedule.
        assert_eq!(pace_wait_ms(90_000_000, 10_000_000, 9_000, 10), 0);
        assert_eq!(pace_wait_ms(90_000_001, 10_000_000, 9_000, 10), 1);
        // A move larger than a second's bytes waits only for a full bucket.
        assert_eq!(pace_wait_ms(0, 50_000_000, 0, 10), 0);
        assert_eq!(pace_wait_ms(50_000_000, 50_000_000, 1_000, 10), 4_000);
        // No overflow at the extremes.
        assert_eq!(pace_wait_ms(u64::MAX, u64::MAX, u64::MAX, u32::MAX), 0);
    }

    fn config() -> ClusterConfig {
        let mut toml = String::from(
            "cluster_id = \"c\"\nca_cert = \"ca.pem\"\nracks = [\"a\", \"b\", \"c\"]\n[policy]\nk = 3\nn = 5\n[zones.dc]\n[health]\nsuspect_after_ms = 1000\ndead_after_ms = 5000\n",
        );
        for (id, rack) in [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")] {
            toml.push_str(&format!(
                "[[nodes]]\nid = {id}\nname = \"n{id}\"\nrack = \"{rack}\"\nzone = \"dc\"\naddr = \"127.0.0.1:{id}\"\ndata_dir = \"d{id}\"\n"
            ));
        }
        ClusterConfig::parse(&toml).unwrap()
    }

    fn entry(id: u8, holders: [u64; 5]) -> RecordEntry {
        RecordEntry {
            id: RecordId([id; 16]),
            meta: RecordMeta {
                subject: SubjectTag([0; 32]),
                kind: RecordKind::Claim,
                source: "s".into(),
                effective: Date::new(2025, 1, 1).unwrap(),
                data_kind: None,
            },
            sealed_len: 10,
            sealed_digest: Digest::of(b"x"),
            k: 3,
            holders: holders
                .iter()
                .enumerate()
                .map(|(i, &node)| Holder {
                    node,
                    x: i as u8 + 1,
                    digest: Digest::of(&[i as u8]),
                })
                .collect(),
            committed_at_ms: 1,
        }
    }

    fn facts(
        c: &ClusterConfig,
        f: impl Fn(u64) -> (NodeMode, HealthState),
    ) -> BTreeMap<u64, NodeFacts> {
        c.nodes
            .iter()
            .map(|n| {
                let (mode, health) = f(n.id);
                (
                    n.id,
                    NodeFacts {
                        id: n.id,
                        rack: n.rack.clone(),
                        mode,
                        health,
                        shares: 0,
                    },
                )
            })
            .collect()
    }

    /// P4: the repair scan slows to its routine pace only when a pass cannot find a
    /// share to move: every node up and active, the last pass empty, and one whole
    /// pass done by this leader (which finds the moves an earlier leader assigned).
    #[test]
    fn the_scan_slows_only_when_no_share_can_need_a_move() {
        let c = config();
        let calm = ScanState {
            passed_once: true,
            found_needs: false,
        };
        let healthy = facts(&c, |_| (NodeMode::Active, HealthState::Alive));
        assert_eq!(scan_pages_per_tick(&healthy, calm), SCAN_PAGES_ROUTINE);
        // A suspect node may come back: nothing moves yet.
        let suspect = facts(&c, |id| {
            let health = if id == 2 {
                HealthState::Suspect
            } else {
                HealthState::Alive
            };
            (NodeMode::Active, health)
        });
        assert_eq!(scan_pages_per_tick(&suspect, calm), SCAN_PAGES_ROUTINE);
        for (mode, health) in [
            (NodeMode::Draining, HealthState::Alive),
            (NodeMode::Active, HealthState::Dead),
        ] {
            let one_off = facts(&c, |id| {
                if id == 3 {
                    (mode, health)
                } else {
                    (NodeMode::Active, HealthState::Alive)
                }
            });
            assert_eq!(scan_pages_per_tick(&one_off, calm), SCAN_PAGES_URGENT);
        }
        let new_leader = ScanState {
            passed_once: false,
            found_needs: false,
        };
        assert_eq!(scan_pages_per_tick(&healthy, new_leader), SCAN_PAGES_URGENT);
        let moves_pending = ScanState {
            passed_once: true,
            found_needs: true,
        };
        assert_eq!(
            scan_pages_per_tick(&healthy, moves_pending),
            SCAN_PAGES_URGENT
        );
    }

    /// P4: the detector moves alive -> suspect -> dead with silence, and a new leader
    /// gives nodes it never heard from the full grace period.
    #[test]
    fn health_follows_silence() {
        let c = config();
        let mut h = HealthTracker::default();
        h.probed(10_000);
        assert_eq!(h.state(3, 10_500, &c), HealthState::Alive);
        assert_eq!(h.state(3, 12_000, &c), HealthState::Suspect);
        assert_eq!(h.state(3, 15_001, &c), HealthState::Dead);
        h.answered(3, 15_100);
        assert_eq!(h.state(3, 15_200, &c), HealthState::Alive);
        assert_eq!(h.silent_ms(3, 15_200), Some(100));
    }

    /// P1, P4: a dead holder's share goes to an alive, active non-holder within the
    /// rack rule; dead before drain; nothing moves for a healthy record; a share waits
    /// when no node qualifies.
    #[test]
    fn planner_places_within_the_rules() {
        let c = config();
        let e = entry(1, [1, 3, 5, 2, 4]);
        let healthy = facts(&c, |_| (NodeMode::Active, HealthState::Alive));
        assert_eq!(plan_record(&e, &healthy, &c, None), None);

        let dead3 = facts(&c, |n| {
            let h = if n == 3 {
                HealthState::Dead
            } else {
                HealthState::Alive
            };
            (
                if n == 1 {
                    NodeMode::Draining
                } else {
                    NodeMode::Active
                },
                h,
            )
        });
        let need = plan_record(&e, &dead3, &c, None).unwrap();
        assert_eq!(
            (need.task.from, need.task.x, need.task.cause),
            (3, 2, RepairCause::Dead)
        );
        // Rack b keeps node 4; rack c has 5, so 6 (rack c) is the only non-holder.
        assert_eq!(need.task.to, 6);
        assert!(need.placed);
        assert_eq!(need.live_holders, 4);

        // Node 6 suspect too: no node qualifies, the share waits.
        let stuck = facts(&c, |n| match n {
            3 => (NodeMode::Active, HealthState::Dead),
            6 => (NodeMode::Active, HealthState::Suspect),
            _ => (NodeMode::Active, HealthState::Alive),
        });
        assert!(!plan_record(&e, &stuck, &c, None).unwrap().placed);

        // A pending move is kept while its target accepts, replaced when it does not.
        let pending = RepairTask {
            to: 6,
            ..need.task.clone()
        };
        assert_eq!(
            plan_record(&e, &dead3, &c, Some(&pending)).unwrap().task,
            pending
        );
        let moved = plan_record(&e, &stuck, &c, Some(&pending)).unwrap();
        assert!(!moved.placed);

        // A benchmark cluster's plain replica (k = 1) is not repaired by shares.
        let mut plain = entry(2, [1, 3, 5, 2, 4]);
        plain.k = 1;
        plain.holders.truncate(3);
        assert_eq!(plan_record(&plain, &dead3, &c, None), None);
    }

    /// P4: records with fewer live holders come first.
    #[test]
    fn most_urgent_first() {
        let c = config();
        let nodes = facts(&c, |n| match n {
            1 | 3 => (NodeMode::Active, HealthState::Dead),
            2 => (NodeMode::Draining, HealthState::Alive),
            _ => (NodeMode::Active, HealthState::Alive),
        });
        let mut needs: Vec<Need> = [
            entry(1, [2, 4, 5, 6, 3]), // one dead, one draining
            entry(2, [1, 3, 4, 5, 6]), // two dead
            entry(3, [2, 4, 5, 6, 1]), // one dead
        ]
        .iter()
        .filter_map(|e| plan_record(e, &nodes, &c, None))
        .collect();
        prioritize(&mut needs);
        let order: Vec<u8> = needs.iter().map(|n| n.task.record.0[0]).collect();
        assert_eq!(order, vec![2, 1, 3]);
    }

    /// Helpers: k holders, never the new holder, the leaving node last, failed ones
    /// skipped; None when too few remain.
    #[test]
    fn helpers_skip_the_leaving_and_the_failed() {
        let e = entry(1, [1, 3, 5, 2, 4]);
        let task = RepairTask {
            record: e.id,
            x: 1,
            from: 1,
            to: 6,
            cause: RepairCause::Drain,
            assigned_at_ms: 0,
            assigned_index: 0,
        };
        let h = choose_helpers(&e, &task, &[], &[]).unwrap();
        assert_eq!(h, vec![(3, 2), (5, 3), (2, 4)]);
        let h = choose_helpers(&e, &task, &[3, 5], &[]).unwrap();
        assert_eq!(h, vec![(2, 4), (4, 5), (1, 1)]);
        assert!(choose_helpers(&e, &task, &[3, 5, 2], &[]).is_none());
        // Unhealthy holders go last, after the leaving node (alive while it drains).
        let h = choose_helpers(&e, &task, &[], &[3, 5]).unwrap();
        assert_eq!(h, vec![(2, 4), (4, 5), (1, 1)]);
        let h = choose_helpers(&e, &task, &[2], &[3, 5]).unwrap();
        assert_eq!(h, vec![(4, 5), (1, 1), (3, 2)]);
    }

    fn session(helpers: Vec<(u64, u8)>) -> RepairSession {
        RepairSession {
            id: [7; 16],
            task: RepairTask {
                record: RecordId([1; 16]),
                x: 4,
                from: 9,
                to: 8,
                cause: RepairCause::Dead,
                assigned_at_ms: 0,
                assigned_index: 1,
            },
            helpers,
        }
    }

    /// A helper releases a session only with every pad from the helpers before it.
    #[test]
    fn sessions_need_every_pad() {
        let mut s = Sessions::default();
        let sess = session(vec![(1, 1), (2, 2), (3, 3)]);
        assert!(s.insert(
            HelperSession {
                session: sess,
                drawn: vec![],
                at_ms: 0
            },
            0
        ));
        assert!(s.take([7; 16], 3).unwrap_err().contains("node 1"));
        s.pad([7; 16], 1, PadSeed::from_bytes([1; 32]), 10);
        assert!(s.take([7; 16], 3).unwrap_err().contains("node 2"));
        s.pad([7; 16], 2, PadSeed::from_bytes([2; 32]), 10);
        let (_, seeds) = s.take([7; 16], 3).unwrap();
        assert_eq!(seeds.len(), 2);
        assert!(s.take([7; 16], 3).is_err(), "a session is used once");
        // Old sessions expire.
        let sess = session(vec![(1, 1), (2, 2), (3, 3)]);
        s.insert(
            HelperSession {
                session: sess,
                drawn: vec![],
                at_ms: 0,
            },
            0,
        );
        s.pad([9; 16], 1, PadSeed::from_bytes([1; 32]), SESSION_TTL_MS + 1);
        assert!(s.take([7; 16], 1).is_err());
    }
}
