//! The Raft log in RocksDB: column family `raft_log` (entries keyed by big-endian
//! index, so iteration order is log order) and `raft_meta` (vote, last purged id).
//! Values are encoded with `kakera_proto::codec` (versioned).
//!
//! Durability: a vote is fsynced (WAL flush) before `save_vote` returns; appended
//! entries are written before `append` returns (so they are readable) and reported
//! durable through the callback only after the WAL flush.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use rocksdb::{DB, Direction, IteratorMode};

use super::TypeConfig;
use crate::store::{CF_RAFT_LOG, CF_RAFT_META, cf};

const KEY_VOTE: &[u8] = b"vote";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// The RocksDB-backed Raft log.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
}

impl LogStore {
    /// A log store over an opened node database.
    pub fn new(db: Arc<DB>) -> LogStore {
        LogStore { db }
    }

    fn get_meta<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> io::Result<Option<T>> {
        let bytes = self
            .db
            .get_cf(cf(&self.db, CF_RAFT_META)?, key)
            .map_err(io::Error::other)?;
        bytes.map(|b| decode(&b)).transpose()
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> io::Result<()> {
        self.db
            .put_cf(cf(&self.db, CF_RAFT_META)?, key, encode(value)?)
            .map_err(io::Error::other)
    }
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> io::Result<Vec<u8>> {
    kakera_proto::codec::encode(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub(crate) fn decode<T: serde::Serialize + serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> io::Result<T> {
    kakera_proto::codec::decode(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> io::Result<u64> {
    let arr: [u8; 8] = key
        .try_into()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "log key is not 8 bytes"))?;
    Ok(u64::from_be_bytes(arr))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<TypeConfig>>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        let key = index_key(start);
        let iter = self.db.iterator_cf(
            cf(&self.db, CF_RAFT_LOG)?,
            IteratorMode::From(&key, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item.map_err(io::Error::other)?;
            let index = key_index(&k)?;
            if !range.contains(&index) {
                break;
            }
            let entry: EntryOf<TypeConfig> = decode(&v)?;
            if entry.index() != index {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("log entry at key {index} claims index {}", entry.index()),
                ));
            }
            out.push(entry);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<TypeConfig>>, io::Error> {
        self.get_meta(KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last = self
            .db
            .iterator_cf(cf(&self.db, CF_RAFT_LOG)?, IteratorMode::End)
            .next()
            .transpose()
            .map_err(io::Error::other)?;
        let last_log_id = match last {
            Some((_, v)) => Some(decode::<EntryOf<TypeConfig>>(&v)?.log_id()),
            None => None,
        };
        let last_purged_log_id: Option<LogIdOf<TypeConfig>> = self.get_meta(KEY_LAST_PURGED)?;
        Ok(LogState {
            last_log_id: last_log_id.or(last_purged_log_id),
            last_purged_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<TypeConfig>) -> Result<(), io::Error> {
        self.put_meta(KEY_VOTE, vote)?;
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush_wal(true).map_err(io::Error::other))
            .await
            .map_err(io::Error::other)??;
        Ok(())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<TypeConfig>> + OptionalSend,
    {
        let log_cf = cf(&self.db, CF_RAFT_LOG)?;
        let mut batch = rocksdb::WriteBatch::default();
        for entry in entries {
            batch.put_cf(log_cf, index_key(entry.index()), encode(&entry)?);
        }
        self.db.write(batch).map_err(io::Error::other)?;
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let res = db.flush_wal(true).map_err(io::Error::other);
            callback.io_completed(res);
        });
        Ok(())
    }

    async fn truncate_after(
        &mut self,
        last_log_id: Option<LogIdOf<TypeConfig>>,
    ) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        self.db
            .delete_range_cf(
                cf(&self.db, CF_RAFT_LOG)?,
                index_key(from),
                index_key(u64::MAX),
            )
            .map_err(io::Error::other)?;
        // delete_range excludes its end: remove u64::MAX itself too.
        self.db
            .delete_cf(cf(&self.db, CF_RAFT_LOG)?, index_key(u64::MAX))
            .map_err(io::Error::other)
    }

    async fn purge(&mut self, log_id: LogIdOf<TypeConfig>) -> Result<(), io::Error> {
        // Record the purge point first: entries at or before it are ignored from now on,
        // so a crash between the two writes leaves nothing inconsistent.
        self.put_meta(KEY_LAST_PURGED, &log_id)?;
        self.db
            .delete_range_cf(
                cf(&self.db, CF_RAFT_LOG)?,
                index_key(0),
                index_key(log_id.index() + 1),
            )
            .map_err(io::Error::other)
    }
}
