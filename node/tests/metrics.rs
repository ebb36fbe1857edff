//! Operations (issue 9): every node serves Prometheus metrics, health and readiness on
//! its own HTTP port, apart from QUIC. A scrape after stores and reads shows them
//! counted by request and outcome, the Raft indexes, the shares held and the audit
//! log; readiness turns 503 with a reason when the node loses its quorum.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::{clients, http_get, leader_node, meta, metric, open_grant, start, wait_all_applied};
use kakera_client::NewRecord;
use kakera_proto::RecordKind;

fn record(i: u8) -> NewRecord {
    NewRecord {
        meta: meta(RecordKind::Checkup, "metrics-test", i),
        data: vec![i; 4096],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_serve_metrics_health_and_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 5).await;
    let (operator, gateway, reader) = clients(&cluster);
    open_grant(&operator, "metrics-job", "anon-job").await;
    let ids = gateway
        .put_batch((1..=20).map(record).collect())
        .await
        .unwrap();
    let read = reader.get_batch("metrics-job", &ids).await.unwrap();
    assert_eq!(read.records.len(), 20);
    wait_all_applied(&operator).await;

    let mut leaders = 0;
    let mut shares_total = 0.0;
    let mut applied = Vec::new();
    for (i, addr) in cluster.metrics.iter().enumerate() {
        let (code, body) = http_get(*addr, "/healthz").await.unwrap();
        assert_eq!((code, body.as_str()), (200, "ok\n"), "node {}", i + 1);
        let (code, body) = http_get(*addr, "/readyz").await.unwrap();
        assert_eq!(code, 200, "node {}: {body}", i + 1);

        let (code, page) = http_get(*addr, "/metrics").await.unwrap();
        assert_eq!(code, 200);
        let get = |name: &str| {
            metric(&page, name).unwrap_or_else(|| panic!("node {}: no {name} in\n{page}", i + 1))
        };
        leaders += get("kakera_raft_leader") as u32;
        assert!(get("kakera_raft_term") >= 1.0);
        assert!(get("kakera_ready") == 1.0);
        applied.push(get("kakera_raft_applied_index"));
        assert!(get("kakera_raft_committed_index") >= get("kakera_raft_applied_index"));
        assert!(get("kakera_audit_entries") >= 3.0, "grant, commit, read");
        shares_total += get("kakera_shares");
        // Every node holds shares of some of the 20 records (placement spreads them)
        // and was asked to stage them.
        assert!(
            get(r#"kakera_requests_total{request="stage_shares",outcome="ok"}"#) >= 1.0,
            "node {}",
            i + 1
        );
        assert!(get(r#"kakera_request_duration_seconds_count{request="stage_shares"}"#) >= 1.0);
        assert!(get("kakera_share_bytes") > 0.0, "node {}", i + 1);
        assert_eq!(get("kakera_repair_pending_moves"), 0.0);
        // Issue 21 item 3 and P7 (staging limits): once every commit is applied, no
        // staged byte is still counted against the ingest identity; the state
        // machine's promotions release the ledger the server counts in (a ledger of
        // its own left every share ever staged counted, and held in memory).
        assert_eq!(get("kakera_staged_reserved_bytes"), 0.0, "node {}", i + 1);
        // Issue 21 item 3: memory shows by holder. The shares written sit in
        // memtables; the process has a resident set (Linux).
        assert!(get("kakera_rocksdb_memtable_bytes") > 0.0, "node {}", i + 1);
        if cfg!(target_os = "linux") {
            assert!(get("kakera_resident_bytes") > 0.0, "node {}", i + 1);
        }
        // Nothing of a record or a share shows on this port: only numbers and names.
        for line in page.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("kakera_"), "unexpected line: {line}");
        }
    }
    assert_eq!(leaders, 1, "exactly one node reports itself leader");
    assert!(applied.windows(2).all(|w| w[0] == w[1]), "{applied:?}");
    // RocksDB's key estimate: 20 records x 5 shares.
    assert!(
        (100.0..=110.0).contains(&shares_total),
        "shares over all nodes: {shares_total}"
    );

    // Commits and reads were counted at the node that answered them.
    let mut commits = 0.0;
    let mut fetches = 0.0;
    for addr in &cluster.metrics {
        let (_, page) = http_get(*addr, "/metrics").await.unwrap();
        commits += metric(
            &page,
            r#"kakera_requests_total{request="commit_records",outcome="ok"}"#,
        )
        .unwrap_or(0.0);
        fetches += metric(
            &page,
            r#"kakera_requests_total{request="fetch_shares",outcome="ok"}"#,
        )
        .unwrap_or(0.0);
    }
    assert!(commits >= 1.0 && fetches >= 3.0, "{commits} {fetches}");

    // Other paths and methods get a clear answer.
    let (code, body) = http_get(cluster.metrics[0], "/").await.unwrap();
    assert_eq!(code, 404);
    assert!(body.contains("/metrics"), "{body}");
    // The port's limits: GET only, a head of at most 8 KiB, a head within 5 s.
    let port0 = cluster.metrics[0];
    let post = raw_http(
        port0,
        b"POST /metrics HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
    )
    .await;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    let mut huge = b"GET /metrics HTTP/1.1\r\nhost: x\r\nx-padding: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 16 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    let big = raw_http(port0, &huge).await;
    assert!(big.starts_with("HTTP/1.1 431"), "{big}");
    let silent_since = Instant::now();
    let silent = raw_http(port0, b"GET /metr").await;
    assert!(!silent.contains("200 OK"), "{silent}");
    assert!(
        silent_since.elapsed() < Duration::from_secs(15),
        "a client that never finished its head held the connection for {:?}",
        silent_since.elapsed()
    );

    // A node that lost its quorum (the leader and two more gone) is alive but not
    // ready, and says why.
    let leader = leader_node(&operator).await.unwrap();
    let mut gone = vec![leader];
    gone.extend(cluster.ids.iter().copied().filter(|&n| n != leader).take(2));
    let survivor = cluster
        .ids
        .iter()
        .copied()
        .find(|n| !gone.contains(n))
        .unwrap();
    for &id in &gone {
        cluster.kill(id);
    }
    let port = cluster.metrics[survivor as usize - 1];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = http_get(port, "/readyz").await.unwrap();
        if code == 503 {
            assert!(body.contains("no leader"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still ready without a quorum: {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (code, _) = http_get(port, "/healthz").await.unwrap();
    assert_eq!(code, 200);
    let (_, page) = http_get(port, "/metrics").await.unwrap();
    assert_eq!(metric(&page, "kakera_ready"), Some(0.0));
}

/// Sends `bytes` to an HTTP port and reads until the server closes (or 30 s pass).
async fn raw_http(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer (431) and close before it has read everything.
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
