//! The catalog's key layout, the column families it is split over, and its reads.
//! Writes happen only in the state machine's apply (`super::state_machine`). Every
//! value is codec-encoded (format-version byte first).
//!
//! | key | value | family |
//! |-----|-------|--------|
//! | `record/<id 16>` | [`RecordEntry`] | `catalog_records` |
//! | `idx/s/<subject 32><id 16>` | empty: records by subject | `catalog_index` |
//! | `idx/k/<kind 1><id 16>` | empty: records by kind | `catalog_index` |
//! | `idx/f/<len 1><source><id 16>` | empty: records by source facility | `catalog_index` |
//! | `grant/<job>` | [`Grant`] | `catalog` |
//! | `ticket/<log index, BE 8>` | [`Ticket`] | `catalog` |
//! | `audit/<seq, BE 8>` | [`AuditEntry`] | `catalog_audit` |
//! | `audit_head` | [`AuditHead`] | `catalog` |
//! | `aidx/r/<id 16><seq BE 8>` | empty: audit entries by record | `catalog_index` |
//! | `aidx/j/<len 1><job><seq BE 8>` | empty: audit entries by job | `catalog_index` |
//! | `tomb/<id 16>` | [`Tombstone`]: an erased record (nothing else of it remains) | `catalog` |
//! | `tidx/s/<subject 32><id 16>` | empty: records erased by the subject's opt-out | `catalog_index` |
//! | `optout/<subject 32>` | [`OptOut`]: the subject's records are refused | `catalog` |
//! | `crl/<issuer 32>` | a CRL (DER bytes) of one CA, the newest recorded | `catalog` |
//! | `revoked/<fingerprint 32>` | [`super::state_machine::RevokedHolder`] | `catalog` |
//! | `seg/<parent 16>` | `u32`: segments of a record stored as segments | `catalog` |
//! | `seg/<parent 16><index BE 4>` | [`RecordId`]: its part `index` (from 1) | `catalog` |
//! | `segof/<part 16>` | `(RecordId, u32)`: a part's parent and index | `catalog` |
//!
//! The family is a function of the key's prefix alone ([`family_of`]), so the
//! catalog is still one sorted key space: a walk over all of it merges the four
//! families in key order ([`walk`]) and a snapshot stream of it is the same
//! whatever the layout of the node that sent it. Why split: record entries and
//! audit entries arrive in key order, index keys at random; in one family every
//! flushed file overlapped every file of the level below and each compaction
//! rewrote old record entries (4.0x write amplification at 10^7 records).

use std::io;

use kakera_proto::audit::{AuditEntry, AuditQuery, MAX_AUDIT_PAGE};
use kakera_proto::catalog::{
    Grant, ListFilter, MAX_LIST_PAGE, NodeRecord, OptOut, RecordEntry, RecordState, RepairTask,
    Ticket, Tombstone,
};
use kakera_proto::record::{RecordId, SubjectTag};
use rocksdb::{ColumnFamily, DB, DBPinnableSlice, Direction, IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use super::log_store::decode;
use super::state_machine::StateMachine;
use crate::store::{CATALOG_CFS, CF_CATALOG, CF_SM_META, cf};

/// Most index or audit keys one query looks at before it answers with a cursor.
pub const MAX_SCAN_KEYS: usize = 100_000;
/// Most grants one grant-list page looks at (a reader's page may hold fewer).
pub const MAX_GRANT_SCAN: usize = 5_000;

/// The newest audit entry's position, hash and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AuditHead {
    /// Its sequence number (0: empty log).
    pub seq: u64,
    /// Its hash (zeros: empty log).
    pub hash: [u8; 32],
    /// Its time.
    pub at_ms: u64,
}

/// Key builders.
pub mod keys {
    use kakera_proto::record::{RecordId, RecordKind, RecordMeta, SubjectTag};

