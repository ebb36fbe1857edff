//! `kakera bench --scale-records N`: how the cluster behaves as its catalog grows.
//!
//! The cluster is filled with small records (`fill_bytes` each, full batches) up to
//! each checkpoint (the empty cluster, then every power of ten from 10^4, then N);
//! at each checkpoint, once the nodes' flushes and compactions have finished, the
//! same probe runs `probe_rounds` times: `probe_records` records of `probe_bytes` put
//! and read back (every byte checked); the checkpoint's records/s are taken over all
//! its rounds (their records over their summed time: a round that paid for a
//! compaction counts in full, as it does for a client), and the median round's
//! beside them. Before the
//! probe the nodes' CPU is sampled with nothing asked of them (their background
//! work: scrubbing, the repair scan), and over the rounds the nodes' and the
//! client's CPU and the nodes' reads are taken from /proc, per probe record: the
//! same work at every checkpoint, so a figure that grows with the catalog says
//! where the time went. Then each node's memory by holder (resident, Rust heap,
//! RocksDB) and its data directory's size are read. The probe at the empty cluster is the
//! baseline every later probe is compared with, in the same run; a warm-up batch
//! before it opens connections and fills caches so the baseline is not the cold start.
//!
//! Then two catch-ups (unless left out). A follower is killed with SIGKILL, the leader commits read
//! tickets until it has taken a snapshot past the follower's log and dropped the
//! entries it would have needed (so only a snapshot can bring it back), and the
//! follower is restarted; the clock runs from its start until it has applied what the
//! leader had committed. Then another follower is killed and its data directory
//! deleted (a replaced disk): it restarts empty, rejoins as a new member and is timed
//! the same way, then the probe's records are read back with it in the cluster. The
//! snapshots taken, sent and installed are read from the nodes' logs (`snapshot
//! taken`, `snapshot sent and installed`, `snapshot installed` lines), so their
//! sizes and times are the nodes' own.
//!
//! Last, the filled cluster is stopped and the same probe runs on a new, empty
//! cluster: a closing baseline. The machine's speed drifts over a long run (on the
//! 2-core bench machine, the empty cluster's probe cost 222 to 311 µs of node CPU
//! per record in runs an hour apart), so the largest catalog is compared with a
//! baseline on each side of it.
//!
//! Fill records are generated per batch as the workers need them: the client holds
//! `concurrency` batches at a time, never the catalog.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kakera_proto::RecordId;
use serde::Serialize;

use super::cluster::{ACTIVE_NODES, BenchCluster, Pacing};
use super::stats::{self, Mode, Phase, Shape};
use super::{JOB, Setup, Started, batch_records, bench_record, get_phase, make_batches, put_phase};
use crate::error::CliError;
use kakera_client::Client;

/// What nodes log during a scale run: warnings, and the Raft module's snapshot lines.
const SCALE_LOG_FILTER: &str = "warn,kakera_node::raft=info";
/// The first checkpoint above the empty cluster.
const FIRST_CHECKPOINT: u64 = 10_000;
/// How often the fill reports progress.
const PROGRESS_EVERY_S: u64 = 15;
/// Read tickets committed per round while the catch-up waits for a snapshot.
const TICKETS_PER_ROUND: usize = 256;
/// Most time the catch-up may take (the snapshot round, then the follower).
const CATCH_UP_TIMEOUT_S: u64 = 1_800;
/// How often the catch-up asks the nodes for their status.
const STATUS_POLL_MS: u64 = 100;
/// Records per request when the probe's records are read back after a catch-up.
const READ_BACK_BATCH: usize = 256;
/// Most time a checkpoint waits for the nodes' flushes and compactions to finish
/// before its probe (a probe that starts anyway says so).
const SETTLE_TIMEOUT_S: u64 = 900;
/// How often the settle step asks the nodes for their status.
const SETTLE_POLL_MS: u64 = 1_000;
/// How long the nodes' background CPU is sampled before each probe.
const IDLE_SAMPLE_MS: u64 = 5_000;

/// What to measure.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleOptions {
    /// Records in the catalog at the last checkpoint.
    pub records: u64,
    /// Size of each fill record.
    pub fill_bytes: u64,
    /// Records per probe (put, then read back).
    pub probe_records: u64,
    /// Probes per checkpoint. Each checkpoint's records/s are taken over all of
    /// them, and the median round's put and get (each chosen on its own) beside.
    pub probe_rounds: u32,
    /// Size of each probe record.
    pub probe_bytes: u64,
    /// Bytes per probe request.
    pub batch_bytes: u64,
    /// Requests in flight at once (fill and probes).
    pub concurrency: usize,
    /// Whether to measure a killed follower's and a wiped follower's catch-up at the
    /// end.
    pub catch_up: bool,
    /// Where the cluster lives.
    pub dir: PathBuf,
    /// The `kakera-node` binary.
    pub node_binary: PathBuf,
}

/// One node's memory and disk at a checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct NodeFootprint {
    /// The node.
    pub node: u64,
    /// Resident memory now (Linux `VmRSS`; None if the node did not answer).
    pub rss_bytes: Option<u64>,
    /// Most resident memory since the node started (Linux `VmHWM`).
    pub peak_rss_bytes: Option<u64>,
    /// Bytes under its data directory.
    pub disk_bytes: u64,
    /// Its memory by holder as it reported it (None if it did not answer).
    pub usage: Option<kakera_proto::NodeUsage>,
}

