//! Records of any size as streams (issue 24.3): [`Client::put_stream`] takes an
//! `AsyncRead`, [`Client::get_stream`] gives one ([`RecordReader`]).
//!
//! A record longer than one segment ([`SEGMENT_BYTES`], or the cluster's
//! `max_record_bytes` if smaller) is stored as segments: the first under the
//! record's id with its metadata (the parent), the others as parts with their own
//! ids and [`segment_meta`]. Each segment is sealed on its own
//! ([`seal::Binding::Segment`]: record, index, last), split and staged like a
//! record; one [`Request::CommitSegmented`] then makes all of them visible at once.
//! A put holds at most two segments (one staging while the next is read and
//! sealed) and a get two (one being read by the caller while the next is fetched),
//! whatever the record's size. A put that stops half-way leaves staged shares that
//! expire like any uncommitted share; nothing of it is visible.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::stream::{self, Stream, StreamExt};
use kakera_proto::catalog::{
    MAX_RECORD_BYTES, MAX_SEGMENT_PAGE, MAX_SEGMENTS, RecordEntry, SEGMENT_BYTES, Ticket,
    segment_meta,
};
use kakera_proto::record::RecordKind;
use kakera_proto::{Digest, RecordId, RecordMeta, Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use zeroize::Zeroizing;

use crate::client::{
    Client, NewRecord, Prepared, Protection, ReadBatch, STAGE_RETRY_MS, prepare_segment, unexpected,
};
use crate::error::ClientError;
use crate::seal;

/// Segments a streamed put or get works on at once (one in the network, one being
/// read, sealed or consumed).
const SEGMENTS_IN_FLIGHT: usize = 2;

/// The opened segments of a record, in order, fetched ahead.
type Segments<'c> =
    Pin<Box<dyn Stream<Item = Result<Zeroizing<Vec<u8>>, ClientError>> + Send + 'c>>;

/// A record being read as a stream, a segment at a time; see the module docs.
/// Reading it fails with an [`io::Error`] wrapping the [`ClientError`] of the
/// segment that could not be read.
pub struct RecordReader<'c> {
    id: RecordId,
    meta: RecordMeta,
    segments: u32,
    ticket: u64,
    stream: Segments<'c>,
    current: Zeroizing<Vec<u8>>,
    pos: usize,
}

impl RecordReader<'_> {
    /// The record.
    pub fn id(&self) -> RecordId {
        self.id
    }
    /// Its metadata.
    pub fn meta(&self) -> &RecordMeta {
        &self.meta
    }
    /// How many segments it is stored as (1: kept whole).
    pub fn segments(&self) -> u32 {
        self.segments
    }
    /// The read ticket (its audit entry).
    pub fn ticket(&self) -> u64 {
        self.ticket
    }
}

impl std::fmt::Debug for RecordReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the bytes.
        write!(
            f,
            "RecordReader {{ id: {}, segments: {} }}",
            self.id, self.segments
        )
    }
}

impl AsyncRead for RecordReader<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Bounded: each turn either returns or takes the next segment; a segment
        // of zero bytes exists only as the last (an empty record).
        loop {
            if this.pos < this.current.len() {
                let n = buf.remaining().min(this.current.len() - this.pos);
                buf.put_slice(&this.current[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            match this.stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    // The segment read before is wiped as it is replaced.
                    this.current = data;
                    this.pos = 0;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io::Error::other(e))),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A holder and its share of one segment, as a staging request sends it.
type HolderShare = (u64, [(RecordId, Vec<u8>); 1]);

/// Where a streamed put's reading stands.
struct Source<R> {
    reader: R,
    /// The byte read ahead to learn that the segment before it was not the last.
    ahead: Option<u8>,
    index: u32,
    done: bool,
}

/// Reads up to `len` bytes (fewer only at the end of `reader`) after `start`.
async fn fill<R: AsyncRead + Unpin>(
    reader: &mut R,
    start: Option<u8>,
    len: usize,
) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len);
    buf.extend(start);
    // Bounded: each turn adds at least one byte or ends.
    while buf.len() < len {
        let n = (&mut *reader)
            .take((len - buf.len()) as u64)
            .read_to_end(&mut buf)
            .await?;
        if n == 0 {
            break;
        }
    }
    Ok(buf)
}

impl Client {
    /// The plaintext bytes of one segment on this cluster.
    pub fn segment_bytes(&self) -> u64 {
        SEGMENT_BYTES.min(self.config().limits.max_record_bytes.min(MAX_RECORD_BYTES))
    }

