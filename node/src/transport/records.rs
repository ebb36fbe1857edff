//! The data path on a node: staging shares, committing records, read tickets and
//! share fetches, listings, grants and the audit log. Changes go through Raft at the
//! leader as [`Command::Client`], stamped with the caller's identity (from its
//! certificate) and the leader's clock; the state machine decides and audits them.

use std::net::IpAddr;
use std::time::Duration;

use kakera_proto::audit::AuditQuery;
use kakera_proto::catalog::{
    Actor, Grant, ListFilter, MAX_BATCH_RECORDS, MAX_RECORD_BYTES, RecordEntry, Ticket,
    TicketPurpose,
};
use kakera_proto::frame::{TRAILER_FRAME_BYTES, read_trailer};
use kakera_proto::{
    Digest, ErrorKind, FetchedShare, HeldShare, Identity, RecordId, RequestId, Response, Role,
    ShareCheck, ShareProbe, StageItem, auth,
};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::{ForwardToLeader, RaftError};
use openraft::{ReadPolicy, TryAsRef};

use super::server::{ServerContext, error};
use crate::clock::unix_ms;
use crate::raft::state_machine::{AUDIT_TICKET_TTL_MS, READ_TICKET_TTL_MS};
use crate::raft::{ClientAction, Command, CommandResponse, TypeConfig};
use crate::shares::{MAX_STAGE_ITEMS, StageRefusal};

/// Most share bytes one staging request may carry: one share of the largest record,
/// with room for its headers.
pub const MAX_STAGE_REQUEST_BYTES: u64 = MAX_RECORD_BYTES + 1024 * 1024;
// The share store takes any batch the config allows.
const _: () = assert!(MAX_STAGE_ITEMS >= MAX_BATCH_RECORDS);
// The config's ceilings are the protocol's own limits.
const _: () = assert!(kakera_config::config::CEILING_RECORD_BYTES == MAX_RECORD_BYTES);
const _: () = assert!(kakera_config::config::CEILING_BATCH_RECORDS as usize == MAX_BATCH_RECORDS);
const _: () = assert!(
    kakera_config::config::CEILING_FRAME_BYTES as usize == kakera_proto::codec::MAX_VALUE_BYTES
);

/// Room above `max_record_bytes` for the seal's overhead in a record's sealed length.
pub const SEAL_OVERHEAD_BYTES: u64 = 1024;
/// Room above `max_record_bytes` for the seal's overhead and the share header in one
/// share.
pub const SHARE_OVERHEAD_BYTES: u64 = 2048;
/// Most share bytes one fetch answer carries; a larger ask is refused (the client
/// splits its fetches by the catalog's sizes).
pub const MAX_FETCH_REPLY_BYTES: u64 = MAX_RECORD_BYTES + 1024 * 1024;
/// How long a fetch waits for this node to apply the ticket's entry.
pub const TICKET_APPLY_WAIT_MS: u64 = 5_000;

/// The answer to a Raft proposal made for a client.
fn proposal_refusal(r: &CommandResponse) -> Option<Response> {
    match r {
        CommandResponse::Applied
        | CommandResponse::Erased { .. }
        | CommandResponse::ReadOpened { .. } => None,
        CommandResponse::Refused { reason } => Some(error(ErrorKind::BadRequest, reason.clone())),
        CommandResponse::Forbidden { reason } => Some(error(ErrorKind::Forbidden, reason.clone())),
        CommandResponse::NotFound { reason } => Some(error(ErrorKind::NotFound, reason.clone())),
    }
}

/// A refusal naming the leader if this node is not it.
pub(crate) fn not_leader(ctx: &ServerContext) -> Response {
    let leader = ctx.raft.metrics().borrow_watched().current_leader;
    error(
        ErrorKind::NotLeader { leader_id: leader },
        "this node is not the leader; send the request to the leader",
    )
}

/// Proposes `action` for `identity` and waits until it is applied here. Returns the
/// entry's log index, or the answer to send (a refusal, not-leader, unavailable).
pub(crate) async fn propose(
    ctx: &ServerContext,
    identity: &Identity,
    request_id: RequestId,
    action: ClientAction,
) -> Result<u64, Response> {
    propose_for(ctx, identity, request_id, action)
        .await
        .map(|(index, _)| index)
}

