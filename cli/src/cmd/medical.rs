//! The medical commands: `kakera ingest ssmix2`, `demo-data`, `linkage`,
//! `subject-tag` and `job anonymize` (kakera-medical does the work).

use std::path::PathBuf;

use clap::Subcommand;
use kakera_cli::CliError;
use kakera_client::zone;
use kakera_medical::ingest;
use kakera_medical::linkage::LinkageKey;
use kakera_proto::catalog::{ListFilter, RecordEntry};
use kakera_proto::{RecordId, RecordKind};

use crate::cmd::*;

#[derive(Subcommand, Debug)]
pub(crate) enum IngestCmd {
    /// Walk <root>/<pid[0:3]>/<pid[3:6]>/<pid>/<date>/<kind>/<file> and store each
    /// current file. Condition flag 0 files are not stored; ones stored earlier are
    /// listed as withdrawn for an operator to erase. Malformed paths are reported and
    /// skipped.
    #[command(
        after_help = "Example:\n  kakera ingest ssmix2 /mnt/ssmix2 --source 1310000001 --linkage-key linkage.key --withdrawn-out withdrawn.txt"
    )]
    Ssmix2 {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The standard storage root.
        root: PathBuf,
        /// The facility code (10-digit medical institution code).
        #[arg(long)]
        source: String,
        /// The linkage key file.
        #[arg(long, env = "KAKERA_LINKAGE_KEY")]
        linkage_key: PathBuf,
        /// Files per batch.
        #[arg(long, default_value_t = kakera_medical::ingest::DEFAULT_BATCH_FILES)]
        batch: usize,
        /// Write the ids of withdrawn records (stored earlier, now flag 0) to this file.
        #[arg(long)]
        withdrawn_out: Option<PathBuf>,
    },
    /// Store FHIR R4 resources: NDJSON bulk-export files (one resource per line) and
    /// Bundles or single resources in .json files, from files or directories. Each
    /// resource is a record of kind fhir (data kind: its resource type); its subject
    /// comes from the Patient's identifier through the linkage key, so a person links
    /// with their SS-MIX2 records. Malformed resources are named (file and line) and
    /// skipped (exit 1); re-runs store nothing twice.
    #[command(
        after_help = "Example:\n  kakera ingest fhir export/ --source 1310000001 --linkage-key linkage.key"
    )]
    Fhir {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Files (.ndjson, .json) and directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The facility code (10-digit medical institution code).
        #[arg(long)]
        source: String,
        /// The linkage key file.
        #[arg(long, env = "KAKERA_LINKAGE_KEY")]
        linkage_key: PathBuf,
        /// Resources per batch.
        #[arg(long, default_value_t = kakera_medical::ingest::DEFAULT_BATCH_FILES)]
        batch: usize,
    },
}

pub(crate) fn ingest(cmd: IngestCmd, json: bool) -> Result<Outcome, CliError> {
    match cmd {
        IngestCmd::Ssmix2 {
            cluster,
            root,
            source,
            linkage_key,
            batch,
            withdrawn_out,
        } => ingest_ssmix2(
            &cluster,
            &root,
            &source,
            &linkage_key,
            batch,
            withdrawn_out.as_deref(),
            json,
        ),
        IngestCmd::Fhir {
            cluster,
            paths,
            source,
            linkage_key,
            batch,
        } => ingest_fhir(&cluster, &paths, &source, &linkage_key, batch, json),
    }
}

