//! Partitions on real processes (P4): five `kakera-node` processes, each behind a UDP
//! fault proxy that drops the datagrams of cut node-to-node links. The leader is
//! isolated: it never commits (a commit sent to it is not acknowledged and never
//! appears); the majority elects a new leader and keeps storing; after healing, every
//! node converges on the majority's history and every acknowledged record reads back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::proxy::FaultProxy;
use common::{LocalCluster, clients, entries, leader_node, open_grant, run, wait_all_applied};
use kakera_client::NewRecord;
use kakera_proto::catalog::{Holder, RecordEntry};
use kakera_proto::{
    Date, Digest, RecordId, RecordKind, RecordMeta, Request, Response, Role, SubjectTag,
};

fn record(i: u8) -> NewRecord {
    NewRecord {
        meta: RecordMeta {
            subject: SubjectTag([i; 32]),
            kind: RecordKind::Ssmix2,
            source: "1310000001".into(),
            effective: Date::new(2025, 1, 2).unwrap(),
            data_kind: None,
        },
        data: vec![i; 900 + usize::from(i)],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_never_commits_and_the_majority_carries_on() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut cluster = LocalCluster::prepare(dir.path(), 5);
    let proxy = FaultProxy::start(&cluster.behind_proxies()).await;
    let cluster = run(cluster).await;
    let (operator, ingest, reader) = clients(&cluster);
    open_grant(&operator, "study-p", "anon-job").await;
    let mut ids = ingest
        .put_batch((0..6u8).map(record).collect())
        .await
        .unwrap();
    wait_all_applied(&operator).await;

    let old = leader_node(&operator).await.unwrap();
    let raw = cluster.client("gateway-raw", Role::Ingest);
    let old_addr = cluster.addrs[old as usize - 1];
    let status = raw.status(old_addr, &format!("node-{old}")).await.unwrap();
    let (old_term, old_committed) = (status.raft.term, status.raft.committed);
    proxy.isolate(old);

    // The isolated leader is asked to commit a record (the ingest role, a valid
    // placement, its own share staged there first): it cannot reach a majority, so
    // it never acknowledges.
    let lost = RecordId::from_parts(1, [9; 10]);
    let share = kakera_shamir::split(b"sealed bytes of the lost record", 3, 5)
        .unwrap()
        .remove(0)
        .encode();
    let staged = raw
        .ask_with(
            old_addr,
            &format!("node-{old}"),
            Request::StageShares {
                items: vec![kakera_proto::StageItem {
                    record: lost,
                    size_bytes: share.len() as u64,
                }],
            },
            &share,
        )
        .await;
    assert!(matches!(staged, Ok(Response::Staged { .. })), "{staged:?}");
    let entry = RecordEntry {
        id: lost,
        meta: record(99).meta,
        k: 3,
        holders: (1..=5u64)
            .map(|n| Holder {
                node: n,
                x: n as u8,
                digest: if n == old {
                    Digest::of(&share)
                } else {
                    Digest([n as u8; 32])
                },
            })
            .collect(),
        sealed_digest: Digest([0; 32]),
        sealed_len: 100,
        committed_at_ms: 0,
    };
    let answer = raw
        .ask(
            old_addr,
            &format!("node-{old}"),
            Request::CommitRecords {
                records: vec![entry],
            },
        )
        .await;
    assert!(
        !matches!(answer, Ok(Response::Committed { .. })),
        "the isolated leader acknowledged a commit: {answer:?}"
    );

    // The majority elects a new leader in a later term and keeps storing.
    ids.extend(
        ingest
            .put_batch((6..12u8).map(record).collect())
            .await
            .unwrap(),
    );
    let new = leader_node(&operator).await.unwrap();
    assert_ne!(new, old);
    // The old leader committed nothing meanwhile.
    let status = raw.status(old_addr, &format!("node-{old}")).await.unwrap();
    assert_eq!(
        status.raft.committed, old_committed,
        "the minority committed"
    );
    assert!(proxy.dropped() > 0, "the proxy cut nothing");

    // Healed: one leader in a term above the old one; every node applies the same
    // history; the record sent to the isolated leader is nowhere.
    proxy.heal();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answers = operator.connection().status_all().await;
        let leaders: Vec<_> = answers
            .iter()
            .filter_map(|(n, s)| s.as_ref().ok().map(|s| (n.id, s)))
            .filter(|(_, s)| s.raft.state == "Leader")
            .collect();
        let converged = answers.iter().all(|(_, s)| s.is_ok())
            && leaders.len() == 1
            && leaders[0].1.raft.term > old_term;
        if converged {
            break;
        }
        assert!(Instant::now() < deadline, "no convergence: {answers:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_all_applied(&operator).await;
    let listed: Vec<RecordId> = entries(&operator).await.iter().map(|e| e.id).collect();
    assert!(!listed.contains(&lost), "a minority's write became visible");
    let read = reader.get_batch("study-p", &ids).await.unwrap();
    assert!(read.failed.is_empty(), "{:?}", read.failed);
    assert_eq!(read.records.len(), 12);
    for r in &read.records {
        let i = r.data[0];
        assert_eq!(r.data.as_slice(), record(i).data.as_slice());
    }
}
