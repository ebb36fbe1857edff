//! Operations (issue 9): a cluster backup is one Raft entry at which every node writes
//! its part, per rack, so no rack's backup location holds k shares of any record
//! (P1); a restore builds a fresh cluster from the parts that serves every record of
//! the backup byte for byte, nothing written after it, with the audit chain intact
//! and one `restored` entry (P3, P5).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{LocalCluster, auditor, clients, entries, meta, open_grant, run};
use kakera_client::NewRecord;
use kakera_node::store::{CF_SHARES, cf, open_read_only};
use kakera_proto::audit::{AuditAction, AuditQuery};
use kakera_proto::backup::PartState;
use kakera_proto::catalog::ListFilter;
use kakera_proto::{RecordId, RecordKind};

fn record(i: u32) -> NewRecord {
    NewRecord {
        meta: meta(RecordKind::Claim, "backup-test", (i % 7) as u8),
        // Sizes from 100 B to ~300 KiB.
        data: (0..(100 + (i as usize * 7919) % 300_000))
            .map(|j| (j as u32).wrapping_mul(i + 13) as u8)
            .collect(),
    }
}

/// Every file under `dir`.
fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// The record ids whose shares one part's checkpoint holds.
fn part_records(part: &std::path::Path) -> Vec<RecordId> {
    let db = open_read_only(&part.join("checkpoint")).unwrap();
    let mut out = Vec::new();
    for item in db.iterator_cf(cf(&db, CF_SHARES).unwrap(), rocksdb::IteratorMode::Start) {
        out.push(RecordId(item.unwrap().0.as_ref().try_into().unwrap()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_as_a_fresh_cluster_and_no_location_holds_k_shares() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = run(LocalCluster::prepare_with(
        dir.path(),
        5,
        // Shares of 100 KiB and more live in files beside the database (issue
        // 24.4): about two thirds of these records, the rest inline.
        "[backup]\nroot = \"backups\"\n[staging]\nfile_share_min_bytes = 102400\n",
    ))
    .await;
    let (operator, gateway, reader) = clients(&cluster);
    open_grant(&operator, "backup-job", "anon-job").await;
    let originals: BTreeMap<RecordId, Vec<u8>> = {
        let records: Vec<NewRecord> = (0..40).map(record).collect();
        let data: Vec<Vec<u8>> = records.iter().map(|r| r.data.clone()).collect();
        let ids = gateway.put_batch(records).await.unwrap();
        ids.into_iter().zip(data).collect()
    };

    // An operator's directory must stay under the root.
    let refused = operator.backup("../escape", Duration::from_secs(5)).await;
    assert!(refused.is_err(), "{refused:?}");

    let report = operator
        .backup("nightly/b1", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(report.complete(), "{report:#?}");
    let mut digests = BTreeSet::new();
    let mut shares = 0;
    for p in &report.parts {
        let PartState::Done(m) = &p.state else {
            panic!("{p:?}")
        };
        assert_eq!(m.log_index, report.log_index);
        digests.insert(m.catalog_digest.clone());
        shares += m.shares;
    }
    assert_eq!(digests.len(), 1, "every part holds the same catalog");
    assert_eq!(shares, 40 * 5);
    // Positive control: the parts carry share files, not only inline values.
    let part_files: usize = walk_files(&dir.path().join("backups"))
        .iter()
        .filter(|p| {
            p.to_string_lossy()
                .contains(kakera_node::share_files::FILES_DIR)
        })
        .count();
    assert!(
        part_files >= 40 * 5 / 2,
        "{part_files} share files in the parts"
    );

    // Written after the backup: not in it.
    let later = gateway.put(record(1000)).await.unwrap();

    // Per rack: each location holds at most max_shares_per_rack (< k) shares of any
    // record, and every record's n shares are somewhere.
    let config = cluster.config();
    let root = dir.path().join("backups/nightly/b1");
    let mut everywhere: BTreeMap<RecordId, usize> = BTreeMap::new();
    for rack in &config.racks {
        let mut per_record: BTreeMap<RecordId, usize> = BTreeMap::new();
        for node in config.nodes.iter().filter(|n| &n.rack == rack) {
            for id in part_records(&root.join(rack).join(&node.name)) {
                *per_record.entry(id).or_default() += 1;
                *everywhere.entry(id).or_default() += 1;
            }
        }
        let most = per_record.values().copied().max().unwrap_or(0);
        assert!(
            most <= usize::from(config.policy.max_shares_per_rack)
                && most < usize::from(config.policy.k),
            "rack {rack} holds {most} shares of one record"
        );
    }
    assert_eq!(everywhere.len(), 40);
    assert!(everywhere.values().all(|&c| c == 5));
    assert!(!everywhere.contains_key(&later));

    // The cluster is lost: every node stops and its database goes.
    for id in cluster.ids.clone() {
        cluster.terminate(id);
    }
    for id in cluster.ids.clone() {
        let data = dir.path().join(format!("data/node-{id}"));
        for sub in ["db", "snapshots", "backup-checkpoints"] {
            let _ = std::fs::remove_dir_all(data.join(sub));
        }
    }

    // Restore every node from its own rack's part, offline.
    let restore = |id: u64| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kakera-node"))
            .arg("--config")
            .arg(&cluster.config_path)
            .arg("--node")
            .arg(id.to_string())
            .arg("--restore-from")
            .arg(&root)
            .output()
            .unwrap()
    };
    let mut restored = 0;
    for id in cluster.ids.clone() {
        let out = restore(id);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["log_index"], report.log_index);
        assert_eq!(json["skipped"], 0);
        assert_eq!(json["missing"], 0);
        assert!(digests.contains(json["catalog_digest"].as_str().unwrap()));
        restored += json["shares"].as_u64().unwrap();
    }
    assert_eq!(restored, 40 * 5);
    // A second restore onto a restored node is refused: it never overwrites.
    let again = restore(1);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds a database"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // The restored cluster starts, elects, and serves every backed-up record.
    let cluster = run(cluster).await;
    let (operator, gateway, reader2) = clients(&cluster);
    drop(reader);
    let listed: BTreeSet<RecordId> = entries(&operator).await.iter().map(|e| e.id).collect();
    assert_eq!(listed, originals.keys().copied().collect::<BTreeSet<_>>());
    let ids: Vec<RecordId> = originals.keys().copied().collect();
    let read = reader2.get_batch("backup-job", &ids).await.unwrap();
    assert!(read.failed.is_empty(), "{:?}", read.failed.len());
    assert!(read.bad_shares.is_empty(), "{:?}", read.bad_shares);
    for r in &read.records {
        assert!(originals[&r.id] == *r.data, "record {} differs", r.id);
    }
    // Every record verifies deep: all five shares, on one polynomial.
    let audit = auditor(&cluster);
    let reports = audit.verify(&ids, true).await.unwrap();
    assert!(
        reports.iter().all(|r| r.ok() && r.good_shares == 5),
        "{reports:?}"
    );

    // The audit chain runs on unbroken through the restore.
    assert!(audit.verify_audit_log().await.unwrap().is_ok());
    let (log, _) = audit
        .audit_log(AuditQuery::default(), usize::MAX)
        .await
        .unwrap();
    let restored_at = log
        .iter()
        .position(|e| matches!(e.action, AuditAction::Restored { .. }))
        .expect("a restored entry");
    assert!(matches!(
        log[restored_at - 1].action,
        AuditAction::Backup { .. }
    ));

    // And it takes new records.
    let id = gateway.put(record(2000)).await.unwrap();
    let back = reader2.get("backup-job", id).await.unwrap();
    assert_eq!(back.data.as_slice(), record(2000).data.as_slice());
    let all = operator.list_all(ListFilter::All, 1000).await.unwrap();
    assert_eq!(all.len(), 41);
}
