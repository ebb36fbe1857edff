//! Issue 23 (P3, P4): shares heal themselves. A node's scrubber finds a rotten and a
//! lost share, the leader confirms them with their holder and regenerates them in
//! place, byte for byte; a reader's report of a bad share is audited and repaired
//! the same way; a report of good shares changes nothing but the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{auditor, clients, open_grant, start_with, wait_all_applied};
use kakera_client::NewRecord;
use kakera_proto::audit::{AuditAction, AuditQuery, Outcome};
use kakera_proto::catalog::{ListFilter, RecordEntry, ShareProblem, ShareReport};
use kakera_proto::{Date, Digest, RecordId, RecordKind, RecordMeta, SubjectTag};

fn records(n: u8) -> Vec<NewRecord> {
    (0..n)
        .map(|i| NewRecord {
            meta: RecordMeta {
                subject: SubjectTag([i; 32]),
                kind: RecordKind::Checkup,
                source: "1310000001".into(),
                effective: Date::new(2025, 4, 1).unwrap(),
                data_kind: None,
            },
            data: vec![i; 2000],
        })
        .collect()
}

/// The digest of node `node`'s stored share of `record` (its database opened while
/// the node is stopped), or `None` if it holds none.
fn stored_digest(dir: &std::path::Path, node: u64, record: &RecordId) -> Option<Digest> {
    let db = kakera_node::store::open(&dir.join(format!("data/node-{node}/db"))).unwrap();
    let shares = kakera_node::shares::ShareStore::new(db);
    shares
        .committed(record)
        .unwrap()
        .map(|s| Digest::of(&s.bytes))
}

fn shares_cf(db: &rocksdb::DB) -> &rocksdb::ColumnFamily {
    kakera_node::store::cf(db, kakera_node::store::CF_SHARES).unwrap()
}

