//! The data path end to end on five `kakera-node` processes (3 racks, 3 of 5) through
//! the client library: records of 0 B to 64 MiB round-trip; reads happen only for an
//! hsz reader with the zone key under an active grant, and every other identity is
//! refused by the nodes; bad and missing shares are skipped and reported; every
//! change and every read is in the hash-chained audit log. Guards P1, P2, P3, P5, P7.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::{clients, start, start_with, wait_all_applied};
use kakera_client::seal::ZonePrivateKey;
use kakera_client::{Client, ClientError, FailedRead, NewRecord, ReadFailure, RecordRefusal};
use kakera_net::NetError;
use kakera_node::raft::state_machine::StateMachine;
use kakera_node::shares::ShareStore;
use kakera_proto::audit::{AuditAction, AuditQuery, Outcome, verify_chain};
use kakera_proto::catalog::{Grant, GrantScope, ListFilter, RecordEntry};
use kakera_proto::{Date, Digest, ErrorKind, RecordKind, RecordMeta, Request, Role, SubjectTag};

const MARKER: &[u8] = b"PLAINTEXT-MARKER-kakera-test";

fn meta(kind: RecordKind, source: &str, subject: u8) -> RecordMeta {
    RecordMeta {
        subject: SubjectTag([subject; 32]),
        kind,
        source: source.into(),
        effective: Date::new(2025, 6, 1).unwrap(),
        data_kind: None,
    }
}

