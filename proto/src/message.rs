//! Request and response messages. Each request travels on its own bidirectional QUIC
//! stream as one frame ([`crate::frame`]) inside a [`RequestEnvelope`]; the answer is
//! one [`Response`] frame (a snapshot transfer adds raw chunk frames after its header).
//!
//! Raft payloads are opaque bytes here, encoded by the node with the same codec: the
//! client and this crate never depend on openraft or RocksDB.

use serde::{Deserialize, Serialize};

use crate::audit::{AuditEntry, AuditQuery};
use crate::catalog::{Grant, ListFilter, RecordEntry, Ticket};
use crate::identity::Role;
use crate::record::{Digest, RecordId, SubjectTag};

/// Most nodes a [`Request::RepairRun`] asks the new holder to avoid that are read.
pub const MAX_REPAIR_AVOID: usize = 64;

/// A request id chosen by the caller, echoed in logs and audit entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestId(pub [u8; 16]);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The envelope of every request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    /// The cluster the caller believes it talks to; a node refuses other clusters.
    pub cluster_id: String,
    /// Caller-chosen id for tracing.
    pub request_id: RequestId,
    /// The request.
    pub body: Request,
}

/// Every operation a node serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness: the node answers with who it is and who it sees the caller as.
    Ping,
    /// The node's view of itself and of the Raft group.
    Status,
    /// Raft AppendEntries (node role only): `payload` is the codec-encoded openraft
    /// request for Raft member `to`. A node whose member id is not `to` (an older or
    /// newer incarnation at the same address) refuses it.
    RaftAppend {
        /// The Raft member id the sender addresses.
        to: u64,
        /// Codec-encoded openraft request.
        payload: Vec<u8>,
    },
    /// Raft RequestVote (node role only).
    RaftVote {
        /// The Raft member id the sender addresses.
        to: u64,
        /// Codec-encoded openraft request.
        payload: Vec<u8>,
    },
    /// Raft leadership transfer (node role only).
    RaftTransferLeader {
        /// The Raft member id the sender addresses.
        to: u64,
        /// Codec-encoded openraft request.
        payload: Vec<u8>,
    },
    /// Start of a snapshot transfer (node role only): `header` is the encoded vote and
    /// snapshot meta; the snapshot stream follows as raw frames on the same stream
    /// until the sender finishes it, read a chunk at a time into an SST file (no size
    /// cap but the disk's; the stream ends in its own pair count and digest, which the
    /// receiver checks before the snapshot takes effect).
    RaftSnapshot {
        /// The Raft member id the sender addresses.
        to: u64,
        /// Codec-encoded (vote, snapshot meta).
        header: Vec<u8>,
    },
    /// A node that started with an empty data directory asks the leader to take its new
    /// Raft member id into the group (node role only; the certificate's name must be
    /// the config name of `raft_id`'s node). The leader records the incarnation through
    /// Raft, adds it as a learner and, once it has caught up, lets it replace the old
    /// incarnation among the voters.
    RaftJoin {
        /// The new Raft member id (see [`crate::ids`]).
        raft_id: u64,
    },
    /// Store shares as staged (ingest role only): one share per record for this node,
    /// synced to disk before the answer. Invisible until a commit names their digests.
    /// The encoded shares follow the request as raw frames, concatenated in item
    /// order, so one share may be larger than a frame.
    StageShares {
        /// The records and the size of each share.
        items: Vec<StageItem>,
    },
    /// Make staged records visible (ingest role only; at the leader): one Raft entry
    /// for the batch, with every share digest and holder. The leader re-checks the
    /// placement rules; applying the entry promotes each holder's staged share.
    CommitRecords {
        /// The records (`committed_at_ms` 0; the leader stamps it).
        records: Vec<RecordEntry>,
    },
    /// Open a read ticket for a job (reader role, zone hsz; at the leader): the leader
    /// commits an audit entry naming the job and the records, checked against the
    /// job's grant when it is applied. The answer carries the ticket and the records'
    /// catalog entries.
    OpenRead {
        /// The job whose grant covers the read.
        job: String,
        /// The records to read.
        records: Vec<RecordId>,
    },
    /// Fetch this node's shares of records under a ticket (reader role, zone hsz). The
    /// node answers only the ticket's holder, for the ticket's records, once it has
    /// applied the ticket's entry. The shares follow the answer as raw frames.
    FetchShares {
        /// The ticket id (log index of its entry).
        ticket: u64,
        /// The records wanted from this node.
        records: Vec<RecordId>,
    },
    /// Open an audit ticket (auditor role; at the leader): committed through Raft like
    /// a read, so every audit run is in the audit log. A light ticket lets nodes
    /// report digests of what they store; a deep one also releases the shares (the
    /// auditor never holds the zone key, so it only ever sees ciphertext).
    OpenAudit {
        /// The records to audit.
        records: Vec<RecordId>,
        /// Whether shares are released (deep) or only their digests (light).
        deep: bool,
    },
    /// Under an audit ticket: this node recomputes the digest of each share it holds
    /// of `records` (auditor role). Asked of every node, holder or not, so a share on
    /// the wrong node shows too.
    VerifyShares {
        /// The audit ticket.
        ticket: u64,
        /// The records.
        records: Vec<RecordId>,
    },
    /// Open an erasure-check ticket (auditor role; at the leader). The records need
    /// not be in the catalog (erased ones are not); the answer's entries are the ones
    /// that still are. Audited like every audit run.
    OpenErasureCheck {
        /// The records to check.
        records: Vec<RecordId>,
    },
    /// Under an erasure-check ticket: whether this node holds anything of each record,
    /// committed or staged (auditor role). Asked of every node.
    ProbeShares {
        /// The erasure-check ticket.
        ticket: u64,
        /// The records.
        records: Vec<RecordId>,
    },
    /// Set a node's mode: drain, decommission, or back to active (operator role; at
    /// the leader). Decommissioning needs the node to hold no share.
    SetNodeMode {
        /// The config node id.
        node: u64,
        /// The new mode.
        mode: crate::catalog::NodeMode,
        /// Why (audited).
        reason: String,
    },
    /// The cluster's view of its nodes for placement and status (any client role; at
    /// the leader): each node's mode and health, and repair progress.
    Topology,
    /// Leader to a new holder: run the assigned repair of `record` (node role).
    RepairRun {
        /// The task as assigned.
        task: crate::catalog::RepairTask,
        /// Nodes the leader has not heard from lately: asked to help last (at most
        /// [`MAX_REPAIR_AVOID`] are read).
        avoid: Vec<u64>,
    },
    /// New holder to a helper: join a masked-repair session (node role). The helper
    /// sends a pad seed to every helper after it in the list, directly.
    RepairPrepare {
        /// The session.
        session: RepairSession,
    },
    /// Helper to helper: a pad seed for a session (node role).
    RepairPad {
        /// The session id.
        session: [u8; 16],
        /// The seed (32 bytes; only the two helpers ever hold it).
        seed: [u8; 32],
    },
    /// New holder to a helper: send the masked term (node role). The term follows the
    /// answer as raw frames.
    RepairContribute {
        /// The session id.
        session: [u8; 16],
    },
    /// List committed records' catalog entries (reader, auditor, operator; at the
    /// leader, linearizable). Metadata only.
    List {
        /// What to select.
        filter: ListFilter,
        /// Start after this record (paging).
        after: Option<RecordId>,
        /// Most entries wanted (capped by the node).
        limit: u32,
    },
    /// Create a grant (operator role; at the leader).
    CreateGrant {
        /// The grant (`created_*` and `revoked` are set by the cluster).
        grant: Grant,
    },
    /// Revoke a grant (operator role; at the leader).
    RevokeGrant {
        /// The job whose grant ends.
        job: String,
        /// Why.
        reason: String,
    },
    /// List grants (operator or auditor; at the leader).
    ListGrants,
    /// Erase records or a subject (operator role; at the leader). One call erases at
    /// most [`crate::catalog::MAX_BATCH_RECORDS`] records; `remaining` in the answer
    /// says whether to call again.
    Erase {
        /// What to erase.
        target: crate::catalog::EraseTarget,
        /// Why (recorded in the tombstones and the audit log).
        reason: String,
    },
    /// List tombstones (auditor or operator; at the leader).
    ListErased {
        /// Only the records erased with this subject's opt-out.
        subject: Option<SubjectTag>,
        /// Start after this record (paging).
        after: Option<RecordId>,
        /// Most tombstones wanted (capped by the node).
        limit: u32,
    },
    /// Where record ids and subjects stand: committed, erased, opted out (ingest,
    /// operator, auditor; at the leader). At most
    /// [`crate::catalog::MAX_BATCH_RECORDS`] of each.
    Lookup {
        /// The records.
        records: Vec<RecordId>,
        /// The subjects.
        subjects: Vec<SubjectTag>,
    },
    /// Read the audit log (auditor or operator; at the leader).
    AuditLog {
        /// What to select.
        query: AuditQuery,
    },
    /// Take a cluster backup (operator; at the leader): one Raft entry, at which
    /// every node checkpoints its state and writes its part under
    /// `<[backup] root>/<dir>/<rack>/<node>/`.
    Backup {
        /// The backup's directory under the root ([`crate::backup::validate_backup_dir`]).
        dir: String,
    },
    /// Where this node's part of a backup stands (operator; any node).
    BackupStatus {
        /// The backup.
        backup: crate::backup::BackupId,
    },
    /// Raft Pre-Vote (node role only): would the target grant a vote at the next
    /// term? Nothing is persisted and no term changes, so a restarted or cut-off
    /// node that cannot win does not raise the term and unseat a working leader.
    /// Last in the enum so earlier variants keep their wire numbers.
    RaftPreVote {
        /// The Raft member id the sender addresses.
        to: u64,
        /// Codec-encoded openraft request.
        payload: Vec<u8>,
    },
    /// Like [`Request::OpenRead`], but a record the grant does not admit (erased, not
    /// in the catalog, outside the scope) is left out of the ticket and reported by
    /// id instead of refusing the whole request; a grant that does not admit the
    /// reader at all (none, revoked, expired, another reader) still refuses it. For
    /// jobs that list a scope and then read it while erasures land.
    OpenReadEach {
        /// The job whose grant covers the read.
        job: String,
        /// The records to read.
        records: Vec<RecordId>,
    },
    /// Create a grant the data provision review committee signed (operator; at the
    /// leader): takes effect only with the committee's threshold of valid, distinct
    /// member signatures over [`crate::committee::approval_message`].
    CreateSignedGrant {
        /// The grant's terms.
        grant: Grant,
        /// Members' signatures over them.
        signatures: Vec<crate::committee::CommitteeSignature>,
    },
    /// A page of grants in job order after `after` (at most `limit`, itself at most
    /// [`crate::catalog::MAX_GRANT_PAGE`]): every grant for an operator or auditor,
    /// the reader's own for a reader. Linearizable, at the leader.
    ListGrantsPage {
        /// Start after this job (`None`: from the first).
        after: Option<String>,
        /// Most grants in the answer.
        limit: u32,
    },
    /// Record a certificate revocation list the cluster CA signed (operator; at the
    /// leader): every node refuses the certificates it lists at the handshake and
    /// closes their connections; commands of the `certificates` given here are
    /// refused by the state machine from this entry on. Answered with
    /// [`Response::Committed`] once the leader refuses them.
    Revoke {
        /// The CRL (DER), at most [`crate::revocation::MAX_CRL_BYTES`].
        crl: Vec<u8>,
        /// Revoked certificates (DER) the CRL lists, when the operator has them.
        certificates: Vec<Vec<u8>>,
    },
    /// Bad shares found by a node's scrubber, a reader or an auditor (at the
    /// leader; at most [`crate::catalog::MAX_SHARE_REPORTS`]). The report is
    /// audited; the leader then asks each holder to re-read its share
    /// ([`Request::ScrubCheck`]) and repairs only what the holder confirms.
    /// Answered with [`Response::Committed`] (the audit entry's log index).
    ReportShares {
        /// What was found.
        reports: Vec<crate::catalog::ShareReport>,
    },
    /// Re-read this node's committed shares of these records and say what they hash
    /// to (nodes only: the leader confirming a report). Digests only, never bytes;
    /// answered with [`Response::ShareChecks`].
    ScrubCheck {
        /// The records (at most [`crate::catalog::MAX_SHARE_REPORTS`]).
        records: Vec<RecordId>,
    },
    /// This node's scrubber's progress (anyone, like [`Request::Status`]); answered
    /// with [`Response::Scrub`]. A node from before scrubbing answers with an error.
    ScrubStatus,
    /// Leader to a new holder: run these assigned moves, all to this node (node
    /// role; at most [`MAX_REPAIR_BATCH`]). Answered with [`Response::RepairedBatch`].
    RepairRunBatch {
        /// The tasks as assigned.
        tasks: Vec<crate::catalog::RepairTask>,
        /// Nodes the leader has not heard from lately: asked to help last.
        avoid: Vec<u64>,
    },
    /// New holder to a helper: join a batched masked-repair session (node role).
    /// Pads flow between helpers as for [`Request::RepairPrepare`], one seed per
    /// pair for the whole batch.
    RepairPrepareBatch {
        /// The session.
        session: RepairBatchSession,
    },
    /// New holder to a helper: the masked terms of a batched session, in task order
    /// (node role), answered with [`Response::RepairTerms`] and the terms as raw
    /// frames.
    RepairContributeBatch {
        /// The session id.
        session: [u8; 16],
    },
    // Appended (issue 24.3).
    /// Make a record stored as segments visible (ingest role only; at the leader):
    /// its first segment (the parent, with the record's own metadata) and then its
    /// parts in order, each an entry like [`Request::CommitRecords`]' and staged the
    /// same way, in one Raft entry: a reader sees all segments or none. The shape is
    /// [`crate::catalog::check_segmented`]'s. Answered with [`Response::Committed`].
    CommitSegmented {
        /// The segments (`committed_at_ms` 0).
        records: Vec<RecordEntry>,
    },
    /// The parts of a record stored as segments, under a ticket that covers the
    /// record (its reader, or an auditor's deep audit): `count` and the catalog
    /// entries of parts `from` onwards (at most `limit`, at most
    /// [`crate::catalog::MAX_SEGMENT_PAGE`]). Answered with [`Response::Segments`];
    /// a record kept whole answers `count` 1 and no parts.
    Segments {
        /// The ticket.
        ticket: u64,
        /// The record (its first segment's id).
        record: RecordId,
        /// The first part wanted (1: the part after the parent).
        from: u32,
        /// Most parts wanted.
        limit: u32,
    },
}

