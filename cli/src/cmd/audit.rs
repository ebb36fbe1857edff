//! `kakera audit`: the access trail, its chain, signed exports, share verification
//! and erasure checks (auditor or operator role).

use std::path::PathBuf;

use clap::Subcommand;
use kakera_cli::CliError;
use kakera_cli::demo;
use kakera_cli::export::{self, ExportQuery, ExportSigner};
use kakera_proto::audit::AuditQuery;
use kakera_proto::catalog::{ListFilter, MAX_LIST_PAGE};
use kakera_proto::{RecordId, Role, SubjectTag};

use crate::cmd::*;

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCmd {
    /// Verify records' shares (auditor role): light re-reads every node's digests;
    /// --deep also fetches all n shares and checks they form one sharing of the sealed
    /// digest. Exit 1 if any record has a problem. Every run is in the audit log.
    #[command(
        after_help = "Examples:\n  kakera audit verify --all\n  kakera audit verify --sample 500 --deep --rate 50\n  kakera audit verify --record 0192f3...e1 --json"
    )]
    Verify {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Records to verify (32 hex digits each).
        #[arg(long = "record", conflicts_with_all = ["all", "sample"])]
        records: Vec<String>,
        /// Every record in the catalog.
        #[arg(long, conflicts_with = "sample")]
        all: bool,
        /// A random sample of this many records.
        #[arg(long)]
        sample: Option<usize>,
        /// Fetch and check every share (not only the nodes' digests).
        #[arg(long)]
        deep: bool,
        /// Most MB/s of shares the audit makes nodes read, so it does not starve jobs.
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Print audit entries (oldest first); --verify checks the whole hash chain.
    #[command(
        after_help = "Examples:\n  kakera audit log --job study-17\n  kakera audit log --record 0192f3...e1 --json\n  kakera audit log --since 2026-11-01\n  kakera audit log --verify"
    )]
    Log {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Only entries naming this record id (32 hex digits).
        #[arg(long)]
        record: Option<String>,
        /// Only entries naming this job.
        #[arg(long)]
        job: Option<String>,
        /// Only entries at or after this date (YYYY-MM-DD) or RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// At most this many entries (default 10000 printed; an export takes all).
        #[arg(long)]
        limit: Option<usize>,
        /// Check the whole chain from the first entry to the head (exit 1 if broken).
        #[arg(long)]
        verify: bool,
        /// Write the selected entries to this new file as JSON lines signed with this
        /// auditor's key (check it with `kakera audit verify-export`).
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
    },
    /// Check a signed audit export offline: the signature, that the cluster CA issued
    /// the signer's certificate to an auditor, and every entry's hash and links.
    #[command(
        after_help = "Example:\n  kakera audit verify-export audit-2026-11.jsonl --ca ca/ca.crt.pem"
    )]
    VerifyExport {
        /// The export file.
        file: PathBuf,
        /// The cluster CA's certificate (PEM).
        #[arg(long)]
        ca: PathBuf,
    },
    /// Confirm that no node holds any share (committed or staged) of erased records:
    /// asks every node. Without --record or --subject, every tombstone is checked.
    /// Exit 1 unless every record is out of the catalog and on no node.
    #[command(
        after_help = "Examples:\n  kakera audit erasure\n  kakera audit erasure --record 0192f3...e1\n  kakera audit erasure --subject 5be1...09 --json"
    )]
    Erasure {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Records to check (32 hex digits each).
        #[arg(long = "record", conflicts_with = "subject")]
        records: Vec<String>,
        /// Every record erased with this subject's opt-out, and any still live.
        #[arg(long)]
        subject: Option<String>,
    },
}

