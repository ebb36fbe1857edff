//! The benchmark's arithmetic, pure: latency percentiles, throughput, the ratio of
//! secret sharing to the replication baseline, and the printed table. No clock and no
//! network here; `kakera bench` feeds it what it measured.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles of one phase, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Requests measured.
    pub samples: usize,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile (with fewer than 1,000 samples this is the slowest request).
    pub p999_us: u64,
    /// The slowest request.
    pub max_us: u64,
}

/// The longest latency a histogram holds; longer ones count as this.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;

/// An empty latency histogram: 1 µs to an hour at three significant digits (every
/// figure within 0.1 %), a fixed size whatever the number of requests.
pub fn latency_histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)
        .map_err(|e| format!("latency histogram: {e:?}"))
}

/// Records one request's latency (under 1 µs counts as 1 µs, over an hour as an hour).
pub fn record_latency(histogram: &mut Histogram<u64>, latency_us: u64) {
    histogram.saturating_record(latency_us.clamp(1, LATENCY_MAX_US));
}

/// Nearest-rank percentiles (the smallest value with at least q of the samples at or
/// below it) of the recorded latencies. `None` when none was recorded.
pub fn percentiles(latencies_us: &Histogram<u64>) -> Option<Percentiles> {
    if latencies_us.is_empty() {
        return None;
    }
    Some(Percentiles {
        samples: usize::try_from(latencies_us.len()).unwrap_or(usize::MAX),
        p50_us: latencies_us.value_at_quantile(0.5),
        p99_us: latencies_us.value_at_quantile(0.99),
        p999_us: latencies_us.value_at_quantile(0.999),
        max_us: latencies_us.max(),
    })
}

/// How a phase stored or read its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// kakera: sealed, split k of n, one share per holder.
    Sharing,
    /// The baseline: plain copies, one per rack, neither sealed nor split.
    Replicas,
}

impl Mode {
    /// The name in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sharing => "sharing",
            Mode::Replicas => "replicas",
        }
    }
}

/// What a phase did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Stores records.
    Put,
    /// Reads them back.
    Get,
}

impl Op {
    /// The name in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
        }
    }
}

/// The load a phase put on the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shape {
    /// Bytes per record (plaintext).
    pub record_bytes: u64,
    /// Records per request (a put batch or one read ticket).
    pub batch_records: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
}

/// One measured phase: one operation on records of one size in one mode.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    /// Put or get.
    pub op: Op,
    /// Sharing or the replica baseline.
    pub mode: Mode,
    /// Record size, batch and concurrency.
    #[serde(flatten)]
    pub shape: Shape,
    /// Records done.
    pub records: u64,
    /// Wall time of the phase.
    pub elapsed_ms: f64,
    /// Records per second.
    pub records_per_s: f64,
    /// Record bytes per second, in MB/s (10^6 bytes).
    pub mb_per_s: f64,
    /// Latency of each request (a whole batch).
    pub latency: Percentiles,
}

impl Phase {
    /// A phase from what was counted and timed.
    pub fn new(
        op: Op,
        mode: Mode,
        shape: Shape,
        records: u64,
        elapsed_ms: f64,
        latency: Percentiles,
    ) -> Phase {
        let seconds = (elapsed_ms / 1000.0).max(f64::MIN_POSITIVE);
        Phase {
            op,
            mode,
            shape,
            records,
            elapsed_ms,
            records_per_s: records as f64 / seconds,
            mb_per_s: (records * shape.record_bytes) as f64 / 1e6 / seconds,
            latency,
        }
    }
}

/// The cost of secret sharing for one operation and record size: time per record with
/// sharing over time per record with replicas (2.0 = twice as slow).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ratio {
    /// Put or get.
    pub op: Op,
    /// Bytes per record.
    pub record_bytes: u64,
    /// Sharing's time per record over the baseline's.
    pub time_ratio: f64,
}

/// The ratio of every (op, size) measured in both modes.
pub fn ratios(phases: &[Phase]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for s in phases.iter().filter(|p| p.mode == Mode::Sharing) {
        let base = phases
            .iter()
            .find(|p| p.mode == Mode::Replicas && p.op == s.op && p.shape == s.shape);
        if let Some(b) = base
            && s.records_per_s > 0.0
        {
            out.push(Ratio {
                op: s.op,
                record_bytes: s.shape.record_bytes,
                time_ratio: b.records_per_s / s.records_per_s,
            });
        }
    }
    out
}

/// Repair throughput: shares regenerated on the new holder after a node was removed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepairFigures {
    /// The node stopped.
    pub removed_node: u64,
    /// The node the shares moved to.
    pub new_node: u64,
    /// Shares the removed node held (moves expected).
    pub moves: u64,
    /// Their encoded bytes.
    pub share_bytes: u64,
    /// From the stop until the leader called the node dead and started moving.
    pub detect_ms: f64,
    /// From the first move until the last was committed.
    pub repair_ms: f64,
    /// Share bytes regenerated per second during repair, in MB/s.
    pub mb_per_s: f64,
    /// Moves committed per second during repair.
    pub moves_per_s: f64,
    /// The config's pacing at the time (`[health]`).
    pub repair_parallel: u32,
    /// The config's rate limit (MB/s).
    pub repair_rate_mb_s: u32,
}

/// Human units for a byte count: 1 KiB, 64 KiB, 1 MiB, 16 MiB, 1 GiB.
pub fn size_name(bytes: u64) -> String {
    const KIB: u64 = 1024;
    if bytes >= KIB * KIB * KIB && bytes.is_multiple_of(KIB * KIB * KIB) {
        format!("{} GiB", bytes / (KIB * KIB * KIB))
    } else if bytes >= KIB * KIB && bytes.is_multiple_of(KIB * KIB) {
        format!("{} MiB", bytes / (KIB * KIB))
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} B")
    }
}

