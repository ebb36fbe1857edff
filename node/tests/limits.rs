//! P7 (hostile input): every `[limits]` entry of the cluster config is enforced by a
//! real `kakera-node`, each tested with a request just over it. The answer is a clear
//! error naming the limit, and the node keeps answering (the same peer, on the same or
//! a new connection, and everyone else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::LocalCluster;
use common::raw::{ask_on, connect, refused, stage_request};
use kakera_net::TlsFiles;
use kakera_proto::catalog::{EraseTarget, Holder, RecordEntry};
use kakera_proto::record::{RecordKind, RecordMeta};
use kakera_proto::{Date, Digest, ErrorKind, RecordId, Request, Response, Role, SubjectTag};

/// A stream that has sent half a frame header and waits: it holds a stream and a
/// request slot on the node until dropped.
async fn hold(conn: &quinn::Connection) -> (quinn::SendStream, quinn::RecvStream) {
    let (mut send, recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0, 0]).await.unwrap();
    (send, recv)
}

/// A refusal of `kind` whose message names `names`.
fn refusal(r: Result<Response, String>, kind: ErrorKind, names: &str) -> String {
    let message = refused(&r, &[kind], names);
    assert!(
        message.contains(names),
        "the refusal should name {names}: {message}"
    );
    message
}

async fn pong(conn: &quinn::Connection) {
    match ask_on(conn, Request::Ping, &[]).await {
        Ok(Response::Pong { .. }) => {}
        other => panic!("the node stopped answering: {other:?}"),
    }
}

