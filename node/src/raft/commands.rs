//! The state machine's commands. Every change to the catalog is one of these, applied
//! in log order on every node.

use std::fmt;

use kakera_proto::RequestId;
use kakera_proto::catalog::{Actor, EraseTarget, Grant, NodeMode, RecordEntry, RepairTask};
use kakera_proto::record::RecordId;
use serde::{Deserialize, Serialize};

/// A change to the replicated state.
// One command per client request or membership step, moved into the log once: the
// size of the largest variant (a client action with its actor) costs nothing there.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Written once by the bootstrapping node: binds the Raft group to a cluster id and
    /// to the config it was bootstrapped from.
    InitCluster {
        /// The cluster id from the config.
        cluster_id: String,
        /// BLAKE3 of the config file's text.
        config_digest: [u8; 32],
    },
    /// Records the current Raft member id of a configured node: its first start, or
    /// its return with an empty data directory. The leader then adds it and retires
    /// the older incarnation (see `crate::membership`).
    RegisterIncarnation {
        /// The config node id.
        node_id: u64,
        /// Its new Raft member id (`kakera_proto::ids::raft_id`).
        raft_id: u64,
    },
    /// Sets an operator-visible cluster metadata value.
    SetMeta {
        /// The key (at most 256 bytes).
        key: String,
        /// The value (at most 64 KiB).
        value: String,
    },
    /// The leader's repair work (no client asked): assigning share moves, then
    /// committing the ones whose new holder has the regenerated share.
    Repair {
        /// Leader time at proposal (Unix ms).
        at_ms: u64,
        /// Which step.
        step: RepairStep,
    },
    /// A client's request, with who asked (from the certificate) and when (the
    /// proposing leader's clock). Applying it appends exactly one audit entry.
    Client {
        /// Who asked.
        actor: Actor,
        /// Leader time at proposal (Unix ms); the audit entry never goes back in time.
        at_ms: u64,
        /// The caller's request id.
        request_id: RequestId,
        /// What they asked for.
        action: ClientAction,
    },
    /// Records the review committee from the config (leader duty): once, or again
    /// unchanged. A different committee is refused: changing who approves grants is
    /// not one operator's config edit.
    SetCommittee {
        /// The committee.
        committee: kakera_proto::committee::Committee,
    },
}