pub(crate) fn ingest_fhir(
    args: &ClusterArgs,
    paths: &[PathBuf],
    source: &str,
    linkage_key: &std::path::Path,
    batch: usize,
    json: bool,
) -> Result<Outcome, CliError> {
    let key = LinkageKey::load(linkage_key)?;
    let bar = ingest_bar(json);
    let summary = runtime()?.block_on(async {
        let c = args.client()?;
        let s = kakera_medical::fhir::ingest_fhir(&c, &key, paths, source, batch, |p| {
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
            let mut lines = vec![
                format!("files read:                   {}", summary.files),
                format!("resources:                    {}", summary.resources),
            ];
            lines.extend(tally_lines(t));
            lines.push(format!(
                "no patient (not stored):      {}",
                summary.no_patient
            ));
            lines.push(format!(
                "malformed (skipped):          {}",
                summary.malformed.len()
            ));
            lines.extend(
                summary
                    .malformed
                    .iter()
                    .take(20)
                    .map(|(at, why)| format!("    {at}: {why}")),
            );
            lines
        },
    );
    Ok(if summary.malformed.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Problem
    })
}

pub(crate) fn ingest_ssmix2(
    args: &ClusterArgs,
    root: &std::path::Path,
    source: &str,
    linkage_key: &std::path::Path,
    batch: usize,
    withdrawn_out: Option<&std::path::Path>,
    json: bool,
) -> Result<Outcome, CliError> {
    let key = LinkageKey::load(linkage_key)?;
    let bar = ingest_bar(json);
    let summary = runtime()?.block_on(async {
        let c = args.client()?;
        let s =
            ingest::ingest_ssmix2(&c, &key, root, source, batch, |p| show_ingest(&bar, p)).await;
        c.close().await;
        s
    });
    bar.finish_and_clear();
    let summary = summary?;
    if let Some(path) = withdrawn_out {
        let text: String = summary
            .withdrawn
            .iter()
            .map(|id| format!("{id}\n"))
            .collect();
        kakera_client::files::write_new(path, &text, 0o644)?;
    }
    if json {
        println!(
            "{}",
            serde_json::to_string(&summary)
                .map_err(|e| CliError::Invalid(format!("encoding the summary: {e}")))?
        );
    } else {
        println!("files in the tree:            {}", summary.files);
        println!(
            "stored now:                   {} ({:.1} MB)",
            summary.tally.stored,
            summary.tally.stored_bytes as f64 / 1e6
        );
        println!(
            "already stored (skipped):     {}",
            summary.tally.already_stored
        );
        println!(
            "deleted at the source:        {} (condition flag 0, never stored)",
            summary.deleted_at_source
        );
        println!(
            "withdrawn since stored:       {}{}",
            summary.withdrawn.len(),
            if summary.withdrawn.is_empty() {
                String::new()
            } else {
                format!(
                    " (flag 0 now; an operator erases them: kakera erase --records-from {} \
                     --reason \"withdrawn at source\")",
                    withdrawn_out.map_or("<file>".into(), |p| p.display().to_string())
                )
            }
        );
        println!("erased before (not restored): {}", summary.tally.erased);
        println!("opted-out subjects (refused): {}", summary.tally.opted_out);
        println!("malformed paths (skipped):    {}", summary.malformed.len());
        for (p, why) in summary.malformed.iter().take(20) {
            println!("    {}: {why}", p.display());
        }
        println!("unreadable (skipped):         {}", summary.unreadable.len());
        for (p, why) in summary.unreadable.iter().take(20) {
            println!("    {}: {why}", p.display());
        }
    }
    Ok(Outcome::Ok)
}

#[derive(Subcommand, Debug)]
pub(crate) enum DemoDataCmd {
    /// A synthetic SS-MIX2 standard storage tree: ADT-00, ADT-22, PPR-01, OMP-01,
    /// OML-11, OMG-13 files, HL7 v2.5 in ISO-2022-JP, with updates and deletions.
    #[command(after_help = "Example:\n  kakera demo-data ssmix2 --patients 200 --out ssmix2-demo")]
    Ssmix2 {
        /// How many patients.
        #[arg(long)]
        patients: usize,
        /// Where to write the tree (files are never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// The facility code in MSH-4.
        #[arg(long, default_value = "1310000001")]
        facility: String,
        /// Seed (the same seed writes the same tree).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// A synthetic FHIR R4 bulk export (Patient, Observation, Condition, Encounter
    /// NDJSON and one Bundle), JP Core patient ids and JLAC10 lab codes; with
    /// --ssmix2, the patients of that tree, so both sources describe the same people.
    #[command(
        after_help = "Example:\n  kakera demo-data fhir --patients 200 --out fhir-demo --ssmix2 ssmix2-demo"
    )]
    Fhir {
        /// How many patients.
        #[arg(long)]
        patients: usize,
        /// Where to write the export.
        #[arg(long)]
        out: PathBuf,
        /// The facility code (the patients' identifier system).
        #[arg(long, default_value = "1310000001")]
        facility: String,
        /// Seed (the same seed writes the same export).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Take the patients (ids, birth dates, sex, prefecture) from this SS-MIX2 tree.
        #[arg(long)]
        ssmix2: Option<PathBuf>,
    },
}

