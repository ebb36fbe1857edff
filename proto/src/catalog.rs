//! What the Raft catalog holds, as clients see it: committed records (metadata,
//! holders, digests; never record or share bytes), grants, read tickets, and the actor
//! of every change. The checks a node makes before it lets a reader in are pure
//! functions here ([`Grant::permits`]), so the leader, the state machine and the tests
//! use the same rules.

use serde::{Deserialize, Serialize};

use crate::error::ProtoError;
use crate::identity::{Fingerprint, Identity, Role};
use crate::record::{Digest, RecordId, RecordKind, RecordMeta, SubjectTag};

/// Most records in one commit or one read ticket.
pub const MAX_BATCH_RECORDS: usize = 4096;
/// Largest record (plaintext bytes) the cluster stores.
pub const MAX_RECORD_BYTES: u64 = 64 * 1024 * 1024;
/// Plaintext bytes of every segment but the last of a record stored as segments
/// (the cluster's `max_record_bytes` if that is smaller): what a streamed put holds
/// per segment, and what one segment's read returns at most.
pub const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// Most segments of one record (the parent and its parts commit in one entry):
/// 32 GiB at [`SEGMENT_BYTES`].
pub const MAX_SEGMENTS: usize = MAX_BATCH_RECORDS;
/// Most part entries in one answer to [`crate::Request::Segments`].
pub const MAX_SEGMENT_PAGE: usize = 256;
/// Most bytes of a job name or an approval reference.
pub const MAX_JOB_BYTES: usize = 128;
/// Most entries in each list of a grant's scope.
pub const MAX_SCOPE_ITEMS: usize = 1024;

/// Who did something, as the certificate said when the request arrived.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Actor {
    /// The certificate's holder name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its zone, if any.
    pub zone: Option<String>,
    /// The certificate's SHA-256 fingerprint.
    pub fingerprint: Fingerprint,
}

impl Actor {
    /// The actor a request's certificate names.
    pub fn of(identity: &Identity) -> Actor {
        Actor {
            name: identity.name.clone(),
            role: identity.role,
            zone: identity.zone.clone(),
            fingerprint: identity.fingerprint,
        }
    }

    /// The cluster itself (membership changes made by the leader's duties).
    pub fn cluster() -> Actor {
        Actor {
            name: "cluster".into(),
            role: Role::Node,
            zone: None,
            fingerprint: Fingerprint([0; 32]),
        }
    }
}

/// One holder of a record's share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The config node id.
    pub node: u64,
    /// The share's x coordinate (1..=n).
    pub x: u8,
    /// BLAKE3-256 of the encoded share the node stores.
    pub digest: Digest,
}

/// A committed record as the catalog holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordEntry {
    /// The record.
    pub id: RecordId,
    /// Its metadata (bound into the seal's associated data).
    pub meta: RecordMeta,
    /// Length of the sealed bytes (plaintext plus the seal's overhead).
    pub sealed_len: u64,
    /// BLAKE3-256 of the sealed bytes.
    pub sealed_digest: Digest,
    /// Shares needed to rebuild the sealed bytes (1: a plain replica, benchmark
    /// clusters only).
    pub k: u8,
    /// The n holders, one share each.
    pub holders: Vec<Holder>,
    /// When the commit was applied (leader time, Unix ms); 0 in a proposal.
    pub committed_at_ms: u64,
}

impl RecordEntry {
    /// Checks what the entry says of itself: metadata, size, k within n, x values
    /// 1..=n and distinct. (The rack rule needs the topology: the node checks it.)
    /// k = 1 is a plain replica ([`crate::replica`]): every holder keeps a whole copy.
    /// It is valid in shape; nodes refuse it unless their config is a benchmark
    /// cluster's with `[baseline] plain_replicas`.
    pub fn validate(&self) -> Result<(), ProtoError> {
        let bad = |reason: String| ProtoError::Invalid { reason };
        self.meta.validate()?;
        let n = self.holders.len();
        if self.k == 0 || usize::from(self.k) > n || n > 255 {
            return Err(bad(format!(
                "record {}: threshold {} of {n} holders is not a valid policy",
                self.id, self.k
            )));
        }
        if self.sealed_len == 0 || self.sealed_len > MAX_RECORD_BYTES + 1024 {
            return Err(bad(format!(
                "record {}: sealed length {} is outside 1..={} bytes",
                self.id,
                self.sealed_len,
                MAX_RECORD_BYTES + 1024
            )));
        }
        let mut xs = [false; 256];
        for h in &self.holders {
            if h.x == 0 || usize::from(h.x) > n || xs[usize::from(h.x)] {
                return Err(bad(format!(
                    "record {}: share x values must be 1..={n}, each once",
                    self.id
                )));
            }
            xs[usize::from(h.x)] = true;
        }
        Ok(())
    }

