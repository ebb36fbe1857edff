//! The node's share store: one share per record per node, staged when an ingest
//! client sends it, promoted to committed when the Raft entry naming its digest is
//! applied, deleted when staged too long. Every write is synced before it returns
//! (an acknowledged share survives a crash at any instant).
//!
//! Values are versioned: `[version 1][staged or committed at, Unix ms, u64 BE]
//! [BLAKE3-256 of the share, 32 bytes][encoded share]`. Keys are the 16-byte record id.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use kakera_proto::{Digest, RecordId};
use rocksdb::{DB, IteratorMode, WriteBatch, WriteOptions};

use crate::store::{CF_SHARES, CF_STAGED, cf};

/// Format version of stored share values.
const VALUE_VERSION: u8 = 1;
/// Bytes before the share in a stored value.
pub const HEADER_BYTES: usize = 1 + 8 + 32;
/// Most records one staging request may carry.
pub const MAX_STAGE_ITEMS: usize = 4096;

/// A share as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredShare {
    /// When it was staged or committed (Unix ms).
    pub at_ms: u64,
    /// BLAKE3-256 of `bytes`.
    pub digest: Digest,
    /// The encoded share (kakera-shamir format v1).
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for StoredShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print share bytes.
        write!(
            f,
            "StoredShare {{ at_ms: {}, digest: {}, len: {} }}",
            self.at_ms,
            self.digest,
            self.bytes.len()
        )
    }
}

fn encode_value(at_ms: u64, digest: &Digest, bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_BYTES + bytes.len());
    v.push(VALUE_VERSION);
    v.extend_from_slice(&at_ms.to_be_bytes());
    v.extend_from_slice(&digest.0);
    v.extend_from_slice(bytes);
    v
}

pub(crate) fn decode_value(v: &[u8]) -> io::Result<StoredShare> {
    let (at_ms, digest) = decode_header(v)?;
    Ok(StoredShare {
        at_ms,
        digest,
        bytes: v[HEADER_BYTES..].to_vec(),
    })
}

/// A stored value's time and digest, without copying the share.
fn decode_header(v: &[u8]) -> io::Result<(u64, Digest)> {
    if v.len() < HEADER_BYTES || v[0] != VALUE_VERSION {
        return Err(io::Error::other(
            "stored share value has an unknown format version or is truncated",
        ));
    }
    let mut at = [0u8; 8];
    at.copy_from_slice(&v[1..9]);
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&v[9..41]);
    Ok((u64::from_be_bytes(at), Digest(digest)))
}

/// What happened to a staged share when its commit was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Promotion {
    /// Moved from staged to committed.
    Promoted,
    /// Already committed with this digest (the entry was applied before).
    AlreadyCommitted,
    /// No staged share for the record: repair must bring it.
    Missing,
    /// The staged share's digest differs from the committed one: kept out; repair must
    /// bring the right one.
    Mismatch,
}

/// Why a share was not staged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageRefusal {
    /// A different share is already committed for this record.
    Committed {
        /// The record.
        record: RecordId,
    },
    /// The record was erased.
    Erased {
        /// The record.
        record: RecordId,
    },
}

/// Share bytes each identity has staged and not yet committed on this node, for
/// `max_staged_bytes_per_identity`. Kept in memory: after a restart shares staged
/// before it are not counted (they expire within the staging lifetime anyway), so the
/// ledger can only under-count, never refuse an identity that is within its limit.
#[derive(Default)]
pub struct StagingLedger {
    inner: std::sync::Mutex<LedgerInner>,
}

#[derive(Default)]
struct LedgerInner {
    /// Bytes per identity: settled shares plus reservations in flight.
    by_identity: HashMap<String, u64>,
    /// Who staged each counted share, and its size.
    by_record: HashMap<RecordId, (String, u64)>,
}

impl LedgerInner {
    fn release(&mut self, record: &RecordId) {
        if let Some((name, size_bytes)) = self.by_record.remove(record) {
            self.take(&name, size_bytes);
        }
    }

    fn take(&mut self, name: &str, size_bytes: u64) {
        if let Some(total) = self.by_identity.get_mut(name) {
            assert!(*total >= size_bytes, "the ledger counted these bytes");
            *total -= size_bytes;
            if *total == 0 {
                self.by_identity.remove(name);
            }
        }
    }
}

/// Bytes reserved for one staging request; given back on drop unless settled.
pub struct Reservation<'a> {
    ledger: &'a StagingLedger,
    name: String,
    size_bytes: u64,
    settled: bool,
}

