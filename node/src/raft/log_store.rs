//! The Raft log in RocksDB: column family `raft_log` (entries keyed by big-endian
//! index, so iteration order is log order) and `raft_meta` (vote, last purged id).
//! Values are encoded with `kakera_proto::codec` (versioned).
//!
//! Durability: a vote is fsynced (WAL flush) before `save_vote` returns; appended
//! entries are written before `append` returns (so they are readable) and reported
//! durable through the callback only after the WAL flush.
//!
//! The newest entries are also kept decoded in memory ([`EntryCache`], shared by
//! every reader of this store): the leader reads each entry once per follower to
//! replicate it and once more to apply it, and decoding a commit of 256 record
//! entries was most of the nodes' decoding work for small puts
//! (docs/performance.md). Invariant: a cached entry is the entry stored at its
//! index; truncation and purging drop cached entries before the stored ones.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use rocksdb::{DB, Direction, IteratorMode};

use super::TypeConfig;
use crate::store::{CF_RAFT_LOG, CF_RAFT_META, cf};

const KEY_VOTE: &[u8] = b"vote";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// Most entries kept decoded.
pub const CACHE_MAX_ENTRIES: usize = 512;
/// Most encoded bytes of the entries kept decoded (their decoded size is of the
/// same order).
pub const CACHE_MAX_BYTES: usize = 32 * 1024 * 1024;

/// The newest log entries, decoded, keyed by index, bounded by
/// [`CACHE_MAX_ENTRIES`] and [`CACHE_MAX_BYTES`] (the oldest leave first).
#[derive(Default)]
pub struct EntryCache {
    entries: BTreeMap<u64, (EntryOf<TypeConfig>, usize)>,
    size_bytes: usize,
}

impl EntryCache {
    /// Keeps `entry` (its encoding took `encoded_bytes`), replacing one at its index.
    fn insert(&mut self, entry: EntryOf<TypeConfig>, encoded_bytes: usize) {
        if encoded_bytes > CACHE_MAX_BYTES {
            self.remove_from(entry.index());
            return;
        }
        if let Some((_, old)) = self.entries.insert(entry.index(), (entry, encoded_bytes)) {
            self.size_bytes -= old;
        }
        self.size_bytes += encoded_bytes;
        // Bounded: each pass removes one entry.
        while self.entries.len() > CACHE_MAX_ENTRIES || self.size_bytes > CACHE_MAX_BYTES {
            let Some((_, (_, bytes))) = self.entries.pop_first() else {
                break;
            };
            self.size_bytes -= bytes;
        }
    }

    /// Drops every entry at `index` or later.
    fn remove_from(&mut self, index: u64) {
        for (_, (_, bytes)) in self.entries.split_off(&index) {
            self.size_bytes -= bytes;
        }
    }

    /// Drops every entry at `index` or before.
    fn remove_through(&mut self, index: u64) {
        let kept = match index.checked_add(1) {
            Some(next) => self.entries.split_off(&next),
            None => BTreeMap::new(),
        };
        self.entries = kept;
        self.size_bytes = self.entries.values().map(|(_, b)| b).sum();
    }

    /// Copies of the entries `start..end` if every one of them is here.
    fn range(&self, start: u64, end: u64) -> Option<Vec<EntryOf<TypeConfig>>> {
        if start >= end {
            return Some(Vec::new());
        }
        let first = *self.entries.keys().next()?;
        let last = *self.entries.keys().next_back()?;
        // The cache holds a contiguous run of indexes (appends are contiguous and
        // only the oldest or newest are dropped), so the bounds decide.
        if start < first || end.saturating_sub(1) > last {
            return None;
        }
        let out: Vec<_> = self
            .entries
            .range(start..end)
            .map(|(_, (e, _))| e.clone())
            .collect();
        (out.len() as u64 == end - start).then_some(out)
    }
}

/// The RocksDB-backed Raft log.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    cache: Arc<Mutex<EntryCache>>,
}

impl LogStore {
    /// A log store over an opened node database.
    pub fn new(db: Arc<DB>) -> LogStore {
        LogStore {
            db,
            cache: Arc::default(),
        }
    }