    /// The audit head.
    pub const AUDIT_HEAD: &[u8] = b"audit_head";
    /// Prefix of record entries.
    pub const RECORD: &[u8] = b"record/";
    /// Prefix of grants.
    pub const GRANT: &[u8] = b"grant/";
    /// Prefix of tickets.
    pub const TICKET: &[u8] = b"ticket/";
    /// Prefix of the ticket expiry index (`texp/<expiry ms><ticket id>`, both
    /// big-endian, empty values): collecting expired tickets reads keys in expiry
    /// order and decodes no ticket.
    pub const TICKET_EXPIRY: &[u8] = b"texp/";
    /// Prefix of audit entries.
    pub const AUDIT: &[u8] = b"audit/";
    /// Prefix of node modes.
    pub const NODE_MODE: &[u8] = b"nodemode/";
    /// Prefix of pending repairs (one per record).
    pub const REPAIR: &[u8] = b"repair/";
    /// Prefix of tombstones.
    pub const TOMB: &[u8] = b"tomb/";
    /// Prefix of opt-outs.
    pub const OPTOUT: &[u8] = b"optout/";

    /// Prefix of certificate revocation lists, one per issuing CA.
    pub const CRL: &[u8] = b"crl/";
    /// Prefix of certificates revoked with their bytes.
    pub const REVOKED: &[u8] = b"revoked/";

    /// The CRL of one CA.
    pub fn crl(issuer: &kakera_proto::revocation::IssuerKey) -> Vec<u8> {
        cat(&[CRL, &issuer.0])
    }
    /// A certificate revoked with its bytes.
    pub fn revoked(fingerprint: &kakera_proto::Fingerprint) -> Vec<u8> {
        cat(&[REVOKED, &fingerprint.0])
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// A record entry.
    pub fn record(id: &RecordId) -> Vec<u8> {
        cat(&[RECORD, &id.0])
    }
    /// A segmented record's segment count; with an index after it, its parts.
    pub fn segments(parent: &RecordId) -> Vec<u8> {
        cat(&[b"seg/", &parent.0])
    }
    /// Part `index` (from 1) of a segmented record.
    pub fn segment(parent: &RecordId, index: u32) -> Vec<u8> {
        cat(&[b"seg/", &parent.0, &index.to_be_bytes()])
    }
    /// A part's parent and index.
    pub fn segment_of(part: &RecordId) -> Vec<u8> {
        cat(&[b"segof/", &part.0])
    }
    /// Prefix of the subject index for one subject.
    pub fn by_subject(tag: &SubjectTag) -> Vec<u8> {
        cat(&[b"idx/s/", &tag.0])
    }
    /// Prefix of the kind index for one kind.
    pub fn by_kind(kind: RecordKind) -> Vec<u8> {
        cat(&[b"idx/k/", &[kind_byte(kind)]])
    }
    /// Prefix of the source index for one source (at most 64 bytes, validated).
    pub fn by_source(source: &str) -> Vec<u8> {
        cat(&[b"idx/f/", &[source.len() as u8], source.as_bytes()])
    }
    /// An erased record's tombstone.
    pub fn tomb(id: &RecordId) -> Vec<u8> {
        cat(&[TOMB, &id.0])
    }
    /// Prefix of the tombstones erased by one subject's opt-out.
    pub fn tombs_of_subject(tag: &SubjectTag) -> Vec<u8> {
        cat(&[b"tidx/s/", &tag.0])
    }
    /// A subject's opt-out.
    pub fn optout(tag: &SubjectTag) -> Vec<u8> {
        cat(&[OPTOUT, &tag.0])
    }
    /// The subject, kind and source index keys of a committed record: written with
    /// its entry, deleted with it.
    pub fn indexes(id: &RecordId, meta: &RecordMeta) -> [Vec<u8>; 3] {
        [
            by_subject(&meta.subject),
            by_kind(meta.kind),
            by_source(&meta.source),
        ]
        .map(|prefix| cat(&[&prefix, &id.0]))
    }
    /// A grant.
    pub fn grant(job: &str) -> Vec<u8> {
        cat(&[GRANT, job.as_bytes()])
    }
    /// A node's mode.
    pub fn node_mode(node: u64) -> Vec<u8> {
        cat(&[NODE_MODE, &node.to_be_bytes()])
    }
    /// A record's pending repair.
    pub fn repair(id: &RecordId) -> Vec<u8> {
        cat(&[REPAIR, &id.0])
    }
    /// A ticket.
    pub fn ticket(id: u64) -> Vec<u8> {
        cat(&[TICKET, &id.to_be_bytes()])
    }
    /// A ticket's entry in the expiry index.
    pub fn ticket_expiry(expires_at_ms: u64, id: u64) -> Vec<u8> {
        cat(&[
            TICKET_EXPIRY,
            &expires_at_ms.to_be_bytes(),
            &id.to_be_bytes(),
        ])
    }
    /// The expiry time and ticket id of an expiry index key; `None` for any other key.
    pub fn parse_ticket_expiry(key: &[u8]) -> Option<(u64, u64)> {
        let rest = key.strip_prefix(TICKET_EXPIRY)?;
        let (ms, id) = rest.split_first_chunk::<8>()?;
        let id: [u8; 8] = id.try_into().ok()?;
        Some((u64::from_be_bytes(*ms), u64::from_be_bytes(id)))
    }
    /// An audit entry.
    pub fn audit(seq: u64) -> Vec<u8> {
        cat(&[AUDIT, &seq.to_be_bytes()])
    }
    /// Prefix of the audit index for one record.
    pub fn audit_by_record(id: &RecordId) -> Vec<u8> {
        cat(&[b"aidx/r/", &id.0])
    }
    /// Prefix of the audit index for one job (at most 128 bytes, validated).
    pub fn audit_by_job(job: &str) -> Vec<u8> {
        cat(&[b"aidx/j/", &[job.len().min(255) as u8], job.as_bytes()])
    }

    /// The stable byte of a kind in index keys.
    pub fn kind_byte(kind: RecordKind) -> u8 {
        match kind {
            RecordKind::Ssmix2 => 1,
            RecordKind::Claim => 2,
            RecordKind::Checkup => 3,
            RecordKind::LongTermCare => 4,
            RecordKind::Death => 5,
            RecordKind::Fhir => 6,
            RecordKind::Image => 7,
            RecordKind::File => 8,
            RecordKind::Segment => 9,
        }
    }
}

/// Prefixes of the keys [`crate::store::CF_CATALOG_INDEX`] holds.
const INDEX_PREFIXES: [&[u8]; 3] = [b"idx/", b"aidx/", b"tidx/"];

/// The catalog family that holds `key` (the table in the module docs). A prefix
/// scan names its family by its prefix, which is at least as long as these.
pub fn family_of(key: &[u8]) -> &'static str {
    CATALOG_CFS[family_index(key)]
}

