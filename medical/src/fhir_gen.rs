//! Synthetic FHIR R4 bulk-export data (`kakera demo-data fhir`): no real person, but
//! the shape a FHIR server's `$export` writes (one NDJSON file per resource type,
//! one resource per line) with JP Core's patient-id system, JLAC10 lab codes and
//! MEDIS/ICD-10 diagnoses, plus one transaction-style Bundle whose entries refer to
//! their Patient by `fullUrl`.
//!
//! Given an SS-MIX2 tree (`--ssmix2`), its patients are used, with the birth date,
//! sex and prefecture of their ADT-00 message: the same people then arrive from both
//! sources and the linkage key gives each one subject. Deterministic for a seed.

use std::path::Path;

use serde_json::{Value, json};

use crate::anonymize::{Message, component, field};
use crate::error::MedicalError;
use crate::fhir::JP_PATIENT_ID_SYSTEM;
use crate::ssmix2_gen::Mix;

/// JLAC10's system URI.
pub const JLAC10_SYSTEM: &str = "urn:oid:1.2.392.200119.4.504";

/// Lab tests: JLAC10 code, name, unit, low and high of the normal range (x10).
const LABS: [(&str, &str, &str, u32, u32); 5] = [
    ("3D010000002327101", "グルコース", "mg/dL", 700, 1090),
    ("3B035000002327201", "AST", "U/L", 100, 400),
    ("3B045000002327201", "ALT", "U/L", 50, 450),
    ("3C015000002327101", "クレアチニン", "mg/dL", 6, 11),
    ("3F015000002327101", "HbA1c", "%", 46, 62),
];

const DIAGNOSES: [(&str, &str); 3] = [
    ("E11", "2型糖尿病"),
    ("I10", "本態性高血圧症"),
    ("J45", "気管支喘息"),
];

const PREFECTURES: [&str; 6] = ["東京都", "大阪府", "神奈川県", "愛知県", "福岡県", "北海道"];

/// What a generated export holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Generated {
    /// Patients.
    pub patients: usize,
    /// Resources written (every file, the Bundle's entries included).
    pub resources: usize,
    /// Observations among them.
    pub observations: usize,
    /// Files written.
    pub files: usize,
}

/// One synthetic person.
struct Person {
    id: String,
    birth: String,
    gender: &'static str,
    prefecture: String,
}

/// The first `n` patients of an SS-MIX2 tree, with their ADT-00 demographics.
fn people_of_tree(root: &Path, n: usize) -> Result<Vec<Person>, MedicalError> {
    let mut out = Vec::new();
    let mut files = Vec::new();
    crate::ssmix2::walk(root, |rel, _| files.push(rel), |_, _| {});
    files.sort();
    for rel in files {
        if out.len() == n {
            break;
        }
        let Ok(f) = crate::ssmix2::parse_relative(&rel) else {
            continue;
        };
        if f.kind != "ADT-00" || out.iter().any(|p: &Person| p.id == f.patient_id) {
            continue;
        }
        let raw = std::fs::read(root.join(&rel)).map_err(|source| MedicalError::File {
            path: root.join(&rel),
            source,
        })?;
        let Ok(msg) = Message::parse(&raw) else {
            continue;
        };
        let Some(pid) = msg.segments("PID").next() else {
            continue;
        };
        let birth = field(pid, 7).unwrap_or("");
        if birth.len() < 8 {
            continue;
        }
        out.push(Person {
            id: f.patient_id.clone(),
            birth: format!("{}-{}-{}", &birth[..4], &birth[4..6], &birth[6..8]),
            gender: if field(pid, 8) == Some("F") {
                "female"
            } else {
                "male"
            },
            prefecture: component(field(pid, 11).unwrap_or(""), 4).to_string(),
        });
    }
    Ok(out)
}

fn invented_people(n: usize, rng: &mut Mix) -> Vec<Person> {
    (0..n)
        .map(|i| Person {
            id: format!("{:010}", 2_000_000 + i * 7 + rng.below(7) as usize),
            birth: format!(
                "{}-{:02}-{:02}",
                1935 + rng.below(60),
                1 + rng.below(12),
                1 + rng.below(28)
            ),
            gender: if rng.below(2) == 0 { "female" } else { "male" },
            prefecture: PREFECTURES[rng.below(PREFECTURES.len() as u64) as usize].to_string(),
        })
        .collect()
}

fn patient(p: &Person, facility: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "id": format!("p{}", p.id),
        "meta": {"profile": ["http://jpfhir.jp/fhir/core/StructureDefinition/JP_Patient"]},
        "identifier": [{"system": format!("{JP_PATIENT_ID_SYSTEM}{facility}"), "value": p.id}],
        "gender": p.gender,
        "birthDate": p.birth,
        "address": [{"state": p.prefecture, "country": "JP"}],
    })
}

fn observation(id: String, subject: &str, day: &str, lab: usize, value10: u64) -> Value {
    let (code, name, unit, _, _) = LABS[lab];
    json!({
        "resourceType": "Observation",
        "id": id,
        "meta": {"profile": ["http://jpfhir.jp/fhir/core/StructureDefinition/JP_Observation_LabResult"]},
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
        "code": {"coding": [{"system": JLAC10_SYSTEM, "code": code, "display": name}]},
        "subject": {"reference": subject},
        "effectiveDateTime": format!("{day}T09:30:00+09:00"),
        "valueQuantity": {"value": value10 as f64 / 10.0, "unit": unit},
    })
}

