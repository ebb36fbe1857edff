//! Erasure requests at the leader: erase (operator), tombstone listings (auditor,
//! operator), and the lookup ingest uses to stay idempotent. What the erase entry
//! does on every node is in `crate::raft::state_machine` and `crate::erasure`.

use kakera_proto::catalog::{EraseTarget, validate_reason};
use kakera_proto::{ErrorKind, Identity, RecordId, RequestId, Response, SubjectTag};

use super::records::{check_ids, internal, linearizable, propose_for};
use super::server::{ServerContext, error};
use crate::raft::{ClientAction, CommandResponse};

/// Erases records or (part of) a subject: one Raft entry; the answer says which
/// records it erased and whether the subject has more.
pub async fn erase(
    ctx: &ServerContext,
    identity: &Identity,
    request_id: RequestId,
    target: EraseTarget,
    reason: String,
) -> Response {
    if let Err(e) = validate_reason(&reason) {
        return error(ErrorKind::BadRequest, e.to_string());
    }
    if let EraseTarget::Records(ids) = &target
        && let Err(r) = check_ids(ctx, ids)
    {
        return r;
    }
    let subject = matches!(target, EraseTarget::Subject(_));
    match propose_for(
        ctx,
        identity,
        request_id,
        ClientAction::Erase { target, reason },
    )
    .await
    {
        Ok((log_index, CommandResponse::Erased { erased, remaining })) => {
            tracing::info!(
                peer = %identity.name,
                log_index,
                records = erased.len(),
                subject,
                remaining,
                "erased"
            );
            Response::Erased { erased, remaining }
        }
        Ok((_, other)) => internal(format!("erase applied with answer {other:?}")),
        Err(r) => r,
    }
}

/// A page of tombstones (linearizable).
pub async fn list_erased(
    ctx: &ServerContext,
    subject: Option<SubjectTag>,
    after: Option<RecordId>,
    limit: u32,
) -> Response {
    if let Err(r) = linearizable(ctx).await {
        return r;
    }
    let state = ctx.state.clone();
    match tokio::task::spawn_blocking(move || state.tombstones(subject.as_ref(), after, limit))
        .await
    {
        Ok(Ok((items, next))) => Response::Tombstones { items, next },
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

/// Where records and subjects stand (linearizable).
pub async fn lookup(
    ctx: &ServerContext,
    records: Vec<RecordId>,
    subjects: Vec<SubjectTag>,
) -> Response {
    if let Some(refusal) = super::records::too_many(ctx, records.len().max(subjects.len())) {
        return refusal;
    }
    if let Err(r) = linearizable(ctx).await {
        return r;
    }
    let state = ctx.state.clone();
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let states = records
            .iter()
            .map(|id| state.record_state(id))
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut opted_out = Vec::new();
        for s in subjects {
            if state.opt_out(&s)?.is_some() {
                opted_out.push(s);
            }
        }
        Ok((states, opted_out))
    })
    .await;
    match read {
        Ok(Ok((records, opted_out))) => Response::Lookup { records, opted_out },
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}
