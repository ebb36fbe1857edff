//! The node's one RocksDB instance and its column families. The engine boundary: the
//! Raft log store and state machine reach RocksDB only through the handle opened here.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, Options};

/// Raft log entries, keyed by big-endian index.
pub const CF_RAFT_LOG: &str = "raft_log";
/// Raft vote and last purged log id.
pub const CF_RAFT_META: &str = "raft_meta";
/// State machine meta: last applied log id, last membership.
pub const CF_SM_META: &str = "sm_meta";
/// The replicated catalog, but for the three families below: grants, tickets,
/// tombstones, opt-outs, node modes, pending repairs, cluster keys.
pub const CF_CATALOG: &str = "catalog";
/// The catalog's record entries (`record/<id>`): ids begin with their time, so
/// new keys arrive in order and a flushed file moves down the levels without
/// being rewritten with older records.
pub const CF_CATALOG_RECORDS: &str = "catalog_records";
/// The catalog's audit entries (`audit/<seq>`), in order by construction.
pub const CF_CATALOG_AUDIT: &str = "catalog_audit";
/// The catalog's index keys (`idx/`, `aidx/`, `tidx/`): keyed by subject tag or
/// by an old record's id, so they arrive in no order; apart, their compactions
/// rewrite only index keys.
pub const CF_CATALOG_INDEX: &str = "catalog_index";
/// The families the catalog is split over (issue 21: in one family, every flushed
/// file held random index keys beside the ordered ones, overlapped every file of
/// the level below, and each compaction rewrote old record entries: 4.0x write
/// amplification at 10^7 records).
pub const CATALOG_CFS: [&str; 4] = [
    CF_CATALOG,
    CF_CATALOG_RECORDS,
    CF_CATALOG_AUDIT,
    CF_CATALOG_INDEX,
];
/// Shares received but not yet committed through Raft (node-local, never replicated).
pub const CF_STAGED: &str = "staged_shares";
/// Committed shares this node holds (node-local, never replicated).
pub const CF_SHARES: &str = "shares";

/// Every column family.
pub const ALL_CFS: [&str; 9] = [
    CF_RAFT_LOG,
    CF_RAFT_META,
    CF_SM_META,
    CF_CATALOG,
    CF_CATALOG_RECORDS,
    CF_CATALOG_AUDIT,
    CF_CATALOG_INDEX,
    CF_STAGED,
    CF_SHARES,
];

/// Most bytes of write-ahead log kept before the families they hold back are flushed.
pub const MAX_TOTAL_WAL_BYTES: u64 = 256 * 1024 * 1024;

/// Bytes of the one block cache every family shares: data blocks, and the index and
/// filter blocks of every SST file. Without it each family had its own cache and
/// every open file's index stayed in memory outside any cache, so a node's memory
/// grew with its catalog (issue 21: 96 MiB empty, 619 MiB at 10^6 records).
pub const BLOCK_CACHE_BYTES: usize = 128 * 1024 * 1024;
/// Most bytes of memtables across all families; past it RocksDB flushes.
pub const MEMTABLE_BUDGET_BYTES: usize = 256 * 1024 * 1024;
/// Bytes of one family's memtable before it is flushed.
pub const MEMTABLE_BYTES: usize = 32 * 1024 * 1024;

/// Level-0 files of [`CF_CATALOG_INDEX`] that start a compaction into the level
/// below (RocksDB's default is 4). Its keys arrive in no order, so every flushed file
/// spans the whole family and a compaction out of level 0 rewrites the whole level
/// below with it; at 10^7 records that level holds about 250 MB per node, and four
/// files (about 40 MB) rewrote it: 4.6 bytes written per byte flushed, at 10 to 18
/// MB/s on a loaded machine. Sixteen files carry four times as much per rewrite.
/// The family is only written and scanned by prefix (listings), never looked up by
/// key on the write path, so more level-0 files cost a listing a few more iterators.
pub const INDEX_L0_COMPACTION_TRIGGER_FILES: i32 = 16;
/// Level-0 files of [`CF_CATALOG_INDEX`] at which RocksDB slows writes down, and at
/// which it stops them: above the trigger by as much as the defaults are (20, 36).
pub const INDEX_L0_SLOWDOWN_FILES: i32 = 32;
/// See [`INDEX_L0_SLOWDOWN_FILES`].
pub const INDEX_L0_STOP_FILES: i32 = 48;

/// Bloom filter bits per key (about 1 % false positives).
pub const BLOOM_BITS_PER_KEY: f64 = 10.0;
/// Size of one index or filter partition.
pub const METADATA_BLOCK_BYTES: usize = 4096;

