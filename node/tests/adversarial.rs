//! P7 (hostile peers): holders of valid certificates send what an attacker would —
//! malformed, truncated, oversized and out-of-order frames; a replayed commit; a
//! commit claiming shares another gateway staged or shares never sent; reads under an
//! expired or revoked grant or another reader's ticket; client operations from a node
//! certificate; plain replicas (a benchmark cluster's baseline) on a real cluster. Each gets a clear refusal; throughout, every node stays up and keeps
//! answering the others, and nothing stored changes (the catalog compared before and
//! after, every record's shares verified by digest at the end).
//! (A node serving a wrong share, caught by its digest: `data_path.rs`,
//! `bad_and_missing_shares_are_skipped_and_reported`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::raw::{ask_on, connect, refused, send_bytes};
use common::{LocalCluster, clients, entries, leader_node, open_grant, wait_all_applied};
use kakera_client::NewRecord;
use kakera_proto::catalog::{Grant, GrantScope, Holder, ListFilter, RecordEntry};
use kakera_proto::{
    Date, Digest, ErrorKind, RecordId, RecordKind, RecordMeta, Request, Response, Role, StageItem,
    SubjectTag, codec,
};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn meta(n: u8) -> RecordMeta {
    RecordMeta {
        subject: SubjectTag([n; 32]),
        kind: RecordKind::Claim,
        source: "adversarial".into(),
        effective: Date::new(2026, 2, 1).unwrap(),
        data_kind: None,
    }
}

fn grant(job: &str, reader: &str, expires_at_ms: u64) -> Grant {
    Grant {
        job: job.into(),
        reader: reader.into(),
        scope: GrantScope::default(),
        expires_at_ms,
        approval: "IRB-adversarial".into(),
        created_at_ms: 0,
        created_by: String::new(),
        revoked: None,
    }
}

