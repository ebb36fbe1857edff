//! Metrics, health and readiness for operators, on a plain HTTP port of its own
//! (`metrics_addr` in the node's config entry; hyper, HTTP/1.1, GET only, one
//! exchange per connection, heads, connections and time bounded), apart from the QUIC path: a scraper
//! or a load balancer never needs a cluster certificate, and a flood of scrapes never
//! competes with requests for QUIC streams.
//!
//! - `GET /metrics` — Prometheus text format (prometheus-client): requests by name
//!   and outcome, latency histograms, Raft term and indexes, shares and bytes stored
//!   (RocksDB's estimates), staged bytes, the repair queue, audit entries.
//! - `GET /healthz` — 200 while the process serves and its database answers.
//! - `GET /readyz` — 200 once the node is a member of the group, knows a leader and
//!   has applied its log to within [`READY_MAX_LAG_ENTRIES`]; otherwise 503 with the
//!   reasons, one per line. [`readiness`] decides, without a network.
//!
//! Nothing here shows record, share or key bytes: counts, sizes, indexes and states.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response as HttpResponse, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use kakera_proto::{RaftStatus, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::transport::server::ServerContext;

/// A node that has applied its log to within this many entries of its end is ready.
pub const READY_MAX_LAG_ENTRIES: u64 = 64;
/// Largest HTTP request head read; a longer one is answered 431. (hyper's smallest
/// read buffer: it refuses less.)
pub const MAX_HTTP_HEAD_BYTES: usize = 8 * 1024;
/// HTTP connections served at once; further ones wait in the kernel's backlog.
pub const MAX_HTTP_CONNECTIONS: usize = 16;
/// Time a client has to send its request head.
pub const HTTP_READ_TIMEOUT_MS: u64 = 5_000;
/// Time a whole exchange may take, answer included, before the connection is closed.
pub const HTTP_EXCHANGE_TIMEOUT_MS: u64 = 10_000;
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
        let list: [(&str, &str, &U64Gauge); 25] = [
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

    /// Reads the gauges from the node and renders every metric.
    pub fn render(&self, ctx: &ServerContext) -> std::io::Result<String> {
        let status = crate::transport::server::status(ctx);
        let raft = &status.raft;
        let g = &self.gauges;
        g.raft_term.set(raft.term);
        g.raft_last_log_index.set(raft.last_log_index.unwrap_or(0));
        g.raft_committed_index.set(raft.committed.unwrap_or(0));
        g.raft_applied_index.set(raft.applied.unwrap_or(0));
        g.raft_snapshot_index.set(raft.snapshot.unwrap_or(0));
        g.raft_leader.set(u64::from(raft.state == "Leader"));
        g.raft_voters.set(raft.voters.len() as u64);
        g.ready
            .set(u64::from(readiness(raft, ctx.raft_id).is_empty()));
        let est = ctx.shares.estimates()?;
        g.shares.set(est.shares);
        g.share_bytes.set(est.share_bytes);
        g.staged_shares.set(est.staged);
        g.staged_bytes.set(est.staged_bytes);
        g.staged_reserved_bytes
            .set(ctx.shares.ledger().total_bytes());
        g.repair_pending
            .set(ctx.state.pending_repair_count(MAX_COUNTED_REPAIRS)?);
        let progress = crate::transport::repair::lock(&ctx.view.progress).clone();
        let leading = raft.state == "Leader";
        g.repair_needed
            .set(if leading { progress.needed } else { 0 });
        g.repair_waiting
            .set(if leading { progress.waiting } else { 0 });
        g.repair_done.set(if leading { progress.done } else { 0 });
        g.audit_entries.set(ctx.state.audit_head()?.seq);
        let u = &status.usage;
        g.resident_bytes.set(u.rss_bytes);
        g.heap_allocated_bytes.set(u.heap_allocated_bytes);
        g.heap_resident_bytes.set(u.heap_resident_bytes);
        g.rocksdb_memtable_bytes.set(u.rocksdb_memtable_bytes);
        g.rocksdb_table_reader_bytes
            .set(u.rocksdb_table_reader_bytes);
        g.rocksdb_block_cache_bytes.set(u.rocksdb_block_cache_bytes);
        g.rocksdb_pending_compaction_bytes
            .set(u.rocksdb_pending_compaction_bytes);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|_| std::io::Error::other("the metrics could not be encoded"))?;
        Ok(out)
    }
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

/// Serves `/metrics`, `/healthz` and `/readyz` until `shutdown` turns true.
pub async fn serve_http(
    listener: TcpListener,
    ctx: Arc<ServerContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HTTP_CONNECTIONS));
    loop {
        // Waiting for a slot before accepting keeps at most MAX_HTTP_CONNECTIONS
        // connections served; the rest queue in the listen backlog.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, ctx).await {
                            tracing::debug!(error = %e, "metrics connection failed");
                        }
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
}

/// One HTTP/1.1 exchange on hyper: the head must arrive within
/// [`HTTP_READ_TIMEOUT_MS`] and fit [`MAX_HTTP_HEAD_BYTES`] (hyper answers 431
/// otherwise), the body of a request is never read, the whole exchange ends within
/// [`HTTP_EXCHANGE_TIMEOUT_MS`], and the connection closes after the answer.
async fn answer(stream: TcpStream, ctx: Arc<ServerContext>) -> Result<(), hyper::Error> {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let ctx = ctx.clone();
        async move {
            let (status, content_type, body) = route(request.method(), request.uri().path(), &ctx);
            let mut out = HttpResponse::new(Full::new(Bytes::from(body)));
            *out.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let headers = out.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok::<_, std::convert::Infallible>(out)
        }
    });
    let exchange = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(HTTP_READ_TIMEOUT_MS))
        .max_buf_size(MAX_HTTP_HEAD_BYTES)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(Duration::from_millis(HTTP_EXCHANGE_TIMEOUT_MS), exchange).await {
        Ok(done) => done,
        // Too slow: dropping the connection closes it.
        Err(_) => Ok(()),
    }
}

const TEXT: &str = "text/plain; charset=utf-8";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Picks the answer for a request: (status, content type, body).
fn route(method: &Method, path: &str, ctx: &ServerContext) -> (u16, &'static str, String) {
    if method != Method::GET {
        return (405, TEXT, "only GET is served\n".into());
    }
    match path {
        "/metrics" => match ctx.metrics.render(ctx) {
            Ok(body) => (200, PROMETHEUS, body),
            Err(e) => {
                tracing::warn!(error = %e, "metrics could not be read");
                (500, TEXT, format!("metrics could not be read: {e}\n"))
            }
        },
        "/healthz" => match ctx.state.audit_head() {
            Ok(_) => (200, TEXT, "ok\n".into()),
            Err(e) => (
                503,
                TEXT,
                format!("the node's database does not answer: {e}\n"),
            ),
        },
        "/readyz" => {
            let raft = crate::transport::server::raft_status(ctx);
            let reasons = readiness(&raft, ctx.raft_id);
            if reasons.is_empty() {
                (200, TEXT, "ready\n".into())
            } else {
                let mut body = String::from("not ready:\n");
                for r in reasons {
                    let _ = writeln!(body, "- {r}");
                }
                (503, TEXT, body)
            }
        }
        _ => (
            404,
            TEXT,
            "not found: this port serves /metrics, /healthz and /readyz\n".into(),
        ),
    }
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