/// [`propose`], also returning what applying the entry produced.
pub(crate) async fn propose_for(
    ctx: &ServerContext,
    identity: &Identity,
    request_id: RequestId,
    action: ClientAction,
) -> Result<(u64, CommandResponse), Response> {
    if !ctx.raft.is_leader() {
        return Err(not_leader(ctx));
    }
    if let Some(problem) = action.bound_problem() {
        return Err(error(ErrorKind::TooLarge, problem));
    }
    if identity.name.len() > crate::raft::commands::MAX_ACTOR_NAME_BYTES {
        return Err(error(
            ErrorKind::BadRequest,
            format!(
                "certificate names are at most {} bytes",
                crate::raft::commands::MAX_ACTOR_NAME_BYTES
            ),
        ));
    }
    let cmd = Command::Client {
        actor: Actor::of(identity),
        at_ms: unix_ms(),
        request_id,
        action,
    };
    // Every entry must travel alone in one append frame with room for the envelope.
    let max_entry_bytes = (ctx.max_frame_bytes / 2) as usize;
    match kakera_proto::codec::encode(&cmd) {
        Ok(b) if b.len() <= max_entry_bytes => {}
        Ok(b) => {
            return Err(error(
                ErrorKind::TooLarge,
                format!(
                    "the request makes a log entry of {} bytes; at most {max_entry_bytes} \
                     (half of max_frame_bytes): send fewer records at once",
                    b.len()
                ),
            ));
        }
        Err(e) => return Err(error(ErrorKind::BadRequest, format!("cannot encode: {e}"))),
    }
    match ctx.raft.client_write(cmd).await {
        Ok(w) => match proposal_refusal(w.response()) {
            None => Ok((w.log_id().index(), w.response().clone())),
            Some(refusal) => Err(refusal),
        },
        Err(e) => Err(moved_or_unavailable(
            &e,
            "the cluster could not commit the request",
        )),
    }
}

/// The answer to a failed Raft call: not-leader (naming the new leader) if leadership
/// moved, else unavailable.
fn moved_or_unavailable<E>(e: &RaftError<TypeConfig, E>, doing: &str) -> Response
where
    E: std::error::Error + TryAsRef<ForwardToLeader<TypeConfig>>,
{
    match e.forward_to_leader() {
        Some(f) => error(
            ErrorKind::NotLeader {
                leader_id: f.leader_id,
            },
            "leadership moved; send the request to the leader",
        ),
        None => error(ErrorKind::Unavailable, format!("{doing} ({e}); retry")),
    }
}

/// Waits until this node, as leader, has applied everything committed before the
/// call (ReadIndex), so a read of its state is linearizable.
pub(crate) async fn linearizable(ctx: &ServerContext) -> Result<(), Response> {
    if !ctx.raft.is_leader() {
        return Err(not_leader(ctx));
    }
    match ctx.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
        Ok(_) => Ok(()),
        Err(e) => Err(moved_or_unavailable(
            &e,
            "the leader could not confirm its leadership",
        )),
    }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "catalog read failed");
    error(
        ErrorKind::Internal,
        "the node could not read its catalog; retry",
    )
}

/// The refusal of a request naming more records than `max_batch_records`.
pub(crate) fn too_many(ctx: &ServerContext, count: usize) -> Option<Response> {
    let limit = ctx.config.limits.max_batch_records;
    debug_assert!(
        limit as usize <= MAX_BATCH_RECORDS,
        "config validation caps it"
    );
    (count > limit as usize).then(|| {
        error(
            ErrorKind::TooLarge,
            format!(
                "{count} records in one request; this cluster takes at most {limit} \
                 (max_batch_records); split the request"
            ),
        )
    })
}

/// Checks a list of record ids: 1..=max_batch_records, each once.
pub(crate) fn check_ids(ctx: &ServerContext, records: &[RecordId]) -> Result<(), Response> {
    if records.is_empty() {
        return Err(error(ErrorKind::BadRequest, "the request names no records"));
    }
    if let Some(refusal) = too_many(ctx, records.len()) {
        return Err(refusal);
    }
    let mut seen = std::collections::BTreeSet::new();
    for r in records {
        if !seen.insert(r) {
            return Err(error(
                ErrorKind::BadRequest,
                format!("record {r} appears twice in one request"),
            ));
        }
    }
    Ok(())
}

/// Time share bytes have to arrive after their request: [`TRAILER_BASE_MS`] plus
/// one second per [`TRAILER_MIN_BYTES_PER_S`], so a peer that announces bytes and
/// stalls gives its reservations back.
pub fn trailer_deadline(size_bytes: u64) -> Duration {
    Duration::from_millis(
        TRAILER_BASE_MS.saturating_add(size_bytes.saturating_mul(1000) / TRAILER_MIN_BYTES_PER_S),
    )
}

/// The fixed part of [`trailer_deadline`].
pub const TRAILER_BASE_MS: u64 = 10_000;
/// The slowest transfer of share bytes a node waits for.
pub const TRAILER_MIN_BYTES_PER_S: u64 = 1024 * 1024;

