//! Backups and restores (operations). A backup is one Raft entry; a restore builds a
//! fresh node data directory from one node's part, offline.
//!
//! Backup, step by step:
//!
//! 1. An operator asks the leader (`Request::Backup { dir }`); the leader draws a
//!    backup id and proposes `ClientAction::Backup`, audited like every change.
//! 2. Every node applying the entry — at the same log index, so on the same catalog
//!    — takes a RocksDB checkpoint of its database into
//!    `<data_dir>/backup-checkpoints/<id>/db` inside the apply, right after the
//!    entry's write batch ([`checkpoint_at_apply`]): hard links, plus a flush of the
//!    memtables, so the checkpoint holds exactly the catalog and this node's committed
//!    shares as of that entry. `job.json` beside it (synced) says where the part goes.
//!    Both are built in `<id>.building` and renamed into place (the directory synced),
//!    so the exporter, which runs meanwhile, never sees a checkpoint half taken.
//!    An entry older than [`BACKUP_WINDOW_MS`] (a node replaying an old log) is not
//!    acted on.
//! 3. The node's [`Exporter`] copies the checkpoint to
//!    `<[backup] root>/<dir>/<rack>/<node>/checkpoint/`, writes the catalog as a Raft
//!    snapshot file (`catalog.snap`), then `part.json` ([`PartManifest`]) through a
//!    temporary file and a rename, each file fsynced, and deletes the local
//!    checkpoint. `part.json` is written last: a part without it is incomplete.
//! 4. The operator's client asks every node for its part (`Request::BackupStatus`)
//!    until each is done or failed.
//!
//! What a location holds: a rack's directory holds the parts of the rack's nodes, so
//! at most `max_shares_per_rack` (< k) shares of any record — each rack's backups
//! belong on that rack's own store. The catalog (metadata, digests, audit log, no
//! share bytes) is in every part.
//!
//! Restore ([`restore`]), per node, before the restored cluster first starts: the
//! node's part is checked against the config (cluster, node, format) and its catalog
//! digest; the data directory must hold no database. The new database gets a member
//! id derived from the backup id and node (so every node computes every other's
//! without talking), the backup's catalog with those incarnations and a `Restored`
//! audit entry ([`crate::raft::state_machine::restored_catalog`]), installed as a
//! Raft snapshot at the backup's log index with the config's initial voters as
//! members and the log purged up to it, and the part's shares, each only if the
//! catalog names this node as its holder with that digest.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kakera_config::{ClusterConfig, NodeConfig};
use kakera_proto::backup::{BackupId, PART_FORMAT, PartManifest, PartState};
use kakera_proto::catalog::RecordEntry;
use kakera_proto::{RecordId, ids};
use openraft::alias::{LeaderIdOf, LogIdOf, SnapshotMetaOf, StoredMembershipOf};
use openraft::impls::BasicNode;
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::vote::RaftLeaderIdExt;
use rocksdb::{DB, IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::error::NodeError;
use crate::raft::TypeConfig;
use crate::raft::catalog::keys;
use crate::raft::log_store::{LogStore, decode};
use crate::raft::state_machine::{StateMachine, write_restored_catalog};
use crate::store::{CF_SHARES, CF_STAGED, cf};

/// A backup entry older than this (by the leader's clock against this node's) is not
/// acted on: a node replaying an old log must not write parts of old backups.
pub const BACKUP_WINDOW_MS: u64 = 60 * 60 * 1000;
/// Where a node keeps checkpoints until they are exported, under its data directory.
pub const CHECKPOINTS_DIR: &str = "backup-checkpoints";
/// How often the exporter looks for checkpoints without being woken.
const EXPORT_PASS_MS: u64 = 5_000;
/// Part states remembered for status answers.
const MAX_REMEMBERED_PARTS: usize = 64;
/// Bytes of shares per write batch during a restore.
const RESTORE_BATCH_BYTES: usize = 32 * 1024 * 1024;

/// What a checkpoint is for (`job.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    backup: BackupId,
    dir: String,
    log_index: u64,
    at_ms: u64,
}

