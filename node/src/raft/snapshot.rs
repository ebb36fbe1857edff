//! Raft snapshots: streamed from a consistent RocksDB view of the live catalog (no
//! copy on the sender's disk), received a chunk at a time straight into one SST
//! file, installed by SST ingestion. Nothing here holds more than a few chunks of
//! the catalog in memory, whatever its size.
//!
//! A node never writes a snapshot file for Raft. Its state machine is durable in
//! RocksDB, so a snapshot *is* the catalog as of the last applied entry: taking one
//! (what openraft does before it purges the log) syncs the write-ahead log, so that
//! the applied state up to that instant survives a power loss, and copies nothing.
//! When a follower needs one, [`open_live`] pins a RocksDB view (meta and catalog as
//! of one instant) and a blocking task encodes it in the stream format below as the
//! network takes it, at most [`LIVE_CHANNEL_PIECES`] pieces ahead. Disk on the
//! sender: none beyond what the pinned view keeps from compaction while it lasts.
//!
//! Stream format (v2; also the file format of a backup part's catalog), every
//! integer big-endian:
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
//! alone. Keys are strictly increasing across the stream (the catalog's families
//! merged in key order, [`super::catalog::walk`]), so the stream does not depend on
//! how the sender's catalog is split, and each family's share of it is in the order
//! an SST file needs.
//!
//! Receive and install, step by step:
//!
//! 1. [`receive`]: the stream is decoded chunk by chunk, each pair into the SST file
//!    of the catalog family its key belongs to (`incoming-<nonce>-<family>.part`
//!    under the node's snapshot directory, one per family), each file with one range
//!    deletion covering every key the catalog or the snapshot holds; the digest and
//!    pair count are checked at the end, the files synced and renamed `.sst`. Until
//!    here nothing of the node's state has changed: a bad, truncated or interrupted
//!    stream fails and leaves the old catalog as it was; a receiver killed mid-way
//!    leaves `.part` files that the next open removes.
//! 2. [`install`]: each SST file is hard-linked as `installing-<index>-<family>.keep`
//!    and a marker naming those links and the snapshot's meta is written to
//!    `sm_meta`, synced.
//! 3. Each SST file is ingested into its family: a step that replaces the family's
//!    whole content (the range deletion covers older keys only; the file's own keys
//!    carry its newer sequence number). Ingesting the same file again leaves the
//!    same content, so the four steps need not be one.
//! 4. Last applied id and membership are written and the marker deleted, in one
//!    synced batch; the links are removed.
//!
//! A crash after step 2 and before step 4 leaves the marker: the next open ingests
//! the kept links again (steps 3 and 4, [`recover`]), so the catalog and the applied
//! id always move together. Nothing reads the catalog between an open and its
//! recovery.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::alias::SnapshotMetaOf;
use rocksdb::DB;
use serde::{Deserialize, Serialize};

use super::TypeConfig;
use super::catalog::{Families, family_of};
use super::log_store::{decode, encode};
use crate::store::{CATALOG_CFS, CF_CATALOG, CF_SM_META, cf};

/// First bytes of a snapshot stream or file.
pub const MAGIC: &[u8; 16] = b"kakera-snap-v2\0\0";
/// Chunk size when the config names none.
pub const DEFAULT_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Largest chunk a reader accepts: one pair alone may exceed `chunk_bytes`, but no
/// catalog value exceeds the codec's limit.
pub const MAX_CHUNK_BYTES: usize = kakera_proto::codec::MAX_VALUE_BYTES + 64 * 1024;
/// Largest piece of an outgoing stream handed to the network (its raw frame limit).
pub const MAX_PIECE_BYTES: usize = kakera_proto::frame::TRAILER_CHUNK_BYTES;
/// Pieces an outgoing snapshot's encoder runs ahead of the network, and an incoming
/// one's network reader ahead of the SST writer.
pub const LIVE_CHANNEL_PIECES: usize = 2;
/// Largest meta frame a reader accepts (membership of a few dozen members).
const MAX_META_BYTES: usize = 1024 * 1024;
/// Key in `sm_meta` of an install that started and has not finished: one SST file
/// per catalog family.
pub const KEY_INSTALLING: &[u8] = b"installing_snapshot_split";
/// The same key of an older version: its marker names one SST file of the whole
/// catalog, or (older still) a snapshot file.
const KEY_INSTALLING_UNSPLIT: &[u8] = b"installing_snapshot";
/// Key in `sm_meta` of the last applied log id (shared with the state machine).
pub const KEY_LAST_APPLIED: &[u8] = b"last_applied";
/// Key in `sm_meta` of the last membership (shared with the state machine).
pub const KEY_LAST_MEMBERSHIP: &[u8] = b"last_membership";
/// The least end of an install's range deletion: past every catalog key (they all
/// begin with an ASCII prefix), so keys the catalog gains between step 1 and step 3
/// are covered too.
const RANGE_END_FLOOR: &[u8] = &[0xff, 0xff, 0xff, 0xff];

/// A snapshot file on disk (a backup part's catalog, a restore's).
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
        use std::io::{Seek, SeekFrom};
        let mut f = File::open(path)?;
        let size_bytes = f.metadata()?.len();
        if size_bytes < MAGIC.len() as u64 + 4 + 4 + 8 + 32 {
            return Err(malformed(&path.display(), "shorter than an empty snapshot"));
        }
        let mut magic = [0u8; 16];
        f.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(malformed(&path.display(), "not a kakera v2 snapshot file"));
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

