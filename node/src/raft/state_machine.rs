//! The replicated state machine over RocksDB: column family `sm_meta` (last applied log
//! id, last membership) and `catalog` (the cluster's replicated state). A batch of
//! entries is applied with one atomic write batch; responses go out only after it.
//!
//! Snapshots are files of bounded chunks built from one RocksDB view and installed
//! by SST ingestion ([`super::snapshot`]): never the whole catalog in memory.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use rocksdb::DB;
use serde::{Deserialize, Serialize};

use kakera_proto::audit::{AuditAction, AuditEntry, Outcome};
use kakera_proto::catalog::{
    Actor, EraseTarget, Grant, MAX_BATCH_RECORDS, NodeMode, NodeRecord, OptOut, RecordEntry,
    RecordRefusal, RefusedRecord, Revocation, Ticket, TicketPurpose, Tombstone,
};
use kakera_proto::record::RecordKind;
use kakera_proto::{RecordId, RequestId, ids};

use super::catalog::{AuditHead, Families, keys};
use super::commands::{
    ClientAction, Command, CommandResponse, MAX_META_KEY_BYTES, MAX_META_VALUE_BYTES, RepairStep,
};
use super::effects::{Effect, EffectRunner, NoEffects};
use super::log_store::{decode, encode};
use super::{SnapshotData, TypeConfig};
use crate::shares::{Promotion, ShareStore};
use crate::store::{CF_SM_META, cf};

use super::snapshot::{KEY_LAST_APPLIED, KEY_LAST_MEMBERSHIP, SnapshotHandle};
/// Catalog key of the cluster identity written by [`Command::InitCluster`].
pub const KEY_CLUSTER: &[u8] = b"cluster";
/// Prefix of incarnation keys (`incarnation/<node id, big-endian>` -> Raft member id).
pub const INCARNATION_PREFIX: &[u8] = b"incarnation/";
/// Catalog key of the review committee written by [`Command::SetCommittee`].
pub const KEY_COMMITTEE: &[u8] = b"committee";
/// Prefix of operator metadata keys.
pub const META_PREFIX: &[u8] = b"meta/";

/// How long a read ticket lasts (capped by its grant's expiry).
pub const READ_TICKET_TTL_MS: u64 = 10 * 60 * 1000;
/// How long an audit ticket lasts.
pub const AUDIT_TICKET_TTL_MS: u64 = 30 * 60 * 1000;
/// Index keys per write batch when tickets are indexed at open.
const INDEX_BATCH_KEYS: usize = 4096;
/// Most records one erasure entry erases: a batch of records or a subject's page,
/// with the parts of the segmented records among them.
const MAX_ERASE_IDS: usize = MAX_BATCH_RECORDS + kakera_proto::catalog::MAX_SEGMENTS;
/// Most expired tickets one apply removes (bounded work per entry).
const TICKET_GC_SCAN: usize = 64;

/// The state machine of a node.
#[derive(Clone)]
pub struct StateMachine {
    pub(super) db: Arc<DB>,
    snapshot_dir: PathBuf,
    /// This node's config id: applying a commit promotes the shares it holds.
    node_id: u64,
    shares: ShareStore,
    /// Performs what applied entries ask for (see [`super::effects`]).
    effects: Arc<dyn EffectRunner>,
    /// Bytes per snapshot chunk (`[raft] snapshot_chunk_bytes`).
    snapshot_chunk_bytes: usize,
}

/// A certificate revoked with its bytes: the state machine refuses its commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedHolder {
    /// Its serial (hex).
    pub serial: String,
    /// When (leader time, Unix ms).
    pub at_ms: u64,
    /// The log entry that revoked it.
    pub log_index: u64,
}

/// The cluster identity the group was bootstrapped with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// The cluster id.
    pub cluster_id: String,
    /// BLAKE3 of the bootstrapping config.
    pub config_digest: [u8; 32],
}

impl StateMachine {
    /// A state machine over the node database `shares` stores in, for config node
    /// `node_id`; snapshots go to `snapshot_dir`. It promotes and releases shares
    /// through `shares` itself, so its staging ledger is the one the node's server
    /// counts in (a store of its own would never see those counts released).
    pub fn new(
        shares: ShareStore,
        snapshot_dir: PathBuf,
        node_id: u64,
    ) -> io::Result<StateMachine> {
        let db = shares.db().clone();
        std::fs::create_dir_all(&snapshot_dir)?;
        // Recovery first: it needs the link an interrupted install kept.
        if super::snapshot::recover(&db, &snapshot_dir)? {
            tracing::warn!("finished a snapshot install a crash had interrupted");
        }
        let leftovers = super::snapshot::clean_leftovers(&snapshot_dir)?;
        if leftovers > 0 {
            tracing::info!(
                files = leftovers,
                "removed files of an interrupted snapshot transfer or of an older version"
            );
        }
        let indexed = index_tickets(&db)?;
        if indexed > 0 {
            tracing::info!(tickets = indexed, "tickets added to the expiry index");
        }
        Ok(StateMachine {
            db,
            snapshot_dir,
            node_id,
            shares,
            effects: Arc::new(NoEffects),
            snapshot_chunk_bytes: super::snapshot::DEFAULT_CHUNK_BYTES,
        })
    }

    /// The same state machine building snapshots in chunks of `bytes`.
    pub fn with_snapshot_chunk_bytes(mut self, bytes: usize) -> StateMachine {
        self.snapshot_chunk_bytes = bytes.max(1);
        self
    }

    /// The same state machine with `effects` performing what applied entries ask for.
    pub fn with_effects(mut self, effects: Arc<dyn EffectRunner>) -> StateMachine {
        self.effects = effects;
        self
    }

    /// Bytes per snapshot chunk.
    pub fn snapshot_chunk_bytes(&self) -> usize {
        self.snapshot_chunk_bytes
    }

    /// Where snapshot files live (incoming transfers are written here too).
    pub fn snapshot_dir(&self) -> &std::path::Path {
        &self.snapshot_dir
    }

    /// BLAKE3 over every catalog pair in key order, and the pair count (equal on
    /// two nodes exactly when their catalogs are).
    pub fn catalog_digest(&self) -> io::Result<([u8; 32], u64)> {
        super::snapshot::catalog_digest(&self.db)
    }

    /// Reads the cluster record, if the group has been initialised.
    pub fn cluster_record(&self) -> io::Result<Option<ClusterRecord>> {
        Families::of(&self.db)?
            .get(KEY_CLUSTER)?
            .map(|b| decode(&b))
            .transpose()
    }

    /// The current Raft member id of every node that registered one.
    pub fn incarnations(&self) -> io::Result<std::collections::BTreeMap<u64, u64>> {
        let catalog = Families::of(&self.db)?;
        let mut out = std::collections::BTreeMap::new();
        // Bounded by the number of registered nodes (one key each).
        for item in catalog.iter_from(INCARNATION_PREFIX, rocksdb::ReadOptions::default()) {
            let (k, v) = item.map_err(io::Error::other)?;
            let Some(node) = k.strip_prefix(INCARNATION_PREFIX) else {
                break;
            };
            let node: [u8; 8] = node
                .try_into()
                .map_err(|_| io::Error::other("malformed incarnation key"))?;
            out.insert(u64::from_be_bytes(node), decode(&v)?);
        }
        Ok(out)
    }

    /// Reads an operator metadata value.
    pub fn meta(&self, key: &str) -> io::Result<Option<String>> {
        let mut k = META_PREFIX.to_vec();
        k.extend_from_slice(key.as_bytes());
        Families::of(&self.db)?
            .get(k)?
            .map(|b| decode(&b))
            .transpose()
    }