/// The probe at one catalog size.
#[derive(Debug, Clone, Serialize)]
pub struct ScalePoint {
    /// Records in the catalog before the probe.
    pub catalog_records: u64,
    /// Fill rate on the way to this checkpoint (None for the empty cluster).
    pub fill_records_per_s: Option<f64>,
    /// Time from the fill's end until no node had flushes or compactions queued or
    /// running (the probe measures the catalog's cost, not the fill's debt).
    pub settle_ms: f64,
    /// Whether the nodes settled within the settle timeout.
    pub settled: bool,
    /// The median round's puts.
    pub put: Phase,
    /// The median round's gets.
    pub get: Phase,
    /// Put records/s over all the rounds: their records over their summed time.
    /// A round that paid for a compaction counts in full, where the median round
    /// leaves it out (an empty cluster's first compaction falls in its fourth round
    /// every time, a filled cluster's in any round).
    pub all_rounds_put_records_per_s: f64,
    /// Get records/s over all the rounds, likewise.
    pub all_rounds_get_records_per_s: f64,
    /// Every round's put and get records/s, in order.
    pub rounds_records_per_s: Vec<(f64, f64)>,
    /// What the nodes and the client spent over all the rounds (None where /proc
    /// could not be read, or a node restarted).
    pub probe_cost: Option<ProbeCost>,
    /// CPU of every node, in cores, over [`IDLE_SAMPLE_MS`] before the probe with
    /// nothing asked of them (settled): their background work (scrubbing, the
    /// leader's repair scan, heartbeats), which the probe then shares the cores with.
    pub idle_node_cpu_cores: Option<f64>,
    /// Each running node after the probe.
    pub nodes: Vec<NodeFootprint>,
}

/// What a checkpoint's probe rounds cost, read from /proc: the same work at every
/// checkpoint, so a figure that grows with the catalog says where its time went.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProbeCost {
    /// CPU seconds of every running node, user and system (their background work,
    /// scrubbing, repair scans, compactions, included).
    pub node_cpu_s: f64,
    /// CPU seconds of this process (the client side of the probe).
    pub client_cpu_s: f64,
    /// Bytes the nodes had read from the storage device (`read_bytes`: page-cache
    /// misses).
    pub node_disk_read_bytes: u64,
    /// Bytes the nodes read through system calls (`rchar`: page-cache hits too).
    pub node_read_call_bytes: u64,
}

/// The counters [`ProbeCost`] is the difference of.
#[derive(Debug, Clone, PartialEq)]
struct CostSample {
    pids: Vec<u32>,
    node_ticks: u64,
    client_ticks: u64,
    disk_read_bytes: u64,
    read_call_bytes: u64,
}

/// The counters now, or None if a process's /proc entries cannot be read.
fn cost_sample(pids: &[(u64, u32)]) -> Option<CostSample> {
    let ticks = |p: &procfs::process::Process| p.stat().ok().map(|s| s.utime + s.stime);
    let mut sample = CostSample {
        pids: pids.iter().map(|(_, pid)| *pid).collect(),
        node_ticks: 0,
        client_ticks: ticks(&procfs::process::Process::myself().ok()?)?,
        disk_read_bytes: 0,
        read_call_bytes: 0,
    };
    for &pid in &sample.pids {
        let p = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
        let io = p.io().ok()?;
        sample.node_ticks += ticks(&p)?;
        sample.disk_read_bytes += io.read_bytes;
        sample.read_call_bytes += io.rchar;
    }
    Some(sample)
}

/// What was spent from `before` to `after`; None if the nodes are not the same
/// processes.
fn probe_cost(before: &CostSample, after: &CostSample) -> Option<ProbeCost> {
    if before.pids != after.pids {
        return None;
    }
    let s = |ticks: u64| ticks as f64 / procfs::ticks_per_second() as f64;
    Some(ProbeCost {
        node_cpu_s: s(after.node_ticks.checked_sub(before.node_ticks)?),
        client_cpu_s: s(after.client_ticks.checked_sub(before.client_ticks)?),
        node_disk_read_bytes: after.disk_read_bytes.checked_sub(before.disk_read_bytes)?,
        node_read_call_bytes: after.read_call_bytes.checked_sub(before.read_call_bytes)?,
    })
}

/// One snapshot line from a node's log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotEvent {
    /// The node that logged it.
    pub node: u64,
    /// `taken` (a snapshot's meta fixed, nothing copied), `sent` (the leader's side:
    /// transfer and install) or `installed`.
    pub event: String,
    /// Last log index the snapshot covers (taken and installed).
    pub index: Option<u64>,
    /// Bytes of the snapshot stream (sent and installed).
    pub size_bytes: Option<u64>,
    /// How long it took.
    pub elapsed_ms: u64,
}

/// A killed follower's return.
#[derive(Debug, Clone, Serialize)]
pub struct CatchUp {
    /// The follower killed and restarted.
    pub node: u64,
    /// Whether its data directory was deleted before the restart (it rejoined as a
    /// new member with nothing).
    pub wiped: bool,
    /// Entries the leader committed while it was down.
    pub entries_behind: u64,
    /// From its restart until it had applied what the leader had committed.
    pub catch_up_ms: f64,
    /// The snapshot it installed, if it logged one.
    pub installed: Option<SnapshotEvent>,
    /// The leader's transfer of it, if logged.
    pub sent: Option<SnapshotEvent>,
    /// After the catch-up, the time to read the probe's records back (every byte
    /// checked) with the node in the cluster.
    pub read_back_ms: f64,
    /// The node's memory and disk after the read-back (its peak resident memory
    /// covers the snapshot's receipt and install).
    pub footprint: Option<NodeFootprint>,
}