/// Writes `bytes` to `path` through a temporary file, fsyncing the file and then the
/// directory, so `path` is either absent or complete.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Called by the state machine right after the backup entry's batch is written:
/// checkpoints the database for the exporter. Failures are logged and recorded for
/// the status answer; they never fail the apply.
pub fn checkpoint_at_apply(
    db: &DB,
    data_dir: &Path,
    backup: BackupId,
    dir: &str,
    log_index: u64,
    at_ms: u64,
) {
    let age_ms = crate::clock::unix_ms().saturating_sub(at_ms);
    if age_ms > BACKUP_WINDOW_MS {
        tracing::info!(%backup, log_index, age_ms, "old backup entry replayed: no part written");
        return;
    }
    let checkpoints = data_dir.join(CHECKPOINTS_DIR);
    let base = checkpoints.join(backup.to_string());
    if base.exists() {
        return;
    }
    let job = Job {
        backup,
        dir: dir.to_string(),
        log_index,
        at_ms,
    };
    // Built under a name the exporter skips (not a backup id) and renamed into place
    // whole: the exporter's pass runs meanwhile and must never see, or clear, a
    // checkpoint that is still being taken.
    let building = checkpoints.join(format!("{backup}.building"));
    let taken = (|| -> io::Result<()> {
        if building.exists() {
            // Left by a crash inside an earlier apply of this entry.
            std::fs::remove_dir_all(&building)?;
        }
        std::fs::create_dir_all(&building)?;
        rocksdb::checkpoint::Checkpoint::new(db)
            .and_then(|c| c.create_checkpoint(building.join("db")))
            .map_err(io::Error::other)?;
        // Share files (large shares live beside the database): hard links, taken
        // after the checkpoint, so every file a checkpointed committed value names
        // is there (committed values change only in applies, and this is one).
        let files = crate::share_files::FILES_DIR;
        crate::share_files::link_all(&db.path().join(files), &building.join("db").join(files))?;
        let json = serde_json::to_vec_pretty(&job).map_err(io::Error::other)?;
        write_synced(&building.join("job.json"), &json)?;
        std::fs::rename(&building, &base)?;
        std::fs::File::open(&checkpoints)?.sync_all()
    })();
    match taken {
        Ok(()) => tracing::info!(%backup, log_index, "backup checkpoint taken"),
        Err(e) => {
            tracing::warn!(%backup, log_index, error = %e, "backup checkpoint failed");
            let _ = std::fs::remove_dir_all(&building);
            let _ = std::fs::create_dir_all(&base);
            let _ = std::fs::write(base.join("failed.txt"), format!("checkpoint failed: {e}"));
        }
    }
}

/// Part states this node knows, for status answers.
#[derive(Default)]
pub struct BackupBoard {
    states: Mutex<HashMap<BackupId, PartState>>,
}

impl BackupBoard {
    fn set(&self, backup: BackupId, state: PartState) {
        // A poisoned lock only means a panic elsewhere mid-insert of plain values.
        let mut map = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_REMEMBERED_PARTS && !map.contains_key(&backup) {
            map.clear();
        }
        map.insert(backup, state);
    }

    /// Where this node's part of `backup` stands.
    pub fn state(&self, data_dir: &Path, backup: BackupId) -> PartState {
        let known = self
            .states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&backup)
            .cloned();
        match known {
            Some(s) => s,
            None => {
                let base = data_dir.join(CHECKPOINTS_DIR).join(backup.to_string());
                match std::fs::read_to_string(base.join("failed.txt")) {
                    Ok(reason) => PartState::Failed(reason),
                    Err(_) if base.exists() => PartState::Writing,
                    Err(_) => PartState::Unknown,
                }
            }
        }
    }
}

/// The task that turns checkpoints into parts.
pub struct Exporter {
    /// The cluster config (backup root, cluster id).
    pub config: ClusterConfig,
    /// This node.
    pub node: NodeConfig,
    /// Woken by the state machine after a backup entry.
    pub signal: Arc<Notify>,
    /// Where results are posted.
    pub board: Arc<BackupBoard>,
}