/// Snapshot data as openraft carries it on this node.
#[derive(Debug)]
pub enum SnapshotData {
    /// Outgoing: the live catalog as of its meta, encoded as it is read.
    Live(SnapshotStream),
    /// A snapshot file (a restore installs its catalog this way).
    File(SnapshotHandle),
    /// Received into an SST file with its digest checked: ready to install.
    Received(ReceivedSnapshot),
}

fn malformed(source: &dyn std::fmt::Display, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("snapshot {source}: {why}"),
    )
}

/// Encodes a snapshot stream into `out`; the digest covers every byte before it.
pub struct SnapshotEncoder<W: Write> {
    out: W,
    hasher: blake3::Hasher,
    chunk: Vec<u8>,
    chunk_bytes: usize,
    pairs: u64,
    size_bytes: u64,
    last_key: Option<Vec<u8>>,
}

impl<W: Write> SnapshotEncoder<W> {
    /// Starts the stream for `meta`; chunks close at `chunk_bytes` (at least 1).
    pub fn new(
        out: W,
        meta: &SnapshotMetaOf<TypeConfig>,
        chunk_bytes: usize,
    ) -> io::Result<SnapshotEncoder<W>> {
        let mut e = SnapshotEncoder {
            out,
            hasher: blake3::Hasher::new(),
            chunk: Vec::new(),
            chunk_bytes: chunk_bytes.clamp(1, MAX_CHUNK_BYTES),
            pairs: 0,
            size_bytes: 0,
            last_key: None,
        };
        e.write(MAGIC)?;
        let meta = encode(meta)?;
        e.frame(&meta)?;
        Ok(e)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.size_bytes += bytes.len() as u64;
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

    /// Ends the stream (end frame, pair count, digest) and flushes `out`; returns it
    /// with the digest and the stream's length in bytes.
    pub fn finish(mut self) -> io::Result<(W, [u8; 32], u64)> {
        self.close_chunk()?;
        self.write(&0u32.to_be_bytes())?;
        self.write(&self.pairs.to_be_bytes())?;
        let digest = *self.hasher.finalize().as_bytes();
        self.out.write_all(&digest)?;
        self.out.flush()?;
        Ok((self.out, digest, self.size_bytes + 32))
    }
}

/// Writes a snapshot file through `<path>.tmp`, synced and renamed into place.
pub struct SnapshotWriter {
    enc: SnapshotEncoder<BufWriter<File>>,
    tmp: PathBuf,
    path: PathBuf,
}

impl SnapshotWriter {
    /// Starts the file for `meta`; chunks close at `chunk_bytes` (at least 1).
    pub fn create(
        path: &Path,
        meta: &SnapshotMetaOf<TypeConfig>,
        chunk_bytes: usize,
    ) -> io::Result<SnapshotWriter> {
        let tmp = path.with_extension("tmp");
        let out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        Ok(SnapshotWriter {
            enc: SnapshotEncoder::new(out, meta, chunk_bytes)?,
            tmp,
            path: path.to_path_buf(),
        })
    }

    /// Adds one pair; keys must come in strictly increasing order.
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.enc.push(key, value)
    }

    /// The last key pushed.
    pub fn last_key(&self) -> Option<&[u8]> {
        self.enc.last_key()
    }

    /// Ends the file; synced, renamed into place and the directory synced.
    pub fn finish(self) -> io::Result<SnapshotHandle> {
        let (out, digest, size_bytes) = self.enc.finish()?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
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

/// Reads a snapshot stream chunk by chunk; the digest and pair count are checked
/// when the last chunk has been read ([`SnapshotReader::next_chunk`] returns `None`
/// only then, and only if nothing follows the digest).
pub struct SnapshotReader<R: Read = BufReader<File>> {
    input: R,
    hasher: blake3::Hasher,
    source: String,
    meta: SnapshotMetaOf<TypeConfig>,
    pairs: u64,
    size_bytes: u64,
    /// Set once the pair count and the digest matched.
    done: bool,
}

/// One chunk's pairs, in key order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

impl SnapshotReader<BufReader<File>> {
    /// Opens the file at `path` and reads its meta.
    pub fn open(path: &Path) -> io::Result<SnapshotReader<BufReader<File>>> {
        let input = BufReader::with_capacity(1 << 20, File::open(path)?);
        SnapshotReader::from_reader(input, path.display().to_string())
    }
}

impl<R: Read> SnapshotReader<R> {
    /// Reads the stream's meta from `input`; `source` names it in errors.
    pub fn from_reader(input: R, source: String) -> io::Result<SnapshotReader<R>> {
        let mut r = SnapshotReader {
            input,
            hasher: blake3::Hasher::new(),
            source,
            meta: SnapshotMetaOf::<TypeConfig>::default(),
            pairs: 0,
            size_bytes: 0,
            done: false,
        };
        let mut magic = [0u8; 16];
        r.read(&mut magic)?;
        if &magic != MAGIC {
            return Err(malformed(&r.source, "not a kakera v2 snapshot"));
        }
        let meta = r.frame(MAX_META_BYTES)?;
        r.meta = decode(&meta)?;
        Ok(r)
    }

    /// The snapshot's meta.
    pub fn meta(&self) -> &SnapshotMetaOf<TypeConfig> {
        &self.meta
    }

    /// Bytes read so far (the whole stream's length once it is done).
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.input.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => malformed(&self.source, "truncated"),
            _ => e,
        })?;
        self.hasher.update(buf);
        self.size_bytes += buf.len() as u64;
        Ok(())
    }

    fn frame(&mut self, limit: usize) -> io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        self.read(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > limit {
            return Err(malformed(
                &self.source,
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
                    &self.source,
                    "pair count does not match its chunks",
                ));
            }
            let computed = *self.hasher.finalize().as_bytes();
            let mut digest = [0u8; 32];
            self.input
                .read_exact(&mut digest)
                .map_err(|_| malformed(&self.source, "truncated before its digest"))?;
            if digest != computed {
                return Err(malformed(&self.source, "content does not match its digest"));
            }
            let mut rest = [0u8; 1];
            if self.input.read(&mut rest)? != 0 {
                return Err(malformed(&self.source, "bytes after the digest"));
            }
            self.size_bytes += 32;
            self.done = true;
            return Ok(None);
        }
        let pairs = parse_pairs(&body).ok_or_else(|| malformed(&self.source, "malformed chunk"))?;
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

