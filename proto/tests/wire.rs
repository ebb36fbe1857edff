//! The wire format: golden bytes so it cannot drift unnoticed, frame limits, truncated
//! and malformed input (promise P7: bad input gets a clear error, never a crash), and
//! identities read from real certificates.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

use kakera_proto::audit::{AuditAction, AuditEntry, AuditQuery, Outcome};
use kakera_proto::catalog::{
    Actor, Grant, GrantScope, Holder, ListFilter, RecordEntry, Ticket, TicketPurpose,
};
use kakera_proto::codec::{self, FORMAT_VERSION};
use kakera_proto::frame::{
    TRAILER_CHUNK_BYTES, read_frame, read_frame_into, read_raw_frame, read_trailer, write_frame,
    write_trailer,
};
use kakera_proto::identity::{name_uri, zone_uri};
use kakera_proto::{
    Date, Digest, ErrorKind, ErrorReply, FetchedShare, Fingerprint, HeldShare, Identity,
    NodeStatus, NodeUsage, ProtoError, RaftStatus, RecordId, RecordKind, RecordMeta, Request,
    RequestEnvelope, RequestId, Response, Role, ShareCheck, StageItem, SubjectTag,
};

fn entry() -> RecordEntry {
    RecordEntry {
        id: RecordId([5; 16]),
        meta: RecordMeta {
            subject: SubjectTag([6; 32]),
            kind: RecordKind::Checkup,
            source: "1310000001".into(),
            effective: Date::new(2025, 3, 1).unwrap(),
            data_kind: None,
        },
        sealed_len: 1000,
        sealed_digest: Digest([7; 32]),
        k: 2,
        holders: vec![
            Holder {
                node: 1,
                x: 1,
                digest: Digest([8; 32]),
            },
            Holder {
                node: 2,
                x: 2,
                digest: Digest([9; 32]),
            },
        ],
        committed_at_ms: 0,
    }
}

fn grant() -> Grant {
    Grant {
        job: "job".into(),
        reader: "anon".into(),
        scope: GrantScope {
            kinds: vec![RecordKind::Claim],
            sources: vec!["1310000001".into()],
            subjects: vec![SubjectTag([1; 32])],
        },
        expires_at_ms: 10,
        approval: "IRB-1".into(),
        created_at_ms: 1,
        created_by: "op".into(),
        revoked: None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn envelope(body: Request) -> RequestEnvelope {
    RequestEnvelope {
        cluster_id: "c1".into(),
        request_id: RequestId([0xAB; 16]),
        body,
    }
}

/// Golden encodings. A change to any of these is a wire-format change: bump
/// `FORMAT_VERSION` and keep a reader for the old one.
#[test]
fn golden_encodings_do_not_drift() {
    // Hand-derived: version 01; strings and byte vectors are a varint length then the
    // bytes; [u8; 16] is 16 bytes; enum variants and integers are varints (300 is
    // fb 2c01: marker, then u16 little-endian).
    let id = "ab".repeat(16);
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "ping",
            codec::encode(&envelope(Request::Ping)).unwrap(),
            format!("01026331{id}00"),
        ),
        (
            "raft vote",
            codec::encode(&envelope(Request::RaftVote {
                to: 300,
                payload: vec![1, 2, 3],
            }))
            .unwrap(),
            format!("01026331{id}03fb2c0103010203"),
        ),
        (
            "snapshot header",
            codec::encode(&envelope(Request::RaftSnapshot {
                to: 2,
                header: vec![9],
            }))
            .unwrap(),
            format!("01026331{id}05020109"),
        ),
        (
            "join",
            codec::encode(&envelope(Request::RaftJoin { raft_id: 5 })).unwrap(),
            format!("01026331{id}0605"),
        ),
        (
            "pong",
            codec::encode(&Response::Pong {
                node_id: 7,
                node_name: "n".into(),
                peer_name: "p".into(),
                peer_role: Role::Reader,
            })
            .unwrap(),
            "010007016e017002".into(),
        ),
        (
            "not leader",
            codec::encode(&Response::Error(ErrorReply {
                kind: ErrorKind::NotLeader { leader_id: Some(3) },
                message: "x".into(),
            }))
            .unwrap(),
            "01030401030178".into(),
        ),
        (
            "accepted",
            codec::encode(&Response::Accepted).unwrap(),
            "0104".into(),
        ),
        (
            "stage",
            codec::encode(&envelope(Request::StageShares {
                items: vec![StageItem {
                    record: RecordId([1; 16]),
                    size_bytes: 300,
                }],
            }))
            .unwrap(),
            format!("01026331{id}0701{}fb2c01", "01".repeat(16)),
        ),
        (
            "fetch",
            codec::encode(&envelope(Request::FetchShares {
                ticket: 5,
                records: vec![RecordId([2; 16])],
            }))
            .unwrap(),
            format!("01026331{id}0a0501{}", "02".repeat(16)),
        ),
        (
            "staged",
            codec::encode(&Response::Staged {
                digests: vec![Digest([0xee; 32])],
            })
            .unwrap(),
            format!("010501{}", "ee".repeat(32)),
        ),
    ];
    for (name, bytes, golden) in cases {
        assert_eq!(bytes[0], FORMAT_VERSION, "{name}");
        assert_eq!(hex(&bytes), golden, "{name}");
    }
}

