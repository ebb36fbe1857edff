//! The audit log's entries and their hash chain. The state machine appends one entry
//! per audited command when it applies it (so the entry is committed before the
//! action takes effect); each entry carries the hash of the one before, so removing,
//! reordering or changing any entry breaks every later link. [`verify_chain`] checks
//! a run of entries and says exactly where it breaks.
//!
//! Entries name who, what, which records or job, and the outcome. They never hold
//! record bytes, share bytes or keys.

use serde::{Deserialize, Serialize};

use crate::catalog::Actor;
use crate::codec;
use crate::message::RequestId;
use crate::record::RecordId;

/// Domain separation for entry hashes.
const HASH_CONTEXT: &[u8] = b"kakera audit entry v1";

/// What was done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditAction {
    /// The Raft group was bound to a cluster id.
    InitCluster,
    /// A node registered a new Raft member id.
    RegisterIncarnation {
        /// The config node id.
        node: u64,
        /// The member id, as `node#incarnation`.
        member: String,
    },
    /// The voter and learner sets changed.
    Membership {
        /// Voters, as member ids.
        voters: Vec<String>,
        /// Learners, as member ids.
        learners: Vec<String>,
    },
    /// Operator metadata was set.
    SetMeta {
        /// The key.
        key: String,
    },
    /// Records were committed (made visible).
    CommitRecords,
    /// A read ticket was opened for a job.
    OpenRead {
        /// The ticket id (the entry's log index).
        ticket: u64,
    },
    /// An auditor opened a verification run.
    AuditRun {
        /// The ticket id (the entry's log index).
        ticket: u64,
        /// Deep (shares fetched) or light (digests only).
        deep: bool,
    },
    /// An auditor checked that nodes hold nothing of records.
    ErasureCheck {
        /// The ticket id (the entry's log index).
        ticket: u64,
    },
    /// An operator changed a node's mode.
    NodeMode {
        /// The node.
        node: u64,
        /// The new mode.
        mode: crate::catalog::NodeMode,
        /// Why.
        reason: String,
    },
    /// The leader assigned share moves (records listed in the entry, in task order).
    RepairAssign {
        /// Each task as (x, from node, to node).
        moves: Vec<(u8, u64, u64)>,
    },
    /// Share moves completed: holders changed in the catalog.
    RepairCommit {
        /// Each move as (x, from node, to node).
        moves: Vec<(u8, u64, u64)>,
    },
    /// A grant was created.
    CreateGrant {
        /// Its expiry (Unix ms).
        expires_at_ms: u64,
        /// The committee's approval reference.
        approval: String,
    },
    /// A grant was revoked.
    RevokeGrant {
        /// Why.
        reason: String,
    },
    /// Records erased (their ids are the entry's records); for an opt-out, the
    /// subject.
    Erase {
        /// The opted-out subject, for a subject erasure.
        subject: Option<crate::record::SubjectTag>,
        /// Why.
        reason: String,
    },
    /// An operator took a cluster backup: every node wrote its part at this entry.
    Backup {
        /// The backup's id (hex).
        backup: String,
        /// Its directory under the config's `[backup] root`.
        dir: String,
    },
    /// The cluster was restored from a backup: entries before this one are the
    /// backed-up cluster's, up to the backup's entry; later ones are the restored
    /// cluster's.
    Restored {
        /// The backup's id (hex).
        backup: String,
    },
    /// A read ticket was opened for a job, admitting the entry's records and leaving
    /// out others the job asked for ([`crate::Request::OpenReadEach`]).
    OpenReadEach {
        /// The ticket id (the entry's log index).
        ticket: u64,
        /// The records asked for and left out (erased, not in the catalog, outside
        /// the scope).
        refused: Vec<crate::record::RecordId>,
    },
    /// A grant was created with the review committee's signatures.
    CreateSignedGrant {
        /// Its expiry (Unix ms).
        expires_at_ms: u64,
        /// The committee's approval reference.
        approval: String,
        /// The members whose signatures approved it.
        signers: Vec<String>,
    },
    /// The review committee was recorded from the config.
    Committee {
        /// Signatures a grant needs.
        threshold: u8,
        /// The members.
        members: Vec<String>,
    },
    /// A certificate revocation list was recorded: its certificates are refused.
    Revoke {
        /// The issuing CA's name.
        issuer: String,
        /// The CRL number (hex).
        crl_number: String,
        /// Every serial (hex) the CRL revokes, with its reason if it gives one.
        serials: Vec<(String, Option<String>)>,
        /// The holders of the revoked certificates given with it (name, serial hex).
        holders: Vec<(String, String)>,
    },
    /// Bad shares were reported (the entry's records, in order, with these nodes
    /// and problems).
    ShareReport {
        /// (node, problem) per reported record.
        shares: Vec<(u64, crate::catalog::ShareProblem)>,
    },
}