/// The position in [`CATALOG_CFS`] of the family holding `key`.
fn family_index(key: &[u8]) -> usize {
    const _: () = assert!(
        matches!(CATALOG_CFS[1].as_bytes(), b"catalog_records")
            && matches!(CATALOG_CFS[2].as_bytes(), b"catalog_audit")
            && matches!(CATALOG_CFS[3].as_bytes(), b"catalog_index")
    );
    if key.starts_with(keys::RECORD) {
        1
    } else if key.starts_with(keys::AUDIT) {
        2
    } else if INDEX_PREFIXES.iter().any(|p| key.starts_with(p)) {
        3
    } else {
        0
    }
}

/// Where [`family_of`] sends keys out of [`CF_CATALOG`], as ranges (start inclusive,
/// end exclusive: the prefix with its last byte, `/`, raised by one).
fn split_ranges() -> Vec<(&'static [u8], Vec<u8>)> {
    [keys::RECORD, keys::AUDIT]
        .into_iter()
        .chain(INDEX_PREFIXES)
        .map(|p| {
            let mut end = p.to_vec();
            if let Some(last) = end.last_mut() {
                *last += 1;
            }
            (p, end)
        })
        .collect()
}

/// The catalog's column families of one database, with writes and reads routed by
/// key ([`family_of`]).
#[derive(Clone, Copy)]
pub struct Families<'a> {
    db: &'a DB,
    handles: [&'a ColumnFamily; 4],
}

