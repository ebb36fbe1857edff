//! The catalog's key layout in column family `catalog`, and its reads. Writes happen
//! only in the state machine's apply (`super::state_machine`). Every value is
//! codec-encoded (format-version byte first).
//!
//! | key | value |
//! |-----|-------|
//! | `record/<id 16>` | [`RecordEntry`] |
//! | `idx/s/<subject 32><id 16>` | empty: records by subject |
//! | `idx/k/<kind 1><id 16>` | empty: records by kind |
//! | `idx/f/<len 1><source><id 16>` | empty: records by source facility |
//! | `grant/<job>` | [`Grant`] |
//! | `ticket/<log index, BE 8>` | [`Ticket`] |
//! | `audit/<seq, BE 8>` | [`AuditEntry`] |
//! | `audit_head` | [`AuditHead`] |
//! | `aidx/r/<id 16><seq BE 8>` | empty: audit entries by record |
//! | `aidx/j/<len 1><job><seq BE 8>` | empty: audit entries by job |
//! | `tomb/<id 16>` | [`Tombstone`]: an erased record (nothing else of it remains) |
//! | `tidx/s/<subject 32><id 16>` | empty: records erased by the subject's opt-out |
//! | `optout/<subject 32>` | [`OptOut`]: the subject's records are refused |

use std::io;

use kakera_proto::audit::{AuditEntry, AuditQuery, MAX_AUDIT_PAGE};
use kakera_proto::catalog::{
    Grant, ListFilter, MAX_LIST_PAGE, NodeRecord, OptOut, RecordEntry, RecordState, RepairTask,
    Ticket, Tombstone,
};
use kakera_proto::record::{RecordId, SubjectTag};
use rocksdb::{DB, Direction, IteratorMode};
use serde::{Deserialize, Serialize};

use super::log_store::decode;
use super::state_machine::StateMachine;
use crate::store::{CF_CATALOG, cf};

/// Most index or audit keys one query looks at before it answers with a cursor.
pub const MAX_SCAN_KEYS: usize = 100_000;

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

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// A record entry.
    pub fn record(id: &RecordId) -> Vec<u8> {
        cat(&[RECORD, &id.0])
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
        }
    }
}

fn get<T: serde::Serialize + serde::de::DeserializeOwned>(
    db: &DB,
    key: &[u8],
) -> io::Result<Option<T>> {
    db.get_pinned_cf(cf(db, CF_CATALOG)?, key)
        .map_err(io::Error::other)?
        .map(|b| decode(&b))
        .transpose()
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
        let catalog = cf(&self.db, CF_CATALOG)?;
        let has = |key: Vec<u8>| -> io::Result<bool> {
            Ok(self
                .db
                .get_pinned_cf(catalog, key)
                .map_err(io::Error::other)?
                .is_some())
        };
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
        let catalog = cf(&self.db, CF_CATALOG)?;
        let mode = IteratorMode::From(from, Direction::Forward);
        for (seen, item) in self
            .db
            .iterator_cf_opt(catalog, crate::store::walk_options(), mode)
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
