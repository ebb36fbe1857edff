//! SS-MIX2 ingest (`kakera ingest ssmix2`): walks a standard storage tree and stores
//! each current file as a record, in batches.
//!
//! - Subject = the linkage key's tag of (facility, patient id); the patient id is
//!   never in the metadata. Record id = the linkage key's id of (facility, file name
//!   without flag, source timestamp), so a second run computes the same ids.
//! - Before each batch the leader says which ids are committed or erased and which
//!   subjects opted out ([`Client::lookup`]): committed files are skipped (the run is
//!   idempotent and resumable: an interrupted run is simply run again), erased ids
//!   and opted-out subjects are never stored again.
//! - Condition flag 0 (deleted at the source, or an old version after an update): the
//!   file is not stored; if an earlier run stored it while it was current, its id is
//!   reported as withdrawn so an operator can erase it (`kakera erase --record`). An
//!   ingest certificate cannot erase: a compromised gateway must not destroy records.
//! - A malformed path or an unreadable file is reported and skipped; the run goes on.

use std::path::{Path, PathBuf};
use std::time::Instant;

use kakera_client::{Client, NewRecord};
use kakera_proto::catalog::{MAX_RECORD_BYTES, RecordState};
use kakera_proto::{RecordId, RecordKind, RecordMeta, SubjectTag};

use crate::error::MedicalError;
use crate::linkage::LinkageKey;
use crate::ssmix2::{Condition, Ssmix2File, parse_relative, walk};
use crate::store::{Tally, distinct, put_or_retry};

/// Most files per batch (one lookup, one staging round, one commit).
pub const DEFAULT_BATCH_FILES: usize = 256;
/// Most file bytes per batch.
pub const MAX_BATCH_BYTES: u64 = 32 * 1024 * 1024;

/// Progress after each batch.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Files looked at so far.
    pub files_done: usize,
    /// Files in the tree.
    pub files_total: usize,
    /// Bytes of the files looked at.
    pub bytes_done: u64,
    /// Bytes of every file in the tree.
    pub bytes_total: u64,
    /// When the run started.
    pub started: Instant,
}

impl Progress {
    /// Files per second so far.
    pub fn files_per_s(&self) -> f64 {
        self.files_done as f64 / self.started.elapsed().as_secs_f64().max(1e-3)
    }