impl AuditAction {
    /// A short name for listings and filters.
    pub fn as_str(&self) -> &'static str {
        match self {
            AuditAction::InitCluster => "init-cluster",
            AuditAction::Backup { .. } => "backup",
            AuditAction::Restored { .. } => "restored",
            AuditAction::RegisterIncarnation { .. } => "register-incarnation",
            AuditAction::Membership { .. } => "membership",
            AuditAction::SetMeta { .. } => "set-meta",
            AuditAction::CommitRecords => "commit",
            AuditAction::OpenRead { .. } | AuditAction::OpenReadEach { .. } => "open-read",
            AuditAction::AuditRun { .. } => "audit-run",
            AuditAction::ErasureCheck { .. } => "erasure-check",
            AuditAction::NodeMode { .. } => "node-mode",
            AuditAction::RepairAssign { .. } => "repair-assign",
            AuditAction::RepairCommit { .. } => "repair-commit",
            AuditAction::CreateGrant { .. } | AuditAction::CreateSignedGrant { .. } => {
                "grant-create"
            }
            AuditAction::Committee { .. } => "committee",
            AuditAction::Revoke { .. } => "revoke",
            AuditAction::ShareReport { .. } => "share-report",
            AuditAction::RevokeGrant { .. } => "grant-revoke",
            AuditAction::Erase { .. } => "erase",
        }
    }
}

/// Whether the action took effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// It took effect.
    Applied,
    /// It was refused; nothing changed but this entry.
    Refused {
        /// Why, as a sentence.
        reason: String,
    },
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// The hash of entry `seq - 1` (all zeros for the first).
    pub prev: [u8; 32],
    /// The Raft log index of the command it records.
    pub log_index: u64,
    /// Leader time (Unix ms), never earlier than the entry before.
    pub at_ms: u64,
    /// Who.
    pub actor: Actor,
    /// The caller's request id, where a request caused it.
    pub request_id: Option<RequestId>,
    /// What.
    pub action: AuditAction,
    /// The job, for grant and read entries.
    pub job: Option<String>,
    /// The records concerned.
    pub records: Vec<RecordId>,
    /// Whether it took effect.
    pub outcome: Outcome,
}

impl AuditEntry {
    /// The entry's hash: BLAKE3 over a context string and the encoded entry.
    #[allow(clippy::expect_used)] // see the comment at the call
    pub fn hash(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(HASH_CONTEXT);
        // Encoding a plain struct into a Vec cannot fail: no maps, no limits reached
        // below the codec's 64 MiB cap for an entry bounded by MAX_BATCH_RECORDS ids.
        let bytes = codec::encode(self).expect("an audit entry always encodes");
        h.update(&bytes);
        *h.finalize().as_bytes()
    }
}