impl StagingLedger {
    fn lock(&self) -> std::sync::MutexGuard<'_, LedgerInner> {
        // Poisoning only means a panic elsewhere mid-update of plain counters.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `size_bytes` for `name` if its staged bytes stay within `limit_bytes`;
    /// otherwise the bytes it already has staged.
    pub fn reserve(
        &self,
        name: &str,
        size_bytes: u64,
        limit_bytes: u64,
    ) -> Result<Reservation<'_>, u64> {
        let mut inner = self.lock();
        let total = inner.by_identity.entry(name.to_string()).or_insert(0);
        if total.saturating_add(size_bytes) > limit_bytes {
            let have = *total;
            if have == 0 {
                inner.by_identity.remove(name);
            }
            return Err(have);
        }
        *total += size_bytes;
        Ok(Reservation {
            ledger: self,
            name: name.to_string(),
            size_bytes,
            settled: false,
        })
    }

    /// Bytes `name` has staged (and reserved) now.
    pub fn staged_bytes(&self, name: &str) -> u64 {
        self.lock().by_identity.get(name).copied().unwrap_or(0)
    }

    /// Bytes staged (and reserved) by all identities together.
    pub fn total_bytes(&self) -> u64 {
        self.lock().by_identity.values().sum()
    }

    /// Who staged `record`'s share, if the ledger counts it.
    pub fn stager(&self, record: &RecordId) -> Option<String> {
        self.lock()
            .by_record
            .get(record)
            .map(|(name, _)| name.clone())
    }

    /// Stops counting `record`'s staged share (committed, expired or erased).
    pub fn release(&self, record: &RecordId) {
        self.lock().release(record);
    }
}

impl Reservation<'_> {
    /// The reserved bytes now stand for these staged shares (whose sizes sum to the
    /// reservation); a share staged again replaces its earlier count.
    pub fn settle(mut self, shares: &[(RecordId, u64)]) {
        let sum: u64 = shares.iter().map(|(_, b)| b).sum();
        assert_eq!(sum, self.size_bytes, "the reservation covers these shares");
        let mut inner = self.ledger.lock();
        for (record, size_bytes) in shares {
            inner.release(record);
            inner
                .by_record
                .insert(*record, (self.name.clone(), *size_bytes));
        }
        self.settled = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.ledger.lock().take(&self.name, self.size_bytes);
        }
    }
}

/// RocksDB's estimates of what a node stores (they count deleted keys until a
/// compaction drops them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShareEstimates {
    /// Committed shares.
    pub shares: u64,
    /// Bytes of committed shares (live SST data and memtables).
    pub share_bytes: u64,
    /// Staged shares.
    pub staged: u64,
    /// Bytes of staged shares.
    pub staged_bytes: u64,
}

/// The share store over the node's database.
#[derive(Clone)]
pub struct ShareStore {
    db: Arc<DB>,
    ledger: Arc<StagingLedger>,
}

fn synced() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}

impl ShareStore {
    /// The store over an opened node database.
    pub fn new(db: Arc<DB>) -> ShareStore {
        ShareStore {
            db,
            ledger: Arc::default(),
        }
    }

    /// Staged bytes per identity.
    pub fn ledger(&self) -> &StagingLedger {
        &self.ledger
    }

    /// RocksDB's estimates for the committed and staged shares (cheap: table
    /// properties, no scan), for metrics.
    pub fn estimates(&self) -> io::Result<ShareEstimates> {
        let property = |name: &str, prop: &str| -> io::Result<u64> {
            Ok(self
                .db
                .property_int_value_cf(cf(&self.db, name)?, prop)
                .map_err(io::Error::other)?
                .unwrap_or(0))
        };
        let bytes = |name: &str| -> io::Result<u64> {
            Ok(property(name, "rocksdb.estimate-live-data-size")?
                + property(name, "rocksdb.cur-size-all-mem-tables")?)
        };
        Ok(ShareEstimates {
            shares: property(CF_SHARES, "rocksdb.estimate-num-keys")?,
            share_bytes: bytes(CF_SHARES)?,
            staged: property(CF_STAGED, "rocksdb.estimate-num-keys")?,
            staged_bytes: bytes(CF_STAGED)?,
        })
    }

