//! Records larger than one piece (issue 24.3) on real processes: a record above
//! `max_record_bytes` goes in through `Client::put_stream` as segments and comes
//! back through `Client::get_stream` byte for byte; all of its segments become
//! visible in one commit (P4), each opens only in its place (P2); a node killed in
//! the middle of a streamed put or get costs neither; erasing the record erases
//! every segment from every disk (P6); a deep audit sees every segment.
//!
//! Six `kakera-node` processes (racks a: 1, 2, 6; b: 3, 4; c: 5), k = 3 of n = 5,
//! `max_record_bytes` 1 MiB so that a 5 MiB record has 6 segments.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)] // tests: a panic is the failure report

mod common;

use std::time::Duration;

use common::disk::{share_windows, wait_gone_from_disk};
use common::{
    LocalCluster, auditor, clients, leader_node, open_grant, start_with, wait_all_applied,
};
use kakera_client::{ClientError, NewRecord, ReadFailure};
use kakera_proto::catalog::{EraseTarget, ListFilter};
use kakera_proto::{Date, RecordId, RecordKind, RecordMeta, SubjectTag};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMITS: &str = "[limits]\nmax_record_bytes = 1048576\n";
const JOB: &str = "study-images";
const MIB: usize = 1024 * 1024;

fn meta(subject: u8) -> RecordMeta {
    RecordMeta {
        subject: SubjectTag([subject; 32]),
        kind: RecordKind::Image,
        source: "1310000001".into(),
        effective: Date::new(2026, 3, 1).unwrap(),
        data_kind: Some("CT".into()),
    }
}

/// `len` bytes no two segments of which are alike.
fn image(len: usize, seed: u8) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn read_all(reader: &kakera_client::Client, id: RecordId) -> (Vec<u8>, u32) {
    let mut stream = reader.get_stream(JOB, id).await.unwrap();
    let segments = stream.segments();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    (out, segments)
}

fn dump_logs(cluster: &LocalCluster) {
    for id in cluster.ids.clone() {
        eprintln!("--- node {id}\n{}", cluster.log(id));
    }
}

/// P4 and P2 for records above `max_record_bytes`: stored as segments in one
/// commit, read back whole as a stream, refused whole by a batch read with a reason
/// to stream, never readable or erasable part by part; a deep audit covers every
/// segment; erasing the record leaves no segment's bytes on any disk (P6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_above_max_record_bytes_round_trips_as_segments_and_erases_whole() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_with(dir.path(), 6, LIMITS).await;
    let (operator, ingest, reader) = clients(&cluster);
    open_grant(&operator, JOB, "anon-job").await;
    assert_eq!(ingest.segment_bytes(), MIB as u64);

    let data = image(5 * MIB + 777, 1);
    let id = ingest
        .put_stream(meta(0xc1), std::io::Cursor::new(data.clone()))
        .await
        .unwrap_or_else(|e| {
            dump_logs(&cluster);
            panic!("{e}")
        });
    let listed = operator
        .list_all(ListFilter::Subject(SubjectTag([0xc1; 32])), 100)
        .await
        .unwrap();
    let parts: Vec<RecordId> = listed
        .iter()
        .filter(|e| e.meta.kind == RecordKind::Segment)
        .map(|e| e.id)
        .collect();
    assert_eq!(
        listed.len(),
        6,
        "the record and its five parts are in the catalog"
    );
    assert_eq!(parts.len(), 5);
    assert!(
        listed
            .iter()
            .any(|e| e.id == id && e.meta.kind == RecordKind::Image)
    );

    let (back, segments) = read_all(&reader, id).await;
    assert_eq!(segments, 6);
    assert!(back == data, "the streamed record reads back byte for byte");

    // A batch read does not hold a segmented record in memory: it says to stream.
    match reader.get(JOB, id).await {
        Err(ClientError::Read {
            failure: ReadFailure::Segmented { segments: 6 },
            ..
        }) => {}
        other => panic!("a batch read of a segmented record: {other:?}"),
    }
    // Above max_record_bytes, a put whole is refused with the way out.
    let big = NewRecord {
        meta: meta(0xc1),
        data: vec![7; MIB + 1],
    };
    let e = ingest.put(big).await.unwrap_err().to_string();
    assert!(e.contains("put it as a stream"), "{e}");
    // One segment or less is put whole and streams back in one segment.
    let small = image(1000, 2);
    let small_id = ingest
        .put_stream(meta(0xc1), small.as_slice())
        .await
        .unwrap();
    assert_eq!(read_all(&reader, small_id).await, (small.clone(), 1));
    assert_eq!(
        &reader.get(JOB, small_id).await.unwrap().data[..],
        &small[..]
    );

    // A part is reached only through its record.
    let e = reader.get(JOB, parts[0]).await.unwrap_err().to_string();
    assert!(e.contains("scope") || e.contains("segment"), "{e}");
    let e = operator
        .erase(EraseTarget::Records(vec![parts[2]]), "test")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("erase {id}")), "{e}");

    // A deep audit of the listing checks every segment's shares.
    let audit = auditor(&cluster);
    let all: Vec<RecordId> = listed.iter().map(|e| e.id).collect();
    let reports = audit.verify(&all, true).await.unwrap();
    assert_eq!(reports.len(), 6);
    assert!(reports.iter().all(|r| r.ok()), "{reports:?}");

    // Erasing the record erases every segment, off every disk.
    wait_all_applied(&operator).await;
    let windows = share_windows(&cluster, &all);
    let erased = operator
        .erase(EraseTarget::Records(vec![id]), "withdrawn by the hospital")
        .await
        .unwrap();
    let mut want = all.clone();
    want.sort_unstable();
    let mut got = erased.clone();
    got.sort_unstable();
    assert_eq!(got, want, "the record and each of its parts are erased");
    wait_gone_from_disk(&cluster, &windows).await;
    // An auditor given the record's id alone finds every segment the erasure took
    // (from the erasing entry in the audit log), and every node confirms each gone.
    assert_eq!(audit.erased_with(id).await.unwrap(), want);
    assert_eq!(audit.erased_with(parts[2]).await.unwrap(), want);
    let reports = audit.check_erasure(&want).await.unwrap();
    assert!(reports.iter().all(|r| r.confirmed()), "{reports:?}");
    let e = reader.get_stream(JOB, id).await.unwrap_err().to_string();
    assert!(e.contains("erased"), "{e}");
    let left = operator
        .list_all(ListFilter::Subject(SubjectTag([0xc1; 32])), 100)
        .await
        .unwrap();
    assert_eq!(left.len(), 1, "only the small record is left: {left:?}");
    assert!(audit.erased_with(left[0].id).await.unwrap().is_empty());
}

