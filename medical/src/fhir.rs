//! FHIR R4 ingest (`kakera ingest fhir`): NDJSON bulk-export files (one resource
//! per line, as a FHIR server's `$export` writes them) and Bundles or single
//! resources in `.json` files; JP Core profiles are the common case.
//!
//! - Each resource is one record of kind `fhir`; its data kind is its resource type
//!   in upper case with words split by '-' (`MedicationRequest` ->
//!   `MEDICATION-REQUEST`), its date the resource's clinical date (the first of
//!   [`DATE_PATHS`] it has).
//! - Subject: the Patient's identifier at the facility (JP Core's
//!   `urn:oid:1.2.392.100495.20.3.51.1<facility>` system, else the Patient's only
//!   or first identifier) through the linkage key, so the same person from SS-MIX2
//!   (PID-3) and from FHIR links to one subject. Other resources name their Patient
//!   by reference (`subject`, `patient`, `beneficiary`): `Patient/<id>` or a Bundle
//!   entry's `fullUrl`, resolved in a first pass over every input, or a logical
//!   reference with the identifier itself. A resource with no patient is counted,
//!   not stored.
//! - Every resource is parsed with the `fhir` crate's R4 model and its validation
//!   (cardinalities, required elements) before anything is stored; a malformed one is
//!   reported with its file and line (or Bundle entry) and skipped, never stored half.
//! - Record id: the linkage key's id of (facility, `fhir/<type>/<id>/<BLAKE3 of the
//!   stored bytes>`) at the resource's date: idempotent and resumable like the
//!   SS-MIX2 ingest; a changed resource is a new record.
//! - Stored bytes: an NDJSON line as it is; a Bundle entry's resource as compact JSON.
//! - Memory: one batch of resources and the Patient map (at most
//!   [`MAX_PATIENTS`] entries, about 100 bytes each); a `.json` file is read whole, so
//!   it may hold at most [`MAX_JSON_FILE_BYTES`] (export large sets as NDJSON).

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use fhir::validate::Validate;
use kakera_client::{Client, NewRecord};
use kakera_proto::catalog::MAX_RECORD_BYTES;
use kakera_proto::{Date, RecordId, RecordKind, RecordMeta, SubjectTag};
use serde_json::Value;

use crate::error::MedicalError;
use crate::files::{date_ms, walk_paths};
use crate::ingest::{MAX_BATCH_BYTES, Progress};
use crate::linkage::LinkageKey;
use crate::store::{Tally, store_absent};

/// Most Patients one run keeps in its reference map.
pub const MAX_PATIENTS: usize = 2_000_000;
/// Largest `.json` file (a Bundle) read whole.
pub const MAX_JSON_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// Longest NDJSON line read (a resource above it is reported, not read whole).
pub const MAX_LINE_BYTES: usize = MAX_RECORD_BYTES as usize;
/// JP Core's system of a facility's patient ids, followed by the facility code.
pub const JP_PATIENT_ID_SYSTEM: &str = "urn:oid:1.2.392.100495.20.3.51.1";

/// Where a resource's clinical date is, in order of preference (JSON pointers).
pub const DATE_PATHS: [&str; 16] = [
    "/effectiveDateTime",
    "/effectivePeriod/start",
    "/effectiveInstant",
    "/issued",
    "/onsetDateTime",
    "/onsetPeriod/start",
    "/performedDateTime",
    "/performedPeriod/start",
    "/occurrenceDateTime",
    "/authoredOn",
    "/period/start",
    "/recordedDate",
    "/billablePeriod/start",
    "/created",
    "/date",
    "/birthDate",
];

/// What a run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FhirSummary {
    /// Files read.
    pub files: usize,
    /// Resources found.
    pub resources: usize,
    /// Records stored, skipped as stored before, erased or opted out.
    #[serde(flatten)]
    pub tally: Tally,
    /// Resources naming no patient this run could resolve (not stored).
    pub no_patient: usize,
    /// Resources or files skipped, with where (`file:line`, `file#entry`) and why.
    pub malformed: Vec<(String, String)>,
}

/// One resource found in an input file.
struct Found {
    /// `file:line` or `file#entry n`.
    at: String,
    /// The Bundle entry's `fullUrl`, if any.
    full_url: Option<String>,
    /// The resource's bytes as stored (the line, or the entry as compact JSON).
    bytes: Vec<u8>,
}