/// Most moves one batched repair session runs.
pub const MAX_REPAIR_BATCH: usize = 256;

/// A batched masked-repair session: every task moves a share to `to`, and the same
/// helper nodes (each at the x the catalog names for it, record by record) help with
/// every one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairBatchSession {
    /// Random id chosen by the new holder.
    pub id: [u8; 16],
    /// The tasks, each assigned to the new holder.
    pub tasks: Vec<crate::catalog::RepairTask>,
    /// The k helper nodes, in session order.
    pub helpers: Vec<u64>,
}

/// One masked term of a batched session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairTermItem {
    /// The record.
    pub record: RecordId,
    /// The sharing's set id.
    pub set_id: [u8; 16],
    /// The threshold.
    pub k: u8,
    /// The term's length (its bytes follow the answer, in item order).
    pub size_bytes: u64,
}

/// A masked-repair session, as the new holder runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairSession {
    /// Random id chosen by the new holder.
    pub id: [u8; 16],
    /// The task (record, x, from, to, assignment index).
    pub task: crate::catalog::RepairTask,
    /// The k helpers as (node, x), in session order.
    pub helpers: Vec<(u64, u8)>,
}

/// One node as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHealth {
    /// The config node id.
    pub node: u64,
    /// The operator's mode.
    pub mode: crate::catalog::NodeMode,
    /// alive, suspect or dead (the leader's failure detector); unknown on a new leader.
    pub health: String,
    /// Milliseconds since the leader last heard from it, if ever.
    pub silent_ms: Option<u64>,
    /// Shares it holds by the catalog (counted during the leader's last repair scan).
    pub shares: u64,
}

