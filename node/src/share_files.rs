//! Large shares in files beside the database (issue 24): a share of at least
//! `[staging] file_share_min_bytes` is written once, to its own file, instead of
//! into RocksDB's write-ahead log and again into an SST file and its compactions.
//! RocksDB keeps only a 49-byte value naming it (`crate::shares`, value version 3).
//!
//! Layout: `<db dir>/share-files/<xx>/<record id hex>-<BLAKE3 hex>`, `xx` the last
//! byte of the record id (ids begin with their time; the last byte is random), so
//! 256 directories share the files. The name carries the digest: a share replaced
//! by another (a re-staged record) never overwrites the file a value still names.
//!
//! The write path of one staging request, every step synced before the next:
//! 1. each share's bytes go to `<name>.<n>.tmp`, `fdatasync`;
//! 2. renamed to `<name>`; each directory written into is `fsync`ed;
//! 3. under the store's file lock, each file is checked to be there, and RocksDB's
//!    batch (values and staged markers) is written with a synced WAL write;
//! 4. the ack.
//!
//! A crash after 1 or 2 leaves a file no value names: [`ShareFiles::sweep_orphans`]
//! deletes it at the next start. A value is deleted only together with an unlink
//! marker (`unlink/<id><digest>` in `sm_meta`) in the same batch; the purger
//! ([`ShareFiles::unlink_marked`]) removes the file under the file lock unless a live
//! value names it again, syncs the directories and only then deletes the markers.
//! Invariant: a value of version 3 in `shares` names a file that holds exactly the
//! bytes its digest names, synced before the value was written.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use kakera_proto::{Digest, RecordId};
use rocksdb::{DB, IteratorMode, WriteBatch};

use crate::store::{CF_SM_META, cf};

/// The directory under a node database (or a checkpoint of one) holding its share
/// files.
pub const FILES_DIR: &str = "share-files";
/// Prefix of unlink markers in `sm_meta` (node-local): a share file no value names
/// any more, to be removed by the purger.
pub const UNLINK_PREFIX: &[u8] = b"unlink/";
/// Most unlink markers one purger step takes.
pub const MAX_UNLINK_BATCH: usize = 4096;
/// Default of `[staging] file_share_min_bytes`.
pub const DEFAULT_MIN_FILE_BYTES: u64 = 1024 * 1024;

/// The share files of one node database.
#[derive(Debug)]
pub struct ShareFiles {
    root: PathBuf,
    min_bytes: u64,
    /// Held while a value naming a file is written (after checking the file is
    /// there) and while the purger decides to remove a file: a file is never
    /// removed between its write and the value that names it.
    lock: Mutex<()>,
    next_tmp: AtomicU64,
    /// Bytes of the share files this process knows of: those the start-up sweep
    /// kept, plus those written, less those removed (for `kakera_share_bytes`).
    bytes: AtomicU64,
}

/// The file lock's guard.
pub type FileGuard<'a> = std::sync::MutexGuard<'a, ()>;

