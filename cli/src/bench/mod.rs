//! `kakera bench`: the cluster benchmark. It brings up its own local cluster
//! ([`cluster`]: five nodes in three racks, 3 of 5) and measures, for each record size,
//! put and get throughput and per-request latency with secret sharing and with the
//! replication baseline (three plain copies, one per rack, through the same nodes,
//! transport, staging and Raft commit, neither sealed nor split), a single-record get
//! at low load, and repair throughput after a node is killed. The arithmetic is pure
//! ([`stats`]); this module drives the load.
//!
//! Method, per record size: the records are generated before the clock starts
//! (incompressible bytes); a phase runs `concurrency` workers that take the next
//! request (a batch of records) from a shared queue until it is empty; the phase's wall
//! time gives throughput, each request's time gives latency. Sharing and replicas take
//! turns (put sharing, put replicas, get sharing, get replicas) on the same nodes, so
//! both see the same database sizes. Every get checks the bytes of every record it
//! read against a BLAKE3 digest taken before the put; a failed request or a wrong
//! byte stops the benchmark with an error instead of a figure.

pub mod cluster;
pub mod scale;
pub mod stats;
pub mod streamed;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kakera_proto::catalog::{Grant, GrantScope, NodeMode};
use kakera_proto::{Date, Digest, RecordId, RecordKind, RecordMeta, SubjectTag};
use serde::Serialize;

use crate::error::CliError;
use cluster::{ACTIVE_NODES, BenchCluster, INGEST, OPERATOR, Pacing, READER, SPARE_NODE};
use kakera_client::{Client, NewRecord};
use stats::{Mode, Op, Phase, Ratio, RepairFigures, Shape};

/// Whether this build has the replication baseline (the `bench-baseline` feature,
/// which scripts/bench-cluster.sh enables and release packages do not): plain copies
/// with no secrecy, staged and committed through the same nodes.
pub const BASELINE_BUILT: bool = cfg!(feature = "bench-baseline");

/// The job name the benchmark reads under.
const JOB: &str = "kakera-bench";
/// The source named in every benchmark record's metadata.
const SOURCE: &str = "bench";
/// How often the repair measurement asks the leader for progress.
const REPAIR_POLL_MS: u64 = 100;

/// What to measure.
#[derive(Debug, Clone, Serialize)]
pub struct BenchOptions {
    /// Record sizes in bytes, in order.
    pub sizes: Vec<u64>,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Record bytes to store per size and mode (the record count follows, within
    /// `min_records..=max_records`).
    pub bytes_per_size: u64,
    /// Fewest records per size.
    pub min_records: u64,
    /// Most records per size.
    pub max_records: u64,
    /// Bytes per request: records are batched up to this (at least one per request).
    pub batch_bytes: u64,
    /// Single-record gets at concurrency 1 for the low-load latency (0: skipped).
    pub single_gets: usize,
    /// Size of the records in the low-load latency phase.
    pub single_get_bytes: u64,
    /// Whether to measure the replication baseline.
    pub baseline: bool,
    /// Whether to measure repair (kills a node at the end).
    pub repair: bool,
    /// Most time the repair may take before the benchmark reports it unfinished.
    pub repair_timeout_s: u64,
    /// Repair pacing in the benchmark cluster's config.
    pub repair_parallel: u32,
    /// Repair rate limit in the benchmark cluster's config (MB/s).
    pub repair_rate_mb_s: u32,
    /// Moves per masked-repair session in the benchmark cluster's config.
    pub repair_batch_moves: u32,
    /// Shares of at least this many bytes go to files on the nodes.
    pub file_share_min_bytes: u64,
    /// The largest record put whole (`[limits] max_record_bytes`); larger sizes are
    /// streamed as segments.
    pub max_record_bytes: u64,
    /// Where the cluster lives.
    pub dir: PathBuf,
    /// The `kakera-node` binary.
    pub node_binary: PathBuf,
}

/// The machine and cluster a report was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    /// Nodes serving puts and gets.
    pub nodes: u64,
    /// Racks.
    pub racks: usize,
    /// Shares needed.
    pub k: u8,
    /// Shares stored.
    pub n: u8,
    /// Copies in the baseline.
    pub replicas: u8,
    /// CPUs this process may use (client and nodes share them).
    pub cpus: usize,
    /// Whether this `kakera` was built with optimisations.
    pub optimized: bool,
}

