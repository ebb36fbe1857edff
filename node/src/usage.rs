//! Where a node's memory goes: the process's resident set, the Rust heap (jemalloc's
//! statistics) and RocksDB's memtables, table readers and block cache, with the
//! compaction work RocksDB has queued. `kakera status`, `/metrics` and the scale
//! benchmark read it, so a node whose memory grows can be taken apart by holder.
//!
//! Each figure is read from counters the allocator and RocksDB already keep: a few
//! property lookups per column family, no walk over any data.

use kakera_proto::NodeUsage;
use rocksdb::DB;

use crate::store::ALL_CFS;

/// The node's usage now. A figure that cannot be read is 0.
pub fn measure(db: &DB) -> NodeUsage {
    let (heap_allocated_bytes, heap_resident_bytes) = heap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let sum = |name: &rocksdb::properties::PropName| -> u64 {
        ALL_CFS
            .iter()
            .filter_map(|cf| db.cf_handle(cf))
            .filter_map(|cf| db.property_int_value_cf(&cf, name).ok().flatten())
            .sum()
    };
    use rocksdb::properties as p;
    // One block cache is shared by every family (store::open): read it from one.
    let block_cache = db
        .cf_handle(ALL_CFS[0])
        .and_then(|cf| db.property_int_value_cf(&cf, p::BLOCK_CACHE_USAGE).ok())
        .flatten()
        .unwrap_or(0);
    NodeUsage {
        rss_bytes: status_bytes(&status, "VmRSS:").unwrap_or(0),
        peak_rss_bytes: status_bytes(&status, "VmHWM:").unwrap_or(0),
        heap_allocated_bytes,
        heap_resident_bytes,
        rocksdb_memtable_bytes: sum(p::SIZE_ALL_MEM_TABLES),
        rocksdb_table_reader_bytes: sum(p::ESTIMATE_TABLE_READERS_MEM),
        rocksdb_block_cache_bytes: block_cache,
        rocksdb_pending_compaction_bytes: sum(p::ESTIMATE_PENDING_COMPACTION_BYTES),
        rocksdb_running_jobs: db
            .property_int_value(p::NUM_RUNNING_COMPACTIONS)
            .ok()
            .flatten()
            .unwrap_or(0)
            + db.property_int_value(p::NUM_RUNNING_FLUSHES)
                .ok()
                .flatten()
                .unwrap_or(0),
    }
}

/// jemalloc's allocated and resident bytes (0 and 0 when its statistics cannot be
/// read; in a binary that does not allocate through jemalloc they stay near 0).
fn heap() -> (u64, u64) {
    // The statistics are cached per epoch; advancing it refreshes them.
    if tikv_jemalloc_ctl::epoch::advance().is_err() {
        return (0, 0);
    }
    let allocated = tikv_jemalloc_ctl::stats::allocated::read().unwrap_or(0);
    let resident = tikv_jemalloc_ctl::stats::resident::read().unwrap_or(0);
    (allocated as u64, resident as u64)
}

/// A `/proc/<pid>/status` field's value in bytes (the file gives kB).
fn status_bytes(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 21 item 3 (memory bounded, and shown by holder): the usage of a fresh
    /// database names its memtables and a resident set, and the status parser reads
    /// kB as bytes.
    #[test]
    fn usage_is_read_from_a_live_database() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = crate::store::open(dir.path())?;
        let cf = db.cf_handle(crate::store::CF_CATALOG).ok_or_else(|| {
            std::io::Error::other("the catalog family is missing from a new database")
        })?;
        for i in 0u32..1000 {
            db.put_cf(&cf, i.to_be_bytes(), [7u8; 100])
                .map_err(std::io::Error::other)?;
        }
        let u = measure(&db);
        assert!(
            u.rocksdb_memtable_bytes >= 100_000,
            "{} bytes of memtables after 100 kB of writes",
            u.rocksdb_memtable_bytes
        );
        if cfg!(target_os = "linux") {
            assert!(u.rss_bytes > 0 && u.peak_rss_bytes >= u.rss_bytes);
        }
        let text = "Name:\tkakera-node\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n";
        assert_eq!(status_bytes(text, "VmRSS:"), Some(100 << 20));
        assert_eq!(status_bytes(text, "VmHWM:"), Some(200 << 20));
        assert_eq!(status_bytes(text, "VmSwap:"), None);
        Ok(())
    }
}
