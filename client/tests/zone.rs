//! Zone key custody and sealing. Guards P2 (what is shared is ciphertext only the zone
//! key opens; the ingest side cannot read) and the custody rules (t of m custodians
//! rebuild the key, fewer or mixed files do not; key files are 0600 and never
//! overwritten).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use kakera_client::ClientError;
use kakera_client::seal::{SEAL_OVERHEAD_BYTES, ZonePrivateKey, open, seal};
use kakera_client::zone::{self, Custody};
use kakera_proto::{Date, RecordId, RecordKind, RecordMeta, SubjectTag};

fn meta() -> RecordMeta {
    RecordMeta {
        subject: SubjectTag([7; 32]),
        kind: RecordKind::Ssmix2,
        source: "1312345678".into(),
        effective: Date::new(2024, 4, 1).unwrap(),
        data_kind: None,
    }
}

fn id(n: u8) -> RecordId {
    RecordId::from_parts(1_700_000_000_000, [n; 10])
}

#[test]
fn a_sealed_record_opens_only_with_the_zone_key_and_its_own_id_metadata_and_cluster() {
    let (sk, pk) = ZonePrivateKey::generate();
    let record = b"MSH|^~\\&|HIS|TOKYO-GENERAL|...PID|||1234567^^^^PI||YAMADA^TARO".repeat(20);
    let sealed = seal(&pk, "c1", &id(1), &meta(), &record).unwrap();
    assert_eq!(sealed.len(), record.len() + SEAL_OVERHEAD_BYTES);
    // P2: the shared bytes do not carry the plaintext.
    assert!(
        !sealed
            .windows(16)
            .any(|w| record.windows(16).any(|r| r == w))
    );
    assert_eq!(
        open(&sk, "c1", &id(1), &meta(), &sealed)
            .unwrap()
            .as_slice(),
        &record[..]
    );

    let (other_sk, _) = ZonePrivateKey::generate();
    let mut relabelled = meta();
    relabelled.kind = RecordKind::Death;
    let mut tampered = sealed.clone();
    tampered[100] ^= 1;
    for (what, result) in [
        (
            "another key",
            open(&other_sk, "c1", &id(1), &meta(), &sealed),
        ),
        ("another id", open(&sk, "c1", &id(2), &meta(), &sealed)),
        (
            "other metadata",
            open(&sk, "c1", &id(1), &relabelled, &sealed),
        ),
        ("another cluster", open(&sk, "c2", &id(1), &meta(), &sealed)),
        (
            "a flipped byte",
            open(&sk, "c1", &id(1), &meta(), &tampered),
        ),
        (
            "truncation",
            open(&sk, "c1", &id(1), &meta(), &sealed[..20]),
        ),
    ] {
        let e = result.err().unwrap_or_else(|| panic!("{what} opened"));
        assert!(matches!(e, ClientError::Seal(_)), "{what}: {e}");
    }
    // Empty records seal and open too.
    let empty = seal(&pk, "c1", &id(3), &meta(), b"").unwrap();
    assert!(open(&sk, "c1", &id(3), &meta(), &empty).unwrap().is_empty());
    // Two sealings of the same record differ (fresh encapsulation each time).
    assert_ne!(seal(&pk, "c1", &id(1), &meta(), &record).unwrap(), sealed);
}

fn mode(p: &PathBuf) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn keygen_writes_a_0600_private_key_that_loads_and_matches_and_never_overwrites() {
    let dir = tempfile::TempDir::new().unwrap();
    let made = zone::keygen(dir.path(), "hsz", Custody::Single).unwrap();
    assert_eq!(made.secret_files.len(), 1);
    assert_eq!(mode(&made.secret_files[0]), 0o600);
    let sk = zone::load_private(&made.secret_files[0]).unwrap();
    assert_eq!(sk.public_key().unwrap(), made.public);
    assert_eq!(zone::load_public(&made.public_file).unwrap(), made.public);
    let again = zone::keygen(dir.path(), "hsz", Custody::Single).unwrap_err();
    assert!(matches!(again, ClientError::Exists { .. }), "{again}");
    // The first key is untouched.
    assert_eq!(
        zone::load_private(&made.secret_files[0])
            .unwrap()
            .public_key()
            .unwrap(),
        made.public
    );
}

#[test]
fn any_threshold_of_the_custodians_rebuild_the_key_and_fewer_or_mixed_files_do_not() {
    let dir = tempfile::TempDir::new().unwrap();
    let made = zone::keygen(
        dir.path(),
        "hsz",
        Custody::Split {
            custodians: 5,
            threshold: 3,
        },
    )
    .unwrap();
    let files = &made.secret_files;
    assert_eq!(files.len(), 5);
    assert!(files.iter().all(|f| mode(f) == 0o600));
    assert!(!dir.path().join(zone::PRIVATE_FILE).exists());
    // Every 3-subset rebuilds the same key.
    for a in 0..5 {
        for b in a + 1..5 {
            for c in b + 1..5 {
                let (sk, pk) =
                    zone::unseal(&[files[a].clone(), files[b].clone(), files[c].clone()]).unwrap();
                assert_eq!(pk, made.public);
                assert_eq!(sk.public_key().unwrap(), made.public);
            }
        }
    }
    let two = zone::unseal(&files[..2]).unwrap_err().to_string();
    assert!(two.contains("needs 3"), "{two}");
    let dup = zone::unseal(&[files[0].clone(), files[0].clone(), files[1].clone()])
        .unwrap_err()
        .to_string();
    assert!(dup.contains("repeats"), "{dup}");
    // A file from another key is refused, not silently combined.
    let other = tempfile::TempDir::new().unwrap();
    let other_made = zone::keygen(
        other.path(),
        "hsz",
        Custody::Split {
            custodians: 3,
            threshold: 3,
        },
    )
    .unwrap();
    let mixed = zone::unseal(&[
        files[0].clone(),
        files[1].clone(),
        other_made.secret_files[2].clone(),
    ])
    .unwrap_err()
    .to_string();
    assert!(mixed.contains("another zone key"), "{mixed}");
    // A damaged file is refused with its name, and its contents are not echoed.
    let text = std::fs::read_to_string(&files[2]).unwrap();
    std::fs::write(&files[2], text.replace("share = \"", "share = \"zz")).unwrap();
    let damaged = zone::unseal(&[files[0].clone(), files[1].clone(), files[2].clone()])
        .unwrap_err()
        .to_string();
    assert!(damaged.contains("custodian-3.key"), "{damaged}");
    // Bad policies are refused before anything is written.
    let empty = tempfile::TempDir::new().unwrap();
    for (m, t) in [(3, 4), (5, 1), (40, 3)] {
        let e = zone::keygen(
            empty.path(),
            "hsz",
            Custody::Split {
                custodians: m,
                threshold: t,
            },
        )
        .unwrap_err();
        assert!(matches!(e, ClientError::Invalid(_)), "{e}");
    }
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
}
