//! The anonymization job's logic (`kakera job anonymize`), pure: HL7 v2.5 parsing
//! (ISO-2022-JP text, CR segments), de-identification, CSV, and a k-anonymity check.
//! The job itself (reading under a grant inside the HSZ) is in the CLI; this module
//! sees only record bytes handed to it and never logs them.
//!
//! De-identification, per record:
//! - PID-3 (the patient id) becomes a research id: HMAC-SHA256(job key, facility
//!   0x00 patient id), 16 hex digits; the job key is random per run unless given, so
//!   research ids do not link across studies;
//! - PID-5 (names, kanji and kana) and every other PID field are dropped;
//! - PID-7 (birth date) becomes the birth year, or with a band of b years the band
//!   (`1950-1959` for b = 10: a coarser level of the same hierarchy, for
//!   populations too small for k at the year); PID-8 (sex) is kept; PID-11
//!   (address) becomes the prefecture (component 4);
//! - the record's effective date becomes its month;
//! - each OBX gives one row (code, name, value, unit); a record without OBX gives
//!   one row with its demographics only.
//!
//! Quasi-identifiers are (birth year, sex, prefecture). The check counts distinct
//! research ids per combination; a combination with fewer than k people breaks
//! k-anonymity and is reported (and its rows dropped with `suppress`).

use std::collections::{BTreeMap, BTreeSet};

use kakera_proto::{RecordId, RecordKind, RecordMeta, SubjectTag};
use ring::hmac;
use zeroize::Zeroizing;

/// One parsed HL7 message: segments, each a list of fields (field 0 is the name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    segments: Vec<Vec<String>>,
}

impl Message {
    /// Parses a message: ISO-2022-JP (as MSH-18 `~ISO IR87` says SS-MIX2 files are)
    /// or plain ASCII/UTF-8; segments end with CR (LF tolerated).
    pub fn parse(raw: &[u8]) -> Result<Message, String> {
        let (text, _, malformed) = encoding_rs::ISO_2022_JP.decode(raw);
        if malformed {
            return Err("the text is not valid ISO-2022-JP".into());
        }
        let segments: Vec<Vec<String>> = text
            .split(['\r', '\n'])
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.split('|').map(str::to_string).collect())
            .collect();
        match segments.first() {
            Some(msh) if msh[0] == "MSH" => Ok(Message { segments }),
            _ => Err("the message does not start with an MSH segment".into()),
        }
    }

    /// Every segment named `name`.
    pub fn segments<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Vec<String>> + 'a {
        self.segments.iter().filter(move |s| s[0] == name)
    }

    /// Field `n` (1-based, as HL7 numbers them) of the first `name` segment.
    pub fn field(&self, name: &str, n: usize) -> Option<&str> {
        self.segments
            .iter()
            .find(|s| s[0] == name)
            .and_then(|s| field(s, n))
    }
}

/// Field `n` (1-based) of a segment; MSH counts its field separator as MSH-1.
pub fn field(segment: &[String], n: usize) -> Option<&str> {
    let index = if segment[0] == "MSH" {
        n.checked_sub(1)?
    } else {
        n
    };
    segment.get(index).map(String::as_str)
}

/// Component `c` (1-based) of the first repetition of a field.
pub fn component(field: &str, c: usize) -> &str {
    field
        .split('~')
        .next()
        .unwrap_or("")
        .split('^')
        .nth(c.saturating_sub(1))
        .unwrap_or("")
}

/// One output row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Keyed hash of facility and patient id.
    pub research_id: String,
    /// Birth year (`YYYY`), or empty.
    pub birth_year: String,
    /// Sex (`M`, `F`, ...), or empty.
    pub sex: String,
    /// Prefecture, or empty.
    pub prefecture: String,
    /// SS-MIX2 data kind.
    pub data_kind: String,
    /// Effective month `YYYY-MM`.
    pub month: String,
    /// Observation code (JLAC10 ...), or empty.
    pub code: String,
    /// Observation name.
    pub name: String,
    /// Value.
    pub value: String,
    /// Unit.
    pub unit: String,
}