/// What `kakera bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// When the run started (Unix seconds).
    pub started_at_s: u64,
    /// The cluster.
    pub setup: Setup,
    /// The options.
    pub options: BenchOptions,
    /// Every put and get phase, in the order run.
    pub phases: Vec<Phase>,
    /// Sharing over replicas, per operation and size.
    pub ratios: Vec<Ratio>,
    /// Repair after a node was killed.
    pub repair: Option<RepairFigures>,
    /// The largest resident set of this process (the client) during the run: the
    /// bound of a streamed record's memory when the run streams only (`--sizes 1GiB`).
    pub client_peak_rss_bytes: Option<u64>,
}

/// Records per request for records of `size` bytes.
pub fn batch_records(size: u64, batch_bytes: u64, max_batch: usize) -> usize {
    usize::try_from((batch_bytes / size.max(1)).max(1))
        .unwrap_or(usize::MAX)
        .min(max_batch)
}

/// Records to store per size and mode.
pub fn record_count(size: u64, opts: &BenchOptions) -> u64 {
    (opts.bytes_per_size / size.max(1)).clamp(opts.min_records, opts.max_records)
}

/// Runs the benchmark; `say` gets a line of progress per step.
pub async fn run(
    opts: &BenchOptions,
    say: &mut (dyn FnMut(String) + Send),
) -> Result<BenchReport, CliError> {
    if opts.sizes.is_empty() || opts.concurrency == 0 {
        return Err(CliError::Invalid(
            "give at least one record size and a concurrency of at least 1".into(),
        ));
    }
    let started_at_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if opts.baseline && !BASELINE_BUILT {
        return Err(CliError::Invalid(
            "this kakera was built without the replication baseline (plain copies, no \
             secrecy): run scripts/bench-cluster.sh, which builds it with the \
             bench-baseline feature, or pass --no-baseline"
                .into(),
        ));
    }
    let pacing = Pacing {
        repair_parallel: opts.repair_parallel,
        repair_rate_mb_s: opts.repair_rate_mb_s,
        repair_batch_moves: opts.repair_batch_moves,
        file_share_min_bytes: opts.file_share_min_bytes,
        max_record_bytes: opts.max_record_bytes,
    };
    let Started {
        mut cluster,
        operator,
        ingest,
        reader,
        setup,
    } = start(&opts.dir, &opts.node_binary, pacing, NODE_LOG_FILTER, say).await?;
    let max_batch = ingest.batch_records();
    let modes: &[Mode] = if opts.baseline {
        &[Mode::Sharing, Mode::Replicas]
    } else {
        &[Mode::Sharing]
    };
    let mut phases = Vec::new();
    // Larger records than a put takes whole are streamed as segments.
    let whole_max = ingest.config().limits.max_record_bytes;
    for &size in &opts.sizes {
        let streamed = size > whole_max;
        let shape = Shape {
            record_bytes: size,
            batch_records: if streamed {
                1
            } else {
                batch_records(size, opts.batch_bytes, max_batch)
            },
            concurrency: opts.concurrency,
        };
        let count = record_count(size, opts);
        let how = if streamed { ", streamed" } else { "" };
        let mut stored = Vec::new();
        for &mode in modes {
            say(format!(
                "put {count} records of {} ({}{how})",
                stats::size_name(size),
                mode.as_str()
            ));
            let (phase, ids) = if streamed {
                streamed::put_phase(&ingest, mode, shape, count).await?
            } else {
                let batches = make_batches(size, count, shape.batch_records)?;
                put_phase(&ingest, mode, shape, batches).await?
            };
            cluster.check_alive()?;
            phases.push(phase);
            stored.push((mode, ids));
        }
        for (mode, ids) in &stored {
            say(format!(
                "get {} records of {} ({}{how})",
                ids.len(),
                stats::size_name(size),
                mode.as_str()
            ));
            phases.push(if streamed {
                streamed::get_phase(&reader, *mode, shape, ids).await?
            } else {
                get_phase(&reader, *mode, shape, ids).await?
            });
            cluster.check_alive()?;
        }
    }
    if opts.single_gets > 0 {
        let size = opts.single_get_bytes;
        let shape = Shape {
            record_bytes: size,
            batch_records: 1,
            concurrency: 1,
        };
        let count = opts.single_gets as u64;
        for &mode in modes {
            say(format!(
                "low load: {count} single gets of {} ({})",
                stats::size_name(size),
                mode.as_str()
            ));
            let batches = make_batches(
                size,
                count,
                batch_records(size, opts.batch_bytes, max_batch),
            )?;
            let (_, ids) = put_phase(&ingest, mode, shape, batches).await?;
            phases.push(get_phase(&reader, mode, shape, &ids).await?);
        }
    }
    let ratios = stats::ratios(&phases);
    let repair = if opts.repair {
        say("repair: starting the spare node, then killing a node".into());
        Some(measure_repair(&mut cluster, &operator, opts).await?)
    } else {
        None
    };
    Ok(BenchReport {
        started_at_s,
        setup,
        options: opts.clone(),
        phases,
        ratios,
        repair,
        client_peak_rss_bytes: streamed::peak_rss_bytes(),
    })
}

