//! Operations (issue 9): a rolling restart under load. Every node is restarted in
//! turn (SIGTERM, start, wait for /readyz) while a writer and a reader run; no put and
//! no read fails — the client asks a restarting holder again with the same shares and
//! follows the leader — and every acknowledged record reads back byte for byte (P3,
//! P4).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{clients, http_get, meta, open_grant, start};
use kakera_client::NewRecord;
use kakera_proto::{RecordId, RecordKind};

fn record(i: u64) -> NewRecord {
    NewRecord {
        meta: meta(RecordKind::LongTermCare, "rolling-test", (i % 11) as u8),
        data: (0..(2000 + i as usize % 5000))
            .map(|j| (j as u64 ^ i) as u8)
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_fails_no_request_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 5).await;
    let (operator, gateway, reader) = clients(&cluster);
    open_grant(&operator, "rolling", "anon-job").await;
    let gateway = Arc::new(gateway);
    let reader = Arc::new(reader);

    let stop = Arc::new(AtomicBool::new(false));
    let written: Arc<Mutex<Vec<(RecordId, u64)>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let reads = Arc::new(AtomicU64::new(0));

    let writer = {
        let (stop, written, failures, gateway) = (
            stop.clone(),
            written.clone(),
            failures.clone(),
            gateway.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match gateway.put(record(i)).await {
                    Ok(id) => written.lock().unwrap().push((id, i)),
                    Err(e) => failures.lock().unwrap().push(format!(
                        "put {i} after {} ms: {e}",
                        started.elapsed().as_millis()
                    )),
                }
                i += 1;
            }
        })
    };
    let reader_task = {
        let (stop, written, failures, reader, reads) = (
            stop.clone(),
            written.clone(),
            failures.clone(),
            reader.clone(),
            reads.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let pick = {
                    let w = written.lock().unwrap();
                    (!w.is_empty()).then(|| w[n % w.len()])
                };
                n = n.wrapping_mul(31).wrapping_add(7);
                let Some((id, i)) = pick else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                match reader.get("rolling", id).await {
                    Ok(r) if *r.data == record(i).data => {
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => failures
                        .lock()
                        .unwrap()
                        .push(format!("read {id}: different bytes")),
                    Err(e) => failures.lock().unwrap().push(format!("read {id}: {e}")),
                }
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in cluster.ids.clone() {
        let before = written.lock().unwrap().len();
        let status = cluster.terminate(id);
        assert!(status.success(), "node {id} did not stop cleanly: {status}");
        cluster.spawn(id);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = http_get(cluster.metrics[id as usize - 1], "/readyz").await {
                break;
            }
            assert!(Instant::now() < deadline, "node {id} never became ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The load goes on after each restart before the next.
        let deadline = Instant::now() + Duration::from_secs(60);
        while written.lock().unwrap().len() < before + 3 {
            assert!(
                Instant::now() < deadline,
                "no put succeeded after restarting node {id}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    reader_task.await.unwrap();

    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    let written = written.lock().unwrap().clone();
    assert!(written.len() >= 15, "only {} puts", written.len());
    assert!(reads.load(Ordering::Relaxed) >= 5);

    // Nothing acknowledged is lost.
    let ids: Vec<RecordId> = written.iter().map(|(id, _)| *id).collect();
    let batch = reader.get_batch("rolling", &ids).await.unwrap();
    assert!(batch.failed.is_empty(), "{} unreadable", batch.failed.len());
    let by_id: std::collections::HashMap<RecordId, u64> = written.into_iter().collect();
    for r in &batch.records {
        assert!(
            *r.data == record(by_id[&r.id]).data,
            "record {} differs",
            r.id
        );
    }
    assert_eq!(batch.records.len(), by_id.len());
}