impl ShareFiles {
    /// The share files under `db_dir` (created on first write); shares of at least
    /// `min_bytes` go to files.
    pub fn new(db_dir: &Path, min_bytes: u64) -> ShareFiles {
        ShareFiles {
            root: db_dir.join(FILES_DIR),
            min_bytes: min_bytes.max(1),
            lock: Mutex::new(()),
            next_tmp: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// Whether a share of `len` bytes is stored in a file.
    pub fn wants(&self, len: usize) -> bool {
        len as u64 >= self.min_bytes
    }

    /// Bytes of share files on disk, as far as this process has seen them.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The root directory (`<db dir>/share-files`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of `record`'s share with `digest`, under `root`.
    pub fn path_in(root: &Path, record: &RecordId, digest: &Digest) -> PathBuf {
        root.join(format!("{:02x}", record.0[15]))
            .join(format!("{record}-{digest}"))
    }

    /// The file of `record`'s share with `digest`.
    pub fn path(&self, record: &RecordId, digest: &Digest) -> PathBuf {
        Self::path_in(&self.root, record, digest)
    }

    /// The file lock (see the field).
    pub fn lock(&self) -> FileGuard<'_> {
        // A poisoned lock guards no data (the unit type): carry on.
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `bytes` as `record`'s share with `digest` (steps 1 and 2 of the module
    /// doc, the directory sync left to [`ShareFiles::sync_dirs`]). Returns the
    /// directory written into.
    pub fn write(&self, record: &RecordId, digest: &Digest, bytes: &[u8]) -> io::Result<PathBuf> {
        let path = self.path(record, digest);
        let dir = path
            .parent()
            .ok_or_else(|| io::Error::other("a share file path has no directory"))?
            .to_path_buf();
        if !dir.exists() {
            let fresh_root = !self.root.exists();
            std::fs::create_dir_all(&dir)?;
            sync_dir(&self.root)?;
            // The root's own entry in the database directory, the first time.
            if fresh_root && let Some(db_dir) = self.root.parent() {
                sync_dir(db_dir)?;
            }
        }
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(
            "{}.{n}.tmp",
            path.file_name()
                .map(|f| f.to_string_lossy())
                .unwrap_or_default()
        ));
        let new = !path.exists();
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)
        })();
        if written.is_ok() && new {
            self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        Ok(dir)
    }

    /// Syncs each directory in `dirs` (step 2's rename made durable).
    pub fn sync_dirs(dirs: &BTreeSet<PathBuf>) -> io::Result<()> {
        for d in dirs {
            sync_dir(d)?;
        }
        Ok(())
    }

    /// Reads `record`'s share with `digest`; `expected_len` is the length its value
    /// recorded (a shorter or longer file is an error, not a share).
    pub fn read(
        &self,
        record: &RecordId,
        digest: &Digest,
        expected_len: u64,
    ) -> io::Result<Vec<u8>> {
        read_in(&self.root, record, digest, expected_len)
    }

    /// Removes the files of the unlink markers in `db`, at most
    /// [`MAX_UNLINK_BATCH`], unless `live(record, digest)` says a value names the
    /// file again; syncs the directories, then deletes the markers (synced).
    /// Returns how many markers it cleared.
    pub fn unlink_marked(
        &self,
        db: &DB,
        live: impl Fn(&RecordId, &Digest) -> io::Result<bool>,
    ) -> io::Result<usize> {
        let meta = cf(db, CF_SM_META)?;
        let mut markers = Vec::new();
        let mode = IteratorMode::From(UNLINK_PREFIX, rocksdb::Direction::Forward);
        for item in db.iterator_cf(meta, mode).take(MAX_UNLINK_BATCH) {
            let (k, _) = item.map_err(io::Error::other)?;
            let Some(rest) = k.strip_prefix(UNLINK_PREFIX) else {
                break;
            };
            markers.push(parse_marker(rest)?);
        }
        if markers.is_empty() {
            return Ok(0);
        }
        let mut dirs = BTreeSet::new();
        {
            let _guard = self.lock();
            for (record, digest) in &markers {
                if live(record, digest)? {
                    continue;
                }
                let path = self.path(record, digest);
                let len = std::fs::metadata(&path).map_or(0, |m| m.len());
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        let _ =
                            self.bytes
                                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                                    Some(b.saturating_sub(len))
                                });
                        if let Some(d) = path.parent() {
                            dirs.insert(d.to_path_buf());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Self::sync_dirs(&dirs)?;
        let mut batch = WriteBatch::default();
        for (record, digest) in &markers {
            batch.delete_cf(meta, unlink_key(record, digest));
        }
        let mut sync = rocksdb::WriteOptions::default();
        sync.set_sync(true);
        db.write_opt(batch, &sync).map_err(io::Error::other)?;
        Ok(markers.len())
    }

    /// Removes share files no value names (a crash between a file's write and its
    /// value's) and temporary files. Run at start-up, before the node serves.
    /// Bounded by the files present; one directory listing at a time. Returns how
    /// many files it removed.
    pub fn sweep_orphans(
        &self,
        live: impl Fn(&RecordId, &Digest) -> io::Result<bool>,
    ) -> io::Result<usize> {
        if !self.root.exists() {
            return Ok(0);
        }
        let mut removed = 0;
        for dir in std::fs::read_dir(&self.root)? {
            let dir = dir?.path();
            if !dir.is_dir() {
                continue;
            }
            let mut changed = false;
            for file in std::fs::read_dir(&dir)? {
                let path = file?.path();
                let name = path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let keep = match parse_name(&name) {
                    Some((record, digest)) => live(&record, &digest)?,
                    None => false,
                };
                if keep {
                    let len = std::fs::metadata(&path).map_or(0, |m| m.len());
                    self.bytes.fetch_add(len, Ordering::Relaxed);
                } else {
                    std::fs::remove_file(&path)?;
                    removed += 1;
                    changed = true;
                }
            }
            if changed {
                sync_dir(&dir)?;
            }
        }
        Ok(removed)
    }
}