/// Writes a synthetic bulk export of `patients` patients of `facility` into `out`
/// (`Patient.ndjson`, `Observation.ndjson`, `Condition.ndjson`,
/// `Encounter.ndjson`, `bundle-allergies.json`); with `ssmix2`, its patients.
pub fn generate(
    out: &Path,
    patients: usize,
    facility: &str,
    seed: u64,
    ssmix2: Option<&Path>,
) -> Result<Generated, MedicalError> {
    let mut rng = Mix(seed);
    let people = match ssmix2 {
        Some(root) => people_of_tree(root, patients)?,
        None => invented_people(patients, &mut rng),
    };
    std::fs::create_dir_all(out).map_err(|source| MedicalError::File {
        path: out.to_path_buf(),
        source,
    })?;
    let mut g = Generated {
        patients: people.len(),
        ..Generated::default()
    };
    let mut files: [(&str, String); 4] = [
        ("Patient.ndjson", String::new()),
        ("Observation.ndjson", String::new()),
        ("Condition.ndjson", String::new()),
        ("Encounter.ndjson", String::new()),
    ];
    for (i, p) in people.iter().enumerate() {
        let subject = format!("Patient/p{}", p.id);
        let day = format!("2025-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28));
        files[0].1 += &format!("{}\n", patient(p, facility));
        for n in 0..2 + rng.below(3) as usize {
            let lab = rng.below(LABS.len() as u64) as usize;
            let (_, _, _, lo, hi) = LABS[lab];
            let value = u64::from(lo) + rng.below(u64::from(hi - lo) * 13 / 10 + 1);
            let obs = observation(format!("o{}-{n}", p.id), &subject, &day, lab, value);
            files[1].1 += &format!("{obs}\n");
            g.observations += 1;
        }
        let (icd, name) = DIAGNOSES[rng.below(DIAGNOSES.len() as u64) as usize];
        files[2].1 += &format!(
            "{}\n",
            json!({
                "resourceType": "Condition", "id": format!("c{}", p.id),
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": icd, "display": name}]},
                "subject": {"reference": subject},
                "onsetDateTime": day,
            })
        );
        files[3].1 += &format!(
            "{}\n",
            json!({
                "resourceType": "Encounter", "id": format!("e{}-{i}", p.id),
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": subject},
                "period": {"start": format!("{day}T09:00:00+09:00"), "end": format!("{day}T10:00:00+09:00")},
            })
        );
        g.resources += 4;
    }
    g.resources += g.observations - people.len();
    for (name, text) in &files {
        write(&out.join(name), text.as_bytes())?;
        g.files += 1;
    }
    // A Bundle (as a server's transaction or a document export sends them): the
    // first patient again and an allergy referring to it by fullUrl.
    if let Some(p) = people.first() {
        let bundle = json!({
            "resourceType": "Bundle", "type": "collection",
            "entry": [
                {"fullUrl": "urn:uuid:6c1d0a2e-0000-4000-8000-000000000001", "resource": patient(p, facility)},
                {"fullUrl": "urn:uuid:6c1d0a2e-0000-4000-8000-000000000002", "resource": {
                    "resourceType": "AllergyIntolerance", "id": format!("a{}", p.id),
                    "code": {"text": "ペニシリン"},
                    "patient": {"reference": "urn:uuid:6c1d0a2e-0000-4000-8000-000000000001"},
                    "recordedDate": "2025-01-15",
                }},
            ],
        });
        write(
            &out.join("bundle-allergies.json"),
            bundle.to_string().as_bytes(),
        )?;
        g.files += 1;
        g.resources += 2;
    }
    Ok(g)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), MedicalError> {
    std::fs::write(path, bytes).map_err(|source| MedicalError::File {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// Every generated resource is a valid R4 resource by the model ingest uses,
    /// and the same seed writes the same export.
    #[test]
    fn generated_resources_are_valid_and_deterministic() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let ga = generate(a.path(), 12, "1310000001", 5, None).unwrap();
        let gb = generate(b.path(), 12, "1310000001", 5, None).unwrap();
        assert_eq!(ga, gb);
        let mut count = 0;
        for name in [
            "Patient.ndjson",
            "Observation.ndjson",
            "Condition.ndjson",
            "Encounter.ndjson",
        ] {
            let text = std::fs::read_to_string(a.path().join(name)).unwrap();
            assert_eq!(text, std::fs::read_to_string(b.path().join(name)).unwrap());
            for line in text.lines() {
                crate::fhir::parse_resource(line.as_bytes())
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                count += 1;
            }
        }
        let bundle: Value =
            serde_json::from_slice(&std::fs::read(a.path().join("bundle-allergies.json")).unwrap())
                .unwrap();
        for e in bundle["entry"].as_array().unwrap() {
            crate::fhir::parse_resource(e["resource"].to_string().as_bytes()).unwrap();
            count += 1;
        }
        assert_eq!(count, ga.resources);
    }

    /// With an SS-MIX2 tree, the export's patients are the tree's, with their
    /// ADT-00 birth date and sex.
    #[test]
    fn an_ssmix2_trees_patients_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let ss = dir.path().join("ss");
        crate::ssmix2_gen::generate(&ss, 5, "1310000001", 3).unwrap();
        let out = dir.path().join("fhir");
        let g = generate(&out, 5, "1310000001", 3, Some(&ss)).unwrap();
        assert_eq!(g.patients, 5);
        let patients = std::fs::read_to_string(out.join("Patient.ndjson")).unwrap();
        let mut files = Vec::new();
        crate::ssmix2::walk(&ss, |rel, _| files.push(rel), |_, _| {});
        for line in patients.lines() {
            let p: Value = serde_json::from_str(line).unwrap();
            let id = p["identifier"][0]["value"].as_str().unwrap();
            assert!(
                files.iter().any(|f| f.to_string_lossy().contains(id)),
                "patient {id} is in the SS-MIX2 tree"
            );
        }
    }
}
