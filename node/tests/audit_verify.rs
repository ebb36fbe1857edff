//! Auditors verify shares on six `kakera-node` processes (racks a: 1, 2, 6; b: 3, 4;
//! c: 5): each injected fault is named exactly, with its node and rack — a share
//! deleted, a byte flipped, another record's share swapped in, a share moved to a node
//! in a rack that already holds k - 1 shares, a node stopped — deep verification checks
//! the polynomial and the sealed digest without the zone key, and every run is in the
//! audit log. Guards P1, P3, P5.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

mod common;

use std::collections::BTreeMap;

use common::{auditor, clients, start, start_with, wait_all_applied};
use kakera_cli::export::{ExportQuery, ExportSigner, verify_export, write_export};
use kakera_client::verify::Finding;
use kakera_client::{Client, NewRecord};
use kakera_proto::audit::{AuditAction, AuditQuery};
use kakera_proto::catalog::{Grant, GrantScope, ListFilter, RecordEntry};
use kakera_proto::{
    Date, ErrorKind, RecordId, RecordKind, RecordMeta, Request, Response, Role, StageItem,
    SubjectTag,
};
use rocksdb::DB;

fn shares_cf(db: &DB) -> &rocksdb::ColumnFamily {
    kakera_node::store::cf(db, kakera_node::store::CF_SHARES).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_injected_fault_is_named_with_its_node_and_rack() {
    let dir = tempfile::TempDir::new().unwrap();
    // No scrubbing: the faults must still be there when the auditor looks.
    let mut cluster = start_with(dir.path(), 6, "scrub_mb_s = 0").await;
    let config = cluster.config();
    let (operator, ingest, _reader) = clients(&cluster);
    let auditor = auditor(&cluster);
    let ids = ingest
        .put_batch(
            (0..8u8)
                .map(|i| NewRecord {
                    meta: RecordMeta {
                        subject: SubjectTag([i; 32]),
                        kind: RecordKind::Checkup,
                        source: "1310000001".into(),
                        effective: Date::new(2025, 4, 1).unwrap(),
                        data_kind: None,
                    },
                    data: vec![i; 3000],
                })
                .collect(),
        )
        .await
        .unwrap();
    wait_all_applied(&operator).await;
    let entries: BTreeMap<_, RecordEntry> = operator
        .list_all(ListFilter::All, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.id, e))
        .collect();
    let clean = auditor.verify(&ids, false).await.unwrap();
    assert!(clean.iter().all(|r| r.ok()), "{clean:?}");

    // The faults, one record each.
    let (deleted, flipped, swapped, donor, moved) = (ids[0], ids[1], ids[2], ids[3], ids[4]);
    let on_deleted = entries[&deleted].holders[0].node;
    let on_flipped = entries[&flipped].holders[1].node;
    // A node holding both the swapped record and the donor.
    let on_swapped = entries[&swapped]
        .holders
        .iter()
        .map(|h| h.node)
        .find(|n| entries[&donor].holder_on(*n).is_some())
        .unwrap();
    // Rack c has one node (5), always a holder; rack a has three, one not a holder.
    let from = 5;
    let to = [1, 2, 6]
        .into_iter()
        .find(|n| entries[&moved].holder_on(*n).is_none())
        .unwrap();
    for id in 1..=6 {
        cluster.kill(id);
    }
    let open = |node: u64| {
        kakera_node::store::open(&dir.path().join(format!("data/node-{node}/db"))).unwrap()
    };
    {
        let db = open(on_deleted);
        db.delete_cf(shares_cf(&db), deleted.0).unwrap();
    }
    {
        let db = open(on_flipped);
        let mut v = db.get_cf(shares_cf(&db), flipped.0).unwrap().unwrap();
        let last = v.len() - 1;
        v[last] ^= 0x40;
        db.put_cf(shares_cf(&db), flipped.0, v).unwrap();
    }
    {
        let db = open(on_swapped);
        let v = db.get_cf(shares_cf(&db), donor.0).unwrap().unwrap();
        db.put_cf(shares_cf(&db), swapped.0, v).unwrap();
    }
    let moving = {
        let db = open(from);
        let v = db.get_cf(shares_cf(&db), moved.0).unwrap().unwrap();
        db.delete_cf(shares_cf(&db), moved.0).unwrap();
        v
    };
    {
        let db = open(to);
        db.put_cf(shares_cf(&db), moved.0, moving).unwrap();
    }
    for id in 1..=6 {
        cluster.spawn(id);
    }

    let rack = |n: u64| config.node(n).unwrap().rack.clone();
    // Retry while the restarted cluster elects a leader.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let reports = loop {
        match auditor.verify(&ids, false).await {
            Ok(r) if r.iter().all(|r| !r.labels().contains(&"unreachable")) => break r,
            other => {
                assert!(std::time::Instant::now() < deadline, "{other:?}");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    };
    let by_id: BTreeMap<_, _> = reports.iter().map(|r| (r.record, r)).collect();
    assert_eq!(
        by_id[&deleted].findings,
        vec![Finding::Missing {
            node: on_deleted,
            rack: rack(on_deleted)
        }]
    );
    assert_eq!(
        by_id[&deleted].labels(),
        vec!["missing", "under-replicated"]
    );
    assert_eq!(
        by_id[&flipped].findings,
        vec![Finding::Corrupt {
            node: on_flipped,
            rack: rack(on_flipped)
        }]
    );
    assert_eq!(
        by_id[&swapped].findings,
        vec![Finding::Corrupt {
            node: on_swapped,
            rack: rack(on_swapped)
        }]
    );
    let Finding::Misplaced {
        rack: r,
        nodes,
        max,
    } = &by_id[&moved].findings[2]
    else {
        panic!("{:?}", by_id[&moved]);
    };
    assert_eq!((r.as_str(), nodes.len(), *max), ("rack-a", 3, 2));
    assert_eq!(
        by_id[&moved].findings[..2],
        [
            Finding::Missing {
                node: from,
                rack: "rack-c".into()
            },
            Finding::Unexpected {
                node: to,
                rack: "rack-a".into()
            },
        ]
    );
    for id in &ids[5..] {
        assert!(by_id[id].ok(), "{:?}", by_id[id]);
    }

    // Deep: all n shares fetched, the polynomial and the sealed digest checked, with no
    // zone key anywhere in the auditor's hands.
    let deep = auditor.verify(&[ids[5], flipped], true).await.unwrap();
    assert!(deep[0].ok(), "{:?}", deep[0]);
    assert!(deep[1].labels().contains(&"corrupt"), "{:?}", deep[1]);
    assert_eq!(deep[1].good_shares, 4);

    // A stopped node: every record it holds reports it unreachable.
    let stopped = entries[&ids[6]].holders[0].node;
    cluster.kill(stopped);
    let r = loop {
        match auditor.verify(&ids[6..7], false).await {
            Ok(r) => break r,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "{e}");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    };
    assert!(
        matches!(&r[0].findings[..], [Finding::Unreachable { node, .. }] if *node == stopped),
        "{:?}",
        r[0]
    );

    // Every run is in the audit log; the auditor can neither read nor change anything.
    let (log, _) = auditor
        .audit_log(AuditQuery::default(), 10_000)
        .await
        .unwrap();
    let runs: Vec<_> = log
        .iter()
        .filter(|e| matches!(e.action, AuditAction::AuditRun { .. }))
        .collect();
    assert!(runs.len() >= 4, "{}", runs.len());
    assert!(runs.iter().all(|e| e.actor.name == "auditor"));
    assert!(
        runs.iter()
            .any(|e| matches!(e.action, AuditAction::AuditRun { deep: true, .. }))
    );
    for body in [
        Request::OpenRead {
            job: "any".into(),
            records: vec![ids[5]],
        },
        Request::RevokeGrant {
            job: "any".into(),
            reason: "x".into(),
        },
    ] {
        assert!(auditor.leader_call(body).await.is_err());
    }
}

fn refused_as_forbidden<T: std::fmt::Debug>(what: &str, r: Result<T, kakera_net::NetError>) {
    match r {
        Err(kakera_net::NetError::Refused {
            kind: ErrorKind::Forbidden,
            ..
        }) => {}
        other => panic!("the auditor could {what}: {other:?}"),
    }
}

/// P3, P5, P6: the auditor exports the log signed with its key and the export checks
/// offline; an erasure check names every node that still stores anything of a record
/// (committed or staged) and every node it could not ask; and the auditor role can do
/// nothing else: every attempt to read, write, grant or join is refused by the nodes
/// and the cluster's state is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditor_exports_checks_erasure_and_can_do_nothing_else() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut cluster = start(dir.path(), 5).await;
    let config = cluster.config();
    let (operator, ingest, _reader) = clients(&cluster);
    let auditor_files = cluster.identity("auditor", Role::Auditor, None);
    let auditor = Client::connect(config.clone(), &auditor_files).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    operator
        .create_grant(Grant {
            job: "study-9".into(),
            reader: "anon-job".into(),
            scope: GrantScope::default(),
            expires_at_ms: now + 3_600_000,
            approval: "IRB-2026-077".into(),
            created_at_ms: 0,
            created_by: String::new(),
            revoked: None,
        })
        .await
        .unwrap();
    let ids = ingest
        .put_batch(
            (0..3u8)
                .map(|i| NewRecord {
                    meta: RecordMeta {
                        subject: SubjectTag([i; 32]),
                        kind: RecordKind::Claim,
                        source: "1310000001".into(),
                        effective: Date::new(2025, 6, 1).unwrap(),
                        data_kind: None,
                    },
                    data: vec![i; 500],
                })
                .collect(),
        )
        .await
        .unwrap();
    wait_all_applied(&operator).await;
    let (log_before, _) = operator
        .audit_log(AuditQuery::default(), 10_000)
        .await
        .unwrap();

    // Nothing else: read, write, grant, join — each refused by a node.
    let conn = auditor.connection();
    let timeout = std::time::Duration::from_secs(10);
    let entry = operator
        .list_all(ListFilter::All, 10)
        .await
        .unwrap()
        .remove(0);
    let share = kakera_shamir::split(b"not a record", 3, 5).unwrap()[0].encode();
    for (what, body, trailer) in [
        (
            "open a read",
            Request::OpenRead {
                job: "study-9".into(),
                records: vec![ids[0]],
            },
            Vec::new(),
        ),
        (
            "stage a share",
            Request::StageShares {
                items: vec![StageItem {
                    record: RecordId([0xab; 16]),
                    size_bytes: share.len() as u64,
                }],
            },
            share.clone(),
        ),
        (
            "commit records",
            Request::CommitRecords {
                records: vec![entry.clone()],
            },
            Vec::new(),
        ),
        (
            "create a grant",
            Request::CreateGrant {
                grant: Grant {
                    job: "audit-own".into(),
                    reader: "auditor".into(),
                    scope: GrantScope::default(),
                    expires_at_ms: now + 3_600_000,
                    approval: "none".into(),
                    created_at_ms: 0,
                    created_by: String::new(),
                    revoked: None,
                },
            },
            Vec::new(),
        ),
        (
            "revoke a grant",
            Request::RevokeGrant {
                job: "study-9".into(),
                reason: "x".into(),
            },
            Vec::new(),
        ),
        (
            "join the Raft group",
            Request::RaftJoin { raft_id: 99 },
            Vec::new(),
        ),
    ] {
        for node in 1..=5 {
            let r = conn
                .call_full(node, body.clone(), &[&trailer], 0, timeout)
                .await;
            refused_as_forbidden(what, r);
        }
    }
    // Tickets an auditor may open release no share bytes: a light audit ticket and an
    // erasure-check ticket are both refused for fetching.
    let light = auditor.leader_call(Request::OpenAudit {
        records: vec![ids[0]],
        deep: false,
    });
    let Response::ReadTicket { ticket: light, .. } = light.await.unwrap() else {
        panic!("no light ticket");
    };
    let erasure = auditor.leader_call(Request::OpenErasureCheck {
        records: vec![ids[0]],
    });
    let Response::ReadTicket {
        ticket: erasure, ..
    } = erasure.await.unwrap()
    else {
        panic!("no erasure ticket");
    };
    for ticket in [light.id, erasure.id] {
        for h in &entry_of(&operator, ids[0]).await.holders {
            let r = conn
                .call(
                    h.node,
                    Request::FetchShares {
                        ticket,
                        records: vec![ids[0]],
                    },
                    timeout,
                )
                .await;
            refused_as_forbidden("fetch shares without a deep audit ticket", r);
        }
    }
    // The cluster's state is as before: records, grants; the log grew only by the
    // auditor's own two tickets.
    wait_all_applied(&operator).await;
    assert_eq!(
        operator.list_all(ListFilter::All, 10).await.unwrap().len(),
        3
    );
    let grants = operator.grants().await.unwrap();
    assert_eq!(grants.len(), 1);
    assert!(grants[0].revoked.is_none());
    let (log_after, _) = operator
        .audit_log(AuditQuery::default(), 10_000)
        .await
        .unwrap();
    let added: Vec<&str> = log_after[log_before.len()..]
        .iter()
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(added, vec!["audit-run", "erasure-check"]);

    // Export: signed with the auditor's key, verified with only the CA certificate.
    let signer = ExportSigner::load(&auditor_files.cert, &auditor_files.key).unwrap();
    let ca_pem = std::fs::read_to_string(&auditor_files.ca).unwrap();
    let (all, head) = auditor
        .audit_log(AuditQuery::default(), usize::MAX)
        .await
        .unwrap();
    let file = write_export(
        &signer,
        &config.cluster_id,
        now,
        ExportQuery::default(),
        head,
        &all,
    )
    .unwrap();
    let summary = verify_export(&file, &ca_pem).unwrap();
    assert!(summary.header.complete);
    assert_eq!(summary.seq_range, Some((1, all.len() as u64)));
    let query = AuditQuery {
        job: Some("study-9".into()),
        ..AuditQuery::default()
    };
    let (picked, head) = auditor.audit_log(query, usize::MAX).await.unwrap();
    let export_query = ExportQuery {
        job: Some("study-9".into()),
        ..ExportQuery::default()
    };
    let file = write_export(
        &signer,
        &config.cluster_id,
        now,
        export_query,
        head,
        &picked,
    )
    .unwrap();
    let summary = verify_export(&file, &ca_pem).unwrap();
    assert!(!summary.header.complete);
    assert_eq!(summary.header.entries, picked.len() as u64);
    assert!(!picked.is_empty());

    // Erasure checks: a live record is not erased (all five holders named); an id no
    // node ever stored is confirmed; a share only staged is found on its node.
    let unknown = RecordId([0x5a; 16]);
    let staged_only = RecordId([0x6b; 16]);
    let r = ingest
        .connection()
        .call_full(
            2,
            Request::StageShares {
                items: vec![StageItem {
                    record: staged_only,
                    size_bytes: share.len() as u64,
                }],
            },
            &[&share],
            0,
            timeout,
        )
        .await
        .unwrap();
    assert!(matches!(r.0, Response::Staged { .. }), "{r:?}");
    let reports = auditor
        .check_erasure(&[ids[1], unknown, staged_only])
        .await
        .unwrap();
    assert!(reports[0].in_catalog && !reports[0].confirmed());
    let holders: Vec<u64> = reports[0].remnants.iter().map(|m| m.node).collect();
    let expected: Vec<u64> = entry_of(&operator, ids[1])
        .await
        .holders
        .iter()
        .map(|h| h.node)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(holders, expected);
    assert!(reports[0].remnants.iter().all(|m| m.committed && !m.staged));
    assert!(reports[1].confirmed(), "{:?}", reports[1]);
    assert_eq!(reports[1].nodes_checked, 5);
    assert_eq!(
        reports[2].remnants,
        vec![kakera_client::verify::Remnant {
            node: 2,
            rack: config.node(2).unwrap().rack.clone(),
            committed: false,
            staged: true,
        }]
    );
    // A node that cannot be asked keeps an erasure from being confirmed.
    cluster.kill(4);
    let reports = auditor.check_erasure(&[unknown]).await.unwrap();
    assert!(!reports[0].confirmed());
    assert_eq!(
        reports[0]
            .unreachable
            .iter()
            .map(|(n, _, _)| *n)
            .collect::<Vec<_>>(),
        vec![4]
    );
    let (log, _) = operator
        .audit_log(AuditQuery::default(), 10_000)
        .await
        .unwrap();
    let checks = log
        .iter()
        .filter(|e| matches!(e.action, AuditAction::ErasureCheck { .. }))
        .count();
    assert_eq!(checks, 3);
}

async fn entry_of(c: &Client, id: RecordId) -> RecordEntry {
    c.list_all(ListFilter::All, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.id == id)
        .unwrap()
}
