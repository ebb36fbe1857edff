//! `kakera list` and `kakera erase`: records' metadata and their erasure.

use std::path::PathBuf;

use kakera_cli::CliError;
use kakera_proto::catalog::{EraseTarget, ListFilter};
use kakera_proto::{RecordId, RecordKind, SubjectTag};

use crate::cmd::*;

#[derive(clap::Args, Debug)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Only records of this subject tag (64 hex digits).
    #[arg(long, conflicts_with_all = ["kind", "source"])]
    subject: Option<String>,
    /// Only records of this kind (ssmix2, claim, checkup, long-term-care, death, fhir,
    /// image, file).
    #[arg(long, conflicts_with = "source")]
    kind: Option<String>,
    /// Only records from this source facility.
    #[arg(long)]
    source: Option<String>,
    /// At most this many records.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
}

pub(crate) fn list(args: ListArgs, json: bool) -> Result<Outcome, CliError> {
    let ListArgs {
        cluster,
        subject,
        kind,
        source,
        limit,
    } = args;
    let filter = match (subject, kind, source) {
        (Some(s), _, _) => ListFilter::Subject(SubjectTag::parse(&s)?),
        (_, Some(k), _) => ListFilter::Kind(RecordKind::parse(&k)?),
        (_, _, Some(f)) => ListFilter::Source(f),
        _ => ListFilter::All,
    };
    let entries = runtime()?.block_on(async {
        let c = cluster.client()?;
        let entries = c.list_all(filter, limit).await;
        c.close().await;
        entries
    })?;
    for e in &entries {
        if json {
            json_line(&entry_json(e));
        } else {
            println!(
                "{}  {:<14} {:<12} {}  {:>10} B  subject {}",
                e.id,
                kind_label(&e.meta),
                e.meta.source,
                e.meta.effective,
                e.sealed_len,
                &hex(&e.meta.subject.0)[..16]
            );
        }
    }
    if !json {
        println!("{} record(s)", entries.len());
    }
    Ok(Outcome::Ok)
}

#[derive(clap::Args, Debug)]
pub(crate) struct EraseArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Every record of this subject tag (64 hex digits; see `kakera subject-tag`).
    #[arg(long, conflicts_with_all = ["records", "records_from"])]
    subject: Option<String>,
    /// A record id (32 hex digits); repeatable.
    #[arg(long = "record", conflicts_with = "records_from")]
    records: Vec<String>,
    /// A file with one record id per line (as `kakera ingest` writes withdrawn ids).
    #[arg(long)]
    records_from: Option<PathBuf>,
    /// Why (kept in the tombstones and the audit log).
    #[arg(long)]
    reason: String,
}

pub(crate) fn run_erase(args: EraseArgs, json: bool) -> Result<Outcome, CliError> {
    let EraseArgs {
        cluster,
        subject,
        records,
        records_from,
        reason,
    } = args;
    erase(&cluster, subject, records, records_from, &reason, json)
}

pub(crate) fn erase(
    args: &ClusterArgs,
    subject: Option<String>,
    records: Vec<String>,
    records_from: Option<PathBuf>,
    reason: &str,
    json: bool,
) -> Result<Outcome, CliError> {
    let mut ids = records
        .iter()
        .map(|r| RecordId::parse(r))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(path) = &records_from {
        let text = std::fs::read_to_string(path).map_err(|source| CliError::File {
            path: path.clone(),
            source,
        })?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            ids.push(RecordId::parse(line).map_err(|e| {
                CliError::Invalid(format!("{} line {}: {e}", path.display(), n + 1))
            })?);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    let subject = subject.map(|tag| SubjectTag::parse(&tag)).transpose()?;
    if subject.is_none() && ids.is_empty() {
        return Err(CliError::Invalid(
            "say what to erase: --subject TAG, --record ID or --records-from FILE".into(),
        ));
    }
    let erased = runtime()?.block_on(async {
        let c = args.client()?;
        let targets: Vec<EraseTarget> = match subject {
            Some(tag) => vec![EraseTarget::Subject(tag)],
            None => ids
                .chunks(c.batch_records())
                .map(|c| EraseTarget::Records(c.to_vec()))
                .collect(),
        };
        let mut all = Vec::new();
        for t in targets {
            all.extend(c.erase(t, reason).await?);
        }
        c.close().await;
        Ok::<_, CliError>(all)
    })?;
    report(
        json,
        serde_json::json!({
            "erased": erased.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }),
        || {
            let mut lines: Vec<String> = erased.iter().map(|id| format!("{id}  erased")).collect();
            lines.push(format!(
                "{} record(s) erased now (records erased before are not listed); every node \
                 deletes its shares and compacts them off disk. Check with `kakera audit erasure`.",
                erased.len()
            ));
            lines
        },
    );
    Ok(Outcome::Ok)
}