/// What a scale run measured.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    /// When the run started (Unix seconds).
    pub started_at_s: u64,
    /// The cluster.
    pub setup: Setup,
    /// The options.
    pub options: ScaleOptions,
    /// Each checkpoint, smallest catalog first.
    pub points: Vec<ScalePoint>,
    /// Probe put records/s at the largest catalog over the empty cluster's (median
    /// rounds).
    pub put_ratio: f64,
    /// Probe get records/s at the largest catalog over the empty cluster's (median
    /// rounds).
    pub get_ratio: f64,
    /// Probe put records/s over all rounds at the largest catalog over the empty
    /// cluster's.
    pub all_rounds_put_ratio: f64,
    /// Probe get records/s over all rounds at the largest catalog over the empty
    /// cluster's.
    pub all_rounds_get_ratio: f64,
    /// The same probe on a new, empty cluster started after the filled one was
    /// stopped (the machine's drift over the run shows against the first baseline).
    pub closing_baseline: ScalePoint,
    /// Probe put records/s at the largest catalog over the closing baseline's
    /// (median rounds).
    pub closing_put_ratio: f64,
    /// Probe get records/s at the largest catalog over the closing baseline's
    /// (median rounds).
    pub closing_get_ratio: f64,
    /// Probe put records/s over all rounds at the largest catalog over the closing
    /// baseline's.
    pub closing_all_rounds_put_ratio: f64,
    /// Probe get records/s over all rounds at the largest catalog over the closing
    /// baseline's.
    pub closing_all_rounds_get_ratio: f64,
    /// Every snapshot the nodes logged during the run.
    pub snapshots: Vec<SnapshotEvent>,
    /// Snapshot stream bytes per catalog record (the largest snapshot sent).
    pub snapshot_bytes_per_record: Option<f64>,
    /// The killed follower's catch-up, then the wiped follower's.
    pub catch_ups: Vec<CatchUp>,
}

/// The catalog sizes to probe at: the empty cluster, each power of ten from 10^4
/// below `records`, then `records`.
pub fn checkpoints(records: u64) -> Vec<u64> {
    let mut out = vec![0];
    let mut c = FIRST_CHECKPOINT;
    // Bounded: c grows tenfold each pass and stops below `records` (at most 20 passes
    // in a u64).
    while c < records {
        out.push(c);
        match c.checked_mul(10) {
            Some(next) => c = next,
            None => break,
        }
    }
    if records > 0 {
        out.push(records);
    }
    out
}

/// Runs the scale benchmark; `say` gets a line of progress per step.
pub async fn run(
    opts: &ScaleOptions,
    say: &mut (dyn FnMut(String) + Send),
) -> Result<ScaleReport, CliError> {
    if opts.concurrency == 0
        || opts.probe_records == 0
        || opts.records == 0
        || opts.probe_rounds == 0
    {
        return Err(CliError::Invalid(
            "give a record count, probe records, probe rounds and a concurrency of at least 1"
                .into(),
        ));
    }
    let started_at_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let pacing = Pacing {
        repair_parallel: 16,
        repair_rate_mb_s: 10_000,
        repair_batch_moves: kakera_config::MAX_REPAIR_BATCH_MOVES,
        file_share_min_bytes: kakera_config::StagingConfig::default().file_share_min_bytes,
        max_record_bytes: kakera_config::config::CEILING_RECORD_BYTES,
    };
    let Started {
        mut cluster,
        operator,
        ingest,
        reader,
        setup,
    } = super::start(&opts.dir, &opts.node_binary, pacing, SCALE_LOG_FILTER, say).await?;
    let max_batch = ingest.batch_records();
    let mut catalog = warm_up(opts, &ingest, &reader, say).await?;
    let mut points = Vec::new();
    let mut probe_ids = Vec::new();
    for target in checkpoints(opts.records) {
        let fill_records_per_s = if target > catalog {
            say(format!(
                "fill: {} records of {} up to {target}",
                target - catalog,
                stats::size_name(opts.fill_bytes)
            ));
            let rate = fill(&ingest, opts, target - catalog, max_batch, say).await?;
            cluster.check_alive()?;
            catalog = target;
            Some(rate)
        } else {
            None
        };
        let mut probe = Probe {
            opts,
            cluster: &mut cluster,
            operator: &operator,
            ingest: &ingest,
            reader: &reader,
        };
        let (point, ids) = probe.at(&mut catalog, fill_records_per_s, say).await?;
        points.push(point);
        probe_ids = ids;
    }
    let mut catch_ups = Vec::new();
    if opts.catch_up {
        say("catch-up: killing a follower, committing past the leader's next snapshot".into());
        catch_ups.push(
            measure_catch_up(&mut cluster, &operator, &reader, &probe_ids, false, say).await?,
        );
        say("catch-up: killing another follower and deleting its data directory".into());
        catch_ups
            .push(measure_catch_up(&mut cluster, &operator, &reader, &probe_ids, true, say).await?);
    }
    let mut snapshots = Vec::new();
    for id in 1..=ACTIVE_NODES {
        snapshots.extend(snapshot_events(id, &cluster.node_log(id))?);
    }
    let snapshot_bytes_per_record = snapshots
        .iter()
        .filter(|e| e.event == "sent")
        .filter_map(|e| e.size_bytes)
        .max()
        .map(|b| b as f64 / catalog.max(1) as f64);
    // The empty cluster again, on a fresh cluster once the filled one is stopped:
    // the machine's speed drifts over a long run, and a baseline on each side of the
    // largest catalog's probe shows by how much.
    drop(cluster);
    say("closing baseline: the same probe on a new, empty cluster".into());
    let closing = {
        let Started {
            mut cluster,
            operator,
            ingest,
            reader,
            ..
        } = super::start(
            &opts.dir.join("closing-baseline"),
            &opts.node_binary,
            pacing,
            SCALE_LOG_FILTER,
            say,
        )
        .await?;
        let mut empty = warm_up(opts, &ingest, &reader, say).await?;
        let mut probe = Probe {
            opts,
            cluster: &mut cluster,
            operator: &operator,
            ingest: &ingest,
            reader: &reader,
        };
        probe.at(&mut empty, None, say).await?.0
    };
    let (first, last) = match (points.first(), points.last()) {
        (Some(f), Some(l)) => (f, l),
        _ => return Err(CliError::Bench("no checkpoint was measured".into())),
    };
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    Ok(ScaleReport {
        started_at_s,
        setup,
        options: opts.clone(),
        put_ratio: ratio(last.put.records_per_s, first.put.records_per_s),
        get_ratio: ratio(last.get.records_per_s, first.get.records_per_s),
        closing_put_ratio: ratio(last.put.records_per_s, closing.put.records_per_s),
        closing_get_ratio: ratio(last.get.records_per_s, closing.get.records_per_s),
        all_rounds_put_ratio: ratio(
            last.all_rounds_put_records_per_s,
            first.all_rounds_put_records_per_s,
        ),
        all_rounds_get_ratio: ratio(
            last.all_rounds_get_records_per_s,
            first.all_rounds_get_records_per_s,
        ),
        closing_all_rounds_put_ratio: ratio(
            last.all_rounds_put_records_per_s,
            closing.all_rounds_put_records_per_s,
        ),
        closing_all_rounds_get_ratio: ratio(
            last.all_rounds_get_records_per_s,
            closing.all_rounds_get_records_per_s,
        ),
        closing_baseline: closing,
        points,
        snapshots,
        snapshot_bytes_per_record,
        catch_ups,
    })
}

