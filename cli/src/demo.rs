//! The demo the README runs (`kakera demo`): an operator enters a grant, an ingest
//! gateway stores synthetic records, an HSZ reader reads the granted ones back under
//! the grant, three identities are refused by the nodes, and the auditor prints and
//! verifies the audit trail. Every step talks to a real cluster through [`Client`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use kakera_config::ClusterConfig;
use kakera_net::TlsFiles;
use kakera_proto::audit::{AuditEntry, AuditQuery};
use kakera_proto::catalog::{EraseTarget, Grant, GrantScope, RecordRefusal};
use kakera_proto::{Date, RecordId, RecordKind, RecordMeta, SubjectTag};

use crate::error::CliError;
use kakera_client::zone;
use kakera_client::{Client, NewRecord, ReadFailure};

/// Where the demo's identities live: `<dir>/<name>.crt.pem` and `.key.pem` for
/// `demo-ingest`, `demo-reader`, `demo-intruder` (an hsz reader without a grant),
/// `demo-operator` and `demo-auditor`, and the zone private key file.
pub struct DemoFiles {
    /// The directory of certificates.
    pub dir: PathBuf,
    /// The zone private key (for the reader).
    pub zone_key: PathBuf,
    /// Review committee members' key files: with them the demo's grant is signed
    /// by each (the config must name the committee); without, an operator creates
    /// it alone.
    pub committee_keys: Vec<PathBuf>,
}

impl DemoFiles {
    fn tls(&self, ca: &Path, name: &str) -> TlsFiles {
        TlsFiles {
            ca: ca.to_path_buf(),
            cert: self.dir.join(format!("{name}.crt.pem")),
            key: self.dir.join(format!("{name}.key.pem")),
        }
    }
}

/// Names of the demo's identities (the dev cluster script issues them).
pub const DEMO_IDENTITIES: [(&str, &str, Option<&str>); 5] = [
    ("demo-ingest", "ingest", Some("dc")),
    ("demo-reader", "reader", Some("hsz")),
    ("demo-intruder", "reader", Some("hsz")),
    ("demo-operator", "operator", None),
    ("demo-auditor", "auditor", None),
];

/// A line of the demo's story; `ok` false marks an unexpected outcome.
pub struct Step {
    /// What happened.
    pub text: String,
    /// Whether it went as a correct cluster must behave.
    pub ok: bool,
}

const FACILITIES: [&str; 4] = ["1310000001", "1310000002", "2710000003", "0110000004"];

/// Synthetic record text (no real person): a small HL7-like message.
fn synthetic(i: usize, kind: RecordKind) -> Vec<u8> {
    format!(
        "MSH|^~\\&|DEMO|{fac}|KAKERA|HSZ|20250601120000||{kind}|MSG{i:06}|P|2.5\r\
         PID|||DEMO{i:08}||SYNTHETIC^PATIENT^{i}||19{yy:02}0101|{sex}\r\
         OBX|1|NM|3094-0^BUN^LN||{v}|mg/dL|8-20|N|||F\r",
        fac = FACILITIES[i % FACILITIES.len()],
        kind = kind.as_str(),
        yy = 40 + i % 50,
        sex = if i.is_multiple_of(2) { "F" } else { "M" },
        v = 8 + i % 15,
    )
    .into_bytes()
}

fn kind_of(i: usize) -> RecordKind {
    match i % 10 {
        0..=3 => RecordKind::Claim,
        4..=6 => RecordKind::Checkup,
        7 | 8 => RecordKind::Ssmix2,
        _ => RecordKind::Death,
    }
}