    /// MB per second so far.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes_done as f64 / 1e6 / self.started.elapsed().as_secs_f64().max(1e-3)
    }

    /// Seconds left at the current byte rate.
    pub fn eta_s(&self) -> f64 {
        let rate = self.bytes_done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        if rate <= 0.0 {
            return 0.0;
        }
        self.bytes_total.saturating_sub(self.bytes_done) as f64 / rate
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    /// Files in the tree.
    pub files: usize,
    /// Records stored, skipped as stored before, erased or opted out.
    #[serde(flatten)]
    pub tally: Tally,
    /// Files with condition flag 0 that were never stored (nothing to do).
    pub deleted_at_source: usize,
    /// Records stored earlier whose file now has flag 0: to be erased by an operator.
    pub withdrawn: Vec<RecordId>,
    /// Paths that are not SS-MIX2 standard storage, with the reason.
    pub malformed: Vec<(PathBuf, String)>,
    /// Files or directories that could not be read, with the reason.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// One file of a batch, parsed and keyed.
struct Item {
    rel: PathBuf,
    file: Ssmix2File,
    id: RecordId,
    subject: SubjectTag,
}

/// Ingests the tree under `root` from `facility` with `client` (an ingest
/// certificate), `batch_files` files per batch; `progress` is called after each
/// batch. Errors only when the cluster fails (a re-run resumes).
pub async fn ingest_ssmix2(
    client: &Client,
    key: &LinkageKey,
    root: &Path,
    facility: &str,
    batch_files: usize,
    mut progress: impl FnMut(&Progress),
) -> Result<Summary, MedicalError> {
    let probe = RecordMeta {
        subject: SubjectTag([0; 32]),
        kind: RecordKind::Ssmix2,
        source: facility.to_string(),
        effective: kakera_proto::Date::new(2000, 1, 1)?,
        data_kind: None,
    };
    probe.validate()?;
    if !root.is_dir() {
        return Err(MedicalError::Invalid(format!(
            "{} is not a directory (the SS-MIX2 standard storage root)",
            root.display()
        )));
    }
    let batch_files = batch_files.clamp(1, client.batch_records());
    let mut summary = Summary::default();
    let mut files = Vec::new();
    walk(
        root,
        |rel, size| files.push((rel, size)),
        |rel, why| summary.unreadable.push((rel, why)),
    );
    summary.files = files.len();
    let mut state = Progress {
        files_done: 0,
        files_total: files.len(),
        bytes_done: 0,
        bytes_total: files.iter().map(|(_, s)| *s).sum(),
        started: Instant::now(),
    };
    let mut start = 0;
    // Bounded: each round consumes at least one file.
    while start < files.len() {
        let mut end = start;
        let mut bytes = 0u64;
        while end < files.len() && end - start < batch_files {
            if end > start && bytes + files[end].1 > MAX_BATCH_BYTES {
                break;
            }
            bytes += files[end].1;
            end += 1;
        }
        let mut items = Vec::with_capacity(end - start);
        for (rel, _) in &files[start..end] {
            match parse_relative(rel) {
                Ok(file) => {
                    let subject = key.subject_tag(facility, &file.patient_id);
                    let id = key.record_id(facility, &file.stem, file.unix_ms());
                    items.push(Item {
                        rel: rel.clone(),
                        file,
                        id,
                        subject,
                    });
                }
                Err(why) => summary.malformed.push((rel.clone(), why)),
            }
        }
        store_batch(client, root, facility, items, &mut summary).await?;
        state.files_done = end;
        state.bytes_done += bytes;
        progress(&state);
        start = end;
    }
    Ok(summary)
}

/// Looks the batch up, then stores what is current, new and allowed.
async fn store_batch(
    client: &Client,
    root: &Path,
    facility: &str,
    mut items: Vec<Item>,
    summary: &mut Summary,
) -> Result<(), MedicalError> {
    // A flag rename seen twice in one tree (old and new name both present): the
    // current one counts.
    items.sort_by(|a, b| {
        (a.id, a.file.condition == Condition::Deleted)
            .cmp(&(b.id, b.file.condition == Condition::Deleted))
    });
    items.dedup_by(|later, first| later.id == first.id);
    if items.is_empty() {
        return Ok(());
    }
    let ids: Vec<RecordId> = items.iter().map(|i| i.id).collect();
    let subjects = distinct(items.iter().map(|i| i.subject));
    // Looked up before the files are read: what is stored is never read again.
    let (states, opted) = client.lookup(&ids, &subjects).await?;
    let tally = &mut summary.tally;
    let mut to_store = Vec::new();
    for (item, state) in items.into_iter().zip(states) {
        match (item.file.condition, state) {
            (Condition::Deleted, RecordState::Committed) => summary.withdrawn.push(item.id),
            (Condition::Deleted, _) => summary.deleted_at_source += 1,
            (Condition::Current, RecordState::Committed) => tally.already_stored += 1,
            (Condition::Current, RecordState::Erased) => tally.erased += 1,
            (Condition::Current, RecordState::Absent) if opted.contains(&item.subject) => {
                tally.opted_out += 1;
            }
            (Condition::Current, RecordState::Absent) => {
                let path = root.join(&item.rel);
                match read_record(&path) {
                    Ok(data) => to_store.push((item, data)),
                    Err(why) => summary.unreadable.push((item.rel, why)),
                }
            }
        }
    }
    let records: Vec<(RecordId, NewRecord)> = to_store
        .into_iter()
        .map(|(item, data)| {
            (
                item.id,
                NewRecord {
                    meta: RecordMeta {
                        subject: item.subject,
                        kind: RecordKind::Ssmix2,
                        source: facility.to_string(),
                        effective: item.file.effective(),
                        data_kind: Some(item.file.kind),
                    },
                    data,
                },
            )
        })
        .collect();
    put_or_retry(client, records, &mut summary.tally).await
}

/// A file's bytes as one record: refused (with the reason) if empty or larger than a
/// record may be.
pub(crate) fn read_record(path: &Path) -> Result<Vec<u8>, String> {
    let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if size == 0 {
        return Err("the file is empty".into());
    }
    if size > MAX_RECORD_BYTES {
        return Err(format!(
            "{size} bytes; the cluster stores records of at most {MAX_RECORD_BYTES} bytes"
        ));
    }
    std::fs::read(path).map_err(|e| e.to_string())
}