/// Starts node 1 of a five-node config with `limits` and waits until it answers.
async fn one_node(dir: &std::path::Path, limits: &str) -> (LocalCluster, TlsFiles, SocketAddr) {
    let mut cluster = LocalCluster::prepare_with(dir, 5, &format!("[limits]\n{limits}"));
    cluster.spawn(1);
    let addr = cluster.addrs[0];
    let gateway = cluster.identity("gateway", Role::Ingest, Some("dc"));
    let probe = cluster.client("probe", Role::Operator);
    let deadline = Instant::now() + Duration::from_secs(30);
    while probe.ask(addr, "node-1", Request::Ping).await.is_err() {
        assert!(Instant::now() < deadline, "{}", cluster.log(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (cluster, gateway, addr)
}

/// Shares of `count` records whose sealed bytes are `len` long.
fn shares(count: u8, len: usize) -> Vec<(RecordId, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let secret = vec![i; len];
            let share = kakera_shamir::split(&secret, 3, 5).unwrap().remove(0);
            (RecordId([i + 1; 16]), share.encode())
        })
        .collect()
}

fn entry(id: u8, sealed_len: u64) -> RecordEntry {
    RecordEntry {
        id: RecordId([id; 16]),
        meta: RecordMeta {
            subject: SubjectTag([1; 32]),
            kind: RecordKind::Claim,
            source: "limits-test".into(),
            effective: Date::new(2026, 1, 1).unwrap(),
            data_kind: None,
        },
        sealed_len,
        sealed_digest: Digest([0; 32]),
        k: 3,
        holders: (1..=5)
            .map(|i| Holder {
                node: i,
                x: i as u8,
                digest: Digest([i as u8; 32]),
            })
            .collect(),
        committed_at_ms: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_records_batches_and_requests_in_flight_are_bounded() {
    let dir = tempfile::TempDir::new().unwrap();
    let (cluster, gateway, addr) = one_node(
        dir.path(),
        "max_frame_bytes = 65536\nmax_streams_per_connection = 16\n\
         max_requests_per_connection = 4\nmax_record_bytes = 4096\nmax_batch_records = 8\n",
    )
    .await;
    let operator = connect(
        &cluster.identity("op", Role::Operator, None),
        addr,
        "node-1",
    )
    .await;
    let conn = connect(&gateway, addr, "node-1").await;

    // Frame: an envelope one kibibyte over 64 KiB.
    let reason = "x".repeat(65 * 1024);
    let body = Request::Erase {
        target: EraseTarget::Records(vec![RecordId([1; 16])]),
        reason,
    };
    refusal(
        ask_on(&operator, body, &[]).await,
        ErrorKind::TooLarge,
        "frame limit of 65536",
    );
    pong(&operator).await;

    // Batch: nine records where eight are allowed (lookup, commit, staging).
    let nine: Vec<RecordId> = (1..=9).map(|i| RecordId([i; 16])).collect();
    let lookup = Request::Lookup {
        records: nine.clone(),
        subjects: vec![],
    };
    refusal(
        ask_on(&conn, lookup, &[]).await,
        ErrorKind::TooLarge,
        "max_batch_records",
    );
    let commit = Request::CommitRecords {
        records: (1..=9).map(|i| entry(i, 100)).collect(),
    };
    refusal(
        ask_on(&conn, commit, &[]).await,
        ErrorKind::TooLarge,
        "max_batch_records",
    );
    let (request, data) = stage_request(&shares(9, 64));
    refusal(
        ask_on(&conn, request, &data).await,
        ErrorKind::TooLarge,
        "max_batch_records",
    );
    // Eight shares are staged.
    let (request, data) = stage_request(&shares(8, 64));
    match ask_on(&conn, request, &data).await {
        Ok(Response::Staged { digests }) => assert_eq!(digests.len(), 8),
        other => panic!("eight shares were not staged: {other:?}"),
    }

    // Record size: a share and a commit one byte over what 4096-byte records need.
    let big = shares(1, 4096 + 2048 + 1);
    let (request, data) = stage_request(&big);
    refusal(
        ask_on(&conn, request, &data).await,
        ErrorKind::TooLarge,
        "max_record_bytes",
    );
    let commit = Request::CommitRecords {
        records: vec![entry(1, 4096 + 1024 + 1)],
    };
    refusal(
        ask_on(&conn, commit, &[]).await,
        ErrorKind::TooLarge,
        "max_record_bytes",
    );
    // The client refuses such a record before sealing it.
    let client = kakera_client::Client::connect(cluster.config(), &gateway).unwrap();
    let meta = entry(1, 1).meta;
    let over = kakera_client::NewRecord {
        meta,
        data: vec![7; 4097],
    };
    let err = client.put(over).await.unwrap_err();
    assert!(err.to_string().contains("max_record_bytes"), "{err}");

    // Requests in flight: four held, the fifth is answered "busy" at once.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(hold(&conn).await);
    }
    let busy = tokio::time::timeout(Duration::from_secs(5), ask_on(&conn, Request::Ping, &[]))
        .await
        .expect("a busy connection is answered at once, not queued");
    refusal(busy, ErrorKind::Busy, "max_requests_per_connection");
    // Other connections, of the same identity too, are served meanwhile.
    pong(&operator).await;
    pong(&connect(&gateway, addr, "node-1").await).await;
    // Finishing the held requests frees the slots.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ask_on(&conn, Request::Ping, &[]).await {
            Ok(Response::Pong { .. }) => break,
            Ok(Response::Error(e)) if e.kind == ErrorKind::Busy => {}
            other => panic!("after the held requests: {other:?}"),
        }
        assert!(Instant::now() < deadline, "slots were never given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = cluster.log(1);
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_connections_and_staged_bytes_are_bounded() {
    let dir = tempfile::TempDir::new().unwrap();
    let (cluster, gateway, addr) = one_node(
        dir.path(),
        "max_streams_per_connection = 4\nmax_requests_per_connection = 4\n\
         max_connections_per_peer = 2\nmax_record_bytes = 8192\n\
         max_staged_bytes_per_identity = 16384\n",
    )
    .await;

    // Streams: with four open, a fifth cannot be opened until one closes (QUIC flow
    // control), and the node keeps serving other connections.
    let conn = connect(&gateway, addr, "node-1").await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(hold(&conn).await);
    }
    let fifth = tokio::time::timeout(Duration::from_millis(800), conn.open_bi()).await;
    assert!(fifth.is_err(), "a fifth stream opened past the limit of 4");
    let operator = connect(
        &cluster.identity("op", Role::Operator, None),
        addr,
        "node-1",
    )
    .await;
    pong(&operator).await;
    let (mut send, _recv) = held.pop().unwrap();
    send.reset(0u32.into()).unwrap();
    drop((send, _recv));
    let opened = tokio::time::timeout(Duration::from_secs(10), ask_on(&conn, Request::Ping, &[]))
        .await
        .expect("a stream opens once one closes");
    assert!(matches!(opened, Ok(Response::Pong { .. })), "{opened:?}");
    drop(held);

    // Connections: the gateway holds two (conn and a second); a third is closed with
    // a reason naming the limit; once one closes, a new one is served.
    let second = connect(&gateway, addr, "node-1").await;
    pong(&second).await;
    // The third, through the client library's peer: its error carries the node's
    // reason for closing the connection.
    let third = common::Client::new(&gateway);
    let err = third.ask(addr, "node-1", Request::Ping).await.unwrap_err();
    assert!(
        err.to_string().contains("max_connections_per_peer"),
        "{err}"
    );
    pong(&operator).await;
    second.close(0u32.into(), b"done");
    let deadline = Instant::now() + Duration::from_secs(10);
    let fourth = loop {
        let c = connect(&gateway, addr, "node-1").await;
        if let Ok(Response::Pong { .. }) = ask_on(&c, Request::Ping, &[]).await {
            break c;
        }
        assert!(Instant::now() < deadline, "the slot was never given back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Staged bytes: three shares of 5000-byte records fit in 16 KiB, a fourth does not;
    // another identity still stages.
    let items = shares(4, 5000);
    let (request, data) = stage_request(&items[..3]);
    match ask_on(&fourth, request, &data).await {
        Ok(Response::Staged { digests }) => assert_eq!(digests.len(), 3),
        other => panic!("three shares were not staged: {other:?}"),
    }
    let (request, data) = stage_request(&items[3..]);
    refusal(
        ask_on(&fourth, request, &data).await,
        ErrorKind::TooLarge,
        "max_staged_bytes_per_identity",
    );
    let other = connect(
        &cluster.identity("gateway-2", Role::Ingest, Some("dc")),
        addr,
        "node-1",
    )
    .await;
    let (request, data) = stage_request(&items[3..]);
    match ask_on(&other, request, &data).await {
        Ok(Response::Staged { digests }) => assert_eq!(digests.len(), 1),
        other => panic!("another identity could not stage: {other:?}"),
    }
    let log = cluster.log(1);
    assert!(!log.contains("panicked"), "{log}");
}