/// Record bytes that start with a recognisable marker (so leaks can be searched for).
fn data(len: usize, seed: u8) -> Vec<u8> {
    let mut v: Vec<u8> = MARKER.iter().copied().cycle().take(len).collect();
    for (i, b) in v.iter_mut().enumerate().skip(MARKER.len()) {
        *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
    v
}

fn grant(job: &str, reader: &str, kinds: Vec<RecordKind>, expires_in_ms: u64) -> Grant {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    Grant {
        job: job.into(),
        reader: reader.into(),
        scope: GrantScope {
            kinds,
            sources: vec![],
            subjects: vec![],
        },
        expires_at_ms: now + expires_in_ms,
        approval: "IRB-2026-042".into(),
        created_at_ms: 0,
        created_by: String::new(),
        revoked: None,
    }
}

fn forbidden(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Net(NetError::Refused {
            kind: ErrorKind::Forbidden,
            ..
        })
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_round_trip_only_for_granted_hsz_readers_and_everything_is_audited() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut cluster = start(dir.path(), 5).await;
    let config = cluster.config();
    let zone_key = || ZonePrivateKey::from_bytes(&cluster.zone_key).unwrap();
    let (operator, ingest, reader) = clients(&cluster);

    // Ingest: sizes from empty to the largest record, past the 16 MiB frame limit.
    let sizes = [0usize, 1, 1000, 100 * 1024, 1 << 20, 17 << 20, 64 << 20];
    let mut originals = Vec::new();
    let mut batch = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        let kind = if i % 2 == 0 {
            RecordKind::Claim
        } else {
            RecordKind::Checkup
        };
        let d = data(len, i as u8);
        originals.push(d.clone());
        batch.push(NewRecord {
            meta: meta(kind, "1310000001", i as u8 % 3),
            data: d,
        });
    }
    let ids = ingest.put_batch(batch).await.unwrap();
    assert_eq!(ids.len(), sizes.len());
    // A death record outside the study's grant, from another facility.
    let death = ingest
        .put(NewRecord {
            meta: meta(RecordKind::Death, "2710000002", 9),
            data: data(500, 99),
        })
        .await
        .unwrap();

    // Listings by kind, source and subject (metadata only).
    let claims = reader
        .list_all(ListFilter::Kind(RecordKind::Claim), 100)
        .await
        .unwrap();
    assert_eq!(claims.len(), 4);
    let from_osaka = operator
        .list_all(ListFilter::Source("2710000002".into()), 100)
        .await
        .unwrap();
    assert_eq!(
        from_osaka.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![death]
    );
    let subject0 = operator
        .list_all(ListFilter::Subject(SubjectTag([0; 32])), 100)
        .await
        .unwrap();
    assert_eq!(subject0.len(), 3);
    let all = operator.list_all(ListFilter::All, 100).await.unwrap();
    assert_eq!(all.len(), sizes.len() + 1);
    // Ingest may write, not list.
    assert!(forbidden(
        &ingest.list(ListFilter::All, None, 10).await.unwrap_err()
    ));
    // A page larger than the node serves is refused, not cut short without a word.
    let too_many = operator.list(ListFilter::All, None, 100_000).await;
    assert!(
        matches!(&too_many, Err(kakera_client::ClientError::Invalid(m)) if m.contains("at most 1000")),
        "{too_many:?}"
    );

    // No grant yet: the reader is refused (and the refusal is audited).
    let e = reader.get_batch("study-1", &ids).await.unwrap_err();
    assert!(forbidden(&e), "{e}");
    let study = grant(
        "study-1",
        "anon-job",
        vec![RecordKind::Claim, RecordKind::Checkup],
        3_600_000,
    );
    operator.create_grant(study.clone()).await.unwrap();
    // A retried create is harmless; a different grant under the same job is refused.
    operator
        .create_grant(study.clone())
        .await
        .unwrap_or_else(|e| panic!("retry: {e}"));
    let mut wider = study.clone();
    wider.scope.kinds.push(RecordKind::Death);
    let e = operator.create_grant(wider).await.unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");

    // P2/P5: the granted hsz reader reads every record back, byte for byte.
    let read = reader.get_batch("study-1", &ids).await.unwrap();
    assert!(read.failed.is_empty(), "{:?}", read.failed);
    assert!(read.bad_shares.is_empty(), "{:?}", read.bad_shares);
    assert_eq!(read.records.len(), ids.len());
    for ((r, id), original) in read.records.iter().zip(&ids).zip(&originals) {
        assert_eq!(r.id, *id);
        assert_eq!(
            r.data.as_slice(),
            original.as_slice(),
            "record of {} bytes",
            original.len()
        );
    }

    // Refusals, each by the nodes (P7), each for its own reason.
    // Outside the grant's scope.
    let e = reader.get("study-1", death).await.unwrap_err();
    assert!(
        forbidden(&e) && e.to_string().contains("outside the grant"),
        "{e}"
    );
    // P5, job by job: a read that names the out-of-scope record among others reads
    // the others and reports that one by id, with a typed reason.
    let mut asked = ids.clone();
    asked.push(death);
    let each = reader.get_batch_each("study-1", &asked).await.unwrap();
    assert_eq!(each.records.len(), ids.len(), "{:?}", each.failed);
    assert_eq!(
        each.failed,
        vec![FailedRead {
            record: death,
            failure: ReadFailure::Refused(RecordRefusal::OutOfScope {
                kind: RecordKind::Death,
                facility: "2710000002".into(),
            }),
        }]
    );
    // The grant's whole scope in one call, in batches bounded by bytes (the 64 MiB
    // record goes alone): every claim and checkup, not the death record.
    let mut scope = reader.read_scope("study-1").await.unwrap();
    let (mut seen, mut batches) = (Vec::new(), 0);
    while let Some(batch) = scope.next().await.unwrap() {
        assert!(batch.failed.is_empty(), "{:?}", batch.failed);
        batches += 1;
        for r in batch.records {
            let at = ids.iter().position(|id| *id == r.id).unwrap();
            assert_eq!(r.data.as_slice(), originals[at].as_slice());
            seen.push(r.id);
        }
    }
    seen.sort_unstable();
    let mut want = ids.clone();
    want.sort_unstable();
    assert_eq!(seen, want);
    assert!(batches >= 2, "{batches} batches for 82 MiB of records");
    // The blocking wrapper walks the same scope as an iterator, from a thread of its
    // own (inside the test's runtime it would refuse).
    let (blocking_config, identity) = (
        config.clone(),
        cluster.identity("anon-job", Role::Reader, Some("hsz")),
    );
    let key = cluster.zone_key;
    let walked = std::thread::spawn(move || -> Result<usize, ClientError> {
        let me = kakera_client::IdentityFiles {
            cert: identity.cert,
            key: identity.key,
        };
        let client = kakera_client::blocking::Client::connect_as(blocking_config, &me)?
            .with_zone_key(ZonePrivateKey::from_bytes(&key)?);
        let mut n = 0;
        for batch in client.read_scope("study-1")? {
            n += batch?.records.len();
        }
        client.close()?;
        Ok(n)
    });
    let walked = tokio::task::spawn_blocking(move || walked.join())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(walked.unwrap(), ids.len());
    // Another reader of the hsz zone without a grant of its own.
    let other = Client::connect(
        config.clone(),
        &cluster.identity("other-job", Role::Reader, Some("hsz")),
    )
    .unwrap()
    .with_zone_key(zone_key());
    let e = other.get("study-1", ids[0]).await.unwrap_err();
    assert!(
        forbidden(&e) && e.to_string().contains("names reader"),
        "{e}"
    );
    // A grant that does not admit the reader refuses the whole request, per record
    // or not; the scope read does not even start.
    let e = other.get_batch_each("study-1", &ids).await.unwrap_err();
    assert!(
        forbidden(&e) && e.to_string().contains("names reader"),
        "{e}"
    );
    assert!(other.read_scope("study-1").await.is_err());
    // A reader certificate outside the zone.
    let outside = Client::connect(
        config.clone(),
        &cluster.identity("anon-job", Role::Reader, Some("dc")),
    )
    .unwrap()
    .with_zone_key(zone_key());
    let e = outside.get("study-1", ids[0]).await.unwrap_err();
    assert!(forbidden(&e), "{e}");
    // Ingest, auditor and operator may not open reads or fetch shares at all.
    let auditor = Client::connect(
        config.clone(),
        &cluster.identity("aud", Role::Auditor, None),
    )
    .unwrap();
    for c in [&ingest, &auditor, &operator] {
        for body in [
            Request::OpenRead {
                job: "study-1".into(),
                records: vec![ids[0]],
            },
            Request::OpenReadEach {
                job: "study-1".into(),
                records: vec![ids[0]],
            },
            Request::FetchShares {
                ticket: read.tickets[0],
                records: vec![ids[0]],
            },
        ] {
            let e = c.leader_call(body).await.unwrap_err();
            assert!(forbidden(&e), "{}: {e}", c.identity());
        }
    }
    // Another reader cannot use anon-job's ticket, and no one can use a ticket that
    // does not exist: nodes release nothing.
    for (c, ticket) in [(&other, read.tickets[0]), (&reader, 999_999)] {
        let answer = c
            .connection()
            .call(
                1,
                Request::FetchShares {
                    ticket,
                    records: vec![ids[0]],
                },
                Duration::from_secs(10),
            )
            .await;
        match answer {
            Err(NetError::Refused {
                kind: ErrorKind::Forbidden | ErrorKind::Unavailable,
                ..
            }) => {}
            other => panic!("shares released without a ticket of one's own: {other:?}"),
        }
    }

    // A revoked grant stops reads.
    operator
        .create_grant(grant("study-2", "anon-job", vec![], 3_600_000))
        .await
        .unwrap();
    let open = reader.get_batch("study-2", &[death]).await.unwrap();
    assert_eq!(open.records.len(), 1);
    operator
        .revoke_grant("study-2", "consent withdrawn")
        .await
        .unwrap();
    // Issue 22: the revocation stops the grant's open tickets at once: once a node
    // has applied it, a fetch under a ticket opened before is refused there.
    wait_all_applied(&operator).await;
    let holders: Vec<u64> = operator
        .list_all(ListFilter::Source("2710000002".into()), 10)
        .await
        .unwrap()[0]
        .holders
        .iter()
        .map(|h| h.node)
        .collect();
    for node in holders {
        let answer = reader
            .connection()
            .call(
                node,
                Request::FetchShares {
                    ticket: open.tickets[0],
                    records: vec![death],
                },
                Duration::from_secs(10),
            )
            .await;
        match answer {
            Err(NetError::Refused {
                kind: ErrorKind::Forbidden,
                message,
                ..
            }) => assert!(message.contains("revoked"), "{message}"),
            other => panic!("node {node} released a share under a revoked grant: {other:?}"),
        }
    }
    let e = reader.get("study-2", death).await.unwrap_err();
    assert!(forbidden(&e) && e.to_string().contains("revoked"), "{e}");
    let e = reader
        .get_batch_each("study-2", &[death])
        .await
        .unwrap_err();
    assert!(forbidden(&e) && e.to_string().contains("revoked"), "{e}");
    // An expired grant stops reads.
    operator
        .create_grant(grant("study-3", "anon-job", vec![], 1_500))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let e = reader.get("study-3", death).await.unwrap_err();
    assert!(forbidden(&e) && e.to_string().contains("expired"), "{e}");
    // Operators change grants; no one else does.
    let e = auditor
        .create_grant(grant("study-4", "anon-job", vec![], 3_600_000))
        .await
        .unwrap_err();
    assert!(forbidden(&e), "{e}");

    // P5: the audit log has every commit, grant change and read (granted or not), is
    // readable by the auditor, and its chain verifies.
    let (entries, head) = auditor
        .audit_log(AuditQuery::default(), 10_000)
        .await
        .unwrap();
    assert_eq!(head.map(|h| h.0), Some(entries.len() as u64));
    assert_eq!(
        auditor.verify_audit_log().await.unwrap(),
        Ok(entries.len() as u64)
    );
    let count = |name: &str, applied: bool| {
        entries
            .iter()
            .filter(|e| e.action.as_str() == name && (e.outcome == Outcome::Applied) == applied)
            .count()
    };
    // The batch went as two commits (it is larger than one commit's 64 MiB), then
    // the death record.
    assert_eq!(count("commit", true), 3);
    assert_eq!(
        count("grant-create", true),
        4,
        "three grants, one retried create"
    );
    assert_eq!(
        count("grant-create", false),
        1,
        "the wider grant under a used job"
    );
    assert_eq!(count("grant-revoke", true), 1);
    assert!(count("open-read", true) >= 2);
    assert!(count("open-read", false) >= 5);
    assert!(count("membership", true) >= 1);
    let first_read = entries
        .iter()
        .find(|e| matches!(e.action, AuditAction::OpenRead { ticket } if ticket == read.tickets[0]))
        .unwrap();
    assert_eq!(first_read.actor.name, "anon-job");
    assert_eq!(first_read.job.as_deref(), Some("study-1"));
    assert_eq!(first_read.records, ids);
    // Per-record and per-job queries.
    let (for_record, _) = auditor
        .audit_log(
            AuditQuery {
                record: Some(ids[2]),
                ..AuditQuery::default()
            },
            100,
        )
        .await
        .unwrap();
    assert!(for_record.iter().all(|e| e.records.contains(&ids[2])));
    assert!(
        for_record
            .iter()
            .any(|e| e.action == AuditAction::CommitRecords)
    );
    let (for_job, _) = auditor
        .audit_log(
            AuditQuery {
                job: Some("study-2".into()),
                ..AuditQuery::default()
            },
            100,
        )
        .await
        .unwrap();
    assert_eq!(
        for_job
            .iter()
            .map(|e| e.action.as_str())
            .collect::<Vec<_>>(),
        vec![
            "grant-create",
            "open-read",
            "grant-revoke",
            "open-read",
            "open-read"
        ],
        "the read, the revocation, and both refused reads after it (whole and per record)"
    );
    assert!(
        matches!(for_job[4].action, AuditAction::OpenReadEach { .. })
            && matches!(for_job[4].outcome, Outcome::Refused { .. }),
        "{:?}",
        for_job[4]
    );
    // Readers do not read the audit log; ingest does not either.
    assert!(forbidden(
        &reader
            .audit_log(AuditQuery::default(), 10)
            .await
            .unwrap_err()
    ));

    // Stop the cluster and look at the disks, as an attacker outside the HSZ would.
    let catalog: Vec<RecordEntry> = all;
    wait_all_applied(&operator).await;
    for id in 1..=5 {
        cluster.kill(id);
    }
    let mut stores = Vec::new();
    for id in 1..=5u64 {
        let db = kakera_node::store::open(&dir.path().join(format!("data/node-{id}/db"))).unwrap();
        stores.push((id, db));
    }
    for entry in &catalog {
        // P1: no rack holds k shares of a record.
        let mut per_rack = std::collections::BTreeMap::<&str, usize>::new();
        let mut shares = Vec::new();
        for (id, db) in &stores {
            if let Some(s) = ShareStore::new(db.clone()).committed(&entry.id).unwrap() {
                assert_eq!(Some(s.digest), entry.holder_on(*id).map(|h| h.digest));
                *per_rack.entry(&config.node(*id).unwrap().rack).or_default() += 1;
                shares.push(kakera_shamir::Share::decode(&s.bytes).unwrap());
            }
        }
        assert_eq!(shares.len(), 5, "every holder promoted its share");
        assert!(per_rack.values().all(|&c| c < 3), "{per_rack:?}");
        // P2: all n shares together give the sealed record, which has no plaintext in
        // it and does not open without the zone key.
        let sealed = kakera_shamir::combine(&shares).unwrap();
        assert_eq!(Digest::of(&sealed), entry.sealed_digest);
        if entry.sealed_len as usize > MARKER.len() + 64 {
            assert!(!sealed.windows(MARKER.len()).any(|w| w == MARKER));
        }
        let (wrong, _) = ZonePrivateKey::generate();
        assert!(
            kakera_client::seal::open(&wrong, "proc-test", &entry.id, &entry.meta, &sealed)
                .is_err()
        );
    }
    // The audit log on disk: no record bytes in it, and a changed entry breaks the
    // chain exactly there.
    let (_, db) = &stores[0];
    let sm = StateMachine::new(
        kakera_node::shares::ShareStore::new(db.clone()),
        dir.path().join("snap-check"),
        1,
    )
    .unwrap();
    let (on_disk, _) = sm
        .audit(&AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(on_disk.len(), entries.len());
    for e in &on_disk {
        let bytes = kakera_proto::codec::encode(e).unwrap();
        assert!(!bytes.windows(MARKER.len()).any(|w| w == MARKER));
    }
    let mut tampered = on_disk.clone();
    let victim = tampered.len() / 2;
    tampered[victim].actor.name = "someone-else".into();
    assert_eq!(
        verify_chain(([0; 32], 0), &tampered),
        Err(kakera_proto::audit::ChainBreak::BadLink {
            seq: tampered[victim].seq + 1
        }),
        "entries: {}, victim {victim}",
        tampered.len()
    );
    drop(sm);
}

/// P3 and P4 (reads): a share whose bytes changed on disk is caught by its catalog
/// digest, skipped and reported, and the read still succeeds from other holders; with a
/// whole rack down every record is still read from the remaining k holders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_missing_shares_are_skipped_and_reported() {
    let dir = tempfile::TempDir::new().unwrap();
    // No scrubbing: the reader must meet the corrupt share before anything heals it.
    let mut cluster = start_with(dir.path(), 5, "scrub_mb_s = 0").await;
    let config = cluster.config();
    let (operator, ingest, reader) = clients(&cluster);
    operator
        .create_grant(grant("study", "anon-job", vec![], 3_600_000))
        .await
        .unwrap();
    let originals: Vec<Vec<u8>> = (0..20).map(|i| data(2048, i)).collect();
    let ids = ingest
        .put_batch(
            originals
                .iter()
                .map(|d| NewRecord {
                    meta: meta(RecordKind::Ssmix2, "1310000001", 1),
                    data: d.clone(),
                })
                .collect(),
        )
        .await
        .unwrap();
    let entries = operator.list_all(ListFilter::All, 100).await.unwrap();
    let victim = entries.iter().find(|e| e.id == ids[0]).unwrap();
    wait_all_applied(&operator).await;
    // A single-record read asks the first k holders: corrupt the first one's share.
    let holder = victim.holders[0].node;
    cluster.kill(holder);
    {
        let db =
            kakera_node::store::open(&dir.path().join(format!("data/node-{holder}/db"))).unwrap();
        let shares = kakera_node::store::cf(&db, kakera_node::store::CF_SHARES).unwrap();
        let mut value = db.get_cf(shares, ids[0].0).unwrap().unwrap();
        let last = value.len() - 1;
        value[last] ^= 0x01;
        db.put_cf(shares, ids[0].0, value).unwrap();
    }
    cluster.spawn(holder);
    let deadline = Instant::now() + Duration::from_secs(30);
    let record = loop {
        let r = reader.get_batch("study", &ids[..1]).await;
        if let Ok(batch) = &r
            && batch
                .bad_shares
                .iter()
                .any(|b| b.node == holder && b.reason.contains("digest"))
        {
            break r.unwrap();
        }
        // The restarted node may not answer yet (then it is reported as unavailable).
        assert!(
            Instant::now() < deadline,
            "never caught the corrupt share: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(record.failed.is_empty());
    assert_eq!(record.records[0].data.as_slice(), originals[0].as_slice());

    // A whole rack down (the corrupt holder's rack): everything still reads.
    let rack = config.node(holder).unwrap().rack.clone();
    let down: Vec<u64> = config
        .nodes
        .iter()
        .filter(|n| n.rack == rack)
        .map(|n| n.id)
        .collect();
    for id in &down {
        cluster.kill(*id);
    }
    let all = reader.get_batch("study", &ids).await.unwrap();
    assert!(all.failed.is_empty(), "{:?}", all.failed);
    for (r, original) in all.records.iter().zip(&originals) {
        assert_eq!(r.data.as_slice(), original.as_slice());
    }
    assert!(
        all.bad_shares.iter().all(|b| down.contains(&b.node)),
        "{:?} (down: {down:?})",
        all.bad_shares
    );
}