    /// Whether two entries describe the same record (a retried commit), whenever
    /// they were committed.
    pub fn same_content(&self, other: &RecordEntry) -> bool {
        self.id == other.id
            && self.meta == other.meta
            && self.sealed_len == other.sealed_len
            && self.sealed_digest == other.sealed_digest
            && self.k == other.k
            && self.holders == other.holders
    }

    /// Whether the entry is a plain replica (k = 1, benchmark clusters only).
    pub fn is_plain_replica(&self) -> bool {
        self.k == 1
    }

    /// The holder on `node`, if any.
    pub fn holder_on(&self, node: u64) -> Option<&Holder> {
        self.holders.iter().find(|h| h.node == node)
    }
}

/// The metadata of every part (segment 1 onwards) of a record with `parent`'s
/// metadata: the parent's subject, source and date (so a subject's erasure and the
/// per-source indexes find the parts), kind [`RecordKind::Segment`], no data kind.
pub fn segment_meta(parent: &RecordMeta) -> RecordMeta {
    RecordMeta {
        subject: parent.subject,
        kind: RecordKind::Segment,
        source: parent.source.clone(),
        effective: parent.effective,
        data_kind: None,
    }
}

/// Checks the shape of a segmented commit: the parent (segment 0) first, then its
/// parts in order; 2 to [`MAX_SEGMENTS`] segments with distinct ids; the parent not
/// a segment; each part's metadata [`segment_meta`] of the parent's; every segment
/// but the last as long as the parent (full), the last no longer. Each entry's own
/// shape is [`RecordEntry::validate`]'s.
pub fn check_segmented(records: &[RecordEntry]) -> Result<(), ProtoError> {
    let bad = |reason: String| Err(ProtoError::Invalid { reason });
    let Some((parent, parts)) = records.split_first() else {
        return bad("a segmented record needs its segments".into());
    };
    if records.len() < 2 || records.len() > MAX_SEGMENTS {
        return bad(format!(
            "a segmented record has 2 to {MAX_SEGMENTS} segments, not {}",
            records.len()
        ));
    }
    if parent.meta.kind == RecordKind::Segment {
        return bad(format!(
            "record {}: the first segment carries the record's own kind",
            parent.id
        ));
    }
    let meta = segment_meta(&parent.meta);
    let mut ids = std::collections::BTreeSet::new();
    for (i, r) in records.iter().enumerate() {
        r.validate()?;
        if !ids.insert(r.id) {
            return bad(format!(
                "record {}: an id appears twice among its segments",
                r.id
            ));
        }
        let last = i + 1 == records.len();
        if i > 0 && r.meta != meta {
            return bad(format!(
                "record {}: segment {i} ({}) must carry the segment metadata of its parent",
                parent.id, r.id
            ));
        }
        if (!last && r.sealed_len != parent.sealed_len) || r.sealed_len > parent.sealed_len {
            return bad(format!(
                "record {}: every segment but the last is as long as the first",
                parent.id
            ));
        }
    }
    debug_assert_eq!(parts.len() + 1, records.len());
    Ok(())
}

/// Which records a grant covers. An empty list means "any" for that dimension; every
/// non-empty list must match.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GrantScope {
    /// Record kinds.
    pub kinds: Vec<RecordKind>,
    /// Source facilities.
    pub sources: Vec<String>,
    /// Subjects.
    pub subjects: Vec<SubjectTag>,
}