/// Pieces of a snapshot stream passed between a blocking task and the network: at
/// most [`LIVE_CHANNEL_PIECES`] in flight, each at most [`MAX_PIECE_BYTES`].
#[derive(Debug)]
pub struct SnapshotStream {
    rx: tokio::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
}

/// The sending end of a [`SnapshotStream`].
pub type PieceSender = tokio::sync::mpsc::Sender<io::Result<Vec<u8>>>;

/// A new stream and its sending end.
pub fn stream_channel() -> (PieceSender, SnapshotStream) {
    let (tx, rx) = tokio::sync::mpsc::channel(LIVE_CHANNEL_PIECES);
    (tx, SnapshotStream { rx })
}

impl SnapshotStream {
    /// The channel the pieces come through (for the network's sender).
    pub fn receiver(&mut self) -> &mut tokio::sync::mpsc::Receiver<io::Result<Vec<u8>>> {
        &mut self.rx
    }

    /// The stream as a blocking reader (for a blocking task only).
    pub fn into_reader(self) -> StreamReader {
        StreamReader {
            rx: self.rx,
            piece: Vec::new(),
            pos: 0,
        }
    }
}

/// A [`SnapshotStream`] read from a blocking task; an error piece is returned as
/// the read's error, the end of the stream as end of file.
pub struct StreamReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    piece: Vec<u8>,
    pos: usize,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Bounded: each pass either returns or takes a new piece from the channel,
        // which ends when its sender is dropped.
        while self.pos == self.piece.len() {
            match self.rx.blocking_recv() {
                Some(Ok(piece)) => {
                    self.piece = piece;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.piece.len() - self.pos);
        buf[..n].copy_from_slice(&self.piece[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Writes a stream into a channel in pieces of at most `piece_bytes` (from a
/// blocking task: a send waits while the channel is full).
struct PieceWriter {
    tx: PieceSender,
    buf: Vec<u8>,
    piece_bytes: usize,
}

impl PieceWriter {
    fn send(&mut self, piece: Vec<u8>) -> io::Result<()> {
        self.tx.blocking_send(Ok(piece)).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the snapshot's receiver went away",
            )
        })
    }
}

impl Write for PieceWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        while self.buf.len() >= self.piece_bytes {
            let rest = self.buf.split_off(self.piece_bytes);
            let piece = std::mem::replace(&mut self.buf, rest);
            self.send(piece)?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let piece = std::mem::take(&mut self.buf);
            self.send(piece)?;
        }
        Ok(())
    }
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

/// Pushes every catalog pair `view` sees into `enc`, in key order.
fn encode_catalog<W: Write>(
    db: &DB,
    view: &rocksdb::Snapshot<'_>,
    enc: &mut SnapshotEncoder<W>,
) -> io::Result<()> {
    for item in super::catalog::walk(db, view) {
        let (k, v) = item?;
        enc.push(&k, &v)?;
    }
    Ok(())
}

/// A snapshot of the live catalog: a RocksDB view is pinned now (its meta is
/// returned), the write-ahead log synced (the state it shows survives a power
/// loss, so openraft may purge the log behind it), and a blocking task encodes the
/// view into the returned stream as it is read, `chunk_bytes` per chunk. Dropping
/// the stream stops the task and releases the view.
pub async fn open_live(
    db: Arc<DB>,
    chunk_bytes: usize,
) -> io::Result<(SnapshotMetaOf<TypeConfig>, SnapshotStream)> {
    let (meta_tx, meta_rx) = tokio::sync::oneshot::channel();
    let (tx, stream) = stream_channel();
    tokio::task::spawn_blocking(move || {
        let view = db.snapshot();
        let meta = meta_of(&db, &view)
            .and_then(|meta| db.flush_wal(true).map_err(io::Error::other).map(|()| meta));
        let meta = match meta {
            Ok(meta) => meta,
            Err(e) => {
                let _ = meta_tx.send(Err(e));
                return;
            }
        };
        if meta_tx.send(Ok(meta.clone())).is_err() {
            return;
        }
        let out = PieceWriter {
            tx: tx.clone(),
            buf: Vec::new(),
            piece_bytes: chunk_bytes.clamp(1, MAX_PIECE_BYTES),
        };
        let sent = SnapshotEncoder::new(out, &meta, chunk_bytes).and_then(|mut enc| {
            encode_catalog(&db, &view, &mut enc)?;
            enc.finish()
        });
        match sent {
            Ok(_) => {}
            // The receiver went away: nobody to tell.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    let meta = meta_rx
        .await
        .map_err(|_| io::Error::other("the snapshot's encoder stopped before its meta"))??;
    Ok((meta, stream))
}

/// Writes the catalog of `db` (a backup checkpoint) to `path`, a chunk at a time.
pub fn write_db(db: &DB, path: &Path, chunk_bytes: usize) -> io::Result<SnapshotHandle> {
    let view = db.snapshot();
    let meta = meta_of(db, &view)?;
    let mut w = SnapshotWriter::create(path, &meta, chunk_bytes)?;
    encode_catalog(db, &view, &mut w.enc)?;
    w.finish()
}

/// Removes what a killed transfer or install left in `dir` (`*.part`, `*.tmp`,
/// `*.sst`, `*.keep`) and the snapshot files of older versions (`*.snap`). Called at
/// open, after [`recover`] and before any transfer starts.
pub fn clean_leftovers(dir: &Path) -> io::Result<u64> {
    let mut removed = 0;
    for item in std::fs::read_dir(dir)? {
        let path = item?.path();
        if path
            .extension()
            .is_some_and(|e| e == "part" || e == "tmp" || e == "sst" || e == "keep" || e == "snap")
        {
            std::fs::remove_file(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// A snapshot received into an SST file, digest and pair count checked.
#[derive(Debug)]
pub struct ReceivedSnapshot {
    /// The meta the stream carried.
    pub meta: SnapshotMetaOf<TypeConfig>,
    /// The SST files (under the snapshot directory), one per catalog family in the
    /// order of [`CATALOG_CFS`].
    pub ssts: Vec<PathBuf>,
    /// Catalog pairs in it.
    pub pairs: u64,
    /// Bytes of the stream it was written from.
    pub size_bytes: u64,
    /// End of the file's range deletion (exclusive).
    range_end: Vec<u8>,
}

impl ReceivedSnapshot {
    /// Removes its files (a snapshot refused, or one whose files were moved into the
    /// database; removing a moved file's old name is a no-op).
    pub fn remove_files(ssts: &[PathBuf]) {
        for sst in ssts {
            let _ = std::fs::remove_file(sst);
        }
    }
}

/// The catalog's last key, if any.
fn last_catalog_key(db: &DB) -> io::Result<Option<Vec<u8>>> {
    Families::of(db)?.last_key()
}

/// Step 1: decodes a snapshot stream from `input` into one SST file per catalog
/// family under `dir`, each with a range deletion over every key the current
/// catalog or the snapshot holds. The files are complete, synced and renamed `.sst`
/// only once the digest and pair count matched; on any error the partial files are
/// removed and nothing else has changed. `source` names the stream in errors.
pub fn receive<R: Read>(
    db: &DB,
    input: R,
    dir: &Path,
    source: String,
) -> io::Result<ReceivedSnapshot> {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(io::Error::other)?;
    let name = format!("incoming-{:016x}", u64::from_be_bytes(nonce));
    let parts: Vec<PathBuf> = CATALOG_CFS
        .iter()
        .map(|f| dir.join(format!("{name}-{f}.part")))
        .collect();
    let ssts: Vec<PathBuf> = CATALOG_CFS
        .iter()
        .map(|f| dir.join(format!("{name}-{f}.sst")))
        .collect();
    let result = (|| {
        let mut reader = SnapshotReader::from_reader(input, source)?;
        let opts = crate::store::sst_writer_options();
        let mut writers = Vec::with_capacity(parts.len());
        for part in &parts {
            let w = rocksdb::SstFileWriter::create(&opts);
            w.open(part).map_err(io::Error::other)?;
            writers.push(w);
        }
        let mut pairs = 0u64;
        let mut chunks = 0u64;
        let mut last: Option<Vec<u8>> = None;
        while let Some(chunk) = reader.next_chunk()? {
            for (k, v) in chunk {
                if last.as_ref().is_some_and(|l| k <= *l) {
                    return Err(malformed(&reader.source, "keys out of order"));
                }
                let family = family_of(&k);
                // Every family of `family_of` is one of `CATALOG_CFS`.
                let i = CATALOG_CFS.iter().position(|f| *f == family).unwrap_or(0);
                writers[i].put(&k, &v).map_err(io::Error::other)?;
                last = Some(k);
                pairs += 1;
            }
            chunks += 1;
            if chunks == 1 {
                kakera_net::crash::point("snapshot.receive.chunk");
            }
        }
        // The range's end: past the larger of the catalog's and the snapshot's last
        // key, and never short of the floor.
        let mut end = [last_catalog_key(db)?, last, Some(RANGE_END_FLOOR.to_vec())]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or_default();
        end.push(0);
        for ((mut w, part), sst) in writers.into_iter().zip(&parts).zip(&ssts) {
            w.delete_range(b"".as_slice(), end.as_slice())
                .map_err(io::Error::other)?;
            w.finish().map_err(io::Error::other)?;
            File::open(part)?.sync_all()?;
            std::fs::rename(part, sst)?;
        }
        sync_dir(&ssts[0])?;
        Ok(ReceivedSnapshot {
            meta: reader.meta().clone(),
            ssts: ssts.clone(),
            pairs,
            size_bytes: reader.size_bytes(),
            range_end: end,
        })
    })();
    if result.is_err() {
        for path in parts.iter().chain(&ssts) {
            let _ = std::fs::remove_file(path);
        }
    }
    result
}

/// What an install did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Installed {
    /// Catalog pairs installed.
    pub pairs: u64,
    /// Bytes of the snapshot stream.
    pub size_bytes: u64,
}

/// The install marker in `sm_meta`: the kept links to the SST files (one per catalog
/// family, in the order of [`CATALOG_CFS`]) and the meta the install ends with.
#[derive(Serialize, Deserialize)]
struct InstallMarker {
    keeps: Vec<String>,
    meta: SnapshotMetaOf<TypeConfig>,
}

/// An older version's marker (under [`KEY_INSTALLING_UNSPLIT`]): one SST file for
/// the whole catalog in [`CF_CATALOG`].
#[derive(Serialize, Deserialize)]
struct UnsplitInstallMarker {
    keep: String,
    meta: SnapshotMetaOf<TypeConfig>,
}

/// Steps 2 to 4: installs a received snapshot into `db`'s catalog (module docs).
/// Runs where entries are applied, so nothing writes the catalog meanwhile. On an
/// error before step 2 the catalog is unchanged and the SST file is left to the
/// caller.
pub fn install(db: &DB, snap: &ReceivedSnapshot, dir: &Path) -> io::Result<Installed> {
    if last_catalog_key(db)?.is_some_and(|last| last >= snap.range_end) {
        return Err(io::Error::other(
            "the catalog holds keys past the snapshot's range deletion; it is not installed",
        ));
    }
    let keeps = mark(db, snap, dir)?;
    kakera_net::crash::point("snapshot.install.marked");
    ingest_and_finish(db, &snap.ssts, &snap.meta)?;
    for keep in keeps {
        let _ = std::fs::remove_file(keep);
    }
    Ok(Installed {
        pairs: snap.pairs,
        size_bytes: snap.size_bytes,
    })
}

/// Step 2: the kept links and the synced marker naming them; returns the links.
fn mark(db: &DB, snap: &ReceivedSnapshot, dir: &Path) -> io::Result<Vec<PathBuf>> {
    let index = snap.meta.last_log_id.as_ref().map_or(0, |l| l.index());
    let mut keeps = Vec::with_capacity(snap.ssts.len());
    for (sst, family) in snap.ssts.iter().zip(CATALOG_CFS) {
        let keep = dir.join(format!("installing-{index:020}-{family}.keep"));
        let _ = std::fs::remove_file(&keep);
        std::fs::hard_link(sst, &keep)?;
        keeps.push(keep);
    }
    if let Some(keep) = keeps.first() {
        sync_dir(keep)?;
    }
    let marker = InstallMarker {
        keeps: keeps
            .iter()
            .map(|k| k.to_string_lossy().into_owned())
            .collect(),
        meta: snap.meta.clone(),
    };
    let mut sync = rocksdb::WriteOptions::default();
    sync.set_sync(true);
    db.put_cf_opt(cf(db, CF_SM_META)?, KEY_INSTALLING, encode(&marker)?, &sync)
        .map_err(io::Error::other)?;
    Ok(keeps)
}

/// Step 3 for one file.
fn ingest(db: &DB, family: &str, sst: &Path) -> io::Result<()> {
    let mut opts = rocksdb::IngestExternalFileOptions::default();
    opts.set_move_files(true);
    db.ingest_external_file_cf_opts(cf(db, family)?, &opts, vec![sst])
        .map_err(io::Error::other)?;
    let _ = std::fs::remove_file(sst);
    Ok(())
}

/// Steps 3 and 4: `ssts` holds one file per catalog family, in the order of
/// [`CATALOG_CFS`].
fn ingest_and_finish(
    db: &DB,
    ssts: &[PathBuf],
    meta: &SnapshotMetaOf<TypeConfig>,
) -> io::Result<()> {
    if ssts.len() != CATALOG_CFS.len() {
        return Err(io::Error::other(format!(
            "an install names {} files for {} catalog families",
            ssts.len(),
            CATALOG_CFS.len()
        )));
    }
    for (sst, family) in ssts.iter().zip(CATALOG_CFS) {
        ingest(db, family, sst)?;
    }
    kakera_net::crash::point("snapshot.install.ingested");
    finish(db, meta, KEY_INSTALLING)
}

/// Step 4: the meta, and the marker under `marker_key` deleted, in one synced batch.
fn finish(db: &DB, meta: &SnapshotMetaOf<TypeConfig>, marker_key: &[u8]) -> io::Result<()> {
    let meta_cf = cf(db, CF_SM_META)?;
    let mut batch = rocksdb::WriteBatch::default();
    match &meta.last_log_id {
        Some(a) => batch.put_cf(meta_cf, KEY_LAST_APPLIED, encode(a)?),
        None => batch.delete_cf(meta_cf, KEY_LAST_APPLIED),
    }
    batch.put_cf(meta_cf, KEY_LAST_MEMBERSHIP, encode(&meta.last_membership)?);
    batch.delete_cf(meta_cf, marker_key);
    let mut sync = rocksdb::WriteOptions::default();
    sync.set_sync(true);
    db.write_opt(batch, &sync).map_err(io::Error::other)
}

/// Finishes an install a crash interrupted (a marker is set): steps 3 and 4 again
/// from the kept links. An older version's marker names one SST file of the whole
/// catalog (the split families are emptied, the file ingested into `catalog`, and
/// the catalog split again before step 4) or a snapshot file (step 1 first).
/// Returns whether there was one.
pub fn recover(db: &DB, dir: &Path) -> io::Result<bool> {
    let cannot = |e: io::Error| {
        io::Error::other(format!(
            "an interrupted snapshot install cannot be finished ({e}); wipe this node's \
             data directory so that it rejoins as a new member"
        ))
    };
    let meta_cf = cf(db, CF_SM_META)?;
    if let Some(marker) = db
        .get_cf(meta_cf, KEY_INSTALLING)
        .map_err(io::Error::other)?
    {
        let m: InstallMarker = decode(&marker)?;
        let mut ssts = Vec::with_capacity(m.keeps.len());
        for (i, keep) in m.keeps.iter().enumerate() {
            let sst = dir.join(format!("recover-{i}.sst"));
            let _ = std::fs::remove_file(&sst);
            std::fs::hard_link(keep, &sst).map_err(cannot)?;
            ssts.push(sst);
        }
        ingest_and_finish(db, &ssts, &m.meta)?;
        for keep in &m.keeps {
            let _ = std::fs::remove_file(keep);
        }
        return Ok(true);
    }
    let Some(marker) = db
        .get_cf(meta_cf, KEY_INSTALLING_UNSPLIT)
        .map_err(io::Error::other)?
    else {
        return Ok(false);
    };
    match decode::<UnsplitInstallMarker>(&marker) {
        Ok(m) => {
            let sst = dir.join("recover.sst");
            let _ = std::fs::remove_file(&sst);
            std::fs::hard_link(&m.keep, &sst).map_err(cannot)?;
            // Its range deletion covers `catalog` only: what the split families hold
            // is the old catalog's, so they are emptied first.
            let mut end = RANGE_END_FLOOR.to_vec();
            end.push(0);
            super::catalog::unsplit(db, &end)?;
            ingest(db, CF_CATALOG, &sst)?;
            super::catalog::split_families(db)?;
            finish(db, &m.meta, KEY_INSTALLING_UNSPLIT)?;
            let _ = std::fs::remove_file(&m.keep);
        }
        Err(_) => {
            let path = PathBuf::from(decode::<String>(&marker)?);
            let input = BufReader::new(File::open(&path).map_err(cannot)?);
            let got = receive(db, input, dir, path.display().to_string()).map_err(cannot)?;
            ingest_and_finish(db, &got.ssts, &got.meta)?;
            db.delete_cf(meta_cf, KEY_INSTALLING_UNSPLIT)
                .map_err(io::Error::other)?;
        }
    }
    Ok(true)
}

/// BLAKE3 over every catalog pair of `db` in key order (lengths included): equal on
/// two nodes exactly when their catalogs are. For tests and `kakera` checks.
pub fn catalog_digest(db: &DB) -> io::Result<([u8; 32], u64)> {
    let mut h = blake3::Hasher::new();
    let mut pairs = 0u64;
    let view = db.snapshot();
    for item in super::catalog::walk(db, &view) {
        let (k, v) = item?;
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

    fn db(dir: &Path) -> Arc<DB> {
        crate::store::open(&dir.join("db")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn put(db: &DB, pairs: &[(&[u8], &[u8])]) -> io::Result<()> {
        let catalog = Families::of(db)?;
        for (k, v) in pairs {
            db.put_cf(catalog.holding(k), k, v)
                .map_err(io::Error::other)?;
        }
        Ok(())
    }

    /// The whole catalog in key order, every family merged.
    fn catalog(db: &DB) -> io::Result<Pairs> {
        let view = db.snapshot();
        super::super::catalog::walk(db, &view)
            .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect()
    }

    /// The keys one family holds.
    fn family_keys(db: &DB, family: &str) -> io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for item in db.iterator_cf(cf(db, family)?, rocksdb::IteratorMode::Start) {
            out.push(item.map_err(io::Error::other)?.0.to_vec());
        }
        Ok(out)
    }

    /// Pairs of every catalog family's kind, in key order.
    fn mixed(n: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        for i in 0..n {
            for prefix in [
                "aidx/r/", "audit/", "grant/", "idx/s/", "record/", "tidx/s/",
            ] {
                out.push((
                    format!("{prefix}{i:06}").into_bytes(),
                    format!("{prefix}value {i}").into_bytes(),
                ));
            }
        }
        out.sort();
        out
    }

    /// A source and a target database under `dir`, and the target's snapshot
    /// directory (created).
    fn pair(dir: &Path) -> io::Result<(Arc<DB>, Arc<DB>, PathBuf)> {
        let (src, dst) = (db(&dir.join("a")), db(&dir.join("b")));
        let snaps = dir.join("b").join("snapshots");
        std::fs::create_dir_all(&snaps)?;
        Ok((src, dst, snaps))
    }

    /// The whole live stream of `db`'s catalog, as the network would carry it.
    async fn stream_bytes(db: &Arc<DB>, chunk_bytes: usize) -> io::Result<Vec<u8>> {
        let (_, mut stream) = open_live(db.clone(), chunk_bytes).await?;
        let mut bytes = Vec::new();
        while let Some(piece) = stream.receiver().recv().await {
            let piece = piece?;
            assert!(piece.len() <= chunk_bytes.max(1), "a piece over its size");
            bytes.extend_from_slice(&piece);
        }
        Ok(bytes)
    }

    fn files_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for item in std::fs::read_dir(dir)? {
            out.push(item?.path());
        }
        Ok(out)
    }

    /// P4 (state survives): a catalog streamed as many small chunks installs on
    /// another database as exactly the same pairs, keys the target held that the
    /// snapshot lacks are gone, and the receiver keeps no file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_of_many_chunks_replaces_the_whole_catalog() -> io::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let (src, dst, snaps) = pair(dir.path())?;
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
        let bytes = stream_bytes(&src, 256).await?;
        // Many chunks: 2,000 pairs of about 23 bytes in chunks of 256 bytes.
        let mut reader = SnapshotReader::from_reader(bytes.as_slice(), "test".into())?;
        let mut chunks = 0;
        while reader.next_chunk()?.is_some() {
            chunks += 1;
        }
        assert!(chunks > 100, "{chunks} chunks");
        assert_eq!(reader.size_bytes(), bytes.len() as u64);
        let got = receive(&dst, bytes.as_slice(), &snaps, "test".into())?;
        assert_eq!(got.pairs, 2_000);
        assert_eq!(catalog(&dst)?.len(), 3, "receiving changed the catalog");
        let installed = install(&dst, &got, &snaps)?;
        assert_eq!(installed.pairs, 2_000);
        assert_eq!(catalog(&dst)?, catalog(&src)?);
        assert_eq!(catalog_digest(&dst)?, catalog_digest(&src)?);
        assert_eq!(
            files_in(&snaps)?,
            Vec::<PathBuf>::new(),
            "files left behind"
        );
        Ok(())
    }

    /// P4: a snapshot is one consistent view: what is written after it was opened
    /// is not in it, though the stream is read afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_live_snapshot_is_the_catalog_as_of_its_opening() -> io::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let (src, dst, snaps) = pair(dir.path())?;
        for i in 0..500u32 {
            put(&src, &[(format!("k{i:05}").as_bytes(), b"before")])?;
        }
        let before = catalog(&src)?;
        let (_, stream) = open_live(src.clone(), 128).await?;
        for i in 0..500u32 {
            put(&src, &[(format!("k{i:05}").as_bytes(), b"after")])?;
        }
        put(&src, &[(b"k99999", b"new")])?;
        let (d, into) = (dst.clone(), snaps.clone());
        let got = tokio::task::spawn_blocking(move || {
            receive(&d, stream.into_reader(), &into, "test".into())
        })
        .await
        .map_err(io::Error::other)??;
        install(&dst, &got, &snaps)?;
        assert_eq!(catalog(&dst)?, before);
        Ok(())
    }

    /// P4: a snapshot damaged in transit (one flipped byte, or cut short) is refused
    /// before it takes effect, the old catalog stays as it was and no file is left.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_snapshot_leaves_the_old_catalog_intact() -> io::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let (src, dst, snaps) = pair(dir.path())?;
        for i in 0..500u32 {
            put(&src, &[(format!("k{i:05}").as_bytes(), &[7u8; 40])])?;
        }
        put(&dst, &[(b"mine", b"kept")])?;
        let bytes = stream_bytes(&src, 1024).await?;
        let before = catalog(&dst)?;
        let mut flipped = bytes.clone();
        flipped[bytes.len() / 2] ^= 0x40;
        let cut = bytes[..bytes.len() - 100].to_vec();
        let mut longer = bytes.clone();
        longer.push(0);
        for bad in [flipped, cut, longer] {
            assert!(receive(&dst, bad.as_slice(), &snaps, "test".into()).is_err());
            assert_eq!(catalog(&dst)?, before);
            assert_eq!(
                files_in(&snaps)?,
                Vec::<PathBuf>::new(),
                "files left behind"
            );
            assert!(!recover(&dst, &snaps)?, "no marker was set");
        }
        Ok(())
    }

    /// P4: a crash after the install marker leaves a node that finishes the install
    /// at its next open: catalog and applied id move together.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_interrupted_install_is_finished_at_recovery() -> io::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let (src, dst, snaps) = pair(dir.path())?;
        for i in 0..300u32 {
            put(&src, &[(format!("k{i:05}").as_bytes(), b"v")])?;
        }
        let bytes = stream_bytes(&src, 512).await?;
        let got = receive(&dst, bytes.as_slice(), &snaps, "test".into())?;
        // What install does up to the marker, then stop as a crash would; the
        // received file itself is gone (a start removes leftovers), the link stays.
        let keeps = mark(&dst, &got, &snaps)?;
        ReceivedSnapshot::remove_files(&got.ssts);
        assert!(recover(&dst, &snaps)?);
        assert_eq!(catalog(&dst)?, catalog(&src)?);
        assert!(
            keeps.iter().all(|k| !k.exists()),
            "a kept link outlived the install"
        );
        assert!(!recover(&dst, &snaps)?, "marker cleared");
        Ok(())
    }

    /// P4 and issue 21 item 4: a catalog split over its four families streams as
    /// one key-ordered stream and installs with every key in its own family; what
    /// the target held in any family and the snapshot lacks is gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_installs_each_key_into_its_own_family() -> io::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let (src, dst, snaps) = pair(dir.path())?;
        let pairs = mixed(300);
        for (k, v) in &pairs {
            put(&src, &[(k, v)])?;
        }
        put(
            &dst,
            &[
                (b"record/stale", b"x"),
                (b"idx/s/stale", b"x"),
                (b"audit/stale", b"x"),
                (b"grant/stale", b"x"),
            ],
        )?;
        let bytes = stream_bytes(&src, 1024).await?;
        let mut reader = SnapshotReader::from_reader(bytes.as_slice(), "test".into())?;
        let mut streamed = Vec::new();
        while let Some(chunk) = reader.next_chunk()? {
            streamed.extend(chunk);
        }
        assert_eq!(streamed, pairs, "the stream is the catalog in key order");
        let got = receive(&dst, bytes.as_slice(), &snaps, "test".into())?;
        install(&dst, &got, &snaps)?;
        assert_eq!(catalog(&dst)?, pairs);
        for family in CATALOG_CFS {
            let keys = family_keys(&dst, family)?;
            assert!(!keys.is_empty(), "{family} is empty");
            for k in keys {
                assert_eq!(
                    family_of(&k),
                    family,
                    "{} in {family}",
                    String::from_utf8_lossy(&k)
                );
            }
        }
        assert_eq!(catalog_digest(&dst)?, catalog_digest(&src)?);
        Ok(())
    }

    /// Issue 21 item 4: a database of an older version (the whole catalog in
    /// `catalog`) is split at open: every key moves to its family, the catalog and
    /// its digest are unchanged, and the split runs once.
    #[test]
    fn an_unsplit_catalog_is_split_once_and_unchanged() -> io::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let db = db(dir.path());
        let pairs = mixed(5_000);
        let catalog_cf = cf(&db, CF_CATALOG)?;
        for (k, v) in &pairs {
            db.put_cf(catalog_cf, k, v).map_err(io::Error::other)?;
        }
        db.delete_cf(cf(&db, CF_SM_META)?, b"catalog_split")
            .map_err(io::Error::other)?;
        let before = catalog_digest(&db)?;
        let moved = super::super::catalog::split_families(&db)?;
        // Every key but the grants (5,000 of each of six prefixes).
        assert_eq!(moved, 25_000);
        assert_eq!(catalog(&db)?, pairs);
        assert_eq!(catalog_digest(&db)?, before);
        assert_eq!(
            family_keys(&db, CF_CATALOG)?.len(),
            5_000,
            "only grants stay"
        );
        assert_eq!(
            super::super::catalog::split_families(&db)?,
            0,
            "split twice"
        );
        drop(db);
        // Reopened: nothing moves again, the catalog reads the same.
        let db = self::db(dir.path());
        assert_eq!(catalog(&db)?, pairs);
        Ok(())
    }

    /// P4 across an upgrade: an install an older version left half done (its marker
    /// names one SST file of the whole catalog) is finished by this version with the
    /// catalog split: exactly the snapshot's pairs, each in its family, nothing of
    /// the old catalog left in any family.
    #[test]
    fn an_older_versions_interrupted_install_is_finished_split() -> io::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let (_, dst, snaps) = pair(dir.path())?;
        put(
            &dst,
            &[(b"record/old", b"x"), (b"idx/s/old", b"x"), (b"zzz", b"x")],
        )?;
        let pairs = mixed(200);
        let keep = snaps.join("installing-00000000000000000007.keep");
        let opts = crate::store::sst_writer_options();
        let mut w = rocksdb::SstFileWriter::create(&opts);
        w.open(&keep).map_err(io::Error::other)?;
        for (k, v) in &pairs {
            w.put(k, v).map_err(io::Error::other)?;
        }
        w.delete_range(b"".as_slice(), b"\xff\xff\xff\xff\x00".as_slice())
            .map_err(io::Error::other)?;
        w.finish().map_err(io::Error::other)?;
        let marker = UnsplitInstallMarker {
            keep: keep.to_string_lossy().into_owned(),
            meta: SnapshotMetaOf::<TypeConfig>::default(),
        };
        dst.put_cf(
            cf(&dst, CF_SM_META)?,
            KEY_INSTALLING_UNSPLIT,
            encode(&marker)?,
        )
        .map_err(io::Error::other)?;
        assert!(recover(&dst, &snaps)?);
        assert_eq!(catalog(&dst)?, pairs);
        for family in CATALOG_CFS {
            for k in family_keys(&dst, family)? {
                assert_eq!(family_of(&k), family);
            }
        }
        assert!(!keep.exists(), "the kept file outlived the install");
        assert!(!recover(&dst, &snaps)?, "marker cleared");
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