/// Stores shares as staged, synced before the answer. The shares follow the request
/// on `recv`; every share must decode (its checksum holds) and name a distinct
/// record; otherwise nothing is stored.
pub async fn stage(
    ctx: &ServerContext,
    identity: &Identity,
    items: Vec<StageItem>,
    recv: &mut quinn::RecvStream,
) -> Response {
    if items.is_empty() {
        return error(
            ErrorKind::BadRequest,
            "a staging request needs at least one share",
        );
    }
    if let Some(refusal) = too_many(ctx, items.len()) {
        return refusal;
    }
    let limits = ctx.config.limits;
    let share_limit = limits.max_record_bytes + SHARE_OVERHEAD_BYTES;
    if let Some(big) = items.iter().find(|i| i.size_bytes > share_limit) {
        return error(
            ErrorKind::TooLarge,
            format!(
                "the share for record {} is {} bytes; this cluster takes records up to {} \
                 bytes (max_record_bytes), so shares up to {share_limit}",
                big.record, big.size_bytes, limits.max_record_bytes
            ),
        );
    }
    let total_bytes = items
        .iter()
        .try_fold(0u64, |acc, i| acc.checked_add(i.size_bytes))
        .unwrap_or(u64::MAX);
    if total_bytes > MAX_STAGE_REQUEST_BYTES {
        return error(
            ErrorKind::TooLarge,
            format!(
                "{total_bytes} bytes of shares in one request; at most {MAX_STAGE_REQUEST_BYTES}"
            ),
        );
    }
    // Reserve the bytes against this identity's staging allowance before reading
    // them; the reservation lives until the shares are committed or expire.
    let reservation = match ctx.shares.ledger().reserve(
        &identity.name,
        total_bytes,
        limits.max_staged_bytes_per_identity,
    ) {
        Ok(r) => r,
        Err(staged_bytes) => {
            return error(
                ErrorKind::TooLarge,
                format!(
                    "'{}' already has {staged_bytes} bytes of shares staged and not committed \
                     on this node; {total_bytes} more would pass the limit of {} \
                     (max_staged_bytes_per_identity): commit what is staged, or wait for it \
                     to expire",
                    identity.name, limits.max_staged_bytes_per_identity
                ),
            );
        }
    };
    // The share bytes count against the identity's bytes in flight from here until
    // they are written, and must arrive within a deadline that grows with their size.
    let _in_flight = match ctx.request_bytes.reserve(
        &identity.name,
        total_bytes,
        limits.max_request_bytes_per_identity,
    ) {
        Ok(h) => h,
        Err(held) => {
            return super::server::over_request_bytes(
                &identity.name,
                total_bytes,
                held,
                limits.max_request_bytes_per_identity,
            );
        }
    };
    let deadline = trailer_deadline(total_bytes);
    let data = match tokio::time::timeout(
        deadline,
        read_trailer(recv, total_bytes, TRAILER_FRAME_BYTES),
    )
    .await
    {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return error(ErrorKind::BadRequest, format!("share bytes: {e}")),
        Err(_) => {
            return error(
                ErrorKind::BadRequest,
                format!(
                    "the {total_bytes} share bytes did not arrive within {} ms",
                    deadline.as_millis()
                ),
            );
        }
    };
    let sizes: Vec<(RecordId, u64)> = items.iter().map(|i| (i.record, i.size_bytes)).collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut batch = Vec::with_capacity(items.len());
    let mut offset = 0usize;
    for item in items {
        if !seen.insert(item.record) {
            return error(
                ErrorKind::BadRequest,
                format!("record {} appears twice in one request", item.record),
            );
        }
        // The sizes sum to data.len() (read_trailer read exactly total_bytes).
        let end = offset + item.size_bytes as usize;
        let share = &data[offset..end];
        let range = offset..end;
        offset = end;
        // P1: a share split under another threshold, or with an x outside the
        // policy's 1..=n, is refused here, so a faulty gateway's 2-of-n split never
        // lands on a node of a k-of-n cluster.
        let policy = ctx.config.policy;
        let checked = match kakera_shamir::Share::check_with_params(share) {
            Ok((k, x, digest)) if k == policy.k && (1..=policy.n).contains(&x) => {
                Ok(Digest(digest))
            }
            Ok((k, x, _)) => Err(format!(
                "it was split {k} of n with x = {x}; this cluster's policy is {} of {} \
                 (x from 1 to {})",
                policy.k, policy.n, policy.n
            )),
            Err(e) => Err(e.to_string()),
        };
        // A benchmark cluster also takes plain replicas (`[baseline]`), in benchmark
        // builds only.
        #[cfg(feature = "bench-baseline")]
        let checked = match checked {
            Err(e) if ctx.config.plain_replicas.is_some() => kakera_proto::replica::decode(share)
                .map(|_| Digest::of(share))
                .map_err(|_| e),
            other => other,
        };
        let digest = match checked {
            Ok(d) => d,
            Err(e) => {
                return error(
                    ErrorKind::BadRequest,
                    format!(
                        "the share for record {} is not a valid share: {e}",
                        item.record
                    ),
                );
            }
        };
        batch.push((item.record, range, digest));
    }
    let store = ctx.shares.clone();
    let state = ctx.state.clone();
    let count = batch.len();
    let now_ms = unix_ms();
    let result = tokio::task::spawn_blocking(move || {
        // An erased record is never stored again (a share racing the erase entry is
        // swept by the purger).
        for (id, ..) in &batch {
            if state.tombstone(id)?.is_some() {
                return Ok(Err(StageRefusal::Erased { record: *id }));
            }
        }
        // The shares as slices of the request's bytes: no copy before RocksDB's.
        let shares: Vec<(RecordId, &[u8], Digest)> = batch
            .iter()
            .map(|(id, r, digest)| (*id, &data[r.clone()], *digest))
            .collect();
        store.stage(&shares, now_ms)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    match result {
        Ok(Ok(staged)) => {
            reservation.settle(&sizes);
            // A share already committed here was not staged again: nothing to count.
            for ((id, _), (_, written)) in sizes.iter().zip(&staged) {
                if !written {
                    ctx.shares.ledger().release(id);
                }
            }
            let digests = staged.into_iter().map(|(d, _)| d).collect();
            kakera_net::crash::point("stage.synced");
            tracing::debug!(peer = %identity.name, shares = count, bytes = total_bytes, "staged");
            Response::Staged { digests }
        }
        Ok(Err(StageRefusal::Erased { record })) => error(
            ErrorKind::BadRequest,
            format!(
                "record {record} was erased; an erased record is never stored again; \
                 nothing of this request was stored"
            ),
        ),
        Ok(Err(StageRefusal::Committed { record })) => error(
            ErrorKind::BadRequest,
            format!(
                "record {record} already has a different committed share on this node; \
                 nothing of this request was stored"
            ),
        ),
        Err(e) => {
            tracing::error!(error = %e, "staging failed");
            error(
                ErrorKind::Internal,
                "the node could not store the shares; retry",
            )
        }
    }
}

/// Where this node (the leader) holds a share of a record in a commit, checks that the
/// committer staged it here with the digest the entry names (or that it is committed
/// with that digest: a repeated commit). A client stages every share before it
/// commits, so anything else is a commit naming shares it never sent, or shares
/// another identity staged: refused before anything is proposed.
async fn staged_here(
    ctx: &ServerContext,
    identity: &Identity,
    records: &[RecordEntry],
) -> Result<(), Response> {
    let node = ctx.node.id;
    let mine: Vec<(RecordId, Digest)> = records
        .iter()
        .filter_map(|r| r.holder_on(node).map(|h| (r.id, h.digest)))
        .collect();
    if mine.is_empty() {
        return Ok(());
    }
    let store = ctx.shares.clone();
    let name = identity.name.clone();
    let found = tokio::task::spawn_blocking(move || -> std::io::Result<Option<String>> {
        for (id, digest) in mine {
            // Staged first, then committed. A commit applied between the two reads
            // promotes the share in one write batch (marker gone, share committed),
            // so what the first read misses the second finds. The other order missed
            // a share promoted in between: a client's repeated commit racing the
            // apply of its first one was refused (seen in `kakera bench
            // --scale-records` under load).
            if let Some(s) = store.staged(&id)?
                && s.digest == digest
            {
                if let Some(other) = store.ledger().stager(&id).filter(|o| *o != name) {
                    tracing::warn!(record = %id, committer = %name, stager = %other,
                        "commit names shares another identity staged");
                    return Ok(Some(format!(
                        "record {id}: its shares were staged by another identity; \
                         nothing of this batch was committed"
                    )));
                }
                continue;
            }
            if store.committed(&id)?.is_some_and(|s| s.digest == digest) {
                continue;
            }
            return Ok(Some(format!(
                "record {id}: node {node}, one of its holders, holds no staged share \
                 with the digest the entry names; stage every share before \
                 committing; nothing of this batch was committed"
            )));
        }
        Ok(None)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    match found {
        Ok(None) => Ok(()),
        Ok(Some(reason)) => Err(error(ErrorKind::BadRequest, reason)),
        Err(e) => Err(internal(e)),
    }
}

/// Commits a batch of staged records: the leader checks each entry's shape and the
/// placement rules against the config, then proposes one entry for the batch.
/// With `segmented`, the records are one record's segments
/// ([`Request::CommitSegmented`](kakera_proto::Request::CommitSegmented)).
pub async fn commit(
    ctx: &ServerContext,
    identity: &Identity,
    request_id: RequestId,
    records: Vec<RecordEntry>,
    segmented: bool,
) -> Response {
    let ids: Vec<RecordId> = records.iter().map(|r| r.id).collect();
    if let Err(r) = check_ids(ctx, &ids) {
        return r;
    }
    if segmented && let Err(e) = kakera_proto::catalog::check_segmented(&records) {
        return error(ErrorKind::BadRequest, e.to_string());
    }
    let policy = &ctx.config.policy;
    let max_record_bytes = ctx.config.limits.max_record_bytes;
    for r in &records {
        if r.sealed_len > max_record_bytes + SEAL_OVERHEAD_BYTES {
            return error(
                ErrorKind::TooLarge,
                format!(
                    "record {} is {} sealed bytes; this cluster takes records up to \
                     {max_record_bytes} bytes (max_record_bytes)",
                    r.id, r.sealed_len
                ),
            );
        }
        if let Err(e) = r.validate() {
            return error(ErrorKind::BadRequest, e.to_string());
        }
        let Some(rules) = ctx
            .config
            .policy_for(r.k)
            .filter(|_| r.committed_at_ms == 0)
        else {
            return error(
                ErrorKind::BadRequest,
                format!(
                    "record {}: the cluster's policy is {} of {}; the entry says {} of {}",
                    r.id,
                    policy.k,
                    policy.n,
                    r.k,
                    r.holders.len()
                ),
            );
        };
        let holders: Vec<u64> = r.holders.iter().map(|h| h.node).collect();
        if let Err(v) = kakera_config::check_holders(&holders, &ctx.config.nodes, &rules) {
            return error(
                ErrorKind::BadRequest,
                format!("record {}: placement refused: {v}", r.id),
            );
        }
    }
    if !ctx.raft.is_leader() {
        return not_leader(ctx);
    }
    if let Err(refusal) = staged_here(ctx, identity, &records).await {
        return refusal;
    }
    let count = records.len();
    kakera_net::crash::point("commit.received");
    let action = if segmented {
        ClientAction::CommitSegmented { records }
    } else {
        ClientAction::CommitRecords { records }
    };
    match propose(ctx, identity, request_id, action).await {
        Ok(log_index) => {
            kakera_net::crash::point("commit.applied");
            tracing::info!(peer = %identity.name, records = count, log_index, "committed");
            Response::Committed { log_index }
        }
        Err(r) => r,
    }
}

/// Opens a read ticket: zone and network checked here, the grant when the entry is
/// applied. Answers with the ticket and the records' catalog entries. With `each`
/// ([`Request::OpenReadEach`]), the ticket covers the records the grant admits and
/// the answer reports each other one by id instead of refusing the request.
pub async fn open_read(
    ctx: &ServerContext,
    identity: &Identity,
    remote: IpAddr,
    request_id: RequestId,
    job: String,
    records: Vec<RecordId>,
    each: bool,
) -> Response {
    if let Err(reason) = auth::check_reader_origin(identity, remote, &ctx.config) {
        return error(ErrorKind::Forbidden, reason);
    }
    if let Err(r) = check_ids(ctx, &records) {
        return r;
    }
    let ttl_ms = READ_TICKET_TTL_MS;
    let action = if each {
        ClientAction::OpenReadEach {
            job,
            records: records.clone(),
            ttl_ms,
        }
    } else {
        ClientAction::OpenRead {
            job,
            records: records.clone(),
            ttl_ms,
        }
    };
    let (log_index, applied) = match propose_for(ctx, identity, request_id, action).await {
        Ok(done) => done,
        Err(r) => return r,
    };
    kakera_net::crash::point("ticket.applied");
    let refused = match applied {
        CommandResponse::ReadOpened { refused } => refused,
        _ if each => return internal("a read ticket opened without its list of refusals"),
        _ => Vec::new(),
    };
    tracing::info!(
        peer = %identity.name,
        ticket = log_index,
        records = records.len(),
        refused = refused.len(),
        "read opened"
    );
    if !each {
        return ticket_answer(ctx, log_index, &records);
    }
    let left_out: std::collections::BTreeSet<RecordId> = refused.iter().map(|r| r.record).collect();
    let admitted: Vec<RecordId> = records
        .into_iter()
        .filter(|r| !left_out.contains(r))
        .collect();
    match ticket_answer(ctx, log_index, &admitted) {
        Response::ReadTicket { ticket, entries } => {
            Response::ReadTicketEach(Box::new(kakera_proto::TicketEach {
                ticket,
                entries,
                refused,
            }))
        }
        other => other,
    }
}

/// The ticket `ticket_id` if `identity` may use it for `records` now: waits until this
/// node has applied the ticket's entry, then checks holder, expiry and records.
async fn usable_ticket(
    ctx: &ServerContext,
    identity: &Identity,
    ticket_id: u64,
    records: &[RecordId],
) -> Result<Ticket, Response> {
    check_ids(ctx, records)?;
    let wait = ctx
        .raft
        .wait(Some(Duration::from_millis(TICKET_APPLY_WAIT_MS)))
        .applied_index_at_least(Some(ticket_id), "ticket")
        .await;
    if wait.is_err() {
        return Err(error(
            ErrorKind::Unavailable,
            format!(
                "this node has not applied ticket {ticket_id} within {TICKET_APPLY_WAIT_MS} ms; retry"
            ),
        ));
    }
    let ticket = match ctx.state.ticket(ticket_id) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Err(error(
                ErrorKind::Forbidden,
                format!("there is no open ticket {ticket_id} (never opened, refused or expired)"),
            ));
        }
        Err(e) => return Err(internal(e)),
    };
    if ticket.holder != identity.fingerprint {
        tracing::warn!(peer = %identity, ticket = ticket_id, "another holder's ticket");
        return Err(error(
            ErrorKind::Forbidden,
            format!("ticket {ticket_id} belongs to another certificate"),
        ));
    }
    if ticket.expires_at_ms <= unix_ms() {
        return Err(error(
            ErrorKind::Forbidden,
            format!("ticket {ticket_id} has expired; open a new one"),
        ));
    }
    for r in records {
        // A ticket for a segmented record covers its parts.
        let covered = ticket.covers(r)
            || match ctx.state.parent_of(r) {
                Ok(parent) => parent.is_some_and(|(p, _)| ticket.covers(&p)),
                Err(e) => return Err(internal(e)),
            };
        if !covered {
            return Err(error(
                ErrorKind::Forbidden,
                format!("record {r} is not in ticket {ticket_id}"),
            ));
        }
    }
    Ok(ticket)
}

/// The parts of a segmented record under a ticket that covers it (its reader's, or
/// an auditor's): catalog entries only, never share bytes.
pub async fn segments(
    ctx: &ServerContext,
    identity: &Identity,
    remote: IpAddr,
    ticket_id: u64,
    record: RecordId,
    from: u32,
    limit: u32,
) -> Response {
    if identity.role == Role::Reader
        && let Err(reason) = auth::check_reader_origin(identity, remote, &ctx.config)
    {
        return error(ErrorKind::Forbidden, reason);
    }
    let ticket = match usable_ticket(ctx, identity, ticket_id, &[record]).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let allowed = match ticket.purpose {
        TicketPurpose::Read { .. } => identity.role == Role::Reader,
        TicketPurpose::Audit { .. } => identity.role == Role::Auditor,
        TicketPurpose::ErasureCheck => false,
    };
    if !allowed {
        return error(
            ErrorKind::Forbidden,
            format!("ticket {ticket_id} does not list segments"),
        );
    }
    let state = ctx.state.clone();
    let listed = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let count = state.segment_count(&record)?.unwrap_or(1);
        let entries = if count > 1 {
            state.segment_parts(&record, from, limit)?
        } else {
            Vec::new()
        };
        Ok((count, entries))
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    match listed {
        Ok((count, entries)) => Response::Segments { count, entries },
        Err(e) => internal(e),
    }
}

/// The share this node holds of `id`: committed, or staged with the digest the catalog
/// names for this node (committed while the node installed a snapshot).
fn held_share(
    shares: &crate::shares::ShareStore,
    state: &crate::raft::state_machine::StateMachine,
    node_id: u64,
    id: &RecordId,
) -> std::io::Result<Option<crate::shares::StoredShare>> {
    if let Some(s) = shares.committed(id)? {
        return Ok(Some(s));
    }
    if let (Some(staged), Some(entry)) = (shares.staged(id)?, state.record(id)?)
        && entry.holder_on(node_id).map(|h| h.digest) == Some(staged.digest)
    {
        return Ok(Some(staged));
    }
    Ok(None)
}

/// Releases this node's shares of `records` to the holder of `ticket`: a read ticket
/// to its reader (zone and network checked), a deep audit ticket to its auditor. Only
/// once the ticket's entry is applied here. Returns the answer and the share bytes.
pub async fn fetch(
    ctx: &ServerContext,
    identity: &Identity,
    remote: IpAddr,
    ticket_id: u64,
    records: Vec<RecordId>,
) -> (Response, Vec<u8>) {
    let refuse = |r: Response| (r, Vec::new());
    if let Err(reason) = auth::check_reader_origin(identity, remote, &ctx.config) {
        return refuse(error(ErrorKind::Forbidden, reason));
    }
    let ticket = match usable_ticket(ctx, identity, ticket_id, &records).await {
        Ok(t) => t,
        Err(r) => return refuse(r),
    };
    let releases = match ticket.purpose {
        TicketPurpose::Read { .. } => identity.role == Role::Reader,
        TicketPurpose::Audit { deep } => deep && identity.role == Role::Auditor,
        TicketPurpose::ErasureCheck => false,
    };
    if !releases {
        return refuse(error(
            ErrorKind::Forbidden,
            format!("ticket {ticket_id} releases no shares (a light audit sees digests only)"),
        ));
    }
    // A read ticket lives no longer than its grant: once this node has applied the
    // revocation (or the grant expired), no fetch under the grant's open tickets.
    if let TicketPurpose::Read { job } = &ticket.purpose {
        match ctx.state.grant(job) {
            Ok(Some(g)) if g.revoked.is_none() && unix_ms() < g.expires_at_ms => {}
            Ok(Some(g)) if g.revoked.is_some() => {
                return refuse(error(
                    ErrorKind::Forbidden,
                    format!("the grant of job '{job}' was revoked; its tickets release nothing"),
                ));
            }
            Ok(_) => {
                return refuse(error(
                    ErrorKind::Forbidden,
                    format!(
                        "the grant of job '{job}' has expired or is gone; open a new ticket under a valid grant"
                    ),
                ));
            }
            Err(e) => return refuse(internal(e)),
        }
    }
    let state = ctx.state.clone();
    let shares = ctx.shares.clone();
    let node_id = ctx.node.id;
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let mut items = Vec::with_capacity(records.len());
        let mut parts: Vec<Vec<u8>> = Vec::with_capacity(records.len());
        let mut total = 0u64;
        for id in records {
            let share = held_share(&shares, &state, node_id, &id)?;
            let size_bytes = share.as_ref().map(|s| s.bytes.len() as u64);
            if let Some(s) = share {
                total += s.bytes.len() as u64;
                if total > MAX_FETCH_REPLY_BYTES {
                    return Ok(Err(()));
                }
                parts.push(s.bytes);
            }
            items.push(FetchedShare {
                record: id,
                size_bytes,
            });
        }
        // One share (a large record's fetch) goes out as read; several are joined
        // once, into a buffer of their exact size.
        let data = match parts.len() {
            1 => parts.pop().unwrap_or_default(),
            _ => parts.concat(),
        };
        Ok(Ok((items, data)))
    })
    .await;
    match read {
        Ok(Ok(Ok((items, data)))) => {
            kakera_net::crash::point("fetch.read");
            tracing::info!(
                peer = %identity.name,
                ticket = ticket_id,
                shares = items.len(),
                bytes = data.len(),
                "shares released"
            );
            (Response::Shares { items }, data)
        }
        Ok(Ok(Err(()))) => refuse(error(
            ErrorKind::TooLarge,
            format!("the shares asked for exceed {MAX_FETCH_REPLY_BYTES} bytes; ask for fewer"),
        )),
        Ok(Err(e)) => refuse(internal(e)),
        Err(e) => refuse(internal(e)),
    }
}