/// What nodes log in the benchmark unless `RUST_LOG` says otherwise.
const NODE_LOG_FILTER: &str = "warn";

/// A benchmark cluster started, with a grant open for the reader.
struct Started {
    cluster: BenchCluster,
    operator: Client,
    ingest: Arc<Client>,
    reader: Arc<Client>,
    setup: Setup,
}

/// Starts the five nodes, holds the spare out of placement and opens the reader's
/// grant.
async fn start(
    dir: &std::path::Path,
    node_binary: &std::path::Path,
    pacing: Pacing,
    log_filter: &str,
    say: &mut (dyn FnMut(String) + Send),
) -> Result<Started, CliError> {
    say(format!("starting a 5-node cluster in {}", dir.display()));
    let mut cluster = BenchCluster::create(dir, node_binary, pacing, log_filter)?;
    let operator = cluster.client(OPERATOR)?;
    let active: Vec<u64> = (1..=ACTIVE_NODES).collect();
    cluster
        .wait_health(&operator, &active, &[SPARE_NODE])
        .await?;
    // The spare is held out of placement until the repair phase, as an operator holds
    // a spare: under load the leader may call a busy node dead for a moment, and a put
    // must not then place shares on a node that is not running.
    operator
        .set_node_mode(SPARE_NODE, NodeMode::Draining, "benchmark spare")
        .await?;
    open_grant(&operator).await?;
    let ingest = Arc::new(cluster.client(INGEST)?);
    let reader = Arc::new(cluster.client(READER)?);
    let config = cluster.config().clone();
    let setup = Setup {
        nodes: ACTIVE_NODES,
        racks: config.racks.len(),
        k: config.policy.k,
        n: config.policy.n,
        replicas: config.plain_replicas.unwrap_or(0),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        optimized: !cfg!(debug_assertions),
    };
    Ok(Started {
        cluster,
        operator,
        ingest,
        reader,
        setup,
    })
}

async fn open_grant(operator: &Client) -> Result<(), CliError> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    operator
        .create_grant(Grant {
            job: JOB.into(),
            reader: READER.into(),
            scope: GrantScope {
                kinds: vec![RecordKind::Claim],
                sources: vec![SOURCE.into()],
                subjects: Vec::new(),
            },
            expires_at_ms: now_ms + 24 * 3_600_000,
            approval: "kakera bench".into(),
            created_at_ms: 0,
            created_by: String::new(),
            revoked: None,
        })
        .await?;
    Ok(())
}