impl GrantScope {
    /// Whether a record with `meta` is within the scope.
    /// A segment is covered only through its parent: never by a scope.
    pub fn covers(&self, meta: &RecordMeta) -> bool {
        meta.kind != RecordKind::Segment
            && (self.kinds.is_empty() || self.kinds.contains(&meta.kind))
            && (self.sources.is_empty() || self.sources.contains(&meta.source))
            && (self.subjects.is_empty() || self.subjects.contains(&meta.subject))
    }

    /// Listing filters whose union holds every record the scope covers, each record
    /// under one filter only (subjects, sources and kinds each partition the
    /// catalog): the narrowest listed dimension, or [`ListFilter::All`] for an
    /// unrestricted scope. A listing still passes each entry through [`Self::covers`].
    pub fn list_filters(&self) -> Vec<ListFilter> {
        let by_subject = || {
            self.subjects
                .iter()
                .map(|s| ListFilter::Subject(*s))
                .collect()
        };
        let by_source = || {
            self.sources
                .iter()
                .map(|s| ListFilter::Source(s.clone()))
                .collect()
        };
        let by_kind = || self.kinds.iter().map(|k| ListFilter::Kind(*k)).collect();
        if !self.subjects.is_empty() {
            by_subject()
        } else if !self.sources.is_empty()
            && (self.kinds.is_empty() || self.sources.len() <= self.kinds.len())
        {
            by_source()
        } else if !self.kinds.is_empty() {
            by_kind()
        } else {
            vec![ListFilter::All]
        }
    }
}

/// A review committee's approval for a job to read records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The job it is for (unique among grants).
    pub job: String,
    /// The certificate name of the reader that may use it.
    pub reader: String,
    /// Which records.
    pub scope: GrantScope,
    /// When it stops (Unix ms, leader time).
    pub expires_at_ms: u64,
    /// The committee's approval reference.
    pub approval: String,
    /// When it was created (leader time; set on apply).
    pub created_at_ms: u64,
    /// Who created it (set on apply).
    pub created_by: String,
    /// When and by whom it was revoked, and why.
    pub revoked: Option<Revocation>,
}

/// The revocation of a grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// When (leader time).
    pub at_ms: u64,
    /// Who.
    pub by: String,
    /// Why.
    pub reason: String,
}

/// Why one record was left out of a read ticket that admitted the others
/// ([`crate::Request::OpenReadEach`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordRefusal {
    /// The record was erased (P6): nothing of it can be read.
    Erased {
        /// When (leader time, Unix ms).
        at_ms: u64,
        /// Who erased it (certificate name).
        by: String,
        /// Why.
        reason: String,
    },
    /// The catalog holds no such record and never erased one by that id.
    NotInCatalog,
    /// The grant's scope does not cover the record.
    OutOfScope {
        /// Its kind.
        kind: RecordKind,
        /// Its source facility.
        facility: String,
    },
}

impl std::fmt::Display for RecordRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordRefusal::Erased { by, reason, .. } => {
                write!(f, "erased by {by} ({reason}); nothing of it can be read")
            }
            RecordRefusal::NotInCatalog => f.write_str("not in the catalog"),
            RecordRefusal::OutOfScope { kind, facility } => write!(
                f,
                "outside the grant's scope (kind {}, facility {facility})",
                kind.as_str()
            ),
        }
    }
}

/// A record left out of a read ticket, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedRecord {
    /// The record.
    pub record: RecordId,
    /// Why.
    pub why: RecordRefusal,
}

/// Why a read is refused under a grant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadRefusal {
    /// Only readers read.
    #[error("a certificate with role '{role}' may not read records")]
    NotReader {
        /// The actor's role.
        role: Role,
    },
    /// Readers read only from the high-security zone.
    #[error("reader '{name}' is not in zone '{zone}'; records are reconstructed only there")]
    OutsideZone {
        /// The reader.
        name: String,
        /// The zone required.
        zone: String,
    },
    /// The grant belongs to another reader.
    #[error("the grant for job '{job}' names reader '{reader}', not '{name}'")]
    OtherReader {
        /// The job.
        job: String,
        /// Whom the grant names.
        reader: String,
        /// Who asked.
        name: String,
    },
    /// The grant has been revoked.
    #[error("the grant for job '{job}' was revoked")]
    Revoked {
        /// The job.
        job: String,
    },
    /// The grant has expired.
    #[error("the grant for job '{job}' expired at {expires_at_ms} (Unix ms)")]
    Expired {
        /// The job.
        job: String,
        /// When it expired.
        expires_at_ms: u64,
    },
    /// A record is outside the grant's scope.
    #[error("record {record} ({kind} from {facility}) is outside the grant for job '{job}'")]
    OutOfScope {
        /// The job.
        job: String,
        /// The record.
        record: RecordId,
        /// Its kind.
        kind: RecordKind,
        /// Its source facility.
        facility: String,
    },
}