impl Row {
    fn quasi(&self) -> (String, String, String) {
        (
            self.birth_year.clone(),
            self.sex.clone(),
            self.prefecture.clone(),
        )
    }
}

/// A quasi-identifier combination with fewer than k people.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SmallGroup {
    /// Birth year.
    pub birth_year: String,
    /// Sex.
    pub sex: String,
    /// Prefecture.
    pub prefecture: String,
    /// Distinct people in the group.
    pub people: usize,
}

/// What the job produced.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Rows, in record order.
    pub rows: Vec<Row>,
    /// Combinations that break k-anonymity.
    pub small_groups: Vec<SmallGroup>,
    /// Rows dropped because their group was small (with `suppress`).
    pub suppressed_rows: usize,
    /// Distinct people in the output.
    pub people: usize,
    /// Records that could not be parsed, and why (never their bytes).
    pub skipped: Vec<(RecordId, String)>,
}

/// The job's key for research ids (zeroized on drop).
pub struct ResearchKey(Zeroizing<[u8; 32]>);

impl ResearchKey {
    /// A key from bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> ResearchKey {
        ResearchKey(Zeroizing::new(bytes))
    }

    /// A fresh random key (research ids then link nothing outside this run).
    pub fn random() -> Result<ResearchKey, crate::MedicalError> {
        let mut b = Zeroizing::new([0u8; 32]);
        getrandom::fill(b.as_mut())
            .map_err(|e| crate::MedicalError::Invalid(format!("no randomness: {e}")))?;
        Ok(ResearchKey(b))
    }

    fn research_id(&self, facility: &str, patient: &str) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.0.as_ref());
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(facility.as_bytes());
        ctx.update(&[0]);
        ctx.update(patient.as_bytes());
        kakera_client::zone::hex(&ctx.sign().as_ref()[..8])
    }
}

/// The birth year, or its band of `band_years` (`1950-1959`), from an HL7 date.
fn birth_group(birth: &str, band_years: u16) -> String {
    let Some(year) = birth
        .get(..4)
        .filter(|y| y.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|y| y.parse::<u16>().ok())
    else {
        return String::new();
    };
    if band_years <= 1 {
        return format!("{year:04}");
    }
    let start = year - year % band_years;
    format!("{start:04}-{:04}", start + band_years - 1)
}

/// De-identifies one record into rows (birth year grouped by `band_years`; 1 keeps
/// the year).
pub fn rows_of(
    meta: &RecordMeta,
    raw: &[u8],
    key: &ResearchKey,
    band_years: u16,
) -> Result<Vec<Row>, String> {
    let msg = Message::parse(raw)?;
    let pid = msg
        .segments("PID")
        .next()
        .ok_or("the message has no PID segment")?;
    let patient = component(field(pid, 3).unwrap_or(""), 1);
    if patient.is_empty() {
        return Err("PID-3 holds no patient id".into());
    }
    let birth_year = birth_group(field(pid, 7).unwrap_or(""), band_years);
    let base = Row {
        research_id: key.research_id(&meta.source, patient),
        birth_year,
        sex: field(pid, 8).unwrap_or("").to_string(),
        prefecture: component(field(pid, 11).unwrap_or(""), 4).to_string(),
        data_kind: meta.data_kind.clone().unwrap_or_default(),
        month: format!("{:04}-{:02}", meta.effective.year, meta.effective.month),
        code: String::new(),
        name: String::new(),
        value: String::new(),
        unit: String::new(),
    };
    let mut rows: Vec<Row> = msg
        .segments("OBX")
        .map(|obx| {
            let id = field(obx, 3).unwrap_or("");
            Row {
                code: component(id, 1).to_string(),
                name: component(id, 2).to_string(),
                value: field(obx, 5).unwrap_or("").to_string(),
                unit: component(field(obx, 6).unwrap_or(""), 1).to_string(),
                ..base.clone()
            }
        })
        .collect();
    if rows.is_empty() {
        rows.push(base);
    }
    Ok(rows)
}