/// P4 under faults: a holder killed for good in the middle of a streamed put does
/// not fail it (its shares of the segments in flight go to another node that keeps
/// the rack rule, later segments avoid it) and mixes no segments; a node killed in
/// the middle of a streamed get does not stop it (the other holders answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_stream_costs_neither_put_nor_get() {
    let dir = tempfile::tempdir().unwrap();
    // A staging retry window of 10 s (a quarter of the lifetime) before a silent
    // holder's share is placed elsewhere.
    let config = format!("{LIMITS}[staging]\nttl_ms = 40000\n");
    let mut cluster = start_with(dir.path(), 6, &config).await;
    let (operator, ingest, reader) = clients(&cluster);
    open_grant(&operator, JOB, "anon-job").await;
    let leader = leader_node(&operator).await.unwrap();
    // Rack a holds nodes 1, 2 and 6, at most two shares of a record: with one of
    // them gone, five holders can still be placed.
    let victims: Vec<u64> = [1, 2, 6]
        .into_iter()
        .filter(|n| *n != leader)
        .take(2)
        .collect();

    let data = image(6 * MIB + 5, 3);
    let (mut feed, source) = tokio::io::duplex(64 * 1024);
    let put = tokio::spawn(async move {
        let id = ingest.put_stream(meta(0xd1), source).await;
        ingest.close().await;
        id
    });
    // Half of the record is in; a holder dies for good, the rest follows.
    feed.write_all(&data[..3 * MIB]).await.unwrap();
    cluster.kill(victims[0]);
    feed.write_all(&data[3 * MIB..]).await.unwrap();
    feed.shutdown().await.unwrap();
    drop(feed);
    let id = tokio::time::timeout(Duration::from_secs(120), put)
        .await
        .expect("the put finishes")
        .unwrap()
        .unwrap_or_else(|e| {
            dump_logs(&cluster);
            panic!("{e}")
        });

    // Only segments placed before the kill (at most the two staging and the one
    // being read then, and one more) keep a share on the dead node; by placement
    // alone about six of seven would.
    let segments = operator
        .list_all(ListFilter::Subject(SubjectTag([0xd1; 32])), 100)
        .await
        .unwrap();
    assert_eq!(segments.len(), 7);
    let on_dead = segments
        .iter()
        .filter(|e| e.holder_on(victims[0]).is_some())
        .count();
    assert!(
        on_dead <= 4,
        "{on_dead} segments name the dead node as holder"
    );

    // A holder dies while the record is being read.
    let mut stream = reader.get_stream(JOB, id).await.unwrap();
    assert_eq!(stream.segments(), 7);
    let mut back = vec![0u8; MIB + 10];
    stream.read_exact(&mut back).await.unwrap();
    cluster.kill(victims[1]);
    stream.read_to_end(&mut back).await.unwrap();
    assert!(back == data, "the record reads back byte for byte");
}