/// Waits until every share of `ids` checks out in a light audit.
async fn wait_sound(auditor: &kakera_client::Client, ids: &[RecordId], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(reports) = auditor.verify(ids, false).await
            && reports.iter().all(|r| r.ok())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: shares were not repaired"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A rotten share (bits flipped on disk) and a lost one on a node are found by the
/// node's own scrubber after it restarts, reported (audited), confirmed and
/// regenerated in place: the same node holds, at the same x, bytes that hash to the
/// catalog's digest again; no share moved to another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrubber_finds_rotten_and_lost_shares_and_they_are_regenerated_in_place() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut cluster = start_with(dir.path(), 5, "scrub_mb_s = 100").await;
    let (operator, ingest, _reader) = clients(&cluster);
    let ids = ingest.put_batch(records(12)).await.unwrap();
    wait_all_applied(&operator).await;
    let before: BTreeMap<RecordId, RecordEntry> = operator
        .list_all(ListFilter::All, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.id, e))
        .collect();
    // Node 2 holds every record's share (n = 5 of 5 nodes).
    let (rotten, lost) = (ids[0], ids[1]);
    cluster.kill(2);
    {
        let db = kakera_node::store::open(&dir.path().join("data/node-2/db")).unwrap();
        let mut v = db.get_cf(shares_cf(&db), rotten.0).unwrap().unwrap();
        let last = v.len() - 1;
        v[last] ^= 0x08;
        db.put_cf(shares_cf(&db), rotten.0, v).unwrap();
        db.delete_cf(shares_cf(&db), lost.0).unwrap();
    }
    cluster.spawn(2);

    // The scrubber reports both (before any auditor looks: auditors report too).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((log, _)) = operator.audit_log(AuditQuery::default(), 10_000).await {
            let by_node_2: Vec<RecordId> = log
                .iter()
                .filter(|e| {
                    matches!(e.action, AuditAction::ShareReport { .. }) && e.actor.name == "node-2"
                })
                .flat_map(|e| e.records.clone())
                .collect();
            if by_node_2.contains(&rotten) && by_node_2.contains(&lost) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node-2's scrubber reported nothing"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let auditor = auditor(&cluster);
    wait_sound(&auditor, &ids, "scrubbed").await;
    let after: BTreeMap<RecordId, RecordEntry> = operator
        .list_all(ListFilter::All, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.id, e))
        .collect();
    assert_eq!(before, after, "the catalog changed: a share moved");

    let (log, _) = operator
        .audit_log(AuditQuery::default(), 10_000)
        .await
        .unwrap();
    let repaired: Vec<_> = log
        .iter()
        .filter_map(|e| match &e.action {
            AuditAction::RepairAssign { moves } => Some(moves.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let x_of = |id: &RecordId| before[id].holder_on(2).unwrap().x;
    assert!(repaired.contains(&(x_of(&rotten), 2, 2)), "{repaired:?}");
    assert!(repaired.contains(&(x_of(&lost), 2, 2)), "{repaired:?}");

    // Byte for byte: node 2's shares hash to the catalog's digests again.
    cluster.kill(2);
    for id in [rotten, lost] {
        assert_eq!(
            stored_digest(dir.path(), 2, &id),
            Some(before[&id].holder_on(2).unwrap().digest)
        );
    }
}

/// A reader that meets a bad share reports it and it is repaired; a report naming
/// good shares is audited and confirms nothing (no repair is assigned); an identity
/// that reads nothing may not report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_audited_and_only_what_the_holder_confirms_is_repaired() {
    let dir = tempfile::TempDir::new().unwrap();
    // No scrubbing here: only the reader finds the bad share.
    let mut cluster = start_with(dir.path(), 5, "scrub_mb_s = 0").await;
    let (operator, ingest, reader) = clients(&cluster);
    open_grant(&operator, "healing", "anon-job").await;
    let ids = ingest.put_batch(records(6)).await.unwrap();
    wait_all_applied(&operator).await;

    // A false report: every share of ids[5] is sound.
    let auditor = auditor(&cluster);
    let lie: Vec<ShareReport> = (1..=5)
        .map(|node| ShareReport {
            record: ids[5],
            node,
            problem: ShareProblem::Corrupt,
        })
        .collect();
    let reporter = kakera_client::Client::connect(
        cluster.config(),
        &cluster.identity("liar", kakera_proto::Role::Reader, Some("hsz")),
    )
    .unwrap();
    let answer = reporter
        .leader_call(kakera_proto::Request::ReportShares {
            reports: lie.clone(),
        })
        .await
        .unwrap();
    assert!(matches!(answer, kakera_proto::Response::Committed { .. }));
    let refused = ingest
        .leader_call(kakera_proto::Request::ReportShares { reports: lie })
        .await;
    assert!(refused.is_err(), "an ingest gateway reported shares");

    // A bad share on the node a one-record read asks first, met by the reader.
    let bad = ids[0];
    let entries = operator.list_all(ListFilter::All, 100).await.unwrap();
    let on = entries.iter().find(|e| e.id == bad).unwrap().holders[0].node;
    cluster.kill(on);
    {
        let db = kakera_node::store::open(&dir.path().join(format!("data/node-{on}/db"))).unwrap();
        let mut v = db.get_cf(shares_cf(&db), bad.0).unwrap().unwrap();
        v[60] ^= 0x01;
        db.put_cf(shares_cf(&db), bad.0, v).unwrap();
    }
    cluster.spawn(on);
    // The reader reads until it has met the bad share (the restarted node may not
    // answer at first): every read succeeds all the same.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let batch = reader.get_batch("healing", &ids[..1]).await.unwrap();
        assert_eq!(batch.records.len(), 1, "{:?}", batch.failed);
        if batch
            .bad_shares
            .iter()
            .any(|b| b.record == bad && b.node == on && b.reason.contains("digest"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reader never met the bad share"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_sound(&auditor, &ids, "reported by the reader").await;

    let (log, _) = operator
        .audit_log(AuditQuery::default(), 10_000)
        .await
        .unwrap();
    let lies: Vec<_> = log
        .iter()
        .filter(|e| matches!(e.action, AuditAction::ShareReport { .. }) && e.actor.name == "liar")
        .collect();
    assert_eq!(lies.len(), 1);
    assert_eq!(lies[0].outcome, Outcome::Applied);
    assert!(
        log.iter()
            .any(|e| matches!(e.action, AuditAction::ShareReport { .. })
                && e.actor.name == "anon-job"
                && e.records.contains(&bad)),
        "the reader's report is not in the audit log"
    );
    let assigned: Vec<_> = log
        .iter()
        .filter(|e| matches!(e.action, AuditAction::RepairAssign { .. }))
        .flat_map(|e| e.records.clone())
        .collect();
    assert!(assigned.contains(&bad));
    assert!(
        !assigned.contains(&ids[5]),
        "a false report made the cluster repair a sound share"
    );
}