/// A FHIR Patient's id and quasi-identifiers, for its Observations' rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirPerson {
    /// The facility's patient id (as the linkage key and SS-MIX2's PID-3 see it).
    pub patient_id: String,
    /// `birthDate` as given.
    pub birth: String,
    /// `M`, `F`, or empty (HL7 v2's codes, as SS-MIX2 rows have them).
    pub sex: String,
    /// `address[0].state`, or empty.
    pub prefecture: String,
}

/// The person a FHIR Patient record describes.
pub fn fhir_person(meta: &RecordMeta, raw: &[u8]) -> Result<FhirPerson, String> {
    let p: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| format!("not FHIR JSON: {e}"))?;
    let patient_id =
        crate::fhir::patient_id(&p, &meta.source).ok_or("the Patient has no identifier")?;
    let text = |ptr: &str| {
        p.pointer(ptr)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
    };
    Ok(FhirPerson {
        patient_id,
        birth: text("/birthDate").to_string(),
        sex: match text("/gender") {
            "female" => "F",
            "male" => "M",
            _ => "",
        }
        .to_string(),
        prefecture: text("/address/0/state").to_string(),
    })
}

/// De-identifies one FHIR Observation of `person` into a row, as [`rows_of`] does
/// for an SS-MIX2 result: the same person gets the same research id from both.
pub fn fhir_rows_of(
    meta: &RecordMeta,
    raw: &[u8],
    person: &FhirPerson,
    key: &ResearchKey,
    band_years: u16,
) -> Result<Vec<Row>, String> {
    let o: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| format!("not FHIR JSON: {e}"))?;
    let coding = o.pointer("/code/coding/0");
    let text = |v: Option<&serde_json::Value>| {
        v.and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let value = match o.pointer("/valueQuantity/value") {
        Some(v) if v.is_number() => v.to_string(),
        _ => text(o.get("valueString")),
    };
    Ok(vec![Row {
        research_id: key.research_id(&meta.source, &person.patient_id),
        birth_year: birth_group(&person.birth, band_years),
        sex: person.sex.clone(),
        prefecture: person.prefecture.clone(),
        data_kind: meta.data_kind.clone().unwrap_or_default(),
        month: format!("{:04}-{:02}", meta.effective.year, meta.effective.month),
        code: text(coding.and_then(|c| c.get("code"))),
        name: {
            let display = text(coding.and_then(|c| c.get("display")));
            if display.is_empty() {
                text(o.pointer("/code/text"))
            } else {
                display
            }
        },
        value,
        unit: text(o.pointer("/valueQuantity/unit")),
    }])
}

/// How the job generalizes and checks.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Every quasi-identifier group must hold at least k people.
    pub k: usize,
    /// Birth years per band (1: the year itself).
    pub birth_band_years: u16,
    /// Drop the rows of groups smaller than k.
    pub suppress: bool,
}

