//! The replicated state machine over RocksDB: column family `sm_meta` (last applied log
//! id, last membership) and `catalog` (the cluster's replicated state). A batch of
//! entries is applied with one atomic write batch; responses go out only after it.
//!
//! Snapshots are the whole catalog column family, encoded with the codec, written to
//! `<data_dir>/snapshots/<index>` through a temporary file and a rename.

use std::io::{self, Cursor};
use std::path::PathBuf;
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use rocksdb::{DB, IteratorMode};
use serde::{Deserialize, Serialize};

use super::commands::{Command, CommandResponse, MAX_META_KEY_BYTES, MAX_META_VALUE_BYTES};
use super::log_store::{decode, encode};
use super::{SnapshotData, TypeConfig};
use crate::store::{CF_CATALOG, CF_SM_META, cf};

const KEY_LAST_APPLIED: &[u8] = b"last_applied";
const KEY_LAST_MEMBERSHIP: &[u8] = b"last_membership";
/// Catalog key of the cluster identity written by [`Command::InitCluster`].
pub const KEY_CLUSTER: &[u8] = b"cluster";
/// Prefix of incarnation keys (`incarnation/<node id, big-endian>` -> Raft member id).
pub const INCARNATION_PREFIX: &[u8] = b"incarnation/";
/// Prefix of operator metadata keys.
pub const META_PREFIX: &[u8] = b"meta/";

/// The largest snapshot a node builds or installs.
pub const MAX_SNAPSHOT_BYTES: u64 = 512 * 1024 * 1024;

/// The state machine of a node.
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<DB>,
    snapshot_dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMetaOf<TypeConfig>,
    data: Vec<u8>,
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
    /// A state machine over an opened node database; snapshots go to `snapshot_dir`.
    pub fn new(db: Arc<DB>, snapshot_dir: PathBuf) -> io::Result<StateMachine> {
        std::fs::create_dir_all(&snapshot_dir)?;
        Ok(StateMachine { db, snapshot_dir })
    }

    /// Reads the cluster record, if the group has been initialised.
    pub fn cluster_record(&self) -> io::Result<Option<ClusterRecord>> {
        self.db
            .get_cf(cf(&self.db, CF_CATALOG)?, KEY_CLUSTER)
            .map_err(io::Error::other)?
            .map(|b| decode(&b))
            .transpose()
    }

    /// The current Raft member id of every node that registered one.
    pub fn incarnations(&self) -> io::Result<std::collections::BTreeMap<u64, u64>> {
        let catalog = cf(&self.db, CF_CATALOG)?;
        let mut out = std::collections::BTreeMap::new();
        let mode = IteratorMode::From(INCARNATION_PREFIX, rocksdb::Direction::Forward);
        // Bounded by the number of registered nodes (one key each).
        for item in self.db.iterator_cf(catalog, mode) {
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
        self.db
            .get_cf(cf(&self.db, CF_CATALOG)?, k)
            .map_err(io::Error::other)?
            .map(|b| decode(&b))
            .transpose()
    }

    fn read_meta(
        &self,
    ) -> io::Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>)> {
        let meta_cf = cf(&self.db, CF_SM_META)?;
        let applied = self
            .db
            .get_cf(meta_cf, KEY_LAST_APPLIED)
            .map_err(io::Error::other)?
            .map(|b| decode(&b))
            .transpose()?;
        let membership = self
            .db
            .get_cf(meta_cf, KEY_LAST_MEMBERSHIP)
            .map_err(io::Error::other)?
            .map(|b| decode(&b))
            .transpose()?
            .unwrap_or_default();
        Ok((applied, membership))
    }

    fn apply_command(
        &self,
        batch: &mut rocksdb::WriteBatch,
        cmd: &Command,
    ) -> io::Result<CommandResponse> {
        let catalog = cf(&self.db, CF_CATALOG)?;
        Ok(match cmd {
            Command::InitCluster {
                cluster_id,
                config_digest,
            } => {
                if self.cluster_record()?.is_some() {
                    CommandResponse::Refused {
                        reason: "the cluster is already initialised".into(),
                    }
                } else {
                    let rec = ClusterRecord {
                        cluster_id: cluster_id.clone(),
                        config_digest: *config_digest,
                    };
                    batch.put_cf(catalog, KEY_CLUSTER, encode(&rec)?);
                    CommandResponse::Applied
                }
            }
            Command::RegisterIncarnation { node_id, raft_id } => {
                if kakera_proto::ids::node_of(*raft_id) != *node_id {
                    CommandResponse::Refused {
                        reason: format!(
                            "Raft member {} does not belong to node {node_id}",
                            kakera_proto::ids::describe(*raft_id)
                        ),
                    }
                } else {
                    let mut k = INCARNATION_PREFIX.to_vec();
                    k.extend_from_slice(&node_id.to_be_bytes());
                    batch.put_cf(catalog, k, encode(raft_id)?);
                    CommandResponse::Applied
                }
            }
            Command::SetMeta { key, value } => {
                if key.len() > MAX_META_KEY_BYTES || value.len() > MAX_META_VALUE_BYTES {
                    CommandResponse::Refused {
                        reason: format!(
                            "metadata keys are at most {MAX_META_KEY_BYTES} bytes and values \
                             at most {MAX_META_VALUE_BYTES}"
                        ),
                    }
                } else {
                    let mut k = META_PREFIX.to_vec();
                    k.extend_from_slice(key.as_bytes());
                    batch.put_cf(catalog, k, encode(value)?);
                    CommandResponse::Applied
                }
            }
        })
    }

    fn snapshot_path(&self, meta: &SnapshotMetaOf<TypeConfig>) -> PathBuf {
        let index = meta.last_log_id.as_ref().map_or(0, |l| l.index());
        self.snapshot_dir.join(format!("{index:020}.snap"))
    }

    fn write_snapshot_file(&self, file: &SnapshotFile) -> io::Result<()> {
        let path = self.snapshot_path(&file.meta);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, encode(file)?)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        // Keep only the newest snapshot.
        for old in std::fs::read_dir(&self.snapshot_dir)? {
            let old = old?.path();
            if old != path && old.extension().is_some_and(|e| e == "snap") {
                std::fs::remove_file(old)?;
            }
        }
        Ok(())
    }
}