    fn read_meta(
        &self,
    ) -> io::Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>)> {
        read_meta_of(&self.db)
    }

    /// Appends `entry` to the audit log in `batch`: numbers it, links it to the head,
    /// keeps time from going backwards, indexes it by record and job.
    fn append_audit(
        &self,
        batch: &mut rocksdb::WriteBatch,
        head: &mut AuditHead,
        mut entry: AuditEntry,
    ) -> io::Result<()> {
        let catalog = Families::of(&self.db)?;
        entry.seq = head.seq + 1;
        entry.prev = head.hash;
        entry.at_ms = entry.at_ms.max(head.at_ms);
        let hash = entry.hash();
        let seq_be = entry.seq.to_be_bytes();
        catalog.put(batch, keys::audit(entry.seq), encode(&entry)?);
        for r in &entry.records {
            catalog.put(
                batch,
                [keys::audit_by_record(r).as_slice(), &seq_be].concat(),
                [],
            );
        }
        if let Some(job) = &entry.job {
            catalog.put(
                batch,
                [keys::audit_by_job(job).as_slice(), &seq_be].concat(),
                [],
            );
        }
        *head = AuditHead {
            seq: entry.seq,
            hash,
            at_ms: entry.at_ms,
        };
        catalog.put(batch, keys::AUDIT_HEAD, encode(head)?);
        Ok(())
    }

    fn apply_command(
        &self,
        batch: &mut rocksdb::WriteBatch,
        head: &mut AuditHead,
        log_index: u64,
        cmd: &Command,
    ) -> io::Result<CommandResponse> {
        let catalog = Families::of(&self.db)?;
        let system = |action: AuditAction, outcome: &CommandResponse| AuditEntry {
            seq: 0,
            prev: [0; 32],
            log_index,
            at_ms: 0,
            actor: Actor::cluster(),
            request_id: None,
            action,
            job: None,
            records: Vec::new(),
            outcome: outcome_of(outcome),
        };
        let (response, audit) = match cmd {
            Command::InitCluster {
                cluster_id,
                config_digest,
            } => {
                let r = if self.cluster_record()?.is_some() {
                    CommandResponse::Refused {
                        reason: "the cluster is already initialised".into(),
                    }
                } else {
                    let rec = ClusterRecord {
                        cluster_id: cluster_id.clone(),
                        config_digest: *config_digest,
                    };
                    catalog.put(batch, KEY_CLUSTER, encode(&rec)?);
                    CommandResponse::Applied
                };
                let a = system(AuditAction::InitCluster, &r);
                (r, a)
            }
            Command::RegisterIncarnation { node_id, raft_id } => {
                let r = if ids::node_of(*raft_id) != *node_id {
                    CommandResponse::Refused {
                        reason: format!(
                            "Raft member {} does not belong to node {node_id}",
                            ids::describe(*raft_id)
                        ),
                    }
                } else {
                    let mut k = INCARNATION_PREFIX.to_vec();
                    k.extend_from_slice(&node_id.to_be_bytes());
                    catalog.put(batch, k, encode(raft_id)?);
                    CommandResponse::Applied
                };
                let a = system(
                    AuditAction::RegisterIncarnation {
                        node: *node_id,
                        member: ids::describe(*raft_id),
                    },
                    &r,
                );
                (r, a)
            }
            Command::SetCommittee { committee } => {
                let r = match self.committee()? {
                    None => {
                        catalog.put(batch, KEY_COMMITTEE, encode(committee)?);
                        CommandResponse::Applied
                    }
                    Some(c) if c == *committee => CommandResponse::Applied,
                    Some(_) => CommandResponse::Refused {
                        reason: "the review committee recorded in the catalog differs from \
                                 the config's; a recorded committee is not changed by a \
                                 config edit"
                            .into(),
                    },
                };
                let a = system(
                    AuditAction::Committee {
                        threshold: committee.threshold,
                        members: committee.members.iter().map(|(n, _)| n.clone()).collect(),
                    },
                    &r,
                );
                (r, a)
            }
            Command::SetMeta { key, value } => {
                let r = if key.len() > MAX_META_KEY_BYTES || value.len() > MAX_META_VALUE_BYTES {
                    CommandResponse::Refused {
                        reason: format!(
                            "metadata keys are at most {MAX_META_KEY_BYTES} bytes and values \
                             at most {MAX_META_VALUE_BYTES}"
                        ),
                    }
                } else {
                    let mut k = META_PREFIX.to_vec();
                    k.extend_from_slice(key.as_bytes());
                    catalog.put(batch, k, encode(value)?);
                    CommandResponse::Applied
                };
                let a = system(AuditAction::SetMeta { key: key.clone() }, &r);
                (r, a)
            }
            Command::Repair { at_ms, step } => {
                let now = (*at_ms).max(head.at_ms);
                let (r, action, records) = self.apply_repair(batch, log_index, now, step)?;
                let mut a = system(action, &r);
                a.at_ms = now;
                a.records = records;
                (r, a)
            }
            Command::Client {
                actor,
                at_ms,
                request_id,
                action,
            } => {
                // The entry's time: never before the head's (see append_audit).
                let now = (*at_ms).max(head.at_ms);
                let (r, audit_action, job, records) = match self.revoked_holder(actor)? {
                    None => self.apply_client(batch, log_index, actor, now, action)?,
                    // A revoked certificate's commands change nothing from the entry
                    // that revoked it on, whatever was in flight (issue 22): the
                    // action is worked out on a batch that is thrown away, for what
                    // its audit entry names.
                    Some(revoked) => {
                        let mut scratch = rocksdb::WriteBatch::default();
                        let (_, audit_action, job, records) =
                            self.apply_client(&mut scratch, log_index, actor, now, action)?;
                        let r = CommandResponse::Forbidden {
                            reason: format!(
                                "the certificate of '{}' (serial {}) was revoked at log \
                                 index {}; it can do nothing more",
                                actor.name, revoked.serial, revoked.log_index
                            ),
                        };
                        (r, audit_action, job, records)
                    }
                };
                let a = AuditEntry {
                    seq: 0,
                    prev: [0; 32],
                    log_index,
                    at_ms: now,
                    actor: actor.clone(),
                    request_id: Some(*request_id),
                    action: audit_action,
                    job,
                    records,
                    outcome: outcome_of(&r),
                };
                (r, a)
            }
        };
        self.append_audit(batch, head, audit)?;
        Ok(response)
    }

    /// Applies a repair step: the response, the audit action and its records. Moves
    /// that no longer fit the catalog (the record changed, another move replaced it)
    /// are skipped and left out of the audit entry.
    fn apply_repair(
        &self,
        batch: &mut rocksdb::WriteBatch,
        log_index: u64,
        now: u64,
        step: &RepairStep,
    ) -> io::Result<(CommandResponse, AuditAction, Vec<RecordId>)> {
        let catalog = Families::of(&self.db)?;
        let mut moves = Vec::new();
        let mut records = Vec::new();
        match step {
            RepairStep::Assign { tasks } => {
                for t in tasks.iter().take(MAX_BATCH_RECORDS) {
                    let Some(entry) = self.record(&t.record)? else {
                        continue;
                    };
                    let holds = entry.holder_on(t.from).is_some_and(|h| h.x == t.x);
                    // A move goes to a node holding nothing of the record; a bad
                    // share is regenerated in place, on its own holder.
                    let fits = holds
                        && if t.cause == kakera_proto::catalog::RepairCause::Corrupt {
                            t.from == t.to
                        } else {
                            entry.holder_on(t.to).is_none() && t.from != t.to
                        };
                    if !fits {
                        continue;
                    }
                    let mut task = t.clone();
                    task.assigned_at_ms = now;
                    task.assigned_index = log_index;
                    catalog.put(batch, keys::repair(&t.record), encode(&task)?);
                    moves.push((t.x, t.from, t.to));
                    records.push(t.record);
                }
                Ok((
                    CommandResponse::Applied,
                    AuditAction::RepairAssign { moves },
                    records,
                ))
            }
            RepairStep::Commit { tasks } => {
                for t in tasks.iter().take(MAX_BATCH_RECORDS) {
                    let pending = self.pending_repair(&t.record)?;
                    let Some(p) = pending.filter(|p| {
                        (p.x, p.from, p.to, p.assigned_index)
                            == (t.x, t.from, t.to, t.assigned_index)
                    }) else {
                        continue;
                    };
                    let Some(mut entry) = self.record(&p.record)? else {
                        catalog.delete(batch, keys::repair(&p.record));
                        continue;
                    };
                    let Some(pos) = entry
                        .holders
                        .iter()
                        .position(|h| h.node == p.from && h.x == p.x)
                    else {
                        catalog.delete(batch, keys::repair(&p.record));
                        continue;
                    };
                    entry.holders[pos].node = p.to;
                    let digest = entry.holders[pos].digest;
                    catalog.put(batch, keys::record(&p.record), encode(&entry)?);
                    catalog.delete(batch, keys::repair(&p.record));
                    if self.node_id == p.to {
                        match self.shares.promote(batch, &p.record, &digest)? {
                            Promotion::Promoted | Promotion::AlreadyCommitted => {}
                            other => tracing::warn!(
                                record = %p.record,
                                outcome = ?other,
                                "repaired share not staged here; the next repair scan brings it"
                            ),
                        }
                    }
                    // In place (a bad share regenerated on its holder): nothing leaves.
                    if self.node_id == p.from && p.from != p.to {
                        self.shares.remove(batch, &p.record)?;
                    }
                    moves.push((p.x, p.from, p.to));
                    records.push(p.record);
                }
                Ok((
                    CommandResponse::Applied,
                    AuditAction::RepairCommit { moves },
                    records,
                ))
            }
        }
    }

    /// Sets a node's mode (operator).
    fn set_node_mode(
        &self,
        batch: &mut rocksdb::WriteBatch,
        actor: &Actor,
        now: u64,
        node: u64,
        mode: NodeMode,
        reason: &str,
    ) -> io::Result<CommandResponse> {
        if actor.role != kakera_proto::Role::Operator {
            return Ok(CommandResponse::Forbidden {
                reason: format!("role '{}' may not change node modes", actor.role),
            });
        }
        let catalog = Families::of(&self.db)?;
        let rec = NodeRecord {
            node,
            mode,
            changed_at_ms: now,
            changed_by: actor.name.clone(),
            reason: reason.to_string(),
        };
        catalog.put(batch, keys::node_mode(node), encode(&rec)?);
        Ok(CommandResponse::Applied)
    }

    /// Applies a client's action at leader time `now`: the response, and what the
    /// audit entry records (action, job, records).
    fn apply_client(
        &self,
        batch: &mut rocksdb::WriteBatch,
        log_index: u64,
        actor: &Actor,
        now: u64,
        action: &ClientAction,
    ) -> io::Result<(CommandResponse, AuditAction, Option<String>, Vec<RecordId>)> {
        let catalog = Families::of(&self.db)?;
        Ok(match action {
            ClientAction::CommitRecords { records } => {
                let ids = records.iter().map(|r| r.id).collect();
                let r = self.commit_records(batch, actor, now, records, false)?;
                (r, AuditAction::CommitRecords, None, ids)
            }
            ClientAction::CommitSegmented { records } => {
                let ids = records.iter().map(|r| r.id).collect();
                let r = self.commit_records(batch, actor, now, records, true)?;
                (r, AuditAction::CommitRecords, None, ids)
            }
            ClientAction::OpenRead {
                job,
                records,
                ttl_ms,
            } => {
                let r = self.open_read(batch, log_index, actor, now, job, records, *ttl_ms)?;
                (
                    r,
                    AuditAction::OpenRead { ticket: log_index },
                    Some(job.clone()),
                    records.clone(),
                )
            }
            ClientAction::OpenReadEach {
                job,
                records,
                ttl_ms,
            } => {
                let (r, admitted) =
                    self.open_read_each(batch, log_index, actor, now, job, records, *ttl_ms)?;
                let refused = match &r {
                    CommandResponse::ReadOpened { refused } => {
                        refused.iter().map(|f| f.record).collect()
                    }
                    _ => Vec::new(),
                };
                (
                    r,
                    AuditAction::OpenReadEach {
                        ticket: log_index,
                        refused,
                    },
                    Some(job.clone()),
                    admitted,
                )
            }
            ClientAction::OpenAudit {
                records,
                deep,
                ttl_ms,
            } => {
                let r = self.open_ticket(
                    batch,
                    log_index,
                    actor,
                    now,
                    records,
                    TicketPurpose::Audit { deep: *deep },
                    *ttl_ms,
                )?;
                (
                    r,
                    AuditAction::AuditRun {
                        ticket: log_index,
                        deep: *deep,
                    },
                    None,
                    records.clone(),
                )
            }
            ClientAction::SetNodeMode { node, mode, reason } => {
                let r = self.set_node_mode(batch, actor, now, *node, *mode, reason)?;
                (
                    r,
                    AuditAction::NodeMode {
                        node: *node,
                        mode: *mode,
                        reason: reason.clone(),
                    },
                    None,
                    Vec::new(),
                )
            }
            ClientAction::OpenErasureCheck { records, ttl_ms } => {
                let r = self.open_ticket(
                    batch,
                    log_index,
                    actor,
                    now,
                    records,
                    TicketPurpose::ErasureCheck,
                    *ttl_ms,
                )?;
                (
                    r,
                    AuditAction::ErasureCheck { ticket: log_index },
                    None,
                    records.clone(),
                )
            }
            ClientAction::CreateGrant { grant } => {
                let action = AuditAction::CreateGrant {
                    expires_at_ms: grant.expires_at_ms,
                    approval: grant.approval.clone(),
                };
                let r = match self.committee()? {
                    Some(c) if actor.role == kakera_proto::Role::Operator => {
                        CommandResponse::Forbidden {
                            reason: format!(
                                "grants on this cluster need {} signatures of the data provision \
                                 review committee (kakera grant sign), not one operator",
                                c.threshold
                            ),
                        }
                    }
                    _ => self.put_grant(batch, actor, now, grant)?,
                };
                (r, action, Some(grant.job.clone()), Vec::new())
            }
            ClientAction::CreateSignedGrant { grant, signatures } => {
                let (r, signers) = self.signed_grant(batch, actor, now, grant, signatures)?;
                let action = AuditAction::CreateSignedGrant {
                    expires_at_ms: grant.expires_at_ms,
                    approval: grant.approval.clone(),
                    signers,
                };
                (r, action, Some(grant.job.clone()), Vec::new())
            }
            ClientAction::Erase { target, reason } => {
                let subject = match target {
                    EraseTarget::Subject(tag) => Some(*tag),
                    EraseTarget::Records(_) => None,
                };
                let action = AuditAction::Erase {
                    subject,
                    reason: reason.clone(),
                };
                let r = self.erase(batch, log_index, actor, now, target, reason)?;
                let records = match &r {
                    CommandResponse::Erased { erased, .. } => erased.clone(),
                    _ => Vec::new(),
                };
                (r, action, None, records)
            }
            ClientAction::Backup { backup, dir } => {
                let action = AuditAction::Backup {
                    backup: backup.to_string(),
                    dir: dir.clone(),
                };
                let r = if actor.role != kakera_proto::Role::Operator {
                    CommandResponse::Forbidden {
                        reason: format!("role '{}' may not take backups", actor.role),
                    }
                } else if let Err(e) = kakera_proto::backup::validate_backup_dir(dir) {
                    CommandResponse::Refused {
                        reason: e.to_string(),
                    }
                } else {
                    CommandResponse::Applied
                };
                (r, action, None, Vec::new())
            }
            ClientAction::ReportShares { reports } => {
                let action = AuditAction::ShareReport {
                    shares: reports.iter().map(|r| (r.node, r.problem)).collect(),
                };
                let r = if matches!(
                    actor.role,
                    kakera_proto::Role::Node
                        | kakera_proto::Role::Reader
                        | kakera_proto::Role::Auditor
                ) {
                    CommandResponse::Applied
                } else {
                    CommandResponse::Forbidden {
                        reason: format!("role '{}' may not report shares", actor.role),
                    }
                };
                (r, action, None, reports.iter().map(|r| r.record).collect())
            }
            ClientAction::Revoke { crl, certificates } => {
                let (r, action) =
                    self.record_revocation(batch, log_index, actor, now, crl, certificates)?;
                (r, action, None, Vec::new())
            }
            ClientAction::RevokeGrant { job, reason } => {
                let action = AuditAction::RevokeGrant {
                    reason: reason.clone(),
                };
                let r = if actor.role != kakera_proto::Role::Operator {
                    CommandResponse::Forbidden {
                        reason: format!("role '{}' may not revoke grants", actor.role),
                    }
                } else {
                    match self.grant(job)? {
                        None => CommandResponse::NotFound {
                            reason: format!("there is no grant for job '{job}'"),
                        },
                        Some(g) if g.revoked.is_some() => CommandResponse::Applied,
                        Some(mut g) => {
                            g.revoked = Some(Revocation {
                                at_ms: now,
                                by: actor.name.clone(),
                                reason: reason.clone(),
                            });
                            catalog.put(batch, keys::grant(job), encode(&g)?);
                            CommandResponse::Applied
                        }
                    }
                };
                (r, action, Some(job.clone()), Vec::new())
            }
        })
    }

    /// Erases records (operator): for each live one, the catalog entry, its indexes
    /// and any pending repair give way to a tombstone, and this node deletes its
    /// shares and marks them for purging (`crate::erasure`). A subject erasure also
    /// records the opt-out (its records are refused from then on) and takes at most
    /// [`MAX_BATCH_RECORDS`] records per entry, saying whether more remain.
    #[allow(clippy::too_many_arguments)] // the parts of one command, named
    fn erase(
        &self,
        batch: &mut rocksdb::WriteBatch,
        log_index: u64,
        actor: &Actor,
        now: u64,
        target: &EraseTarget,
        reason: &str,
    ) -> io::Result<CommandResponse> {
        let catalog = Families::of(&self.db)?;
        if actor.role != kakera_proto::Role::Operator {
            return Ok(CommandResponse::Forbidden {
                reason: format!("role '{}' may not erase records", actor.role),
            });
        }
        if let Err(e) = kakera_proto::catalog::validate_reason(reason) {
            return Ok(CommandResponse::Refused {
                reason: e.to_string(),
            });
        }
        let (ids, remaining, subject) = match target {
            EraseTarget::Records(ids) => {
                if ids.is_empty() || ids.len() > MAX_BATCH_RECORDS {
                    return Ok(CommandResponse::Refused {
                        reason: format!("erase 1 to {MAX_BATCH_RECORDS} records per request"),
                    });
                }
                for id in ids {
                    if self.record(id)?.is_none() && self.tombstone(id)?.is_none() {
                        return Ok(CommandResponse::NotFound {
                            reason: format!(
                                "record {id} is not in the catalog and was never erased; \
                                 nothing of this request was erased"
                            ),
                        });
                    }
                    if let Some((parent, index)) = self.parent_of(id)? {
                        return Ok(CommandResponse::Refused {
                            reason: format!(
                                "record {id} is segment {index} of record {parent}: erase \
                                 {parent} (its segments go with it); nothing of this request \
                                 was erased"
                            ),
                        });
                    }
                }
                let mut all = Vec::with_capacity(ids.len());
                for id in ids {
                    all.extend(self.segment_group(id)?);
                    if all.len() > MAX_ERASE_IDS {
                        return Ok(CommandResponse::Refused {
                            reason: format!(
                                "these records hold more than {MAX_ERASE_IDS} segments \
                                 together; erase them in smaller requests"
                            ),
                        });
                    }
                }
                (all, false, None)
            }
            EraseTarget::Subject(tag) => {
                if self.opt_out(tag)?.is_none() {
                    let o = OptOut {
                        subject: *tag,
                        at_ms: now,
                        by: actor.name.clone(),
                        reason: reason.to_string(),
                    };
                    catalog.put(batch, keys::optout(tag), encode(&o)?);
                }
                let (listed, mut more) = self.subject_records(tag, MAX_BATCH_RECORDS)?;
                // A segmented record goes whole, its parts with it: groups are taken
                // while they fit MAX_ERASE_IDS (the first always), the rest next time.
                let mut ids = Vec::with_capacity(listed.len());
                let mut taken = std::collections::BTreeSet::new();
                for id in &listed {
                    if taken.contains(id) {
                        continue;
                    }
                    let group = self.segment_group(id)?;
                    if !ids.is_empty() && ids.len() + group.len() > MAX_ERASE_IDS {
                        more = true;
                        break;
                    }
                    taken.extend(group.iter().copied());
                    ids.extend(group);
                }
                (ids, more, Some(*tag))
            }
        };
        let mut erased = Vec::with_capacity(ids.len());
        for id in &ids {
            // Bounded by MAX_ERASE_IDS (checked or taken above).
            let Some(entry) = self.record(id)? else {
                continue;
            };
            if let Some(count) = self.segment_count(id)? {
                catalog.delete(batch, keys::segments(id));
                for index in 1..count {
                    catalog.delete(batch, keys::segment(id, index));
                }
            }
            catalog.delete(batch, keys::segment_of(id));
            catalog.delete(batch, keys::record(id));
            for key in keys::indexes(id, &entry.meta) {
                catalog.delete(batch, key);
            }
            catalog.delete(batch, keys::repair(id));
            let tomb = Tombstone {
                id: *id,
                at_ms: now,
                by: actor.name.clone(),
                reason: reason.to_string(),
                log_index,
            };
            catalog.put(batch, keys::tomb(id), encode(&tomb)?);
            if let Some(tag) = &subject {
                catalog.put(
                    batch,
                    [keys::tombs_of_subject(tag).as_slice(), &id.0].concat(),
                    [],
                );
            }
            self.shares.erase(batch, id)?;
            self.shares.ledger().release(id);
            erased.push(*id);
        }
        Ok(CommandResponse::Erased { erased, remaining })
    }

    /// The records erasing `id` erases: a segmented record's parent and every part
    /// (from the parent or any part), else `id` alone. At most `MAX_SEGMENTS`.
    fn segment_group(&self, id: &RecordId) -> io::Result<Vec<RecordId>> {
        let parent = match self.parent_of(id)? {
            Some((parent, _)) => parent,
            None => *id,
        };
        let Some(count) = self.segment_count(&parent)? else {
            return Ok(vec![*id]);
        };
        let catalog = Families::of(&self.db)?;
        let mut group = Vec::with_capacity(count as usize);
        group.push(parent);
        for index in 1..count {
            if let Some(part) = catalog.get(keys::segment(&parent, index))? {
                group.push(decode(&part)?);
            }
        }
        Ok(group)
    }

    /// Makes records visible: checks each entry again (the leader checked placement),
    /// refuses the whole batch if any id is committed with other content, writes the
    /// entries and their indexes, and promotes this node's staged shares. With
    /// `segmented`, `records` are one record's segments (parent first) and the
    /// segment keys link them; without, no record may be a segment.
    fn commit_records(
        &self,
        batch: &mut rocksdb::WriteBatch,
        actor: &Actor,
        now: u64,
        records: &[RecordEntry],
        segmented: bool,
    ) -> io::Result<CommandResponse> {
        let catalog = Families::of(&self.db)?;
        if actor.role != kakera_proto::Role::Ingest {
            return Ok(CommandResponse::Forbidden {
                reason: format!("role '{}' may not commit records", actor.role),
            });
        }
        let shape = if segmented {
            kakera_proto::catalog::check_segmented(records).map_err(|e| e.to_string())
        } else {
            match records.iter().find(|r| r.meta.kind == RecordKind::Segment) {
                Some(r) => Err(format!(
                    "record {}: a segment is committed with the record it belongs to",
                    r.id
                )),
                None => Ok(()),
            }
        };
        if let Err(reason) = shape {
            return Ok(CommandResponse::Refused {
                reason: format!("{reason}; nothing of this batch was committed"),
            });
        }
        let mut fresh = Vec::with_capacity(records.len());
        for r in records {
            if let Err(e) = r.validate() {
                return Ok(CommandResponse::Refused {
                    reason: e.to_string(),
                });
            }
            if let Some(t) = self.tombstone(&r.id)? {
                return Ok(CommandResponse::Refused {
                    reason: format!(
                        "record {} was erased on {} ({}); an erased record is never stored \
                         again; nothing of this batch was committed",
                        r.id,
                        format_ms(t.at_ms),
                        t.reason
                    ),
                });
            }
            if self.opt_out(&r.meta.subject)?.is_some() {
                return Ok(CommandResponse::Refused {
                    reason: format!(
                        "record {}: its subject opted out; no record of it is stored; \
                         nothing of this batch was committed",
                        r.id
                    ),
                });
            }
            match self.record(&r.id)? {
                Some(old) if old.same_content(r) => {}
                Some(_) => {
                    return Ok(CommandResponse::Refused {
                        reason: format!(
                            "record {} is already committed with other content; nothing of \
                             this batch was committed",
                            r.id
                        ),
                    });
                }
                None => fresh.push(r),
            }
        }
        if segmented {
            // A retried commit finds every segment already there (same content):
            // the links are written again, unchanged.
            let (parent, parts) = records
                .split_first()
                .ok_or_else(|| io::Error::other("segmented commit without segments"))?;
            let refuse = |why: String| {
                Ok(CommandResponse::Refused {
                    reason: format!(
                        "record {}: {why}; nothing of this batch was committed",
                        parent.id
                    ),
                })
            };
            for (i, part) in parts.iter().enumerate() {
                let index = i as u32 + 1;
                if let Some(linked) = self.parent_of(&part.id)?
                    && linked != (parent.id, index)
                {
                    return refuse(format!("its part {} belongs to another record", part.id));
                }
            }
            match self.segment_count(&parent.id)? {
                Some(c) if c as usize == records.len() => {}
                Some(_) => return refuse("it is committed with other segments".into()),
                None if self.record(&parent.id)?.is_some() => {
                    return refuse("it is committed whole".into());
                }
                None => {}
            }
            // check_segmented bounds the count by MAX_SEGMENTS.
            catalog.put(
                batch,
                keys::segments(&parent.id),
                encode(&(records.len() as u32))?,
            );
            for (i, part) in parts.iter().enumerate() {
                let index = i as u32 + 1;
                catalog.put(batch, keys::segment(&parent.id, index), encode(&part.id)?);
                catalog.put(
                    batch,
                    keys::segment_of(&part.id),
                    encode(&(parent.id, index))?,
                );
            }
        }
        for r in fresh {
            let mut entry = r.clone();
            entry.committed_at_ms = now;
            catalog.put(batch, keys::record(&r.id), encode(&entry)?);
            for key in keys::indexes(&r.id, &r.meta) {
                catalog.put(batch, key, []);
            }
            if let Some(h) = r.holder_on(self.node_id) {
                match self.shares.promote(batch, &r.id, &h.digest)? {
                    Promotion::Promoted | Promotion::AlreadyCommitted => {}
                    other => tracing::warn!(
                        record = %r.id,
                        outcome = ?other,
                        "committed record has no matching staged share here; repair must bring it"
                    ),
                }
            }
        }
        Ok(CommandResponse::Applied)
    }

    /// Stores `grant` for an operator (validated at leader time `now`): a repeat of the
    /// same grant is harmless, another grant under the same job is refused.
    fn put_grant(
        &self,
        batch: &mut rocksdb::WriteBatch,
        actor: &Actor,
        now: u64,
        grant: &Grant,
    ) -> io::Result<CommandResponse> {
        let catalog = Families::of(&self.db)?;
        if actor.role != kakera_proto::Role::Operator {
            return Ok(CommandResponse::Forbidden {
                reason: format!("role '{}' may not create grants", actor.role),
            });
        }
        if let Err(e) = grant.validate(now) {
            return Ok(CommandResponse::Refused {
                reason: e.to_string(),
            });
        }
        let mut g = grant.clone();
        g.created_at_ms = now;
        g.created_by = actor.name.clone();
        g.revoked = None;
        Ok(match self.grant(&grant.job)? {
            Some(old) if same_grant(&old, &g) && old.revoked.is_none() => CommandResponse::Applied,
            Some(_) => CommandResponse::Refused {
                reason: format!(
                    "a grant for job '{}' already exists; a new approval needs a new job name",
                    grant.job
                ),
            },
            None => {
                catalog.put(batch, keys::grant(&g.job), encode(&g)?);
                CommandResponse::Applied
            }
        })
    }

    /// Stores `grant` if the recorded review committee approved it: at least its
    /// threshold of valid, distinct member signatures over the grant's terms on this
    /// cluster. Returns the response and the signers (empty when refused).
    fn signed_grant(
        &self,
        batch: &mut rocksdb::WriteBatch,
        actor: &Actor,
        now: u64,
        grant: &Grant,
        signatures: &[kakera_proto::committee::CommitteeSignature],
    ) -> io::Result<(CommandResponse, Vec<String>)> {
        if actor.role != kakera_proto::Role::Operator {
            return Ok((
                CommandResponse::Forbidden {
                    reason: format!("role '{}' may not create grants", actor.role),
                },
                Vec::new(),
            ));
        }
        let (Some(committee), Some(cluster)) = (self.committee()?, self.cluster_record()?) else {
            return Ok((
                CommandResponse::Refused {
                    reason: "no review committee is recorded on this cluster (the config has \
                             no [committee], or the leader has not recorded it yet)"
                        .into(),
                },
                Vec::new(),
            ));
        };
        let message = kakera_proto::committee::approval_message(&cluster.cluster_id, grant)
            .map_err(io::Error::other)?;
        match committee.verify(&message, signatures) {
            Ok(signers) => Ok((self.put_grant(batch, actor, now, grant)?, signers)),
            Err(refusal) => Ok((
                CommandResponse::Forbidden {
                    reason: format!("the grant is not approved: {refusal}"),
                },
                Vec::new(),
            )),
        }
    }

    /// Records a CRL (see [`ClientAction::Revoke`]): the response and the audit
    /// action. Deterministic: the CA's signature was checked by the proposing leader;
    /// here only what every node decides alike (parsing, succession, that each given
    /// certificate is listed).
    fn record_revocation(
        &self,
        batch: &mut rocksdb::WriteBatch,
        log_index: u64,
        actor: &Actor,
        now: u64,
        crl: &[u8],
        certificates: &[Vec<u8>],
    ) -> io::Result<(CommandResponse, AuditAction)> {
        use kakera_proto::revocation::{self as rev, MAX_CRL_ISSUERS};
        let refused =
            |reason: String, action: AuditAction| Ok((CommandResponse::Refused { reason }, action));
        let empty = AuditAction::Revoke {
            issuer: String::new(),
            crl_number: String::new(),
            serials: Vec::new(),
            holders: Vec::new(),
        };
        if actor.role != kakera_proto::Role::Operator {
            let r = CommandResponse::Forbidden {
                reason: format!("role '{}' may not revoke certificates", actor.role),
            };
            return Ok((r, empty));
        }
        let summary = match rev::parse_crl(crl) {
            Ok(s) => s,
            Err(e) => return refused(e.to_string(), empty),
        };
        let mut holders = Vec::new();
        let mut problem = None;
        for der in certificates {
            let name = kakera_proto::Identity::from_cert_der(der)
                .map_or_else(|_| "(no kakera identity)".to_string(), |id| id.name);
            match rev::cert_ref(der) {
                Ok(c) if summary.lists(&c) => holders.push((name, c.serial_hex())),
                Ok(c) => {
                    problem.get_or_insert(format!(
                        "the certificate of '{name}' ({c}) is not listed in the CRL"
                    ));
                }
                Err(e) => {
                    problem.get_or_insert(e.to_string());
                }
            }
        }
        let action = AuditAction::Revoke {
            issuer: summary.issuer_name.clone(),
            crl_number: summary.number_hex(),
            serials: summary
                .revoked
                .iter()
                .map(|r| {
                    (
                        rev::CertRef {
                            issuer: summary.issuer,
                            serial: r.serial.clone(),
                        }
                        .serial_hex(),
                        r.reason.clone(),
                    )
                })
                .collect(),
            holders,
        };
        if let Some(p) = problem {
            return refused(p, action);
        }
        let current = self.revocation_lists()?;
        let mut same_issuer = None;
        for der in &current {
            let old = rev::parse_crl(der).map_err(io::Error::other)?;
            if old.issuer == summary.issuer {
                same_issuer = Some(old);
            }
        }
        match same_issuer {
            Some(old) => {
                if let Err(e) = rev::check_succession(&old, &summary) {
                    return refused(format!("the CRL cannot replace the cluster's: {e}"), action);
                }
            }
            None if current.len() >= MAX_CRL_ISSUERS => {
                return refused(
                    format!("the cluster keeps CRLs of at most {MAX_CRL_ISSUERS} CAs"),
                    action,
                );
            }
            None => {}
        }
        let catalog = Families::of(&self.db)?;
        catalog.put(batch, keys::crl(&summary.issuer), encode(&crl.to_vec())?);
        for der in certificates {
            // Listed (checked above), so it parses.
            let serial = rev::cert_ref(der).map_err(io::Error::other)?.serial_hex();
            let holder = RevokedHolder {
                serial,
                at_ms: now,
                log_index,
            };
            let fp = kakera_proto::Fingerprint::of(der);
            catalog.put(batch, keys::revoked(&fp), encode(&holder)?);
        }
        Ok((CommandResponse::Applied, action))
    }

    /// Whether `actor`'s certificate was revoked with its bytes (a
    /// [`ClientAction::Revoke`] that named it).
    pub fn revoked_holder(&self, actor: &Actor) -> io::Result<Option<RevokedHolder>> {
        Families::of(&self.db)?
            .get(keys::revoked(&actor.fingerprint))?
            .map(|b| decode(&b))
            .transpose()
    }

    /// The review committee recorded in the catalog, if any.
    pub fn committee(&self) -> io::Result<Option<kakera_proto::committee::Committee>> {
        Families::of(&self.db)?
            .get(KEY_COMMITTEE)?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Opens a read ticket if the job's grant admits the actor and every record.
    #[allow(clippy::too_many_arguments)] // the parts of one command, named
    fn open_read(
        &self,
        batch: &mut rocksdb::WriteBatch,
        log_index: u64,
        actor: &Actor,
        now: u64,
        job: &str,
        records: &[RecordId],
        ttl_ms: u64,
    ) -> io::Result<CommandResponse> {
        let catalog = Families::of(&self.db)?;
        self.collect_tickets(batch, now)?;
        let Some(grant) = self.grant(job)? else {
            return Ok(CommandResponse::Forbidden {
                reason: format!("there is no grant for job '{job}'"),
            });
        };
        let mut entries = Vec::with_capacity(records.len());
        for id in records {
            match self.record(id)? {
                Some(e) => entries.push(e),
                None => {
                    return Ok(CommandResponse::NotFound {
                        reason: self.absence(id)?,
                    });
                }
            }
        }
        if let Err(refusal) = grant.permits(actor, kakera_config::HSZ_ZONE, now, entries.iter()) {
            return Ok(CommandResponse::Forbidden {
                reason: refusal.to_string(),
            });
        }
        let expires_at_ms = now.saturating_add(ttl_ms).min(grant.expires_at_ms);
        let ticket = read_ticket(log_index, actor, job, records.to_vec(), expires_at_ms);
        put_ticket(batch, catalog, &ticket)?;
        Ok(CommandResponse::Applied)
    }

    /// Opens a read ticket for the records of `records` that the job's grant admits
    /// and reports the others by id (erased, not in the catalog, outside the scope).
    /// A grant that does not admit the actor at all refuses the whole request, as
    /// [`Self::open_read`] does. Returns the response and the admitted records.
    #[allow(clippy::too_many_arguments)] // the parts of one command, named
    fn open_read_each(
        &self,
        batch: &mut rocksdb::WriteBatch,
        log_index: u64,
        actor: &Actor,
        now: u64,
        job: &str,
        records: &[RecordId],
        ttl_ms: u64,
    ) -> io::Result<(CommandResponse, Vec<RecordId>)> {
        let catalog = Families::of(&self.db)?;
        self.collect_tickets(batch, now)?;
        let Some(grant) = self.grant(job)? else {
            return Ok((
                CommandResponse::Forbidden {
                    reason: format!("there is no grant for job '{job}'"),
                },
                Vec::new(),
            ));
        };
        // The grant itself first (reader, zone, revocation, expiry): no record.
        if let Err(refusal) = grant.permits(actor, kakera_config::HSZ_ZONE, now, std::iter::empty())
        {
            return Ok((
                CommandResponse::Forbidden {
                    reason: refusal.to_string(),
                },
                Vec::new(),
            ));
        }
        let mut admitted = Vec::with_capacity(records.len());
        let mut refused = Vec::new();
        for id in records {
            let why = match self.record(id)? {
                Some(e) if grant.scope.covers(&e.meta) => {
                    admitted.push(*id);
                    continue;
                }
                Some(e) => RecordRefusal::OutOfScope {
                    kind: e.meta.kind,
                    facility: e.meta.source,
                },
                None => match self.tombstone(id)? {
                    Some(t) => RecordRefusal::Erased {
                        at_ms: t.at_ms,
                        by: t.by,
                        reason: t.reason,
                    },
                    None => RecordRefusal::NotInCatalog,
                },
            };
            refused.push(RefusedRecord { record: *id, why });
        }
        let expires_at_ms = now.saturating_add(ttl_ms).min(grant.expires_at_ms);
        let ticket = read_ticket(log_index, actor, job, admitted, expires_at_ms);
        put_ticket(batch, catalog, &ticket)?;
        Ok((CommandResponse::ReadOpened { refused }, ticket.records))
    }

    /// Opens an auditor's ticket. Audit runs need the records in the catalog; an
    /// erasure check does not (erased records are not).
    #[allow(clippy::too_many_arguments)] // the parts of one command, named
    fn open_ticket(
        &self,
        batch: &mut rocksdb::WriteBatch,
        log_index: u64,
        actor: &Actor,
        now: u64,
        records: &[RecordId],
        purpose: TicketPurpose,
        ttl_ms: u64,
    ) -> io::Result<CommandResponse> {
        let catalog = Families::of(&self.db)?;
        self.collect_tickets(batch, now)?;
        if actor.role != kakera_proto::Role::Auditor {
            return Ok(CommandResponse::Forbidden {
                reason: format!("role '{}' may not open audits", actor.role),
            });
        }
        if matches!(purpose, TicketPurpose::Audit { .. }) {
            for id in records {
                if self.record(id)?.is_none() {
                    return Ok(CommandResponse::NotFound {
                        reason: self.absence(id)?,
                    });
                }
            }
        }
        let mut sorted = records.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let ticket = Ticket {
            id: log_index,
            purpose,
            holder: actor.fingerprint,
            records: sorted,
            expires_at_ms: now.saturating_add(ttl_ms),
        };
        put_ticket(batch, catalog, &ticket)?;
        Ok(CommandResponse::Applied)
    }

    /// Why a record is not in the catalog, in words: erased (when, by whom, why) or
    /// never committed.
    fn absence(&self, id: &RecordId) -> io::Result<String> {
        Ok(match self.tombstone(id)? {
            Some(t) => format!(
                "record {id} was erased on {} by {} ({}); nothing of it can be read",
                format_ms(t.at_ms),
                t.by,
                t.reason
            ),
            None => format!("record {id} is not in the catalog"),
        })
    }

    /// Deletes up to [`TICKET_GC_SCAN`] expired tickets, soonest-expiring first,
    /// through the expiry index: no ticket is decoded, and the scan stops at the
    /// first ticket still valid (the same on every node since `now` is the entry's
    /// time).
    fn collect_tickets(&self, batch: &mut rocksdb::WriteBatch, now: u64) -> io::Result<()> {
        let catalog = Families::of(&self.db)?;
        for item in catalog
            .iter_from(keys::TICKET_EXPIRY, rocksdb::ReadOptions::default())
            .take(TICKET_GC_SCAN)
        {
            let (k, _) = item.map_err(io::Error::other)?;
            let Some((expires_at_ms, id)) = keys::parse_ticket_expiry(&k) else {
                break;
            };
            if expires_at_ms > now {
                break;
            }
            catalog.delete(batch, &k);
            catalog.delete(batch, keys::ticket(id));
        }
        Ok(())
    }
}