/// One request's records, with the digest of each record's bytes.
type Batch = Vec<(RecordId, NewRecord, Digest)>;

/// `count` records of `size` incompressible bytes in batches of `per_batch`.
fn make_batches(size: u64, count: u64, per_batch: usize) -> Result<Vec<Batch>, CliError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| CliError::Bench(format!("the OS random source failed: {e}")))?;
    let len = usize::try_from(size)
        .map_err(|_| CliError::Invalid(format!("a record of {size} bytes is too large")))?;
    let mut batches = Vec::new();
    let mut batch = Vec::with_capacity(per_batch);
    for i in 0..count {
        let record = bench_record(&seed, i, len)?;
        let data = &record.data;
        let digest = Digest::of(data);
        batch.push((Client::new_record_id()?, record, digest));
        if batch.len() == per_batch {
            batches.push(std::mem::take(&mut batch));
        }
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    Ok(batches)
}

/// Benchmark record `i`: `len` incompressible bytes drawn from `seed`, its own
/// subject, kind and source inside the reader's grant.
fn bench_record(seed: &[u8; 32], i: u64, len: usize) -> Result<NewRecord, CliError> {
    let mut data = vec![0u8; len];
    let mut h = blake3::Hasher::new_keyed(seed);
    h.update(&i.to_le_bytes());
    h.finalize_xof().fill(&mut data);
    Ok(NewRecord {
        meta: bench_meta(i)?,
        data,
    })
}

/// The metadata of benchmark record `i`.
fn bench_meta(i: u64) -> Result<RecordMeta, CliError> {
    let mut subject = [0u8; 32];
    subject[..8].copy_from_slice(&i.to_le_bytes());
    Ok(RecordMeta {
        subject: SubjectTag(subject),
        kind: RecordKind::Claim,
        source: SOURCE.into(),
        effective: Date::new(2026, 1, 1)?,
        data_kind: None,
    })
}

/// Runs `concurrency` workers over a queue of requests; each request's latency in
/// microseconds, and what the requests returned.
async fn drive<I, T, F, Fut>(
    concurrency: usize,
    requests: Vec<I>,
    call: F,
) -> Result<(f64, Histogram<u64>, Vec<T>), CliError>
where
    I: Send + 'static,
    T: Send + 'static,
    F: Fn(I) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T, CliError>> + Send,
{
    let queue = Arc::new(Mutex::new(VecDeque::from(requests)));
    let call = Arc::new(call);
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let queue = queue.clone();
        let call = call.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = stats::latency_histogram().map_err(CliError::Bench)?;
            let mut results = Vec::new();
            // Bounded by the queue: each turn takes one request off it.
            loop {
                // A poisoned lock means another worker panicked; stop this one too.
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some(request) = next else { break };
                let t = Instant::now();
                let result = call(request).await?;
                stats::record_latency(&mut latencies, t.elapsed().as_micros() as u64);
                results.push(result);
            }
            Ok::<_, CliError>((latencies, results))
        }));
    }
    let mut latencies = stats::latency_histogram().map_err(CliError::Bench)?;
    let mut results = Vec::new();
    for w in workers {
        let (l, r) = w
            .await
            .map_err(|e| CliError::Bench(format!("a benchmark worker failed: {e}")))??;
        latencies
            .add(&l)
            .map_err(|e| CliError::Bench(format!("merging latencies: {e:?}")))?;
        results.extend(r);
    }
    Ok((started.elapsed().as_secs_f64() * 1000.0, latencies, results))
}