/// Runs the demo with `records` synthetic records. Returns the story; any step with
/// `ok == false` means the cluster did not behave as promised.
pub async fn run(
    config: ClusterConfig,
    files: &DemoFiles,
    records: usize,
) -> Result<Vec<Step>, CliError> {
    let mut steps = Vec::new();
    let mut say = |text: String, ok: bool| steps.push(Step { text, ok });
    let ca = config.ca_cert.clone();
    let connect = |name: &str| Client::connect(config.clone(), &files.tls(&ca, name));
    let operator = connect("demo-operator")?;
    let ingest = connect("demo-ingest")?;
    let auditor = connect("demo-auditor")?;
    let key = zone::load_private(&files.zone_key)?;
    let reader = connect("demo-reader")?.with_zone_key(key);
    let intruder = connect("demo-intruder")?.with_zone_key(zone::load_private(&files.zone_key)?);

    // 1. The review committee's approval, entered by the operator.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let job = format!("demo-study-{now_ms}");
    let grant = Grant {
        job: job.clone(),
        reader: "demo-reader".into(),
        scope: GrantScope {
            kinds: vec![RecordKind::Claim, RecordKind::Checkup],
            sources: Vec::new(),
            subjects: Vec::new(),
        },
        expires_at_ms: now_ms + 3_600_000,
        approval: "DEMO-IRB-2026-001".into(),
        created_at_ms: 0,
        created_by: String::new(),
        revoked: None,
    };
    if files.committee_keys.is_empty() {
        operator.create_grant(grant).await?;
    } else {
        // The operator alone cannot: the committee's members sign the terms.
        let alone = operator.create_grant(grant.clone()).await;
        say(
            refusal("operator creates a grant without the committee", &alone),
            alone.is_err(),
        );
        let mut signatures = Vec::new();
        for key in &files.committee_keys {
            signatures.push(crate::committee::sign_grant(
                key,
                &config.cluster_id,
                &grant,
            )?);
        }
        let names: Vec<String> = signatures.iter().map(|s| s.member.clone()).collect();
        operator.create_signed_grant(grant, signatures).await?;
        say(
            format!(
                "review committee: {} signed the grant's terms offline; the cluster checked \
                 the signatures and created it",
                names.join(" and ")
            ),
            true,
        );
    }
    say(
        format!(
            "operator: grant for job {job}: reader demo-reader, kinds claim and checkup, 1 hour"
        ),
        true,
    );
    // The job learns its own scope from the cluster; other jobs' grants stay hidden.
    let own = reader.grants().await?;
    let sees_own = own.iter().any(|g| g.job == job);
    let others = own.iter().filter(|g| g.reader != "demo-reader").count();
    say(
        format!(
            "reader: lists its grants and sees {} of its own (job {job} among them: {sees_own}), \
             {others} of other readers",
            own.len()
        ),
        sees_own && others == 0,
    );

    // 2. Ingest: sealed to the zone key, split 3 of 5 across racks, one commit.
    let mut originals = Vec::with_capacity(records);
    let mut batch = Vec::with_capacity(records);
    for i in 0..records {
        let kind = kind_of(i);
        let mut subject = [0u8; 32];
        subject[..8].copy_from_slice(&((i / 3) as u64).to_be_bytes());
        let data = synthetic(i, kind);
        originals.push((kind, data.clone()));
        batch.push(NewRecord {
            meta: RecordMeta {
                subject: SubjectTag(*blake3::hash(&subject).as_bytes()),
                kind,
                source: FACILITIES[i % FACILITIES.len()].into(),
                effective: Date::new(2025, 6, 1 + (i % 28) as u8)?,
                data_kind: None,
            },
            data,
        });
    }
    let bytes: usize = originals.iter().map(|(_, d)| d.len()).sum();
    let started = Instant::now();
    let ids = ingest.put_batch(batch).await?;
    say(
        format!(
            "ingest: stored {} records ({bytes} bytes) in {} ms: sealed, split 3 of 5, staged on 5 nodes in 3 racks, committed",
            ids.len(),
            started.elapsed().as_millis()
        ),
        ids.len() == records,
    );

    // 3. The granted reader reads what the grant covers.
    let granted: Vec<(RecordId, &Vec<u8>)> = ids
        .iter()
        .zip(&originals)
        .filter(|(_, (k, _))| matches!(k, RecordKind::Claim | RecordKind::Checkup))
        .map(|(id, (_, d))| (*id, d))
        .collect();
    let wanted: Vec<RecordId> = granted.iter().map(|(id, _)| *id).collect();
    let started = Instant::now();
    let read = reader.get_batch(&job, &wanted).await?;
    let same = read.records.len() == granted.len()
        && read
            .records
            .iter()
            .zip(&granted)
            .all(|(r, (id, d))| r.id == *id && r.data.as_slice() == d.as_slice());
    say(
        format!(
            "reader (zone hsz, under the grant): read {} of {} granted records back in {} ms, byte for byte {}; {} bad shares skipped; ticket {:?}",
            read.records.len(),
            granted.len(),
            started.elapsed().as_millis(),
            if same { "equal" } else { "DIFFERENT" },
            read.bad_shares.len(),
            read.tickets
        ),
        same && read.failed.is_empty(),
    );

    // 4. Refusals, each by the nodes.
    let first = wanted.first().copied();
    let outside = ids
        .iter()
        .zip(&originals)
        .find(|(_, (k, _))| *k == RecordKind::Death)
        .map(|(id, _)| *id);
    if let Some(id) = first {
        // Even holding a copy of the zone key, an ingest certificate gets no shares.
        let thief = connect("demo-ingest")?.with_zone_key(zone::load_private(&files.zone_key)?);
        let e = thief.get(&job, id).await;
        say(
            refusal("ingest gateway (with a stolen zone key) asks to read", &e),
            e.is_err(),
        );
        thief.close().await;
        let e = intruder.get(&job, id).await;
        say(
            refusal("hsz reader without a grant asks to read", &e),
            e.is_err(),
        );
    }
    if let Some(id) = outside {
        let e = reader.get(&job, id).await;
        say(
            refusal(
                "granted reader asks for a death record outside the grant",
                &e,
            ),
            e.is_err(),
        );
    }

    // 4b. A job lists, then reads; an erasure lands in between. The read opens its
    // ticket for the records still there and names the erased one, with why.
    if let Some(&gone) = wanted.get(1) {
        let erased = operator
            .erase(
                EraseTarget::Records(vec![gone]),
                "demo: withdrawn at source (SS-MIX2 condition flag 0)",
            )
            .await?;
        let each = reader.get_batch_each(&job, &wanted).await?;
        let named = each.failed.iter().find(|f| f.record == gone);
        say(
            format!(
                "reader: record {gone} erased between listing and reading: {} of {} read, \
                 the erased one reported by id: {}",
                each.records.len(),
                wanted.len(),
                named.map_or_else(|| "NOT REPORTED".to_string(), |f| f.failure.to_string())
            ),
            erased == vec![gone]
                && each.records.len() + 1 == wanted.len()
                && each.failed.len() == 1
                && matches!(
                    named.map(|f| &f.failure),
                    Some(ReadFailure::Refused(RecordRefusal::Erased { .. }))
                ),
        );
    }

    // 5. The audit trail of this job, and the whole chain verified.
    let (entries, _) = auditor
        .audit_log(
            AuditQuery {
                job: Some(job.clone()),
                ..AuditQuery::default()
            },
            100,
        )
        .await?;
    say(
        format!("auditor: audit entries for job {job}:"),
        !entries.is_empty(),
    );
    for e in &entries {
        say(format!("  {}", describe(e)), true);
    }
    match auditor.verify_audit_log().await? {
        Ok(n) => say(
            format!("auditor: audit chain verified end to end: {n} entries"),
            true,
        ),
        Err(b) => say(format!("auditor: AUDIT CHAIN BROKEN: {b}"), false),
    }
    for c in [operator, ingest, auditor, reader, intruder] {
        c.close().await;
    }
    Ok(steps)
}

