//! `kakera put` (files of any kind, ingest role) and `kakera get` (records to files or
//! stdout, HSZ reader under a grant).

use std::io::Write;
use std::path::PathBuf;

use kakera_cli::CliError;
use kakera_client::{ReadBatch, ReadFailure, RecordId, RecordMeta, zone};
use kakera_medical::files::{self, FileMeta, Input};
use kakera_medical::linkage::LinkageKey;
use tokio::io::AsyncWriteExt;

use crate::cmd::*;

/// `kakera put`.
#[derive(clap::Args, Debug)]
pub(crate) struct PutArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Files and directories to store (directories are walked); or give --manifest.
    paths: Vec<PathBuf>,
    /// A manifest instead of paths: JSON Lines, one object per file with "path"
    /// (relative to the manifest) and any of "kind", "source", "subject",
    /// "patient_id", "date", "data_kind"; the flags fill what a line leaves out.
    #[arg(long, conflicts_with = "paths")]
    manifest: Option<PathBuf>,
    /// The linkage key file (record ids; patient ids to subject tags).
    #[arg(long, env = "KAKERA_LINKAGE_KEY")]
    linkage_key: PathBuf,
    /// Record kind (ssmix2, claim, checkup, long-term-care, death, fhir, image, file).
    #[arg(long)]
    kind: Option<String>,
    /// Source facility code.
    #[arg(long)]
    source: Option<String>,
    /// The subject tag (64 hex), when known.
    #[arg(long, conflicts_with = "patient_id")]
    subject: Option<String>,
    /// The facility's patient id (turned into the subject tag by the linkage key).
    #[arg(long)]
    patient_id: Option<String>,
    /// The records' date (YYYY-MM-DD).
    #[arg(long)]
    date: Option<String>,
    /// Data kind (A-Z, 0-9, '-'), e.g. CT, MR, ECG.
    #[arg(long)]
    data_kind: Option<String>,
    /// Files per batch.
    #[arg(long, default_value_t = kakera_medical::ingest::DEFAULT_BATCH_FILES)]
    batch: usize,
}

/// `kakera get`.
#[derive(clap::Args, Debug)]
pub(crate) struct GetArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Records to read (ids in hex); or --all.
    records: Vec<String>,
    /// Read everything the grant covers.
    #[arg(long, conflicts_with = "records")]
    all: bool,
    /// The job the grant names.
    #[arg(long)]
    job: String,
    /// The zone private key file (inside the HSZ only).
    #[arg(long, env = "KAKERA_ZONE_KEY")]
    zone_key: PathBuf,
    /// Directory to write each record to (`<dir>/<id>`, with `<dir>/records.jsonl`
    /// describing them), or `-` for stdout (one record).
    #[arg(long)]
    out: PathBuf,
}

fn parse_meta(a: &PutArgs) -> Result<FileMeta, CliError> {
    FileMeta::parse(
        a.kind.as_deref(),
        a.source.clone(),
        a.subject.as_deref(),
        a.patient_id.clone(),
        a.date.as_deref(),
        a.data_kind.clone(),
    )
    .map_err(CliError::Invalid)
}

pub(crate) fn put(a: PutArgs, json: bool) -> Result<Outcome, CliError> {
    let input = match (&a.manifest, a.paths.is_empty()) {
        (Some(m), _) => Input::Manifest(m.clone()),
        (None, false) => Input::Paths(a.paths.clone()),
        (None, true) => {
            return Err(CliError::Invalid(
                "name the files or directories to store, or give --manifest".into(),
            ));
        }
    };
    let defaults = parse_meta(&a)?;
    let key = LinkageKey::load(&a.linkage_key)?;
    let bar = ingest_bar(json);
    let summary = runtime()?.block_on(async {
        let c = a.cluster.client()?;
        let s = files::put_files(&c, &key, &input, &defaults, a.batch, |p| {
            show_ingest(&bar, p)
        })
        .await;
        c.close().await;
        s.map_err(CliError::from)
    });
    bar.finish_and_clear();
    let summary = summary?;
    let t = &summary.tally;
    report(
        json,
        serde_json::to_value(&summary)
            .map_err(|e| CliError::Invalid(format!("encoding the summary: {e}")))?,
        || {
            let mut lines = vec![format!("files:                        {}", summary.files)];
            lines.extend(tally_lines(t));
            lines.push(format!(
                "skipped with an error:        {}",
                summary.failed.len()
            ));
            lines.extend(
                summary
                    .failed
                    .iter()
                    .map(|(f, why)| format!("  {f}: {why}")),
            );
            lines
        },
    );
    Ok(if summary.failed.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Problem
    })
}