fn phase_of(
    op: Op,
    mode: Mode,
    shape: Shape,
    records: u64,
    elapsed_ms: f64,
    latencies: Histogram<u64>,
) -> Result<Phase, CliError> {
    let latency = stats::percentiles(&latencies)
        .ok_or_else(|| CliError::Bench("a phase made no request".into()))?;
    Ok(Phase::new(op, mode, shape, records, elapsed_ms, latency))
}

/// Stores the batches; the ids with their digests, for the get phase.
async fn put_phase(
    client: &Arc<Client>,
    mode: Mode,
    shape: Shape,
    batches: Vec<Batch>,
) -> Result<(Phase, Vec<(RecordId, Digest)>), CliError> {
    let client = client.clone();
    let (elapsed_ms, latencies, results) =
        drive(shape.concurrency, batches, move |batch: Batch| {
            let client = client.clone();
            async move {
                let digests: Vec<(RecordId, Digest)> =
                    batch.iter().map(|(id, _, d)| (*id, *d)).collect();
                let records: Vec<(RecordId, NewRecord)> =
                    batch.into_iter().map(|(id, r, _)| (id, r)).collect();
                match mode {
                    Mode::Sharing => client.put_batch_with_ids(records).await?,
                    #[cfg(feature = "bench-baseline")]
                    Mode::Replicas => client.put_plain_replicas(records).await?,
                    // Refused at the start of the run (BASELINE_BUILT).
                    #[cfg(not(feature = "bench-baseline"))]
                    Mode::Replicas => {
                        return Err(CliError::Invalid(
                            "no replication baseline in this build".into(),
                        ));
                    }
                };
                Ok(digests)
            }
        })
        .await?;
    let ids: Vec<(RecordId, Digest)> = results.into_iter().flatten().collect();
    let phase = phase_of(
        Op::Put,
        mode,
        shape,
        ids.len() as u64,
        elapsed_ms,
        latencies,
    )?;
    Ok((phase, ids))
}

/// Reads the records back in batches, checking every byte.
async fn get_phase(
    client: &Arc<Client>,
    mode: Mode,
    shape: Shape,
    ids: &[(RecordId, Digest)],
) -> Result<Phase, CliError> {
    let expected: Arc<HashMap<RecordId, Digest>> = Arc::new(ids.iter().copied().collect());
    let requests: Vec<Vec<RecordId>> = ids
        .chunks(shape.batch_records)
        .map(|c| c.iter().map(|(id, _)| *id).collect())
        .collect();
    let client = client.clone();
    let (elapsed_ms, latencies, results) =
        drive(shape.concurrency, requests, move |ids: Vec<RecordId>| {
            let client = client.clone();
            let expected = expected.clone();
            async move {
                let batch = client.get_batch(JOB, &ids).await?;
                if let Some(f) = batch.failed.first() {
                    return Err(CliError::Bench(format!(
                        "record {} did not read back: {}",
                        f.record, f.failure
                    )));
                }
                if batch.records.len() != ids.len() {
                    return Err(CliError::Bench(format!(
                        "{} of {} records read back",
                        batch.records.len(),
                        ids.len()
                    )));
                }
                for r in &batch.records {
                    if expected.get(&r.id) != Some(&Digest::of(&r.data)) {
                        return Err(CliError::Bench(format!(
                            "record {} read back with different bytes",
                            r.id
                        )));
                    }
                }
                Ok(batch.records.len() as u64)
            }
        })
        .await?;
    let records = results.iter().sum();
    phase_of(Op::Get, mode, shape, records, elapsed_ms, latencies)
}