/// Repair progress on the leader.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairProgress {
    /// Moves assigned and not yet committed.
    pub pending: u64,
    /// Moves committed since this leader took over.
    pub done: u64,
    /// Shares that need a move but have no node to go to under the rack rule.
    pub waiting: u64,
    /// Shares found needing a move in the last full scan.
    pub needed: u64,
    /// The last failure, as a sentence.
    pub last_error: Option<String>,
}

/// One share announced for staging; its bytes follow the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageItem {
    /// The record the share belongs to.
    pub record: RecordId,
    /// The encoded share's length.
    pub size_bytes: u64,
}

/// What a node found when it re-read one record's share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareCheck {
    /// The record.
    pub record: RecordId,
    /// The share it holds (committed), if any.
    pub held: Option<HeldShare>,
}

/// A share a node holds, as it re-read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldShare {
    /// The digest recorded when the share was stored.
    pub stored_digest: Digest,
    /// BLAKE3-256 of the bytes as read now.
    pub computed_digest: Digest,
    /// The share's length.
    pub size_bytes: u64,
}

/// Whether a node holds anything of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareProbe {
    /// The record.
    pub record: RecordId,
    /// A committed share is stored.
    pub committed: bool,
    /// A staged (not yet committed) share is stored.
    pub staged: bool,
}

