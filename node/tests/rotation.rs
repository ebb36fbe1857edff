//! Issue 22 (no stale identity): a node picks up a renewed certificate and key from
//! disk without a restart, and a connection lives no longer than its peer's
//! certificate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::raw::{ask_on, connect};
use common::{clients, open_grant, start};
use kakera_client::NewRecord;
use kakera_proto::{Date, RecordKind, RecordMeta, Request, Response, Role, SubjectTag};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The leaf certificate `conn`'s peer presented.
fn presented(conn: &quinn::Connection) -> Vec<u8> {
    let certs = conn
        .peer_identity()
        .unwrap()
        .downcast::<Vec<CertificateDer<'static>>>()
        .unwrap();
    certs[0].to_vec()
}

fn record(i: u64) -> NewRecord {
    NewRecord {
        meta: RecordMeta {
            subject: SubjectTag([(i % 7) as u8; 32]),
            kind: RecordKind::Claim,
            source: "rotation-test".into(),
            effective: Date::new(2026, 1, 1).unwrap(),
            data_kind: None,
        },
        data: format!("record {i} written while certificates rotate").into_bytes(),
    }
}

/// Every node's certificate and key are replaced on disk, one node after the other,
/// while a writer and a reader keep working: each node serves the new certificate
/// within seconds, and no request of either fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nodes_certificate_is_renewed_under_load_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path(), 5).await;
    let (operator, ingest, reader) = clients(&cluster);
    open_grant(&operator, "rotation", "anon-job").await;
    let (ingest, reader) = (Arc::new(ingest), Arc::new(reader));
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let written = Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = {
        let (stop, done, failed, written) =
            (stop.clone(), done.clone(), failed.clone(), written.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                match ingest.put_batch((i..i + 4).map(record).collect()).await {
                    Ok(ids) => {
                        written.lock().unwrap().extend(ids);
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        eprintln!("put failed: {e}");
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                i += 4;
            }
        })
    };
    let read = {
        let (stop, done, failed, written) =
            (stop.clone(), done.clone(), failed.clone(), written.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let ids: Vec<_> = written
                    .lock()
                    .unwrap()
                    .iter()
                    .rev()
                    .take(8)
                    .copied()
                    .collect();
                if ids.is_empty() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                match reader.get_batch("rotation", &ids).await {
                    Ok(b) if b.failed.is_empty() => {
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    other => {
                        eprintln!("get failed: {other:?}");
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
    };

    let probe = cluster.identity("probe", Role::Operator, None);
    for (i, &id) in cluster.ids.iter().enumerate() {
        let name = format!("node-{id}");
        let data = dir.path().join(format!("data/{name}"));
        let (cert, _key) = cluster.ca.issue(&data, "node", &name, Role::Node, None);
        let new = CertificateDer::from_pem_file(&cert).unwrap().to_vec();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let conn = connect(&probe, cluster.addrs[i], &name).await;
            let serving = presented(&conn);
            conn.close(0u32.into(), b"probe");
            if serving == new {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} still serves its old certificate: {}",
                cluster.log(id)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Some more work on the renewed identities, then stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    read.await.unwrap();
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during rotation"
    );
    assert!(
        done.load(Ordering::SeqCst) > 10,
        "too little work to mean anything"
    );
    for id in &cluster.ids {
        assert!(
            cluster.log(*id).contains("reloaded from disk"),
            "node {id} did not say it reloaded"
        );
    }
}

/// A connection is closed when its peer's certificate expires (keep-alives would hold
/// it open), with a reason the peer can act on; a new connection with that
/// certificate fails its handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closes_when_the_peers_certificate_expires() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = common::LocalCluster::prepare(dir.path(), 5);
    cluster.spawn(1);
    let addr = cluster.addrs[0];
    let probe = cluster.identity("probe", Role::Operator, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = connect(&probe, addr, "node-1").await;
        if let Ok(Response::Pong { .. }) = ask_on(&c, Request::Ping, &[]).await {
            break;
        }
        assert!(Instant::now() < deadline, "{}", cluster.log(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expires = time::OffsetDateTime::now_utc() + time::Duration::seconds(4);
    let short_dir = dir.path().join("short");
    let (cert, key) =
        cluster
            .ca
            .issue_until(&short_dir, "short", "short-lived", Role::Operator, expires);
    let files = kakera_net::TlsFiles {
        ca: dir.path().join("ca.pem"),
        cert,
        key,
    };
    let conn = connect(&files, addr, "node-1").await;
    assert!(matches!(
        ask_on(&conn, Request::Ping, &[]).await,
        Ok(Response::Pong { .. })
    ));
    // A little past the expiry (whole seconds in the certificate).
    tokio::time::sleep(Duration::from_secs(6)).await;
    match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(c)) => {
            let why = String::from_utf8_lossy(&c.reason);
            assert!(why.contains("certificate expired"), "{why}");
        }
        other => panic!("the connection outlived its certificate: {other:?}"),
    }
    assert!(ask_on(&conn, Request::Ping, &[]).await.is_err());
    let again = common::Client::new(&files);
    assert!(
        again.ask(addr, "node-1", Request::Ping).await.is_err(),
        "an expired certificate passed the handshake"
    );
}