pub(crate) fn run(cmd: AuditCmd, json: bool) -> Result<Outcome, CliError> {
    match cmd {
        AuditCmd::Log {
            cluster,
            record,
            job,
            since,
            limit,
            verify,
            export,
        } => {
            let query = AuditQuery {
                record: record.as_deref().map(RecordId::parse).transpose()?,
                job,
                since_ms: since.as_deref().map(|s| parse_time(s, false)).transpose()?,
                after_seq: 0,
                limit: 0,
            };
            if let Some(file) = export {
                if verify || json {
                    return Err(CliError::Invalid(
                        "--export writes a file; run --verify or --json separately".into(),
                    ));
                }
                return audit_export(&cluster, query, limit.unwrap_or(usize::MAX), &file);
            }
            audit_log(&cluster, query, limit.unwrap_or(10_000), json, verify)
        }
        AuditCmd::VerifyExport { file, ca } => verify_export(&file, &ca, json),
        AuditCmd::Erasure {
            cluster,
            records,
            subject,
        } => {
            let records = records
                .iter()
                .map(|r| RecordId::parse(r))
                .collect::<Result<Vec<_>, _>>()?;
            let subject = subject.as_deref().map(SubjectTag::parse).transpose()?;
            audit_erasure(&cluster, records, subject, json)
        }
        AuditCmd::Verify {
            cluster,
            records,
            all,
            sample,
            deep,
            rate,
        } => {
            let records = records
                .iter()
                .map(|r| RecordId::parse(r))
                .collect::<Result<Vec<_>, _>>()?;
            if records.is_empty() && !all && sample.is_none() {
                return Err(CliError::Invalid(
                    "say which records: --record ID (repeatable), --all or --sample N".into(),
                ));
            }
            if rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
                return Err(CliError::Invalid("--rate must be a positive MB/s".into()));
            }
            audit_verify(&cluster, records, sample, deep, rate, json)
        }
    }
}

pub(crate) fn audit_log(
    args: &ClusterArgs,
    query: AuditQuery,
    limit: usize,
    json: bool,
    verify: bool,
) -> Result<Outcome, CliError> {
    let (entries, verdict) = runtime()?.block_on(async {
        let c = args.client()?;
        let verdict = if verify {
            Some(c.verify_audit_log().await?)
        } else {
            None
        };
        let (entries, _) = c.audit_log(query, limit).await?;
        c.close().await;
        Ok::<_, CliError>((entries, verdict))
    })?;
    if !verify || json {
        for e in &entries {
            if json {
                json_line(&export::entry_json(e));
            } else {
                println!("{}", demo::describe(e));
            }
        }
    }
    // With --json the verdict is the last line, an object of its own.
    match verdict {
        Some(Ok(n)) => {
            if json {
                json_line(
                    &serde_json::json!({ "verdict": { "chain_intact": true, "entries": n } }),
                );
            }
            eprintln!("audit chain verified: {n} entries, every link intact up to the head");
            Ok(Outcome::Ok)
        }
        Some(Err(b)) => {
            if json {
                json_line(&serde_json::json!({
                    "verdict": { "chain_intact": false, "broken": b.to_string() }
                }));
            }
            eprintln!("audit chain BROKEN: {b}");
            Ok(Outcome::Problem)
        }
        None => Ok(Outcome::Ok),
    }
}

pub(crate) fn audit_export(
    args: &ClusterArgs,
    query: AuditQuery,
    limit: usize,
    file: &std::path::Path,
) -> Result<Outcome, CliError> {
    let signer = ExportSigner::load(&args.cert, &args.key)?;
    if signer.identity().role != Role::Auditor {
        return Err(CliError::Invalid(format!(
            "{} is a {} certificate; only an auditor's certificate signs exports",
            args.cert.display(),
            signer.identity().role
        )));
    }
    if file.exists() {
        return Err(CliError::Exists {
            path: file.to_path_buf(),
        });
    }
    let export_query = ExportQuery {
        record: query.record.map(|r| r.to_string()),
        job: query.job.clone(),
        since_ms: query.since_ms,
    };
    let (cluster_id, mut entries, head) = runtime()?.block_on(async {
        let c = args.client()?;
        let (entries, head) = c.audit_log(query, limit).await?;
        let id = c.config().cluster_id.clone();
        c.close().await;
        Ok::<_, CliError>((id, entries, head))
    })?;
    // Entries appended while the pages were read lie beyond the head the file names.
    let head_seq = head.map_or(0, |(s, _)| s);
    entries.retain(|e| e.seq <= head_seq);
    let bytes = export::write_export(&signer, &cluster_id, now_ms(), export_query, head, &entries)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| CliError::Invalid("the export is not UTF-8".into()))?;
    kakera_client::files::write_new(file, &text, 0o640)?;
    let range = match (entries.first(), entries.last()) {
        (Some(a), Some(b)) => format!("entries {}..{}", a.seq, b.seq),
        _ => "no entries".to_string(),
    };
    println!(
        "exported {} audit entries ({range}; log head {head_seq}) to {}, signed by {}",
        entries.len(),
        file.display(),
        signer.identity()
    );
    println!(
        "check it anywhere with: kakera audit verify-export {} --ca <cluster CA certificate>",
        file.display()
    );
    Ok(Outcome::Ok)
}

