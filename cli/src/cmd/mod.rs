//! The `kakera` commands, one module per command group, and what they share.

use std::path::PathBuf;

use kakera_cli::CliError;
use kakera_client::connection::Connection;
use kakera_client::{Client, ClientError};
use kakera_config::ClusterConfig;
use kakera_net::TlsFiles;
use kakera_proto::Date;
use kakera_proto::catalog::{Grant, RecordEntry};

pub(crate) mod audit;
pub(crate) mod backup;
pub(crate) mod bench;
pub(crate) mod ca;
pub(crate) mod config;
pub(crate) mod demo;
pub(crate) mod files;
pub(crate) mod grant;
pub(crate) mod medical;
pub(crate) mod node;
pub(crate) mod records;
pub(crate) mod status;
pub(crate) mod zone;

/// How to reach a cluster: its config and this holder's certificate.
#[derive(clap::Args, Debug)]
pub(crate) struct ClusterArgs {
    /// The cluster config file.
    #[arg(long, env = "KAKERA_CONFIG")]
    config: PathBuf,
    /// This holder's certificate (PEM), issued by the cluster CA.
    #[arg(long, env = "KAKERA_CERT")]
    cert: PathBuf,
    /// This holder's private key (PEM).
    #[arg(long, env = "KAKERA_KEY")]
    key: PathBuf,
}

impl ClusterArgs {
    fn tls(&self, config: &ClusterConfig) -> TlsFiles {
        TlsFiles {
            ca: config.ca_cert.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }

    /// Loads the config and opens a connection (inside a tokio runtime).
    fn connect(&self) -> Result<Connection, ClientError> {
        let config = ClusterConfig::load(&self.config)?;
        let tls = self.tls(&config);
        Connection::open(config, &tls)
    }

    /// Loads the config and makes a data-path client (inside a tokio runtime).
    fn client(&self) -> Result<Client, ClientError> {
        let config = ClusterConfig::load(&self.config)?;
        let tls = self.tls(&config);
        Client::connect(config, &tls)
    }
}

/// What a command found, beyond success or failure.
pub(crate) enum Outcome {
    /// All well.
    Ok,
    /// The command ran and found a problem it already reported (exit code 1).
    Problem,
}

/// Prints `value` as one JSON line in JSON mode, else the text lines `text` gives.
pub(crate) fn report(json: bool, value: serde_json::Value, text: impl FnOnce() -> Vec<String>) {
    if json {
        json_line(&value);
    } else {
        for line in text() {
            println!("{line}");
        }
    }
}

/// Parses `YYYY-MM-DD` (with `end_of_day`: 23:59:59.999 UTC, else 00:00 UTC) or an
/// RFC 3339 time, to Unix ms.
pub(crate) fn parse_time(text: &str, end_of_day: bool) -> Result<u64, CliError> {
    let bad = || {
        CliError::Invalid(format!(
            "'{text}' is not a date (YYYY-MM-DD) or an RFC 3339 time (2026-11-21T09:00:00Z)"
        ))
    };
    let t = if let Ok(d) = Date::parse(text) {
        let month = time::Month::try_from(d.month).map_err(|_| bad())?;
        let date =
            time::Date::from_calendar_date(i32::from(d.year), month, d.day).map_err(|_| bad())?;
        let day = date.midnight().assume_utc();
        if end_of_day {
            day + time::Duration::days(1) - time::Duration::milliseconds(1)
        } else {
            day
        }
    } else {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map_err(|_| bad())?
    };
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad())
}