/// What a client asked the cluster to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientAction {
    /// Make staged records visible; promotes each holder's staged share.
    CommitRecords {
        /// The records (`committed_at_ms` is set on apply).
        records: Vec<RecordEntry>,
    },
    /// Open a read ticket under the job's grant.
    OpenRead {
        /// The job.
        job: String,
        /// The records.
        records: Vec<RecordId>,
        /// How long the ticket lasts (capped by the grant's expiry).
        ttl_ms: u64,
    },
    /// Open an audit ticket (auditor).
    OpenAudit {
        /// The records.
        records: Vec<RecordId>,
        /// Deep (shares released) or light (digests only).
        deep: bool,
        /// How long the ticket lasts.
        ttl_ms: u64,
    },
    /// Open an erasure-check ticket (auditor); the records need not exist.
    OpenErasureCheck {
        /// The records.
        records: Vec<RecordId>,
        /// How long the ticket lasts.
        ttl_ms: u64,
    },
    /// Set a node's mode (operator).
    SetNodeMode {
        /// The config node id.
        node: u64,
        /// The mode.
        mode: NodeMode,
        /// Why.
        reason: String,
    },
    /// Create a grant.
    CreateGrant {
        /// The grant.
        grant: Grant,
    },
    /// Revoke a grant.
    RevokeGrant {
        /// Its job.
        job: String,
        /// Why.
        reason: String,
    },
    /// Erase records or a subject (operator): tombstones replace the catalog entries
    /// and every node deletes its shares (see `crate::erasure`).
    Erase {
        /// What.
        target: EraseTarget,
        /// Why.
        reason: String,
    },
    /// Take a cluster backup (operator): applying it, every node checkpoints its
    /// state and writes its part (see `crate::backup`).
    Backup {
        /// The backup's id, drawn by the leader.
        backup: kakera_proto::backup::BackupId,
        /// Its directory under the config's `[backup] root`.
        dir: String,
    },
    /// Open a read ticket for the records the job's grant admits, leaving the
    /// others out by id (erased, not in the catalog, outside the scope).
    OpenReadEach {
        /// The job.
        job: String,
        /// The records asked for.
        records: Vec<RecordId>,
        /// How long the ticket lasts (capped by the grant's expiry).
        ttl_ms: u64,
    },
    /// Create a grant with the review committee's signatures (operator).
    CreateSignedGrant {
        /// The grant.
        grant: Grant,
        /// The members' signatures over its terms.
        signatures: Vec<kakera_proto::committee::CommitteeSignature>,
    },
    /// Record a CRL (operator; its CA signature checked by the proposing leader):
    /// it replaces the CRL of its issuer if it goes forward
    /// ([`kakera_proto::revocation::check_succession`]), and the `certificates`
    /// (each listed in it) are refused by this state machine from now on.
    Revoke {
        /// The CRL (DER).
        crl: Vec<u8>,
        /// Revoked certificates (DER) the CRL lists.
        certificates: Vec<Vec<u8>>,
    },
    /// Bad shares someone found (a node's scrubber, a reader, an auditor): recorded
    /// in the audit log only; the leader confirms each with its holder before it
    /// repairs anything.
    ReportShares {
        /// What was found.
        reports: Vec<kakera_proto::catalog::ShareReport>,
    },
    // Appended (issue 24.3).
    /// Make a record stored as segments visible: its first segment, then its parts
    /// in order (see `kakera_proto::catalog::check_segmented`), all or none.
    CommitSegmented {
        /// The segments (`committed_at_ms` is set on apply).
        records: Vec<RecordEntry>,
    },
}

/// Longest actor (certificate) name a command carries.
pub const MAX_ACTOR_NAME_BYTES: usize = 256;