pub(crate) fn demo_data(cmd: DemoDataCmd, json: bool) -> Result<Outcome, CliError> {
    match cmd {
        DemoDataCmd::Ssmix2 {
            patients,
            out,
            facility,
            seed,
        } => {
            if patients == 0 || patients > 1_000_000 {
                return Err(CliError::Invalid("--patients must be 1 to 1000000".into()));
            }
            let g = kakera_medical::ssmix2_gen::generate(&out, patients, &facility, seed)?;
            report_ssmix2(json, &g, &out);
        }
        DemoDataCmd::Fhir {
            patients,
            out,
            facility,
            seed,
            ssmix2,
        } => {
            if patients == 0 || patients > 1_000_000 {
                return Err(CliError::Invalid("--patients must be 1 to 1000000".into()));
            }
            let g = kakera_medical::fhir_gen::generate(
                &out,
                patients,
                &facility,
                seed,
                ssmix2.as_deref(),
            )?;
            report(
                json,
                serde_json::json!({
                    "patients": g.patients, "resources": g.resources,
                    "observations": g.observations, "files": g.files, "out": out,
                }),
                || {
                    vec![format!(
                        "wrote {} FHIR R4 resources ({} observations) in {} files for {} \
                         synthetic patients under {}",
                        g.resources,
                        g.observations,
                        g.files,
                        g.patients,
                        out.display()
                    )]
                },
            );
        }
    }
    Ok(Outcome::Ok)
}

fn report_ssmix2(json: bool, g: &kakera_medical::ssmix2_gen::Generated, out: &std::path::Path) {
    report(
        json,
        serde_json::json!({
            "files": g.files, "current": g.current, "flag_0": g.deleted,
            "bytes": g.bytes, "patients": g.patients, "out": out,
        }),
        || {
            vec![format!(
                "wrote {} files ({} current, {} with condition flag 0), {:.1} MB, for {} \
                 synthetic patients under {}",
                g.files,
                g.current,
                g.deleted,
                g.bytes as f64 / 1e6,
                g.patients,
                out.display()
            )]
        },
    );
}

#[derive(Subcommand, Debug)]
pub(crate) enum LinkageCmd {
    /// Generate a linkage key file (mode 0600; never overwritten).
    #[command(after_help = "Example:\n  kakera linkage keygen --out linkage.key")]
    Keygen {
        /// The new key file.
        #[arg(long)]
        out: PathBuf,
    },
}

pub(crate) fn linkage(cmd: LinkageCmd, json: bool) -> Result<Outcome, CliError> {
    match cmd {
        LinkageCmd::Keygen { out } => {
            LinkageKey::generate()?.write(&out)?;
            report(json, serde_json::json!({ "linkage_key": out }), || {
                vec![format!(
                    "wrote linkage key {} (mode 0600): give it to the ingest gateway and the \
                     opt-out desk only, never to a node",
                    out.display()
                )]
            });
        }
    }
    Ok(Outcome::Ok)
}

#[derive(clap::Args, Debug)]
pub(crate) struct SubjectTagArgs {
    /// The facility code.
    #[arg(long)]
    facility: String,
    /// The patient id at that facility.
    #[arg(long)]
    patient: String,
    /// The linkage key file.
    #[arg(long, env = "KAKERA_LINKAGE_KEY")]
    linkage_key: PathBuf,
}

pub(crate) fn subject_tag(args: SubjectTagArgs, json: bool) -> Result<Outcome, CliError> {
    let SubjectTagArgs {
        facility,
        patient,
        linkage_key,
    } = args;
    let key = LinkageKey::load(&linkage_key)?;
    let tag = key.subject_tag(&facility, &patient).to_string();
    report(json, serde_json::json!({ "subject": tag }), || {
        vec![tag.clone()]
    });
    Ok(Outcome::Ok)
}