    /// Stores a record read from `reader`, of any size up to [`MAX_SEGMENTS`]
    /// segments; returns its id once it is committed. One segment or less is put
    /// whole; more is stored as segments (see the module docs).
    pub async fn put_stream<R: AsyncRead + Unpin + Send>(
        &self,
        meta: RecordMeta,
        reader: R,
    ) -> Result<RecordId, ClientError> {
        self.put_stream_with_id(Client::new_record_id()?, meta, reader)
            .await
    }

    /// Like [`Client::put_stream`] under an id the caller drew
    /// ([`Client::new_record_id`], or one derived from the content for idempotent
    /// ingest). A put that failed may be tried again with the same id: what it had
    /// staged expires.
    pub async fn put_stream_with_id<R: AsyncRead + Unpin + Send>(
        &self,
        id: RecordId,
        meta: RecordMeta,
        reader: R,
    ) -> Result<RecordId, ClientError> {
        let zone = self.zone_public_key()?;
        self.put_stream_protected(id, meta, reader, Protection::Shared(zone))
            .await
    }

    /// The benchmark baseline's [`Client::put_stream_with_id`]: segments as plain
    /// replicas (see [`Client::put_plain_replicas`]).
    #[cfg(feature = "bench-baseline")]
    pub async fn put_stream_plain_replicas<R: AsyncRead + Unpin + Send>(
        &self,
        id: RecordId,
        meta: RecordMeta,
        reader: R,
    ) -> Result<RecordId, ClientError> {
        self.plain_replicas_taken()?;
        self.put_stream_protected(id, meta, reader, Protection::Plain)
            .await
    }

