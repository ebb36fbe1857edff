//! SS-MIX2 flows (P6 and the data path) on real processes: ingest of a generated
//! standard storage tree is complete, idempotent and resumable after an interrupted
//! run; malformed paths are skipped; condition-flag-0 files are not stored and ones
//! stored earlier are reported withdrawn; an opt-out computed from a patient id
//! erases the subject and keeps its later files out; the anonymization job reads
//! under a grant and its output carries no identifier.
//!
//! Five `kakera-node` processes, k = 3 of n = 5.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)] // tests: a panic is the failure report

mod common;

use std::path::Path;
use std::time::Duration;

use common::{clients, open_grant, start};
use kakera_medical::anonymize::{self, ResearchKey};
use kakera_medical::ingest::{Summary, ingest_ssmix2};
use kakera_medical::linkage::LinkageKey;
use kakera_medical::ssmix2::{parse_relative, walk};
use kakera_medical::ssmix2_gen::generate;
use kakera_proto::RecordKind;
use kakera_proto::catalog::{EraseTarget, ListFilter};

const FACILITY: &str = "1310000001";
const JOB: &str = "study-ssmix2";

async fn ingest(c: &kakera_client::Client, key: &LinkageKey, root: &Path) -> Summary {
    ingest_ssmix2(c, key, root, FACILITY, 16, |_| {})
        .await
        .unwrap()
}

/// Every file of the tree, relative, in walk order.
fn files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    walk(root, |p, _| out.push(p), |p, e| panic!("{p:?}: {e}"));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssmix2_ingest_opt_out_and_anonymization() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path(), 5).await;
    let (operator, gateway, reader) = clients(&cluster);
    let key = LinkageKey::from_bytes([42; 32]);
    let root = dir.path().join("ssmix2");
    let g = generate(&root, 24, FACILITY, 11).unwrap();
    // Two paths that are not standard storage: reported and skipped.
    std::fs::write(root.join("README.txt"), b"not a record").unwrap();
    let bad = root.join("000/100/0001000000/-/ADT-00/0001000000_-_ADT-00_-_2024X_-_1");
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    std::fs::write(&bad, b"x").unwrap();

    // An interrupted first run (the future dropped mid-way, as a killed process),
    // then a full run: together they store every current file exactly once.
    let partial = tokio::time::timeout(
        Duration::from_millis(1500),
        ingest_ssmix2(&gateway, &key, &root, FACILITY, 8, |_| {}),
    )
    .await;
    eprintln!("interrupted run finished: {}", partial.is_ok());
    let first = ingest(&gateway, &key, &root).await;
    assert_eq!(first.files, g.files + 2);
    assert_eq!(first.tally.stored + first.tally.already_stored, g.current);
    assert_eq!(first.deleted_at_source, g.deleted);
    assert_eq!(first.malformed.len(), 2, "{:?}", first.malformed);
    assert!(first.withdrawn.is_empty());
    let listed = operator
        .list_all(ListFilter::Kind(RecordKind::Ssmix2), 100_000)
        .await
        .unwrap();
    assert_eq!(listed.len(), g.current, "each current file is one record");
    assert!(listed.iter().all(|e| e.meta.source == FACILITY));
    assert!(
        listed
            .iter()
            .all(|e| e.meta.data_kind.as_deref().is_some_and(|k| k.len() == 6))
    );

    // Idempotent: a second run stores nothing.
    let second = ingest(&gateway, &key, &root).await;
    assert_eq!(second.tally.stored, 0);
    assert_eq!(second.tally.already_stored, g.current);

    // The source deletes a stored file (its flag renamed to 0): reported withdrawn,
    // and erased by the operator from that list.
    let victim = files(&root)
        .into_iter()
        .find(|p| {
            parse_relative(p).is_ok_and(|f| {
                f.kind == "OML-11" && f.condition == kakera_medical::ssmix2::Condition::Current
            })
        })
        .unwrap();
    let name = victim.to_str().unwrap();
    let renamed = format!("{}0", &name[..name.len() - 1]);
    std::fs::rename(root.join(&victim), root.join(&renamed)).unwrap();
    let third = ingest(&gateway, &key, &root).await;
    assert_eq!(third.withdrawn.len(), 1);
    let erased = operator
        .erase(
            EraseTarget::Records(third.withdrawn.clone()),
            "withdrawn at source (SS-MIX2 condition flag 0)",
        )
        .await
        .unwrap();
    assert_eq!(erased, third.withdrawn);

    // An opt-out request arrives with a patient id: the tag computed with the
    // linkage key finds the subject's records; erasing them keeps later files out.
    let patient = parse_relative(&victim).unwrap().patient_id;
    let tag = key.subject_tag(FACILITY, &patient);
    let of_subject = operator
        .list_all(ListFilter::Subject(tag), 1000)
        .await
        .unwrap();
    assert!(!of_subject.is_empty());
    let gone = operator
        .erase(EraseTarget::Subject(tag), "opt-out OPT-2026-0100")
        .await
        .unwrap();
    assert_eq!(gone.len(), of_subject.len());
    // A new visit of the opted-out patient appears at the source.
    let adt = files(&root)
        .into_iter()
        .find(|p| parse_relative(p).is_ok_and(|f| f.patient_id == patient && f.kind == "ADT-00"))
        .unwrap();
    let newer = adt
        .to_str()
        .unwrap()
        .replace("_20240", "_20260")
        .to_string();
    std::fs::copy(root.join(&adt), root.join(&newer)).unwrap();
    let fourth = ingest(&gateway, &key, &root).await;
    assert_eq!(
        fourth.tally.stored, 0,
        "nothing of the opted-out subject is stored"
    );
    assert_eq!(fourth.tally.opted_out, 1);
    assert_eq!(
        fourth.tally.erased,
        of_subject.len(),
        "erased files stay out"
    );
    assert!(
        operator
            .list_all(ListFilter::Subject(tag), 1000)
            .await
            .unwrap()
            .is_empty()
    );

    // The anonymization job: lab results under a grant, no identifier in the output.
    open_grant(&operator, JOB, "anon-job").await;
    let labs: Vec<_> = operator
        .list_all(ListFilter::Kind(RecordKind::Ssmix2), 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.meta.data_kind.as_deref() == Some("OML-11"))
        .collect();
    let ids: Vec<_> = labs.iter().map(|e| e.id).collect();
    let read = reader.get_batch(JOB, &ids).await.unwrap();
    assert!(read.failed.is_empty(), "{:?}", read.failed);
    let metas: std::collections::BTreeMap<_, _> = labs.iter().map(|e| (e.id, &e.meta)).collect();
    let out = anonymize::anonymize(
        read.records
            .iter()
            .map(|r| (r.id, metas[&r.id], r.data.as_slice())),
        &ResearchKey::from_bytes([3; 32]),
        anonymize::Policy {
            k: 2,
            birth_band_years: 1,
            suppress: false,
        },
    );
    assert!(out.skipped.is_empty(), "{:?}", out.skipped);
    assert_eq!(out.people, 23, "every patient but the opted-out one");
    let csv = anonymize::to_csv(&out.rows);
    assert!(!csv.contains(&patient), "a patient id leaked");
    assert!(
        !csv.contains("佐藤") && !csv.contains("サトウ"),
        "a name leaked"
    );
    assert!(csv.lines().count() > 24);
}