/// The warm-up before a cluster's first probe (connections opened, caches
/// filled, so a baseline is not the cold start): one probe batch put and read back.
/// Returns the records it stored.
async fn warm_up(
    opts: &ScaleOptions,
    ingest: &Arc<Client>,
    reader: &Arc<Client>,
    say: &mut (dyn FnMut(String) + Send),
) -> Result<u64, CliError> {
    let shape = probe_shape(opts, ingest);
    say("warm-up: one probe batch".into());
    let warm = make_batches(
        opts.probe_bytes,
        shape.batch_records as u64,
        shape.batch_records,
    )?;
    let (_, ids) = put_phase(ingest, Mode::Sharing, shape, warm).await?;
    get_phase(reader, Mode::Sharing, shape, &ids).await?;
    Ok(ids.len() as u64)
}

/// The probe's request shape.
fn probe_shape(opts: &ScaleOptions, ingest: &Client) -> Shape {
    Shape {
        record_bytes: opts.probe_bytes,
        batch_records: batch_records(opts.probe_bytes, opts.batch_bytes, ingest.batch_records()),
        concurrency: opts.concurrency,
    }
}

/// One cluster as a checkpoint's probe sees it.
struct Probe<'a> {
    opts: &'a ScaleOptions,
    cluster: &'a mut BenchCluster,
    operator: &'a Client,
    ingest: &'a Arc<Client>,
    reader: &'a Arc<Client>,
}

impl Probe<'_> {
    /// Waits for the nodes to settle, samples their CPU at rest, runs the probe's
    /// rounds (adding their records to `catalog`) and reads the nodes' footprints.
    /// Returns the checkpoint and the last round's record ids.
    async fn at(
        &mut self,
        catalog: &mut u64,
        fill_records_per_s: Option<f64>,
        say: &mut (dyn FnMut(String) + Send),
    ) -> Result<(ScalePoint, Vec<(RecordId, kakera_proto::Digest)>), CliError> {
        let opts = self.opts;
        let shape = probe_shape(opts, self.ingest);
        let catalog_before = *catalog;
        let settle_started = Instant::now();
        let settled = settle(self.cluster, self.operator).await;
        let settle_ms = settle_started.elapsed().as_secs_f64() * 1000.0;
        say(format!(
            "probe at {catalog_before} records (settled in {:.1} s{}): {} rounds of {} records of {} put and read back",
            settle_ms / 1000.0,
            if settled { "" } else { ", not settled" },
            opts.probe_rounds,
            opts.probe_records,
            stats::size_name(opts.probe_bytes)
        ));
        let idle_before = cost_sample(&self.cluster.pids());
        tokio::time::sleep(Duration::from_millis(IDLE_SAMPLE_MS)).await;
        let idle_node_cpu_cores = idle_before
            .zip(cost_sample(&self.cluster.pids()))
            .and_then(|(before, after)| probe_cost(&before, &after))
            .map(|c| c.node_cpu_s * 1000.0 / IDLE_SAMPLE_MS as f64);
        let mut puts = Vec::new();
        let mut gets = Vec::new();
        let mut ids = Vec::new();
        let cost_before = cost_sample(&self.cluster.pids());
        for _ in 0..opts.probe_rounds {
            let batches = make_batches(opts.probe_bytes, opts.probe_records, shape.batch_records)?;
            let (put, round_ids) = put_phase(self.ingest, Mode::Sharing, shape, batches).await?;
            let get = get_phase(self.reader, Mode::Sharing, shape, &round_ids).await?;
            puts.push(put);
            gets.push(get);
            *catalog += round_ids.len() as u64;
            ids = round_ids;
        }
        let probe_cost = cost_before
            .zip(cost_sample(&self.cluster.pids()))
            .and_then(|(before, after)| probe_cost(&before, &after));
        let rounds_records_per_s = puts
            .iter()
            .zip(&gets)
            .map(|(p, g)| (p.records_per_s, g.records_per_s))
            .collect();
        let (all_rounds_put_records_per_s, all_rounds_get_records_per_s) =
            (all_rounds_rate(&puts), all_rounds_rate(&gets));
        let (put, get) = (median(puts)?, median(gets)?);
        self.cluster.check_alive()?;
        let nodes = footprints(self.cluster, self.operator).await;
        say(format!(
            "  put {:.0} records/s, get {:.0} records/s, largest node RSS {:.0} MiB",
            put.records_per_s,
            get.records_per_s,
            nodes.iter().filter_map(|n| n.rss_bytes).max().unwrap_or(0) as f64 / 1048576.0
        ));
        let point = ScalePoint {
            catalog_records: catalog_before,
            fill_records_per_s,
            settle_ms,
            settled,
            put,
            get,
            all_rounds_put_records_per_s,
            all_rounds_get_records_per_s,
            rounds_records_per_s,
            probe_cost,
            idle_node_cpu_cores,
            nodes,
        };
        Ok((point, ids))
    }
}

/// Records per second over `phases` together: their records over their summed time
/// (0 for no time). Unlike the median round, it counts a slow round in full.
fn all_rounds_rate(phases: &[Phase]) -> f64 {
    let records: u64 = phases.iter().map(|p| p.records).sum();
    let elapsed_ms: f64 = phases.iter().map(|p| p.elapsed_ms).sum();
    if elapsed_ms > 0.0 {
        records as f64 * 1000.0 / elapsed_ms
    } else {
        0.0
    }
}