/// Writes `ticket` and its expiry index key.
fn put_ticket(
    batch: &mut rocksdb::WriteBatch,
    catalog: Families<'_>,
    ticket: &Ticket,
) -> io::Result<()> {
    catalog.put(batch, keys::ticket(ticket.id), encode(ticket)?);
    catalog.put(
        batch,
        keys::ticket_expiry(ticket.expires_at_ms, ticket.id),
        [],
    );
    Ok(())
}

/// The expiry index key of the stored ticket `value`.
fn expiry_key_of(value: &[u8]) -> io::Result<Vec<u8>> {
    let t: Ticket = decode(value)?;
    Ok(keys::ticket_expiry(t.expires_at_ms, t.id))
}

/// Adds the missing expiry index keys of stored tickets: tickets written before the
/// index existed (an older node's database) are then collected like new ones.
/// Returns how many were added. Not synced: the index is derived from the tickets,
/// so a crash before the next flush only means doing it again at the next open.
fn index_tickets(db: &DB) -> io::Result<u64> {
    let catalog = Families::of(db)?;
    let mut batch = rocksdb::WriteBatch::default();
    let mut added = 0u64;
    for item in catalog.iter_from(keys::TICKET, rocksdb::ReadOptions::default()) {
        let (k, v) = item.map_err(io::Error::other)?;
        if !k.starts_with(keys::TICKET) {
            break;
        }
        let index = expiry_key_of(&v)?;
        if catalog.get(&index)?.is_none() {
            catalog.put(&mut batch, index, []);
            added += 1;
            // A page at a time, whatever the number of tickets.
            if batch.len() >= INDEX_BATCH_KEYS {
                db.write(std::mem::take(&mut batch))
                    .map_err(io::Error::other)?;
            }
        }
    }
    if !batch.is_empty() {
        db.write(batch).map_err(io::Error::other)?;
    }
    Ok(added)
}