    /// Stages shares (one synced write for all of them) and returns each digest.
    /// Staging the same share again is harmless; a record whose committed share
    /// differs is refused, and then nothing of the request is written.
    pub fn stage<B: AsRef<[u8]>>(
        &self,
        items: &[(RecordId, B)],
        now_ms: u64,
    ) -> io::Result<Result<Vec<Digest>, StageRefusal>> {
        assert!(items.len() <= MAX_STAGE_ITEMS, "callers bound the request");
        let staged = cf(&self.db, CF_STAGED)?;
        let committed = cf(&self.db, CF_SHARES)?;
        let mut batch = WriteBatch::default();
        let mut digests = Vec::with_capacity(items.len());
        for (record, bytes) in items {
            let bytes = bytes.as_ref();
            let digest = Digest::of(bytes);
            if let Some(v) = self
                .db
                .get_pinned_cf(committed, record.0)
                .map_err(io::Error::other)?
                && decode_header(&v)?.1 != digest
            {
                return Ok(Err(StageRefusal::Committed { record: *record }));
            }
            batch.put_cf(staged, record.0, encode_value(now_ms, &digest, bytes));
            digests.push(digest);
        }
        self.db
            .write_opt(batch, &synced())
            .map_err(io::Error::other)?;
        Ok(Ok(digests))
    }

    /// Adds to `batch` the promotion of `record`'s staged share if its digest is
    /// `expected`. The caller writes the batch (with the state machine's own writes).
    pub fn promote(
        &self,
        batch: &mut WriteBatch,
        record: &RecordId,
        expected: &Digest,
        now_ms: u64,
    ) -> io::Result<Promotion> {
        let staged = cf(&self.db, CF_STAGED)?;
        let committed = cf(&self.db, CF_SHARES)?;
        if let Some(v) = self
            .db
            .get_pinned_cf(committed, record.0)
            .map_err(io::Error::other)?
            && decode_header(&v)?.1 == *expected
        {
            return Ok(Promotion::AlreadyCommitted);
        }
        let Some(v) = self
            .db
            .get_pinned_cf(staged, record.0)
            .map_err(io::Error::other)?
        else {
            return Ok(Promotion::Missing);
        };
        if decode_header(&v)?.1 != *expected {
            return Ok(Promotion::Mismatch);
        }
        // The committed value is the staged one with the commit time: one copy.
        let mut value = v.to_vec();
        value[1..9].copy_from_slice(&now_ms.to_be_bytes());
        batch.put_cf(committed, record.0, value);
        batch.delete_cf(staged, record.0);
        self.ledger.release(record);
        Ok(Promotion::Promoted)
    }

    /// Adds to `batch` the deletion of `record`'s committed share (it moved away).
    pub fn remove(&self, batch: &mut WriteBatch, record: &RecordId) -> io::Result<()> {
        batch.delete_cf(cf(&self.db, CF_SHARES)?, record.0);
        Ok(())
    }

    /// Stores a regenerated share as staged (synced), for the repair commit to promote.
    /// Returns its digest.
    pub fn stage_repaired(
        &self,
        record: &RecordId,
        bytes: &[u8],
        now_ms: u64,
    ) -> io::Result<Digest> {
        let digest = Digest::of(bytes);
        let mut batch = WriteBatch::default();
        batch.put_cf(
            cf(&self.db, CF_STAGED)?,
            record.0,
            encode_value(now_ms, &digest, bytes),
        );
        self.db
            .write_opt(batch, &synced())
            .map_err(io::Error::other)?;
        Ok(digest)
    }

    /// The committed share of `record`, if this node holds one.
    pub fn committed(&self, record: &RecordId) -> io::Result<Option<StoredShare>> {
        self.read(CF_SHARES, record)
    }

    /// The staged share of `record`, if any.
    pub fn staged(&self, record: &RecordId) -> io::Result<Option<StoredShare>> {
        self.read(CF_STAGED, record)
    }

    /// Whether anything is stored for `record`: (committed, staged). Presence only;
    /// a value that no longer decodes still counts as held.
    pub fn presence(&self, record: &RecordId) -> io::Result<(bool, bool)> {
        let has = |name: &str| -> io::Result<bool> {
            Ok(self
                .db
                .get_pinned_cf(cf(&self.db, name)?, record.0)
                .map_err(io::Error::other)?
                .is_some())
        };
        Ok((has(CF_SHARES)?, has(CF_STAGED)?))
    }

    fn read(&self, name: &str, record: &RecordId) -> io::Result<Option<StoredShare>> {
        self.db
            .get_pinned_cf(cf(&self.db, name)?, record.0)
            .map_err(io::Error::other)?
            .map(|v| decode_value(&v))
            .transpose()
    }

