//! The node's metrics and readiness, without IO: request counters and latency
//! histograms (prometheus-client), gauges set from [`Readings`] and rendered as
//! Prometheus text, and [`readiness`], which decides whether a node is ready from its
//! Raft view. The operators' HTTP port that serves them is `crate::ops_port`.
//!
//! Nothing here shows record, share or key bytes: counts, sizes, indexes and states.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use kakera_proto::{NodeUsage, RaftStatus, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A node that has applied its log to within this many entries of its end is ready.
pub const READY_MAX_LAG_ENTRIES: u64 = 64;
/// Pending repairs counted for the metric; the gauge stops there.
pub const MAX_COUNTED_REPAIRS: usize = 100_000;

type U64Gauge = Gauge<u64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    request: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabel {
    request: &'static str,
}

/// Latency buckets: 0.25 ms doubling to about 8 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<NameLabel, Histogram, fn() -> Histogram>,
    gauges: Gauges,
}

/// Values read when a scrape comes in.
#[derive(Default)]
struct Gauges {
    raft_term: U64Gauge,
    raft_last_log_index: U64Gauge,
    raft_committed_index: U64Gauge,
    raft_applied_index: U64Gauge,
    raft_snapshot_index: U64Gauge,
    raft_leader: U64Gauge,
    raft_voters: U64Gauge,
    ready: U64Gauge,
    shares: U64Gauge,
    share_bytes: U64Gauge,
    staged_shares: U64Gauge,
    staged_bytes: U64Gauge,
    staged_reserved_bytes: U64Gauge,
    repair_pending: U64Gauge,
    repair_needed: U64Gauge,
    repair_waiting: U64Gauge,
    repair_done: U64Gauge,
    audit_entries: U64Gauge,
    resident_bytes: U64Gauge,
    heap_allocated_bytes: U64Gauge,
    heap_resident_bytes: U64Gauge,
    rocksdb_memtable_bytes: U64Gauge,
    rocksdb_table_reader_bytes: U64Gauge,
    rocksdb_block_cache_bytes: U64Gauge,
    rocksdb_pending_compaction_bytes: U64Gauge,
    scrub_checked_shares: U64Gauge,
    scrub_bad_shares: U64Gauge,
    scrub_passes: U64Gauge,
    scrub_position: U64Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("kakera");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by request name and outcome (ok or the error kind)",
            requests.clone(),
        );
        let latency: Family<NameLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its answer being written, by request name",
            latency.clone(),
        );
        let gauges = Gauges::default();
        let g = &gauges;
        let list: [(&str, &str, &U64Gauge); 29] = [
            ("raft_term", "This node's current Raft term", &g.raft_term),
            (
                "raft_last_log_index",
                "Index of the last entry in this node's Raft log",
                &g.raft_last_log_index,
            ),
            (
                "raft_committed_index",
                "Index of the last entry this node knows committed",
                &g.raft_committed_index,
            ),
            (
                "raft_applied_index",
                "Index of the last entry this node applied",
                &g.raft_applied_index,
            ),
            (
                "raft_snapshot_index",
                "Index of this node's last snapshot",
                &g.raft_snapshot_index,
            ),
            (
                "raft_leader",
                "1 if this node is the Raft leader",
                &g.raft_leader,
            ),
            (
                "raft_voters",
                "Voters in the membership this node knows",
                &g.raft_voters,
            ),
            (
                "ready",
                "1 if /readyz answers 200 (member, leader known, log applied)",
                &g.ready,
            ),
            (
                "shares",
                "Committed shares stored here (RocksDB estimate)",
                &g.shares,
            ),
            (
                "share_bytes",
                "Bytes of committed shares stored here (RocksDB estimate)",
                &g.share_bytes,
            ),
            (
                "staged_shares",
                "Staged, not yet committed shares stored here (RocksDB estimate)",
                &g.staged_shares,
            ),
            (
                "staged_bytes",
                "Bytes of staged shares stored here (RocksDB estimate)",
                &g.staged_bytes,
            ),
            (
                "staged_reserved_bytes",
                "Staged bytes counted against identities' limits since this process started",
                &g.staged_reserved_bytes,
            ),
            (
                "repair_pending_moves",
                "Repair moves assigned in the catalog and not yet committed",
                &g.repair_pending,
            ),
            (
                "repair_needed_shares",
                "Shares needing a move in the leader's last scan (0 on followers)",
                &g.repair_needed,
            ),
            (
                "repair_waiting_shares",
                "Shares with no node to move to under the rack rule (0 on followers)",
                &g.repair_waiting,
            ),
            (
                "repair_done_moves",
                "Moves committed since this node became leader (0 on followers)",
                &g.repair_done,
            ),
            (
                "audit_entries",
                "Entries in the audit log (its head's sequence number)",
                &g.audit_entries,
            ),
            (
                "resident_bytes",
                "Resident memory of the node process (Linux VmRSS)",
                &g.resident_bytes,
            ),
            (
                "heap_allocated_bytes",
                "Bytes the node's Rust heap has handed out (jemalloc stats.allocated)",
                &g.heap_allocated_bytes,
            ),
            (
                "heap_resident_bytes",
                "Physical memory the node's Rust heap holds (jemalloc stats.resident)",
                &g.heap_resident_bytes,
            ),
            (
                "rocksdb_memtable_bytes",
                "RocksDB memtables across every column family",
                &g.rocksdb_memtable_bytes,
            ),
            (
                "rocksdb_table_reader_bytes",
                "RocksDB table readers' memory outside the block cache",
                &g.rocksdb_table_reader_bytes,
            ),
            (
                "rocksdb_block_cache_bytes",
                "RocksDB block cache in use (data, index and filter blocks)",
                &g.rocksdb_block_cache_bytes,
            ),
            (
                "rocksdb_pending_compaction_bytes",
                "Bytes RocksDB estimates its compactions must still rewrite",
                &g.rocksdb_pending_compaction_bytes,
            ),
            (
                "scrub_checked_shares",
                "Shares this node's scrubber re-read since it started",
                &g.scrub_checked_shares,
            ),
            (
                "scrub_bad_shares",
                "Missing or corrupt shares this node's scrubber found since it started",
                &g.scrub_bad_shares,
            ),
            (
                "scrub_passes",
                "Whole passes over this node's shares since it started",
                &g.scrub_passes,
            ),
            (
                "scrub_position_permille",
                "How far the scrubber's current pass is, in thousandths of the record ids",
                &g.scrub_position,
            ),
        ];
        for (name, help, gauge) in list {
            registry.register(name, help, gauge.clone());
        }
        Metrics {
            registry,
            requests,
            latency,
            gauges,
        }
    }

    /// Counts one answered request.
    pub fn observe(&self, request: &'static str, outcome: &'static str, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { request, outcome })
            .inc();
        self.latency
            .get_or_create(&NameLabel { request })
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the gauges from `r` and renders every metric (Prometheus text).
    pub fn render(&self, r: &Readings) -> std::io::Result<String> {
        let raft = &r.raft;
        let g = &self.gauges;
        g.raft_term.set(raft.term);
        g.raft_last_log_index.set(raft.last_log_index.unwrap_or(0));
        g.raft_committed_index.set(raft.committed.unwrap_or(0));
        g.raft_applied_index.set(raft.applied.unwrap_or(0));
        g.raft_snapshot_index.set(raft.snapshot.unwrap_or(0));
        let leading = raft.state == "Leader";
        g.raft_leader.set(u64::from(leading));
        g.raft_voters.set(raft.voters.len() as u64);
        g.ready
            .set(u64::from(readiness(raft, r.raft_id).is_empty()));
        let est = &r.shares;
        g.shares.set(est.shares);
        g.share_bytes.set(est.share_bytes);
        g.staged_shares.set(est.staged);
        g.staged_bytes.set(est.staged_bytes);
        g.staged_reserved_bytes.set(r.staged_reserved_bytes);
        g.repair_pending.set(r.repair_pending);
        // Only the leader plans repairs; a follower's counters are stale.
        let (needed, waiting, done) = if leading { r.repair } else { (0, 0, 0) };
        g.repair_needed.set(needed);
        g.repair_waiting.set(waiting);
        g.repair_done.set(done);
        g.audit_entries.set(r.audit_entries);
        let u = &r.usage;
        g.resident_bytes.set(u.rss_bytes);
        g.heap_allocated_bytes.set(u.heap_allocated_bytes);
        g.heap_resident_bytes.set(u.heap_resident_bytes);
        g.rocksdb_memtable_bytes.set(u.rocksdb_memtable_bytes);
        g.rocksdb_table_reader_bytes
            .set(u.rocksdb_table_reader_bytes);
        g.rocksdb_block_cache_bytes.set(u.rocksdb_block_cache_bytes);
        g.rocksdb_pending_compaction_bytes
            .set(u.rocksdb_pending_compaction_bytes);
        let sc = &r.scrub;
        g.scrub_checked_shares.set(sc.checked);
        g.scrub_bad_shares.set(sc.bad);
        g.scrub_passes.set(sc.passes);
        g.scrub_position.set(sc.position_permille);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|_| std::io::Error::other("the metrics could not be encoded"))?;
        Ok(out)
    }
}