/// One share in a fetch answer; its bytes follow the answer, in item order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchedShare {
    /// The record.
    pub record: RecordId,
    /// The encoded share's length, or `None` if this node holds no share of it.
    pub size_bytes: Option<u64>,
}

/// The operation a request asks for, for authorization and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operation {
    /// [`Request::Ping`].
    Ping,
    /// [`Request::Status`].
    Status,
    /// Any Raft RPC.
    Raft,
    /// [`Request::StageShares`].
    Stage,
    /// [`Request::CommitRecords`].
    Commit,
    /// [`Request::OpenRead`].
    OpenRead,
    /// [`Request::FetchShares`].
    Fetch,
    /// [`Request::OpenAudit`], [`Request::VerifyShares`], [`Request::OpenErasureCheck`]
    /// and [`Request::ProbeShares`].
    Audit,
    /// [`Request::List`].
    List,
    /// [`Request::CreateGrant`] and [`Request::RevokeGrant`].
    GrantChange,
    /// [`Request::ListGrants`].
    GrantList,
    /// [`Request::SetNodeMode`].
    NodeAdmin,
    /// [`Request::Topology`].
    Topology,
    /// Node-to-node repair: [`Request::RepairRun`], [`Request::RepairPrepare`],
    /// [`Request::RepairPad`], [`Request::RepairContribute`].
    Repair,
    /// [`Request::AuditLog`].
    AuditLog,
    /// [`Request::Erase`].
    Erase,
    /// [`Request::Lookup`].
    Lookup,
    /// [`Request::Backup`], [`Request::BackupStatus`].
    Backup,
    /// [`Request::Revoke`].
    Revoke,
    /// [`Request::ReportShares`].
    Report,
}