#[test]
fn every_message_round_trips() {
    let requests = [
        Request::Ping,
        Request::Status,
        Request::RaftAppend {
            to: 1,
            payload: vec![0; 100],
        },
        Request::RaftVote {
            to: u64::MAX,
            payload: vec![1],
        },
        Request::RaftPreVote {
            to: 2,
            payload: vec![3],
        },
        Request::RaftTransferLeader {
            to: 3,
            payload: vec![],
        },
        Request::RaftSnapshot {
            to: 4,
            header: vec![1, 2],
        },
        Request::RaftJoin { raft_id: 1 << 40 },
        Request::StageShares {
            items: vec![
                StageItem {
                    record: RecordId([3; 16]),
                    size_bytes: 300,
                },
                StageItem {
                    record: RecordId([4; 16]),
                    size_bytes: 0,
                },
            ],
        },
        Request::CommitRecords {
            records: vec![entry()],
        },
        Request::OpenRead {
            job: "job".into(),
            records: vec![RecordId([5; 16])],
        },
        Request::FetchShares {
            ticket: 9,
            records: vec![RecordId([5; 16])],
        },
        Request::List {
            filter: ListFilter::Kind(RecordKind::Claim),
            after: Some(RecordId([1; 16])),
            limit: 10,
        },
        Request::CreateGrant { grant: grant() },
        Request::RevokeGrant {
            job: "job".into(),
            reason: "done".into(),
        },
        Request::ListGrants,
        Request::OpenAudit {
            records: vec![RecordId([5; 16])],
            deep: true,
        },
        Request::VerifyShares {
            ticket: 3,
            records: vec![RecordId([5; 16])],
        },
        Request::AuditLog {
            query: AuditQuery {
                record: Some(RecordId([5; 16])),
                job: Some("job".into()),
                since_ms: Some(3),
                after_seq: 2,
                limit: 100,
            },
        },
    ];
    for r in requests {
        let e = envelope(r);
        assert_eq!(
            codec::decode::<RequestEnvelope>(&codec::encode(&e).unwrap()).unwrap(),
            e
        );
    }
    let responses = [
        Response::Raft(vec![5; 10]),
        Response::Status(Box::new(NodeStatus {
            node_id: 1,
            name: "node-1".into(),
            rack: "rack-a".into(),
            zone: "dc".into(),
            raft: RaftStatus {
                id: 1,
                initialized: true,
                state: "Leader".into(),
                term: 4,
                leader: Some(1),
                last_log_index: Some(10),
                committed: Some(9),
                applied: Some(9),
                snapshot: Some(8),
                purged: Some(4),
                voters: vec![1, 2, 3],
                learners: vec![4],
                replication: vec![(2, Some(9)), (3, None)],
            },
            usage: NodeUsage {
                rss_bytes: 1 << 27,
                ..NodeUsage::default()
            },
        })),
        Response::Accepted,
        Response::Staged {
            digests: vec![Digest([1; 32]), Digest([2; 32])],
        },
        Response::Error(ErrorReply {
            kind: ErrorKind::Forbidden,
            message: "no".into(),
        }),
        Response::Committed { log_index: 77 },
        Response::ShareChecks {
            items: vec![
                ShareCheck {
                    record: RecordId([1; 16]),
                    held: None,
                },
                ShareCheck {
                    record: RecordId([2; 16]),
                    held: Some(HeldShare {
                        stored_digest: Digest([1; 32]),
                        computed_digest: Digest([2; 32]),
                        size_bytes: 99,
                    }),
                },
            ],
        },
        Response::ReadTicket {
            ticket: Ticket {
                id: 4,
                purpose: TicketPurpose::Read { job: "job".into() },
                holder: Fingerprint([3; 32]),
                records: vec![RecordId([1; 16])],
                expires_at_ms: 99,
            },
            entries: vec![entry()],
        },
        Response::Shares {
            items: vec![FetchedShare {
                record: RecordId([1; 16]),
                size_bytes: None,
            }],
        },
        Response::Listing {
            entries: vec![entry()],
            next: None,
        },
        Response::Grants {
            grants: vec![grant()],
        },
        Response::Audit {
            entries: vec![AuditEntry {
                seq: 1,
                prev: [0; 32],
                log_index: 3,
                at_ms: 4,
                actor: Actor::cluster(),
                request_id: Some(RequestId([1; 16])),
                action: AuditAction::OpenRead { ticket: 3 },
                job: Some("job".into()),
                records: vec![RecordId([1; 16])],
                outcome: Outcome::Refused {
                    reason: "no grant".into(),
                },
            }],
            next_after: None,
            head: Some((1, [2; 32])),
        },
    ];
    for r in responses {
        assert_eq!(
            codec::decode::<Response>(&codec::encode(&r).unwrap()).unwrap(),
            r
        );
    }
}