/// What the gauges show, read from the node by the operators' port
/// (`crate::ops_port`): plain values, so this module needs no part of the node.
pub struct Readings {
    /// This node's Raft member id.
    pub raft_id: u64,
    /// Its Raft view.
    pub raft: RaftStatus,
    /// Its share store's estimates.
    pub shares: crate::shares::ShareEstimates,
    /// Bytes reserved by staging requests in flight.
    pub staged_reserved_bytes: u64,
    /// Pending repair moves (counted up to [`MAX_COUNTED_REPAIRS`]).
    pub repair_pending: u64,
    /// The repair planner's (needed, waiting, done) counts.
    pub repair: (u64, u64, u64),
    /// Audit entries (the head's sequence number).
    pub audit_entries: u64,
    /// Memory and storage-engine figures.
    pub usage: NodeUsage,
    /// The scrubber's progress.
    pub scrub: kakera_proto::ScrubStatus,
}

/// The outcome label of an answer: `ok`, or the error's kind.
pub fn outcome(response: &Response) -> &'static str {
    match response {
        Response::Error(e) => e.kind.label(),
        _ => "ok",
    }
}

/// Why this node is not ready, one sentence per reason; empty when it is. Pure.
pub fn readiness(raft: &RaftStatus, raft_id: u64) -> Vec<String> {
    let mut reasons = Vec::new();
    if raft.state == "Shutdown" {
        reasons.push("the node is shutting down".to_string());
        return reasons;
    }
    if !raft.initialized {
        reasons.push(
            "the node holds no Raft membership yet: it is starting, or waiting to join \
             or for the group to be initialised"
                .to_string(),
        );
        return reasons;
    }
    if !raft.voters.contains(&raft_id) && !raft.learners.contains(&raft_id) {
        reasons
            .push("the node is not in the group's membership yet (the leader adds it)".to_string());
    }
    if raft.leader.is_none() {
        reasons.push("no leader is known (an election is under way or no quorum)".to_string());
    }
    let end = raft.last_log_index.unwrap_or(0);
    let applied = raft.applied.unwrap_or(0);
    let lag = end.saturating_sub(applied);
    if lag > READY_MAX_LAG_ENTRIES {
        reasons.push(format!(
            "the node has {lag} log entries still to apply (ready within {READY_MAX_LAG_ENTRIES})"
        ));
    }
    reasons
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report
    use super::*;

    fn status(f: impl FnOnce(&mut RaftStatus)) -> RaftStatus {
        let mut s = RaftStatus {
            id: 7,
            initialized: true,
            state: "Follower".into(),
            term: 3,
            leader: Some(1),
            last_log_index: Some(100),
            committed: Some(100),
            applied: Some(100),
            snapshot: None,
            purged: None,
            voters: vec![1, 7],
            learners: vec![],
            replication: Default::default(),
        };
        f(&mut s);
        s
    }

    /// Operations (issue 9): readiness says why a node is not ready, each reason alone.
    #[test]
    fn readiness_names_each_reason() {
        assert!(readiness(&status(|_| {}), 7).is_empty());
        let learner = status(|s| {
            s.voters = vec![1];
            s.learners = vec![7];
        });
        assert!(readiness(&learner, 7).is_empty());

        let r = readiness(&status(|s| s.initialized = false), 7);
        assert!(r.len() == 1 && r[0].contains("no Raft membership"), "{r:?}");
        let r = readiness(&status(|s| s.voters = vec![1]), 7);
        assert!(r.len() == 1 && r[0].contains("not in the group"), "{r:?}");
        let r = readiness(&status(|s| s.leader = None), 7);
        assert!(r.len() == 1 && r[0].contains("no leader"), "{r:?}");
        let r = readiness(
            &status(|s| s.applied = Some(100 - READY_MAX_LAG_ENTRIES)),
            7,
        );
        assert!(r.is_empty(), "{r:?}");
        let r = readiness(
            &status(|s| s.applied = Some(100 - READY_MAX_LAG_ENTRIES - 1)),
            7,
        );
        assert!(r.len() == 1 && r[0].contains("65 log entries"), "{r:?}");
        let r = readiness(&status(|s| s.state = "Shutdown".into()), 7);
        assert!(r.len() == 1 && r[0].contains("shutting down"), "{r:?}");
    }

    /// Operations (issue 9): a request is counted under its name and outcome, and its
    /// latency lands in the histogram.
    #[test]
    fn observations_are_counted_by_name_and_outcome() {
        let m = Metrics::new();
        m.observe("stage_shares", "ok", Duration::from_millis(3));
        m.observe("stage_shares", "ok", Duration::from_millis(3));
        m.observe("commit_records", "not_leader", Duration::from_micros(100));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry).unwrap();
        assert!(
            out.contains(r#"kakera_requests_total{request="stage_shares",outcome="ok"} 2"#),
            "{out}"
        );
        assert!(
            out.contains(
                r#"kakera_requests_total{request="commit_records",outcome="not_leader"} 1"#
            ),
            "{out}"
        );
        assert!(
            out.contains(r#"kakera_request_duration_seconds_count{request="stage_shares"} 2"#),
            "{out}"
        );
        // 3 ms falls in the 4 ms bucket (0.25 ms doubling), not the 2 ms one.
        assert!(
            out.contains(
                r#"kakera_request_duration_seconds_bucket{le="0.004",request="stage_shares"} 2"#
            ),
            "{out}"
        );
        assert!(
            out.contains(
                r#"kakera_request_duration_seconds_bucket{le="0.002",request="stage_shares"} 0"#
            ),
            "{out}"
        );
    }
}