impl Grant {
    /// Checks the grant's own fields (lengths, expiry after creation time).
    pub fn validate(&self, now_ms: u64) -> Result<(), ProtoError> {
        let bad = |reason: String| Err(ProtoError::Invalid { reason });
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= MAX_JOB_BYTES
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'\\')
        };
        if !name_ok(&self.job) {
            return bad(format!(
                "job name '{}' must be 1 to {MAX_JOB_BYTES} printable characters without spaces or slashes",
                self.job.escape_debug()
            ));
        }
        if !name_ok(&self.reader) {
            return bad("the reader name must be a certificate name".into());
        }
        if self.approval.trim().is_empty() || self.approval.len() > MAX_JOB_BYTES {
            return bad(format!(
                "the approval reference must be 1 to {MAX_JOB_BYTES} characters"
            ));
        }
        let s = &self.scope;
        if s.kinds.len() > MAX_SCOPE_ITEMS
            || s.sources.len() > MAX_SCOPE_ITEMS
            || s.subjects.len() > MAX_SCOPE_ITEMS
        {
            return bad(format!(
                "a grant's scope lists at most {MAX_SCOPE_ITEMS} kinds, sources and subjects each"
            ));
        }
        if s.kinds.contains(&RecordKind::Segment) {
            return bad(
                "a grant's scope names record kinds; a segment is read through its record".into(),
            );
        }
        if self.expires_at_ms <= now_ms {
            return bad("the grant's expiry is in the past".into());
        }
        Ok(())
    }

    /// Whether the grant is in force at `now_ms`.
    pub fn active(&self, now_ms: u64) -> bool {
        self.revoked.is_none() && now_ms < self.expires_at_ms
    }

    /// Whether `actor` may read `records` under this grant at `now_ms` (leader time).
    /// `zone` is the high-security zone's name.
    pub fn permits<'a>(
        &self,
        actor: &Actor,
        zone: &str,
        now_ms: u64,
        records: impl IntoIterator<Item = &'a RecordEntry>,
    ) -> Result<(), ReadRefusal> {
        if actor.role != Role::Reader {
            return Err(ReadRefusal::NotReader { role: actor.role });
        }
        if actor.zone.as_deref() != Some(zone) {
            return Err(ReadRefusal::OutsideZone {
                name: actor.name.clone(),
                zone: zone.to_string(),
            });
        }
        if actor.name != self.reader {
            return Err(ReadRefusal::OtherReader {
                job: self.job.clone(),
                reader: self.reader.clone(),
                name: actor.name.clone(),
            });
        }
        if self.revoked.is_some() {
            return Err(ReadRefusal::Revoked {
                job: self.job.clone(),
            });
        }
        if now_ms >= self.expires_at_ms {
            return Err(ReadRefusal::Expired {
                job: self.job.clone(),
                expires_at_ms: self.expires_at_ms,
            });
        }
        for r in records {
            if !self.scope.covers(&r.meta) {
                return Err(ReadRefusal::OutOfScope {
                    job: self.job.clone(),
                    record: r.id,
                    kind: r.meta.kind,
                    facility: r.meta.source.clone(),
                });
            }
        }
        Ok(())
    }
}

/// A read ticket: the committed audit entry that lets its holder fetch shares of its
/// records until it expires. Nodes check it on every fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// The Raft log index of the entry that opened it (its id).
    pub id: u64,
    /// What it is for.
    pub purpose: TicketPurpose,
    /// The certificate that may use it.
    pub holder: Fingerprint,
    /// The records, sorted.
    pub records: Vec<RecordId>,
    /// When it stops working (leader time, Unix ms).
    pub expires_at_ms: u64,
}

