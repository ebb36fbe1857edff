//! Staging shares on a real `kakera-node` over QUIC: only the ingest role may, every
//! share must be a valid share, the answer carries each share's digest, and an
//! acknowledged share is on disk even if the node is killed right after (P4: an
//! acknowledged write survives a crash at any instant; P7: roles enforced per request,
//! bad input gets a clear error).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::LocalCluster;
use common::raw::stage_request;
use kakera_node::shares::ShareStore;
use kakera_proto::{Digest, ErrorKind, RecordId, Request, Response, Role};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_stages_shares_durably_and_everyone_else_is_refused() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut cluster = LocalCluster::prepare(dir.path(), 5);
    cluster.spawn(1);
    let addr = cluster.addrs[0];
    let ingest = cluster.client("gateway-1", Role::Ingest);
    // Wait until the node listens.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ingest.ask(addr, "node-1", Request::Ping).await.is_err() {
        assert!(Instant::now() < deadline, "{}", cluster.log(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let shares = kakera_shamir::split(b"sealed record bytes, not plaintext", 3, 5).unwrap();
    let items: Vec<(RecordId, Vec<u8>)> = shares
        .iter()
        .enumerate()
        .map(|(i, s)| (RecordId([i as u8 + 1; 16]), s.encode()))
        .collect();
    let (request, data) = stage_request(&items);
    let answer = ingest
        .ask_with(addr, "node-1", request, &data)
        .await
        .unwrap();
    let Response::Staged { digests } = answer else {
        panic!("not staged: {answer:?}")
    };
    let expected: Vec<Digest> = items.iter().map(|(_, s)| Digest::of(s)).collect();
    assert_eq!(digests, expected);

    // Other roles may not stage.
    for role in [Role::Reader, Role::Auditor, Role::Operator, Role::Node] {
        let c = cluster.client(&format!("not-ingest-{role}"), role);
        let (request, data) = stage_request(&items[..1]);
        match c.ask_with(addr, "node-1", request, &data).await.unwrap() {
            Response::Error(e) => assert_eq!(e.kind, ErrorKind::Forbidden, "{role}"),
            other => panic!("{role} staged: {other:?}"),
        }
    }
    // Bad input: not a share, a record twice, nothing at all, fewer bytes than
    // announced.
    let mut corrupt = items[0].clone();
    corrupt.1[20] ^= 0xff;
    let mut short = stage_request(&items[..1]);
    short.1.pop();
    // Issue 22 (P1): shares split under another threshold (a faulty gateway's 2 of
    // 5) or with an x beyond n are refused, naming the policy.
    let two_of_five = kakera_shamir::split(b"sealed record bytes, not plaintext", 2, 5).unwrap();
    let three_of_seven = kakera_shamir::split(b"sealed record bytes, not plaintext", 3, 7).unwrap();
    for share in [&two_of_five[0], &three_of_seven[6]] {
        let (request, data) = stage_request(&[(RecordId([0xee; 16]), share.encode())]);
        match ingest
            .ask_with(addr, "node-1", request, &data)
            .await
            .unwrap()
        {
            Response::Error(e) => {
                assert_eq!(e.kind, ErrorKind::BadRequest);
                assert!(e.message.contains("policy is 3 of 5"), "{}", e.message);
            }
            other => panic!("a share outside the policy was staged: {other:?}"),
        }
    }
    let bad = [
        stage_request(&[corrupt]),
        stage_request(&[items[1].clone(), items[1].clone()]),
        stage_request(&[]),
        short,
    ];
    for (request, data) in bad {
        match ingest
            .ask_with(addr, "node-1", request, &data)
            .await
            .unwrap()
        {
            Response::Error(e) => assert_eq!(e.kind, ErrorKind::BadRequest, "{}", e.message),
            other => panic!("bad staging accepted: {other:?}"),
        }
    }

    // kill -9 right after the acknowledgement: the shares are on disk.
    cluster.kill(1);
    let db = kakera_node::store::open(&dir.path().join("data/node-1/db")).unwrap();
    let store = ShareStore::new(db);
    for ((record, share), digest) in items.iter().zip(&digests) {
        let staged = store.staged(record).unwrap().unwrap();
        assert_eq!(&staged.digest, digest);
        assert_eq!(&staged.bytes, share);
        assert!(store.committed(record).unwrap().is_none());
    }
}