    /// Deletes staged shares older than `ttl_ms` at `now_ms`, at most `max_items` per
    /// call (the caller repeats). `claim` says what the catalog holds for a record: a
    /// share committed naming this node with this share's digest is promoted instead
    /// (the node learned of the commit from a snapshot rather than by applying the
    /// entry); a share a pending repair move assigns to this node is kept until the
    /// move commits, so a slow commit never finds its share collected.
    pub fn collect_expired(
        &self,
        now_ms: u64,
        ttl_ms: u64,
        max_items: usize,
        claim: impl Fn(&RecordId) -> io::Result<Claim>,
    ) -> io::Result<Collected> {
        let staged = cf(&self.db, CF_STAGED)?;
        let shares = cf(&self.db, CF_SHARES)?;
        let mut batch = WriteBatch::default();
        let mut done = Collected::default();
        // Bounded: stops after max_items changes; one pass over the staged family.
        for item in self.db.iterator_cf(staged, IteratorMode::Start) {
            if done.deleted + done.promoted == max_items {
                break;
            }
            let (k, v) = item.map_err(io::Error::other)?;
            let share = decode_value(&v)?;
            if share.at_ms.saturating_add(ttl_ms) > now_ms {
                continue;
            }
            let record = RecordId(
                k.as_ref()
                    .try_into()
                    .map_err(|_| io::Error::other("malformed staged share key"))?,
            );
            match claim(&record)? {
                Claim::Committed(d) if d == share.digest => {
                    batch.put_cf(
                        shares,
                        &k,
                        encode_value(now_ms, &share.digest, &share.bytes),
                    );
                    done.promoted += 1;
                }
                Claim::RepairAssigned => continue,
                Claim::Committed(_) | Claim::None => done.deleted += 1,
            }
            self.ledger.release(&record);
            batch.delete_cf(staged, k);
        }
        if done.deleted + done.promoted > 0 {
            self.db
                .write_opt(batch, &synced())
                .map_err(io::Error::other)?;
        }
        Ok(done)
    }
}

/// What the catalog says of a record whose staged share expired here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Committed, naming this node with this digest.
    Committed(Digest),
    /// A pending repair move regenerates the share onto this node.
    RepairAssigned,
    /// Nothing claims this node's share.
    None,
}

