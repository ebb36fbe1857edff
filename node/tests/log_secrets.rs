//! No secret in logs (P2, P7; SECURITY.md "Keys and secrets"): a put/get workload runs
//! with every node and the client library logging at `trace`, then every log line is
//! scanned for record bytes, share bytes and key material, in the forms a careless
//! log line would print them: raw, hex, and as a `Debug` or JSON list of numbers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use aho_corasick::AhoCorasick;
use common::LocalCluster;
use kakera_client::NewRecord;
use kakera_node::shares::ShareStore;
use kakera_proto::{Date, RecordKind, RecordMeta, SubjectTag};

/// Bytes of one secret are looked for in pieces of this many; any leak of twice as
/// many contiguous bytes contains a whole piece.
const PIECE_BYTES: usize = 16;

/// A named secret.
struct Secret {
    what: String,
    bytes: Vec<u8>,
}

/// The patterns a leak of `bytes` would show, each tagged with its secret's index.
fn patterns(secrets: &[Secret]) -> (Vec<Vec<u8>>, Vec<usize>) {
    let mut pats = Vec::new();
    let mut owner = Vec::new();
    for (i, s) in secrets.iter().enumerate() {
        for piece in s.bytes.chunks_exact(PIECE_BYTES) {
            let hex: String = piece.iter().map(|b| format!("{b:02x}")).collect();
            let list: Vec<String> = piece.iter().map(u8::to_string).collect();
            for p in [
                piece.to_vec(),
                hex.clone().into_bytes(),
                hex.to_uppercase().into_bytes(),
                list.join(", ").into_bytes(),
                list.join(",").into_bytes(),
            ] {
                pats.push(p);
                owner.push(i);
            }
        }
    }
    (pats, owner)
}

/// Every (log name, line number, secret) where a secret shows.
fn leaks(secrets: &[Secret], logs: &[(String, Vec<u8>)]) -> Vec<String> {
    let (pats, owner) = patterns(secrets);
    let ac = AhoCorasick::new(&pats).unwrap();
    let mut found = Vec::new();
    for (name, text) in logs {
        for m in ac.find_iter(text) {
            let line = text[..m.start()].iter().filter(|&&b| b == b'\n').count() + 1;
            // Names the secret and where, never its bytes.
            found.push(format!(
                "{name} line {line}: {}",
                secrets[owner[m.pattern().as_usize()]].what
            ));
        }
    }
    found
}

/// Record bytes no log could contain by chance.
fn random_bytes(seed: u32, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut h = blake3::Hasher::new();
    h.update(b"kakera log_secrets test");
    h.update(&seed.to_le_bytes());
    h.finalize_xof().fill(&mut out);
    out
}

/// The base64 body lines of a PEM private key (what a leaked key file would show).
fn pem_body(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
        .into_bytes()
}