/// Reads the share file of `record` with `digest` under `root` (a live store's or a
/// checkpoint's), checking its length.
pub fn read_in(
    root: &Path,
    record: &RecordId,
    digest: &Digest,
    expected_len: u64,
) -> io::Result<Vec<u8>> {
    let path = ShareFiles::path_in(root, record, digest);
    let bytes = std::fs::read(&path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("the share file of record {record} cannot be read: {e}"),
        )
    })?;
    if bytes.len() as u64 != expected_len {
        return Err(io::Error::other(format!(
            "the share file of record {record} holds {} bytes; its value says {expected_len}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// The unlink marker key of `record`'s share file with `digest`.
pub fn unlink_key(record: &RecordId, digest: &Digest) -> Vec<u8> {
    [UNLINK_PREFIX, &record.0, &digest.0].concat()
}

fn parse_marker(rest: &[u8]) -> io::Result<(RecordId, Digest)> {
    if rest.len() != 16 + 32 {
        return Err(io::Error::other("malformed unlink marker"));
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&rest[..16]);
    let mut d = [0u8; 32];
    d.copy_from_slice(&rest[16..]);
    Ok((RecordId(id), Digest(d)))
}

/// `<32 hex>-<64 hex>` (lower case, as written) -> (record, digest); anything
/// else (a temporary file) is `None`.
fn parse_name(name: &str) -> Option<(RecordId, Digest)> {
    let (id, digest) = name.split_once('-')?;
    let id = RecordId(kakera_proto::record::parse_hex(id, "record id").ok()?);
    let digest = Digest(kakera_proto::record::parse_hex(digest, "digest").ok()?);
    (format!("{id}-{digest}") == name).then_some((id, digest))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Hard-links every share file under `from` into `to` (a backup checkpoint: the
/// files are never written again once named, so a link is a copy). Files removed
/// meanwhile are skipped. Returns how many it linked.
pub fn link_all(from: &Path, to: &Path) -> io::Result<usize> {
    if !from.exists() {
        return Ok(0);
    }
    let mut n = 0;
    for dir in std::fs::read_dir(from)? {
        let dir = dir?;
        if !dir.path().is_dir() {
            continue;
        }
        let dest = to.join(dir.file_name());
        std::fs::create_dir_all(&dest)?;
        for file in std::fs::read_dir(dir.path())? {
            let file = file?;
            let name = file.file_name();
            if parse_name(&name.to_string_lossy()).is_none() {
                continue;
            }
            match std::fs::hard_link(file.path(), dest.join(&name)) {
                Ok(()) => n += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        sync_dir(&dest)?;
    }
    sync_dir(to)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn names_round_trip_and_temporary_files_do_not_parse() {
        let id = RecordId([7; 16]);
        let d = Digest([9; 32]);
        let p = ShareFiles::path_in(Path::new("/x"), &id, &d);
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(parse_name(&name), Some((id, d)));
        assert_eq!(parse_name(&format!("{name}.3.tmp")), None);
        assert_eq!(parse_name("zz-zz"), None);
        assert_eq!(p.parent().unwrap().file_name().unwrap(), "07");
    }
}