/// The resources of one input file, one at a time: NDJSON read a line at a time; a
/// `.json` file (a Bundle, or one resource) read whole. Items are resources, or
/// `Err((where, why))` for what cannot be read.
enum Resources {
    Ndjson {
        name: String,
        reader: std::io::BufReader<std::fs::File>,
        line: usize,
        done: bool,
    },
    Whole(std::vec::IntoIter<Result<Found, (String, String)>>),
}

impl Resources {
    fn open(path: &Path) -> Resources {
        let name = path.display().to_string();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let one = |r| Resources::Whole(vec![r].into_iter());
        if ext.eq_ignore_ascii_case("ndjson") {
            return match std::fs::File::open(path) {
                Ok(f) => Resources::Ndjson {
                    name,
                    reader: std::io::BufReader::new(f),
                    line: 0,
                    done: false,
                },
                Err(e) => one(Err((name, e.to_string()))),
            };
        }
        if !ext.eq_ignore_ascii_case("json") {
            return one(Err((name, "not a FHIR file (.ndjson or .json)".into())));
        }
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if size > MAX_JSON_FILE_BYTES {
            return one(Err((
                name,
                format!(
                    "{size} bytes; a .json file is read whole, at most {MAX_JSON_FILE_BYTES} \
                     (export as NDJSON)"
                ),
            )));
        }
        let value: Value = match std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(v) => v,
            Err(why) => return one(Err((name, why))),
        };
        if value.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
            return one(Ok(Found {
                at: name,
                full_url: None,
                bytes: value.to_string().into_bytes(),
            }));
        }
        let entries = value.get("entry").and_then(Value::as_array);
        let out: Vec<_> = entries
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, entry)| {
                let at = format!("{name}#entry {}", i + 1);
                let Some(resource) = entry.get("resource") else {
                    return Err((at, "a Bundle entry without a resource".to_string()));
                };
                Ok(Found {
                    at,
                    full_url: entry
                        .get("fullUrl")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    bytes: resource.to_string().into_bytes(),
                })
            })
            .collect();
        Resources::Whole(out.into_iter())
    }
}

impl Iterator for Resources {
    type Item = Result<Found, (String, String)>;

    fn next(&mut self) -> Option<Self::Item> {
        let (name, reader, n, done) = match self {
            Resources::Whole(items) => return items.next(),
            Resources::Ndjson {
                name,
                reader,
                line,
                done,
            } => (name, reader, line, done),
        };
        let mut buf = Vec::new();
        // Bounded: each turn reads one line of at most MAX_LINE_BYTES.
        while !*done {
            *n += 1;
            buf.clear();
            let read = std::io::Read::take(&mut *reader, MAX_LINE_BYTES as u64 + 1)
                .read_until(b'\n', &mut buf);
            let at = format!("{name}:{n}");
            match read {
                Ok(0) => *done = true,
                Err(e) => {
                    *done = true;
                    return Some(Err((at, e.to_string())));
                }
                Ok(_) if buf.len() > MAX_LINE_BYTES => {
                    *done = true;
                    return Some(Err((
                        at,
                        format!(
                            "a line longer than {MAX_LINE_BYTES} bytes; the rest of the file \
                             is skipped"
                        ),
                    )));
                }
                Ok(_) => {
                    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        buf.pop();
                    }
                    if buf.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return Some(Ok(Found {
                        at,
                        full_url: None,
                        bytes: std::mem::take(&mut buf),
                    }));
                }
            }
        }
        None
    }
}