/// Captures the test process's own `tracing` output (the client library, quinn,
/// rustls) at trace level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_scanner_finds_a_leak_in_each_form() {
    // Guards the test below: a scanner that finds nothing would pass it vacuously.
    let secret = random_bytes(99, 64);
    let secrets = [Secret {
        what: "record 99".into(),
        bytes: secret.clone(),
    }];
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let forms = [
        [b"raw ".as_slice(), &secret].concat(),
        format!("DEBUG share={hex}").into_bytes(),
        format!("TRACE bytes={:?}", &secret[3..40]).into_bytes(),
        format!(
            "{{\"data\":{}}}",
            serde_json::to_string(&secret[..36]).unwrap()
        )
        .into_bytes(),
    ];
    for form in forms {
        let log = [b"INFO fine\n".as_slice(), &form, b"\n"].concat();
        let found = leaks(&secrets, &[("synthetic".into(), log)]);
        assert!(!found.is_empty(), "missed a leak");
        assert!(found[0].starts_with("synthetic line 2: record 99"));
    }
    let clean = leaks(
        &secrets,
        &[("synthetic".into(), b"INFO nothing here\n".to_vec())],
    );
    assert!(clean.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_record_share_or_key_bytes_in_any_trace_log() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .unwrap();

    let dir = tempfile::TempDir::new().unwrap();
    let mut cluster = LocalCluster::prepare(dir.path(), 5);
    cluster.rust_log = "trace".into();
    let mut cluster = common::run(cluster).await;
    let (operator, gateway, reader) = common::clients(&cluster);
    common::open_grant(&operator, "log-job", "anon-job").await;

    let records: Vec<Vec<u8>> = (0..12)
        .map(|i| random_bytes(i, 300 + 37 * i as usize))
        .collect();
    let new = records
        .iter()
        .map(|data| NewRecord {
            meta: RecordMeta {
                subject: SubjectTag([3; 32]),
                kind: RecordKind::Claim,
                source: "log-test".into(),
                effective: Date::new(2026, 4, 1).unwrap(),
                data_kind: None,
            },
            data: data.clone(),
        })
        .collect();
    let ids = gateway.put_batch(new).await.unwrap();
    let single = gateway
        .put(NewRecord {
            meta: RecordMeta {
                subject: SubjectTag([4; 32]),
                kind: RecordKind::Checkup,
                source: "log-test".into(),
                effective: Date::new(2026, 4, 2).unwrap(),
                data_kind: None,
            },
            data: random_bytes(1000, 2048),
        })
        .await
        .unwrap();
    let read = reader.get_batch("log-job", &ids).await.unwrap();
    assert_eq!(read.records.len(), records.len(), "{:?}", read.failed);
    for (r, data) in read.records.iter().zip(&records) {
        assert_eq!(r.data.as_slice(), data.as_slice());
    }
    let one = reader.get("log-job", single).await.unwrap();
    assert_eq!(one.data.as_slice(), random_bytes(1000, 2048).as_slice());
    common::wait_all_applied(&operator).await;
    for id in cluster.ids.clone() {
        cluster.kill(id);
    }

    // Everything secret this run produced.
    let mut secrets = Vec::new();
    for (i, data) in records.iter().enumerate() {
        secrets.push(Secret {
            what: format!("record bytes of record {i}"),
            bytes: data.clone(),
        });
    }
    secrets.push(Secret {
        what: "record bytes of the single record".into(),
        bytes: random_bytes(1000, 2048),
    });
    let mut share_count = 0;
    for id in cluster.ids.clone() {
        let db = kakera_node::store::open(&dir.path().join(format!("data/node-{id}/db"))).unwrap();
        let store = ShareStore::new(db);
        for record in ids.iter().chain([&single]) {
            if let Some(share) = store.committed(record).unwrap() {
                share_count += 1;
                secrets.push(Secret {
                    what: format!("share bytes of record {record} on node {id}"),
                    bytes: share.bytes.clone(),
                });
            }
        }
    }
    assert_eq!(
        share_count,
        13 * 5,
        "every record has five committed shares"
    );
    secrets.push(Secret {
        what: "the zone private key".into(),
        bytes: cluster.zone_key.to_vec(),
    });
    for key in walk_keys(dir.path()) {
        secrets.push(Secret {
            what: format!("private key {}", key.display()),
            bytes: pem_body(&key),
        });
    }

    let mut logs: Vec<(String, Vec<u8>)> = cluster
        .ids
        .iter()
        .map(|id| {
            let path = dir.path().join(format!("node-{id}.log"));
            (format!("node-{id}.log"), std::fs::read(path).unwrap())
        })
        .collect();
    logs.push((
        "client (test process)".into(),
        captured.0.lock().unwrap().clone(),
    ));
    for (name, text) in &logs {
        // The scan means something only if trace logging was on.
        assert!(
            text.windows(5).any(|w| w == b"TRACE"),
            "{name} has no trace lines"
        );
    }
    let found = leaks(&secrets, &logs);
    assert!(found.is_empty(), "secrets in logs:\n{}", found.join("\n"));
}

/// Every private key file (`*.key.pem` or `key.pem`) under `dir`.
fn walk_keys(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    // Bounded: a test directory of a few hundred entries.
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with("key.pem") {
                out.push(p);
            }
        }
    }
    assert!(out.len() >= 5, "the nodes' keys at least: {out:?}");
    out
}
