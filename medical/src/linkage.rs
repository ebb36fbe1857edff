//! The linkage key: the secret that turns a facility's patient id into the subject
//! tag every node sees, and an SS-MIX2 file into a stable record id. Only the
//! linking step (the ingest gateway, the opt-out desk) holds it; nodes never do.
//!
//! - subject tag = HMAC-SHA256(key, `"kakera subject v1" 0x00 facility 0x00 patient`);
//! - record id = the source timestamp's Unix ms (48 bits), then the first 10 bytes of
//!   HMAC-SHA256(key, `"kakera record v1" 0x00 facility 0x00 name`), where `name` is
//!   the SS-MIX2 file name without its condition flag. The same file gives the same
//!   id on every run, so ingest is idempotent, and the id reveals neither patient
//!   nor order without the key.
//!
//! The 0x00 separators keep `("13", "100")` and `("131", "00")` apart.
//!
//! The key file is TOML (mode 0600): `kakera_linkage_key = 1` and `key = "<64 hex>"`.

use std::path::Path;

use kakera_proto::{RecordId, SubjectTag};
use ring::hmac;
use zeroize::Zeroizing;

use crate::error::MedicalError;

/// Format version of linkage key files.
const KEY_FILE_VERSION: u32 = 1;

/// The linkage key (32 bytes, zeroized on drop).
pub struct LinkageKey {
    bytes: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for LinkageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkageKey(..)")
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct KeyFile {
    kakera_linkage_key: u32,
    key: String,
}

impl LinkageKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> LinkageKey {
        LinkageKey {
            bytes: Zeroizing::new(bytes),
        }
    }

    /// A new random key.
    pub fn generate() -> Result<LinkageKey, MedicalError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut())
            .map_err(|e| MedicalError::Invalid(format!("no randomness for the key: {e}")))?;
        Ok(LinkageKey { bytes })
    }

    /// Writes the key to a new file (mode 0600; an existing file is never replaced).
    pub fn write(&self, path: &Path) -> Result<(), MedicalError> {
        let text = Zeroizing::new(
            toml::to_string(&KeyFile {
                kakera_linkage_key: KEY_FILE_VERSION,
                key: kakera_client::zone::hex(self.bytes.as_ref()),
            })
            .map_err(|e| MedicalError::Invalid(format!("encoding the key file: {e}")))?,
        );
        let body = Zeroizing::new(format!(
            "# kakera linkage key: turns patient ids into subject tags. Keep it with the \
             linking step only; never give it to a node.\n{}",
            text.as_str()
        ));
        Ok(kakera_client::files::write_new(path, &body, 0o600)?)
    }

    /// Reads a key file. Its contents are never echoed in an error.
    pub fn load(path: &Path) -> Result<LinkageKey, MedicalError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| MedicalError::File {
                    path: path.to_path_buf(),
                    source,
                })?,
            );
        let bad = || {
            MedicalError::Invalid(format!(
                "{} is not a kakera linkage key file (make one with `kakera linkage keygen`)",
                path.display()
            ))
        };
        let file: KeyFile = toml::from_str(&text).map_err(|_| bad())?;
        let key = Zeroizing::new(file.key);
        if file.kakera_linkage_key != KEY_FILE_VERSION {
            return Err(MedicalError::Invalid(format!(
                "{}: linkage key file version {} (this build reads {KEY_FILE_VERSION})",
                path.display(),
                file.kakera_linkage_key
            )));
        }
        let bytes =
            kakera_proto::record::parse_hex::<32>(&key, "linkage key").map_err(|_| bad())?;
        Ok(LinkageKey::from_bytes(bytes))
    }

    fn mac(&self, label: &str, parts: &[&str]) -> [u8; 32] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.bytes.as_ref());
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(label.as_bytes());
        for p in parts {
            ctx.update(&[0]);
            ctx.update(p.as_bytes());
        }
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// The subject tag of `patient` at `facility`.
    pub fn subject_tag(&self, facility: &str, patient: &str) -> SubjectTag {
        SubjectTag(self.mac("kakera subject v1", &[facility, patient]))
    }

    /// The stable record id of a source file `name` (without its condition flag) at
    /// `facility`, created at `unix_ms` by the source's clock.
    pub fn record_id(&self, facility: &str, name: &str, unix_ms: u64) -> RecordId {
        let mac = self.mac("kakera record v1", &[facility, name]);
        let mut random = [0u8; 10];
        random.copy_from_slice(&mac[..10]);
        RecordId::from_parts(unix_ms, random)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use super::*;

    /// P6 (opt-out by patient id): the tag is a keyed function of facility and
    /// patient: stable, different across facilities, patients and keys, and the
    /// separator keeps shifted splits apart.
    #[test]
    fn tags_are_stable_keyed_and_unambiguous() {
        let k = LinkageKey::from_bytes([7; 32]);
        let t = k.subject_tag("1310000001", "0000012345");
        assert_eq!(t, k.subject_tag("1310000001", "0000012345"));
        assert_ne!(t, k.subject_tag("1310000002", "0000012345"));
        assert_ne!(t, k.subject_tag("1310000001", "0000012346"));
        assert_ne!(
            t,
            LinkageKey::from_bytes([8; 32]).subject_tag("1310000001", "0000012345")
        );
        assert_ne!(k.subject_tag("13", "100"), k.subject_tag("131", "00"));
        // HMAC-SHA256 known answer (RFC 4231 case 2 shape): key "Jefe".
        let mut jefe = [0u8; 32];
        jefe[..4].copy_from_slice(b"Jefe");
        let key = hmac::Key::new(hmac::HMAC_SHA256, &jefe);
        let direct = hmac::sign(&key, b"kakera subject v1\0a\0b");
        assert_eq!(
            LinkageKey::from_bytes(jefe).subject_tag("a", "b").0,
            direct.as_ref()
        );
    }

    #[test]
    fn record_ids_are_stable_and_time_ordered() {
        let k = LinkageKey::from_bytes([1; 32]);
        let a = k.record_id("f", "x_1", 1_700_000_000_000);
        assert_eq!(a, k.record_id("f", "x_1", 1_700_000_000_000));
        assert_eq!(a.unix_ms(), 1_700_000_000_000);
        assert_ne!(a, k.record_id("f", "x_2", 1_700_000_000_000));
        assert!(k.record_id("f", "x_1", 1_700_000_000_001) > a);
    }

    #[test]
    fn key_files_round_trip_and_never_echo() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("linkage.key");
        let k = LinkageKey::generate().unwrap();
        k.write(&path).unwrap();
        assert!(k.write(&path).is_err(), "never overwritten");
        let back = LinkageKey::load(&path).unwrap();
        assert_eq!(back.subject_tag("a", "b"), k.subject_tag("a", "b"));
        let secretish = "kakera_linkage_key = 1\nkey = \"zz-secret-zz\"\n";
        std::fs::write(dir.path().join("bad.key"), secretish).unwrap();
        let e = LinkageKey::load(&dir.path().join("bad.key"))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("zz-secret-zz"), "{e}");
        assert!(format!("{k:?}") == "LinkageKey(..)");
    }
}