fn refusal<T>(what: &str, result: &Result<T, kakera_client::ClientError>) -> String {
    match result {
        Ok(_) => format!("{what}: ALLOWED (this must not happen)"),
        Err(e) => format!("{what}: refused: {e}"),
    }
}

/// One line for an audit entry: time, actor, action, job, records, outcome.
pub fn describe(e: &AuditEntry) -> String {
    let outcome = match &e.outcome {
        kakera_proto::audit::Outcome::Applied => "applied".to_string(),
        kakera_proto::audit::Outcome::Refused { reason } => format!("refused: {reason}"),
    };
    let left_out = match &e.action {
        kakera_proto::audit::AuditAction::OpenReadEach { refused, .. } if !refused.is_empty() => {
            format!(" left-out={}", refused.len())
        }
        kakera_proto::audit::AuditAction::CreateSignedGrant { signers, .. }
            if !signers.is_empty() =>
        {
            format!(" signed-by={}", signers.join(","))
        }
        kakera_proto::audit::AuditAction::Revoke {
            crl_number,
            holders,
            ..
        } => {
            let names: Vec<String> = holders.iter().map(|(n, s)| format!("{n}:{s}")).collect();
            format!(" crl={crl_number} holders={}", names.join(","))
        }
        _ => String::new(),
    };
    format!(
        "#{} {} {} ({}) {}{} records={}{left_out} {}",
        e.seq,
        format_ms(e.at_ms),
        e.actor.name,
        e.actor.role,
        e.action.as_str(),
        e.job
            .as_ref()
            .map_or_else(String::new, |j| format!(" job={j}")),
        e.records.len(),
        outcome
    )
}

/// Unix ms as RFC 3339 UTC.
pub fn format_ms(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000);
    match t {
        Ok(t) => t
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| ms.to_string()),
        Err(_) => ms.to_string(),
    }
}