/// The facility's patient id among a Patient's identifiers (see the module doc).
pub fn patient_id(patient: &Value, facility: &str) -> Option<String> {
    let ids = patient.get("identifier")?.as_array()?;
    let system = format!("{JP_PATIENT_ID_SYSTEM}{facility}");
    let value = |i: &Value| {
        i.get("value")
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    ids.iter()
        .find(|i| i.get("system").and_then(Value::as_str) == Some(system.as_str()))
        .and_then(value)
        .or_else(|| ids.iter().find_map(value))
}

/// The patient reference of a non-Patient resource: (reference text, logical
/// identifier value).
fn patient_reference(resource: &Value) -> Option<(Option<String>, Option<String>)> {
    let r = ["subject", "patient", "beneficiary"]
        .iter()
        .find_map(|f| resource.get(*f))?;
    let reference = r
        .get("reference")
        .and_then(Value::as_str)
        .map(str::to_string);
    let identifier = r
        .pointer("/identifier/value")
        .and_then(Value::as_str)
        .map(str::to_string);
    Some((reference, identifier))
}

/// `MedicationRequest` -> `MEDICATION-REQUEST`.
pub fn data_kind(resource_type: &str) -> String {
    let mut out = String::with_capacity(resource_type.len() + 4);
    for (i, c) in resource_type.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The resource's clinical date: the first of [`DATE_PATHS`] present; a partial
/// date (`2025`, `2025-04`) is its first day.
pub fn clinical_date(resource: &Value) -> Option<Date> {
    let text = DATE_PATHS
        .iter()
        .find_map(|p| resource.pointer(p).and_then(Value::as_str))
        .or_else(|| {
            resource
                .pointer("/meta/lastUpdated")
                .and_then(Value::as_str)
        })?;
    let part = |r: std::ops::Range<usize>| text.get(r).and_then(|s| s.parse::<u16>().ok());
    let year = part(0..4)?;
    let month = if text.len() >= 7 { part(5..7)? } else { 1 };
    let day = if text.len() >= 10 { part(8..10)? } else { 1 };
    Date::new(year, u8::try_from(month).ok()?, u8::try_from(day).ok()?).ok()
}

/// Parses `bytes` as one R4 resource, checks it with the model's validation, and
/// returns its JSON value and type.
pub fn parse_resource(bytes: &[u8]) -> Result<(Value, String), String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let rtype = value
        .get("resourceType")
        .and_then(Value::as_str)
        .ok_or("no resourceType")?
        .to_string();
    let typed: fhir::r4::resources::Resource = serde_json::from_value(value.clone())
        .map_err(|e| format!("not a valid FHIR R4 {rtype}: {e}"))?;
    if let Some(issue) = typed.validate().first() {
        return Err(format!(
            "not a valid FHIR R4 {rtype}: {}: {}",
            issue.path, issue.message
        ));
    }
    Ok((value, rtype))
}

/// Patient references -> the facility's patient id, from the first pass.
#[derive(Default)]
struct Patients {
    by_ref: HashMap<String, String>,
}

impl Patients {
    fn add(
        &mut self,
        keys: impl IntoIterator<Item = String>,
        pid: &str,
    ) -> Result<(), MedicalError> {
        for k in keys {
            if self.by_ref.len() >= MAX_PATIENTS && !self.by_ref.contains_key(&k) {
                return Err(MedicalError::Invalid(format!(
                    "more than {MAX_PATIENTS} Patient references in one run: ingest the \
                     export in parts (each part with its Patients)"
                )));
            }
            self.by_ref.insert(k, pid.to_string());
        }
        Ok(())
    }
}

/// Ingests the FHIR files under `paths` from `facility` with `client` (an ingest
/// certificate), `batch` resources at a time; `progress` is called after each batch
/// (files done of files). Errors only when the cluster fails (a re-run resumes).
pub async fn ingest_fhir(
    client: &Client,
    key: &LinkageKey,
    paths: &[PathBuf],
    facility: &str,
    batch: usize,
    mut progress: impl FnMut(&Progress),
) -> Result<FhirSummary, MedicalError> {
    RecordMeta {
        subject: SubjectTag([0; 32]),
        kind: RecordKind::Fhir,
        source: facility.to_string(),
        effective: Date::new(2000, 1, 1)?,
        data_kind: None,
    }
    .validate()?;
    let batch = batch.clamp(1, client.batch_records());
    let mut summary = FhirSummary::default();
    // Pass 1: every Patient's references, and the files' count and bytes.
    let mut patients = Patients::default();
    let mut files: usize = 0;
    let mut bytes_total = 0u64;
    for path in walk_paths(paths).flatten() {
        files += 1;
        bytes_total += std::fs::metadata(&path).map_or(0, |m| m.len());
        // Only what can be a Patient is parsed here (an Observation names its
        // Patient as "Patient/..", never as the quoted type).
        let maybe_patient = |b: &[u8]| b.windows(9).any(|w| w == b"\"Patient\"");
        for found in Resources::open(&path)
            .flatten()
            .filter(|f| maybe_patient(&f.bytes))
        {
            #[derive(serde::Deserialize)]
            struct Head {
                #[serde(rename = "resourceType")]
                resource_type: Option<String>,
                id: Option<String>,
            }
            let Ok(head) = serde_json::from_slice::<Head>(&found.bytes) else {
                continue;
            };
            if head.resource_type.as_deref() != Some("Patient") {
                continue;
            }
            let Ok(value) = serde_json::from_slice::<Value>(&found.bytes) else {
                continue;
            };
            if let Some(pid) = patient_id(&value, facility) {
                let keys = head
                    .id
                    .map(|id| format!("Patient/{id}"))
                    .into_iter()
                    .chain(found.full_url);
                patients.add(keys, &pid)?;
            }
        }
    }
    let mut state = Progress {
        files_done: 0,
        files_total: files,
        bytes_done: 0,
        bytes_total,
        started: Instant::now(),
    };
    // Pass 2: every resource, a batch at a time.
    let mut pending: Vec<(RecordId, NewRecord)> = Vec::new();
    let mut pending_bytes = 0u64;
    for path in walk_paths(paths) {
        let path = match path {
            Ok(p) => p,
            Err(bad) => {
                summary.malformed.push(bad);
                continue;
            }
        };
        summary.files += 1;
        for found in Resources::open(&path) {
            let found = match found {
                Ok(f) => f,
                Err(bad) => {
                    summary.malformed.push(bad);
                    continue;
                }
            };
            summary.resources += 1;
            state.bytes_done += found.bytes.len() as u64;
            match record_of(key, facility, &patients, found) {
                Ok(Some(r)) => {
                    pending_bytes += r.1.data.len() as u64;
                    pending.push(r);
                }
                Ok(None) => summary.no_patient += 1,
                Err(bad) => summary.malformed.push(bad),
            }
            if pending.len() >= batch || pending_bytes >= MAX_BATCH_BYTES {
                store_absent(client, std::mem::take(&mut pending), &mut summary.tally).await?;
                pending_bytes = 0;
                progress(&state);
            }
        }
        state.files_done += 1;
    }
    store_absent(client, pending, &mut summary.tally).await?;
    progress(&state);
    Ok(summary)
}

/// One resource as a record: `Ok(None)` when it names no patient this run knows.
fn record_of(
    key: &LinkageKey,
    facility: &str,
    patients: &Patients,
    found: Found,
) -> Result<Option<(RecordId, NewRecord)>, (String, String)> {
    let (value, rtype) = parse_resource(&found.bytes).map_err(|why| (found.at.clone(), why))?;
    let pid = if rtype == "Patient" {
        patient_id(&value, facility)
    } else {
        patient_reference(&value).and_then(|(reference, identifier)| {
            reference
                .and_then(|r| patients.by_ref.get(&r).cloned())
                .or(identifier)
        })
    };
    let Some(pid) = pid else {
        return Ok(None);
    };
    let effective = clinical_date(&value).ok_or_else(|| {
        (
            found.at.clone(),
            "no clinical date in the resource".to_string(),
        )
    })?;
    let meta = RecordMeta {
        subject: key.subject_tag(facility, &pid),
        kind: RecordKind::Fhir,
        source: facility.to_string(),
        effective,
        data_kind: Some(data_kind(&rtype)),
    };
    meta.validate()
        .map_err(|e| (found.at.clone(), e.to_string()))?;
    let rid = value.get("id").and_then(Value::as_str).unwrap_or("-");
    let digest = blake3::hash(&found.bytes);
    let at_ms = date_ms(effective).map_err(|e| (found.at.clone(), e.to_string()))?;
    let id = key.record_id(
        facility,
        &format!("fhir/{rtype}/{rid}/{}", digest.to_hex()),
        at_ms,
    );
    Ok(Some((
        id,
        NewRecord {
            meta,
            data: found.bytes,
        },
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const FAC: &str = "1310000001";

    fn patient() -> Value {
        serde_json::json!({
            "resourceType": "Patient", "id": "p1",
            "identifier": [
                {"system": "urn:oid:1.2.392.100495.20.3.51.19999999999", "value": "other"},
                {"system": format!("{JP_PATIENT_ID_SYSTEM}{FAC}"), "value": "0001000007"}
            ],
            "gender": "female", "birthDate": "1950-03-02"
        })
    }

    /// The facility's own identifier system wins (JP Core), else the first value.
    #[test]
    fn the_facilitys_patient_id_is_chosen() {
        assert_eq!(patient_id(&patient(), FAC).as_deref(), Some("0001000007"));
        assert_eq!(
            patient_id(&patient(), "1310000002").as_deref(),
            Some("other")
        );
        assert_eq!(
            patient_id(&serde_json::json!({"resourceType": "Patient"}), FAC),
            None
        );
    }

    #[test]
    fn data_kinds_and_dates_come_from_the_resource() {
        assert_eq!(data_kind("MedicationRequest"), "MEDICATION-REQUEST");
        assert_eq!(data_kind("Observation"), "OBSERVATION");
        let obs = serde_json::json!({"effectiveDateTime": "2025-04-03T09:00:00+09:00", "issued": "2025-05-01T00:00:00Z"});
        assert_eq!(clinical_date(&obs), Some(Date::new(2025, 4, 3).unwrap()));
        assert_eq!(
            clinical_date(&serde_json::json!({"birthDate": "1950"})),
            Some(Date::new(1950, 1, 1).unwrap())
        );
        assert_eq!(
            clinical_date(&serde_json::json!({"issued": "yesterday"})),
            None
        );
    }

    /// Malformed resources are refused with a reason before anything is stored:
    /// not JSON, no type, an unknown type, a required element missing.
    #[test]
    fn malformed_resources_are_refused_with_a_reason() {
        assert!(parse_resource(b"{").unwrap_err().starts_with("not JSON"));
        assert!(
            parse_resource(b"{\"id\": \"x\"}")
                .unwrap_err()
                .contains("resourceType")
        );
        assert!(
            parse_resource(br#"{"resourceType": "Spaceship"}"#)
                .unwrap_err()
                .contains("not a valid FHIR R4 Spaceship")
        );
        // Observation.status and .code are 1..1.
        let missing = parse_resource(br#"{"resourceType": "Observation", "id": "o1"}"#);
        assert!(
            missing.unwrap_err().contains("Observation"),
            "required elements"
        );
        let ok = parse_resource(
            br#"{"resourceType": "Observation", "id": "o1", "status": "final",
                 "code": {"coding": [{"system": "urn:oid:1.2.392.200119.4.504", "code": "3A010000002327101"}]},
                 "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2025-04-03"}"#,
        )
        .unwrap();
        assert_eq!(ok.1, "Observation");
        assert!(parse_resource(patient().to_string().as_bytes()).is_ok());
    }

    /// A Bundle's entries are found with their fullUrl; NDJSON lines with their
    /// line number, blank lines skipped.
    #[test]
    fn bundles_and_ndjson_files_yield_their_resources() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("b.json");
        std::fs::write(
            &bundle,
            serde_json::json!({"resourceType": "Bundle", "type": "collection", "entry": [
                {"fullUrl": "urn:uuid:1", "resource": patient()},
                {"fullUrl": "urn:uuid:2"}
            ]})
            .to_string(),
        )
        .unwrap();
        let nd = dir.path().join("Observation.ndjson");
        std::fs::write(&nd, "{\"resourceType\":\"Observation\"}\n\n{}\n").unwrap();
        let mut found = Vec::new();
        let mut bad = Vec::new();
        for p in [&bundle, &nd] {
            for r in Resources::open(p) {
                match r {
                    Ok(f) => found.push((f.at, f.full_url)),
                    Err(b) => bad.push(b),
                }
            }
        }
        assert_eq!(found.len(), 3);
        assert!(
            found[0].0.ends_with("b.json#entry 1") && found[0].1.as_deref() == Some("urn:uuid:1")
        );
        assert!(found[2].0.ends_with("Observation.ndjson:3"));
        assert_eq!(bad.len(), 1);
        assert!(bad[0].0.ends_with("#entry 2"));
    }
}