    async fn put_stream_protected<R: AsyncRead + Unpin + Send>(
        &self,
        id: RecordId,
        meta: RecordMeta,
        mut reader: R,
        protection: Protection,
    ) -> Result<RecordId, ClientError> {
        meta.validate()?;
        if meta.kind == RecordKind::Segment {
            return Err(ClientError::Invalid(
                "'segment' is the kind of a record's parts; give the record's own kind".into(),
            ));
        }
        let segment_bytes = usize::try_from(self.segment_bytes())
            .map_err(|_| ClientError::Invalid("segment size beyond memory".into()))?;
        let first = fill(&mut reader, None, segment_bytes + 1)
            .await
            .map_err(ClientError::Source)?;
        if first.len() <= segment_bytes {
            let record = NewRecord { meta, data: first };
            let mut ids = self.put_protected(vec![(id, record)], protection).await?;
            return ids
                .pop()
                .ok_or_else(|| ClientError::Invalid("the put returned no id".into()));
        }
        // The first segment, then the byte read after it.
        let mut first = first;
        let ahead = first.pop();
        // One commit holds every segment: at most a request's records.
        let max_segments = self.batch_records().min(MAX_SEGMENTS);
        let config = self.config().clone();
        let accepting = self.accepting_nodes().await;
        // Holders that stopped answering during this put: later segments avoid them.
        let failed: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());
        let started = Instant::now();
        let source = Source {
            reader,
            ahead,
            index: 1,
            done: false,
        };
        let rest = stream::unfold(source, move |mut src| async move {
            if src.done {
                return None;
            }
            let item = next_segment(&mut src, segment_bytes, max_segments).await;
            if item.is_err() {
                src.done = true;
            }
            Some((item, src))
        });
        let segments = stream::once(async move { Ok((0u32, first, false)) }).chain(rest);
        let part_meta = segment_meta(&meta);
        let staged = segments
            .map(|item| {
                let down = failed.lock().map(|f| f.clone()).unwrap_or_default();
                let accepting: Vec<u64> = accepting
                    .iter()
                    .copied()
                    .filter(|n| !down.contains(n))
                    .collect();
                let (config, protection) = (config.clone(), protection.clone());
                let failed = &failed;
                let (meta, part_meta) = (meta.clone(), part_meta.clone());
                async move {
                    let (index, data, last) = item?;
                    let segment_id = if index == 0 {
                        id
                    } else {
                        Client::new_record_id()?
                    };
                    let entry_meta = if index == 0 { meta.clone() } else { part_meta };
                    let binding = seal::Binding::Segment {
                        parent: id,
                        index,
                        last,
                    };
                    let placeable = accepting.clone();
                    let prepared = tokio::task::spawn_blocking(move || {
                        prepare_segment(
                            &config,
                            &placeable,
                            &protection,
                            segment_id,
                            &meta,
                            entry_meta,
                            binding,
                            data,
                        )
                    })
                    .await
                    .map_err(|e| ClientError::Invalid(format!("sealing task failed: {e}")))??;
                    // A put too slow to commit in time stops here, not at the end.
                    self.commit_by(started)?;
                    self.stage_segment(prepared, &accepting, failed).await
                }
            })
            .buffered(SEGMENTS_IN_FLIGHT);
        futures::pin_mut!(staged);
        let mut entries = Vec::new();
        // Bounded by MAX_SEGMENTS (next_segment refuses more).
        while let Some(entry) = staged.next().await {
            entries.push(entry?);
        }
        let commit_by = self.commit_by(started)?;
        match self
            .leader_call_until(Request::CommitSegmented { records: entries }, commit_by)
            .await?
        {
            Response::Committed { .. } => Ok(id),
            other => Err(unexpected(&other)),
        }
    }

    /// Stages one segment's shares, each on its node; a holder that does not answer
    /// within the staging retry window is recorded in `failed` and its share (same
    /// x, same digest) goes to another of `accepting` that keeps the rack rule.
    /// Returns the segment's entry with the holders that have its shares.
    async fn stage_segment(
        &self,
        prepared: Prepared,
        accepting: &[u64],
        failed: &Mutex<BTreeSet<u64>>,
    ) -> Result<RecordEntry, ClientError> {
        let Prepared { mut entry, shares } = prepared;
        let id = entry.id;
        let rules = self.config().policy_for(entry.k).ok_or_else(|| {
            ClientError::Invalid(format!("no placement policy for threshold {}", entry.k))
        })?;
        let retry_ms = STAGE_RETRY_MS.min(self.config().staging.ttl_ms / 4);
        let mut pending: Vec<HolderShare> = shares
            .into_iter()
            .map(|(node, bytes)| (node, [(id, bytes)]))
            .collect();
        let mut tried: BTreeSet<u64> = pending.iter().map(|(n, _)| *n).collect();
        // Bounded: a round either ends the loop or moves each failed share to a node
        // not tried before for this segment.
        loop {
            let expected: BTreeMap<(u64, RecordId), Digest> = entry
                .holders
                .iter()
                .map(|h| ((h.node, id), h.digest))
                .collect();
            let until = Instant::now() + Duration::from_millis(retry_ms);
            let results = futures::future::join_all(
                pending
                    .iter()
                    .map(|(node, share)| self.stage_on_retrying(*node, share, &expected, until)),
            )
            .await;
            let mut again = Vec::new();
            for ((node, share), result) in pending.into_iter().zip(results) {
                match result {
                    Ok(()) => {}
                    Err(ClientError::Net(e)) if e.is_transient() => {
                        tracing::warn!(record = %id, node, error = %e, "staging: holder gone; placing its share elsewhere");
                        if let Ok(mut f) = failed.lock() {
                            f.insert(node);
                        }
                        let holders: Vec<u64> = entry.holders.iter().map(|h| h.node).collect();
                        let replacement = accepting.iter().copied().find(|c| {
                            !tried.contains(c) && {
                                let moved: Vec<u64> = holders
                                    .iter()
                                    .map(|h| if *h == node { *c } else { *h })
                                    .collect();
                                kakera_config::check_holders(&moved, &self.config().nodes, &rules)
                                    .is_ok()
                            }
                        });
                        let Some(to) = replacement else {
                            return Err(ClientError::Unavailable(format!(
                                "record {id}: node {node} stopped answering and no other node \
                                 can take its share under the rack rule ({e}); nothing was \
                                 committed, put the record again"
                            )));
                        };
                        tried.insert(to);
                        for h in entry.holders.iter_mut().filter(|h| h.node == node) {
                            h.node = to;
                        }
                        again.push((to, share));
                    }
                    Err(e) => return Err(e),
                }
            }
            if again.is_empty() {
                return Ok(entry);
            }
            pending = again;
        }
    }

    /// Reads record `id` under `job`'s grant as a stream (see the module docs): the
    /// read ticket is opened now; segments are fetched, checked and opened as the
    /// reader is read, the next one while the caller reads the current. A record
    /// kept whole reads the same way, in one segment.
    pub async fn get_stream(
        &self,
        job: &str,
        id: RecordId,
    ) -> Result<RecordReader<'_>, ClientError> {
        let answer = self
            .leader_call(Request::OpenRead {
                job: job.to_string(),
                records: vec![id],
            })
            .await?;
        let Response::ReadTicket {
            ticket,
            mut entries,
        } = answer
        else {
            return Err(unexpected(&answer));
        };
        let first = entries.pop().filter(|e| e.id == id).ok_or_else(|| {
            ClientError::Invalid(format!(
                "the ticket for record {id} carries no entry for it"
            ))
        })?;
        let (count, parts) = self.segment_page(ticket.id, id, 1).await?;
        let meta = first.meta.clone();
        let ticket_id = ticket.id;
        let pages = Pages {
            first: Some(first),
            page: parts.into(),
            next: 0,
            count,
        };
        let entries = stream::unfold(pages, move |mut p| async move {
            if p.next >= p.count {
                return None;
            }
            let index = p.next;
            p.next += 1;
            let item = if index == 0 {
                p.first
                    .take()
                    .ok_or_else(|| ClientError::Invalid("the first segment was read twice".into()))
            } else {
                if p.page.is_empty() {
                    match self.segment_page(ticket_id, id, index).await {
                        Ok((_, more)) => p.page = more.into(),
                        Err(e) => {
                            p.next = p.count;
                            return Some((Err(e), p));
                        }
                    }
                }
                p.page.pop_front().ok_or_else(|| {
                    ClientError::Invalid(format!(
                        "record {id}: the cluster did not list part {index}"
                    ))
                })
            };
            Some((item.map(|e| (index, e)), p))
        });
        let record_meta = meta.clone();
        let stream = entries
            .map(move |item| {
                let (ticket, meta) = (ticket.clone(), record_meta.clone());
                async move {
                    let (index, entry) = item?;
                    self.read_segment(&ticket, id, &meta, index, count, entry)
                        .await
                }
            })
            .buffered(SEGMENTS_IN_FLIGHT);
        Ok(RecordReader {
            id,
            meta,
            segments: count,
            ticket: ticket_id,
            stream: Box::pin(stream),
            current: Zeroizing::new(Vec::new()),
            pos: 0,
        })
    }

    /// The segment count of `record` and the entries of its parts from `from`, under
    /// `ticket`.
    async fn segment_page(
        &self,
        ticket: u64,
        record: RecordId,
        from: u32,
    ) -> Result<(u32, Vec<RecordEntry>), ClientError> {
        let answer = self
            .leader_call(Request::Segments {
                ticket,
                record,
                from,
                limit: MAX_SEGMENT_PAGE as u32,
            })
            .await?;
        let Response::Segments { count, entries } = answer else {
            return Err(unexpected(&answer));
        };
        if count == 0 || count as usize > MAX_SEGMENTS || entries.len() > MAX_SEGMENT_PAGE {
            return Err(ClientError::Invalid(format!(
                "the cluster answered {count} segments and {} parts for record {record}",
                entries.len()
            )));
        }
        Ok((count, entries))
    }

    /// Fetches, checks and opens segment `index` of `count` of record `id`.
    async fn read_segment(
        &self,
        ticket: &Ticket,
        id: RecordId,
        meta: &RecordMeta,
        index: u32,
        count: u32,
        entry: RecordEntry,
    ) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        let binding = if count == 1 {
            seal::Binding::Whole
        } else {
            seal::Binding::Segment {
                parent: id,
                index,
                last: index + 1 == count,
            }
        };
        let mut opener = self.opener()?;
        let mut out = ReadBatch::default();
        self.read_under(
            &mut opener,
            ticket,
            vec![entry],
            Some((binding, meta)),
            &mut out,
        )
        .await;
        for bad in &out.bad_shares {
            tracing::warn!(record = %bad.record, node = bad.node, reason = %bad.reason, "bad share skipped");
        }
        if let Some(failed) = out.failed.pop() {
            return Err(failed.into());
        }
        out.records.pop().map(|r| r.data).ok_or_else(|| {
            ClientError::Invalid(format!("record {id}: segment {index} was not returned"))
        })
    }
}

