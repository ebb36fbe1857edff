//! `kakera bench`: the cluster benchmark (kakera_cli::bench does the work).

use std::path::PathBuf;

use kakera_cli::CliError;

use crate::cmd::*;

/// `kakera bench` options.
#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    /// Record sizes, comma-separated (1KiB, 64KiB, 1MiB, 16MiB, or bytes).
    #[arg(long, value_delimiter = ',', default_value = "1KiB,64KiB,1MiB,16MiB")]
    sizes: Vec<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Record bytes stored per size and mode; the record count follows.
    #[arg(long, default_value = "64MiB")]
    bytes_per_size: String,
    /// Fewest records per size.
    #[arg(long, default_value_t = 8)]
    min_records: u64,
    /// Most records per size.
    #[arg(long, default_value_t = 100_000)]
    max_records: u64,
    /// Bytes per request: small records are batched up to this.
    #[arg(long, default_value = "256KiB")]
    batch_bytes: String,
    /// Single-record gets at concurrency 1 for the low-load latency (0 skips).
    #[arg(long, default_value_t = 1000)]
    single_gets: usize,
    /// Skip the replication baseline (required unless this kakera was built with the
    /// bench-baseline feature, as scripts/bench-cluster.sh builds it).
    #[arg(long)]
    no_baseline: bool,
    /// Skip the repair measurement.
    #[arg(long)]
    no_repair: bool,
    /// Most seconds the repair may take.
    #[arg(long, default_value_t = 900)]
    repair_timeout_s: u64,
    /// Repairs at once in the benchmark cluster ([health] repair_parallel).
    #[arg(long, default_value_t = 16)]
    repair_parallel: u32,
    /// Repair rate limit in the benchmark cluster, MB/s ([health] repair_rate_mb_s).
    #[arg(long, default_value_t = 10_000)]
    repair_rate_mb_s: u32,
    /// Moves per masked-repair session in the benchmark cluster ([health]
    /// repair_batch_moves; 1 runs a session per move).
    #[arg(long, default_value_t = 256)]
    repair_batch: u32,
    /// Shares of at least this many bytes are written to files of their own on the
    /// nodes ([staging] file_share_min_bytes; a size like 1MiB).
    #[arg(long, default_value = "1MiB")]
    file_share_min_bytes: String,
    /// The largest record put whole in the benchmark cluster ([limits]
    /// max_record_bytes); larger sizes are put and read as streams of segments.
    #[arg(long, default_value = "64MiB")]
    max_record_bytes: String,
    /// Where the report is written.
    #[arg(long, default_value = "kakera-bench.json")]
    out: PathBuf,
    /// The cluster's directory (default: a new one under the temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the cluster's directory (data, logs, config) afterwards.
    #[arg(long)]
    keep: bool,
    /// The kakera-node binary (default: beside this one, else on PATH).
    #[arg(long)]
    node_binary: Option<PathBuf>,
    /// Scale mode: fill the catalog to this many records (checkpoints at every power
    /// of ten from 10^4) and probe puts, gets and node memory at each; --sizes and
    /// the repair, baseline and single-get phases do not apply.
    #[arg(long)]
    scale_records: Option<u64>,
    /// Scale mode: size of each fill record.
    #[arg(long, default_value = "64")]
    fill_bytes: String,
    /// Scale mode: records per probe round (1 KiB each), put then read back. The
    /// default writes 32 MiB of shares per node a round, a memtable's worth, so
    /// every checkpoint's rounds pay for their own flushes, the empty cluster's too.
    #[arg(long, default_value_t = 32768)]
    probe_records: u64,
    /// Scale mode: probe rounds per checkpoint; records/s are reported over all of
    /// them and for the median round.
    #[arg(long, default_value_t = 5)]
    probe_rounds: u32,
    /// Scale mode: skip the catch-ups at the end (a killed follower, then a wiped one)
    #[arg(long)]
    no_catch_up: bool,
}

