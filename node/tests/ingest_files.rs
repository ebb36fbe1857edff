//! Files of any kind (issue 24.2) on real processes: a directory tree and a
//! manifest are stored one record per file, idempotently; files that cannot be
//! stored are named and skipped; an opted-out patient's later files stay out; a
//! reader under a grant gets every byte back, with the metadata the put gave; a
//! file larger than a segment is streamed in and out (issue 24.3).
//!
//! Five `kakera-node` processes, k = 3 of n = 5.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

mod common;

use std::collections::BTreeMap;

use common::{clients, open_grant, start, start_with};
use kakera_client::{Date, ReadFailure, RecordKind};
use kakera_medical::files::{FileMeta, Input, put_files};
use kakera_medical::linkage::LinkageKey;
use kakera_proto::catalog::EraseTarget;
use tokio::io::AsyncReadExt;

const FACILITY: &str = "1310000001";

fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_be_bytes()[0] ^ seed)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_put_once_named_when_refused_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    // Segments of 128 KiB: slice-3 (300,000 bytes) is streamed and stored as three
    // (issue 24.3), the others whole.
    let cluster = start_with(dir.path(), 5, "[limits]\nmax_record_bytes = 131072\n").await;
    let (operator, gateway, reader) = clients(&cluster);
    let key = LinkageKey::from_bytes([7; 32]);
    let study = dir.path().join("ct-2025-04");
    std::fs::create_dir_all(study.join("series-2")).unwrap();
    let mut originals = BTreeMap::new();
    for (name, seed, len) in [
        ("slice-1.dcm", 1u8, 70_000usize),
        ("slice-2.dcm", 2, 5_000),
        ("series-2/slice-3.dcm", 3, 300_000),
    ] {
        let data = bytes(seed, len);
        std::fs::write(study.join(name), &data).unwrap();
        originals.insert(data, name);
    }
    std::fs::write(study.join("empty.dcm"), b"").unwrap();
    let defaults = FileMeta {
        kind: Some(RecordKind::Image),
        source: Some(FACILITY.into()),
        patient_id: Some("0000123".into()),
        date: Some(Date::new(2025, 4, 1).unwrap()),
        data_kind: Some("CT".into()),
        ..FileMeta::default()
    };
    let input = Input::Paths(vec![study.clone()]);

    let first = put_files(&gateway, &key, &input, &defaults, 2, |_| {})
        .await
        .unwrap();
    assert_eq!(first.files, 4);
    assert_eq!(first.tally.stored, 3);
    assert_eq!(first.failed.len(), 1, "{:?}", first.failed);
    assert!(first.failed[0].0.ends_with("empty.dcm") && first.failed[0].1.contains("empty"));
    // Again: nothing is stored twice.
    let second = put_files(&gateway, &key, &input, &defaults, 16, |_| {})
        .await
        .unwrap();
    assert_eq!((second.tally.stored, second.tally.already_stored), (0, 3));

    // A manifest: its fields win over the flags; a missing file and a malformed line
    // are named with what is wrong, and the rest is stored.
    let report = dir.path().join("report.pdf");
    std::fs::write(&report, bytes(9, 4_000)).unwrap();
    let manifest = dir.path().join("files.jsonl");
    std::fs::write(
        &manifest,
        "{\"path\": \"report.pdf\", \"kind\": \"file\", \"data_kind\": \"REPORT\", \
         \"patient_id\": \"0000456\"}\n\
         {\"path\": \"missing.dcm\"}\n\
         {\"path\": \"ct-2025-04/slice-1.dcm\", \"date\": \"2025-02-30\"}\n",
    )
    .unwrap();
    let from_manifest = put_files(
        &gateway,
        &key,
        &Input::Manifest(manifest.clone()),
        &defaults,
        16,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(from_manifest.tally.stored, 1);
    let failed = &from_manifest.failed;
    assert!(
        failed.iter().any(|(f, _)| f.ends_with("missing.dcm")),
        "{failed:?}"
    );
    assert!(
        failed.iter().any(|(f, why)| f == "ct-2025-04/slice-1.dcm"
            && why.starts_with("manifest line 3")
            && why.contains("2025-02-30")),
        "{failed:?}"
    );

    // The reader gets every stored file back with the metadata the put gave.
    open_grant(&operator, "study-files", "anon-job").await;
    let mut scope = reader.read_scope("study-files").await.unwrap();
    let mut read = 0;
    while let Some(batch) = scope.next().await.unwrap() {
        let mut records = batch.records;
        for f in batch.failed {
            // The large file streams back; a batch read only says so.
            assert_eq!(f.failure, ReadFailure::Segmented { segments: 3 }, "{f:?}");
            let mut stream = reader.get_stream("study-files", f.record).await.unwrap();
            let mut data = Vec::new();
            stream.read_to_end(&mut data).await.unwrap();
            records.push(kakera_client::Record {
                id: f.record,
                meta: stream.meta().clone(),
                data: data.into(),
            });
        }
        for r in records {
            read += 1;
            if r.meta.kind == RecordKind::File {
                assert_eq!(*r.data, bytes(9, 4_000));
                assert_eq!(r.meta.subject, key.subject_tag(FACILITY, "0000456"));
                continue;
            }
            assert!(
                originals.contains_key(&*r.data),
                "a stored file is read back"
            );
            assert_eq!(r.meta.kind, RecordKind::Image);
            assert_eq!(r.meta.data_kind.as_deref(), Some("CT"));
            assert_eq!(r.meta.subject, key.subject_tag(FACILITY, "0000123"));
        }
    }
    assert_eq!(read, 4);

    // The patient opts out: a new file of theirs is refused, and the erased ones are
    // not stored again on a re-run.
    let tag = key.subject_tag(FACILITY, "0000123");
    operator
        .erase(EraseTarget::Subject(tag), "opt-out OPT-FILES-1")
        .await
        .unwrap();
    std::fs::write(study.join("slice-4.dcm"), bytes(4, 9_000)).unwrap();
    let after = put_files(&gateway, &key, &input, &defaults, 16, |_| {})
        .await
        .unwrap();
    assert_eq!(after.tally.stored, 0, "{:?}", after.tally);
    assert_eq!(after.tally.erased, 3);
    assert_eq!(after.tally.opted_out, 1);
}