/// The phase with the median records/s (the upper one of an even count).
fn median(mut phases: Vec<Phase>) -> Result<Phase, CliError> {
    phases.sort_by(|a, b| a.records_per_s.total_cmp(&b.records_per_s));
    let mid = phases.len() / 2;
    phases
        .into_iter()
        .nth(mid)
        .ok_or_else(|| CliError::Bench("a checkpoint ran no probe".into()))
}

/// Stores `count` fill records in full batches; the records/s.
async fn fill(
    ingest: &Arc<Client>,
    opts: &ScaleOptions,
    count: u64,
    per_batch: usize,
    say: &mut (dyn FnMut(String) + Send),
) -> Result<f64, CliError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| CliError::Bench(format!("the OS random source failed: {e}")))?;
    let len = usize::try_from(opts.fill_bytes)
        .map_err(|_| CliError::Invalid(format!("fill records of {} bytes", opts.fill_bytes)))?;
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let per_batch = per_batch.max(1) as u64;
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..opts.concurrency {
        let (ingest, next, done) = (ingest.clone(), next.clone(), done.clone());
        workers.spawn(async move {
            // Bounded: each pass claims the next batch of indices below `count`.
            loop {
                let from = next.fetch_add(per_batch, Ordering::Relaxed);
                if from >= count {
                    return Ok::<(), CliError>(());
                }
                let to = (from + per_batch).min(count);
                let mut batch = Vec::with_capacity((to - from) as usize);
                for i in from..to {
                    batch.push((Client::new_record_id()?, bench_record(&seed, i, len)?));
                }
                ingest.put_batch_with_ids(batch).await?;
                done.fetch_add(to - from, Ordering::Relaxed);
            }
        });
    }
    let mut tick = tokio::time::interval(Duration::from_secs(PROGRESS_EVERY_S));
    tick.tick().await;
    // Bounded by the workers: each ends when the indices run out or on an error.
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                None => break,
                Some(Ok(result)) => result?,
                Some(Err(e)) => {
                    return Err(CliError::Bench(format!("a fill worker failed: {e}")));
                }
            },
            _ = tick.tick() => {
                let n = done.load(Ordering::Relaxed);
                say(format!(
                    "  {n} of {count} ({:.0} records/s)",
                    n as f64 / started.elapsed().as_secs_f64().max(1e-6)
                ));
            }
        }
    }
    Ok(count as f64 / started.elapsed().as_secs_f64().max(1e-6))
}

/// Waits until no running node has flushes or compactions queued or running, at
/// most [`SETTLE_TIMEOUT_S`]; whether they settled. A running node that does not
/// answer counts as busy; the spare nodes the bench never started are not asked.
async fn settle(cluster: &BenchCluster, operator: &Client) -> bool {
    let deadline = Instant::now() + Duration::from_secs(SETTLE_TIMEOUT_S);
    let running: Vec<u64> = cluster.pids().into_iter().map(|(id, _)| id).collect();
    // Bounded by the deadline.
    loop {
        let answers = operator.connection().status_all().await;
        let mut asked = answers.iter().filter(|(n, _)| running.contains(&n.id));
        let idle = asked.all(|(_, a)| {
            a.as_ref().is_ok_and(|s| {
                s.usage.rocksdb_pending_compaction_bytes == 0 && s.usage.rocksdb_running_jobs == 0
            })
        });
        if idle {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(SETTLE_POLL_MS)).await;
    }
}

/// Each running node's memory and disk.
async fn footprints(cluster: &BenchCluster, operator: &Client) -> Vec<NodeFootprint> {
    let answers = operator.connection().status_all().await;
    cluster
        .pids()
        .into_iter()
        .map(|(node, _)| {
            let usage = answers
                .iter()
                .find(|(n, _)| n.id == node)
                .and_then(|(_, a)| a.as_ref().ok())
                .map(|s| s.usage.clone());
            NodeFootprint {
                node,
                rss_bytes: usage.as_ref().map(|u| u.rss_bytes),
                peak_rss_bytes: usage.as_ref().map(|u| u.peak_rss_bytes),
                disk_bytes: dir_bytes(&cluster.data_dir(node)),
                usage,
            }
        })
        .collect()
}

/// Bytes of the files under `dir` (0 for what cannot be read: the node may be
/// replacing files as this walks).
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    // Bounded by the directory tree: each directory is visited once.
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => pending.push(entry.path()),
                Ok(t) if t.is_file() => total += entry.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

/// The snapshot lines of node `node`'s log.
fn snapshot_events(node: u64, log: &Path) -> Result<Vec<SnapshotEvent>, CliError> {
    let file = std::fs::File::open(log).map_err(|source| CliError::File {
        path: log.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    // Bounded by the log file's lines.
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|source| CliError::File {
            path: log.to_path_buf(),
            source,
        })?;
        if let Some(e) = parse_snapshot_line(node, &line) {
            out.push(e);
        }
    }
    Ok(out)
}

/// One snapshot event from a node's log line (tracing's text format: the message,
/// then `key=value` fields).
pub fn parse_snapshot_line(node: u64, line: &str) -> Option<SnapshotEvent> {
    let event = if line.contains("snapshot sent and installed") {
        "sent"
    } else if line.contains("snapshot taken") {
        "taken"
    } else if line.contains("snapshot installed") {
        "installed"
    } else {
        return None;
    };
    let field = |key: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|t| t.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    };
    Some(SnapshotEvent {
        node,
        event: event.into(),
        index: field("index"),
        size_bytes: field("size_bytes"),
        elapsed_ms: field("elapsed_ms")?,
    })
}