impl<'a> Families<'a> {
    /// The families of `db`; an error if one is missing (a node database always has
    /// all four: [`crate::store::open`] creates them).
    pub fn of(db: &'a DB) -> io::Result<Families<'a>> {
        Ok(Families {
            db,
            handles: [
                cf(db, CATALOG_CFS[0])?,
                cf(db, CATALOG_CFS[1])?,
                cf(db, CATALOG_CFS[2])?,
                cf(db, CATALOG_CFS[3])?,
            ],
        })
    }

    /// The family holding `key`.
    pub fn holding(&self, key: &[u8]) -> &'a ColumnFamily {
        self.handles[family_index(key)]
    }

    /// Puts `key` in its family, in `batch`.
    pub fn put(&self, batch: &mut WriteBatch, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let key = key.as_ref();
        batch.put_cf(self.holding(key), key, value);
    }

    /// Deletes `key` from its family, in `batch`.
    pub fn delete(&self, batch: &mut WriteBatch, key: impl AsRef<[u8]>) {
        let key = key.as_ref();
        batch.delete_cf(self.holding(key), key);
    }

    /// Reads `key` from its family.
    pub fn get(&self, key: impl AsRef<[u8]>) -> io::Result<Option<DBPinnableSlice<'a>>> {
        let key = key.as_ref();
        self.db
            .get_pinned_cf(self.holding(key), key)
            .map_err(io::Error::other)
    }

    /// An iterator from `from` forward in the family holding keys that begin with
    /// `from` (the caller stops at the end of its prefix).
    pub fn iter_from(
        &self,
        from: &[u8],
        opts: rocksdb::ReadOptions,
    ) -> rocksdb::DBIteratorWithThreadMode<'a, DB> {
        self.db.iterator_cf_opt(
            self.holding(from),
            opts,
            IteratorMode::From(from, Direction::Forward),
        )
    }

    /// The catalog's last key in key order, if any.
    pub fn last_key(&self) -> io::Result<Option<Vec<u8>>> {
        let mut last: Option<Vec<u8>> = None;
        for h in self.handles {
            if let Some(item) = self.db.iterator_cf(h, IteratorMode::End).next() {
                let (k, _) = item.map_err(io::Error::other)?;
                if last.as_deref().is_none_or(|l| *k > *l) {
                    last = Some(k.to_vec());
                }
            }
        }
        Ok(last)
    }
}

/// One catalog pair of a walk.
pub type Pair = (Box<[u8]>, Box<[u8]>);

/// Every catalog pair `view` of `db` sees, in key order: the families it has
/// merged (a backup checkpoint of an older version has only [`CF_CATALOG`]). Each
/// family is read with [`crate::store::walk_options`]; the walk holds one pair per
/// family.
pub fn walk<'a>(
    db: &'a DB,
    view: &'a rocksdb::Snapshot<'a>,
) -> impl Iterator<Item = io::Result<Pair>> + 'a {
    let iters = CATALOG_CFS
        .iter()
        .filter_map(|name| db.cf_handle(name))
        .map(|h| {
            view.iterator_cf_opt(h, crate::store::walk_options(), IteratorMode::Start)
                .peekable()
        })
        .collect();
    Merge { iters }
}

/// A merge of sorted iterators over disjoint keys.
struct Merge<I: Iterator> {
    iters: Vec<std::iter::Peekable<I>>,
}

impl<I> Iterator for Merge<I>
where
    I: Iterator<Item = Result<Pair, rocksdb::Error>>,
{
    type Item = io::Result<Pair>;

    fn next(&mut self) -> Option<io::Result<Pair>> {
        let mut best: Option<(usize, &[u8])> = None;
        let mut failed = None;
        for (i, it) in self.iters.iter_mut().enumerate() {
            match it.peek() {
                Some(Err(_)) => {
                    failed = Some(i);
                    break;
                }
                Some(Ok((k, _))) if best.is_none_or(|(_, b)| **k < *b) => best = Some((i, k)),
                _ => {}
            }
        }
        let i = failed.or(best.map(|(i, _)| i))?;
        self.iters[i]
            .next()
            .map(|item| item.map_err(io::Error::other))
    }
}