impl Operation {
    /// Every operation, for exhaustive authorization tests.
    pub const ALL: [Operation; 20] = [
        Operation::Ping,
        Operation::Status,
        Operation::Raft,
        Operation::Stage,
        Operation::Commit,
        Operation::OpenRead,
        Operation::Fetch,
        Operation::Audit,
        Operation::List,
        Operation::GrantChange,
        Operation::GrantList,
        Operation::AuditLog,
        Operation::NodeAdmin,
        Operation::Topology,
        Operation::Repair,
        Operation::Erase,
        Operation::Lookup,
        Operation::Backup,
        Operation::Revoke,
        Operation::Report,
    ];

    /// A short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Ping => "ping",
            Operation::Status => "status",
            Operation::Raft => "raft",
            Operation::Stage => "stage",
            Operation::Commit => "commit",
            Operation::OpenRead => "open-read",
            Operation::Fetch => "fetch",
            Operation::Audit => "audit",
            Operation::List => "list",
            Operation::GrantChange => "grant-change",
            Operation::GrantList => "grant-list",
            Operation::AuditLog => "audit-log",
            Operation::NodeAdmin => "node-admin",
            Operation::Topology => "topology",
            Operation::Repair => "repair",
            Operation::Erase => "erase",
            Operation::Lookup => "lookup",
            Operation::Backup => "backup",
            Operation::Revoke => "revoke",
            Operation::Report => "report",
        }
    }
}

