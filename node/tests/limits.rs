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

/// Issue 22 (P7, memory): request bytes one identity has in flight are bounded by
/// `max_request_bytes_per_identity`. A stream that announces a large envelope and
/// stalls holds its reservation; a second one past the limit is answered busy at
/// once, naming the limit, while another identity is served; once the stalled stream
/// goes, the bytes are given back. Share bytes announced and never sent are dropped
/// after their deadline, and an error never echoes an unbounded caller string.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bytes_in_flight_are_bounded_per_identity() {
    let dir = tempfile::TempDir::new().unwrap();
    let (cluster, gateway, addr) = one_node(
        dir.path(),
        "max_frame_bytes = 1048576\nmax_record_bytes = 65536\n\
         max_request_bytes_per_identity = 1114112\n",
    )
    .await;
    let conn = connect(&gateway, addr, "node-1").await;

    // 1 MiB announced, ten bytes sent, then nothing: the node holds 1 MiB for it.
    let (mut stalled, _stalled_recv) = conn.open_bi().await.unwrap();
    stalled
        .write_all(&(1_048_576u32).to_be_bytes())
        .await
        .unwrap();
    stalled.write_all(&[0; 10]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The same identity on a second connection: another 1 MiB does not fit.
        let second = connect(&gateway, addr, "node-1").await;
        let mut frame = (1_048_576u32).to_be_bytes().to_vec();
        frame.extend(std::iter::repeat_n(0u8, 1_048_576));
        match common::raw::send_bytes(&second, &frame).await {
            Ok(Response::Error(e)) if e.kind == ErrorKind::Busy => {
                assert!(
                    e.message.contains("max_request_bytes_per_identity"),
                    "{}",
                    e.message
                );
                break;
            }
            // The stalled stream's header may not have reached the node yet.
            other => assert!(
                Instant::now() < deadline,
                "a second megabyte in flight was taken: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Another identity is served meanwhile.
    let operator = connect(
        &cluster.identity("op", Role::Operator, None),
        addr,
        "node-1",
    )
    .await;
    pong(&operator).await;
    // The stalled stream goes: its megabyte comes back, and the same frame is read
    // (and refused for what it is, not for the bytes in flight).
    stalled.reset(0u32.into()).unwrap();
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut frame = (1_048_576u32).to_be_bytes().to_vec();
        frame.extend(std::iter::repeat_n(0u8, 1_048_576));
        match common::raw::send_bytes(&conn, &frame).await {
            Ok(Response::Error(e)) if e.kind == ErrorKind::BadRequest => break,
            other => assert!(
                Instant::now() < deadline,
                "the reservation was never given back: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Share bytes announced and never sent: refused after their deadline (10 s plus a
    // second per MiB), and the bytes are free again.
    let items = shares(1, 60_000);
    let (request, _data) = stage_request(&items);
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    kakera_proto::frame::write_frame(
        &mut send,
        &common::raw::envelope(request),
        kakera_proto::frame::DEFAULT_MAX_FRAME_BYTES,
    )
    .await
    .unwrap();
    let started = Instant::now();
    let answer: Response = tokio::time::timeout(
        Duration::from_secs(30),
        kakera_proto::frame::read_frame(&mut recv, kakera_proto::frame::DEFAULT_MAX_FRAME_BYTES),
    )
    .await
    .expect("the node gave up waiting for the share bytes")
    .unwrap()
    .unwrap();
    refused(
        &Ok(answer),
        &[ErrorKind::BadRequest],
        "did not arrive within",
    );
    assert!(started.elapsed() >= Duration::from_secs(10));
    drop((send, recv));

    // A wrong cluster id of 100 KiB is not echoed back whole.
    let mut env = common::raw::envelope(Request::Ping);
    env.cluster_id = "c".repeat(100 * 1024);
    let bytes = kakera_proto::codec::encode(&env).unwrap();
    let mut frame = (bytes.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&bytes);
    match common::raw::send_bytes(&operator, &frame).await {
        Ok(Response::Error(e)) => {
            assert_eq!(e.kind, ErrorKind::WrongCluster);
            assert!(e.message.len() < 512, "{} bytes echoed", e.message.len());
        }
        other => panic!("a wrong cluster id was not refused: {other:?}"),
    }
    let log = cluster.log(1);
    assert!(!log.contains("panicked"), "{log}");
}

/// The node's resident memory, as it reports it.
async fn node_rss(conn: &quinn::Connection) -> u64 {
    match ask_on(conn, Request::Status, &[]).await {
        Ok(Response::Status(s)) => s.usage.rss_bytes,
        other => panic!("no status: {other:?}"),
    }
}

/// Issue 22 (P7, memory): the attack that took a node from 75 MiB to 2.1 GiB, 32
/// connections of one identity with 128 streams each announcing a 16 MiB envelope
/// and sending the first 256 KiB of it, now grows the node's resident memory by
/// less than 256 MiB (the default `max_request_bytes_per_identity` is 192 MiB;
/// frame bodies grow with the bytes received). Before, each stream's announced
/// length was allocated and filled as it came: 1 GiB here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_frames_from_one_identity_hold_bounded_memory() {
    let dir = tempfile::TempDir::new().unwrap();
    let (cluster, gateway, addr) = one_node(dir.path(), "").await;
    let operator = connect(
        &cluster.identity("op", Role::Operator, None),
        addr,
        "node-1",
    )
    .await;
    let before = node_rss(&operator).await;
    let chunk = vec![7u8; 256 * 1024];
    let mut held = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..32 {
        let conn = connect(&gateway, addr, "node-1").await;
        for _ in 0..128 {
            let (mut send, recv) = conn.open_bi().await.unwrap();
            send.write_all(&(16u32 << 20).to_be_bytes()).await.unwrap();
            // A stream refused for the bytes in flight is stopped by the node; the
            // write then fails, which is the point.
            let _ = tokio::time::timeout(Duration::from_millis(200), send.write_all(&chunk)).await;
            held.push((send, recv));
        }
        conns.push(conn);
    }
    // Everything sent has arrived or been refused; the streams are still open.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = node_rss(&operator).await;
    let grown = during.saturating_sub(before);
    assert!(
        grown < 256 << 20,
        "the node grew by {} MiB ({} -> {} MiB)",
        grown >> 20,
        before >> 20,
        during >> 20
    );
    pong(&operator).await;
    drop(held);
    drop(conns);
    let log = cluster.log(1);
    assert!(!log.contains("panicked"), "{log}");
}