/// What one collector step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    /// Staged shares deleted (never committed here).
    pub deleted: usize,
    /// Staged shares promoted (committed, learned from a snapshot).
    pub promoted: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ShareStore) {
        let dir = tempfile::TempDir::new().unwrap_or_else(|e| panic!("{e}"));
        let db = crate::store::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        (dir, ShareStore::new(db))
    }

    fn rid(n: u8) -> RecordId {
        RecordId([n; 16])
    }

    /// P7: staged bytes are counted per identity, refused past the limit, given
    /// back when a request fails, and released when a share is committed or expires.
    #[test]
    fn the_staging_ledger_counts_reserves_and_releases() -> io::Result<()> {
        let (_d, s) = store();
        let ledger = s.ledger();
        // A failed request (dropped reservation) gives its bytes back.
        drop(
            ledger
                .reserve("gw", 60, 100)
                .unwrap_or_else(|h| panic!("{h}")),
        );
        assert_eq!(ledger.staged_bytes("gw"), 0);
        let r = ledger
            .reserve("gw", 60, 100)
            .unwrap_or_else(|h| panic!("{h}"));
        assert_eq!(ledger.reserve("gw", 41, 100).err(), Some(60));
        assert!(ledger.reserve("other", 100, 100).is_ok(), "per identity");
        let digests = s
            .stage(&[(rid(1), vec![1; 20]), (rid(2), vec![2; 40])], 10)?
            .unwrap_or_else(|r| panic!("{r:?}"));
        r.settle(&[(rid(1), 20), (rid(2), 40)]);
        assert_eq!(ledger.staged_bytes("gw"), 60);
        // Commit releases record 1.
        let mut batch = WriteBatch::default();
        assert_eq!(
            s.promote(&mut batch, &rid(1), &digests[0], 20)?,
            Promotion::Promoted
        );
        assert_eq!(ledger.staged_bytes("gw"), 40);
        s.db.write(batch).map_err(io::Error::other)?;
        // Expiry releases record 2.
        let done = s.collect_expired(1_000_000, 1, 10, |_| Ok(Claim::None))?;
        assert_eq!(done.deleted, 1);
        assert_eq!(ledger.staged_bytes("gw"), 0);
        assert!(ledger.reserve("gw", 100, 100).is_ok());
        Ok(())
    }

    #[test]
    fn staged_shares_promote_only_with_the_committed_digest() -> io::Result<()> {
        let (_d, s) = store();
        let digests = s
            .stage(
                &[(rid(1), b"share one".to_vec()), (rid(2), b"two".to_vec())],
                10,
            )?
            .unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(digests[0], Digest::of(b"share one"));
        assert!(s.committed(&rid(1))?.is_none());

        let mut batch = WriteBatch::default();
        assert_eq!(
            s.promote(&mut batch, &rid(1), &digests[0], 20)?,
            Promotion::Promoted
        );
        assert_eq!(
            s.promote(&mut batch, &rid(2), &Digest::of(b"other"), 20)?,
            Promotion::Mismatch
        );
        assert_eq!(
            s.promote(&mut batch, &rid(3), &digests[0], 20)?,
            Promotion::Missing
        );
        s.db.write(batch).map_err(io::Error::other)?;
        let c = s
            .committed(&rid(1))?
            .unwrap_or_else(|| panic!("not committed"));
        assert_eq!(c.bytes, b"share one");
        assert!(s.staged(&rid(1))?.is_none());
        // The mismatching staged share stays staged (for GC), never committed.
        assert!(s.committed(&rid(2))?.is_none());
        // Applying the same entry again is a no-op.
        let mut batch = WriteBatch::default();
        assert_eq!(
            s.promote(&mut batch, &rid(1), &digests[0], 30)?,
            Promotion::AlreadyCommitted
        );
        Ok(())
    }

    #[test]
    fn a_committed_share_is_never_replaced_by_staging() -> io::Result<()> {
        let (_d, s) = store();
        let d = s
            .stage(&[(rid(1), b"a".to_vec())], 1)?
            .unwrap_or_else(|r| panic!("{r:?}"));
        let mut batch = WriteBatch::default();
        s.promote(&mut batch, &rid(1), &d[0], 2)?;
        s.db.write(batch).map_err(io::Error::other)?;
        assert_eq!(
            s.stage(&[(rid(9), b"x".to_vec()), (rid(1), b"b".to_vec())], 3)?,
            Err(StageRefusal::Committed { record: rid(1) })
        );
        // Nothing of the refused request was written.
        assert!(s.staged(&rid(9))?.is_none());
        // Re-staging the identical share is accepted.
        assert!(s.stage(&[(rid(1), b"a".to_vec())], 4)?.is_ok());
        Ok(())
    }

    #[test]
    fn expired_staged_shares_are_collected_in_bounded_steps() -> io::Result<()> {
        let (_d, s) = store();
        let items: Vec<_> = (0..10u8).map(|i| (rid(i), vec![i])).collect();
        s.stage(&items[..6], 100)?
            .unwrap_or_else(|r| panic!("{r:?}"));
        s.stage(&items[6..], 500)?
            .unwrap_or_else(|r| panic!("{r:?}"));
        // Record 5 was committed with this share (the node learned it from a snapshot);
        // a pending repair move regenerates record 3's share onto this node.
        let five = Digest::of(&[5]);
        let claim = |r: &RecordId| {
            Ok(if *r == rid(5) {
                Claim::Committed(five)
            } else if *r == rid(3) {
                Claim::RepairAssigned
            } else {
                Claim::None
            })
        };
        // At t=1000 with a 600 ms TTL only the first six are expired.
        let step = |n| s.collect_expired(1000, 600, n, claim);
        assert_eq!(
            step(4)?,
            Collected {
                deleted: 4,
                promoted: 0
            }
        );
        assert_eq!(
            step(4)?,
            Collected {
                deleted: 0,
                promoted: 1
            }
        );
        assert_eq!(step(4)?, Collected::default());
        assert!(s.staged(&rid(0))?.is_none());
        assert!(s.staged(&rid(3))?.is_some(), "kept for its repair move");
        assert!(s.staged(&rid(7))?.is_some());
        assert_eq!(s.committed(&rid(5))?.map(|c| c.digest), Some(five));
        assert!(s.committed(&rid(4))?.is_none());
        Ok(())
    }

    #[test]
    fn debug_output_never_shows_share_bytes() {
        let s = StoredShare {
            at_ms: 1,
            digest: Digest::of(b"secret-share-bytes"),
            bytes: b"secret-share-bytes".to_vec(),
        };
        assert!(!format!("{s:?}").contains("secret-share-bytes"));
    }
}