pub(crate) fn verify_export(
    file: &std::path::Path,
    ca: &std::path::Path,
    json: bool,
) -> Result<Outcome, CliError> {
    let bytes = read_file(file)?;
    let ca_pem = String::from_utf8(read_file(ca)?)
        .map_err(|_| CliError::Invalid(format!("{} is not a PEM file", ca.display())))?;
    match export::verify_export(&bytes, &ca_pem) {
        Ok(s) => {
            let range = s.seq_range.map_or("no entries".to_string(), |(a, b)| {
                format!("entries {a}..{b}")
            });
            report(
                json,
                serde_json::json!({
                    "verified": true,
                    "entries": s.header.entries,
                    "seq_range": s.seq_range,
                    "cluster_id": s.header.cluster_id,
                    "signed_by": s.exporter.to_string(),
                    "exported_at": demo::format_ms(s.header.exported_at_ms),
                    "complete": s.header.complete,
                    "head_seq": s.header.head_seq,
                    "runs": s.runs,
                }),
                || {
                    let mut lines = vec![format!(
                        "export verified: {} entries ({range}) of cluster '{}', signed by {} at {}",
                        s.header.entries,
                        s.header.cluster_id,
                        s.exporter,
                        demo::format_ms(s.header.exported_at_ms)
                    )];
                    lines.push(if s.header.complete {
                        format!(
                            "complete log: every link intact from entry 1 to the head ({})",
                            s.header.head_seq
                        )
                    } else {
                        format!(
                            "selection of the log (head was {}): links checked within {} run(s) \
                             of consecutive entries",
                            s.header.head_seq, s.runs
                        )
                    });
                    lines
                },
            );
            Ok(Outcome::Ok)
        }
        Err(flaw) => {
            report(
                json,
                serde_json::json!({ "verified": false, "flaw": flaw.to_string() }),
                || vec![format!("export NOT verified: {flaw}")],
            );
            Ok(Outcome::Problem)
        }
    }
}