/// Starts the spare node, kills a node that is not the leader, and times the repair
/// that regenerates its shares on the spare.
async fn measure_repair(
    cluster: &mut BenchCluster,
    operator: &Client,
    opts: &BenchOptions,
) -> Result<RepairFigures, CliError> {
    operator
        .set_node_mode(SPARE_NODE, NodeMode::Active, "benchmark repair")
        .await?;
    cluster.start_node(SPARE_NODE)?;
    let all: Vec<u64> = (1..=SPARE_NODE).collect();
    cluster.wait_health(operator, &all, &[]).await?;
    let answers = operator.connection().status_all().await;
    let leader = crate::status::build(cluster.config(), &answers).leader;
    // Rack a or b, not the leader: its shares can only go to the spare (rack c).
    let removed = (1..=4)
        .find(|id| Some(*id) != leader)
        .ok_or_else(|| CliError::Bench("no node to remove".into()))?;
    let (mut moves, mut share_bytes) = (0u64, 0u64);
    for e in operator
        .list_all(kakera_proto::catalog::ListFilter::All, usize::MAX)
        .await?
    {
        if !e.is_plain_replica() && e.holder_on(removed).is_some() {
            moves += 1;
            share_bytes += e.sealed_len
                + (kakera_shamir::share::SHARE_HEADER_LEN
                    + kakera_shamir::share::SHARE_CHECKSUM_LEN) as u64;
        }
    }
    let (_, before) = operator.topology().await?;
    let stopped = Instant::now();
    cluster.kill_node(removed)?;
    let deadline = stopped + Duration::from_secs(opts.repair_timeout_s);
    let mut first_move: Option<Instant> = None;
    // Bounded by the deadline.
    loop {
        tokio::time::sleep(Duration::from_millis(REPAIR_POLL_MS)).await;
        cluster.check_alive()?;
        let progress = match operator.topology().await {
            Ok((_, p)) => p,
            // A leader change mid-repair: ask again.
            Err(_) => continue,
        };
        let done = progress.done.saturating_sub(before.done);
        if first_move.is_none() && (progress.pending > 0 || done > 0) {
            first_move = Some(Instant::now());
        }
        if done >= moves && progress.pending == 0 {
            break;
        }
        if Instant::now() >= deadline {
            return Err(CliError::Bench(format!(
                "repair unfinished after {} s: {done} of {moves} moves done, {} pending, {} \
                 waiting, last error: {}",
                opts.repair_timeout_s,
                progress.pending,
                progress.waiting,
                progress.last_error.unwrap_or_else(|| "none".into())
            )));
        }
    }
    let finished = Instant::now();
    let first = first_move.unwrap_or(finished);
    let repair_s = finished.duration_since(first).as_secs_f64().max(1e-6);
    Ok(RepairFigures {
        removed_node: removed,
        new_node: SPARE_NODE,
        moves,
        share_bytes,
        detect_ms: first.duration_since(stopped).as_secs_f64() * 1000.0,
        repair_ms: repair_s * 1000.0,
        mb_per_s: share_bytes as f64 / 1e6 / repair_s,
        moves_per_s: moves as f64 / repair_s,
        repair_parallel: opts.repair_parallel,
        repair_rate_mb_s: opts.repair_rate_mb_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> BenchOptions {
        BenchOptions {
            sizes: vec![1024],
            concurrency: 1,
            bytes_per_size: 64 << 20,
            min_records: 8,
            max_records: 100_000,
            batch_bytes: 256 << 10,
            single_gets: 0,
            single_get_bytes: 1024,
            baseline: true,
            repair: false,
            repair_timeout_s: 1,
            repair_parallel: 1,
            repair_rate_mb_s: 1,
            repair_batch_moves: 1,
            file_share_min_bytes: 1 << 20,
            max_record_bytes: 64 << 20,
            dir: PathBuf::new(),
            node_binary: PathBuf::new(),
        }
    }

    #[test]
    fn counts_and_batches_follow_the_budget() {
        let o = opts();
        assert_eq!(record_count(1024, &o), 65_536);
        assert_eq!(record_count(16 << 20, &o), 8);
        assert_eq!(record_count(1, &o), 100_000);
        assert_eq!(batch_records(1024, o.batch_bytes, 4096), 256);
        assert_eq!(batch_records(16 << 20, o.batch_bytes, 4096), 1);
        assert_eq!(batch_records(1, o.batch_bytes, 100), 100);
    }
}