impl Request {
    /// The request's name for metrics and logs (the variant, in snake case).
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Status => "status",
            Request::RaftAppend { .. } => "raft_append",
            Request::RaftVote { .. } => "raft_vote",
            Request::RaftPreVote { .. } => "raft_pre_vote",
            Request::RaftTransferLeader { .. } => "raft_transfer_leader",
            Request::RaftSnapshot { .. } => "raft_snapshot",
            Request::RaftJoin { .. } => "raft_join",
            Request::StageShares { .. } => "stage_shares",
            Request::CommitRecords { .. } => "commit_records",
            Request::OpenRead { .. } => "open_read",
            Request::OpenReadEach { .. } => "open_read_each",
            Request::FetchShares { .. } => "fetch_shares",
            Request::OpenAudit { .. } => "open_audit",
            Request::VerifyShares { .. } => "verify_shares",
            Request::OpenErasureCheck { .. } => "open_erasure_check",
            Request::ProbeShares { .. } => "probe_shares",
            Request::SetNodeMode { .. } => "set_node_mode",
            Request::Topology => "topology",
            Request::RepairRun { .. } => "repair_run",
            Request::RepairPrepare { .. } => "repair_prepare",
            Request::RepairPad { .. } => "repair_pad",
            Request::RepairContribute { .. } => "repair_contribute",
            Request::List { .. } => "list",
            Request::CreateGrant { .. } => "create_grant",
            Request::CreateSignedGrant { .. } => "create_signed_grant",
            Request::RevokeGrant { .. } => "revoke_grant",
            Request::ListGrants => "list_grants",
            Request::ListGrantsPage { .. } => "list_grants_page",
            Request::Revoke { .. } => "revoke",
            Request::ReportShares { .. } => "report_shares",
            Request::ScrubCheck { .. } => "scrub_check",
            Request::ScrubStatus => "scrub_status",
            Request::RepairRunBatch { .. } => "repair_run_batch",
            Request::RepairPrepareBatch { .. } => "repair_prepare_batch",
            Request::RepairContributeBatch { .. } => "repair_contribute_batch",
            Request::Erase { .. } => "erase",
            Request::ListErased { .. } => "list_erased",
            Request::Lookup { .. } => "lookup",
            Request::AuditLog { .. } => "audit_log",
            Request::Backup { .. } => "backup",
            Request::BackupStatus { .. } => "backup_status",
            Request::CommitSegmented { .. } => "commit_segmented",
            Request::Segments { .. } => "segments",
        }
    }

    /// The operation this request asks for.
    pub fn operation(&self) -> Operation {
        match self {
            Request::Ping => Operation::Ping,
            Request::Status | Request::ScrubStatus => Operation::Status,
            Request::RaftAppend { .. }
            | Request::RaftVote { .. }
            | Request::RaftPreVote { .. }
            | Request::RaftTransferLeader { .. }
            | Request::RaftSnapshot { .. }
            | Request::RaftJoin { .. } => Operation::Raft,
            Request::StageShares { .. } => Operation::Stage,
            Request::CommitRecords { .. } | Request::CommitSegmented { .. } => Operation::Commit,
            Request::OpenRead { .. } | Request::OpenReadEach { .. } => Operation::OpenRead,
            Request::FetchShares { .. } | Request::Segments { .. } => Operation::Fetch,
            Request::OpenAudit { .. }
            | Request::VerifyShares { .. }
            | Request::OpenErasureCheck { .. }
            | Request::ProbeShares { .. } => Operation::Audit,
            Request::List { .. } => Operation::List,
            Request::CreateGrant { .. }
            | Request::CreateSignedGrant { .. }
            | Request::RevokeGrant { .. } => Operation::GrantChange,
            Request::ListGrants | Request::ListGrantsPage { .. } => Operation::GrantList,
            Request::AuditLog { .. } | Request::ListErased { .. } => Operation::AuditLog,
            Request::Erase { .. } => Operation::Erase,
            Request::Lookup { .. } => Operation::Lookup,
            Request::Backup { .. } | Request::BackupStatus { .. } => Operation::Backup,
            Request::SetNodeMode { .. } => Operation::NodeAdmin,
            Request::Topology => Operation::Topology,
            Request::RepairRun { .. }
            | Request::RepairPrepare { .. }
            | Request::RepairPad { .. }
            | Request::RepairContribute { .. }
            | Request::RepairRunBatch { .. }
            | Request::RepairPrepareBatch { .. }
            | Request::RepairContributeBatch { .. }
            | Request::ScrubCheck { .. } => Operation::Repair,
            Request::Revoke { .. } => Operation::Revoke,
            Request::ReportShares { .. } => Operation::Report,
        }
    }
}