/// Read-ahead of a walk over a whole family: sequential reads in large requests.
pub const WALK_READAHEAD_BYTES: usize = 2 * 1024 * 1024;

/// Read options for a walk over a whole family or a long range of it in one
/// iterator (snapshots, erasure sweeps, backups): its blocks are read once, so
/// they bypass the shared block cache instead of pushing the hot blocks (index and
/// filter blocks, recent records) out of it.
pub fn walk_options() -> rocksdb::ReadOptions {
    let mut o = rocksdb::ReadOptions::default();
    o.fill_cache(false);
    o.set_readahead_size(WALK_READAHEAD_BYTES);
    o
}

/// Read options for one page of a walk (a listing page, a step of the scrubber's or
/// the repair scan's pass: a few hundred entries, a new iterator each). Its blocks
/// bypass the block cache, as a whole walk's do, but it sets no read-ahead of its
/// own: RocksDB's automatic one starts small and grows only while the iterator
/// keeps reading a file in order. With [`WALK_READAHEAD_BYTES`], each page read
/// 2 MiB from every file its iterator touched to use a few hundred KB of it, and
/// the passes of the scrubber and the repair scan, which never rest at 10^7
/// records, read far more than they used.
pub fn page_options() -> rocksdb::ReadOptions {
    let mut o = rocksdb::ReadOptions::default();
    o.fill_cache(false);
    o
}

/// Opens (or creates) the node database under `dir`. Its memory is bounded by
/// [`BLOCK_CACHE_BYTES`] and [`MEMTABLE_BUDGET_BYTES`] whatever the catalog's size.
/// A node start opens it through `crate::raft::open_db`, which also upgrades an
/// older version's layout.
pub fn open(dir: &Path) -> io::Result<Arc<DB>> {
    std::fs::create_dir_all(dir)?;
    let mut opts = Options::default();
    opts.set_db_write_buffer_size(MEMTABLE_BUDGET_BYTES);
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // Bounded background work on small machines.
    opts.increase_parallelism(2);
    // Compactions keep the normal CPU priority: at the lowest one a sustained fill
    // starved them, the catalog's level 0 reached RocksDB's stop trigger (36 files)
    // at 2.2 million records and writes stopped (docs/performance.md).
    // A write-ahead log file is deleted only once every family with data in it has
    // flushed. The staged-marker and meta families take small writes and rarely fill
    // a memtable, so without a bound the logs of all share bytes would stay on disk
    // until they did; past this size RocksDB flushes the families holding them back.
    opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
    let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES);
    let db = DB::open_cf_descriptors(&opts, dir, descriptors(&cache)).map_err(io::Error::other)?;
    Ok(Arc::new(db))
}

/// Every column family with its options. Shares are uniformly random (sealed, then
/// split), so their families are not compressed. They stay in SST files, not blob
/// files: an erased share must leave the disk when its key range is compacted (P6),
/// and a blob file would keep it until garbage collection rewrote the whole file
/// (docs/performance.md).
/// Every family reads through `cache`, index and filter blocks included; see
/// [`table_options`].
fn descriptors(cache: &rocksdb::Cache) -> Vec<ColumnFamilyDescriptor> {
    let mut table = table_options();
    table.set_block_cache(cache);
    ALL_CFS
        .iter()
        .map(|name| {
            let mut o = Options::default();
            o.set_block_based_table_factory(&table);
            o.set_write_buffer_size(MEMTABLE_BYTES);
            if *name == CF_STAGED || *name == CF_SHARES {
                o.set_compression_type(rocksdb::DBCompressionType::None);
            }
            if *name == CF_CATALOG_INDEX {
                o.set_level_zero_file_num_compaction_trigger(INDEX_L0_COMPACTION_TRIGGER_FILES);
                o.set_level_zero_slowdown_writes_trigger(INDEX_L0_SLOWDOWN_FILES);
                o.set_level_zero_stop_writes_trigger(INDEX_L0_STOP_FILES);
            }
            ColumnFamilyDescriptor::new(*name, o)
        })
        .collect()
}