/// De-identifies `records` and checks k-anonymity over (birth year, sex,
/// prefecture); with `suppress`, rows of groups smaller than `k` are dropped.
/// SS-MIX2 records give their OBX results; FHIR Observations give a row each,
/// with the quasi-identifiers of the FHIR Patient record of the same subject
/// (read in a first pass over `records`); other records give none.
pub fn anonymize<'a, I>(records: I, key: &ResearchKey, policy: Policy) -> Output
where
    I: IntoIterator<Item = (RecordId, &'a RecordMeta, &'a [u8])> + Clone,
{
    let Policy {
        k,
        birth_band_years,
        suppress,
    } = policy;
    let mut out = Output::default();
    let is_fhir =
        |m: &RecordMeta, dk: &str| m.kind == RecordKind::Fhir && m.data_kind.as_deref() == Some(dk);
    let mut people: BTreeMap<SubjectTag, FhirPerson> = BTreeMap::new();
    for (id, meta, raw) in records.clone() {
        if is_fhir(meta, "PATIENT") {
            match fhir_person(meta, raw) {
                Ok(p) => {
                    people.insert(meta.subject, p);
                }
                Err(why) => out.skipped.push((id, why)),
            }
        }
    }
    for (id, meta, raw) in records {
        let rows = match meta.kind {
            RecordKind::Ssmix2 => rows_of(meta, raw, key, birth_band_years),
            _ if is_fhir(meta, "OBSERVATION") => match people.get(&meta.subject) {
                Some(p) => fhir_rows_of(meta, raw, p, key, birth_band_years),
                None => Err("no FHIR Patient record of its subject was read".to_string()),
            },
            _ => continue,
        };
        match rows {
            Ok(rows) => out.rows.extend(rows),
            Err(why) => out.skipped.push((id, why)),
        }
    }
    let mut groups: BTreeMap<(String, String, String), BTreeSet<String>> = BTreeMap::new();
    for r in &out.rows {
        groups
            .entry(r.quasi())
            .or_default()
            .insert(r.research_id.clone());
    }
    let small: BTreeSet<(String, String, String)> = groups
        .iter()
        .filter(|(_, people)| people.len() < k)
        .map(|(q, _)| q.clone())
        .collect();
    out.small_groups = groups
        .iter()
        .filter(|(q, _)| small.contains(*q))
        .map(|((y, s, p), people)| SmallGroup {
            birth_year: y.clone(),
            sex: s.clone(),
            prefecture: p.clone(),
            people: people.len(),
        })
        .collect();
    if suppress {
        let before = out.rows.len();
        out.rows.retain(|r| !small.contains(&r.quasi()));
        out.suppressed_rows = before - out.rows.len();
    }
    out.people = out
        .rows
        .iter()
        .map(|r| r.research_id.as_str())
        .collect::<BTreeSet<_>>()
        .len();
    out
}

/// The CSV header.
pub const CSV_HEADER: &str =
    "research_id,birth_year,sex,prefecture,data_kind,month,code,name,value,unit";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Rows as CSV (UTF-8, header first, LF line ends).