/// Where `kakera get` writes.
enum Sink {
    Stdout,
    Dir { dir: PathBuf, index: std::fs::File },
}

impl Sink {
    /// Writes record `id` (`segments` of it) from `src`: to stdout, or to
    /// `<dir>/<id>` (mode 0600, through a temporary file renamed into place, so a
    /// re-run replaces a record's file whole and never leaves half of one) with its
    /// line in `records.jsonl`. Returns its bytes.
    async fn write(
        &mut self,
        id: RecordId,
        meta: &RecordMeta,
        segments: u32,
        mut src: impl tokio::io::AsyncRead + Unpin,
    ) -> Result<u64, CliError> {
        match self {
            Sink::Stdout => {
                let mut out = tokio::io::stdout();
                let n = tokio::io::copy(&mut src, &mut out).await.map_err(|e| {
                    CliError::Invalid(format!("reading record {id} to stdout: {e}"))
                })?;
                out.flush().await.map_err(|e| {
                    CliError::Invalid(format!("writing record {id} to stdout: {e}"))
                })?;
                Ok(n)
            }
            Sink::Dir { dir, index } => {
                let path = dir.join(id.to_string());
                let file_err = |source| CliError::File {
                    path: path.clone(),
                    source,
                };
                let tmp = path.with_extension("part");
                let mut opts = tokio::fs::OpenOptions::new();
                opts.write(true).create(true).truncate(true);
                #[cfg(unix)]
                opts.mode(0o600);
                let mut f = opts.open(&tmp).await.map_err(file_err)?;
                let n = tokio::io::copy(&mut src, &mut f).await.map_err(file_err)?;
                f.sync_all().await.map_err(file_err)?;
                tokio::fs::rename(&tmp, &path).await.map_err(file_err)?;
                let line = serde_json::json!({
                    "id": id.to_string(),
                    "kind": meta.kind.as_str(),
                    "data_kind": meta.data_kind,
                    "source": meta.source,
                    "subject": hex(&meta.subject.0),
                    "effective": meta.effective.to_string(),
                    "bytes": n,
                    "segments": segments,
                });
                writeln!(index, "{line}").map_err(|source| CliError::File {
                    path: dir.join("records.jsonl"),
                    source,
                })?;
                Ok(n)
            }
        }
    }
}

/// What `kakera get` wrote and could not read.
#[derive(Default)]
struct GetTally {
    written: usize,
    bytes: u64,
    failed: Vec<(String, String)>,
}

impl GetTally {
    /// Writes a batch's records; returns the ones stored as segments, to stream.
    async fn take(&mut self, batch: ReadBatch, sink: &mut Sink) -> Result<Vec<RecordId>, CliError> {
        for r in &batch.records {
            self.bytes += sink.write(r.id, &r.meta, 1, &r.data[..]).await?;
            self.written += 1;
        }
        let mut segmented = Vec::new();
        for f in batch.failed {
            if let ReadFailure::Segmented { .. } = f.failure {
                segmented.push(f.record);
            } else {
                self.failed
                    .push((f.record.to_string(), f.failure.to_string()));
            }
        }
        Ok(segmented)
    }