/// The table format of every family. Point lookups of absent keys (a new record id, a tombstone, a staged share) are
/// answered by a Bloom filter per file instead of a block read per level; index and
/// filters are partitioned, so a lookup pulls one small partition into the cache and
/// only the top level of each file's index is pinned: the cache holds the hot part
/// of a catalog of any size instead of its whole index.
pub fn table_options() -> rocksdb::BlockBasedOptions {
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_bloom_filter(BLOOM_BITS_PER_KEY, false);
    table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_partition_filters(true);
    table.set_metadata_block_size(METADATA_BLOCK_BYTES);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_top_level_index_and_filter(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    table
}

/// Options for writing an SST file the catalog family will ingest (a snapshot): the
/// same filters and index as the files RocksDB writes itself.
pub fn sst_writer_options() -> Options {
    let mut o = Options::default();
    o.set_block_based_table_factory(&table_options());
    o
}

/// Opens a node database (a backup checkpoint) for reading only, with the families
/// it has: a checkpoint an older version took has fewer (its whole catalog in
/// [`CF_CATALOG`]), and the catalog's readers take a missing family as empty.
pub fn open_read_only(dir: &Path) -> io::Result<DB> {
    let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES);
    let present = DB::list_cf(&Options::default(), dir).map_err(io::Error::other)?;
    let wanted = descriptors(&cache)
        .into_iter()
        .filter(|d| present.iter().any(|p| p == d.name()));
    DB::open_cf_descriptors_read_only(&Options::default(), dir, wanted, false)
        .map_err(io::Error::other)
}

/// A column family handle; an error (not a panic) if the database lacks it.
pub fn cf<'a>(db: &'a DB, name: &str) -> io::Result<&'a ColumnFamily> {
    db.cf_handle(name)
        .ok_or_else(|| io::Error::other(format!("column family {name} is missing")))
}

/// Key in [`CF_RAFT_META`] of this data directory's Raft member id.
const KEY_SELF_RAFT_ID: &[u8] = b"self_raft_id";

/// The Raft member id this data directory was created with, if any.
pub fn self_raft_id(db: &DB) -> io::Result<Option<u64>> {
    let Some(bytes) = db
        .get_cf(cf(db, CF_RAFT_META)?, KEY_SELF_RAFT_ID)
        .map_err(io::Error::other)?
    else {
        return Ok(None);
    };
    let bytes: [u8; 8] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| io::Error::other("malformed self_raft_id (expected 8 bytes)"))?;
    Ok(Some(u64::from_be_bytes(bytes)))
}

/// Records this data directory's Raft member id; synced before it returns, so a
/// crash never leaves a directory that voted under an id it does not remember.
pub fn set_self_raft_id(db: &DB, id: u64) -> io::Result<()> {
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    db.put_cf_opt(
        cf(db, CF_RAFT_META)?,
        KEY_SELF_RAFT_ID,
        id.to_be_bytes(),
        &opts,
    )
    .map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files in level 0 of `family` once the database has no flush or compaction
    /// pending or running (waits at most 10 s).
    fn settled_l0_files(db: &DB, family: &str) -> u64 {
        let family = cf(db, family).unwrap_or_else(|e| panic!("{e}"));
        let int = |name: &str| {
            db.property_int_value(name)
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or(0)
        };
        for _ in 0..200 {
            let busy = int("rocksdb.num-running-compactions")
                + int("rocksdb.num-running-flushes")
                + int("rocksdb.compaction-pending")
                + int("rocksdb.mem-table-flush-pending");
            if busy == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        db.property_int_value_cf(family, "rocksdb.num-files-at-level0")
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no level-0 count"))
    }

    /// Issue 21.4: the index family keeps its flushed files in level 0 until
    /// [`INDEX_L0_COMPACTION_TRIGGER_FILES`] of them have come (each compaction out
    /// of level 0 rewrites the whole level below, as the subject index's keys arrive
    /// in no order), where the other families compact at RocksDB's four.
    #[test]
    fn the_index_family_compacts_out_of_level_0_only_at_sixteen_files() {
        let dir = tempfile::TempDir::new().unwrap_or_else(|e| panic!("{e}"));
        let db = open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let flushes = 6u8;
        for family in [CF_CATALOG_INDEX, CF_CATALOG_RECORDS] {
            let handle = cf(&db, family).unwrap_or_else(|e| panic!("{e}"));
            for i in 0..flushes {
                db.put_cf(handle, [b'k', i], b"v")
                    .unwrap_or_else(|e| panic!("{e}"));
                db.flush_cf(handle).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        assert_eq!(
            settled_l0_files(&db, CF_CATALOG_INDEX),
            u64::from(flushes),
            "the index family compacted out of level 0 early"
        );
        assert!(
            settled_l0_files(&db, CF_CATALOG_RECORDS) < 4,
            "the record family kept RocksDB's trigger of four files"
        );
    }
}