/// Key in `sm_meta` set once the catalog is split over its four families.
const KEY_SPLIT: &[u8] = b"catalog_split";
/// Keys moved per write batch by [`split_families`].
const SPLIT_BATCH_KEYS: usize = 4096;

/// Moves the keys a database of an older version holds in [`CF_CATALOG`] to the
/// families [`family_of`] names, a page of [`SPLIT_BATCH_KEYS`] at a time: copied
/// first, then deleted from `catalog` by one range deletion per prefix in the same
/// synced batch that records the split. A crash before that batch leaves copies
/// that the next open writes again; nothing reads the new families before the
/// split is recorded. Returns how many keys were moved (none once recorded).
pub fn split_families(db: &DB) -> io::Result<u64> {
    let meta = cf(db, CF_SM_META)?;
    if db
        .get_pinned_cf(meta, KEY_SPLIT)
        .map_err(io::Error::other)?
        .is_some()
    {
        return Ok(0);
    }
    let families = Families::of(db)?;
    let catalog = cf(db, CF_CATALOG)?;
    let mut moved = 0u64;
    let mut done = WriteBatch::default();
    for (prefix, end) in split_ranges() {
        let to = families.holding(prefix);
        let mut batch = WriteBatch::default();
        let mode = IteratorMode::From(prefix, Direction::Forward);
        // Bounded by the keys under the prefix, a page in memory at a time.
        for item in db.iterator_cf_opt(catalog, crate::store::walk_options(), mode) {
            let (k, v) = item.map_err(io::Error::other)?;
            if !k.starts_with(prefix) {
                break;
            }
            batch.put_cf(to, &k, &v);
            moved += 1;
            if batch.len() >= SPLIT_BATCH_KEYS {
                db.write(std::mem::take(&mut batch))
                    .map_err(io::Error::other)?;
            }
        }
        db.write(batch).map_err(io::Error::other)?;
        done.delete_range_cf(catalog, prefix, end.as_slice());
    }
    done.put_cf(meta, KEY_SPLIT, [1u8]);
    let mut sync = rocksdb::WriteOptions::default();
    sync.set_sync(true);
    db.write_opt(done, &sync).map_err(io::Error::other)?;
    Ok(moved)
}

/// Undoes the record of the split and empties the three split-off families, in one
/// synced batch: before an older version's interrupted install puts a whole
/// catalog back into [`CF_CATALOG`] (the split then runs again).
pub fn unsplit(db: &DB, range_end: &[u8]) -> io::Result<()> {
    let families = Families::of(db)?;
    let mut batch = WriteBatch::default();
    for h in &families.handles[1..] {
        batch.delete_range_cf(*h, b"".as_slice(), range_end);
    }
    batch.delete_cf(cf(db, CF_SM_META)?, KEY_SPLIT);
    let mut sync = rocksdb::WriteOptions::default();
    sync.set_sync(true);
    db.write_opt(batch, &sync).map_err(io::Error::other)
}

fn get<T: serde::Serialize + serde::de::DeserializeOwned>(
    db: &DB,
    key: &[u8],
) -> io::Result<Option<T>> {
    Families::of(db)?.get(key)?.map(|b| decode(&b)).transpose()
}

/// The id at the end of an index key.
fn trailing_id(key: &[u8]) -> io::Result<RecordId> {
    let start = key
        .len()
        .checked_sub(16)
        .ok_or_else(|| io::Error::other("malformed index key"))?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&key[start..]);
    Ok(RecordId(id))
}

/// The sequence number at the end of an audit index key.
fn trailing_seq(key: &[u8]) -> io::Result<u64> {
    let start = key
        .len()
        .checked_sub(8)
        .ok_or_else(|| io::Error::other("malformed audit index key"))?;
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&key[start..]);
    Ok(u64::from_be_bytes(seq))
}

impl StateMachine {
    /// A committed record's entry.
    pub fn record(&self, id: &RecordId) -> io::Result<Option<RecordEntry>> {
        get(&self.db, &keys::record(id))
    }