pub(crate) fn run(args: BenchArgs, json: bool) -> Result<Outcome, CliError> {
    use kakera_cli::bench::{self, stats};
    let size = |t: &str| stats::parse_size(t).map_err(CliError::Invalid);
    let sizes = args
        .sizes
        .iter()
        .map(|s| size(s))
        .collect::<Result<Vec<_>, _>>()?;
    let own_dir = args.dir.is_none();
    let dir = match args.dir {
        Some(d) => d,
        None => {
            std::env::temp_dir().join(format!("kakera-bench-{}-{}", std::process::id(), now_ms()))
        }
    };
    let mut say = |line: String| eprintln!("{line}");
    if let Some(records) = args.scale_records {
        let opts = bench::scale::ScaleOptions {
            records,
            fill_bytes: size(&args.fill_bytes)?.max(1),
            probe_records: args.probe_records.max(1),
            probe_rounds: args.probe_rounds.max(1),
            probe_bytes: 1024,
            batch_bytes: size(&args.batch_bytes)?,
            concurrency: args.concurrency.max(1),
            catch_up: !args.no_catch_up,
            dir: dir.clone(),
            node_binary: node_binary_or_beside(args.node_binary),
        };
        let result = bench_runtime()?.block_on(bench::scale::run(&opts, &mut say));
        let report = finish_bench_dir(result, &dir, own_dir, args.keep)?;
        return write_bench_report(&report, &args.out, json, || bench::scale::render(&report));
    }
    let opts = bench::BenchOptions {
        sizes,
        concurrency: args.concurrency,
        bytes_per_size: size(&args.bytes_per_size)?,
        min_records: args.min_records.max(1),
        max_records: args.max_records.max(args.min_records.max(1)),
        batch_bytes: size(&args.batch_bytes)?,
        single_gets: args.single_gets,
        single_get_bytes: 1024,
        baseline: !args.no_baseline,
        repair: !args.no_repair,
        repair_timeout_s: args.repair_timeout_s,
        repair_parallel: args.repair_parallel,
        repair_rate_mb_s: args.repair_rate_mb_s,
        repair_batch_moves: args.repair_batch,
        file_share_min_bytes: size(&args.file_share_min_bytes)?,
        max_record_bytes: size(&args.max_record_bytes)?,
        dir: dir.clone(),
        node_binary: node_binary_or_beside(args.node_binary),
    };
    let result = bench_runtime()?.block_on(bench::run(&opts, &mut say));
    let report = finish_bench_dir(result, &dir, own_dir, args.keep)?;
    write_bench_report(&report, &args.out, json, || {
        let mut text = stats::render(&report.phases, &report.ratios, report.repair.as_ref());
        if let Some(rss) = report.client_peak_rss_bytes {
            text.push_str(&format!(
                "client peak RSS: {:.0} MiB (this process, whole run)\n",
                rss as f64 / (1024.0 * 1024.0)
            ));
        }
        text
    })
}

/// The benchmark's runtime: multi-threaded, since client work (sealing, splitting
/// and QUIC) uses every core, as a job would. The nodes stop when a benchmark returns
/// (its cluster drops).
pub(crate) fn bench_runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Invalid(format!("cannot start the async runtime: {e}")))
}

/// Deletes the benchmark cluster's directory unless it is kept (or was the caller's
/// and the run failed: its logs say why).
pub(crate) fn finish_bench_dir<T>(
    result: Result<T, CliError>,
    dir: &std::path::Path,
    own_dir: bool,
    keep: bool,
) -> Result<T, CliError> {
    if !keep && (own_dir || result.is_ok()) {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            eprintln!("could not delete {}: {e}", dir.display());
        }
    } else {
        eprintln!("the cluster's files stay in {}", dir.display());
    }
    result
}

/// Writes the report as JSON to `out` and prints it (as JSON or as `table`).
pub(crate) fn write_bench_report<R: serde::Serialize>(
    report: &R,
    out: &std::path::Path,
    json: bool,
    table: impl FnOnce() -> String,
) -> Result<Outcome, CliError> {
    let value = serde_json::to_value(report)
        .map_err(|e| CliError::Invalid(format!("cannot encode the report: {e}")))?;
    let text = serde_json::to_string_pretty(&value)
        .map_err(|e| CliError::Invalid(format!("cannot encode the report: {e}")))?;
    std::fs::write(out, text + "\n").map_err(|source| CliError::File {
        path: out.to_path_buf(),
        source,
    })?;
    if json {
        json_line(&value);
    } else {
        print!("{}", table());
        println!("report written to {}", out.display());
    }
    Ok(Outcome::Ok)
}