    /// The entry cache. A panic while it was held cannot leave it inconsistent with
    /// the log in a way that matters more than an empty cache, so it is emptied.
    fn cache(&self) -> MutexGuard<'_, EntryCache> {
        self.cache.lock().unwrap_or_else(|poisoned| {
            let mut guard = poisoned.into_inner();
            *guard = EntryCache::default();
            guard
        })
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
        let end = match range.end_bound() {
            Bound::Included(x) => x.checked_add(1),
            Bound::Excluded(x) => Some(*x),
            Bound::Unbounded => None,
        };
        if let Some(end) = end
            && let Some(cached) = self.cache().range(start, end)
        {
            return Ok(cached);
        }
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
        let mut written = Vec::new();
        for entry in entries {
            let bytes = encode(&entry)?;
            batch.put_cf(log_cf, index_key(entry.index()), &bytes);
            written.push((entry, bytes.len()));
        }
        self.db.write(batch).map_err(io::Error::other)?;
        // Cached once stored: a reader never finds in memory what is not on disk.
        let mut cache = self.cache();
        for (entry, bytes) in written {
            cache.insert(entry, bytes);
        }
        drop(cache);
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
        self.cache().remove_from(from);
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
        self.cache().remove_through(log_id.index());
        self.db
            .delete_range_cf(
                cf(&self.db, CF_RAFT_LOG)?,
                index_key(0),
                index_key(log_id.index() + 1),
            )
            .map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank(index: u64) -> EntryOf<TypeConfig> {
        openraft::testing::blank_ent::<TypeConfig>(1, 1, index)
    }

    fn indexes(v: &[EntryOf<TypeConfig>]) -> Vec<u64> {
        v.iter().map(RaftEntry::index).collect()
    }

    /// P4's log reads: the cache answers a range only when it holds all of it, and
    /// truncation and purging take entries out of it.
    #[test]
    fn the_cache_answers_whole_ranges_only_and_follows_truncation_and_purge() {
        let mut c = EntryCache::default();
        for i in 5..=9 {
            c.insert(blank(i), 100);
        }
        assert_eq!(
            c.range(5, 10).map(|v| indexes(&v)),
            Some(vec![5, 6, 7, 8, 9])
        );
        assert_eq!(c.range(7, 8).map(|v| indexes(&v)), Some(vec![7]));
        assert_eq!(c.range(7, 7).map(|v| v.len()), Some(0));
        assert!(c.range(4, 6).is_none(), "4 is not cached");
        assert!(c.range(8, 11).is_none(), "10 is not cached");
        c.remove_from(8);
        assert!(c.range(7, 9).is_none());
        assert_eq!(c.size_bytes, 300);
        c.remove_through(5);
        assert!(c.range(5, 7).is_none());
        assert_eq!(c.range(6, 8).map(|v| indexes(&v)), Some(vec![6, 7]));
        assert_eq!(c.size_bytes, 200);
        c.remove_through(u64::MAX);
        assert!(c.entries.is_empty() && c.size_bytes == 0);
    }

    /// The cache stays within its entry and byte bounds, dropping the oldest.
    #[test]
    fn the_cache_is_bounded_by_entries_and_bytes() {
        let mut c = EntryCache::default();
        for i in 1..=(CACHE_MAX_ENTRIES as u64 + 10) {
            c.insert(blank(i), 10);
        }
        assert_eq!(c.entries.len(), CACHE_MAX_ENTRIES);
        assert_eq!(c.entries.keys().next(), Some(&11));
        let big = CACHE_MAX_BYTES / 4 + 1;
        for i in 1000..1004 {
            c.insert(blank(i), big);
        }
        assert!(c.size_bytes <= CACHE_MAX_BYTES);
        assert_eq!(c.entries.keys().next(), Some(&1001));
        // An entry larger than the whole cache is not kept, nor anything after it.
        c.insert(blank(1004), CACHE_MAX_BYTES + 1);
        assert!(c.range(1004, 1005).is_none());
        assert_eq!(c.entries.keys().next_back(), Some(&1003));
        assert_eq!(
            c.size_bytes,
            c.entries.values().map(|(_, b)| b).sum::<usize>()
        );
    }
}