/// Every node answers a status request.
async fn all_up(cluster: &mut LocalCluster, operator: &kakera_client::Client, after: &str) {
    for id in cluster.ids.clone() {
        assert!(cluster.running(id), "node {id} died after {after}");
    }
    let answers = operator.connection().status_all().await;
    for (node, s) in answers {
        assert!(
            s.is_ok(),
            "node {} stopped answering after {after}: {s:?}",
            node.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_are_refused_and_nothing_stored_changes() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut cluster = common::start(dir.path(), 5).await;
    let (operator, gateway, reader) = clients(&cluster);
    open_grant(&operator, "adv-job", "anon-job").await;
    let ids = gateway
        .put_batch(
            (0..6u8)
                .map(|i| NewRecord {
                    meta: meta(i),
                    data: vec![i; 500 + usize::from(i)],
                })
                .collect(),
        )
        .await
        .unwrap();
    wait_all_applied(&operator).await;
    let before = entries(&operator).await;
    let leader = leader_node(&operator).await.unwrap();
    let leader_addr = cluster.addrs[leader as usize - 1];
    let leader_name = format!("node-{leader}");
    let gateway_files = cluster.identity("gateway", Role::Ingest, Some("dc"));
    let conn = connect(&gateway_files, leader_addr, &leader_name).await;

    // 1. Malformed frames, on one connection that stays usable throughout.
    let garbage: Vec<u8> = (0..64u8).map(|b| b.wrapping_mul(73) ^ 0x5a).collect();
    let bad_request = [ErrorKind::BadRequest, ErrorKind::TooLarge];
    let envelope = codec::encode(&common::raw::envelope(Request::Ping)).unwrap();
    let framed = |body: &[u8]| [&(body.len() as u32).to_be_bytes()[..], body].concat();
    let mut wrong_version = envelope.clone();
    wrong_version[0] = 0x7f;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", garbage),
        ("a length prefix cut short", vec![0, 0]),
        (
            "a frame shorter than its length",
            [&200u32.to_be_bytes()[..], &envelope[..10]].concat(),
        ),
        ("a 4 GiB length", [0xff, 0xff, 0xff, 0xf0, 1, 2, 3].to_vec()),
        ("an unknown format version", framed(&wrong_version)),
        (
            "trailing bytes inside the frame",
            framed(&[&envelope[..], &[0u8; 3][..]].concat()),
        ),
        ("share bytes before the request", framed(&[7u8; 300])),
    ];
    for (what, bytes) in cases {
        let answer = send_bytes(&conn, &bytes).await;
        // A stream too broken to answer may be closed; one that is answered gets a
        // refusal. Either way the connection and the node carry on.
        if answer.is_ok() {
            refused(&answer, &bad_request, what);
        }
        let pong = ask_on(&conn, Request::Ping, &[]).await;
        assert!(
            matches!(pong, Ok(Response::Pong { .. })),
            "after {what}: {pong:?}"
        );
    }
    // Staging whose trailer disagrees with the request: fewer bytes, more bytes.
    let share = kakera_shamir::split(b"sealed bytes", 3, 5).unwrap()[0].encode();
    let stage = |size_bytes: u64| Request::StageShares {
        items: vec![StageItem {
            record: RecordId([0xee; 16]),
            size_bytes,
        }],
    };
    let short = ask_on(&conn, stage(share.len() as u64 + 5), &share).await;
    refused(&short, &[ErrorKind::BadRequest], "a short trailer");
    let long = ask_on(&conn, stage(share.len() as u64 - 5), &share).await;
    refused(&long, &[ErrorKind::BadRequest], "a long trailer");
    // P1: plain replicas (the benchmark baseline, no secrecy) are refused by a cluster
    // that is not a benchmark cluster, at staging and at commit.
    let plain = kakera_proto::replica::encode(b"a record in the clear");
    let why = refused(
        &ask_on(&conn, stage(plain.len() as u64), &plain).await,
        &[ErrorKind::BadRequest],
        "staging a plain replica",
    );
    assert!(why.contains("not a valid share"), "{why}");
    let mut as_plain = before[0].clone();
    as_plain.committed_at_ms = 0;
    as_plain.id = RecordId([0xef; 16]);
    as_plain.k = 1;
    as_plain.holders.truncate(3);
    let why = refused(
        &ask_on(
            &conn,
            Request::CommitRecords {
                records: vec![as_plain],
            },
            &[],
        )
        .await,
        &[ErrorKind::BadRequest],
        "committing a plain replica",
    );
    assert!(why.contains("policy is 3 of 5"), "{why}");
    all_up(&mut cluster, &operator, "malformed frames").await;

    // 2. A replayed commit changes nothing; a replay with other content is refused.
    let mut replay = before[0].clone();
    let committed_at = replay.committed_at_ms;
    replay.committed_at_ms = 0;
    let again = ask_on(
        &conn,
        Request::CommitRecords {
            records: vec![replay.clone()],
        },
        &[],
    )
    .await;
    assert!(matches!(again, Ok(Response::Committed { .. })), "{again:?}");
    let mut altered = replay.clone();
    altered.meta.source = "forged".into();
    let forged = ask_on(
        &conn,
        Request::CommitRecords {
            records: vec![altered],
        },
        &[],
    )
    .await;
    let why = refused(&forged, &[ErrorKind::BadRequest], "an altered replay");
    assert!(why.contains("other content"), "{why}");
    let now_entry = entries(&operator).await.remove(0);
    assert_eq!(now_entry.id, replay.id);
    assert_eq!(
        now_entry.committed_at_ms, committed_at,
        "the replay re-committed"
    );

    // 3. Shares staged by another gateway cannot be claimed; shares never sent cannot
    // be named.
    let sealed = b"another gateway's sealed record".to_vec();
    let shares = kakera_shamir::split(&sealed, 3, 5).unwrap();
    let theirs = RecordId([0xcd; 16]);
    let other_gateway = cluster.identity("gateway-2", Role::Ingest, Some("dc"));
    for (i, s) in shares.iter().enumerate() {
        let c = connect(&other_gateway, cluster.addrs[i], &format!("node-{}", i + 1)).await;
        let bytes = s.encode();
        let req = Request::StageShares {
            items: vec![StageItem {
                record: theirs,
                size_bytes: bytes.len() as u64,
            }],
        };
        let staged = ask_on(&c, req, &bytes).await;
        assert!(matches!(staged, Ok(Response::Staged { .. })), "{staged:?}");
    }
    let entry_for = |id: RecordId| RecordEntry {
        id,
        meta: meta(40),
        sealed_len: sealed.len() as u64,
        sealed_digest: Digest::of(&sealed),
        k: 3,
        holders: shares
            .iter()
            .enumerate()
            .map(|(i, s)| Holder {
                node: i as u64 + 1,
                x: s.x(),
                digest: Digest::of(&s.encode()),
            })
            .collect(),
        committed_at_ms: 0,
    };
    let claim = ask_on(
        &conn,
        Request::CommitRecords {
            records: vec![entry_for(theirs)],
        },
        &[],
    )
    .await;
    let why = refused(
        &claim,
        &[ErrorKind::BadRequest],
        "claiming another's shares",
    );
    assert!(why.contains("another identity"), "{why}");
    let elsewhere = ask_on(
        &conn,
        Request::CommitRecords {
            records: vec![entry_for(RecordId([0xce; 16]))],
        },
        &[],
    )
    .await;
    let why = refused(&elsewhere, &[ErrorKind::BadRequest], "naming unsent shares");
    assert!(why.contains("no staged share"), "{why}");
    // The rightful gateway still commits its record.
    let rightful = connect(&other_gateway, leader_addr, &leader_name).await;
    let own = ask_on(
        &rightful,
        Request::CommitRecords {
            records: vec![entry_for(theirs)],
        },
        &[],
    )
    .await;
    assert!(matches!(own, Ok(Response::Committed { .. })), "{own:?}");
    all_up(&mut cluster, &operator, "claims").await;

    // 4. Reads: another reader's ticket, an expired grant, a revoked grant.
    let hsz = cluster.identity("anon-job", Role::Reader, Some("hsz"));
    let reader_conn = connect(&hsz, leader_addr, &leader_name).await;
    let opened = ask_on(
        &reader_conn,
        Request::OpenRead {
            job: "adv-job".into(),
            records: vec![ids[0]],
        },
        &[],
    )
    .await;
    let Ok(Response::ReadTicket { ticket, .. }) = opened else {
        panic!("the granted reader could not open a ticket: {opened:?}")
    };
    let intruder = cluster.identity("other-reader", Role::Reader, Some("hsz"));
    for (who, files) in [
        ("another reader", &intruder),
        ("the gateway", &gateway_files),
    ] {
        for (i, addr) in cluster.addrs.iter().enumerate() {
            let c = connect(files, *addr, &format!("node-{}", i + 1)).await;
            let fetch = ask_on(
                &c,
                Request::FetchShares {
                    ticket: ticket.id,
                    records: vec![ids[0]],
                },
                &[],
            )
            .await;
            refused(&fetch, &[ErrorKind::Forbidden], who);
        }
    }
    // The holder may not widen its ticket to other records.
    let widen = ask_on(
        &connect(&hsz, cluster.addrs[0], "node-1").await,
        Request::FetchShares {
            ticket: ticket.id,
            records: vec![ids[1]],
        },
        &[],
    )
    .await;
    refused(
        &widen,
        &[ErrorKind::Forbidden, ErrorKind::BadRequest],
        "a record outside the ticket",
    );
    operator
        .create_grant(grant("short-job", "anon-job", now_ms() + 1_500))
        .await
        .unwrap();
    operator
        .create_grant(grant("revoked-job", "anon-job", now_ms() + 3_600_000))
        .await
        .unwrap();
    assert!(reader.get("revoked-job", ids[2]).await.is_ok());
    operator
        .revoke_grant("revoked-job", "study withdrawn")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    for job in ["short-job", "revoked-job"] {
        let err = reader.get(job, ids[2]).await.unwrap_err();
        assert!(
            matches!(
                &err,
                kakera_client::ClientError::Net(kakera_net::NetError::Refused {
                    kind: ErrorKind::Forbidden,
                    ..
                })
            ),
            "{job}: {err}"
        );
    }
    // A reader learns its own grants (its job's scope, revoked ones marked) and
    // nothing of another reader's.
    operator
        .create_grant(grant("other-job", "other-reader", now_ms() + 3_600_000))
        .await
        .unwrap();
    let mut own: Vec<String> = reader
        .grants()
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.job)
        .collect();
    own.sort();
    assert_eq!(own, ["adv-job", "revoked-job", "short-job"]);
    let all = operator.grants().await.unwrap();
    assert!(all.iter().any(|g| g.job == "other-job"), "{all:?}");
    all_up(&mut cluster, &operator, "reads").await;

    // 5. A node certificate asks for client operations (its own name, and another's).
    for name in ["node-2", "node-9"] {
        let node_files = cluster.identity(name, Role::Node, None);
        let c = connect(&node_files, leader_addr, &leader_name).await;
        let asks = [
            Request::OpenRead {
                job: "adv-job".into(),
                records: vec![ids[0]],
            },
            Request::CommitRecords {
                records: vec![before[1].clone()],
            },
            stage(share.len() as u64),
            Request::CreateGrant {
                grant: grant("node-job", name, now_ms() + 60_000),
            },
            Request::FetchShares {
                ticket: ticket.id,
                records: vec![ids[0]],
            },
            Request::List {
                filter: ListFilter::All,
                after: None,
                limit: 10,
            },
        ];
        for body in asks {
            let trailer = if matches!(body, Request::StageShares { .. }) {
                share.clone()
            } else {
                Vec::new()
            };
            let what = format!("{name}: {:?}", body.operation());
            let answer = ask_on(&c, body, &trailer).await;
            refused(&answer, &[ErrorKind::Forbidden], &what);
        }
    }
    all_up(&mut cluster, &operator, "node certificates").await;

    // Nothing stored changed: the catalog holds what it held plus the one record its
    // own gateway committed, and every share still matches its digest.
    wait_all_applied(&operator).await;
    let after = entries(&operator).await;
    let expected: Vec<RecordEntry> = {
        let mut e = before.clone();
        e.extend(after.iter().filter(|a| a.id == theirs).cloned());
        e.sort_by_key(|e| e.id);
        e
    };
    let mut got = after.clone();
    got.sort_by_key(|e| e.id);
    assert_eq!(got, expected);
    let auditor = common::auditor(&cluster);
    let all: Vec<RecordId> = before.iter().map(|e| e.id).collect();
    let reports = auditor.verify(&all, true).await.unwrap();
    for r in reports {
        assert!(r.findings.is_empty(), "{}: {:?}", r.record, r.findings);
        assert_eq!(r.good_shares, 5);
    }
    let read = reader.get_batch("adv-job", &ids).await.unwrap();
    assert_eq!(read.records.len(), ids.len(), "{:?}", read.failed);
    for id in cluster.ids.clone() {
        let log = cluster.log(id);
        assert!(!log.contains("panicked"), "node {id} panicked: {log}");
    }
}

/// P1 (issue 25): a node built without the `bench-baseline` feature (every release
/// package) does not start on a config that asks for plain replicas, benchmark
/// cluster or not, so whatever its config says it never takes one. (Staging or
/// committing a plain replica on a running cluster is refused above.)
#[cfg(not(feature = "bench-baseline"))]
#[test]
fn a_default_node_will_not_run_a_plain_replica_config() {
    let dir = tempfile::TempDir::new().unwrap();
    let cluster = LocalCluster::prepare_with(dir.path(), 5, "[baseline]\nplain_replicas = 3\n");
    let path = dir.path().join("cluster.toml");
    for id in ["proc-test", "bench-proc-test"] {
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "cluster_id = \"proc-test\"",
            &format!("cluster_id = \"{id}\""),
        );
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kakera-node"))
            .arg("--config")
            .arg(&path)
            .arg("--node")
            .arg("1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "cluster id {id}: {stderr}");
        assert!(
            stderr.contains("bench-baseline"),
            "cluster id {id}: {stderr}"
        );
    }
    drop(cluster);
}