    /// Streams each of `ids` into `sink`; a record that cannot be read is counted
    /// failed, a sink that cannot be written ends the run.
    async fn stream(
        &mut self,
        c: &kakera_client::Client,
        job: &str,
        ids: Vec<RecordId>,
        sink: &mut Sink,
    ) -> Result<(), CliError> {
        for id in ids {
            let reader = match c.get_stream(job, id).await {
                Ok(r) => r,
                Err(e) => {
                    self.failed.push((id.to_string(), e.to_string()));
                    continue;
                }
            };
            let (meta, segments) = (reader.meta().clone(), reader.segments());
            match sink.write(id, &meta, segments, reader).await {
                Ok(n) => {
                    self.written += 1;
                    self.bytes += n;
                }
                // The file could not be written: stop.
                Err(e @ CliError::File { .. }) if matches!(sink, Sink::Dir { .. }) => {
                    return Err(e);
                }
                Err(e) => self.failed.push((id.to_string(), e.to_string())),
            }
        }
        Ok(())
    }
}

pub(crate) fn get(a: GetArgs, json: bool) -> Result<Outcome, CliError> {
    let ids: Vec<RecordId> = a
        .records
        .iter()
        .map(|s| kakera_proto::record::parse_hex::<16>(s, "record id").map(RecordId))
        .collect::<Result<_, _>>()?;
    if !a.all && ids.is_empty() {
        return Err(CliError::Invalid(
            "name the records to read, or give --all".into(),
        ));
    }
    let mut sink = if a.out.as_os_str() == "-" {
        if a.all || ids.len() != 1 {
            return Err(CliError::Invalid(
                "--out - writes one record to stdout; name exactly one record".into(),
            ));
        }
        if json {
            return Err(CliError::Invalid(
                "--out - writes the record's bytes to stdout, so --json cannot use it too; \
                 give a directory"
                    .into(),
            ));
        }
        Sink::Stdout
    } else {
        std::fs::create_dir_all(&a.out).map_err(|source| CliError::File {
            path: a.out.clone(),
            source,
        })?;
        let index_path = a.out.join("records.jsonl");
        let index = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&index_path)
            .map_err(|source| CliError::File {
                path: index_path,
                source,
            })?;
        Sink::Dir {
            dir: a.out.clone(),
            index,
        }
    };
    let zone_key = zone::load_private(&a.zone_key)?;
    let mut tally = GetTally::default();
    runtime()?.block_on(async {
        let c = a.cluster.client()?.with_zone_key(zone_key);
        let res = async {
            if a.all {
                // One batch in memory at a time (bounded by count and bytes); a
                // record stored as segments a segment at a time.
                let mut scope = c.read_scope(&a.job).await?;
                while let Some(batch) = scope.next().await? {
                    let segmented = tally.take(batch, &mut sink).await?;
                    tally.stream(&c, &a.job, segmented, &mut sink).await?;
                }
            } else {
                // One record per ticket: a record may be 64 MiB.
                for id in &ids {
                    let segmented = tally
                        .take(c.get_batch_each(&a.job, &[*id]).await?, &mut sink)
                        .await?;
                    tally.stream(&c, &a.job, segmented, &mut sink).await?;
                }
            }
            Ok::<_, CliError>(())
        }
        .await;
        c.close().await;
        res
    })?;
    let GetTally {
        written,
        bytes,
        failed,
    } = tally;
    if !matches!(sink, Sink::Stdout) {
        report(
            json,
            serde_json::json!({
                "written": written,
                "bytes": bytes,
                "out": a.out.display().to_string(),
                "failed": failed.iter().map(|(r, why)| serde_json::json!({"record": r, "reason": why})).collect::<Vec<_>>(),
            }),
            || {
                let mut lines = vec![format!(
                    "{written} records ({:.1} MB) written to {}",
                    bytes as f64 / 1e6,
                    a.out.display()
                )];
                lines.extend(
                    failed
                        .iter()
                        .map(|(r, why)| format!("  not read: {r}: {why}")),
                );
                lines
            },
        );
    } else {
        for (r, why) in &failed {
            eprintln!("not read: {r}: {why}");
        }
    }
    Ok(if failed.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Problem
    })
}