pub(crate) fn audit_erasure(
    args: &ClusterArgs,
    mut records: Vec<RecordId>,
    subject: Option<SubjectTag>,
    json: bool,
) -> Result<Outcome, CliError> {
    let (checked, confirmed) = runtime()?.block_on(async {
        let c = args.client()?;
        let mut tally = (0usize, 0usize);
        if !records.is_empty() {
            // A record stored as segments was erased with its parts in one entry:
            // check every record that entry erased, not only the ids given.
            let given = records.len();
            for id in records.clone() {
                match c.erased_with(id).await {
                    Ok(with) => records.extend(with),
                    Err(kakera_client::ClientError::Net(kakera_net::NetError::Refused {
                        kind: kakera_proto::ErrorKind::Forbidden,
                        ..
                    })) => {
                        if !json {
                            println!(
                                "only an auditor reads the audit log: checking the ids given \
                                 alone (an auditor's check adds the segments erased with them)"
                            );
                        }
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            records.sort_unstable();
            records.dedup();
            if !json && records.len() > given {
                println!(
                    "{} record(s) erased in the same entries as the {given} given (the \
                     segments of a large record, or records erased together); checking each",
                    records.len() - given
                );
            }
            check_erased(&c, &records, json, &mut tally).await?;
        } else {
            if !json {
                println!(
                    "asking every node about each erased record{}, a page at a time",
                    subject.map_or(String::new(), |t| format!(
                        " of subject {}",
                        &hex(&t.0)[..16]
                    ))
                );
            }
            let mut after = None;
            // Bounded by the number of tombstones: each page advances `after`.
            loop {
                let (page, next) = c.tombstones_page(subject, after).await?;
                let ids: Vec<RecordId> = page.iter().map(|t| t.id).collect();
                check_erased(&c, &ids, json, &mut tally).await?;
                match next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
        }
        if let Some(tag) = subject {
            // Records of the subject still live (its erasure not finished, or never
            // asked for) are reported as not erased.
            let mut after = None;
            // Bounded by the subject's records: each page advances `after`.
            loop {
                let page = c
                    .list(
                        ListFilter::Subject(tag),
                        after,
                        kakera_proto::catalog::MAX_LIST_PAGE,
                    )
                    .await?;
                let ids: Vec<RecordId> = page.entries.iter().map(|e| e.id).collect();
                check_erased(&c, &ids, json, &mut tally).await?;
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
        }
        c.close().await;
        Ok::<_, CliError>(tally)
    })?;
    if !json {
        println!("{confirmed} of {checked} record(s) confirmed erased on every node");
    }
    Ok(if confirmed == checked {
        Outcome::Ok
    } else {
        Outcome::Problem
    })
}

/// Asks every node about `ids` (in requests of the cluster's batch size), prints
/// each record's verdict as it comes and adds to `tally` (checked, confirmed).
async fn check_erased(
    c: &kakera_client::Client,
    ids: &[RecordId],
    json: bool,
    tally: &mut (usize, usize),
) -> Result<(), CliError> {
    for chunk in ids.chunks(c.batch_records()) {
        for r in c.check_erasure(chunk).await? {
            tally.0 += 1;
            if r.confirmed() {
                tally.1 += 1;
            }
            print_erasure_report(&r, json);
        }
    }
    Ok(())
}

/// One record's erasure verdict, as a JSON line or as sentences.
fn print_erasure_report(r: &kakera_client::verify::ErasureReport, json: bool) {
    if json {
        json_line(&serde_json::json!({
            "record": r.record.to_string(),
            "confirmed": r.confirmed(),
            "in_catalog": r.in_catalog,
            "remnants": r.remnants,
            "unreachable": r.unreachable.iter().map(|(n, rack, why)| serde_json::json!({"node": n, "rack": rack, "reason": why})).collect::<Vec<_>>(),
            "nodes_checked": r.nodes_checked,
        }));
        return;
    }
    if r.confirmed() {
        println!(
            "{}  gone: not in the catalog, and none of {} nodes holds any share of it",
            r.record, r.nodes_checked
        );
        return;
    }
    println!("{}  NOT confirmed erased:", r.record);
    if r.in_catalog {
        println!("    the record is live in the catalog (it was never erased)");
    }
    for m in &r.remnants {
        let what = match (m.committed, m.staged) {
            (true, true) => "a committed and a staged share",
            (true, false) => "a committed share",
            _ => "a staged share",
        };
        println!("    node {} ({}) still holds {what}", m.node, m.rack);
    }
    for (node, rack, why) in &r.unreachable {
        println!("    node {node} ({rack}) could not be checked: {why}");
    }
}

/// Records per verification round (one audit ticket each).
pub(crate) const VERIFY_CHUNK_RECORDS: usize = 512;

pub(crate) fn audit_verify(
    args: &ClusterArgs,
    records: Vec<RecordId>,
    sample: Option<usize>,
    deep: bool,
    rate_mb_s: Option<f64>,
    json: bool,
) -> Result<Outcome, CliError> {
    let run = runtime()?.block_on(async {
        let c = args.client()?;
        let mut run = VerifyRun::new(json, deep, rate_mb_s);
        if !records.is_empty() || sample.is_some() {
            let ids = match sample {
                Some(n) if records.is_empty() => sample_of_catalog(&c, n).await?,
                _ => records,
            };
            run.bar.set_length(ids.len() as u64);
            for chunk in ids.chunks(VERIFY_CHUNK_RECORDS) {
                run.verify(&c, chunk).await?;
            }
        } else {
            // --all: one page of the catalog at a time, never the whole listing.
            let mut after = None;
            // Bounded by the catalog: every page moves `after` forward.
            loop {
                let page = c.list(ListFilter::All, after, MAX_LIST_PAGE).await?;
                let ids: Vec<RecordId> = page.entries.iter().map(|e| e.id).collect();
                run.bar.inc_length(ids.len() as u64);
                for chunk in ids.chunks(VERIFY_CHUNK_RECORDS) {
                    run.verify(&c, chunk).await?;
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        run.bar.finish_and_clear();
        c.close().await;
        Ok::<_, CliError>(run)
    })?;
    if json {
        json_line(
            &serde_json::json!({ "summary": run.totals, "records": run.records, "deep": deep }),
        );
    } else {
        let parts: Vec<String> = run.totals.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "{} records verified ({}): {}",
            run.records,
            if deep { "deep" } else { "light" },
            parts.join(", ")
        );
    }
    Ok(if run.all_ok {
        Outcome::Ok
    } else {
        Outcome::Problem
    })
}

/// A verification in progress: what it has printed and counted so far. Reports are
/// printed as each chunk returns and then dropped, so memory holds one chunk.
struct VerifyRun {
    json: bool,
    deep: bool,
    rate_mb_s: Option<f64>,
    started: std::time::Instant,
    bar: indicatif::ProgressBar,
    bytes_read: u64,
    records: usize,
    all_ok: bool,
    totals: std::collections::BTreeMap<&'static str, usize>,
}

impl VerifyRun {
    fn new(json: bool, deep: bool, rate_mb_s: Option<f64>) -> VerifyRun {
        VerifyRun {
            json,
            deep,
            rate_mb_s,
            started: std::time::Instant::now(),
            bar: progress(
                0,
                json,
                "verified [{bar:30}] {pos}/{len} records, {msg}, ETA {eta}",
            ),
            bytes_read: 0,
            records: 0,
            all_ok: true,
            totals: std::collections::BTreeMap::new(),
        }
    }

    /// Verifies one chunk under one audit ticket, prints its reports, counts them and
    /// keeps to the rate limit.
    async fn verify(
        &mut self,
        c: &kakera_client::Client,
        chunk: &[RecordId],
    ) -> Result<(), CliError> {
        let got = c.verify(chunk, self.deep).await?;
        // What the nodes read for this round: every share of every record.
        self.bytes_read += got.iter().map(|r| r.bytes_read).sum::<u64>();
        self.records += got.len();
        for (label, count) in kakera_client::verify::summary(&got) {
            *self.totals.entry(label).or_default() += count;
        }
        for r in &got {
            self.all_ok &= r.ok();
            if self.json {
                let line = serde_json::json!({
                    "record": r.record.to_string(),
                    "labels": r.labels(),
                    "good_shares": r.good_shares,
                    "n": r.n,
                    "findings": r.findings,
                });
                self.bar.suspend(|| json_line(&line));
            } else if !r.ok() {
                let details: Vec<String> = r.findings.iter().map(describe_finding).collect();
                self.bar.suspend(|| {
                    println!(
                        "{}  {}: {}",
                        r.record,
                        r.labels().join(", "),
                        details.join("; ")
                    );
                });
            }
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        if let Some(rate) = self.rate_mb_s {
            let due = self.bytes_read as f64 / (rate * 1e6);
            if due > elapsed {
                tokio::time::sleep(std::time::Duration::from_secs_f64(due - elapsed)).await;
            }
        }
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
        self.bar.set_position(self.records as u64);
        self.bar.set_message(format!(
            "{:.1} MB at {:.1} MB/s",
            self.bytes_read as f64 / 1e6,
            self.bytes_read as f64 / 1e6 / elapsed
        ));
        Ok(())
    }
}

pub(crate) fn describe_finding(f: &kakera_client::verify::Finding) -> String {
    use kakera_client::verify::Finding;
    match f {
        Finding::Missing { node, rack } => format!("node {node} ({rack}) has no share"),
        Finding::Corrupt { node, rack } => {
            format!("node {node} ({rack}) holds a share that does not match the catalog digest")
        }
        Finding::Unreachable { node, rack, reason } => {
            format!("node {node} ({rack}) did not answer: {reason}")
        }
        Finding::Unexpected { node, rack } => {
            format!("node {node} ({rack}) holds a share the catalog does not give it")
        }
        Finding::Misplaced { rack, nodes, max } => format!(
            "rack {rack} holds {} shares (nodes {nodes:?}), more than {max}",
            nodes.len()
        ),
        Finding::Inconsistent { detail } => detail.clone(),
    }
}

/// `n` record ids drawn at random without replacement from the whole catalog,
/// walked a page at a time (reservoir sampling): memory holds `n` ids and one page.
pub(crate) async fn sample_of_catalog(
    c: &kakera_client::Client,
    n: usize,
) -> Result<Vec<RecordId>, CliError> {
    let mut draws = Draws::default();
    let mut chosen: Vec<RecordId> = Vec::with_capacity(n.min(1 << 20));
    let mut seen: u64 = 0;
    let mut after = None;
    // Bounded by the catalog: every page moves `after` forward.
    loop {
        let page = c.list(ListFilter::All, after, MAX_LIST_PAGE).await?;
        for e in &page.entries {
            if chosen.len() < n {
                chosen.push(e.id);
            } else {
                // Keep the (seen + 1)-th id with probability n / (seen + 1).
                let j = draws.below(seen + 1)?;
                if let Some(slot) = usize::try_from(j).ok().and_then(|j| chosen.get_mut(j)) {
                    *slot = e.id;
                }
            }
            seen += 1;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(chosen)
}

/// Uniform draws below a bound from the OS random source, 512 at a time.
struct Draws {
    buf: [u8; 4096],
    at: usize,
}

impl Default for Draws {
    fn default() -> Draws {
        Draws {
            buf: [0; 4096],
            at: 4096,
        }
    }
}

impl Draws {
    fn below(&mut self, bound: u64) -> Result<u64, CliError> {
        if self.at + 8 > self.buf.len() {
            getrandom::fill(&mut self.buf)
                .map_err(|e| CliError::Invalid(format!("the OS random source failed: {e}")))?;
            self.at = 0;
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.buf[self.at..self.at + 8]);
        self.at += 8;
        Ok(u64::from_le_bytes(word) % bound.max(1))
    }
}
