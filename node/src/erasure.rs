//! Erasure on a node (promise P6): the bytes of an erased record's share leave this
//! node's disk, not only its key space.
//!
//! 1. Applying an erase entry deletes the record's committed and staged shares in the
//!    state machine's write batch, and in the same batch writes a purge marker
//!    (`purge/<id>` in column family `sm_meta`, node-local, never replicated). The
//!    batch is written atomically: after a crash either nothing changed or the
//!    shares are deleted and the marker says their bytes may still be on disk.
//! 2. The purger ([`Purger::run`]) takes the markers, flushes the share families,
//!    compacts the markers' key range with a forced bottommost-level compaction (the
//!    SST files holding the old values are rewritten without them and deleted), then
//!    flushes every column family so no write-ahead log file still holds a share
//!    (RocksDB deletes a log file once every family has flushed past it), removes
//!    the share files the erased values named (their unlink markers were written in
//!    the same batch as the purge markers; `crate::share_files`), and only then
//!    deletes the markers. A crash anywhere in between leaves the markers; the
//!    purger runs again at start-up.
//! 3. Shares that arrive for a record after its erasure (a staging request or a
//!    repair racing the erase entry), and shares of records erased while this node
//!    was behind and caught up by snapshot (no entry applied here), are found by
//!    [`sweep`]: staged shares on every purger pass, committed ones at start-up and
//!    after a snapshot install.
//!
//! Unlinked files' blocks on the disk itself are outside RocksDB's reach: the node's
//! disks are encrypted at rest by the operator (docs/design/paths.md, "Erasure").

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kakera_proto::RecordId;
use rocksdb::{BottommostLevelCompaction, CompactOptions, DB, IteratorMode, WriteBatch};
use tokio::sync::{Notify, watch};

use crate::raft::catalog::keys;
use crate::share_files::MAX_UNLINK_BATCH;
use crate::shares::{PURGE_PREFIX as PURGE, ShareStore, erase_in, purge_key};
use crate::store::{CF_SHARES, CF_SM_META, CF_STAGED, cf};

/// Most markers one purge pass takes.
pub const MAX_PURGE_BATCH: usize = 4096;
/// Most share keys one sweep step deletes before it writes.
const SWEEP_BATCH: usize = 1024;
/// How often the purger looks without being woken (staged-share sweep).
pub const PURGE_EVERY_MS: u64 = 5_000;

/// Up to `limit` record ids with a purge marker, in id order.
pub fn pending(db: &DB, limit: usize) -> io::Result<Vec<RecordId>> {
    let meta = cf(db, CF_SM_META)?;
    let mut out = Vec::new();
    let mode = IteratorMode::From(PURGE, rocksdb::Direction::Forward);
    for item in db.iterator_cf(meta, mode).take(limit) {
        let (k, _) = item.map_err(io::Error::other)?;
        let Some(id) = k.strip_prefix(PURGE) else {
            break;
        };
        let id: [u8; 16] = id
            .try_into()
            .map_err(|_| io::Error::other("malformed purge marker"))?;
        out.push(RecordId(id));
    }
    Ok(out)
}

/// Takes the bytes of erased shares off the disk for up to [`MAX_PURGE_BATCH`]
/// markers (steps 2 of the module doc). Returns how many markers it cleared.
pub fn purge_pending(store: &ShareStore) -> io::Result<usize> {
    let db: &DB = store.db();
    let ids = pending(db, MAX_PURGE_BATCH)?;
    let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
        return Ok(0);
    };
    let mut end = last.0.to_vec();
    // The range end is exclusive: one byte more than the last id sorts after it.
    end.push(0);
    let mut opts = CompactOptions::default();
    opts.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
    opts.set_exclusive_manual_compaction(false);
    for name in [CF_SHARES, CF_STAGED] {
        let family = cf(db, name)?;
        db.flush_cf(family).map_err(io::Error::other)?;
        db.compact_range_cf_opt(
            family,
            Some(first.0.as_slice()),
            Some(end.as_slice()),
            &opts,
        );
    }
    // Every family flushed: no write-ahead log file is needed any more for data
    // written before now, so RocksDB deletes the ones that held the shares.
    for name in crate::store::ALL_CFS {
        db.flush_cf(cf(db, name)?).map_err(io::Error::other)?;
    }
    kakera_net::crash::point("erase.compacted");
    // The erased shares' files: their unlink markers came in the batches that
    // wrote these purge markers. Bounded: markers only shrink here.
    while store.unlink_marked()? == MAX_UNLINK_BATCH {}
    let meta = cf(db, CF_SM_META)?;
    let mut batch = WriteBatch::default();
    for id in &ids {
        batch.delete_cf(meta, purge_key(id));
    }
    let mut sync = rocksdb::WriteOptions::default();
    sync.set_sync(true);
    db.write_opt(batch, &sync).map_err(io::Error::other)?;
    Ok(ids.len())
}