/// A Unix-ms time as `YYYY-MM-DD HH:MM:SS UTC` for refusal messages.
fn format_ms(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{ms} (Unix ms)"),
    }
}

/// What the node must do after applying `payload` (a normal entry's command, at log
/// index `log_index`), which answered `response`: decided here, performed by the
/// [`EffectRunner`].
fn effects_of(
    payload: Option<&Command>,
    log_index: u64,
    response: &CommandResponse,
) -> Vec<Effect> {
    let Some(Command::Client { action, at_ms, .. }) = payload else {
        return Vec::new();
    };
    match (action, response) {
        (_, CommandResponse::Erased { erased, .. }) if !erased.is_empty() => {
            vec![Effect::PurgeErased]
        }
        (ClientAction::Revoke { .. }, CommandResponse::Applied) => {
            vec![Effect::RevocationsChanged]
        }
        // The state right after this entry, on every node: a checkpoint taken before
        // the next entry applies holds exactly the catalog and shares at it.
        (ClientAction::Backup { backup, dir }, CommandResponse::Applied) => {
            vec![Effect::Checkpoint {
                backup: *backup,
                dir: dir.clone(),
                log_index,
                at_ms: *at_ms,
            }]
        }
        _ => Vec::new(),
    }
}

/// A read ticket for `job` held by `actor`, opened by entry `log_index`, over
/// `records` (sorted, each once).
fn read_ticket(
    log_index: u64,
    actor: &Actor,
    job: &str,
    mut records: Vec<RecordId>,
    expires_at_ms: u64,
) -> Ticket {
    records.sort_unstable();
    records.dedup();
    Ticket {
        id: log_index,
        purpose: TicketPurpose::Read {
            job: job.to_string(),
        },
        holder: actor.fingerprint,
        records,
        expires_at_ms,
    }
}