impl ClientAction {
    /// The first bound this action breaks, as a sentence for the caller, or `None`.
    /// Checked on the leader before it proposes, so no entry carries an unbounded
    /// string or list from a client (the encoded entry is bounded too, by
    /// `records::propose_for`). The sentence never echoes the offending value.
    pub fn bound_problem(&self) -> Option<String> {
        use kakera_proto::backup::MAX_BACKUP_DIR_BYTES;
        use kakera_proto::catalog::{
            MAX_BATCH_RECORDS, MAX_JOB_BYTES, MAX_REASON_BYTES, MAX_SCOPE_ITEMS,
        };
        use kakera_proto::record::MAX_SOURCE_BYTES;
        let records = |n: usize| {
            (n > MAX_BATCH_RECORDS)
                .then(|| format!("{n} records in one request; at most {MAX_BATCH_RECORDS}"))
        };
        let job = |j: &str| {
            (j.is_empty() || j.len() > MAX_JOB_BYTES).then(|| {
                format!(
                    "a job name of {} bytes; job names are 1 to {MAX_JOB_BYTES} bytes",
                    j.len()
                )
            })
        };
        let reason = |r: &str| {
            (r.len() > MAX_REASON_BYTES).then(|| {
                format!(
                    "a reason of {} bytes; reasons are at most {MAX_REASON_BYTES} bytes",
                    r.len()
                )
            })
        };
        match self {
            ClientAction::CommitRecords { records: r }
            | ClientAction::CommitSegmented { records: r } => records(r.len()),
            ClientAction::OpenRead {
                job: j, records: r, ..
            }
            | ClientAction::OpenReadEach {
                job: j, records: r, ..
            } => job(j).or_else(|| records(r.len())),
            ClientAction::OpenAudit { records: r, .. }
            | ClientAction::OpenErasureCheck { records: r, .. } => records(r.len()),
            ClientAction::SetNodeMode { reason: r, .. } => reason(r),
            ClientAction::CreateSignedGrant { grant, signatures } => {
                use kakera_proto::committee::{
                    MAX_MEMBER_NAME_BYTES, MAX_SIGNATURES, SIGNATURE_BYTES,
                };
                let bad = signatures.len() > MAX_SIGNATURES
                    || signatures.iter().any(|s| {
                        s.member.len() > MAX_MEMBER_NAME_BYTES
                            || s.signature.len() != SIGNATURE_BYTES
                    });
                if bad {
                    return Some(format!(
                        "at most {MAX_SIGNATURES} signatures of {SIGNATURE_BYTES} bytes, member \
                         names at most {MAX_MEMBER_NAME_BYTES} bytes"
                    ));
                }
                ClientAction::CreateGrant {
                    grant: grant.clone(),
                }
                .bound_problem()
            }
            ClientAction::CreateGrant { grant } => {
                let s = &grant.scope;
                job(&grant.job)
                    .or_else(|| {
                        (grant.reader.len() > MAX_ACTOR_NAME_BYTES
                            || grant.approval.len() > MAX_JOB_BYTES)
                            .then(|| {
                                format!(
                                    "reader names are at most {MAX_ACTOR_NAME_BYTES} bytes and \
                                     approval references at most {MAX_JOB_BYTES}"
                                )
                            })
                    })
                    .or_else(|| {
                        (s.kinds.len() > MAX_SCOPE_ITEMS
                            || s.sources.len() > MAX_SCOPE_ITEMS
                            || s.subjects.len() > MAX_SCOPE_ITEMS)
                            .then(|| {
                                format!(
                                    "a grant's scope lists at most {MAX_SCOPE_ITEMS} kinds, \
                                     sources and subjects each"
                                )
                            })
                    })
                    .or_else(|| {
                        s.sources
                            .iter()
                            .any(|x| x.len() > MAX_SOURCE_BYTES)
                            .then(|| {
                                format!(
                                    "source facility names are at most {MAX_SOURCE_BYTES} bytes"
                                )
                            })
                    })
                    .or_else(|| grant.revoked.as_ref().and_then(|r| reason(&r.reason)))
            }
            ClientAction::RevokeGrant { job: j, reason: r } => job(j).or_else(|| reason(r)),
            ClientAction::Erase { target, reason: r } => match target {
                EraseTarget::Records(ids) => records(ids.len()),
                EraseTarget::Subject(_) => None,
            }
            .or_else(|| reason(r)),
            ClientAction::Backup { dir, .. } => (dir.len() > MAX_BACKUP_DIR_BYTES).then(|| {
                format!("backup directory names are at most {MAX_BACKUP_DIR_BYTES} bytes")
            }),
            ClientAction::ReportShares { reports } => {
                use kakera_proto::catalog::MAX_SHARE_REPORTS;
                (reports.len() > MAX_SHARE_REPORTS)
                    .then(|| format!("at most {MAX_SHARE_REPORTS} bad shares in one report"))
            }
            ClientAction::Revoke { crl, certificates } => {
                use kakera_proto::revocation::{
                    MAX_CERT_BYTES, MAX_CRL_BYTES, MAX_REVOKED_CERTS_PER_REQUEST,
                };
                (crl.len() > MAX_CRL_BYTES
                    || certificates.len() > MAX_REVOKED_CERTS_PER_REQUEST
                    || certificates.iter().any(|c| c.len() > MAX_CERT_BYTES))
                .then(|| {
                    format!(
                        "a CRL of at most {MAX_CRL_BYTES} bytes and at most \
                         {MAX_REVOKED_CERTS_PER_REQUEST} certificates of {MAX_CERT_BYTES} bytes"
                    )
                })
            }
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::InitCluster { cluster_id, .. } => write!(f, "InitCluster({cluster_id})"),
            Command::RegisterIncarnation { raft_id, .. } => write!(
                f,
                "RegisterIncarnation({})",
                kakera_proto::ids::describe(*raft_id)
            ),
            Command::SetMeta { key, .. } => write!(f, "SetMeta({key})"),
            Command::SetCommittee { committee } => write!(
                f,
                "SetCommittee({} of {})",
                committee.threshold,
                committee.members.len()
            ),
            Command::Repair { step, .. } => match step {
                RepairStep::Assign { tasks } => write!(f, "RepairAssign({} moves)", tasks.len()),
                RepairStep::Commit { tasks } => write!(f, "RepairCommit({} moves)", tasks.len()),
            },
            Command::Client { actor, action, .. } => {
                let what = match action {
                    ClientAction::CommitRecords { records } => {
                        format!("CommitRecords({} records)", records.len())
                    }
                    ClientAction::CommitSegmented { records } => {
                        format!("CommitSegmented({} segments)", records.len())
                    }
                    ClientAction::OpenRead { job, records, .. } => {
                        format!("OpenRead({job}, {} records)", records.len())
                    }
                    ClientAction::OpenReadEach { job, records, .. } => {
                        format!("OpenReadEach({job}, {} records)", records.len())
                    }
                    ClientAction::OpenAudit { records, deep, .. } => {
                        format!("OpenAudit({} records, deep {deep})", records.len())
                    }
                    ClientAction::OpenErasureCheck { records, .. } => {
                        format!("OpenErasureCheck({} records)", records.len())
                    }
                    ClientAction::SetNodeMode { node, mode, .. } => {
                        format!("SetNodeMode({node}, {})", mode.as_str())
                    }
                    ClientAction::CreateGrant { grant } => format!("CreateGrant({})", grant.job),
                    ClientAction::CreateSignedGrant { grant, signatures } => format!(
                        "CreateSignedGrant({}, {} signatures)",
                        grant.job,
                        signatures.len()
                    ),
                    ClientAction::RevokeGrant { job, .. } => format!("RevokeGrant({job})"),
                    ClientAction::Erase { target, .. } => match target {
                        EraseTarget::Records(ids) => format!("Erase({} records)", ids.len()),
                        EraseTarget::Subject(_) => "Erase(subject)".to_string(),
                    },
                    ClientAction::Backup { backup, dir } => format!("Backup({backup}, {dir})"),
                    ClientAction::Revoke { certificates, .. } => {
                        format!("Revoke({} certificates)", certificates.len())
                    }
                    ClientAction::ReportShares { reports } => {
                        format!("ReportShares({} shares)", reports.len())
                    }
                };
                write!(f, "{what} by {}", actor.name)
            }
        }
    }
}