    /// How many segments record `id` has: `None` if it is kept whole (or absent).
    pub fn segment_count(&self, id: &RecordId) -> io::Result<Option<u32>> {
        get(&self.db, &keys::segments(id))
    }

    /// The parent and index of `part`, if it is a part of a segmented record.
    pub fn parent_of(&self, part: &RecordId) -> io::Result<Option<(RecordId, u32)>> {
        get(&self.db, &keys::segment_of(part))
    }

    /// The catalog entries of parts `from..from + limit` of segmented record
    /// `parent` (fewer at its end; at most `MAX_SEGMENT_PAGE`).
    pub fn segment_parts(
        &self,
        parent: &RecordId,
        from: u32,
        limit: u32,
    ) -> io::Result<Vec<RecordEntry>> {
        let count = self.segment_count(parent)?.unwrap_or(1);
        let limit = limit.min(kakera_proto::catalog::MAX_SEGMENT_PAGE as u32);
        let end = from.max(1).saturating_add(limit).min(count);
        let mut out = Vec::new();
        for index in from.max(1)..end {
            let part: RecordId =
                get(&self.db, &keys::segment(parent, index))?.ok_or_else(|| {
                    io::Error::other(format!("record {parent}: part {index} is not indexed"))
                })?;
            let entry = self.record(&part)?.ok_or_else(|| {
                io::Error::other(format!(
                    "record {parent}: part {index} ({part}) has no entry"
                ))
            })?;
            out.push(entry);
        }
        Ok(out)
    }

    /// An erased record's tombstone.
    pub fn tombstone(&self, id: &RecordId) -> io::Result<Option<Tombstone>> {
        get(&self.db, &keys::tomb(id))
    }

    /// A subject's opt-out.
    pub fn opt_out(&self, subject: &SubjectTag) -> io::Result<Option<OptOut>> {
        get(&self.db, &keys::optout(subject))
    }

    /// Where a record id stands.
    pub fn record_state(&self, id: &RecordId) -> io::Result<RecordState> {
        let catalog = Families::of(&self.db)?;
        let has = |key: Vec<u8>| -> io::Result<bool> { Ok(catalog.get(key)?.is_some()) };
        Ok(if has(keys::record(id))? {
            RecordState::Committed
        } else if has(keys::tomb(id))? {
            RecordState::Erased
        } else {
            RecordState::Absent
        })
    }

    /// Up to `limit` live record ids of `subject`, in id order, and whether more
    /// remain.
    pub fn subject_records(
        &self,
        subject: &SubjectTag,
        limit: usize,
    ) -> io::Result<(Vec<RecordId>, bool)> {
        let prefix = keys::by_subject(subject);
        let mut out = Vec::new();
        let mut more = false;
        let stopped = self.scan_prefix(&prefix, &prefix, |k, _| {
            if out.len() == limit {
                more = true;
                return Ok(false);
            }
            out.push(trailing_id(k)?);
            Ok(true)
        })?;
        Ok((out, more || stopped))
    }

    /// A page of tombstones (of one subject's opt-out, or all), in id order after
    /// `after`, and where the next page starts.
    pub fn tombstones(
        &self,
        subject: Option<&SubjectTag>,
        after: Option<RecordId>,
        limit: u32,
    ) -> io::Result<(Vec<Tombstone>, Option<RecordId>)> {
        let prefix = match subject {
            Some(tag) => keys::tombs_of_subject(tag),
            None => keys::TOMB.to_vec(),
        };
        self.page(&prefix, subject.is_none(), after, limit, |id| {
            self.tombstone(id)
        })
    }