impl Exporter {
    /// Exports checkpoints until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let this = Arc::new(self);
        loop {
            let pass = this.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || pass.pass()).await {
                tracing::warn!(error = %e, "backup export pass failed");
            }
            tokio::select! {
                _ = this.signal.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(EXPORT_PASS_MS)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One pass over the checkpoints waiting here.
    fn pass(&self) {
        let dir = self.node.data_dir.join(CHECKPOINTS_DIR);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        // Bounded by the checkpoints present (one per recent backup).
        for entry in entries.flatten() {
            let base = entry.path();
            let Some(backup) = base
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| BackupId::parse(n).ok())
            else {
                continue;
            };
            if let Ok(reason) = std::fs::read_to_string(base.join("failed.txt")) {
                self.board.set(backup, PartState::Failed(reason));
                let _ = std::fs::remove_dir_all(base.join("db"));
                continue;
            }
            let job: Job = match std::fs::read(base.join("job.json"))
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(j) => j,
                Err(_) => {
                    // Checkpoints are renamed into place with their job file, so this
                    // is a damaged job file: unusable.
                    let _ = std::fs::remove_dir_all(&base);
                    continue;
                }
            };
            self.board.set(backup, PartState::Writing);
            match self.export(&base, &job) {
                Ok(manifest) => {
                    tracing::info!(%backup, shares = manifest.shares, bytes = manifest.share_bytes,
                        "backup part written");
                    self.board.set(backup, PartState::Done(manifest));
                    if let Err(e) = std::fs::remove_dir_all(&base) {
                        tracing::warn!(%backup, error = %e, "could not remove the local checkpoint");
                    }
                }
                Err(reason) => {
                    tracing::warn!(%backup, %reason, "backup part failed");
                    let _ = std::fs::write(base.join("failed.txt"), &reason);
                    let _ = std::fs::remove_dir_all(base.join("db"));
                    self.board.set(backup, PartState::Failed(reason));
                }
            }
        }
    }

    /// Writes this node's part of `job` from the checkpoint at `base`.
    fn export(&self, base: &Path, job: &Job) -> Result<PartManifest, String> {
        let root = self.config.backup_root.as_ref().ok_or_else(|| {
            "the cluster config has no [backup] root, so this node writes no backups".to_string()
        })?;
        kakera_proto::backup::validate_backup_dir(&job.dir).map_err(|e| e.to_string())?;
        let dest = part_dir(root, &job.dir, &self.node);
        let manifest_path = dest.join("part.json");
        if manifest_path.exists() {
            let found = read_manifest(&dest)?;
            if found.backup != job.backup {
                return Err(format!(
                    "{} already holds a part of backup {}: give each backup its own directory",
                    dest.display(),
                    found.backup
                ));
            }
            return Ok(found);
        }
        let fail = |what: &str, e: io::Error| format!("{what} {}: {e}", dest.display());
        if dest.exists() {
            // An earlier attempt stopped before its manifest: start the part again.
            std::fs::remove_dir_all(&dest).map_err(|e| fail("cannot clear", e))?;
        }
        let copy = dest.join("checkpoint");
        std::fs::create_dir_all(&copy).map_err(|e| fail("cannot create", e))?;
        let source = base.join("db");
        let files =
            std::fs::read_dir(&source).map_err(|e| fail("cannot read the checkpoint for", e))?;
        for file in files {
            let file = file.map_err(|e| fail("cannot read the checkpoint for", e))?;
            let to = copy.join(file.file_name());
            if file.path().is_dir() {
                // The share files, one directory level of them.
                copy_share_files(&file.path(), &to).map_err(|e| fail("cannot copy into", e))?;
                continue;
            }
            std::fs::copy(file.path(), &to).map_err(|e| fail("cannot copy into", e))?;
            std::fs::File::open(&to)
                .and_then(|f| f.sync_all())
                .map_err(|e| fail("cannot sync", e))?;
        }
        let db = crate::store::open_read_only(&source)
            .map_err(|e| format!("cannot open the checkpoint: {e}"))?;
        // The catalog as a snapshot file, a chunk at a time (synced and renamed
        // into place by the writer).
        let snapshot = crate::raft::snapshot::write_db(
            &db,
            &dest.join("catalog.snap"),
            self.config.raft.snapshot_chunk_bytes as usize,
        )
        .map_err(|e| fail("cannot write the catalog into", e))?;
        let (shares, share_bytes) =
            count_shares(&db).map_err(|e| format!("cannot count the shares: {e}"))?;
        drop(db);
        let manifest = PartManifest {
            format: PART_FORMAT,
            backup: job.backup,
            cluster_id: self.config.cluster_id.clone(),
            node_id: self.node.id,
            node_name: self.node.name.clone(),
            rack: self.node.rack.clone(),
            log_index: job.log_index,
            at_ms: job.at_ms,
            shares,
            share_bytes,
            catalog_digest: snapshot.digest_hex(),
            catalog_bytes: snapshot.size_bytes,
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
        write_synced(&manifest_path, &json).map_err(|e| fail("cannot write", e))?;
        Ok(manifest)
    }
}