/// The audit outcome of a command response.
fn outcome_of(r: &CommandResponse) -> Outcome {
    match r {
        CommandResponse::Applied
        | CommandResponse::Erased { .. }
        | CommandResponse::ReadOpened { .. } => Outcome::Applied,
        CommandResponse::Refused { reason }
        | CommandResponse::Forbidden { reason }
        | CommandResponse::NotFound { reason } => Outcome::Refused {
            reason: reason.clone(),
        },
    }
}

/// Whether two grants say the same (a retried create), whoever created them when.
fn same_grant(a: &kakera_proto::catalog::Grant, b: &kakera_proto::catalog::Grant) -> bool {
    a.job == b.job
        && a.reader == b.reader
        && a.scope == b.scope
        && a.expires_at_ms == b.expires_at_ms
        && a.approval == b.approval
}

/// The last applied log id and membership recorded in a node database.
fn read_meta_of(
    db: &DB,
) -> io::Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>)> {
    let meta_cf = cf(db, CF_SM_META)?;
    let applied = db
        .get_cf(meta_cf, KEY_LAST_APPLIED)
        .map_err(io::Error::other)?
        .map(|b| decode(&b))
        .transpose()?;
    let membership = db
        .get_cf(meta_cf, KEY_LAST_MEMBERSHIP)
        .map_err(io::Error::other)?
        .map(|b| decode(&b))
        .transpose()?
        .unwrap_or_default();
    Ok((applied, membership))
}