/// Deletes this node's shares of tombstoned records and marks them for purging:
/// staged shares always, committed ones with `committed`. Returns how many it found.
/// Work is bounded by the number of shares the node stores (one key read each).
pub fn sweep(db: &DB, committed: bool) -> io::Result<usize> {
    let catalog = crate::raft::catalog::Families::of(db)?;
    let mut families = vec![CF_STAGED];
    if committed {
        families.push(CF_SHARES);
    }
    let mut found = 0;
    for name in families {
        let family = cf(db, name)?;
        let mut batch = WriteBatch::default();
        let mut in_batch = 0;
        for item in db.iterator_cf_opt(family, crate::store::walk_options(), IteratorMode::Start) {
            let (k, _) = item.map_err(io::Error::other)?;
            let id: [u8; 16] = k
                .as_ref()
                .try_into()
                .map_err(|_| io::Error::other("malformed share key"))?;
            let id = RecordId(id);
            if catalog.get(keys::tomb(&id))?.is_none() {
                continue;
            }
            erase_in(db, &mut batch, &id)?;
            in_batch += 1;
            found += 1;
            if in_batch == SWEEP_BATCH {
                db.write(std::mem::take(&mut batch))
                    .map_err(io::Error::other)?;
                in_batch = 0;
            }
        }
        if in_batch > 0 {
            db.write(batch).map_err(io::Error::other)?;
        }
    }
    Ok(found)
}

/// Wakes the purger: the state machine after applying an erase entry or installing
/// a snapshot.
#[derive(Clone, Default)]
pub struct PurgeSignal {
    wake: Arc<Notify>,
    sweep_committed: Arc<AtomicBool>,
}

impl PurgeSignal {
    /// New markers were written.
    pub fn erased(&self) {
        self.wake.notify_one();
    }

    /// The catalog was replaced (snapshot): committed shares must be swept too.
    pub fn catalog_replaced(&self) {
        self.sweep_committed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// The purger task of a node.
pub struct Purger {
    store: ShareStore,
    signal: PurgeSignal,
}

impl Purger {
    /// A purger over the node's share store, woken by `signal`. Its first pass
    /// sweeps committed shares too (a snapshot may have been installed before a
    /// crash).
    pub fn new(store: ShareStore, signal: PurgeSignal) -> Purger {
        signal.sweep_committed.store(true, Ordering::SeqCst);
        Purger { store, signal }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(PURGE_EVERY_MS));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.signal.wake.notified() => {}
                _ = shutdown.changed() => return,
            }
            let committed = self.signal.sweep_committed.swap(false, Ordering::SeqCst);
            let store = self.store.clone();
            let pass = tokio::task::spawn_blocking(move || -> io::Result<(usize, usize)> {
                let swept = sweep(store.db(), committed)?;
                let mut purged = 0;
                // Bounded: each pass clears up to MAX_PURGE_BATCH markers; markers
                // only come from erase entries, so the loop ends.
                loop {
                    let n = purge_pending(&store)?;
                    purged += n;
                    if n < MAX_PURGE_BATCH {
                        break;
                    }
                }
                // Files of shares that moved away or expired (no compaction needed:
                // they were never erased).
                while store.unlink_marked()? == MAX_UNLINK_BATCH {}
                Ok((swept, purged))
            })
            .await;
            match pass {
                Ok(Ok((0, 0))) => {}
                Ok(Ok((swept, purged))) => {
                    tracing::info!(swept, purged, "erased shares purged from disk");
                }
                Ok(Err(e)) => {
                    if committed {
                        self.signal.sweep_committed.store(true, Ordering::SeqCst);
                    }
                    tracing::warn!(error = %e, "purging erased shares failed; retrying");
                }
                Err(e) => tracing::warn!(error = %e, "purger task failed"),
            }
        }
    }
}