/// Where a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    /// An entry's sequence number is not the one after its predecessor's.
    #[error("entry {found} follows entry {after}: entries are missing or out of order")]
    Gap {
        /// The sequence number before.
        after: u64,
        /// The one found.
        found: u64,
    },
    /// An entry's `prev` is not its predecessor's hash.
    #[error(
        "entry {seq} does not link to the entry before it: entry {} or an earlier one was changed",
        seq - 1
    )]
    BadLink {
        /// The entry whose link fails.
        seq: u64,
    },
    /// Time runs backwards.
    #[error("entry {seq} is dated before the entry before it")]
    TimeBackwards {
        /// The entry.
        seq: u64,
    },
}

/// Checks a run of consecutive entries. `before` is the hash and sequence number of
/// the entry just before the run (`([0; 32], 0)` when the run starts at the first
/// entry). Returns the hash of the last entry.
pub fn verify_chain<'a>(
    before: ([u8; 32], u64),
    entries: impl IntoIterator<Item = &'a AuditEntry>,
) -> Result<[u8; 32], ChainBreak> {
    let (mut prev, mut seq) = before;
    let mut prev_at = 0;
    for e in entries {
        if e.seq != seq + 1 {
            return Err(ChainBreak::Gap {
                after: seq,
                found: e.seq,
            });
        }
        if e.prev != prev {
            return Err(ChainBreak::BadLink { seq: e.seq });
        }
        if e.at_ms < prev_at {
            return Err(ChainBreak::TimeBackwards { seq: e.seq });
        }
        prev = e.hash();
        seq = e.seq;
        prev_at = e.at_ms;
    }
    Ok(prev)
}

/// What an audit log query selects.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AuditQuery {
    /// Only entries naming this record.
    pub record: Option<RecordId>,
    /// Only entries naming this job.
    pub job: Option<String>,
    /// Only entries at or after this time (Unix ms).
    pub since_ms: Option<u64>,
    /// Start after this sequence number (paging).
    pub after_seq: u64,
    /// Most entries in the answer.
    pub limit: u32,
}

/// Most entries one audit answer carries.
pub const MAX_AUDIT_PAGE: u32 = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(len: u64) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for seq in 1..=len {
            let prev = out.last().map_or([0; 32], AuditEntry::hash);
            out.push(AuditEntry {
                seq,
                prev,
                log_index: seq + 10,
                at_ms: 1_000 + seq,
                actor: Actor::cluster(),
                request_id: None,
                action: AuditAction::CommitRecords,
                job: None,
                records: vec![RecordId([seq as u8; 16])],
                outcome: Outcome::Applied,
            });
        }
        out
    }

    /// P5: the chain verifies end to end, and each kind of tampering is named at the
    /// entry where it shows.
    #[test]
    fn tampering_is_found_where_it_happened() {
        let c = chain(6);
        assert_eq!(verify_chain(([0; 32], 0), &c), Ok(c[5].hash()));
        // A run in the middle verifies from its predecessor.
        assert!(verify_chain((c[1].hash(), 2), &c[2..]).is_ok());

        let mut changed = c.clone();
        changed[2].records = vec![RecordId([99; 16])];
        assert_eq!(
            verify_chain(([0; 32], 0), &changed),
            Err(ChainBreak::BadLink { seq: 4 })
        );

        let mut removed = c.clone();
        removed.remove(3);
        assert_eq!(
            verify_chain(([0; 32], 0), &removed),
            Err(ChainBreak::Gap { after: 3, found: 5 })
        );

        let mut refused = c.clone();
        refused[5].outcome = Outcome::Refused { reason: "x".into() };
        // The last entry's change shows in its hash (what the head records).
        assert_ne!(verify_chain(([0; 32], 0), &refused), Ok(c[5].hash()));

        let mut backwards = c.clone();
        backwards[4].at_ms = 0;
        backwards[5].prev = backwards[4].hash();
        assert_eq!(
            verify_chain(([0; 32], 0), &backwards),
            Err(ChainBreak::TimeBackwards { seq: 5 })
        );
    }
}