/// Issue 24.1: a FHIR R4 bulk export of the patients of an SS-MIX2 tree is stored one
/// record per resource, linked to the same subjects as their SS-MIX2 records; a
/// re-run stores nothing; malformed resources are named by file and line and never
/// stored; a resource whose patient is unknown is counted, not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_exports_link_to_ssmix2_subjects_and_skip_malformed_resources() {
    use kakera_medical::fhir::ingest_fhir;
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path(), 5).await;
    let (operator, gateway, _) = clients(&cluster);
    let key = LinkageKey::from_bytes([8; 32]);
    let ss = dir.path().join("ssmix2");
    kakera_medical::ssmix2_gen::generate(&ss, 6, FACILITY, 2).unwrap();
    let export = dir.path().join("export");
    let g = kakera_medical::fhir_gen::generate(&export, 6, FACILITY, 2, Some(&ss)).unwrap();
    kakera_medical::ingest::ingest_ssmix2(&gateway, &key, &ss, FACILITY, 64, |_| {})
        .await
        .unwrap();
    // Three bad lines and one orphan, appended to the Observations.
    let obs = export.join("Observation.ndjson");
    let good_lines = std::fs::read_to_string(&obs).unwrap().lines().count();
    let mut text = std::fs::read_to_string(&obs).unwrap();
    text += "{not json\n";
    text += "{\"resourceType\": \"Observation\", \"id\": \"no-status\", \"subject\": {\"reference\": \"Patient/p0001000000\"}}\n";
    text += "{\"resourceType\": \"Observation\", \"id\": \"bad-date\", \"status\": \"final\", \"code\": {\"text\": \"x\"}, \"subject\": {\"reference\": \"Patient/p0001000000\"}, \"effectiveDateTime\": \"soon\"}\n";
    text += "{\"resourceType\": \"Observation\", \"id\": \"orphan\", \"status\": \"final\", \"code\": {\"text\": \"x\"}, \"subject\": {\"reference\": \"Patient/nobody\"}, \"effectiveDateTime\": \"2025-01-01\"}\n";
    std::fs::write(&obs, text).unwrap();

    let paths = [export.clone()];
    let first = ingest_fhir(&gateway, &key, &paths, FACILITY, 32, |_| {})
        .await
        .unwrap();
    assert_eq!(first.files, 5);
    // The Bundle repeats one Patient of the NDJSON files: the same record, once.
    assert_eq!(first.tally.stored, g.resources - 1, "{first:?}");
    assert_eq!(first.tally.already_stored, 1);
    assert_eq!(first.no_patient, 1);
    let at: Vec<&str> = first.malformed.iter().map(|(a, _)| a.as_str()).collect();
    for line in [good_lines + 1, good_lines + 2, good_lines + 3] {
        let want = format!("Observation.ndjson:{line}");
        assert!(at.iter().any(|a| a.ends_with(&want)), "{want} in {at:?}");
    }
    assert!(
        first
            .malformed
            .iter()
            .any(|(_, why)| why.contains("clinical date"))
    );
    let again = ingest_fhir(&gateway, &key, &paths, FACILITY, 32, |_| {})
        .await
        .unwrap();
    assert_eq!(
        (again.tally.stored, again.tally.already_stored),
        (0, g.resources)
    );

    // Linkage: each FHIR Patient record's subject is one SS-MIX2 records have too.
    let fhir_patients = operator
        .list_all(
            kakera_proto::catalog::ListFilter::Kind(RecordKind::Fhir),
            10_000,
        )
        .await
        .unwrap();
    let ssmix2 = operator
        .list_all(
            kakera_proto::catalog::ListFilter::Kind(RecordKind::Ssmix2),
            10_000,
        )
        .await
        .unwrap();
    let patients: Vec<_> = fhir_patients
        .iter()
        .filter(|e| e.meta.data_kind.as_deref() == Some("PATIENT"))
        .collect();
    assert_eq!(patients.len(), 6);
    for p in patients {
        assert!(
            ssmix2.iter().any(|s| s.meta.subject == p.meta.subject),
            "FHIR Patient {} links to an SS-MIX2 subject",
            p.id
        );
    }
    assert!(
        fhir_patients
            .iter()
            .any(|e| e.meta.data_kind.as_deref() == Some("ALLERGY-INTOLERANCE")),
        "the Bundle's allergy, resolved through its fullUrl"
    );
}
