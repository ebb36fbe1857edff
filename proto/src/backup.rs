//! Cluster backups as clients and nodes see them: the backup's id, the directory
//! name an operator gives, and each node's part.
//!
//! A backup is one Raft entry: every node, applying it, takes a RocksDB checkpoint of
//! its state at that entry (catalog and its own shares) and writes its part under
//! `<[backup] root>/<dir>/<rack>/<node>/`. A part never holds more than the node's one
//! share per record, and a rack's directory at most `max_shares_per_rack` (< k), so
//! no backup location holds k shares of a record.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ProtoError;

/// Longest backup directory name, in bytes.
pub const MAX_BACKUP_DIR_BYTES: usize = 200;

/// Format of [`PartManifest`] (the `part.json` of a part). 2: `catalog.snap` is a
/// snapshot file of bounded chunks (format 1 held the catalog as one value).
pub const PART_FORMAT: u32 = 2;

/// A backup's id: 16 random bytes drawn by the leader. Hex text in human-readable
/// formats (`part.json`, `--json`), bytes on the wire.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupId(pub [u8; 16]);

impl Serialize for BackupId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_string())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for BackupId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<BackupId, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            BackupId::parse(&text).map_err(serde::de::Error::custom)
        } else {
            <[u8; 16]>::deserialize(d).map(BackupId)
        }
    }
}

impl BackupId {
    /// Parses 32 hex digits.
    pub fn parse(text: &str) -> Result<BackupId, ProtoError> {
        crate::record::parse_hex(text, "backup id").map(BackupId)
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BackupId({self})")
    }
}

/// Checks a backup directory as an operator names it: a relative path of plain
/// components (letters, digits, `-`, `_`, `.`; no `.` or `..` component), resolved
/// by every node under the config's `[backup] root`, so a request can never make a
/// node write elsewhere.
pub fn validate_backup_dir(dir: &str) -> Result<(), ProtoError> {
    let invalid = |why: &str| ProtoError::Invalid {
        reason: format!("backup directory \"{}\": {why}", dir.escape_debug()),
    };
    if dir.is_empty() || dir.len() > MAX_BACKUP_DIR_BYTES {
        return Err(invalid(&format!(
            "give 1 to {MAX_BACKUP_DIR_BYTES} bytes, like 2026-11-21 or nightly/2026-11-21"
        )));
    }
    if dir.starts_with('/') {
        return Err(invalid(
            "must be relative: nodes write under the config's [backup] root",
        ));
    }
    for part in dir.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(invalid("no empty, '.' or '..' components"));
        }
        if !part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid(
                "use letters, digits, '-', '_', '.' and '/' between components",
            ));
        }
    }
    Ok(())
}

/// What one node wrote for a backup: `part.json` beside its checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartManifest {
    /// [`PART_FORMAT`].
    pub format: u32,
    /// The backup.
    pub backup: BackupId,
    /// The cluster the backup is of.
    pub cluster_id: String,
    /// The node that wrote this part.
    pub node_id: u64,
    /// Its name.
    pub node_name: String,
    /// Its rack.
    pub rack: String,
    /// The log index of the backup entry: the part holds the state right after it.
    pub log_index: u64,
    /// The backup entry's time (Unix ms).
    pub at_ms: u64,
    /// Committed shares in the part.
    pub shares: u64,
    /// Their bytes.
    pub share_bytes: u64,
    /// BLAKE3 of `catalog.snap`, hex (the same on every node of one backup).
    pub catalog_digest: String,
    /// Size of `catalog.snap`.
    pub catalog_bytes: u64,
}

/// Where a node's part of a backup stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartState {
    /// The node has not applied the backup entry yet, or knows nothing of it.
    Unknown,
    /// Checkpoint taken; the part is being written.
    Writing,
    /// Written and synced.
    Done(PartManifest),
    /// The node could not write its part; why, as a sentence.
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_dirs_stay_under_the_root() {
        for ok in ["2026-11-21", "nightly/2026-11-21", "a.b_c-d", "x/y/z"] {
            assert!(validate_backup_dir(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc",
            "../up",
            "a/../b",
            "a//b",
            "a/./b",
            ".",
            "a b",
            "a\\b",
            "ü",
            "a/",
            &"x".repeat(MAX_BACKUP_DIR_BYTES + 1),
        ] {
            assert!(validate_backup_dir(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn backup_ids_print_and_parse_as_hex() {
        let id = BackupId([0xab; 16]);
        assert_eq!(id.to_string(), "ab".repeat(16));
        assert_eq!(BackupId::parse(&id.to_string()).unwrap(), id);
        assert!(BackupId::parse("xyz").is_err());
    }
}