/// An operator's standing instruction for a node (replicated; default active).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NodeMode {
    /// Receives new shares and serves.
    Active,
    /// Receives no new shares; repair moves every share it holds to other nodes.
    Draining,
    /// Holds nothing and receives nothing; may be switched off and removed from the
    /// config.
    Decommissioned,
}

impl NodeMode {
    /// The lowercase name used on the command line and in status.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeMode::Active => "active",
            NodeMode::Draining => "draining",
            NodeMode::Decommissioned => "decommissioned",
        }
    }
}

/// A node's mode as the cluster recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The config node id.
    pub node: u64,
    /// Its mode.
    pub mode: NodeMode,
    /// When it was set (leader time, Unix ms).
    pub changed_at_ms: u64,
    /// Who set it.
    pub changed_by: String,
    /// Why.
    pub reason: String,
}

/// Why a share moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RepairCause {
    /// Its holder is dead.
    Dead,
    /// Its holder is draining.
    Drain,
    /// Its holder is healthy but its share is bad (rotten, lost, or not the one the
    /// catalog names): regenerated in place, at the same x on the same node.
    Corrupt,
}

/// What is wrong with a share a node is recorded to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ShareProblem {
    /// The node holds no committed share of the record.
    Missing,
    /// Its bytes no longer hash to the digest stored with them or the catalog's.
    Corrupt,
}

impl ShareProblem {
    /// The lowercase name in logs and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            ShareProblem::Missing => "missing",
            ShareProblem::Corrupt => "corrupt",
        }
    }
}

/// A bad share someone found: a node's scrubber, a reader or an auditor. The leader
/// confirms it with the holder before it repairs anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShareReport {
    /// The record.
    pub record: RecordId,
    /// The node holding the bad share.
    pub node: u64,
    /// What is wrong.
    pub problem: ShareProblem,
}

/// Most bad shares one report names.
pub const MAX_SHARE_REPORTS: usize = 1024;

/// One share moving from one node to another: the new holder regenerates share `x`
/// (byte for byte, so the catalog digest stays) by masked repair from k helpers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairTask {
    /// The record.
    pub record: RecordId,
    /// The share's x coordinate.
    pub x: u8,
    /// The node losing it.
    pub from: u64,
    /// The node receiving it.
    pub to: u64,
    /// Why.
    pub cause: RepairCause,
    /// When it was assigned (leader time, Unix ms; set on apply).
    pub assigned_at_ms: u64,
    /// The log index of the assignment (set on apply): helpers wait until they have
    /// applied it.
    pub assigned_index: u64,
}

/// Why a ticket was opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TicketPurpose {
    /// A job's read under a grant.
    Read {
        /// The job.
        job: String,
    },
    /// An auditor's verification run.
    Audit {
        /// Whether shares are released (deep) or only digests reported (light).
        deep: bool,
    },
    /// An auditor's erasure check: nodes say whether they hold anything of the
    /// records, committed or staged; nothing else is released.
    ErasureCheck,
}

impl Ticket {
    /// Whether the ticket covers `record`.
    pub fn covers(&self, record: &RecordId) -> bool {
        self.records.binary_search(record).is_ok()
    }
}

/// Most bytes of an erasure's reason.
pub const MAX_REASON_BYTES: usize = 512;

/// What an operator erases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EraseTarget {
    /// These records (at most [`MAX_BATCH_RECORDS`]).
    Records(Vec<RecordId>),
    /// Every record of a subject, now and later: the subject opted out, and records
    /// of it are refused from then on.
    Subject(SubjectTag),
}

/// What the catalog keeps of an erased record: no metadata, no digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The erased record.
    pub id: RecordId,
    /// When it was erased (leader time, Unix ms).
    pub at_ms: u64,
    /// Who erased it (certificate name).
    pub by: String,
    /// Why.
    pub reason: String,
    /// The Raft log index of the erasing entry (its audit entry names it).
    pub log_index: u64,
}

/// A subject's opt-out: its records are erased and new ones refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptOut {
    /// The subject.
    pub subject: SubjectTag,
    /// When it was recorded (leader time, Unix ms).
    pub at_ms: u64,
    /// Who recorded it.
    pub by: String,
    /// Why.
    pub reason: String,
}

