//! Raft snapshots as files of bounded chunks, and their installation by SST ingestion.
//! Nothing here holds more than one chunk of the catalog in memory, whatever its size.
//!
//! File layout (format v2), every integer big-endian:
//!
//! ```text
//! MAGIC (16 bytes)
//! u32 len | meta                  codec-encoded SnapshotMeta (last applied id, membership)
//! u32 len | chunk                 repeated; a chunk is pairs (u32 klen | key | u32 vlen | value)
//! u32 0                           end of chunks
//! u64 pairs                       how many pairs the chunks hold
//! [u8; 32] digest                 BLAKE3 of every byte before it
//! ```
//!
//! A chunk closes once it holds at least `chunk_bytes`; one pair larger than that goes
//! alone. Keys are strictly increasing across the file (they come from one RocksDB
//! iterator), which is what an SST file needs.
//!
//! Install, step by step ([`install`]):
//!
//! 1. The file is read chunk by chunk into one SST file (`SstFileWriter`) under the
//!    node's snapshot directory, with one range deletion covering every key the
//!    catalog or the snapshot holds; the digest and pair count are checked at the end.
//!    Until here nothing of the node's state has changed: a bad or truncated file
//!    fails and leaves the old catalog as it was.
//! 2. A marker naming the snapshot file is written to `sm_meta`, synced.
//! 3. The SST file is ingested into the catalog family: one atomic step that replaces
//!    the whole catalog (the range deletion covers older keys only; the file's own
//!    keys carry its newer sequence number).
//! 4. Last applied id and membership are written and the marker deleted, in one
//!    synced batch.
//!
//! A crash after step 2 and before step 4 leaves the marker: the next open does steps
//! 1, 3 and 4 again from the same file ([`recover`]), so the catalog and the applied
//! id always move together.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use openraft::alias::SnapshotMetaOf;
use rocksdb::{DB, IteratorMode};

use super::TypeConfig;
use super::log_store::{decode, encode};
use crate::store::{CF_CATALOG, CF_SM_META, cf};

/// First bytes of a snapshot file.
pub const MAGIC: &[u8; 16] = b"kakera-snap-v2\0\0";
/// Chunk size when the config names none.
pub const DEFAULT_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Largest chunk a reader accepts: one pair alone may exceed `chunk_bytes`, but no
/// catalog value exceeds the codec's limit.
pub const MAX_CHUNK_BYTES: usize = kakera_proto::codec::MAX_VALUE_BYTES + 64 * 1024;
/// Largest meta frame a reader accepts (membership of a few dozen members).
const MAX_META_BYTES: usize = 1024 * 1024;
/// Bytes after the end frame: pair count and digest.
const TAIL_BYTES: u64 = 8 + 32;
/// Key in `sm_meta` of an install that started and has not finished.
pub const KEY_INSTALLING: &[u8] = b"installing_snapshot";
/// Key in `sm_meta` of the last applied log id (shared with the state machine).
pub const KEY_LAST_APPLIED: &[u8] = b"last_applied";
/// Key in `sm_meta` of the last membership (shared with the state machine).
pub const KEY_LAST_MEMBERSHIP: &[u8] = b"last_membership";
/// Snapshot files kept in a node's snapshot directory: the newest and the one
/// before, so a transfer that opened the older one while a newer one was built
/// still finds it.
const KEEP_SNAPSHOTS: usize = 2;

/// A snapshot file on disk: what openraft carries as snapshot data on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotHandle {
    /// The file.
    pub path: PathBuf,
    /// Its length in bytes.
    pub size_bytes: u64,
    /// BLAKE3 of every byte before the trailing digest (the file's last 32 bytes).
    pub digest: [u8; 32],
}

impl SnapshotHandle {
    /// Reads a snapshot file's size and trailing digest (the content is checked
    /// against it when the file is read through).
    pub fn open(path: &Path) -> io::Result<SnapshotHandle> {
        let mut f = File::open(path)?;
        let size_bytes = f.metadata()?.len();
        if size_bytes < MAGIC.len() as u64 + 4 + 4 + TAIL_BYTES {
            return Err(malformed(path, "shorter than an empty snapshot"));
        }
        let mut magic = [0u8; 16];
        f.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(malformed(path, "not a kakera v2 snapshot file"));
        }
        f.seek(SeekFrom::End(-32))?;
        let mut digest = [0u8; 32];
        f.read_exact(&mut digest)?;
        Ok(SnapshotHandle {
            path: path.to_path_buf(),
            size_bytes,
            digest,
        })
    }

    /// The digest as lowercase hex.
    pub fn digest_hex(&self) -> String {
        blake3::Hash::from_bytes(self.digest).to_hex().to_string()
    }
}