/// Where a streamed get's listing of segments stands.
struct Pages {
    /// The first segment's entry, until it is read.
    first: Option<RecordEntry>,
    /// Parts listed and not read yet (at most one page).
    page: VecDeque<RecordEntry>,
    /// The next segment's index.
    next: u32,
    /// The record's segments.
    count: u32,
}

/// The next segment of a streamed put after the first: its index, bytes and whether
/// it is the last.
async fn next_segment<R: AsyncRead + Unpin>(
    src: &mut Source<R>,
    segment_bytes: usize,
    max_segments: usize,
) -> Result<(u32, Vec<u8>, bool), ClientError> {
    let data = fill(&mut src.reader, src.ahead.take(), segment_bytes)
        .await
        .map_err(ClientError::Source)?;
    let mut one = [0u8; 1];
    let last = src
        .reader
        .read(&mut one)
        .await
        .map_err(ClientError::Source)?
        == 0;
    if !last {
        src.ahead = Some(one[0]);
    }
    let index = src.index;
    src.index += 1;
    src.done = last;
    if !last && src.index as usize >= max_segments {
        return Err(ClientError::Invalid(format!(
            "a record is at most {max_segments} segments of {segment_bytes} bytes on this \
             cluster (max_batch_records and max_record_bytes in [limits]); nothing was \
             committed"
        )));
    }
    Ok((index, data, last))
}