#[derive(Subcommand, Debug)]
pub(crate) enum JobCmd {
    /// Read every SS-MIX2 record of the given data kinds under a grant, replace
    /// identifiers by research ids, generalize birth date to year and address to
    /// prefecture, drop names, write CSV, and check k-anonymity over (birth year,
    /// sex, prefecture). Exit 1 if a group breaks it (unless --suppress drops it).
    #[command(
        after_help = "Example:\n  kakera job anonymize --job study-17 --kinds ADT-00,OML-11 --k 5 --out study-17.csv --zone-key hsz/zone.key"
    )]
    Anonymize {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The job (its grant names this reader).
        #[arg(long)]
        job: String,
        /// SS-MIX2 data kinds, comma-separated (ADT-00,OML-11), or `any`.
        #[arg(long)]
        kinds: String,
        /// Only records from this facility.
        #[arg(long)]
        source: Option<String>,
        /// The zone private key file (inside the HSZ).
        #[arg(long, env = "KAKERA_ZONE_KEY")]
        zone_key: PathBuf,
        /// The CSV file to write (never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// Every (birth year, sex, prefecture) group must hold at least k people.
        #[arg(long, default_value_t = 5)]
        k: usize,
        /// Drop the rows of groups smaller than k instead of failing.
        #[arg(long)]
        suppress: bool,
        /// Generalize birth years to bands of this many years (1: the year).
        #[arg(long, default_value_t = 1)]
        birth_band: u16,
        /// A linkage-format key file for stable research ids across runs (default: a
        /// fresh random key per run).
        #[arg(long)]
        research_key: Option<PathBuf>,
    },
}

pub(crate) fn job(cmd: JobCmd, json: bool) -> Result<Outcome, CliError> {
    match cmd {
        JobCmd::Anonymize {
            cluster,
            job,
            kinds,
            source,
            zone_key,
            out,
            k,
            suppress,
            birth_band,
            research_key,
        } => {
            let job_args = AnonymizeArgs {
                birth_band,
                job,
                kinds: list_arg(&kinds),
                source,
                zone_key,
                out,
                k,
                suppress,
                research_key,
            };
            job_anonymize(&cluster, &job_args, json)
        }
    }
}

pub(crate) struct AnonymizeArgs {
    birth_band: u16,
    job: String,
    kinds: Vec<String>,
    source: Option<String>,
    zone_key: PathBuf,
    out: PathBuf,
    k: usize,
    suppress: bool,
    research_key: Option<PathBuf>,
}

/// Records read per read ticket in the anonymization job.
pub(crate) const JOB_READ_BATCH: usize = 256;