/// Opens an audit ticket (auditor). Answers with the ticket and the records' entries.
pub async fn open_audit(
    ctx: &ServerContext,
    identity: &Identity,
    request_id: RequestId,
    records: Vec<RecordId>,
    deep: bool,
) -> Response {
    if let Err(r) = check_ids(ctx, &records) {
        return r;
    }
    let action = ClientAction::OpenAudit {
        records: records.clone(),
        deep,
        ttl_ms: AUDIT_TICKET_TTL_MS,
    };
    let log_index = match propose(ctx, identity, request_id, action).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    ticket_answer(ctx, log_index, &records)
}

/// Opens an erasure-check ticket (auditor). Answers with the ticket and the catalog
/// entries of those records that are still in the catalog.
pub async fn open_erasure_check(
    ctx: &ServerContext,
    identity: &Identity,
    request_id: RequestId,
    records: Vec<RecordId>,
) -> Response {
    if let Err(r) = check_ids(ctx, &records) {
        return r;
    }
    let action = ClientAction::OpenErasureCheck {
        records: records.clone(),
        ttl_ms: AUDIT_TICKET_TTL_MS,
    };
    let log_index = match propose(ctx, identity, request_id, action).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let ticket = match ctx.state.ticket(log_index) {
        Ok(Some(t)) => t,
        Ok(None) => return internal("an applied ticket is missing"),
        Err(e) => return internal(e),
    };
    let mut entries = Vec::new();
    for id in &records {
        match ctx.state.record(id) {
            Ok(Some(e)) => entries.push(e),
            Ok(None) => {}
            Err(e) => return internal(e),
        }
    }
    Response::ReadTicket { ticket, entries }
}