/// A repair step (see `crate::repair`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RepairStep {
    /// Record these moves as pending (replacing any pending move of the same record).
    Assign {
        /// The moves (`assigned_*` are set on apply).
        tasks: Vec<RepairTask>,
    },
    /// Change the holders of these pending moves: `to` holds share x from now on.
    Commit {
        /// The moves, as assigned.
        tasks: Vec<RepairTask>,
    },
}

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CommandResponse {
    /// Applied.
    #[default]
    Applied,
    /// Refused by the state machine (the log entry stays; the state did not change
    /// except for the audit entry recording the refusal).
    Refused {
        /// Why, for the caller.
        reason: String,
    },
    /// Refused because the actor may not do this (no grant, wrong zone, ...).
    Forbidden {
        /// Why, for the caller.
        reason: String,
    },
    /// Refused because it names records the catalog does not hold.
    NotFound {
        /// Why, for the caller.
        reason: String,
    },
    /// An erasure was applied.
    Erased {
        /// The records it erased.
        erased: Vec<RecordId>,
        /// Whether the subject still has records (the caller proposes again).
        remaining: bool,
    },
    /// A read ticket was opened for the admitted records; these were left out.
    ReadOpened {
        /// The records left out, and why.
        refused: Vec<kakera_proto::catalog::RefusedRecord>,
    },
}

/// Most bytes of a metadata key.
pub const MAX_META_KEY_BYTES: usize = 256;
/// Most bytes of a metadata value.
pub const MAX_META_VALUE_BYTES: usize = 64 * 1024;