/// Where `node` writes its part of the backup `dir`: `<root>/<dir>/<rack>/<node>`.
pub fn part_dir(root: &Path, dir: &str, node: &NodeConfig) -> PathBuf {
    root.join(dir).join(&node.rack).join(&node.name)
}

fn read_manifest(part: &Path) -> Result<PartManifest, String> {
    let path = part.join("part.json");
    let bytes = std::fs::read(&path)
        .map_err(|e| format!("cannot read {}: {e} (an incomplete part?)", path.display()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a part manifest: {e}", path.display()))
}

/// Committed shares and their bytes in a database (stored shares without a staged
/// marker).
fn count_shares(db: &DB) -> io::Result<(u64, u64)> {
    let mut n = 0u64;
    let mut bytes = 0u64;
    let staged = cf(db, CF_STAGED)?;
    for item in db.iterator_cf_opt(
        cf(db, CF_SHARES)?,
        crate::store::walk_options(),
        IteratorMode::Start,
    ) {
        let (k, v) = item.map_err(io::Error::other)?;
        if db
            .get_pinned_cf(staged, &k)
            .map_err(io::Error::other)?
            .is_some()
        {
            continue;
        }
        n += 1;
        bytes += crate::shares::decode_head(&v)?.share_len(&v);
    }
    Ok((n, bytes))
}

/// Copies one level of share-file directories from a checkpoint into a part, each
/// file synced.
fn copy_share_files(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for dir in std::fs::read_dir(from)? {
        let dir = dir?;
        let dest = to.join(dir.file_name());
        std::fs::create_dir_all(&dest)?;
        for file in std::fs::read_dir(dir.path())? {
            let file = file?;
            let target = dest.join(file.file_name());
            std::fs::copy(file.path(), &target)?;
            std::fs::File::open(&target)?.sync_all()?;
        }
        std::fs::File::open(&dest)?.sync_all()?;
    }
    std::fs::File::open(to)?.sync_all()
}

/// The Raft member id node `node_id` gets in the cluster restored from `backup`:
/// derived, so that every node computes every other's without talking.
pub fn restored_member_id(backup: BackupId, node_id: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"kakera restore member v1");
    h.update(&backup.0);
    h.update(&node_id.to_be_bytes());
    let d = h.finalize();
    let b = d.as_bytes();
    let incarnation = u32::from_be_bytes([b[0], b[1], b[2], b[3]]).max(1);
    ids::raft_id(node_id, incarnation)
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    /// The backup.
    pub backup: BackupId,
    /// Its log index: the restored catalog is the state right after it.
    pub log_index: u64,
    /// This node's new Raft member id, as `node#incarnation`.
    pub member: String,
    /// Shares restored into the node.
    pub shares: u64,
    /// Their bytes.
    pub share_bytes: u64,
    /// Shares in the part the catalog does not name on this node with that digest
    /// (left out).
    pub skipped: u64,
    /// Catalog records naming this node as a holder whose share was not in the part.
    pub missing: u64,
    /// BLAKE3 of the part's catalog snapshot, hex (equal on every node of one backup).
    pub catalog_digest: String,
}

/// Builds node `node_id`'s data directory from its part of the backup at
/// `backup_dir` (the directory `kakera backup` named: `<root>/<dir>`). Offline: the
/// node must not be running, and its data directory must hold no database.
pub async fn restore(
    config: &ClusterConfig,
    node_id: u64,
    backup_dir: &Path,
) -> Result<RestoreReport, NodeError> {
    let node = config
        .node(node_id)
        .ok_or_else(|| NodeError::Config(format!("node {node_id} is not in the cluster config")))?;
    let part = backup_dir.join(&node.rack).join(&node.name);
    let bad = |why: String| NodeError::Restore(why);
    let manifest = read_manifest(&part).map_err(bad)?;
    if manifest.format != PART_FORMAT {
        return Err(bad(format!(
            "{} has part format {}, this build reads {PART_FORMAT}",
            part.display(),
            manifest.format
        )));
    }
    if manifest.cluster_id != config.cluster_id || manifest.node_name != node.name {
        return Err(bad(format!(
            "{} is node '{}' of cluster '{}', not node '{}' of '{}'",
            part.display(),
            manifest.node_name,
            manifest.cluster_id,
            node.name,
            config.cluster_id
        )));
    }
    let db_dir = node.data_dir.join("db");
    if std::fs::read_dir(&db_dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(bad(format!(
            "{} already holds a database; a restore builds a fresh one: move it away first",
            db_dir.display()
        )));
    }
    let catalog_path = part.join("catalog.snap");
    let snapshot = crate::raft::snapshot::SnapshotHandle::open(&catalog_path)
        .map_err(|e| bad(format!("cannot read {}: {e}", catalog_path.display())))?;
    if snapshot.digest_hex() != manifest.catalog_digest {
        return Err(bad(format!(
            "{} does not match its manifest's digest: the part is damaged",
            catalog_path.display()
        )));
    }
    let old_meta = crate::raft::snapshot::SnapshotReader::open(&catalog_path)?
        .meta()
        .clone();
    let backed_up_at = old_meta.last_log_id.as_ref().map(|l| l.index());
    if backed_up_at != Some(manifest.log_index) {
        return Err(bad(format!(
            "the part's catalog is at log index {backed_up_at:?}, its manifest says {}",
            manifest.log_index
        )));
    }

    // The restored group: every config node under its derived member id; the
    // initial voters vote.
    let members: BTreeMap<u64, u64> = config
        .nodes
        .iter()
        .map(|n| (n.id, restored_member_id(manifest.backup, n.id)))
        .collect();
    let voters: std::collections::BTreeSet<u64> = config
        .initial_voters()
        .iter()
        .filter_map(|id| members.get(id).copied())
        .collect();
    let nodes: BTreeMap<u64, BasicNode> = config
        .nodes
        .iter()
        .filter_map(|n| Some((*members.get(&n.id)?, BasicNode::new(n.addr.to_string()))))
        .collect();
    let membership = openraft::Membership::new(vec![voters], nodes)
        .map_err(|e| bad(format!("cannot form the restored membership: {e}")))?;
    // Term 0 and leader 0, like the log id of a group's first entry: the restored
    // group elects its first leader in term 1, after this id.
    let log_id = LogIdOf::<TypeConfig>::new(
        <LeaderIdOf<TypeConfig> as RaftLeaderIdExt>::new_committed(0, 0),
        manifest.log_index,
    );
    let meta = SnapshotMetaOf::<TypeConfig> {
        last_log_id: Some(log_id),
        last_membership: StoredMembershipOf::<TypeConfig>::new(Some(log_id), membership),
    };
    let raft_id = *members
        .get(&node_id)
        .ok_or_else(|| bad("this node has no member id".into()))?;
    let db = crate::raft::open_db(&db_dir)?;
    crate::store::set_self_raft_id(&db, raft_id)?;
    let snapshot_dir = node.data_dir.join("snapshots");
    let shares = crate::shares::ShareStore::with_file_threshold(
        db.clone(),
        config.staging.file_share_min_bytes,
    );
    let mut sm = StateMachine::new(shares.clone(), snapshot_dir.clone(), node_id)?;
    // The restored catalog is written as a snapshot file (the content digest is
    // checked as it is read) and installed like any snapshot: a chunk at a time.
    let restored = write_restored_catalog(
        &catalog_path,
        &snapshot_dir.join("restore.part"),
        &meta,
        &members,
        manifest.backup,
        manifest.log_index,
        config.raft.snapshot_chunk_bytes as usize,
    )?;
    let restored_path = restored.path.clone();
    sm.install_snapshot(&meta, crate::raft::SnapshotData::File(restored))
        .await?;
    std::fs::remove_file(&restored_path)?;
    let mut log = LogStore::new(db.clone());
    log.purge(log_id).await?;

    let source = crate::store::open_read_only(&part.join("checkpoint"))?;
    let mut report = RestoreReport {
        backup: manifest.backup,
        log_index: manifest.log_index,
        member: ids::describe(raft_id),
        shares: 0,
        share_bytes: 0,
        skipped: 0,
        missing: 0,
        catalog_digest: manifest.catalog_digest,
    };
    let shares_cf = cf(&db, CF_SHARES)?;
    let mut batch = WriteBatch::default();
    let mut batch_bytes = 0usize;
    // One share at a time: its record is looked up in the restored catalog.
    for item in source.iterator_cf_opt(
        cf(&source, CF_SHARES)?,
        crate::store::walk_options(),
        IteratorMode::Start,
    ) {
        let (k, v) = item.map_err(io::Error::other)?;
        let head = crate::shares::decode_head(&v)?;
        let id = <[u8; 16]>::try_from(&*k).ok().map(RecordId);
        let entry = match id {
            Some(id) => sm.record(&id)?,
            None => None,
        };
        match (id, entry.as_ref().and_then(|e| e.holder_on(node_id))) {
            (Some(id), Some(h)) if h.digest == head.digest && head.file_len.is_some() => {
                // A share in a file: read from the part, stored (file synced first)
                // in this node's store as it would be on arrival.
                let root = part.join("checkpoint").join(crate::share_files::FILES_DIR);
                let stored = crate::shares::load_value(&root, &id, &v)?;
                shares.restore(&id, &stored.bytes, head.at_ms)?;
                report.shares += 1;
                report.share_bytes += stored.bytes.len() as u64;
            }
            (Some(_), Some(h)) if h.digest == head.digest => {
                batch.put_cf(shares_cf, &k, &v);
                batch_bytes += v.len();
                report.shares += 1;
                report.share_bytes += head.share_len(&v);
            }
            _ => report.skipped += 1,
        }
        if batch_bytes >= RESTORE_BATCH_BYTES {
            db.write(std::mem::take(&mut batch))
                .map_err(io::Error::other)?;
            batch_bytes = 0;
        }
    }
    db.write(batch).map_err(io::Error::other)?;
    // Records naming this node whose share did not come: one catalog pass.
    let catalog = crate::raft::catalog::Families::of(&db)?;
    for item in catalog.iter_from(keys::RECORD, crate::store::walk_options()) {
        let (k, v) = item.map_err(io::Error::other)?;
        let Some(id) = k.strip_prefix(keys::RECORD) else {
            break;
        };
        let entry: RecordEntry = decode(&v)?;
        if entry.holder_on(node_id).is_some()
            && db
                .get_pinned_cf(shares_cf, id)
                .map_err(io::Error::other)?
                .is_none()
        {
            report.missing += 1;
        }
    }
    for name in crate::store::ALL_CFS {
        db.flush_cf(cf(&db, name)?).map_err(io::Error::other)?;
    }
    db.flush_wal(true).map_err(io::Error::other)?;
    Ok(report)
}