/// A usable ticket of the purpose `purpose_ok` accepts (`what` names it in the
/// refusal).
async fn ticket_for(
    ctx: &ServerContext,
    identity: &Identity,
    ticket_id: u64,
    records: &[RecordId],
    purpose_ok: impl Fn(&TicketPurpose) -> bool,
    what: &str,
) -> Result<Ticket, Response> {
    let ticket = usable_ticket(ctx, identity, ticket_id, records).await?;
    if !purpose_ok(&ticket.purpose) {
        return Err(error(
            ErrorKind::Forbidden,
            format!("ticket {ticket_id} is not an {what} ticket"),
        ));
    }
    Ok(ticket)
}

/// Under an erasure-check ticket: whether this node stores anything of each record,
/// committed or staged. Presence only; no bytes, no digests leave the node.
pub async fn probe_shares(
    ctx: &ServerContext,
    identity: &Identity,
    ticket_id: u64,
    records: Vec<RecordId>,
) -> Response {
    let purpose_ok = |p: &TicketPurpose| *p == TicketPurpose::ErasureCheck;
    if let Err(r) = ticket_for(
        ctx,
        identity,
        ticket_id,
        &records,
        purpose_ok,
        "erasure-check",
    )
    .await
    {
        return r;
    }
    let shares = ctx.shares.clone();
    let probe = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        records
            .into_iter()
            .map(|id| {
                let (committed, staged) = shares.presence(&id)?;
                Ok(ShareProbe {
                    record: id,
                    committed,
                    staged,
                })
            })
            .collect::<std::io::Result<Vec<_>>>()
    })
    .await;
    match probe {
        Ok(Ok(items)) => Response::Probes { items },
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

/// The ticket applied at `log_index` and the catalog entries of `records`.
fn ticket_answer(ctx: &ServerContext, log_index: u64, records: &[RecordId]) -> Response {
    let ticket = match ctx.state.ticket(log_index) {
        Ok(Some(t)) => t,
        Ok(None) => return internal("an applied ticket is missing"),
        Err(e) => return internal(e),
    };
    let mut entries = Vec::with_capacity(records.len());
    for id in records {
        match ctx.state.record(id) {
            Ok(Some(e)) => entries.push(e),
            Ok(None) => return internal(format!("record {id} vanished after its ticket")),
            Err(e) => return internal(e),
        }
    }
    Response::ReadTicket { ticket, entries }
}

/// Under an audit ticket: recomputes the digest of each share this node holds of
/// `records`. Share bytes never leave the node.
pub async fn verify_shares(
    ctx: &ServerContext,
    identity: &Identity,
    ticket_id: u64,
    records: Vec<RecordId>,
) -> Response {
    let purpose_ok = |p: &TicketPurpose| matches!(p, TicketPurpose::Audit { .. });
    if let Err(r) = ticket_for(ctx, identity, ticket_id, &records, purpose_ok, "audit").await {
        return r;
    }
    share_checks(ctx, records).await
}

/// This node's shares of `records` re-read: the digest stored with each and the one
/// its bytes hash to now (digests only, never bytes).
pub(crate) async fn share_checks(ctx: &ServerContext, records: Vec<RecordId>) -> Response {
    let state = ctx.state.clone();
    let shares = ctx.shares.clone();
    let node_id = ctx.node.id;
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        records
            .into_iter()
            .map(|id| {
                let held = held_share(&shares, &state, node_id, &id)?.map(|s| HeldShare {
                    stored_digest: s.digest,
                    computed_digest: Digest::of(&s.bytes),
                    size_bytes: s.bytes.len() as u64,
                });
                Ok(ShareCheck { record: id, held })
            })
            .collect::<std::io::Result<Vec<_>>>()
    })
    .await;
    match read {
        Ok(Ok(items)) => Response::ShareChecks { items },
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

/// A page of catalog entries (linearizable, at the leader).
pub async fn list(
    ctx: &ServerContext,
    filter: ListFilter,
    after: Option<RecordId>,
    limit: u32,
) -> Response {
    if let Err(r) = linearizable(ctx).await {
        return r;
    }
    let state = ctx.state.clone();
    match tokio::task::spawn_blocking(move || state.list(&filter, after, limit)).await {
        Ok(Ok((entries, next))) => Response::Listing { entries, next },
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

/// Creates a grant (operator), with the review committee's signatures when the
/// config names a committee (an unsigned grant is then refused here, before the
/// committee is even recorded in the catalog).
pub async fn create_grant(
    ctx: &ServerContext,
    identity: &Identity,
    request_id: RequestId,
    grant: Grant,
    signatures: Option<Vec<kakera_proto::committee::CommitteeSignature>>,
) -> Response {
    if let Err(e) = grant.validate(unix_ms()) {
        return error(ErrorKind::BadRequest, e.to_string());
    }
    let job = grant.job.clone();
    let action = match (signatures, &ctx.config.committee) {
        (None, Some(c)) => {
            return error(
                ErrorKind::Forbidden,
                format!(
                    "grants on this cluster need {} signatures of the data provision review \
                     committee (kakera grant sign), not one operator",
                    c.threshold
                ),
            );
        }
        (None, None) => ClientAction::CreateGrant { grant },
        (Some(signatures), _) => ClientAction::CreateSignedGrant { grant, signatures },
    };
    match propose(ctx, identity, request_id, action).await {
        Ok(log_index) => {
            tracing::info!(peer = %identity.name, %job, "grant created");
            Response::Committed { log_index }
        }
        Err(r) => r,
    }
}

/// Revokes a grant (operator).
pub async fn revoke_grant(
    ctx: &ServerContext,
    identity: &Identity,
    request_id: RequestId,
    job: String,
    reason: String,
) -> Response {
    if reason.trim().is_empty() || reason.len() > 1024 {
        return error(
            ErrorKind::BadRequest,
            "a revocation needs a reason of 1 to 1024 characters",
        );
    }
    match propose(
        ctx,
        identity,
        request_id,
        ClientAction::RevokeGrant { job, reason },
    )
    .await
    {
        Ok(log_index) => Response::Committed { log_index },
        Err(r) => r,
    }
}

/// Every grant (linearizable); a reader gets only the grants naming it.
pub async fn list_grants(ctx: &ServerContext, identity: &Identity) -> Response {
    // The whole list in one answer, for clients before paging: bounded, and refused
    // past the bound rather than cut short.
    match list_grants_page(ctx, identity, None, OLD_GRANT_LIST_MAX).await {
        Response::GrantsPage { next: Some(_), .. } => error(
            ErrorKind::TooLarge,
            format!(
                "more than {OLD_GRANT_LIST_MAX} grants: list them a page at a time (a newer \
                 kakera client does)"
            ),
        ),
        Response::GrantsPage { grants, next: None } => Response::Grants { grants },
        other => other,
    }
}

/// Most grants an unpaged grant list answers.
const OLD_GRANT_LIST_MAX: u32 = 10_000;

/// A page of grants (linearizable): every grant for an operator or auditor; a reader
/// learns its own scope and nothing of other jobs' grants.
pub async fn list_grants_page(
    ctx: &ServerContext,
    identity: &Identity,
    after: Option<String>,
    limit: u32,
) -> Response {
    if let Err(r) = linearizable(ctx).await {
        return r;
    }
    let reader = (identity.role == Role::Reader).then(|| identity.name.clone());
    let state = ctx.state.clone();
    let read = tokio::task::spawn_blocking(move || {
        state.grants_page(after.as_deref(), limit as usize, reader.as_deref())
    })
    .await;
    match read {
        Ok(Ok((grants, next))) => Response::GrantsPage { grants, next },
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

/// A page of the audit log (linearizable).
pub async fn audit_log(ctx: &ServerContext, query: AuditQuery) -> Response {
    if let Err(r) = linearizable(ctx).await {
        return r;
    }
    let state = ctx.state.clone();
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let (entries, next_after) = state.audit(&query)?;
        let head = state.audit_head()?;
        Ok((entries, next_after, head))
    })
    .await;
    match read {
        Ok(Ok((entries, next_after, head))) => Response::Audit {
            entries,
            next_after,
            head: (head.seq > 0).then_some((head.seq, head.hash)),
        },
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}