pub(crate) fn job_anonymize(
    args: &ClusterArgs,
    a: &AnonymizeArgs,
    json: bool,
) -> Result<Outcome, CliError> {
    use kakera_medical::anonymize::{self, ResearchKey};
    if a.k == 0 {
        return Err(CliError::Invalid("--k must be at least 1".into()));
    }
    if a.birth_band == 0 || a.birth_band > 100 {
        return Err(CliError::Invalid(
            "--birth-band must be 1 to 100 years".into(),
        ));
    }
    let key = match &a.research_key {
        Some(path) => {
            // A linkage-format file; its bytes key the research ids only.
            let lk = LinkageKey::load(path)?;
            ResearchKey::from_bytes(lk.subject_tag("kakera research id", "v1").0)
        }
        None => ResearchKey::random()?,
    };
    let zone_key = zone::load_private(&a.zone_key)?;
    let (records, failed) = runtime()?.block_on(async {
        let c = args.client()?.with_zone_key(zone_key);
        // SS-MIX2 results and FHIR Observations (with their subjects' FHIR Patients
        // for the join), within what this job's grant covers.
        let grant = c
            .grants()
            .await?
            .into_iter()
            .find(|g| g.job == a.job)
            .ok_or_else(|| {
                CliError::Invalid(format!(
                    "no grant for job '{}' names this reader: ask for one (kakera grant list \
                     shows a reader its own)",
                    a.job
                ))
            })?;
        let filters = match &a.source {
            Some(f) => vec![ListFilter::Source(f.clone())],
            None => vec![
                ListFilter::Kind(RecordKind::Ssmix2),
                ListFilter::Kind(RecordKind::Fhir),
            ],
        };
        let wanted = |e: &RecordEntry| {
            let dk = e.meta.data_kind.as_deref().unwrap_or("");
            let listed = a.kinds.is_empty() || a.kinds.iter().any(|k| k == dk);
            grant.scope.covers(&e.meta)
                && match e.meta.kind {
                    RecordKind::Ssmix2 => listed,
                    RecordKind::Fhir => dk == "PATIENT" || (dk == "OBSERVATION" && listed),
                    _ => false,
                }
        };
        let mut entries: Vec<RecordEntry> = Vec::new();
        for filter in filters {
            entries.extend(
                c.list_all(filter, usize::MAX)
                    .await?
                    .into_iter()
                    .filter(|e| wanted(e)),
            );
        }
        let metas: std::collections::BTreeMap<RecordId, kakera_proto::RecordMeta> =
            entries.iter().map(|e| (e.id, e.meta.clone())).collect();
        let ids: Vec<RecordId> = entries.iter().map(|e| e.id).collect();
        let mut records = Vec::with_capacity(ids.len());
        let mut failed = Vec::new();
        for chunk in ids.chunks(JOB_READ_BATCH) {
            // Records erased since the listing are reported, not fatal.
            let batch = c.get_batch_each(&a.job, chunk).await?;
            for r in batch.records {
                if let Some(m) = metas.get(&r.id) {
                    records.push((r.id, m.clone(), r.data));
                }
            }
            failed.extend(
                batch
                    .failed
                    .into_iter()
                    .map(|f| (f.record, f.failure.to_string())),
            );
        }
        c.close().await;
        Ok::<_, CliError>((records, failed))
    })?;
    let out = anonymize::anonymize(
        records.iter().map(|(id, m, d)| (*id, m, d.as_slice())),
        &key,
        anonymize::Policy {
            k: a.k,
            birth_band_years: a.birth_band,
            suppress: a.suppress,
        },
    );
    kakera_client::files::write_new(&a.out, &anonymize::to_csv(&out.rows), 0o600)?;
    if json {
        let k_anonymous = out.small_groups.is_empty();
        json_line(&serde_json::json!({
            "job": a.job,
            "records_read": records.len(),
            "rows": out.rows.len(),
            "people": out.people,
            "out": a.out,
            "failed": failed.iter().map(|(id, why)| serde_json::json!({"record": id.to_string(), "reason": why.to_string()})).collect::<Vec<_>>(),
            "skipped": out.skipped.iter().map(|(id, why)| serde_json::json!({"record": id.to_string(), "reason": why.to_string()})).collect::<Vec<_>>(),
            "k": a.k,
            "k_anonymous": k_anonymous,
            "suppressed_rows": out.suppressed_rows,
            "small_groups": out.small_groups.iter().map(|g| serde_json::json!({
                "birth_year": g.birth_year.to_string(), "sex": g.sex.to_string(),
                "prefecture": g.prefecture.to_string(), "people": g.people,
            })).collect::<Vec<_>>(),
        }));
        return Ok(if failed.is_empty() && (k_anonymous || a.suppress) {
            Outcome::Ok
        } else {
            Outcome::Problem
        });
    }
    println!(
        "read {} record(s) under job '{}'; wrote {} row(s) for {} people to {}",
        records.len(),
        a.job,
        out.rows.len(),
        out.people,
        a.out.display()
    );
    for (id, why) in &failed {
        println!("    could not read {id}: {why}");
    }
    for (id, why) in &out.skipped {
        println!("    skipped {id}: {why}");
    }
    if out.small_groups.is_empty() {
        println!(
            "k-anonymity holds: every (birth year, sex, prefecture) group has at least {} people",
            a.k
        );
        return Ok(if failed.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Problem
        });
    }
    println!(
        "{} group(s) of (birth year, sex, prefecture) have fewer than {} people{}:",
        out.small_groups.len(),
        a.k,
        if a.suppress {
            format!("; their {} row(s) were left out", out.suppressed_rows)
        } else {
            String::new()
        }
    );
    for g in &out.small_groups {
        println!(
            "    {} {} {}: {} people",
            g.birth_year, g.sex, g.prefecture, g.people
        );
    }
    Ok(if a.suppress && failed.is_empty() {
        Outcome::Ok
    } else {
        if !a.suppress {
            println!(
                "the CSV breaks {}-anonymity: do not release it; re-run with --suppress or \
                 coarser groups",
                a.k
            );
        }
        Outcome::Problem
    })
}
