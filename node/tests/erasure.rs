//! Erasure (P6) on real processes: an erased record's shares leave every node's
//! disk (the test reads the share bytes out of each node's RocksDB before the
//! erasure and searches every file of every data directory for them after), the
//! catalog keeps only tombstones, reads fail with a sentence naming the erasure, an
//! opted-out subject's records are refused from then on, a node that was down during
//! the erasure deletes its shares when it returns, repair never brings one back, and
//! a `kill -9` at the erasure's crash points (`erase.applied`, `erase.compacted`, the
//! leader before applying) still ends with nothing on disk.
//!
//! Six `kakera-node` processes (racks a: 1, 2, 6; b: 3, 4; c: 5), k = 3 of n = 5.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)] // tests: a panic is the failure report

mod common;

use std::time::Duration;

use common::disk::{files_containing, share_files, share_windows, wait_gone_from_disk};
use common::{auditor, clients, open_grant, start_with, wait_all_applied};
use kakera_client::{NewRecord, ReadFailure, RecordRefusal};
use kakera_proto::audit::{AuditAction, AuditQuery};
use kakera_proto::catalog::{EraseTarget, ListFilter, RecordState};
use kakera_proto::{Date, RecordId, RecordKind, RecordMeta, SubjectTag};

/// Shares of at least 3,000 bytes go to files beside the database (issue 24.4):
/// subject 0xa1's records (4,000 bytes) are stored that way, the others inline, so
/// erasure is checked on both.
const STAGING: &str =
    "[staging]\nttl_ms = 20000\ncollect_every_ms = 500\nfile_share_min_bytes = 3000\n";
const JOB: &str = "study-erasure";

fn record(subject: u8, i: u8) -> NewRecord {
    let mut data = format!("subject {subject} record {i}: ").into_bytes();
    let len = if subject == 0xa1 { 4000u32 } else { 2000 };
    data.extend((0..len).map(|j| (j as u8).wrapping_mul(31) ^ i ^ subject));
    NewRecord {
        meta: RecordMeta {
            subject: SubjectTag([subject; 32]),
            kind: RecordKind::Ssmix2,
            source: "1310000001".into(),
            effective: Date::new(2025, 5, 1 + i).unwrap(),
            data_kind: Some("OML-11".into()),
        },
        data,
    }
}