/// The leader's id and committed index, and each node's applied index.
async fn raft_view(
    cluster: &BenchCluster,
    operator: &Client,
) -> Result<(u64, u64, Vec<(u64, u64, Option<u64>)>), CliError> {
    let answers = operator.connection().status_all().await;
    let report = crate::status::build(cluster.config(), &answers);
    let leader = report
        .leader
        .ok_or_else(|| CliError::Bench("no leader".into()))?;
    let committed = report.committed.unwrap_or(0);
    let nodes = answers
        .iter()
        .filter_map(|(n, a)| {
            let s = a.as_ref().ok()?;
            Some((n.id, s.raft.applied.unwrap_or(0), s.raft.snapshot))
        })
        .collect();
    Ok((leader, committed, nodes))
}

/// Kills a follower (and with `wipe` deletes its data directory), commits read
/// tickets until the leader's snapshot has passed the follower's log by the entries
/// kept behind a snapshot, restarts it, times its return, then reads the probe's
/// records back.
async fn measure_catch_up(
    cluster: &mut BenchCluster,
    operator: &Client,
    reader: &Arc<Client>,
    probe_ids: &[(RecordId, kakera_proto::Digest)],
    wipe: bool,
    say: &mut (dyn FnMut(String) + Send),
) -> Result<CatchUp, CliError> {
    let deadline = Instant::now() + Duration::from_secs(CATCH_UP_TIMEOUT_S);
    let keep = cluster.config().raft.keep_entries_after_snapshot;
    let (leader, _, _) = raft_view(cluster, operator).await?;
    // The first catch-up takes the highest follower, the wiped one the lowest: two
    // different nodes.
    let mut followers = (1..=ACTIVE_NODES).filter(|id| *id != leader);
    let node = if wipe {
        followers.next()
    } else {
        followers.next_back()
    }
    .ok_or_else(|| CliError::Bench("no follower to kill".into()))?;
    cluster.kill_node(node)?;
    if wipe {
        // The database and snapshot directory; the node's certificate and key stay,
        // as an operator reinstalls them on a replaced disk.
        for sub in ["db", "snapshots"] {
            let dir = cluster.data_dir(node).join(sub);
            std::fs::remove_dir_all(&dir).map_err(|source| CliError::File { path: dir, source })?;
        }
    }
    let (_, killed_at, _) = raft_view(cluster, operator).await?;
    let one: Vec<RecordId> = probe_ids
        .first()
        .map(|(id, _)| vec![*id])
        .ok_or_else(|| CliError::Bench("no probe record to read".into()))?;
    // Bounded by the deadline: each round commits TICKETS_PER_ROUND entries. A wiped
    // node needs the log from its start, so one round is enough once the leader has
    // purged any of it.
    let committed_down = loop {
        let mut round = tokio::task::JoinSet::new();
        for _ in 0..TICKETS_PER_ROUND {
            let (reader, one) = (reader.clone(), one.clone());
            round.spawn(async move { reader.get_batch(JOB, &one).await.map(|_| ()) });
        }
        while let Some(r) = round.join_next().await {
            r.map_err(|e| CliError::Bench(format!("a ticket task failed: {e}")))??;
        }
        cluster.check_alive()?;
        let (_, committed, nodes) = raft_view(cluster, operator).await?;
        let snapshot = nodes
            .iter()
            .find(|(id, _, _)| *id == leader)
            .and_then(|(_, _, s)| *s)
            .unwrap_or(0);
        let past = if wipe { keep } else { killed_at + keep };
        if snapshot > past {
            break committed;
        }
        if Instant::now() >= deadline {
            return Err(CliError::Bench(format!(
                "the leader took no snapshot past index {past} within {CATCH_UP_TIMEOUT_S} s"
            )));
        }
    };
    say(format!(
        "  node {node} is {} entries behind{}; restarting it",
        committed_down - killed_at,
        if wipe {
            " with an empty data directory"
        } else {
            ""
        }
    ));
    let restarted = Instant::now();
    cluster.start_node(node)?;
    // Bounded by the deadline.
    loop {
        tokio::time::sleep(Duration::from_millis(STATUS_POLL_MS)).await;
        cluster.check_alive()?;
        if let Ok((_, _, nodes)) = raft_view(cluster, operator).await
            && nodes
                .iter()
                .any(|(id, applied, _)| *id == node && *applied >= committed_down)
        {
            break;
        }
        if Instant::now() >= deadline {
            return Err(CliError::Bench(format!(
                "node {node} had not caught up after {CATCH_UP_TIMEOUT_S} s; see {}",
                cluster.node_log(node).display()
            )));
        }
    }
    let catch_up_ms = restarted.elapsed().as_secs_f64() * 1000.0;
    let reading = Instant::now();
    let expected: std::collections::HashMap<RecordId, kakera_proto::Digest> =
        probe_ids.iter().copied().collect();
    let ids: Vec<RecordId> = probe_ids.iter().map(|(id, _)| *id).collect();
    for group in ids.chunks(READ_BACK_BATCH) {
        let got = reader.get_batch(JOB, group).await?;
        if got.records.len() != group.len() {
            return Err(CliError::Bench(format!(
                "after node {node}'s catch-up {} of {} records read back",
                got.records.len(),
                group.len()
            )));
        }
        if let Some(r) = got
            .records
            .iter()
            .find(|r| expected.get(&r.id) != Some(&kakera_proto::Digest::of(&r.data)))
        {
            return Err(CliError::Bench(format!(
                "record {} read back with different bytes after node {node}'s catch-up",
                r.id
            )));
        }
    }
    let read_back_ms = reading.elapsed().as_secs_f64() * 1000.0;
    let footprint = footprints(cluster, operator)
        .await
        .into_iter()
        .find(|f| f.node == node);
    let installed = snapshot_events(node, &cluster.node_log(node))?
        .into_iter()
        .rfind(|e| e.event == "installed");
    let sent = snapshot_events(leader, &cluster.node_log(leader))?
        .into_iter()
        .rfind(|e| e.event == "sent");
    Ok(CatchUp {
        node,
        wiped: wipe,
        entries_behind: committed_down - killed_at,
        catch_up_ms,
        installed,
        sent,
        read_back_ms,
        footprint,
    })
}