/// Parses a size: `1024`, `1KiB`, `64KiB`, `1MiB`, `16MiB`, `1GiB` (also `K`, `M`,
/// `G`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("\"{text}\" is not a size (write 1KiB, 64KiB, 1MiB, 1GiB or bytes)")
    })?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1024,
        "M" | "MiB" => 1024 * 1024,
        "G" | "GiB" => 1024 * 1024 * 1024,
        other => return Err(format!("unknown size unit \"{other}\" in \"{text}\"")),
    };
    n.checked_mul(mult)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("\"{text}\" is not a positive size"))
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// The table `kakera bench` prints.
pub fn render(phases: &[Phase], ratios: &[Ratio], repair: Option<&RepairFigures>) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<4} {:<8} {:>7} {:>6} {:>4} {:>8} {:>11} {:>9} {:>9} {:>9} {:>9}\n",
        "op",
        "mode",
        "size",
        "batch",
        "conc",
        "records",
        "records/s",
        "MB/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms"
    ));
    for p in phases {
        out.push_str(&format!(
            "{:<4} {:<8} {:>7} {:>6} {:>4} {:>8} {:>11.0} {:>9.1} {:>9} {:>9} {:>9}\n",
            p.op.as_str(),
            p.mode.as_str(),
            size_name(p.shape.record_bytes),
            p.shape.batch_records,
            p.shape.concurrency,
            p.records,
            p.records_per_s,
            p.mb_per_s,
            ms(p.latency.p50_us),
            ms(p.latency.p99_us),
            ms(p.latency.p999_us),
        ));
    }
    if !ratios.is_empty() {
        out.push_str("\ncost of secret sharing (time per record, sharing / replicas):\n");
        for r in ratios {
            out.push_str(&format!(
                "  {:<4} {:>7}  {:.2}x\n",
                r.op.as_str(),
                size_name(r.record_bytes),
                r.time_ratio
            ));
        }
    }
    if let Some(r) = repair {
        out.push_str(&format!(
            "\nrepair: node {} stopped, {} shares ({:.1} MB) regenerated on node {} in {:.1} s \
             ({:.1} MB/s, {:.0} moves/s; detection took {:.1} s; repair_parallel {}, \
             repair_rate_mb_s {})\n",
            r.removed_node,
            r.moves,
            r.share_bytes as f64 / 1e6,
            r.new_node,
            r.repair_ms / 1000.0,
            r.mb_per_s,
            r.moves_per_s,
            r.detect_ms / 1000.0,
            r.repair_parallel,
            r.repair_rate_mb_s,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;

    fn histogram(values: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut h = latency_histogram().unwrap();
        for v in values {
            record_latency(&mut h, v);
        }
        h
    }

    #[test]
    fn nearest_rank_percentiles() {
        let p = percentiles(&histogram((1..=1000).rev())).unwrap();
        assert_eq!(
            (p.samples, p.p50_us, p.p99_us, p.p999_us, p.max_us),
            (1000, 500, 990, 999, 1000)
        );
        let p = percentiles(&histogram([30, 10, 20])).unwrap();
        assert_eq!((p.p50_us, p.p99_us, p.p999_us), (20, 30, 30));
        assert_eq!(percentiles(&histogram([])), None);
        assert_eq!(percentiles(&histogram([7])).unwrap().p999_us, 7);
        // Large values within 0.1 %; beyond an hour counts as an hour.
        let p = percentiles(&histogram([1_234_567, 2 * LATENCY_MAX_US])).unwrap();
        assert!(p.p50_us.abs_diff(1_234_567) <= 1_235, "{p:?}");
        assert!(
            p.max_us.abs_diff(LATENCY_MAX_US) <= LATENCY_MAX_US / 1000,
            "{p:?}"
        );
    }

    fn phase(op: Op, mode: Mode, size: u64, per_s: f64) -> Phase {
        let lat = Percentiles {
            samples: 1,
            p50_us: 1,
            p99_us: 1,
            p999_us: 1,
            max_us: 1,
        };
        let shape = Shape {
            record_bytes: size,
            batch_records: 1,
            concurrency: 1,
        };
        // 1000 ms: records/s equals the record count.
        Phase::new(op, mode, shape, per_s as u64, 1000.0, lat)
    }

    #[test]
    fn throughput_and_ratio() {
        let s = phase(Op::Put, Mode::Sharing, 1_000_000, 50.0);
        assert_eq!(s.records_per_s, 50.0);
        assert_eq!(s.mb_per_s, 50.0);
        let phases = [
            s,
            phase(Op::Put, Mode::Replicas, 1_000_000, 150.0),
            phase(Op::Get, Mode::Sharing, 1_000_000, 100.0),
            // No baseline at this size: no ratio.
            phase(Op::Put, Mode::Sharing, 1024, 10.0),
        ];
        let r = ratios(&phases);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].op, r[0].record_bytes), (Op::Put, 1_000_000));
        assert!((r[0].time_ratio - 3.0).abs() < 1e-9);
        let table = render(&phases, &r, None);
        assert!(table.contains("3.00x"), "{table}");
        assert!(
            table.contains("1 MiB") || table.contains("1000000 B"),
            "{table}"
        );
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(size_name(1 << 30), "1 GiB");
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("0").is_err());
        assert!(parse_size("3GB").is_err());
        assert!(parse_size("KiB").is_err());
        assert_eq!(size_name(1024), "1 KiB");
        assert_eq!(size_name(16 << 20), "16 MiB");
        assert_eq!(size_name(1000), "1000 B");
    }
}