/// Splits a comma-separated list; `any` (or nothing) means no restriction.
pub(crate) fn list_arg(text: &str) -> Vec<String> {
    if text.trim().eq_ignore_ascii_case("any") {
        return Vec::new();
    }
    text.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

pub(crate) fn json_line(value: &serde_json::Value) {
    println!("{value}");
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn entry_json(e: &RecordEntry) -> serde_json::Value {
    serde_json::json!({
        "id": e.id.to_string(),
        "subject": hex(&e.meta.subject.0),
        "kind": e.meta.kind.as_str(),
        "data_kind": e.meta.data_kind,
        "source": e.meta.source,
        "effective": e.meta.effective.to_string(),
        "sealed_bytes": e.sealed_len,
        "sealed_digest": e.sealed_digest.to_string(),
        "k": e.k,
        "holders": e.holders.iter().map(|h| serde_json::json!({
            "node": h.node, "x": h.x, "digest": h.digest.to_string()
        })).collect::<Vec<_>>(),
        "committed_at": kakera_cli::demo::format_ms(e.committed_at_ms),
    })
}

/// `ssmix2/OML-11`, or the kind alone.
pub(crate) fn kind_label(meta: &kakera_proto::RecordMeta) -> String {
    match &meta.data_kind {
        Some(d) => format!("{}/{d}", meta.kind.as_str()),
        None => meta.kind.as_str().to_string(),
    }
}

pub(crate) fn grant_json(g: &Grant, now_ms: u64) -> serde_json::Value {
    serde_json::json!({
        "job": g.job,
        "reader": g.reader,
        "kinds": g.scope.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        "sources": g.scope.sources,
        "subjects": g.scope.subjects.iter().map(|s| hex(&s.0)).collect::<Vec<_>>(),
        "expires": kakera_cli::demo::format_ms(g.expires_at_ms),
        "approval": g.approval,
        "created": kakera_cli::demo::format_ms(g.created_at_ms),
        "created_by": g.created_by,
        "active": g.active(now_ms),
        "revoked": g.revoked.as_ref().map(|r| serde_json::json!({
            "at": kakera_cli::demo::format_ms(r.at_ms), "by": r.by, "reason": r.reason
        })),
    })
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A runtime for the commands that talk to the cluster.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Invalid(format!("cannot start the async runtime: {e}")))
}

pub(crate) fn read_file(path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|source| CliError::File {
        path: path.to_path_buf(),
        source,
    })
}

/// The kakera-node binary: as given, else beside this one, else on PATH.
pub(crate) fn node_binary_or_beside(given: Option<PathBuf>) -> PathBuf {
    given
        .or_else(|| {
            let beside = std::env::current_exe().ok()?.parent()?.join("kakera-node");
            beside.exists().then_some(beside)
        })
        .unwrap_or_else(|| PathBuf::from("kakera-node"))
}

/// A progress bar on stderr for `total` items, drawn with `template` (indicatif's
/// syntax); hidden under `--json` and when stderr is not a terminal, so logs and
/// pipes get only the final summary.
pub(crate) fn progress(total: u64, json: bool, template: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    let target = if json || !std::io::stderr().is_terminal() {
        indicatif::ProgressDrawTarget::hidden()
    } else {
        indicatif::ProgressDrawTarget::stderr()
    };
    let bar = indicatif::ProgressBar::with_draw_target(Some(total), target);
    // A template that does not parse keeps indicatif's default style.
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("#>."));
    }
    bar
}

/// The progress bar of an ingest (files done of files, MB/s so far).
pub(crate) fn ingest_bar(json: bool) -> indicatif::ProgressBar {
    progress(
        0,
        json,
        "[{bar:30}] {pos}/{len} files  {per_sec}  {msg}  ETA {eta}",
    )
}

/// Moves an ingest's bar to `p`.
pub(crate) fn show_ingest(bar: &indicatif::ProgressBar, p: &kakera_medical::ingest::Progress) {
    bar.set_length(p.files_total as u64);
    bar.set_position(p.files_done as u64);
    bar.set_message(format!("{:.2} MB/s", p.mb_per_s()));
}

/// The lines every ingest prints of what it stored and skipped.
pub(crate) fn tally_lines(t: &kakera_medical::store::Tally) -> Vec<String> {
    vec![
        format!(
            "stored now:                   {} ({:.1} MB)",
            t.stored,
            t.stored_bytes as f64 / 1e6
        ),
        format!("already stored (skipped):     {}", t.already_stored),
        format!("erased before (not restored): {}", t.erased),
        format!("opted-out subjects (refused): {}", t.opted_out),
    ]
}