    /// A page of values of records under `prefix` (keys end in the record id), in id
    /// order after `after`, and where the next page starts. With `primary` the
    /// values under the prefix are the items; otherwise the keys are an index and
    /// `lookup` fetches each item (an index key without an item is skipped).
    fn page<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        prefix: &[u8],
        primary: bool,
        after: Option<RecordId>,
        limit: u32,
        lookup: impl Fn(&RecordId) -> io::Result<Option<T>>,
    ) -> io::Result<(Vec<T>, Option<RecordId>)> {
        let limit = limit.clamp(1, MAX_LIST_PAGE) as usize;
        let mut from = prefix.to_vec();
        if let Some(a) = after {
            from.extend_from_slice(&a.0);
            // Start strictly after `a`.
            from.push(0);
        }
        let mut out = Vec::with_capacity(limit);
        let mut last = None;
        let stopped = self.scan_prefix(prefix, &from, |k, v| {
            let id = trailing_id(k)?;
            let item = if primary {
                Some(decode::<T>(v)?)
            } else {
                lookup(&id)?
            };
            if let Some(item) = item {
                out.push(item);
            }
            last = Some(id);
            Ok(out.len() < limit)
        })?;
        let next = if out.len() == limit || stopped {
            last
        } else {
            None
        };
        Ok((out, next))
    }

    /// The grant for `job`.
    pub fn grant(&self, job: &str) -> io::Result<Option<Grant>> {
        get(&self.db, &keys::grant(job))
    }

    /// Every grant, by job.
    pub fn grants(&self) -> io::Result<Vec<Grant>> {
        let mut out = Vec::new();
        self.scan_prefix(keys::GRANT, keys::GRANT, |_, v| {
            out.push(decode(v)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// A page of grants in job order after `after`: at most `limit`, only `reader`'s
    /// when given, looking at most [`MAX_GRANT_SCAN`] grants; and the job to start the
    /// next page after, when more may follow.
    pub fn grants_page(
        &self,
        after: Option<&str>,
        limit: usize,
        reader: Option<&str>,
    ) -> io::Result<(Vec<Grant>, Option<String>)> {
        let from = match after {
            // Job names hold no NUL byte: the first key after `after`'s own.
            Some(job) => [keys::grant(job).as_slice(), &[0]].concat(),
            None => keys::GRANT.to_vec(),
        };
        let (mut out, mut last, mut seen, mut more) = (Vec::new(), None, 0usize, false);
        self.scan_prefix(keys::GRANT, &from, |_, v| {
            if out.len() >= limit || seen >= MAX_GRANT_SCAN {
                more = true;
                return Ok(false);
            }
            seen += 1;
            let g: Grant = decode(v)?;
            last = Some(g.job.clone());
            if reader.is_none_or(|r| g.reader == r) {
                out.push(g);
            }
            Ok(true)
        })?;
        Ok((out, if more { last } else { None }))
    }

    /// Every CRL the cluster holds (DER), one per issuing CA (at most
    /// [`kakera_proto::revocation::MAX_CRL_ISSUERS`]).
    pub fn revocation_lists(&self) -> io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        self.scan_prefix(keys::CRL, keys::CRL, |_, v| {
            out.push(decode(v)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// Every node mode the operators set (nodes not listed are active).
    pub fn node_modes(&self) -> io::Result<Vec<NodeRecord>> {
        let mut out = Vec::new();
        self.scan_prefix(keys::NODE_MODE, keys::NODE_MODE, |_, v| {
            out.push(decode(v)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// The pending repair of a record.
    pub fn pending_repair(&self, id: &RecordId) -> io::Result<Option<RepairTask>> {
        get(&self.db, &keys::repair(id))
    }

    /// Up to `limit` pending repairs, in record order.
    pub fn pending_repairs(&self, limit: usize) -> io::Result<Vec<RepairTask>> {
        let mut out = Vec::new();
        self.scan_prefix(keys::REPAIR, keys::REPAIR, |_, v| {
            out.push(decode(v)?);
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// How many repairs are pending, counting at most `limit` (metrics).
    pub fn pending_repair_count(&self, limit: usize) -> io::Result<u64> {
        let mut n = 0u64;
        self.scan_prefix(keys::REPAIR, keys::REPAIR, |_, _| {
            n += 1;
            Ok((n as usize) < limit)
        })?;
        Ok(n)
    }

    /// The ticket opened by log entry `id`.
    pub fn ticket(&self, id: u64) -> io::Result<Option<Ticket>> {
        get(&self.db, &keys::ticket(id))
    }

    /// The audit log's head.
    pub fn audit_head(&self) -> io::Result<AuditHead> {
        Ok(get(&self.db, keys::AUDIT_HEAD)?.unwrap_or_default())
    }

    /// One audit entry.
    pub fn audit_entry(&self, seq: u64) -> io::Result<Option<AuditEntry>> {
        get(&self.db, &keys::audit(seq))
    }

    /// Calls `f` on each key/value under `prefix`, starting at `from` (>= prefix), until
    /// `f` returns false or [`MAX_SCAN_KEYS`] keys were seen. Returns whether the scan
    /// stopped at the key limit.
    fn scan_prefix(
        &self,
        prefix: &[u8],
        from: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> io::Result<bool>,
    ) -> io::Result<bool> {
        let catalog = Families::of(&self.db)?;
        for (seen, item) in catalog
            .iter_from(from, crate::store::page_options())
            .enumerate()
        {
            if seen >= MAX_SCAN_KEYS {
                return Ok(true);
            }
            let (k, v) = item.map_err(io::Error::other)?;
            if !k.starts_with(prefix) || !f(&k, &v)? {
                break;
            }
        }
        Ok(false)
    }

    /// A page of committed records matching `filter`, in id order after `after`.
    /// Returns the page and where the next one starts.
    pub fn list(
        &self,
        filter: &ListFilter,
        after: Option<RecordId>,
        limit: u32,
    ) -> io::Result<(Vec<RecordEntry>, Option<RecordId>)> {
        let prefix = match filter {
            ListFilter::All => keys::RECORD.to_vec(),
            ListFilter::Subject(tag) => keys::by_subject(tag),
            ListFilter::Kind(kind) => keys::by_kind(*kind),
            ListFilter::Source(source) => keys::by_source(source),
        };
        self.page(
            &prefix,
            matches!(filter, ListFilter::All),
            after,
            limit,
            |id| self.record(id),
        )
    }

    /// A page of audit entries matching `query`, and where to continue.
    pub fn audit(&self, query: &AuditQuery) -> io::Result<(Vec<AuditEntry>, Option<u64>)> {
        let limit = query.limit.clamp(1, MAX_AUDIT_PAGE) as usize;
        let wanted = |e: &AuditEntry| {
            query.since_ms.is_none_or(|s| e.at_ms >= s)
                && query.job.as_ref().is_none_or(|j| e.job.as_ref() == Some(j))
                && query.record.as_ref().is_none_or(|r| e.records.contains(r))
        };
        let mut out = Vec::with_capacity(limit);
        let mut last_seq = query.after_seq;
        let start = query.after_seq.saturating_add(1).to_be_bytes();
        let index = match (&query.record, &query.job) {
            (Some(r), _) => Some(keys::audit_by_record(r)),
            (None, Some(j)) => Some(keys::audit_by_job(j)),
            (None, None) => None,
        };
        let stopped = match index {
            Some(prefix) => {
                let from = [prefix.as_slice(), &start].concat();
                self.scan_prefix(&prefix, &from, |k, _| {
                    let seq = trailing_seq(k)?;
                    last_seq = seq;
                    if let Some(e) = self.audit_entry(seq)?
                        && wanted(&e)
                    {
                        out.push(e);
                    }
                    Ok(out.len() < limit)
                })?
            }
            None => {
                let from = [keys::AUDIT, &start].concat();
                self.scan_prefix(keys::AUDIT, &from, |_, v| {
                    let e: AuditEntry = decode(v)?;
                    last_seq = e.seq;
                    if wanted(&e) {
                        out.push(e);
                    }
                    Ok(out.len() < limit)
                })?
            }
        };
        let next = (out.len() == limit || stopped).then_some(last_seq);
        Ok((out, next))
    }
}

#[cfg(test)]
mod tests {
    use super::keys;
    use kakera_proto::record::RecordKind;

    #[test]
    fn kind_bytes_are_distinct_and_stable() {
        let bytes: std::collections::BTreeSet<u8> = RecordKind::ALL
            .iter()
            .map(|k| keys::kind_byte(*k))
            .collect();
        assert_eq!(bytes.len(), RecordKind::ALL.len());
        assert_eq!(keys::kind_byte(RecordKind::Ssmix2), 1);
    }
}