/// A node's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Ping`].
    Pong {
        /// The answering node.
        node_id: u64,
        /// Its name.
        node_name: String,
        /// The caller's name as its certificate says.
        peer_name: String,
        /// The caller's role as its certificate says.
        peer_role: Role,
    },
    /// Answer to [`Request::Status`] (boxed: it is much larger than other answers).
    Status(Box<NodeStatus>),
    /// Answer to a Raft RPC: the codec-encoded openraft response.
    Raft(Vec<u8>),
    /// The request was refused or failed.
    Error(ErrorReply),
    /// The request was accepted; its effect follows asynchronously (a join).
    Accepted,
    /// Answer to [`Request::StageShares`]: each share's BLAKE3-256, in request order,
    /// after the shares were synced to disk.
    Staged {
        /// Digests of the staged shares.
        digests: Vec<Digest>,
    },
    /// A change went through Raft and was applied.
    Committed {
        /// The log index of its entry.
        log_index: u64,
    },
    /// Answer to [`Request::OpenRead`]: the ticket and the records' catalog entries
    /// (in request order).
    ReadTicket {
        /// The ticket.
        ticket: Ticket,
        /// The records.
        entries: Vec<RecordEntry>,
    },
    /// Answer to [`Request::FetchShares`], in request order; share bytes follow.
    Shares {
        /// Each record's share size, or `None` if this node holds none.
        items: Vec<FetchedShare>,
    },
    /// Answer to [`Request::VerifyShares`], in request order.
    ShareChecks {
        /// What this node holds of each record.
        items: Vec<ShareCheck>,
    },
    /// Answer to [`Request::ProbeShares`], in request order.
    Probes {
        /// What this node holds of each record.
        items: Vec<ShareProbe>,
    },
    /// Answer to [`Request::Topology`].
    Topology {
        /// Every configured node.
        nodes: Vec<NodeHealth>,
        /// Repair progress.
        repair: RepairProgress,
    },
    /// Answer to [`Request::RepairContribute`]: the sharing's public facts; the
    /// masked term follows as raw frames.
    RepairTerm {
        /// The sharing's set id.
        set_id: [u8; 16],
        /// The threshold.
        k: u8,
        /// The term's length.
        size_bytes: u64,
    },
    /// Answer to [`Request::RepairRun`]: the new share is staged on this node.
    Repaired {
        /// Its digest (the catalog's for that x).
        digest: crate::record::Digest,
    },
    /// Answer to [`Request::List`].
    Listing {
        /// Catalog entries, in record id order.
        entries: Vec<RecordEntry>,
        /// Where the next page starts, if there is more.
        next: Option<RecordId>,
    },
    /// Answer to [`Request::Erase`].
    Erased {
        /// The records this call erased (records already erased are not repeated).
        erased: Vec<RecordId>,
        /// Whether the subject still has records (call again).
        remaining: bool,
    },
    /// Answer to [`Request::ListErased`].
    Tombstones {
        /// Tombstones in record id order.
        items: Vec<crate::catalog::Tombstone>,
        /// Where the next page starts, if there is more.
        next: Option<RecordId>,
    },
    /// Answer to [`Request::Lookup`].
    Lookup {
        /// One state per asked record, in order.
        records: Vec<crate::catalog::RecordState>,
        /// The asked subjects that opted out.
        opted_out: Vec<SubjectTag>,
    },
    /// Answer to [`Request::ListGrants`].
    Grants {
        /// Every grant, active or not, by job.
        grants: Vec<Grant>,
    },
    /// Answer to [`Request::AuditLog`].
    Audit {
        /// Matching entries, in log order.
        entries: Vec<AuditEntry>,
        /// Where to continue (`after_seq`) if later entries may still match.
        next_after: Option<u64>,
        /// Sequence number and hash of the newest entry in the whole log.
        head: Option<(u64, [u8; 32])>,
    },
    /// Answer to [`Request::Backup`]: the entry is committed and applied at the leader.
    BackupStarted {
        /// The backup's id.
        backup: crate::backup::BackupId,
        /// The log index of its entry.
        log_index: u64,
    },
    /// Answer to [`Request::BackupStatus`].
    BackupPart(Box<crate::backup::PartState>),
    /// Answer to [`Request::OpenReadEach`] (boxed: the largest answer).
    ReadTicketEach(Box<TicketEach>),
    /// Answer to [`Request::ListGrantsPage`].
    GrantsPage {
        /// The grants.
        grants: Vec<Grant>,
        /// Where the next page starts (`after`), if more may follow.
        next: Option<String>,
    },
    /// Answer to [`Request::ScrubStatus`].
    Scrub(ScrubStatus),
    /// Answer to [`Request::RepairRunBatch`]: the moves whose share is now stored
    /// here (staged, or restored in place), and the ones that failed and why.
    RepairedBatch {
        /// Records done, with the stored share's digest.
        done: Vec<(RecordId, crate::record::Digest)>,
        /// Records not done, each with a sentence.
        failed: Vec<(RecordId, String)>,
    },
    /// Answer to [`Request::RepairContributeBatch`]: one item per task, in order;
    /// the terms follow as raw frames.
    RepairTerms {
        /// The terms' facts.
        items: Vec<RepairTermItem>,
    },
    // Appended (issue 24.3).
    /// Answer to [`Request::Segments`].
    Segments {
        /// The record's segments, its first included (1: kept whole).
        count: u32,
        /// The catalog entries of the parts asked for, in order.
        entries: Vec<RecordEntry>,
    },
}

/// Answer to [`Request::OpenReadEach`]: the ticket, the admitted records' catalog
/// entries (in request order) and the records left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketEach {
    /// The ticket (its records are the admitted ones).
    pub ticket: Ticket,
    /// The admitted records.
    pub entries: Vec<RecordEntry>,
    /// The records left out, and why.
    pub refused: Vec<crate::catalog::RefusedRecord>,
}