fn malformed(path: &Path, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("snapshot file {}: {why}", path.display()),
    )
}

/// Writes a snapshot file through `<path>.tmp`, synced and renamed into place.
pub struct SnapshotWriter {
    out: BufWriter<File>,
    hasher: blake3::Hasher,
    tmp: PathBuf,
    path: PathBuf,
    chunk: Vec<u8>,
    chunk_bytes: usize,
    pairs: u64,
    last_key: Option<Vec<u8>>,
}

impl SnapshotWriter {
    /// Starts the file for `meta`; chunks close at `chunk_bytes` (at least 1).
    pub fn create(
        path: &Path,
        meta: &SnapshotMetaOf<TypeConfig>,
        chunk_bytes: usize,
    ) -> io::Result<SnapshotWriter> {
        let tmp = path.with_extension("tmp");
        let mut w = SnapshotWriter {
            out: BufWriter::with_capacity(1 << 20, File::create(&tmp)?),
            hasher: blake3::Hasher::new(),
            tmp,
            path: path.to_path_buf(),
            chunk: Vec::new(),
            chunk_bytes: chunk_bytes.max(1),
            pairs: 0,
            last_key: None,
        };
        w.write(MAGIC)?;
        let meta = encode(meta)?;
        w.frame(&meta)?;
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.out.write_all(bytes)
    }

    fn frame(&mut self, body: &[u8]) -> io::Result<()> {
        let len =
            u32::try_from(body.len()).map_err(|_| io::Error::other("snapshot frame over 4 GiB"))?;
        self.write(&len.to_be_bytes())?;
        self.write(body)
    }

    fn close_chunk(&mut self) -> io::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::take(&mut self.chunk);
        self.frame(&chunk)?;
        self.chunk = chunk;
        self.chunk.clear();
        Ok(())
    }

    /// Adds one pair; keys must come in strictly increasing order.
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        if self.last_key.as_deref().is_some_and(|last| key <= last) {
            return Err(io::Error::other(
                "snapshot keys out of order (the catalog iterator must be sorted)",
            ));
        }
        let (klen, vlen) = (u32::try_from(key.len()), u32::try_from(value.len()));
        let (Ok(klen), Ok(vlen)) = (klen, vlen) else {
            return Err(io::Error::other("catalog pair over 4 GiB"));
        };
        if key.len() + value.len() + 8 > MAX_CHUNK_BYTES {
            return Err(io::Error::other(format!(
                "a catalog pair of {} bytes exceeds the snapshot chunk limit of {MAX_CHUNK_BYTES}",
                key.len() + value.len()
            )));
        }
        if !self.chunk.is_empty()
            && self.chunk.len() + key.len() + value.len() + 8 > MAX_CHUNK_BYTES
        {
            self.close_chunk()?;
        }
        self.chunk.extend_from_slice(&klen.to_be_bytes());
        self.chunk.extend_from_slice(key);
        self.chunk.extend_from_slice(&vlen.to_be_bytes());
        self.chunk.extend_from_slice(value);
        self.pairs += 1;
        match &mut self.last_key {
            Some(k) => {
                k.clear();
                k.extend_from_slice(key);
            }
            None => self.last_key = Some(key.to_vec()),
        }
        if self.chunk.len() >= self.chunk_bytes {
            self.close_chunk()?;
        }
        Ok(())
    }

    /// The last key pushed.
    pub fn last_key(&self) -> Option<&[u8]> {
        self.last_key.as_deref()
    }

    /// Ends the file: end frame, pair count, digest; synced, renamed into place and
    /// the directory synced.
    pub fn finish(mut self) -> io::Result<SnapshotHandle> {
        self.close_chunk()?;
        self.write(&0u32.to_be_bytes())?;
        self.write(&self.pairs.to_be_bytes())?;
        let digest = *self.hasher.finalize().as_bytes();
        self.out.write_all(&digest)?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let size_bytes = file.metadata()?.len();
        drop(file);
        std::fs::rename(&self.tmp, &self.path)?;
        sync_dir(&self.path)?;
        Ok(SnapshotHandle {
            path: self.path,
            size_bytes,
            digest,
        })
    }
}