/// P6: erasing a subject (opt-out) and a single record removes every share from
/// every node's disk, leaves tombstones, makes reads fail clearly and refuses the
/// subject's records from then on; a node down during the erasure cleans up when it
/// returns; repair never brings an erased record back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_removes_every_byte_from_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start_with(dir.path(), 6, STAGING).await;
    let (operator, ingest, reader) = clients(&cluster);
    let audit = auditor(&cluster);
    open_grant(&operator, JOB, "anon-job").await;

    let a: Vec<NewRecord> = (0..5).map(|i| record(0xa1, i)).collect();
    let b: Vec<NewRecord> = (0..5).map(|i| record(0xb2, i)).collect();
    let a_ids = ingest.put_batch(a).await.unwrap();
    let b_ids = ingest.put_batch(b).await.unwrap();
    wait_all_applied(&operator).await;
    let erased: Vec<RecordId> = a_ids.iter().copied().chain([b_ids[0]]).collect();
    let windows = share_windows(&cluster, &erased);
    let live_windows = share_windows(&cluster, &b_ids[1..]);
    // Positive control: subject A's shares are files beside the databases.
    let files: usize = cluster
        .ids
        .clone()
        .into_iter()
        .map(|id| share_files(&cluster, id))
        .sum();
    assert_eq!(
        files,
        5 * 5,
        "each of A's five records has five share files"
    );

    // A holder of subject A's shares is down while the erasure is applied.
    let entry = operator.list(ListFilter::Subject(SubjectTag([0xa1; 32])), None, 10);
    let down = entry.await.unwrap().entries[0].holders[0].node;
    cluster.kill(down);

    let got = operator
        .erase(
            EraseTarget::Subject(SubjectTag([0xa1; 32])),
            "opt-out request OPT-2026-0042",
        )
        .await
        .unwrap_or_else(|e| {
            for id in 1..=6 {
                eprintln!("--- node {id}\n{}", cluster.log(id));
            }
            panic!("{e}")
        });
    let mut want = a_ids.clone();
    want.sort_unstable();
    let mut got_sorted = got.clone();
    got_sorted.sort_unstable();
    assert_eq!(got_sorted, want, "the subject's five records are erased");
    let again = operator
        .erase(EraseTarget::Subject(SubjectTag([0xa1; 32])), "repeat")
        .await
        .unwrap();
    assert!(again.is_empty(), "a repeated erasure erases nothing more");
    let one = operator
        .erase(
            EraseTarget::Records(vec![b_ids[0]]),
            "withdrawn at source (SS-MIX2 condition flag 0)",
        )
        .await
        .unwrap();
    assert_eq!(one, vec![b_ids[0]]);

    // Reads fail with a sentence naming the erasure; the catalog keeps tombstones.
    let e = reader.get(JOB, a_ids[2]).await.unwrap_err().to_string();
    assert!(
        e.contains("was erased") && e.contains("OPT-2026-0042"),
        "{e}"
    );
    let listed = operator
        .list_all(ListFilter::Subject(SubjectTag([0xa1; 32])), 100)
        .await
        .unwrap();
    assert!(listed.is_empty(), "no entry of the subject is left");
    let tombs = audit
        .tombstones(Some(SubjectTag([0xa1; 32])))
        .await
        .unwrap();
    assert_eq!(tombs.len(), 5);
    assert!(tombs.iter().all(|t| t.by == "op"));
    assert_eq!(audit.tombstones(None).await.unwrap().len(), 6);
    for r in reader.get_batch(JOB, &b_ids[1..]).await.unwrap().records {
        assert!(
            r.data.starts_with(b"subject 178"),
            "other records still read"
        );
    }
    // P5/P6 for a job that listed before the erasure and reads after it: the
    // erased records come back by id with when, who and why, the rest are read, and
    // the audit entry names the ticket's records and the ones left out.
    let listed_before: Vec<RecordId> = a_ids.iter().chain(&b_ids).copied().collect();
    let unknown = RecordId([9; 16]);
    let mut asked = listed_before.clone();
    asked.push(unknown);
    let each = reader.get_batch_each(JOB, &asked).await.unwrap();
    assert_eq!(
        each.records.iter().map(|r| r.id).collect::<Vec<_>>(),
        b_ids[1..].to_vec()
    );
    let mut refused: Vec<RecordId> = Vec::new();
    for f in &each.failed {
        match &f.failure {
            ReadFailure::Refused(RecordRefusal::Erased { by, reason, .. }) => {
                assert_eq!(by, "op");
                assert!(erased.contains(&f.record), "{}", f.record);
                if a_ids.contains(&f.record) {
                    assert!(reason.contains("OPT-2026-0042"), "{reason}");
                }
            }
            ReadFailure::Refused(RecordRefusal::NotInCatalog) => {
                assert_eq!(f.record, unknown);
            }
            other => panic!("{}: {other:?}", f.record),
        }
        refused.push(f.record);
    }
    assert_eq!(refused.len(), erased.len() + 1);
    let (trail, _) = audit
        .audit_log(
            AuditQuery {
                record: None,
                job: Some(JOB.into()),
                since_ms: None,
                after_seq: 0,
                limit: 0,
            },
            10_000,
        )
        .await
        .unwrap();
    let opened = trail
        .iter()
        .find(|e| matches!(&e.action, AuditAction::OpenReadEach { ticket, .. } if *ticket == each.tickets[0]))
        .expect("the per-record read is audited");
    assert_eq!(opened.records, {
        let mut r = b_ids[1..].to_vec();
        r.sort_unstable();
        r
    });
    let AuditAction::OpenReadEach {
        refused: logged, ..
    } = &opened.action
    else {
        unreachable!("matched above")
    };
    assert_eq!(logged, &refused);

    // The node that was down returns, applies the erasure and purges; repair has had
    // its chance to move shares meanwhile.
    cluster.spawn(down);
    wait_all_applied(&operator).await;
    wait_gone_from_disk(&cluster, &windows).await;

    // The opted-out subject is refused from then on; an erased id is never restored.
    let refused = ingest.put(record(0xa1, 9)).await.unwrap_err().to_string();
    assert!(refused.contains("opted out"), "{refused}");
    let (states, opted) = ingest
        .lookup(
            &[a_ids[0], b_ids[1], RecordId([9; 16])],
            &[SubjectTag([0xa1; 32]), SubjectTag([0xb2; 32])],
        )
        .await
        .unwrap();
    assert_eq!(
        states,
        vec![
            RecordState::Erased,
            RecordState::Committed,
            RecordState::Absent
        ]
    );
    assert_eq!(opted, vec![SubjectTag([0xa1; 32])]);
    let again = ingest
        .put_batch_with_ids(vec![(b_ids[0], record(0xb2, 0))])
        .await
        .unwrap_err()
        .to_string();
    assert!(again.contains("erased"), "{again}");

    for (record, w) in &live_windows {
        let found: usize = cluster
            .ids
            .iter()
            .map(|id| files_containing(&cluster, *id, w).len())
            .sum();
        assert!(found > 0, "live record {record}'s share is still on disk");
    }
    let reports = audit.check_erasure(&erased).await.unwrap();
    for r in &reports {
        assert!(r.confirmed(), "erasure not confirmed: {r:?}");
    }
    let live = operator.list_all(ListFilter::All, 1000).await.unwrap();
    assert_eq!(live.len(), 4, "repair brought nothing back: {live:?}");
    let (log, _) = audit
        .audit_log(
            kakera_proto::audit::AuditQuery {
                record: Some(a_ids[0]),
                ..Default::default()
            },
            1000,
        )
        .await
        .unwrap();
    assert!(
        log.iter().any(|e| e.action.as_str() == "erase"),
        "the erasure is in the audit log"
    );
}