#[test]
fn malformed_messages_get_clear_errors() {
    let good = codec::encode(&envelope(Request::Status)).unwrap();
    assert!(matches!(
        codec::decode::<RequestEnvelope>(&[]),
        Err(ProtoError::Malformed { .. })
    ));
    let mut v = good.clone();
    v[0] = 99;
    assert!(matches!(
        codec::decode::<RequestEnvelope>(&v),
        Err(ProtoError::UnsupportedVersion { found: 99, .. })
    ));
    let mut v = good.clone();
    v.push(0);
    assert!(matches!(
        codec::decode::<RequestEnvelope>(&v),
        Err(ProtoError::Malformed { .. })
    ));
    // Every truncation of a valid message is refused, none panics.
    for cut in 1..good.len() {
        assert!(
            codec::decode::<RequestEnvelope>(&good[..cut]).is_err(),
            "cut {cut}"
        );
    }
    // A length field claiming 2^60 bytes does not allocate them.
    let hostile = [FORMAT_VERSION, 0x02, 0xff, 0, 0, 0, 0, 0, 0, 0, 0x10];
    assert!(codec::decode::<RequestEnvelope>(&hostile).is_err());
}

/// Regression (fuzz/fuzz_targets/messages.rs, frame_decode.rs): bincode's varints also
/// accept longer forms of a value; `decode` refuses them, so every value has exactly
/// one encoding (P3, P5: digests and the audit chain are taken over encodings).
#[tokio::test]
async fn non_canonical_encodings_are_refused() {
    // Request variant 5 (a snapshot header: to, header) with `to` written as the
    // three-byte form of 0.
    let canonical = vec![FORMAT_VERSION, 5, 0, 0];
    let stretched = vec![FORMAT_VERSION, 5, 251, 0, 0, 0];
    let value = codec::decode::<Request>(&canonical).unwrap();
    assert_eq!(codec::encode(&value).unwrap(), canonical);
    match codec::decode::<Request>(&stretched) {
        Err(ProtoError::Malformed { reason }) => assert!(reason.contains("non-canonical")),
        other => panic!("a stretched varint decoded: {other:?}"),
    }
    // The frame the fuzzer found: whatever decodes must re-encode to the same bytes.
    let found: [u8; 52] = [
        0x00, 0x00, 0x00, 0x2f, 0x01, 0x00, 0x10, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
        0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x00, 0x00, 0x00, 0x2f, 0x01, 0x00,
        0x10, 0x00, 0x00, 0xfc, 0xfc, 0xfc, 0xfc, 0xfc, 0xfc, 0xfc, 0xfc, 0xfc, 0x01, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x01, 0x60, 0xff,
    ];
    let mut r = &found[..];
    if let Ok(Some(env)) = read_frame::<_, RequestEnvelope>(&mut r, 1 << 20).await {
        let used = found.len() - r.len();
        let mut again = Vec::new();
        write_frame(&mut again, &env, 1 << 20).await.unwrap();
        assert_eq!(again, &found[..used]);
    }
}