/// Why a request was refused or failed, in words the caller can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The class of problem.
    pub kind: ErrorKind,
    /// A sentence for a person; never contains record or share bytes.
    pub message: String,
}

/// Classes of refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The caller's role (or zone, or network) may not do this.
    Forbidden,
    /// The request is malformed.
    BadRequest,
    /// The request exceeds a limit.
    TooLarge,
    /// The request names another cluster.
    WrongCluster,
    /// This node is not the leader; try the one named, if known.
    NotLeader {
        /// The leader this node knows of.
        leader_id: Option<u64>,
    },
    /// The node cannot serve now (shutting down, no quorum); retry later.
    Unavailable,
    /// An internal failure; the node logged it.
    Internal,
    /// The request names records the catalog does not hold.
    NotFound,
    /// The connection already has as many requests in progress as the node allows;
    /// retry once some of them finish.
    Busy,
}

impl ErrorKind {
    /// A short lowercase name for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::WrongCluster => "wrong_cluster",
            ErrorKind::NotLeader { .. } => "not_leader",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Busy => "busy",
        }
    }
}

/// A node's view of itself and the Raft group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's id.
    pub node_id: u64,
    /// Its name.
    pub name: String,
    /// Its rack.
    pub rack: String,
    /// Its zone.
    pub zone: String,
    /// The Raft group as this node sees it.
    pub raft: RaftStatus,
    /// Where its memory goes, and its storage engine's backlog.
    pub usage: NodeUsage,
}

/// What a node's scrubber has done since the node started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubStatus {
    /// The configured rate (MB/s; 0: scrubbing is off).
    pub rate_mb_s: u32,
    /// Shares re-read.
    pub checked: u64,
    /// Missing or corrupt shares found.
    pub bad: u64,
    /// Whole passes over the node's shares finished.
    pub passes: u64,
    /// How far the current pass is, in thousandths of the record-id space.
    pub position_permille: u64,
}

/// A node's memory by holder, and the work its storage engine has queued. Zero
/// where a figure cannot be read (another platform, another allocator).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeUsage {
    /// Resident memory of the process (Linux `VmRSS`).
    pub rss_bytes: u64,
    /// Most resident memory since the process started (Linux `VmHWM`).
    pub peak_rss_bytes: u64,
    /// Bytes the Rust heap has handed out (jemalloc's `stats.allocated`).
    pub heap_allocated_bytes: u64,
    /// Physical memory the Rust heap holds, freed pages kept for reuse included
    /// (jemalloc's `stats.resident`).
    pub heap_resident_bytes: u64,
    /// RocksDB memtables across every family, flushed ones still pinned included.
    pub rocksdb_memtable_bytes: u64,
    /// RocksDB table readers' memory outside the block cache.
    pub rocksdb_table_reader_bytes: u64,
    /// RocksDB's block cache in use (data, index and filter blocks).
    pub rocksdb_block_cache_bytes: u64,
    /// Bytes RocksDB estimates its compactions must still rewrite.
    pub rocksdb_pending_compaction_bytes: u64,
    /// RocksDB flushes and compactions running now.
    pub rocksdb_running_jobs: u64,
}

/// Raft metrics, as numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftStatus {
    /// This node's Raft member id (see [`crate::ids`]).
    pub id: u64,
    /// Whether the group has been initialised (this node has a membership).
    pub initialized: bool,
    /// Leader, Follower, Candidate, Learner or Shutdown.
    pub state: String,
    /// The node's current term.
    pub term: u64,
    /// The Raft member id of the leader this node follows, if any.
    pub leader: Option<u64>,
    /// Index of the last log entry.
    pub last_log_index: Option<u64>,
    /// Index of the last committed entry this node knows of.
    pub committed: Option<u64>,
    /// Index of the last entry applied to the state machine.
    pub applied: Option<u64>,
    /// Index covered by the latest snapshot.
    pub snapshot: Option<u64>,
    /// Index of the last entry purged from this node's log: a follower behind it
    /// catches up only by snapshot.
    pub purged: Option<u64>,
    /// Voting members (Raft member ids).
    pub voters: Vec<u64>,
    /// Non-voting members (Raft member ids).
    pub learners: Vec<u64>,
    /// On the leader: each member's matched log index (None if unknown).
    pub replication: Vec<(u64, Option<u64>)>,
}