/// Fsyncs the directory holding `path` (a rename is durable only then).
pub fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

/// Reads a snapshot file chunk by chunk; the digest and pair count are checked when
/// the last chunk has been read ([`SnapshotReader::next_chunk`] returns `None` only
/// then).
pub struct SnapshotReader {
    input: BufReader<File>,
    hasher: blake3::Hasher,
    path: PathBuf,
    meta: SnapshotMetaOf<TypeConfig>,
    pairs: u64,
    done: bool,
}

/// One chunk's pairs, in key order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

impl SnapshotReader {
    /// Opens `path` and reads its meta.
    pub fn open(path: &Path) -> io::Result<SnapshotReader> {
        let mut r = SnapshotReader {
            input: BufReader::with_capacity(1 << 20, File::open(path)?),
            hasher: blake3::Hasher::new(),
            path: path.to_path_buf(),
            meta: SnapshotMetaOf::<TypeConfig>::default(),
            pairs: 0,
            done: false,
        };
        let mut magic = [0u8; 16];
        r.read(&mut magic)?;
        if &magic != MAGIC {
            return Err(malformed(path, "not a kakera v2 snapshot file"));
        }
        let meta = r.frame(MAX_META_BYTES)?;
        r.meta = decode(&meta)?;
        Ok(r)
    }

    /// The snapshot's meta.
    pub fn meta(&self) -> &SnapshotMetaOf<TypeConfig> {
        &self.meta
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.input.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => malformed(&self.path, "truncated"),
            _ => e,
        })?;
        self.hasher.update(buf);
        Ok(())
    }

    fn frame(&mut self, limit: usize) -> io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        self.read(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > limit {
            return Err(malformed(
                &self.path,
                format!("a frame of {len} bytes exceeds {limit}"),
            ));
        }
        let mut body = vec![0u8; len];
        self.read(&mut body)?;
        Ok(body)
    }

    /// The next chunk's pairs, or `None` after the last one once the pair count and
    /// the digest matched.
    pub fn next_chunk(&mut self) -> io::Result<Option<Pairs>> {
        if self.done {
            return Ok(None);
        }
        let body = self.frame(MAX_CHUNK_BYTES)?;
        if body.is_empty() {
            let mut count = [0u8; 8];
            self.read(&mut count)?;
            if u64::from_be_bytes(count) != self.pairs {
                return Err(malformed(
                    &self.path,
                    "pair count does not match its chunks",
                ));
            }
            let computed = *self.hasher.finalize().as_bytes();
            let mut digest = [0u8; 32];
            self.input
                .read_exact(&mut digest)
                .map_err(|_| malformed(&self.path, "truncated before its digest"))?;
            if digest != computed {
                return Err(malformed(&self.path, "content does not match its digest"));
            }
            let mut rest = [0u8; 1];
            if self.input.read(&mut rest)? != 0 {
                return Err(malformed(&self.path, "bytes after the digest"));
            }
            self.done = true;
            return Ok(None);
        }
        let pairs = parse_pairs(&body).ok_or_else(|| malformed(&self.path, "malformed chunk"))?;
        self.pairs += pairs.len() as u64;
        Ok(Some(pairs))
    }
}

fn parse_pairs(mut body: &[u8]) -> Option<Pairs> {
    fn take<'a>(body: &mut &'a [u8]) -> Option<&'a [u8]> {
        let (len, rest) = body.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return None;
        }
        let (item, rest) = rest.split_at(len);
        *body = rest;
        Some(item)
    }
    let mut out = Vec::new();
    while !body.is_empty() {
        let k = take(&mut body)?;
        let v = take(&mut body)?;
        out.push((k.to_vec(), v.to_vec()));
    }
    Some(out)
}