pub fn to_csv(rows: &[Row]) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for r in rows {
        let fields = [
            &r.research_id,
            &r.birth_year,
            &r.sex,
            &r.prefecture,
            &r.data_kind,
            &r.month,
            &r.code,
            &r.name,
            &r.value,
            &r.unit,
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use super::*;
    use crate::ssmix2::{Condition, parse_relative, walk};
    use kakera_proto::{RecordKind, SubjectTag};

    /// Every current file of a generated tree, as (id, meta, bytes).
    fn generated(patients: usize) -> Vec<(RecordId, RecordMeta, Vec<u8>)> {
        let dir = tempfile::tempdir().unwrap();
        crate::ssmix2_gen::generate(dir.path(), patients, "1310000001", 3).unwrap();
        generated_from(dir.path())
    }

    /// Every current file of the tree at `root`, as (id, meta, bytes).
    fn generated_from(root: &std::path::Path) -> Vec<(RecordId, RecordMeta, Vec<u8>)> {
        let mut out = Vec::new();
        walk(
            root,
            |rel, _| {
                let f = parse_relative(&rel).unwrap();
                if f.condition == Condition::Current {
                    out.push((
                        RecordId([out.len() as u8; 16]),
                        RecordMeta {
                            subject: SubjectTag([1; 32]),
                            kind: RecordKind::Ssmix2,
                            source: "1310000001".into(),
                            effective: f.effective(),
                            data_kind: Some(f.kind.clone()),
                        },
                        std::fs::read(root.join(&rel)).unwrap(),
                    ));
                }
            },
            |p, e| panic!("{p:?}: {e}"),
        );
        out
    }

    /// Issue 24.1: FHIR Observations give rows joined with their subject's FHIR
    /// Patient, and a person from both sources gets one research id: the export
    /// generated from an SS-MIX2 tree's patients yields rows whose research ids are
    /// among the SS-MIX2 rows' ones, with the same birth year and sex.
    #[test]
    fn fhir_observations_join_their_patient_and_link_to_ssmix2() {
        let dir = tempfile::tempdir().unwrap();
        let ss = dir.path().join("ss");
        crate::ssmix2_gen::generate(&ss, 8, "1310000001", 3).unwrap();
        let fhir_dir = dir.path().join("fhir");
        crate::fhir_gen::generate(&fhir_dir, 8, "1310000001", 3, Some(&ss)).unwrap();
        let mut records = generated_from(&ss);
        let n = records.len();
        for file in ["Patient.ndjson", "Observation.ndjson", "Condition.ndjson"] {
            for line in std::fs::read_to_string(fhir_dir.join(file))
                .unwrap()
                .lines()
            {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let rtype = v["resourceType"].as_str().unwrap();
                let pid = match rtype {
                    "Patient" => v["identifier"][0]["value"].as_str().unwrap().to_string(),
                    _ => {
                        v["subject"]["reference"].as_str().unwrap()["Patient/p".len()..].to_string()
                    }
                };
                let mut tag = [0u8; 32];
                tag[..pid.len().min(32)].copy_from_slice(&pid.as_bytes()[..pid.len().min(32)]);
                records.push((
                    RecordId([(records.len() % 251) as u8; 16]),
                    RecordMeta {
                        subject: SubjectTag(tag),
                        kind: RecordKind::Fhir,
                        source: "1310000001".into(),
                        effective: kakera_proto::Date::new(2025, 4, 1).unwrap(),
                        data_kind: Some(crate::fhir::data_kind(rtype)),
                    },
                    line.as_bytes().to_vec(),
                ));
            }
        }
        let key = ResearchKey::from_bytes([5; 32]);
        let policy = Policy {
            k: 1,
            birth_band_years: 1,
            suppress: false,
        };
        let out = anonymize(
            records.iter().map(|(id, m, b)| (*id, m, b.as_slice())),
            &key,
            policy,
        );
        assert!(out.skipped.is_empty(), "{:?}", out.skipped);
        let (fhir, ss_rows): (Vec<&Row>, Vec<&Row>) =
            out.rows.iter().partition(|r| r.data_kind == "OBSERVATION");
        assert!(!fhir.is_empty() && records.len() > n);
        for r in &fhir {
            assert!(
                !r.code.is_empty() && !r.value.is_empty() && !r.unit.is_empty(),
                "{r:?}"
            );
            let same = ss_rows.iter().find(|s| s.research_id == r.research_id);
            let same =
                same.unwrap_or_else(|| panic!("{} is not among the SS-MIX2 people", r.research_id));
            assert_eq!((&same.birth_year, &same.sex), (&r.birth_year, &r.sex));
        }
        assert_eq!(out.people, 8, "8 people, whichever source they came from");
    }

    /// The output holds no name, no patient id, no full birth date and no street or
    /// city: only the research id and the generalized quasi-identifiers.
    #[test]
    fn identifiers_are_replaced_or_dropped() {
        let records = generated(20);
        let key = ResearchKey::from_bytes([5; 32]);
        let out = anonymize(
            records.iter().map(|(id, m, b)| (*id, m, b.as_slice())),
            &key,
            Policy {
                k: 1,
                birth_band_years: 1,
                suppress: false,
            },
        );
        assert!(out.skipped.is_empty(), "{:?}", out.skipped);
        assert_eq!(out.people, 20);
        let csv = to_csv(&out.rows);
        for (_, _, raw) in &records {
            let msg = Message::parse(raw).unwrap();
            let pid = msg.segments("PID").next().unwrap();
            let patient = component(field(pid, 3).unwrap(), 1);
            let family = component(field(pid, 5).unwrap(), 1);
            let birth = field(pid, 7).unwrap();
            let city = component(field(pid, 11).unwrap(), 3);
            for secret in [patient, family, birth, city] {
                assert!(!csv.contains(secret), "{secret} leaked into the CSV");
            }
        }
        assert!(csv.contains("3D010000002327101") || csv.contains("3B035000002327201"));
        assert!(out.rows.iter().all(|r| r.birth_year.len() == 4));
        assert!(
            out.rows
                .iter()
                .all(|r| r.prefecture.ends_with(['都', '府', '県', '道']))
        );
    }

    /// The k-anonymity check counts people (not rows) per (birth year, sex,
    /// prefecture), reports every group below k, and suppression removes exactly
    /// their rows.
    #[test]
    fn k_anonymity_is_checked_over_people() {
        let meta = RecordMeta {
            subject: SubjectTag([1; 32]),
            kind: RecordKind::Ssmix2,
            source: "1310000001".into(),
            effective: kakera_proto::Date::new(2025, 3, 4).unwrap(),
            data_kind: Some("OML-11".into()),
        };
        let msg = |pid: &str, birth: &str, pref: &str, obx: usize| {
            let mut s = format!(
                "MSH|^~\\&|HIS|F|SSMIX2|F|20250304||OUL^R22|1|P|2.5\rPID|1||{pid}^^^^PI||X^Y||{birth}|F|||^^C^{pref}^1^JPN^H\r"
            );
            for i in 0..obx {
                s.push_str(&format!("OBX|{i}|NM|C{i}^N||1|mg||||||F\r"));
            }
            s.into_bytes()
        };
        // Three people in (1950, F, A) with many rows; one person alone in (1960, F, B).
        let raws = [
            msg("P1", "19500101", "A", 3),
            msg("P2", "19500505", "A", 1),
            msg("P3", "19501231", "A", 1),
            msg("P4", "19600101", "B", 5),
            msg("P1", "19500101", "A", 2),
        ];
        let key = ResearchKey::from_bytes([9; 32]);
        let records: Vec<(RecordId, &RecordMeta, &[u8])> = raws
            .iter()
            .enumerate()
            .map(|(i, r)| (RecordId([i as u8; 16]), &meta, r.as_slice()))
            .collect();
        let policy = |k, suppress| Policy {
            k,
            birth_band_years: 1,
            suppress,
        };
        let out = anonymize(records.clone(), &key, policy(3, false));
        assert_eq!(
            out.small_groups,
            vec![SmallGroup {
                birth_year: "1960".into(),
                sex: "F".into(),
                prefecture: "B".into(),
                people: 1
            }]
        );
        assert_eq!(out.rows.len(), 12);
        let out = anonymize(records.clone(), &key, policy(3, true));
        assert_eq!(out.suppressed_rows, 5);
        assert_eq!(out.people, 3);
        let out = anonymize(records.clone(), &key, policy(4, false));
        assert_eq!(
            out.small_groups.len(),
            2,
            "three people are not 4-anonymous"
        );
        // Decades: 1950s and 1960s stay apart, the years within them merge.
        let banded = anonymize(
            records,
            &key,
            Policy {
                k: 3,
                birth_band_years: 10,
                suppress: false,
            },
        );
        assert_eq!(banded.rows[0].birth_year, "1950-1959");
        assert_eq!(banded.small_groups.len(), 1);
        assert_eq!(birth_group("19871231", 5), "1985-1989");
        assert_eq!(birth_group("x", 5), "");
    }

    #[test]
    fn bad_messages_are_skipped_with_a_reason() {
        let meta = generated(1).remove(0).1;
        let key = ResearchKey::from_bytes([1; 32]);
        for (raw, why) in [
            (&b"PID|1||x"[..], "MSH"),
            (&b"MSH|^~\\&|a\rPV1|1"[..], "PID"),
            (&b"MSH|^~\\&|a\rPID|1||"[..], "PID-3"),
        ] {
            let e = rows_of(&meta, raw, &key, 1).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        assert_eq!(csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");
    }
}