/// Shares go out as a trailer of parts, never copied into one buffer first, and
/// arrive as their concatenation, each byte copied once into the reader's buffer; a
/// trailer that ends early or runs past its announced size is refused, the latter
/// before the frame's body is read.
#[tokio::test]
async fn trailers_of_parts_arrive_whole_and_exact() {
    let a: Vec<u8> = (0..TRAILER_CHUNK_BYTES + 10).map(|i| i as u8).collect();
    let b = vec![7u8; 300];
    let mut wire = Vec::new();
    write_trailer(&mut wire, &[&a, &b]).await.unwrap();
    let total = (a.len() + b.len()) as u64;
    let got = read_trailer(&mut wire.as_slice(), total, TRAILER_CHUNK_BYTES as u32)
        .await
        .unwrap();
    assert_eq!(got.len() as u64, total);
    assert_eq!(&got[..a.len()], &a[..]);
    assert_eq!(&got[a.len()..], &b[..]);
    // One byte fewer announced: the last frame would run past it.
    let over = read_trailer(&mut wire.as_slice(), total - 1, TRAILER_CHUNK_BYTES as u32).await;
    assert!(
        matches!(over, Err(kakera_proto::ProtoError::Malformed { .. })),
        "{over:?}"
    );
    // Cut short.
    let short = &wire[..wire.len() - 1];
    assert!(
        read_trailer(&mut &short[..], total, TRAILER_CHUNK_BYTES as u32)
            .await
            .is_err()
    );
    // Reading into a buffer: a frame past the limit is refused before its body is
    // read, and nothing of it is appended.
    let mut dest = vec![1u8; 10];
    let mut r = wire.as_slice();
    let refused = read_frame_into(&mut r, &mut dest, TRAILER_CHUNK_BYTES as u32, 20, 20).await;
    assert!(refused.is_err());
    assert_eq!(dest.len(), 10);
}

#[tokio::test]
async fn frames_round_trip_and_enforce_limits() {
    let msg = envelope(Request::RaftAppend {
        to: 1,
        payload: vec![7; 1000],
    });
    let mut buf = Vec::new();
    write_frame(&mut buf, &msg, 4096).await.unwrap();
    write_frame(&mut buf, &msg, 4096).await.unwrap();
    let mut r = buf.as_slice();
    for _ in 0..2 {
        let got: RequestEnvelope = read_frame(&mut r, 4096).await.unwrap().unwrap();
        assert_eq!(got, msg);
    }
    assert!(
        read_frame::<_, RequestEnvelope>(&mut r, 4096)
            .await
            .unwrap()
            .is_none()
    );

    // Writer refuses an oversized message.
    let mut sink = Vec::new();
    assert!(matches!(
        write_frame(&mut sink, &msg, 100).await,
        Err(ProtoError::TooLarge {
            limit_bytes: 100,
            ..
        })
    ));
    // Reader refuses an oversized announced length before reading (or allocating).
    let mut r = buf.as_slice();
    assert!(matches!(
        read_raw_frame(&mut r, 100).await,
        Err(ProtoError::TooLarge {
            limit_bytes: 100,
            ..
        })
    ));
    // A stream that ends inside the length or the body is truncated, not a clean end.
    for cut in [2usize, 4, 10, buf.len() / 2 - 1] {
        let mut r = &buf[..cut];
        assert!(
            matches!(
                read_raw_frame(&mut r, 4096).await,
                Err(ProtoError::Truncated)
            ),
            "cut {cut}"
        );
    }
}

fn cert_with(uris: &[String], cn: Option<&str>) -> Vec<u8> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    for u in uris {
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from(u.as_str()).unwrap(),
        ));
    }
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(cn) = cn {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
    }
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().der().to_vec()
}

#[test]
fn identities_come_from_certificate_san_uris() {
    let der = cert_with(
        &[Role::Reader.uri(), zone_uri("hsz"), name_uri("job-17")],
        Some("ignored-cn"),
    );
    let id = Identity::from_cert_der(&der).unwrap();
    assert_eq!(id.name, "job-17");
    assert_eq!(id.role, Role::Reader);
    assert!(id.in_zone("hsz"));
    assert_eq!(id.fingerprint, kakera_proto::Fingerprint::of(&der));
    assert_eq!(id.fingerprint.to_hex().len(), 64);

    let id = Identity::from_cert_der(&cert_with(&[Role::Node.uri()], Some("node-1"))).unwrap();
    assert_eq!(id.name, "node-1");
    assert_eq!(id.zone, None);

    let err = |der: Vec<u8>| Identity::from_cert_der(&der).unwrap_err().to_string();
    assert!(err(cert_with(&[], Some("x"))).contains("no kakera role"));
    assert!(
        err(cert_with(
            &[Role::Node.uri(), Role::Reader.uri()],
            Some("x")
        ))
        .contains("more than one")
    );
    assert!(err(cert_with(&["kakera://role/admin".into()], Some("x"))).contains("unknown role"));
    assert!(err(cert_with(&[Role::Node.uri()], None)).contains("no holder"));
    assert!(err(vec![1, 2, 3]).contains("parsable"));
}