/// Reads the last applied id and membership from a database view.
fn meta_of(db: &DB, view: &rocksdb::Snapshot<'_>) -> io::Result<SnapshotMetaOf<TypeConfig>> {
    let meta_cf = cf(db, CF_SM_META)?;
    let last_log_id = view
        .get_cf(meta_cf, KEY_LAST_APPLIED)
        .map_err(io::Error::other)?
        .map(|b| decode(&b))
        .transpose()?;
    let last_membership = view
        .get_cf(meta_cf, KEY_LAST_MEMBERSHIP)
        .map_err(io::Error::other)?
        .map(|b| decode(&b))
        .transpose()?
        .unwrap_or_default();
    Ok(SnapshotMetaOf::<TypeConfig> {
        last_log_id,
        last_membership,
    })
}

/// The file name of a snapshot of `meta` in a snapshot directory.
pub fn file_name(meta: &SnapshotMetaOf<TypeConfig>) -> String {
    let index = meta.last_log_id.as_ref().map_or(0, |l| l.index());
    format!("{index:020}.snap")
}

/// Writes the catalog of `db` as one snapshot file in `dir`, from one consistent
/// RocksDB view (meta and catalog as of the same instant), a chunk at a time.
pub fn build(db: &DB, dir: &Path, chunk_bytes: usize) -> io::Result<SnapshotHandle> {
    let view = db.snapshot();
    let meta = meta_of(db, &view)?;
    let handle = write_catalog(db, &view, &meta, &dir.join(file_name(&meta)), chunk_bytes)?;
    prune(dir, &handle.path)?;
    Ok(handle)
}

/// Writes the catalog as seen by `view` to `path` under `meta`.
fn write_catalog(
    db: &DB,
    view: &rocksdb::Snapshot<'_>,
    meta: &SnapshotMetaOf<TypeConfig>,
    path: &Path,
    chunk_bytes: usize,
) -> io::Result<SnapshotHandle> {
    let mut w = SnapshotWriter::create(path, meta, chunk_bytes)?;
    for item in view.iterator_cf_opt(
        cf(db, CF_CATALOG)?,
        crate::store::walk_options(),
        IteratorMode::Start,
    ) {
        let (k, v) = item.map_err(io::Error::other)?;
        w.push(&k, &v)?;
    }
    w.finish()
}

/// Writes the catalog of `db` (a backup checkpoint) to `path`, a chunk at a time.
pub fn write_db(db: &DB, path: &Path, chunk_bytes: usize) -> io::Result<SnapshotHandle> {
    let view = db.snapshot();
    let meta = meta_of(db, &view)?;
    write_catalog(db, &view, &meta, path, chunk_bytes)
}

/// Deletes all but the newest [`KEEP_SNAPSHOTS`] snapshot files in `dir` (never
/// `keep`), and leftover temporary and incoming files.
pub fn prune(dir: &Path, keep: &Path) -> io::Result<()> {
    let mut snaps = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let path = item?.path();
        if path.extension().is_some_and(|e| e == "snap") && path != keep {
            snaps.push(path);
        }
    }
    snaps.sort();
    let extra = snaps.len().saturating_sub(KEEP_SNAPSHOTS - 1);
    for old in snaps.into_iter().take(extra) {
        std::fs::remove_file(old)?;
    }
    Ok(())
}

/// The newest snapshot file in `dir`, if any.
pub fn newest(dir: &Path) -> io::Result<Option<SnapshotHandle>> {
    let mut newest: Option<PathBuf> = None;
    for item in std::fs::read_dir(dir)? {
        let path = item?.path();
        if path.extension().is_some_and(|e| e == "snap")
            && newest.as_ref().is_none_or(|n| path > *n)
        {
            newest = Some(path);
        }
    }
    newest.map(|p| SnapshotHandle::open(&p)).transpose()
}