/// The catalog a restored cluster starts from, written as a snapshot file at `out`
/// under `meta`: the backup's catalog (the snapshot file `source`, read a chunk at
/// a time), with every node's incarnation replaced by the restored one (the old
/// members are gone) and one audit entry `Restored` appended to the chain (seq,
/// link and time as every entry's), at the backup entry's log index. Deterministic:
/// every node of a restore computes the same catalog from the same backup.
pub fn write_restored_catalog(
    source: &std::path::Path,
    out: &std::path::Path,
    meta: &SnapshotMetaOf<TypeConfig>,
    incarnations: &std::collections::BTreeMap<u64, u64>,
    backup: kakera_proto::backup::BackupId,
    log_index: u64,
    chunk_bytes: usize,
) -> io::Result<SnapshotHandle> {
    use super::snapshot::{SnapshotReader, SnapshotWriter};
    // Pass 1: the audit head.
    let mut head = AuditHead::default();
    let mut reader = SnapshotReader::open(source)?;
    while let Some(chunk) = reader.next_chunk()? {
        if let Some((_, v)) = chunk.iter().find(|(k, _)| k.as_slice() == keys::AUDIT_HEAD) {
            head = decode(v)?;
        }
    }
    let entry = AuditEntry {
        seq: head.seq + 1,
        prev: head.hash,
        log_index,
        at_ms: head.at_ms,
        actor: Actor::cluster(),
        request_id: None,
        action: AuditAction::Restored {
            backup: backup.to_string(),
        },
        job: None,
        records: Vec::new(),
        outcome: Outcome::Applied,
    };
    let new_head = AuditHead {
        seq: entry.seq,
        hash: entry.hash(),
        at_ms: entry.at_ms,
    };
    // The keys that change, in key order (a few per node).
    let mut overlay: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = incarnations
        .iter()
        .map(|(node, raft_id)| {
            let mut k = INCARNATION_PREFIX.to_vec();
            k.extend_from_slice(&node.to_be_bytes());
            encode(raft_id).map(|v| (k, v))
        })
        .collect::<io::Result<_>>()?;
    overlay.insert(keys::audit(entry.seq), encode(&entry)?);
    overlay.insert(keys::AUDIT_HEAD.to_vec(), encode(&new_head)?);
    // Pass 2: merge the overlay into the catalog's stream, in key order.
    let mut w = SnapshotWriter::create(out, meta, chunk_bytes)?;
    let mut reader = SnapshotReader::open(source)?;
    let mut pending = overlay.into_iter().peekable();
    while let Some(chunk) = reader.next_chunk()? {
        for (k, v) in chunk {
            while let Some((ok, ov)) = pending.next_if(|(ok, _)| *ok <= k) {
                w.push(&ok, &ov)?;
            }
            // An overlay key just written replaced the catalog's pair.
            let replaced = w.last_key() == Some(k.as_slice());
            if replaced || k.starts_with(INCARNATION_PREFIX) {
                continue;
            }
            w.push(&k, &v)?;
        }
    }
    for (k, v) in pending {
        w.push(&k, &v)?;
    }
    w.finish()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    /// Takes a snapshot without copying the catalog: the applied state is durable in
    /// RocksDB once the write-ahead log is synced, which [`super::snapshot::open_live`]
    /// does; openraft keeps only the meta (to purge the log behind it) and drops the
    /// stream, which stops its encoder.
    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, SnapshotData>, io::Error> {
        let started = std::time::Instant::now();
        let (meta, stream) =
            super::snapshot::open_live(self.db.clone(), self.snapshot_chunk_bytes).await?;
        tracing::info!(
            index = meta.last_log_id.as_ref().map_or(0, |l| l.index()),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot taken"
        );
        Ok(SnapshotOf::<TypeConfig, SnapshotData> {
            meta,
            snapshot: SnapshotData::Live(stream),
        })
    }
}

