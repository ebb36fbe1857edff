//! Auditors verify shares on six `kakera-node` processes (racks a: 1, 2, 6; b: 3, 4;
//! c: 5): each injected fault is named exactly, with its node and rack — a share
//! deleted, a byte flipped, another record's share swapped in, a share moved to a node
//! in a rack that already holds k - 1 shares, a node stopped — deep verification checks
//! the polynomial and the sealed digest without the zone key, and every run is in the
//! audit log. Guards P1, P3, P5.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

mod common;

use std::collections::BTreeMap;

use common::{clients, start, wait_all_applied};
use kakera_client::verify::Finding;
use kakera_client::{Client, NewRecord};
use kakera_proto::audit::{AuditAction, AuditQuery};
use kakera_proto::catalog::{ListFilter, RecordEntry};
use kakera_proto::{Date, RecordKind, RecordMeta, Request, Role, SubjectTag};
use rocksdb::DB;

fn shares_cf(db: &DB) -> &rocksdb::ColumnFamily {
    kakera_node::store::cf(db, kakera_node::store::CF_SHARES).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_injected_fault_is_named_with_its_node_and_rack() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut cluster = start(dir.path(), 6).await;
    let config = cluster.config();
    let (operator, ingest, _reader) = clients(&cluster);
    let auditor = Client::connect(
        config.clone(),
        &cluster.identity("auditor", Role::Auditor, None),
    )
    .unwrap();
    let ids = ingest
        .put_batch(
            (0..8u8)
                .map(|i| NewRecord {
                    meta: RecordMeta {
                        subject: SubjectTag([i; 32]),
                        kind: RecordKind::Checkup,
                        source: "1310000001".into(),
                        effective: Date::new(2025, 4, 1).unwrap(),
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
