//! Storing a batch of records with deterministic ids, as every ingest does: what
//! the cluster holds already is skipped, what was erased or belongs to an opted-out
//! subject is never stored again, and a put that fails part-way is looked up again
//! (the commit of an interrupted earlier attempt may have landed) and retried once.
//! A run that still fails asks to be run again: what was stored is then skipped.

use kakera_client::{Client, NewRecord};
use kakera_proto::catalog::RecordState;
use kakera_proto::{RecordId, SubjectTag};

use crate::error::MedicalError;

/// What storing did, counted over a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// Records stored by this run.
    pub stored: usize,
    /// Bytes of the records stored by this run.
    pub stored_bytes: u64,
    /// Records already stored by an earlier run (skipped).
    pub already_stored: usize,
    /// Records erased before: never stored again.
    pub erased: usize,
    /// Records of opted-out subjects: never stored.
    pub opted_out: usize,
}

/// Stores those of `records` the cluster does not hold, after one lookup.
pub async fn store_absent(
    client: &Client,
    records: Vec<(RecordId, NewRecord)>,
    tally: &mut Tally,
) -> Result<(), MedicalError> {
    let absent = absent(client, records, tally).await?;
    put_or_retry(client, absent, tally).await
}

/// Stores `records` (looked up as absent by the caller); on a failure, looks them
/// up again and stores what is still absent, once.
pub async fn put_or_retry(
    client: &Client,
    records: Vec<(RecordId, NewRecord)>,
    tally: &mut Tally,
) -> Result<(), MedicalError> {
    if records.is_empty() {
        return Ok(());
    }
    let first = match put(client, records.clone(), tally).await {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let count = records.len();
    let rest = absent(client, records, tally).await?;
    if rest.len() == count {
        return Err(again(count, &first));
    }
    if rest.is_empty() {
        return Ok(());
    }
    let count = rest.len();
    put(client, rest, tally).await.map_err(|e| again(count, &e))
}

/// The records of `records` that are absent and not opted out; the others counted.
async fn absent(
    client: &Client,
    records: Vec<(RecordId, NewRecord)>,
    tally: &mut Tally,
) -> Result<Vec<(RecordId, NewRecord)>, MedicalError> {
    if records.is_empty() {
        return Ok(records);
    }
    // Ids are derived from content: the same id twice in a batch (a resource in an
    // export and again in a Bundle) is the same record, stored once.
    let mut seen = std::collections::HashSet::with_capacity(records.len());
    let before = records.len();
    let records: Vec<(RecordId, NewRecord)> = records
        .into_iter()
        .filter(|(id, _)| seen.insert(*id))
        .collect();
    tally.already_stored += before - records.len();
    let ids: Vec<RecordId> = records.iter().map(|(id, _)| *id).collect();
    let subjects = distinct(records.iter().map(|(_, r)| r.meta.subject));
    let (states, opted) = client.lookup(&ids, &subjects).await?;
    let mut rest = Vec::with_capacity(records.len());
    for ((id, r), state) in records.into_iter().zip(states) {
        if to_store(state, opted.contains(&r.meta.subject), tally) {
            rest.push((id, r));
        }
    }
    Ok(rest)
}

/// Whether a record the cluster reports in `state` is to be stored; the others are
/// counted in `tally` (held already, erased, or of an opted-out subject).
fn to_store(state: RecordState, opted_out: bool, tally: &mut Tally) -> bool {
    match state {
        RecordState::Committed => tally.already_stored += 1,
        RecordState::Erased => tally.erased += 1,
        RecordState::Absent if opted_out => tally.opted_out += 1,
        RecordState::Absent => return true,
    }
    false
}

/// Stores the file at `path` as record `id` through [`Client::put_stream_with_id`]
/// unless the cluster holds it, erased it or refuses its subject (counted in
/// `tally`); a failed put is looked up again and tried once more. `Ok(Err(why))`:
/// the file could not be read (the run goes on); `Err`: the cluster failed.
pub async fn store_stream_absent(
    client: &Client,
    id: RecordId,
    meta: kakera_proto::RecordMeta,
    path: &std::path::Path,
    tally: &mut Tally,
) -> Result<Result<(), String>, MedicalError> {
    let mut first = None;
    for _attempt in 0..2 {
        let (states, opted) = client.lookup(&[id], &[meta.subject]).await?;
        let state = states.first().copied().unwrap_or(RecordState::Absent);
        if !to_store(state, opted.contains(&meta.subject), tally) {
            return Ok(Ok(()));
        }
        let file = match tokio::fs::File::open(path).await {
            Ok(f) => f,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let bytes = file.metadata().await.map_or(0, |m| m.len());
        match client.put_stream_with_id(id, meta.clone(), file).await {
            Ok(_) => {
                tally.stored += 1;
                tally.stored_bytes += bytes;
                return Ok(Ok(()));
            }
            Err(kakera_client::ClientError::Source(e)) => return Ok(Err(e.to_string())),
            Err(e) => first = Some(MedicalError::from(e)),
        }
    }
    Err(match first {
        Some(e) => again(1, &e),
        None => MedicalError::Invalid(format!("record {id} was not stored")),
    })
}

/// The distinct subjects, sorted (one lookup entry each).
pub(crate) fn distinct(subjects: impl Iterator<Item = SubjectTag>) -> Vec<SubjectTag> {
    let mut out: Vec<SubjectTag> = subjects.collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Stores `records` and counts them.
async fn put(
    client: &Client,
    records: Vec<(RecordId, NewRecord)>,
    tally: &mut Tally,
) -> Result<(), MedicalError> {
    let bytes: u64 = records.iter().map(|(_, r)| r.data.len() as u64).sum();
    let count = records.len();
    client.put_batch_with_ids(records).await?;
    tally.stored += count;
    tally.stored_bytes += bytes;
    Ok(())
}

fn again(count: usize, e: &MedicalError) -> MedicalError {
    MedicalError::Interrupted(format!(
        "storing a batch of {count} records failed ({e}); run the same command again: \
         what was stored is skipped"
    ))
}