impl StateMachine {
    /// Step 1 of an install (see [`super::snapshot`]): decodes a snapshot stream
    /// from `input` into an SST file in this node's snapshot directory, digest
    /// checked. Blocking; the catalog is unchanged.
    pub fn receive_snapshot<R: std::io::Read>(
        &self,
        input: R,
        source: String,
    ) -> io::Result<super::snapshot::ReceivedSnapshot> {
        super::snapshot::receive(&self.db, input, &self.snapshot_dir, source)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        self.read_meta()
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        // One write batch per entry: a later entry of the same call reads what an
        // earlier one wrote (a commit, then a read of the same records). The batch
        // carries the entry's last-applied id, so state and progress move together.
        let meta_cf = cf(&self.db, CF_SM_META)?;
        let mut head = self.audit_head()?;
        while let Some((entry, responder)) = entries.try_next().await? {
            let mut batch = rocksdb::WriteBatch::default();
            let log_id = entry.log_id();
            let response = match &entry.payload {
                EntryPayload::Blank => CommandResponse::Applied,
                EntryPayload::Normal(cmd) => {
                    self.apply_command(&mut batch, &mut head, log_id.index(), cmd)?
                }
                EntryPayload::Membership(m) => {
                    let stored = StoredMembershipOf::<TypeConfig>::new(Some(log_id), m.clone());
                    batch.put_cf(meta_cf, KEY_LAST_MEMBERSHIP, encode(&stored)?);
                    let audit = AuditEntry {
                        seq: 0,
                        prev: [0; 32],
                        log_index: log_id.index(),
                        at_ms: 0,
                        actor: Actor::cluster(),
                        request_id: None::<RequestId>,
                        action: AuditAction::Membership {
                            voters: m.voter_ids().map(ids::describe).collect(),
                            learners: m.learner_ids().map(ids::describe).collect(),
                        },
                        job: None,
                        records: Vec::new(),
                        outcome: Outcome::Applied,
                    };
                    self.append_audit(&mut batch, &mut head, audit)?;
                    CommandResponse::Applied
                }
            };
            batch.put_cf(meta_cf, KEY_LAST_APPLIED, encode(&log_id)?);
            let normal = matches!(entry.payload, EntryPayload::Normal(_));
            let command = match &entry.payload {
                EntryPayload::Normal(cmd) => Some(cmd),
                _ => None,
            };
            let effects = effects_of(command, log_id.index(), &response);
            if normal {
                kakera_net::crash::point("apply.before_write");
            }
            self.db.write(batch).map_err(io::Error::other)?;
            if normal {
                kakera_net::crash::point("apply.after_write");
            }
            for effect in effects {
                if effect == Effect::PurgeErased {
                    kakera_net::crash::point("erase.applied");
                }
                self.effects.run(effect);
            }
            if let Some(r) = responder {
                r.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        use super::snapshot::{ReceivedSnapshot, SnapshotData as Data};
        let started = std::time::Instant::now();
        let sm = self.clone();
        let received: ReceivedSnapshot = match snapshot {
            Data::Received(r) => r,
            Data::Live(stream) => tokio::task::spawn_blocking(move || {
                sm.receive_snapshot(stream.into_reader(), "from this node".into())
            })
            .await
            .map_err(io::Error::other)??,
            Data::File(handle) => tokio::task::spawn_blocking(move || {
                let input = std::io::BufReader::new(std::fs::File::open(&handle.path)?);
                sm.receive_snapshot(input, handle.path.display().to_string())
            })
            .await
            .map_err(io::Error::other)??,
        };
        if received.meta != *meta {
            ReceivedSnapshot::remove_files(&received.ssts);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the snapshot's meta differs from the meta it was sent with",
            ));
        }
        let db = self.db.clone();
        let dir = self.snapshot_dir.clone();
        let ssts = received.ssts.clone();
        let installed =
            tokio::task::spawn_blocking(move || super::snapshot::install(&db, &received, &dir))
                .await
                .map_err(io::Error::other)?;
        ReceivedSnapshot::remove_files(&ssts);
        let installed = installed?;
        // No ticket re-indexing: a v2 snapshot is a copy of a catalog that already
        // holds the expiry index (older nodes cannot send this format).
        tracing::info!(
            index = meta.last_log_id.as_ref().map_or(0, |l| l.index()),
            pairs = installed.pairs,
            size_bytes = installed.size_bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot installed"
        );
        // Records erased in the entries this snapshot replaces were never applied
        // here: the purger sweeps committed shares against the new tombstones.
        self.effects.run(Effect::SweepAfterInstall);
        Ok(())
    }