fn catalog_dump(db: &DB) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let snap = db.snapshot();
    let mut out = Vec::new();
    let mut total: u64 = 0;
    for item in snap.iterator_cf(cf(db, CF_CATALOG)?, IteratorMode::Start) {
        let (k, v) = item.map_err(io::Error::other)?;
        total += (k.len() + v.len()) as u64;
        if total > MAX_SNAPSHOT_BYTES {
            return Err(io::Error::other(format!(
                "catalog exceeds the snapshot cap of {MAX_SNAPSHOT_BYTES} bytes"
            )));
        }
        out.push((k.to_vec(), v.to_vec()));
    }
    Ok(out)
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, SnapshotData>, io::Error> {
        let (last_log_id, last_membership) = self.read_meta()?;
        let db = self.db.clone();
        let dump = tokio::task::spawn_blocking(move || catalog_dump(&db))
            .await
            .map_err(io::Error::other)??;
        let data = encode(&dump)?;
        let meta = SnapshotMetaOf::<TypeConfig> {
            last_log_id,
            last_membership,
        };
        self.write_snapshot_file(&SnapshotFile {
            meta: meta.clone(),
            data: data.clone(),
        })?;
        Ok(SnapshotOf::<TypeConfig, SnapshotData> {
            meta,
            snapshot: Cursor::new(data),
        })
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
        let mut batch = rocksdb::WriteBatch::default();
        let mut last_applied = None;
        let mut last_membership = None;
        let mut responses = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            last_applied = Some(entry.log_id());
            let response = match &entry.payload {
                EntryPayload::Blank => CommandResponse::Applied,
                EntryPayload::Normal(cmd) => self.apply_command(&mut batch, cmd)?,
                EntryPayload::Membership(m) => {
                    last_membership = Some(StoredMembershipOf::<TypeConfig>::new(
                        Some(entry.log_id()),
                        m.clone(),
                    ));
                    CommandResponse::Applied
                }
            };
            if let Some(r) = responder {
                responses.push((r, response));
            }
        }
        let meta_cf = cf(&self.db, CF_SM_META)?;
        if let Some(id) = &last_applied {
            batch.put_cf(meta_cf, KEY_LAST_APPLIED, encode(id)?);
        }
        if let Some(m) = &last_membership {
            batch.put_cf(meta_cf, KEY_LAST_MEMBERSHIP, encode(m)?);
        }
        self.db.write(batch).map_err(io::Error::other)?;
        for (r, resp) in responses {
            r.send(resp);
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
        let data = snapshot.into_inner();
        if data.len() as u64 > MAX_SNAPSHOT_BYTES {
            return Err(io::Error::other("snapshot exceeds the size cap"));
        }
        let dump: Vec<(Vec<u8>, Vec<u8>)> = decode(&data)?;
        let db = self.db.clone();
        let applied = meta.last_log_id.as_ref().map(encode).transpose()?;
        let membership = encode(&meta.last_membership)?;
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let catalog = cf(&db, CF_CATALOG)?;
            let meta_cf = cf(&db, CF_SM_META)?;
            let mut batch = rocksdb::WriteBatch::default();
            for item in db.iterator_cf(catalog, IteratorMode::Start) {
                let (k, _) = item.map_err(io::Error::other)?;
                batch.delete_cf(catalog, k);
            }
            for (k, v) in dump {
                batch.put_cf(catalog, k, v);
            }
            match applied {
                Some(a) => batch.put_cf(meta_cf, KEY_LAST_APPLIED, a),
                None => batch.delete_cf(meta_cf, KEY_LAST_APPLIED),
            }
            batch.put_cf(meta_cf, KEY_LAST_MEMBERSHIP, membership);
            db.write(batch).map_err(io::Error::other)?;
            db.flush_wal(true).map_err(io::Error::other)
        })
        .await
        .map_err(io::Error::other)??;
        self.write_snapshot_file(&SnapshotFile {
            meta: meta.clone(),
            data,
        })
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Self::SnapshotData>>, io::Error> {
        let mut newest: Option<PathBuf> = None;
        for item in std::fs::read_dir(&self.snapshot_dir)? {
            let path = item?.path();
            if path.extension().is_some_and(|e| e == "snap")
                && newest.as_ref().is_none_or(|n| path > *n)
            {
                newest = Some(path);
            }
        }
        let Some(path) = newest else {
            return Ok(None);
        };
        let file: SnapshotFile = decode(&std::fs::read(path)?)?;
        Ok(Some(SnapshotOf::<TypeConfig, SnapshotData> {
            meta: file.meta,
            snapshot: Cursor::new(file.data),
        }))
    }
}