/// The checkpoints in order, then the closing baseline (marked `*`), each with
/// its label.
fn rows(report: &ScaleReport) -> impl Iterator<Item = (&ScalePoint, String)> {
    report
        .points
        .iter()
        .map(|p| (p, p.catalog_records.to_string()))
        .chain(std::iter::once((
            &report.closing_baseline,
            format!("{}*", report.closing_baseline.catalog_records),
        )))
}

/// The report as a table.
pub fn render(report: &ScaleReport) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:>10} {:>10} {:>8} {:>10} {:>10} {:>10} {:>10} {:>12} {:>12} {:>9} {:>9}\n",
        "catalog",
        "fill r/s",
        "settle s",
        "put r/s",
        "get r/s",
        "put p99 ms",
        "get p99 ms",
        "max RSS MiB",
        "peak RSS MiB",
        "heap MiB",
        "rocks MiB"
    ));
    for (p, label) in rows(report) {
        let mib = |f: fn(&NodeFootprint) -> Option<u64>| {
            p.nodes.iter().filter_map(f).max().unwrap_or(0) as f64 / 1048576.0
        };
        // The node with the most resident memory, taken apart.
        let biggest = p
            .nodes
            .iter()
            .max_by_key(|n| n.rss_bytes)
            .and_then(|n| n.usage.as_ref());
        let held = |f: fn(&kakera_proto::NodeUsage) -> u64| {
            biggest.map_or("-".to_string(), |u| {
                format!("{:.0}", f(u) as f64 / 1048576.0)
            })
        };
        out.push_str(&format!(
            "{:>10} {:>10} {:>8} {:>10.0} {:>10.0} {:>10.1} {:>10.1} {:>12.0} {:>12.0} {:>9} {:>9}\n",
            label,
            p.fill_records_per_s
                .map_or("-".to_string(), |r| format!("{r:.0}")),
            format!("{:.0}{}", p.settle_ms / 1000.0, if p.settled { "" } else { "!" }),
            p.put.records_per_s,
            p.get.records_per_s,
            p.put.latency.p99_us as f64 / 1000.0,
            p.get.latency.p99_us as f64 / 1000.0,
            mib(|n| n.rss_bytes),
            mib(|n| n.peak_rss_bytes),
            held(|u| u.heap_resident_bytes),
            held(|u| u.rocksdb_memtable_bytes
                + u.rocksdb_table_reader_bytes
                + u.rocksdb_block_cache_bytes),
        ));
    }
    out.push_str(
        "(settle: fill's end to no flush or compaction queued, ! = not settled; heap and rocks: \
         the node with the most RSS, jemalloc resident and RocksDB memtables + table readers + \
         block cache)\n",
    );
    out.push_str(&format!(
        "\n{:>10} {:>13} {:>10} {:>11} {:>13} {:>11} {:>11}  {}\n",
        "catalog",
        "all put/get",
        "idle cores",
        "node cpu us",
        "client cpu us",
        "disk rd B",
        "rd call B",
        "rounds put/get r/s"
    ));
    let per_record = (report.options.probe_records.max(1)
        * u64::from(report.options.probe_rounds.max(1))) as f64;
    for (p, label) in rows(report) {
        let rounds = p
            .rounds_records_per_s
            .iter()
            .map(|(put, get)| format!("{put:.0}/{get:.0}"))
            .collect::<Vec<_>>()
            .join(" ");
        let cost = |f: fn(&ProbeCost) -> f64| {
            p.probe_cost
                .as_ref()
                .map_or("-".to_string(), |c| format!("{:.0}", f(c) / per_record))
        };
        out.push_str(&format!(
            "{:>10} {:>13} {:>10} {:>11} {:>13} {:>11} {:>11}  {}\n",
            label,
            format!(
                "{:.0}/{:.0}",
                p.all_rounds_put_records_per_s, p.all_rounds_get_records_per_s
            ),
            p.idle_node_cpu_cores
                .map_or("-".to_string(), |c| format!("{c:.2}")),
            cost(|c| c.node_cpu_s * 1e6),
            cost(|c| c.client_cpu_s * 1e6),
            cost(|c| c.node_disk_read_bytes as f64),
            cost(|c| c.node_read_call_bytes as f64),
            rounds,
        ));
    }
    out.push_str(
        "(all put/get: records/s over all rounds, their records over their summed time; idle \
         cores: every node's CPU before the probe with nothing asked of it; then per probe \
         record, put and read back, over all rounds: the CPU of every node and of the client, the \
         nodes' reads from the disk and through system calls)\n",
    );
    out.push_str(
        "(*: the closing baseline, the same probe on a new, empty cluster after the filled one \
         was stopped)\n",
    );
    out.push_str(&format!(
        "\nlargest catalog over empty, all rounds: put {:.2}x, get {:.2}x (over the closing \
         baseline: put {:.2}x, get {:.2}x)\n",
        report.all_rounds_put_ratio,
        report.all_rounds_get_ratio,
        report.closing_all_rounds_put_ratio,
        report.closing_all_rounds_get_ratio
    ));
    out.push_str(&format!(
        "largest catalog over empty, median round: put {:.2}x, get {:.2}x (over the closing \
         baseline: put {:.2}x, get {:.2}x)\n",
        report.put_ratio, report.get_ratio, report.closing_put_ratio, report.closing_get_ratio
    ));
    if let Some(b) = report.snapshot_bytes_per_record {
        out.push_str(&format!("snapshot bytes per catalog record: {b:.0}\n"));
    }
    let taken = report.snapshots.iter().filter(|e| e.event == "taken");
    if let Some(slowest) = taken.clone().map(|e| e.elapsed_ms).max() {
        out.push_str(&format!(
            "snapshots taken: {} (nothing copied; the slowest took {slowest} ms)\n",
            taken.count()
        ));
    }
    for c in &report.catch_ups {
        out.push_str(&format!(
            "catch-up: node {} killed{}, {} entries behind, caught up {:.1} s after restart",
            c.node,
            if c.wiped { " and wiped" } else { "" },
            c.entries_behind,
            c.catch_up_ms / 1000.0
        ));
        match (&c.sent, &c.installed) {
            (Some(sent), Some(i)) => {
                let mb = sent.size_bytes.unwrap_or(0) as f64 / 1e6;
                let s = sent.elapsed_ms.max(1) as f64 / 1000.0;
                out.push_str(&format!(
                    " (snapshot of {mb:.1} MB streamed, written and installed in {s:.1} s as \
                     the leader saw it, {:.0} MB/s; its ingestion took {} ms)",
                    mb / s,
                    i.elapsed_ms
                ));
            }
            _ => out.push_str(" (from the log, no snapshot)"),
        }
        out.push_str(&format!(
            "; probe records read back in {:.1} s",
            c.read_back_ms / 1000.0
        ));
        if let Some(f) = &c.footprint {
            let mib = |b: Option<u64>| {
                b.map_or("-".to_string(), |b| format!("{:.0}", b as f64 / 1048576.0))
            };
            out.push_str(&format!(
                "; then {} MiB resident, peak {} MiB, {:.1} GB on disk",
                mib(f.rss_bytes),
                mib(f.peak_rss_bytes),
                f.disk_bytes as f64 / 1e9
            ));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;

    /// The probe's cost is a difference of the same processes' counters: a node
    /// restarted between the samples (its counters start again) gives no figure
    /// rather than a wrong one.
    #[test]
    fn probe_cost_is_the_difference_of_one_set_of_processes() {
        let before = CostSample {
            pids: vec![10, 11],
            node_ticks: 100,
            client_ticks: 50,
            disk_read_bytes: 4096,
            read_call_bytes: 10_000,
        };
        let after = CostSample {
            node_ticks: 100 + procfs::ticks_per_second() * 3,
            client_ticks: 50 + procfs::ticks_per_second(),
            disk_read_bytes: 8192,
            read_call_bytes: 30_000,
            ..before.clone()
        };
        let cost = probe_cost(&before, &after).unwrap();
        assert_eq!(cost.node_cpu_s, 3.0);
        assert_eq!(cost.client_cpu_s, 1.0);
        assert_eq!(cost.node_disk_read_bytes, 4096);
        assert_eq!(cost.node_read_call_bytes, 20_000);
        let restarted = CostSample {
            pids: vec![10, 12],
            ..after.clone()
        };
        assert_eq!(probe_cost(&before, &restarted), None);
        let reset = CostSample {
            node_ticks: 1,
            ..after
        };
        assert_eq!(probe_cost(&before, &reset), None);
        // This process and its own /proc entries are readable here.
        let me = std::process::id();
        let sample = cost_sample(&[(1, me)]).unwrap();
        assert!(sample.read_call_bytes > 0);
    }

    /// Issue 21.4's probe: a round that paid for a compaction counts in full in the
    /// records/s over all rounds (what a client sees), where the median round
    /// leaves it out.
    #[test]
    fn a_slow_round_counts_over_all_rounds_but_not_in_the_median() {
        let shape = Shape {
            record_bytes: 1024,
            batch_records: 32,
            concurrency: 4,
        };
        let latency = stats::Percentiles {
            samples: 1,
            p50_us: 1,
            p99_us: 1,
            p999_us: 1,
            max_us: 1,
        };
        let round = |elapsed_ms: f64| {
            Phase::new(
                stats::Op::Put,
                Mode::Sharing,
                shape,
                10_000,
                elapsed_ms,
                latency,
            )
        };
        // Four rounds at 10,000 records/s and one at 5,000 (twice the time).
        let rounds: Vec<Phase> = [1000.0, 1000.0, 1000.0, 2000.0, 1000.0]
            .into_iter()
            .map(round)
            .collect();
        assert_eq!(all_rounds_rate(&rounds), 50_000.0 * 1000.0 / 6000.0);
        assert_eq!(median(rounds).unwrap().records_per_s, 10_000.0);
        assert_eq!(all_rounds_rate(&[]), 0.0);
    }

    #[test]
    fn checkpoints_are_decades_then_the_target() {
        assert_eq!(
            checkpoints(10_000_000),
            vec![0, 10_000, 100_000, 1_000_000, 10_000_000]
        );
        assert_eq!(checkpoints(250_000), vec![0, 10_000, 100_000, 250_000]);
        assert_eq!(checkpoints(5_000), vec![0, 5_000]);
        // 0, 10^4 ..= 10^19, then the target.
        assert_eq!(checkpoints(u64::MAX).len(), 18);
    }

    #[test]
    fn snapshot_lines_parse_from_the_node_log_format() {
        let taken = "2026-12-03T14:00:00.1Z  INFO kakera_node::raft::state_machine: snapshot \
                     taken index=6021 elapsed_ms=87";
        assert_eq!(
            parse_snapshot_line(2, taken),
            Some(SnapshotEvent {
                node: 2,
                event: "taken".into(),
                index: Some(6021),
                size_bytes: None,
                elapsed_ms: 87,
            })
        );
        let sent = "INFO kakera_node::raft::network: snapshot sent and installed peer=node-4 \
                    size_bytes=99 elapsed_ms=1500";
        let e = parse_snapshot_line(1, sent).unwrap();
        assert_eq!((e.event.as_str(), e.elapsed_ms), ("sent", 1500));
        let installed = "INFO kakera_node::raft::state_machine: snapshot installed index=7 \
                         pairs=3 size_bytes=10 elapsed_ms=4";
        assert_eq!(
            parse_snapshot_line(4, installed).unwrap().event,
            "installed"
        );
        assert_eq!(
            parse_snapshot_line(1, "WARN something else elapsed_ms=3"),
            None
        );
        // A line without a time is not an event (the log format changed).
        assert_eq!(parse_snapshot_line(1, "snapshot taken index=1"), None);
    }
}