    /// The live catalog as of its last applied entry, streamed when it is read
    /// ([`super::snapshot::open_live`]); none before anything was applied.
    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Self::SnapshotData>>, io::Error> {
        if self.read_meta()?.0.is_none() {
            return Ok(None);
        }
        let (meta, stream) =
            super::snapshot::open_live(self.db.clone(), self.snapshot_chunk_bytes).await?;
        Ok(Some(SnapshotOf::<TypeConfig, SnapshotData> {
            meta,
            snapshot: SnapshotData::Live(stream),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kakera_proto::Role;
    use kakera_proto::identity::Fingerprint;

    fn machine() -> (tempfile::TempDir, StateMachine) {
        let dir = tempfile::TempDir::new().unwrap_or_else(|e| panic!("{e}"));
        let db = crate::store::open(&dir.path().join("db")).unwrap_or_else(|e| panic!("{e}"));
        let sm = StateMachine::new(ShareStore::new(db), dir.path().join("snapshots"), 1)
            .unwrap_or_else(|e| panic!("{e}"));
        (dir, sm)
    }

    fn auditor() -> Actor {
        Actor {
            name: "auditor-1".into(),
            role: Role::Auditor,
            zone: None,
            fingerprint: Fingerprint([9; 32]),
        }
    }

    /// Grants are listed a page at a time in job order, each exactly once, a
    /// reader's pages holding only its own; the node never answers every grant in
    /// one message.
    #[test]
    fn grants_are_listed_a_page_at_a_time() -> io::Result<()> {
        let (_dir, sm) = machine();
        let operator = Actor {
            name: "op".into(),
            role: Role::Operator,
            zone: None,
            fingerprint: Fingerprint([1; 32]),
        };
        let mut batch = rocksdb::WriteBatch::default();
        for i in 0..7 {
            let g = Grant {
                job: format!("job-{i}"),
                reader: if i % 2 == 0 { "even" } else { "odd" }.into(),
                scope: kakera_proto::catalog::GrantScope::default(),
                expires_at_ms: 2_000_000_000_000,
                approval: "IRB-1".into(),
                created_at_ms: 0,
                created_by: String::new(),
                revoked: None,
            };
            assert_eq!(
                sm.put_grant(&mut batch, &operator, 1_000, &g)?,
                CommandResponse::Applied
            );
        }
        sm.db.write(batch).map_err(io::Error::other)?;
        let walk = |reader: Option<&str>| -> io::Result<(Vec<String>, usize)> {
            let (mut jobs, mut pages, mut after) = (Vec::new(), 0, None::<String>);
            loop {
                let (page, next) = sm.grants_page(after.as_deref(), 2, reader)?;
                assert!(page.len() <= 2);
                pages += 1;
                jobs.extend(page.into_iter().map(|g| g.job));
                match next {
                    Some(n) => after = Some(n),
                    None => return Ok((jobs, pages)),
                }
            }
        };
        let (all, pages) = walk(None)?;
        assert_eq!(all, (0..7).map(|i| format!("job-{i}")).collect::<Vec<_>>());
        assert_eq!(pages, 4);
        let (odd, _) = walk(Some("odd"))?;
        assert_eq!(odd, ["job-1", "job-3", "job-5"]);
        Ok(())
    }

    /// Issue 22: from the entry that revokes a certificate (given with its CRL) on,
    /// every command of that certificate is refused by the state machine, whatever
    /// was in flight; other holders are not affected; a CRL that does not list the
    /// certificate given with it is refused and revokes nothing.
    #[test]
    fn a_revoked_certificates_commands_are_refused_from_its_entry_on() -> io::Result<()> {
        use rcgen::{
            CertificateParams, CertificateRevocationListParams, IsCa, Issuer, KeyIdMethod, KeyPair,
            KeyUsagePurpose, RevokedCertParams, SerialNumber,
        };
        let (_dir, sm) = machine();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = Issuer::new(ca, KeyPair::generate().unwrap_or_else(|e| panic!("{e}")));
        let leaf = |serial: u8| {
            let mut p =
                CertificateParams::new(vec!["gw".to_string()]).unwrap_or_else(|e| panic!("{e}"));
            p.serial_number = Some(SerialNumber::from_slice(&[serial]));
            let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
            p.signed_by(&key, &ca)
                .unwrap_or_else(|e| panic!("{e}"))
                .der()
                .to_vec()
        };
        let (leaked, kept) = (leaf(7), leaf(8));
        let crl = |number: u64, serials: &[u8]| {
            let now = time::OffsetDateTime::now_utc();
            CertificateRevocationListParams {
                this_update: now,
                next_update: now + time::Duration::days(1),
                crl_number: SerialNumber::from(number),
                issuing_distribution_point: None,
                revoked_certs: serials
                    .iter()
                    .map(|s| RevokedCertParams {
                        serial_number: SerialNumber::from_slice(&[*s]),
                        revocation_time: now,
                        reason_code: None,
                        invalidity_date: None,
                    })
                    .collect(),
                key_identifier_method: KeyIdMethod::Sha256,
            }
            .signed_by(&ca)
            .unwrap_or_else(|e| panic!("{e}"))
            .der()
            .to_vec()
        };
        let actor = |der: &[u8], role: Role| Actor {
            name: "gw".into(),
            role,
            zone: None,
            fingerprint: Fingerprint::of(der),
        };
        let mut head = sm.audit_head()?;
        let mut index = 1;
        let mut apply = |cmd: Command| -> io::Result<CommandResponse> {
            let mut batch = rocksdb::WriteBatch::default();
            index += 1;
            let r = sm.apply_command(&mut batch, &mut head, index, &cmd)?;
            sm.db.write(batch).map_err(io::Error::other)?;
            Ok(r)
        };
        let client = |actor: Actor, action: ClientAction| Command::Client {
            actor,
            at_ms: 1_000,
            request_id: RequestId([1; 16]),
            action,
        };
        let op = Actor {
            name: "op".into(),
            role: Role::Operator,
            zone: None,
            fingerprint: Fingerprint([1; 32]),
        };
        let commit = || ClientAction::CommitRecords {
            records: Vec::new(),
        };
        let revoked = |r: &CommandResponse| matches!(r, CommandResponse::Forbidden { reason } if reason.contains("revoked"));
        assert!(!revoked(&apply(client(
            actor(&leaked, Role::Ingest),
            commit()
        ))?));
        // A CRL that does not list the certificate given with it: nothing changes.
        let r = apply(client(
            op.clone(),
            ClientAction::Revoke {
                crl: crl(1, &[9]),
                certificates: vec![leaked.clone()],
            },
        ))?;
        assert!(matches!(r, CommandResponse::Refused { .. }), "{r:?}");
        assert!(!revoked(&apply(client(
            actor(&leaked, Role::Ingest),
            commit()
        ))?));
        // Only an operator records one.
        let by_gateway = ClientAction::Revoke {
            crl: crl(1, &[7]),
            certificates: vec![leaked.clone()],
        };
        let r = apply(client(actor(&kept, Role::Ingest), by_gateway))?;
        assert!(matches!(r, CommandResponse::Forbidden { .. }), "{r:?}");
        let r = apply(client(
            op.clone(),
            ClientAction::Revoke {
                crl: crl(1, &[7]),
                certificates: vec![leaked.clone()],
            },
        ))?;
        assert_eq!(r, CommandResponse::Applied);
        assert_eq!(sm.revocation_lists()?.len(), 1);
        assert!(revoked(&apply(client(
            actor(&leaked, Role::Ingest),
            commit()
        ))?));
        // The refusal is audited like any command.
        let last = sm
            .audit_entry(sm.audit_head()?.seq)?
            .unwrap_or_else(|| panic!("no entry"));
        assert!(!matches!(last.outcome, Outcome::Applied));
        assert!(!revoked(&apply(client(
            actor(&kept, Role::Ingest),
            commit()
        ))?));
        Ok(())
    }

    /// Opens an erasure-check ticket at log index `id`, time `now`, lasting `ttl_ms`.
    fn open(sm: &StateMachine, id: u64, now: u64, ttl_ms: u64) -> io::Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        let r = sm.open_ticket(
            &mut batch,
            id,
            &auditor(),
            now,
            &[],
            TicketPurpose::ErasureCheck,
            ttl_ms,
        )?;
        assert_eq!(r, CommandResponse::Applied);
        sm.db.write(batch).map_err(io::Error::other)
    }

    fn index_len(sm: &StateMachine) -> io::Result<usize> {
        let catalog = Families::of(&sm.db)?;
        let mut n = 0;
        for item in catalog.iter_from(keys::TICKET_EXPIRY, rocksdb::ReadOptions::default()) {
            let (k, _) = item.map_err(io::Error::other)?;
            if !k.starts_with(keys::TICKET_EXPIRY) {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// P5's tickets end: an expired ticket is deleted with its index key when a later
    /// ticket opens, a valid one stays usable, whatever their order by id (a
    /// long audit ticket opened first does not hold back a short one behind it).
    #[test]
    fn expired_tickets_are_collected_in_expiry_order_and_valid_ones_stay() -> io::Result<()> {
        let (_dir, sm) = machine();
        open(&sm, 10, 1_000, 1_000_000)?; // long, opened first
        open(&sm, 11, 1_000, 500)?; // expires at 1_500
        open(&sm, 12, 1_000, 2_000)?; // expires at 3_000
        assert_eq!(index_len(&sm)?, 3);
        // At 2_000 only ticket 11 has expired; opening ticket 13 collects it.
        open(&sm, 13, 2_000, 10)?;
        assert!(sm.ticket(11)?.is_none());
        for id in [10, 12, 13] {
            assert!(sm.ticket(id)?.is_some(), "ticket {id}");
        }
        assert_eq!(index_len(&sm)?, 3);
        // At 5_000 tickets 12 and 13 have expired; 10 has not.
        open(&sm, 14, 5_000, 10)?;
        assert!(sm.ticket(12)?.is_none() && sm.ticket(13)?.is_none());
        assert!(sm.ticket(10)?.is_some() && sm.ticket(14)?.is_some());
        assert_eq!(index_len(&sm)?, 2);
        Ok(())
    }

    /// One entry collects at most `TICKET_GC_SCAN` tickets (bounded work per
    /// entry); the rest go with later entries.
    #[test]
    fn one_entry_collects_a_bounded_number_of_tickets() -> io::Result<()> {
        let (_dir, sm) = machine();
        let many = TICKET_GC_SCAN as u64 + 5;
        for id in 1..=many {
            open(&sm, id, 1_000, 10)?;
        }
        open(&sm, many + 1, 2_000, 1_000_000)?;
        assert_eq!(index_len(&sm)?, 5 + 1);
        open(&sm, many + 2, 2_000, 1_000_000)?;
        assert_eq!(index_len(&sm)?, 2);
        Ok(())
    }

    /// Tickets stored before the expiry index (a database from an older node) are
    /// indexed when the node opens it, and then collected like new ones.
    #[test]
    fn tickets_without_an_index_key_are_indexed_on_open() -> io::Result<()> {
        let (dir, sm) = machine();
        open(&sm, 7, 1_000, 10)?;
        let key = keys::ticket_expiry(1_010, 7);
        sm.db
            .delete_cf(Families::of(&sm.db)?.holding(&key), &key)
            .map_err(io::Error::other)?;
        assert_eq!(index_len(&sm)?, 0);
        let reopened = StateMachine::new(
            ShareStore::new(sm.db.clone()),
            dir.path().join("snapshots"),
            1,
        )?;
        assert_eq!(index_len(&reopened)?, 1);
        open(&reopened, 8, 2_000, 1_000_000)?;
        assert!(reopened.ticket(7)?.is_none());
        assert!(reopened.ticket(8)?.is_some());
        Ok(())
    }

    #[test]
    fn expiry_keys_round_trip_and_sort_by_time() {
        let a = keys::ticket_expiry(5, u64::MAX);
        let b = keys::ticket_expiry(6, 0);
        assert!(a < b);
        assert_eq!(keys::parse_ticket_expiry(&a), Some((5, u64::MAX)));
        assert_eq!(keys::parse_ticket_expiry(b"texp/short"), None);
        assert_eq!(keys::parse_ticket_expiry(&keys::ticket(5)), None);
    }

    /// Issue 21 (a wiped node catches up from a snapshot of 10^7 records): taking a
    /// snapshot and handing one out copy nothing to disk, however large the catalog;
    /// the stream handed out installs on another node as the same catalog at the
    /// same applied id.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_is_taken_and_sent_without_a_copy_on_disk() -> io::Result<()> {
        use openraft::alias::LeaderIdOf;
        use openraft::vote::RaftLeaderIdExt;
        let (dir, mut sm) = machine();
        for i in 0..3_000u32 {
            open(&sm, u64::from(i) + 1, 1_000, 3_600_000)?;
        }
        let log_id = LogIdOf::<TypeConfig>::new(
            <LeaderIdOf<TypeConfig> as RaftLeaderIdExt>::new_committed(2, 1),
            3_000,
        );
        sm.db
            .put_cf(cf(&sm.db, CF_SM_META)?, KEY_LAST_APPLIED, encode(&log_id)?)
            .map_err(io::Error::other)?;
        let taken = sm.get_snapshot_builder().await.build_snapshot().await?;
        assert_eq!(taken.meta.last_log_id, Some(log_id));
        let current = sm
            .get_current_snapshot()
            .await?
            .ok_or_else(|| io::Error::other("no current snapshot"))?;
        assert_eq!(current.meta, taken.meta);
        let files = std::fs::read_dir(dir.path().join("snapshots"))?.count();
        assert_eq!(files, 0, "taking or handing out a snapshot wrote files");

        let (_other_dir, mut other) = machine();
        other
            .install_snapshot(&current.meta, current.snapshot)
            .await?;
        assert_eq!(other.catalog_digest()?, sm.catalog_digest()?);
        assert_eq!(other.read_meta()?.0, Some(log_id));
        Ok(())
    }
}