/// Removes files a killed transfer or install left in `dir` (`*.part`, `*.tmp`,
/// `*.sst`). Called at open, before any transfer starts.
pub fn clean_leftovers(dir: &Path) -> io::Result<u64> {
    let mut removed = 0;
    for item in std::fs::read_dir(dir)? {
        let path = item?.path();
        if path
            .extension()
            .is_some_and(|e| e == "part" || e == "tmp" || e == "sst")
        {
            std::fs::remove_file(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Puts `handle`'s file into `dir` under its canonical name (renamed if it is
/// already on this file system under `dir`, else hard-linked or copied) and returns
/// the handle of the file in `dir`.
fn adopt(
    handle: &SnapshotHandle,
    meta: &SnapshotMetaOf<TypeConfig>,
    dir: &Path,
) -> io::Result<SnapshotHandle> {
    let dest = dir.join(file_name(meta));
    if handle.path == dest {
        return Ok(handle.clone());
    }
    let tmp = dest.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    if handle.path.parent() == Some(dir) {
        std::fs::rename(&handle.path, &dest)?;
    } else {
        if std::fs::hard_link(&handle.path, &tmp).is_err() {
            std::fs::copy(&handle.path, &tmp)?;
            File::open(&tmp)?.sync_all()?;
        }
        std::fs::rename(&tmp, &dest)?;
    }
    sync_dir(&dest)?;
    Ok(SnapshotHandle {
        path: dest,
        ..handle.clone()
    })
}

/// What an install did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Installed {
    /// Catalog pairs installed.
    pub pairs: u64,
    /// Bytes of the snapshot file.
    pub size_bytes: u64,
}

/// Installs the snapshot `handle` into `db`'s catalog (steps in the module docs);
/// the file ends up in `dir` as the node's current snapshot. On an error before step
/// 2 the catalog is unchanged.
pub fn install(db: &DB, handle: &SnapshotHandle, dir: &Path) -> io::Result<Installed> {
    let meta = SnapshotReader::open(&handle.path)?.meta().clone();
    // Step 1 on the caller's file: a bad file fails before it replaces anything.
    let sst = dir.join("install.sst");
    let pairs = write_sst(db, &handle.path, &sst)?;
    let handle = adopt(handle, &meta, dir)?;
    // Step 2.
    let meta_cf = cf(db, CF_SM_META)?;
    let mut sync = rocksdb::WriteOptions::default();
    sync.set_sync(true);
    let marker = handle.path.to_string_lossy().into_owned();
    db.put_cf_opt(meta_cf, KEY_INSTALLING, encode(&marker)?, &sync)
        .map_err(io::Error::other)?;
    kakera_net::crash::point("snapshot.install.marked");
    ingest_and_finish(db, &sst, &meta)?;
    prune(dir, &handle.path)?;
    Ok(Installed {
        pairs,
        size_bytes: handle.size_bytes,
    })
}

/// Steps 3 and 4.
fn ingest_and_finish(db: &DB, sst: &Path, meta: &SnapshotMetaOf<TypeConfig>) -> io::Result<()> {
    let mut opts = rocksdb::IngestExternalFileOptions::default();
    opts.set_move_files(true);
    db.ingest_external_file_cf_opts(cf(db, CF_CATALOG)?, &opts, vec![sst])
        .map_err(io::Error::other)?;
    kakera_net::crash::point("snapshot.install.ingested");
    let meta_cf = cf(db, CF_SM_META)?;
    let mut batch = rocksdb::WriteBatch::default();
    match &meta.last_log_id {
        Some(a) => batch.put_cf(meta_cf, KEY_LAST_APPLIED, encode(a)?),
        None => batch.delete_cf(meta_cf, KEY_LAST_APPLIED),
    }
    batch.put_cf(meta_cf, KEY_LAST_MEMBERSHIP, encode(&meta.last_membership)?);
    batch.delete_cf(meta_cf, KEY_INSTALLING);
    let mut sync = rocksdb::WriteOptions::default();
    sync.set_sync(true);
    db.write_opt(batch, &sync).map_err(io::Error::other)?;
    let _ = std::fs::remove_file(sst);
    Ok(())
}

/// Finishes an install a crash interrupted (the marker is set): steps 1, 3 and 4
/// again from the marked file. Returns whether there was one.
pub fn recover(db: &DB, dir: &Path) -> io::Result<bool> {
    let meta_cf = cf(db, CF_SM_META)?;
    let Some(marker) = db
        .get_cf(meta_cf, KEY_INSTALLING)
        .map_err(io::Error::other)?
    else {
        return Ok(false);
    };
    let path = PathBuf::from(decode::<String>(&marker)?);
    let reader = SnapshotReader::open(&path).map_err(|e| {
        io::Error::other(format!(
            "an interrupted snapshot install cannot be finished ({e}); wipe this node's \
             data directory so that it rejoins as a new member"
        ))
    })?;
    let meta = reader.meta().clone();
    drop(reader);
    let sst = dir.join("install.sst");
    write_sst(db, &path, &sst)?;
    ingest_and_finish(db, &sst, &meta)?;
    Ok(true)
}

/// Step 1: the snapshot's pairs as one SST file at `sst`, with a range deletion over
/// every key the current catalog or the snapshot holds. Checks the digest and the
/// pair count; returns the count.
fn write_sst(db: &DB, snapshot: &Path, sst: &Path) -> io::Result<u64> {
    let _ = std::fs::remove_file(sst);
    let mut reader = SnapshotReader::open(snapshot)?;
    let opts = crate::store::sst_writer_options();
    let mut w = rocksdb::SstFileWriter::create(&opts);
    w.open(sst).map_err(io::Error::other)?;
    let mut pairs = 0u64;
    let mut last: Option<Vec<u8>> = None;
    while let Some(chunk) = reader.next_chunk()? {
        for (k, v) in chunk {
            if last.as_ref().is_some_and(|l| k <= *l) {
                return Err(malformed(snapshot, "keys out of order"));
            }
            w.put(&k, &v).map_err(io::Error::other)?;
            last = Some(k);
            pairs += 1;
        }
    }
    // The range's end: past the larger of the catalog's and the snapshot's last key.
    let catalog = cf(db, CF_CATALOG)?;
    let current_last = db
        .iterator_cf(catalog, IteratorMode::End)
        .next()
        .transpose()
        .map_err(io::Error::other)?
        .map(|(k, _)| k.to_vec());
    let mut end = match (current_last, last) {
        (Some(a), Some(b)) => a.max(b),
        (a, b) => a.or(b).unwrap_or_default(),
    };
    end.push(0);
    w.delete_range(b"".as_slice(), end.as_slice())
        .map_err(io::Error::other)?;
    w.finish().map_err(io::Error::other)?;
    File::open(sst)?.sync_all()?;
    Ok(pairs)
}

/// BLAKE3 over every catalog pair of `db` in key order (lengths included): equal on
/// two nodes exactly when their catalogs are. For tests and `kakera` checks.
pub fn catalog_digest(db: &DB) -> io::Result<([u8; 32], u64)> {
    let mut h = blake3::Hasher::new();
    let mut pairs = 0u64;
    let view = db.snapshot();
    for item in view.iterator_cf_opt(
        cf(db, CF_CATALOG)?,
        crate::store::walk_options(),
        IteratorMode::Start,
    ) {
        let (k, v) = item.map_err(io::Error::other)?;
        h.update(&(k.len() as u64).to_be_bytes());
        h.update(&k);
        h.update(&(v.len() as u64).to_be_bytes());
        h.update(&v);
        pairs += 1;
    }
    Ok((*h.finalize().as_bytes(), pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(dir: &Path) -> std::sync::Arc<DB> {
        crate::store::open(&dir.join("db")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn put(db: &DB, pairs: &[(&[u8], &[u8])]) -> io::Result<()> {
        let catalog = cf(db, CF_CATALOG)?;
        for (k, v) in pairs {
            db.put_cf(catalog, k, v).map_err(io::Error::other)?;
        }
        Ok(())
    }

    fn catalog(db: &DB) -> io::Result<Pairs> {
        let mut out = Vec::new();
        for item in db.iterator_cf(cf(db, CF_CATALOG)?, IteratorMode::Start) {
            let (k, v) = item.map_err(io::Error::other)?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// P4 (state survives): a catalog written as many small chunks installs on
    /// another database as exactly the same pairs, and keys the target held that the
    /// snapshot lacks are gone.
    #[test]
    fn a_snapshot_of_many_chunks_replaces_the_whole_catalog() -> io::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let (src, dst) = (db(&a), db(&b));
        for i in 0..2_000u32 {
            put(
                &src,
                &[(format!("record/{i:06}").as_bytes(), &i.to_be_bytes())],
            )?;
        }
        put(
            &dst,
            &[
                (b"aaa-stale", b"x"),
                (b"record/000001", b"old"),
                (b"zzz-stale", b"y"),
            ],
        )?;
        std::fs::create_dir_all(a.join("snapshots"))?;
        std::fs::create_dir_all(b.join("snapshots"))?;
        let handle = build(&src, &a.join("snapshots"), 256)?;
        // Many chunks: 2,000 pairs of about 23 bytes in chunks of 256 bytes.
        let mut reader = SnapshotReader::open(&handle.path)?;
        let mut chunks = 0;
        while reader.next_chunk()?.is_some() {
            chunks += 1;
        }
        assert!(chunks > 100, "{chunks} chunks");
        let installed = install(&dst, &handle, &b.join("snapshots"))?;
        assert_eq!(installed.pairs, 2_000);
        assert_eq!(catalog(&dst)?, catalog(&src)?);
        assert_eq!(catalog_digest(&dst)?, catalog_digest(&src)?);
        // The file now lives in the target's snapshot directory.
        assert!(newest(&b.join("snapshots"))?.is_some());
        Ok(())
    }

    /// P4: a snapshot file damaged in transit (one flipped byte, or cut short) is
    /// refused before it takes effect, and the old catalog stays as it was.
    #[test]
    fn a_damaged_snapshot_leaves_the_old_catalog_intact() -> io::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let (src, dst) = (db(&a), db(&b));
        for i in 0..500u32 {
            put(&src, &[(format!("k{i:05}").as_bytes(), &[7u8; 40])])?;
        }
        put(&dst, &[(b"mine", b"kept")])?;
        std::fs::create_dir_all(a.join("snapshots"))?;
        std::fs::create_dir_all(b.join("snapshots"))?;
        let handle = build(&src, &a.join("snapshots"), 1024)?;
        let bytes = std::fs::read(&handle.path)?;
        let before = catalog(&dst)?;
        let flipped = dir.path().join("flipped.snap");
        let mut damaged = bytes.clone();
        damaged[bytes.len() / 2] ^= 0x40;
        std::fs::write(&flipped, &damaged)?;
        let cut = dir.path().join("cut.snap");
        std::fs::write(&cut, &bytes[..bytes.len() - 100])?;
        for bad in [flipped, cut] {
            let h = SnapshotHandle {
                path: bad.clone(),
                size_bytes: 0,
                digest: handle.digest,
            };
            let err = install(&dst, &h, &b.join("snapshots"));
            assert!(err.is_err(), "{} installed", bad.display());
            assert_eq!(catalog(&dst)?, before);
            assert!(!recover(&dst, &b.join("snapshots"))?, "no marker was set");
        }
        Ok(())
    }

    /// P4: a crash after the install marker leaves a node that finishes the install
    /// at its next open: catalog and applied id move together.
    #[test]
    fn an_interrupted_install_is_finished_at_recovery() -> io::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let (src, dst) = (db(&a), db(&b));
        for i in 0..300u32 {
            put(&src, &[(format!("k{i:05}").as_bytes(), b"v")])?;
        }
        std::fs::create_dir_all(a.join("snapshots"))?;
        std::fs::create_dir_all(b.join("snapshots"))?;
        let handle = build(&src, &a.join("snapshots"), 512)?;
        // What install does up to the marker, then stop as a crash would.
        let meta = SnapshotReader::open(&handle.path)?.meta().clone();
        let adopted = adopt(&handle, &meta, &b.join("snapshots"))?;
        let marker = adopted.path.to_string_lossy().into_owned();
        dst.put_cf(cf(&dst, CF_SM_META)?, KEY_INSTALLING, encode(&marker)?)
            .map_err(io::Error::other)?;
        assert!(recover(&dst, &b.join("snapshots"))?);
        assert_eq!(catalog(&dst)?, catalog(&src)?);
        assert!(!recover(&dst, &b.join("snapshots"))?, "marker cleared");
        Ok(())
    }

    #[test]
    fn out_of_order_keys_are_refused_by_the_writer() -> io::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let meta = SnapshotMetaOf::<TypeConfig>::default();
        let mut w = SnapshotWriter::create(&dir.path().join("x.snap"), &meta, 64)?;
        w.push(b"b", b"1")?;
        assert!(w.push(b"a", b"2").is_err());
        assert!(w.push(b"b", b"2").is_err());
        Ok(())
    }
}