/// Where a record id stands in the catalog (ingest's idempotence check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordState {
    /// Never committed (or only staged).
    Absent,
    /// Committed and live.
    Committed,
    /// Erased: it is never committed again.
    Erased,
}

/// Checks an erasure's reason: 1 to [`MAX_REASON_BYTES`] bytes, not only spaces.
pub fn validate_reason(reason: &str) -> Result<(), ProtoError> {
    if reason.trim().is_empty() || reason.len() > MAX_REASON_BYTES {
        return Err(ProtoError::Invalid {
            reason: format!("a reason is 1 to {MAX_REASON_BYTES} bytes of text"),
        });
    }
    Ok(())
}

/// What a list query selects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListFilter {
    /// Every record.
    All,
    /// Records of one subject.
    Subject(SubjectTag),
    /// Records of one kind.
    Kind(RecordKind),
    /// Records from one source facility.
    Source(String),
}

/// Most records one list answer carries.
pub const MAX_LIST_PAGE: u32 = 1000;
/// Most grants one grant-list answer carries.
pub const MAX_GRANT_PAGE: u32 = 500;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Date;

    fn actor(role: Role, zone: Option<&str>, name: &str) -> Actor {
        Actor {
            name: name.into(),
            role,
            zone: zone.map(str::to_string),
            fingerprint: Fingerprint([7; 32]),
        }
    }

    fn entry(kind: RecordKind, source: &str) -> RecordEntry {
        RecordEntry {
            id: RecordId([1; 16]),
            meta: RecordMeta {
                subject: SubjectTag([2; 32]),
                kind,
                source: source.into(),
                effective: Date::new(2024, 1, 1).unwrap(),
                data_kind: None,
            },
            sealed_len: 100,
            sealed_digest: Digest([0; 32]),
            k: 3,
            holders: (1..=5)
                .map(|x| Holder {
                    node: u64::from(x),
                    x,
                    digest: Digest([x; 32]),
                })
                .collect(),
            committed_at_ms: 1,
        }
    }

    fn grant() -> Grant {
        Grant {
            job: "job-1".into(),
            reader: "anon-job".into(),
            scope: GrantScope {
                kinds: vec![RecordKind::Claim],
                sources: vec![],
                subjects: vec![],
            },
            expires_at_ms: 1_000,
            approval: "IRB-2026-001".into(),
            created_at_ms: 10,
            created_by: "op".into(),
            revoked: None,
        }
    }

    /// P4 for records stored as segments: the parent first with its own kind, parts
    /// with the segment metadata, every segment but the last full; no scope reaches
    /// a part and no grant names the segment kind.
    #[test]
    fn segmented_commits_have_one_shape() {
        let parent = entry(RecordKind::Image, "1310000001");
        let part = |n: u8, len: u64| {
            let mut e = entry(RecordKind::Image, "1310000001");
            e.id = RecordId([n; 16]);
            e.meta = segment_meta(&parent.meta);
            e.sealed_len = len;
            e
        };
        let good = vec![parent.clone(), part(2, 100), part(3, 40)];
        assert!(check_segmented(&good).is_ok());
        let refused = |records: Vec<RecordEntry>| check_segmented(&records).is_err();
        assert!(
            refused(vec![parent.clone()]),
            "one segment is a whole record"
        );
        assert!(
            refused(vec![parent.clone(), part(2, 40), part(3, 100)]),
            "short middle"
        );
        assert!(
            refused(vec![parent.clone(), part(2, 101)]),
            "longer than the first"
        );
        assert!(refused(vec![parent.clone(), part(1, 100)]), "an id twice");
        let mut relabelled = part(2, 100);
        relabelled.meta.source = "1310000002".into();
        assert!(
            refused(vec![parent.clone(), relabelled]),
            "part metadata differs"
        );
        assert!(
            refused(vec![part(2, 100), part(3, 100)]),
            "a segment as parent"
        );
        let all = GrantScope::default();
        assert!(all.covers(&parent.meta) && !all.covers(&part(2, 1).meta));
        let mut g = grant();
        g.scope.kinds = vec![RecordKind::Segment];
        assert!(g.validate(0).is_err());
    }

    /// P5/P2: only a reader of the high-security zone, named by an active grant, reads
    /// records within the grant's scope; each other case has its own refusal.
    #[test]
    fn grants_admit_exactly_their_reader_scope_and_time() {
        let g = grant();
        let reader = actor(Role::Reader, Some("hsz"), "anon-job");
        let claim = entry(RecordKind::Claim, "1310000001");
        assert_eq!(g.permits(&reader, "hsz", 999, [&claim]), Ok(()));
        assert!(matches!(
            g.permits(&reader, "hsz", 1_000, [&claim]),
            Err(ReadRefusal::Expired { .. })
        ));
        assert!(matches!(
            g.permits(&reader, "hsz", 5, [&entry(RecordKind::Death, "x")]),
            Err(ReadRefusal::OutOfScope { .. })
        ));
        assert!(matches!(
            g.permits(
                &actor(Role::Reader, Some("dc"), "anon-job"),
                "hsz",
                5,
                [&claim]
            ),
            Err(ReadRefusal::OutsideZone { .. })
        ));
        assert!(matches!(
            g.permits(
                &actor(Role::Reader, Some("hsz"), "other"),
                "hsz",
                5,
                [&claim]
            ),
            Err(ReadRefusal::OtherReader { .. })
        ));
        for role in [Role::Ingest, Role::Auditor, Role::Operator, Role::Node] {
            assert!(matches!(
                g.permits(&actor(role, Some("hsz"), "anon-job"), "hsz", 5, [&claim]),
                Err(ReadRefusal::NotReader { .. })
            ));
        }
        let mut revoked = grant();
        revoked.revoked = Some(Revocation {
            at_ms: 3,
            by: "op".into(),
            reason: "withdrawn".into(),
        });
        assert!(matches!(
            revoked.permits(&reader, "hsz", 5, [&claim]),
            Err(ReadRefusal::Revoked { .. })
        ));
        assert!(!revoked.active(5));
        assert!(g.active(5) && !g.active(1_000));
    }

    #[test]
    fn record_entries_check_their_own_shape() {
        assert!(entry(RecordKind::Claim, "s").validate().is_ok());
        let mut dup = entry(RecordKind::Claim, "s");
        dup.holders[1].x = 1;
        assert!(dup.validate().is_err());
        let mut k_big = entry(RecordKind::Claim, "s");
        k_big.k = 6;
        assert!(k_big.validate().is_err());
        let mut empty = entry(RecordKind::Claim, "s");
        empty.sealed_len = 0;
        assert!(empty.validate().is_err());
    }

    #[test]
    fn grant_fields_are_checked() {
        assert!(grant().validate(0).is_ok());
        assert!(grant().validate(1_000).is_err(), "expiry in the past");
        let mut g = grant();
        g.job = "a job".into();
        assert!(g.validate(0).is_err());
        let mut g = grant();
        g.approval = " ".into();
        assert!(g.validate(0).is_err());
    }

    /// The narrowest listed dimension is walked, one filter per value, so no record
    /// is listed twice and an unrestricted scope lists everything once.
    #[test]
    fn a_scope_is_listed_through_disjoint_filters() {
        let all = GrantScope::default();
        assert_eq!(all.list_filters(), vec![ListFilter::All]);
        let kinds = GrantScope {
            kinds: vec![RecordKind::Claim, RecordKind::Death],
            ..GrantScope::default()
        };
        assert_eq!(
            kinds.list_filters(),
            vec![
                ListFilter::Kind(RecordKind::Claim),
                ListFilter::Kind(RecordKind::Death)
            ]
        );
        let one_source = GrantScope {
            kinds: vec![RecordKind::Claim, RecordKind::Death],
            sources: vec!["hospital-a".into()],
            ..GrantScope::default()
        };
        assert_eq!(
            one_source.list_filters(),
            vec![ListFilter::Source("hospital-a".into())]
        );
        let subject = GrantScope {
            subjects: vec![SubjectTag([3; 32])],
            sources: vec!["hospital-a".into()],
            ..GrantScope::default()
        };
        assert_eq!(
            subject.list_filters(),
            vec![ListFilter::Subject(SubjectTag([3; 32]))]
        );
    }
}