/// P6 + P4: `kill -9` at each step of an erasure (a holder right after applying the
/// entry, a holder after compacting but before clearing its purge markers, the
/// leader before applying) still ends with tombstones everywhere and no byte of the
/// erased shares on any disk once the nodes are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_of_an_erasure_still_purges() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start_with(dir.path(), 6, STAGING).await;
    let (operator, ingest, _reader) = clients(&cluster);
    let audit = auditor(&cluster);
    let mut all_erased = Vec::new();
    for (round, point) in ["erase.applied", "erase.compacted", "apply.before_write"]
        .iter()
        .enumerate()
    {
        let ids = ingest
            .put_batch((0..3).map(|i| record(0x30 + round as u8, i)).collect())
            .await
            .unwrap();
        wait_all_applied(&operator).await;
        let windows = share_windows(&cluster, &ids);
        let entry = operator.list(ListFilter::All, None, 1000).await.unwrap();
        let holder = entry
            .entries
            .iter()
            .find(|e| e.id == ids[0])
            .unwrap()
            .holders[0]
            .node;
        let victim = if *point == "apply.before_write" {
            common::leader_node(&operator).await.unwrap()
        } else {
            holder
        };
        cluster.arm(victim, point);
        let erased = operator
            .erase(EraseTarget::Records(ids.clone()), "opt-out, crash round")
            .await;
        eprintln!("round {round} ({point} on node {victim}): erase answered {erased:?}");
        let died = cluster.died_at(victim, Duration::from_secs(20)).await;
        assert_eq!(
            died.as_deref(),
            Some(*point),
            "node {victim} died at {point}"
        );
        cluster.spawn(victim);
        // Whatever the client heard, the erasure is repeatable until it holds.
        let _ = operator
            .erase(EraseTarget::Records(ids.clone()), "opt-out, crash round")
            .await
            .unwrap();
        wait_all_applied(&operator).await;
        let (states, _) = audit.lookup(&ids, &[]).await.unwrap();
        assert!(
            states.iter().all(|s| *s == RecordState::Erased),
            "{states:?}"
        );
        wait_gone_from_disk(&cluster, &windows).await;
        all_erased.extend(ids);
    }
    for r in audit.check_erasure(&all_erased).await.unwrap() {
        assert!(r.confirmed(), "erasure not confirmed: {r:?}");
    }
}
