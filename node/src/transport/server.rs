//! The request server: accepts QUIC connections, reads the peer's identity from its
//! certificate once per connection, and for every request (one stream each) checks the
//! cluster id and the role x operation matrix before dispatching. A bad request gets a
//! clear error on its own stream; it never takes the connection or the node down.

use std::net::IpAddr;
use std::sync::Arc;

use kakera_config::{ClusterConfig, NodeConfig};
use kakera_proto::frame::{
    DEFAULT_MAX_FRAME_BYTES, TRAILER_FRAME_BYTES, read_frame_body, read_frame_len, read_raw_frame,
    write_frame, write_trailer,
};
use kakera_proto::{
    ErrorKind, ErrorReply, Identity, NodeStatus, ProtoError, RaftStatus, Request, RequestEnvelope,
    RequestId, Response, auth, codec, ids,
};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::vote::RaftLeaderId as _;
use openraft::{ServerState, Snapshot};
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;

use super::records;
use crate::raft::state_machine::StateMachine;
use crate::raft::{Command, CommandResponse, RaftHandle, TypeConfig};
use crate::shares::ShareStore;
use kakera_proto::revocation::CertRef;

/// What the server needs to answer requests.
pub struct ServerContext {
    /// This node.
    pub node: NodeConfig,
    /// The cluster config (names of the nodes that may join).
    pub config: ClusterConfig,
    /// The cluster id requests must name.
    pub cluster_id: String,
    /// This node's Raft member id.
    pub raft_id: u64,
    /// The node's Raft.
    pub raft: RaftHandle,
    /// The applied state (reads of the catalog).
    pub state: StateMachine,
    /// This node's shares.
    pub shares: ShareStore,
    /// Largest frame accepted.
    pub max_frame_bytes: u32,
    /// One peer per other node (repair traffic).
    pub peers: std::collections::BTreeMap<u64, std::sync::Arc<kakera_net::Peer>>,
    /// Health, repair progress and helper sessions.
    pub view: std::sync::Arc<super::repair::ClusterView>,
    /// Live connections per peer identity (`max_connections_per_peer`).
    pub connections: ConnectionCounts,
    /// Request bytes in flight per peer identity (`max_request_bytes_per_identity`).
    pub request_bytes: RequestBytes,
    /// Request counts and latencies, read by the metrics port.
    pub metrics: crate::metrics::Metrics,
    /// This node's backup parts.
    pub backups: Arc<crate::backup::BackupBoard>,
    /// When this node last heard from a leader it follows.
    pub leader_contact: LeaderContact,
    /// The CAs and revocation lists in force (`crate::trust`).
    pub trust: Arc<crate::trust::Trust>,
}

/// When a node last accepted an append or a snapshot from a leader (one that was not
/// refused for a stale vote), on a monotonic clock.
#[derive(Debug)]
pub struct LeaderContact {
    base: std::time::Instant,
    /// Milliseconds since `base` of the last contact; `u64::MAX` for never.
    last_ms: std::sync::atomic::AtomicU64,
}

impl Default for LeaderContact {
    fn default() -> LeaderContact {
        LeaderContact {
            base: std::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(u64::MAX),
        }
    }
}

impl LeaderContact {
    /// Notes a contact now.
    pub fn touch(&self) {
        let now = self.base.elapsed().as_millis() as u64;
        self.last_ms
            .store(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// Milliseconds since the last contact (None: never).
    pub fn age_ms(&self) -> Option<u64> {
        match self.last_ms.load(std::sync::atomic::Ordering::Relaxed) {
            u64::MAX => None,
            at => Some((self.base.elapsed().as_millis() as u64).saturating_sub(at)),
        }
    }
}

/// Amounts held per peer identity (certificate name) against a limit: live
/// connections (`max_connections_per_peer`) and request bytes in flight
/// (`max_request_bytes_per_identity`: envelopes from the moment their length is read,
/// share bytes from the moment their request announces them, until the request is
/// answered). A reservation that would pass the limit is refused before the work it
/// stands for starts (issue 22: hostile input holds no memory it did not earn).
#[derive(Default)]
pub struct PerIdentity {
    by_name: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

/// Live connections per identity.
pub type ConnectionCounts = PerIdentity;
/// Request bytes in flight per identity.
pub type RequestBytes = PerIdentity;

/// An amount held for one identity; dropping it gives it back.
pub struct Held<'a> {
    ledger: &'a PerIdentity,
    name: String,
    amount: u64,
}

impl PerIdentity {
    /// Holds `amount` more for `name` if its total stays within `limit`; else returns
    /// what it already holds.
    pub fn reserve(&self, name: &str, amount: u64, limit: u64) -> Result<Held<'_>, u64> {
        // A poisoned lock only means another task panicked mid-update; the counts
        // themselves are plain integers and stay usable.
        let mut map = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        let live = map.entry(name.to_string()).or_insert(0);
        if live.saturating_add(amount) > limit {
            let held = *live;
            if held == 0 {
                map.remove(name);
            }
            return Err(held);
        }
        *live += amount;
        Ok(Held {
            ledger: self,
            name: name.to_string(),
            amount,
        })
    }

    /// A connection slot for `name` if it holds fewer than `limit`, else `None`.
    pub fn admit(&self, name: &str, limit: u32) -> Option<Held<'_>> {
        self.reserve(name, 1, u64::from(limit)).ok()
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut map = self
            .ledger
            .by_name
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(live) = map.get_mut(&self.name) {
            assert!(*live >= self.amount, "this amount was held under this name");
            *live -= self.amount;
            if *live == 0 {
                map.remove(&self.name);
            }
        }
    }
}

/// The refusal of a request whose bytes would pass the identity's in-flight limit.
pub(crate) fn over_request_bytes(name: &str, bytes: u64, held: u64, limit: u64) -> Response {
    error(
        ErrorKind::Busy,
        format!(
            "'{name}' already has {held} request bytes in flight on this node; {bytes} more \
             would pass the limit of {limit} (max_request_bytes_per_identity): retry when \
             a request finishes"
        ),
    )
}

/// A refusal with a sentence for the caller.
pub(crate) fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
    Response::Error(ErrorReply {
        kind,
        message: message.into(),
    })
}

/// Serves until `shutdown` turns true, then stops accepting.
pub async fn serve(
    endpoint: quinn::Endpoint,
    ctx: Arc<ServerContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let ctx = ctx.clone();
                tokio::spawn(async move { handle_connection(incoming, ctx).await });
            }
            _ = shutdown.changed() => break,
        }
    }
}

/// The peer's identity, its certificate's issuer and serial, and when it expires
/// (Unix ms).
fn peer_identity(conn: &quinn::Connection) -> Result<(Identity, CertRef, Option<u64>), String> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or("the peer presented no certificate")?;
    let leaf = certs.first().ok_or("the peer presented no certificate")?;
    let identity = Identity::from_cert_der(leaf).map_err(|e| e.to_string())?;
    let cert = kakera_proto::revocation::cert_ref(leaf).map_err(|e| e.to_string())?;
    Ok((identity, cert, Identity::not_after_ms(leaf)))
}

/// The refusal of a request on a connection whose certificate was revoked since.
fn revoked(identity: &Identity, cert: &CertRef) -> Response {
    error(
        ErrorKind::Forbidden,
        format!(
            "the certificate of '{}' ({cert}) is revoked; ask the cluster's operators for a \
             new one",
            identity.name
        ),
    )
}

/// QUIC application close code: the peer's certificate expired while connected.
pub const CLOSE_CERTIFICATE_EXPIRED: u32 = kakera_net::CLOSE_CERTIFICATE_EXPIRED;

async fn handle_connection(incoming: quinn::Incoming, ctx: Arc<ServerContext>) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(%remote, error = %e, "connection refused during handshake");
            return;
        }
    };
    let (identity, cert, not_after_ms) = match peer_identity(&conn) {
        Ok((id, cert, not_after)) => (Arc::new(id), Arc::new(cert), not_after),
        Err(reason) => {
            tracing::warn!(%remote, %reason, "closing connection: no usable identity");
            conn.close(1u32.into(), b"certificate carries no kakera identity");
            return;
        }
    };
    let limits = ctx.config.limits;
    let Some(_slot) = ctx
        .connections
        .admit(&identity.name, limits.max_connections_per_peer)
    else {
        tracing::warn!(%remote, peer = %identity, limit = limits.max_connections_per_peer,
            "closing connection: too many connections for this identity");
        let reason = format!(
            "too many connections for '{}': at most {} at once (max_connections_per_peer)",
            identity.name, limits.max_connections_per_peer
        );
        conn.close(CLOSE_TOO_MANY_CONNECTIONS.into(), reason.as_bytes());
        return;
    };
    tracing::debug!(%remote, peer = %identity, "connection accepted");
    let in_flight = Arc::new(tokio::sync::Semaphore::new(
        limits.max_requests_per_connection as usize,
    ));
    // The handshake checked the certificate once; a connection lives no longer than
    // it (keep-alives would otherwise hold it open past its expiry).
    let left_ms = not_after_ms.map_or(0, |t| t.saturating_sub(crate::clock::unix_ms()));
    let expires = tokio::time::sleep(std::time::Duration::from_millis(left_ms));
    tokio::pin!(expires);
    // A revocation recorded while connected closes the connection within the time
    // the keeper takes to apply it (the handshake refuses it from then on).
    let mut trust_changes = ctx.trust.subscribe();
    let mut watching = true;
    loop {
        if ctx.trust.is_revoked(&cert) {
            tracing::warn!(%remote, peer = %identity, "closing connection: the peer's certificate is revoked");
            conn.close(
                crate::trust::CLOSE_CERTIFICATE_REVOKED.into(),
                b"your certificate was revoked",
            );
            return;
        }
        let accepted = tokio::select! {
            a = conn.accept_bi() => a,
            changed = trust_changes.changed(), if watching => {
                // The sender lives as long as the server context; if it is gone,
                // stop watching rather than wake for ever.
                watching = changed.is_ok();
                continue;
            }
            () = &mut expires => {
                tracing::info!(%remote, peer = %identity, "closing connection: the peer's certificate expired");
                conn.close(
                    CLOSE_CERTIFICATE_EXPIRED.into(),
                    b"your certificate expired; renew it and reconnect",
                );
                return;
            }
        };
        match accepted {
            Ok((send, recv)) => {
                let ctx = ctx.clone();
                let identity = identity.clone();
                let cert = cert.clone();
                let ip = remote.ip();
                match in_flight.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tokio::spawn(async move {
                            handle_stream(ctx, identity, cert, ip, send, recv).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        tracing::debug!(%remote, peer = %identity.name, "busy: request refused");
                        ctx.metrics
                            .observe("unread", "busy", std::time::Duration::ZERO);
                        tokio::spawn(busy(send, recv, limits.max_requests_per_connection));
                    }
                }
            }
            Err(e) => {
                tracing::debug!(%remote, error = %e, "connection closed");
                return;
            }
        }
    }
}

/// How long a peer has to send a request's envelope once it opened the stream.
pub const REQUEST_READ_TIMEOUT_MS: u64 = 30_000;

/// QUIC application close code: the identity holds too many connections.
pub const CLOSE_TOO_MANY_CONNECTIONS: u32 = 2;

/// Answers a request over the connection's in-flight limit without reading it.
async fn busy(mut send: quinn::SendStream, mut recv: quinn::RecvStream, limit: u32) {
    let _ = recv.stop(0u32.into());
    let response = error(
        ErrorKind::Busy,
        format!(
            "this connection already has {limit} requests in progress \
             (max_requests_per_connection); retry when one finishes"
        ),
    );
    let _ = respond(&mut send, &response, &[]).await;
}

async fn handle_stream(
    ctx: Arc<ServerContext>,
    identity: Arc<Identity>,
    cert: Arc<CertRef>,
    remote: IpAddr,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let arrived = std::time::Instant::now();
    let limit = ctx.config.limits.max_request_bytes_per_identity;
    // The envelope's length first; its bytes are reserved before the body is read,
    // and stay reserved until the request is answered.
    let read = tokio::time::timeout(
        std::time::Duration::from_millis(REQUEST_READ_TIMEOUT_MS),
        async {
            let Some(len) = read_frame_len(&mut recv, ctx.max_frame_bytes).await? else {
                return Ok(None);
            };
            let held = match ctx
                .request_bytes
                .reserve(&identity.name, u64::from(len), limit)
            {
                Ok(h) => h,
                Err(in_flight) => return Ok(Some(Err((len, in_flight)))),
            };
            let body = read_frame_body(&mut recv, len).await?;
            let env: RequestEnvelope = codec::decode(&body)?;
            Ok::<_, ProtoError>(Some(Ok((env, held))))
        },
    );
    let Ok(read) = read.await else {
        // A peer that opens a stream and never finishes its request would hold a
        // request slot of its connection for ever.
        tracing::debug!(peer = %identity.name, "request not sent in time: stream dropped");
        ctx.metrics.observe("unread", "timeout", arrived.elapsed());
        let _ = recv.stop(0u32.into());
        let _ = send.reset(0u32.into());
        return;
    };
    let mut name = "unreadable";
    let (response, trailer) = match read {
        Ok(Some(Ok((env, _held)))) => {
            name = env.body.name();
            if crate::background::Foreground::is_data_path(env.body.operation()) {
                ctx.view.foreground.asked();
            }
            if ctx.trust.is_revoked(&cert) {
                let _ = recv.stop(0u32.into());
                (revoked(&identity, &cert), Vec::new())
            } else {
                handle_request(&ctx, &identity, remote, env, &mut recv).await
            }
        }
        Ok(Some(Err((len, in_flight)))) => {
            let _ = recv.stop(0u32.into());
            (
                over_request_bytes(&identity.name, u64::from(len), in_flight, limit),
                Vec::new(),
            )
        }
        Ok(None) => return,
        Err(ProtoError::TooLarge {
            size_bytes,
            limit_bytes,
        }) => (
            error(
                ErrorKind::TooLarge,
                format!(
                    "request of {size_bytes} bytes exceeds the frame limit of {limit_bytes} bytes"
                ),
            ),
            Vec::new(),
        ),
        Err(e) => (
            error(ErrorKind::BadRequest, format!("unreadable request: {e}")),
            Vec::new(),
        ),
    };
    if let Err(e) = respond(&mut send, &response, &trailer).await {
        tracing::debug!(peer = %identity.name, error = %e, "could not send the response");
    }
    ctx.metrics
        .observe(name, crate::metrics::outcome(&response), arrived.elapsed());
}

/// Writes the answer and its trailer, then finishes the stream.
async fn respond(
    send: &mut quinn::SendStream,
    response: &Response,
    trailer: &[u8],
) -> Result<(), ProtoError> {
    write_frame(send, response, DEFAULT_MAX_FRAME_BYTES).await?;
    write_trailer(send, &[trailer]).await?;
    // The peer may already have gone; its answer was written as far as it could be.
    let _ = send.finish();
    Ok(())
}

async fn handle_request(
    ctx: &ServerContext,
    identity: &Identity,
    remote: IpAddr,
    env: RequestEnvelope,
    recv: &mut quinn::RecvStream,
) -> (Response, Vec<u8>) {
    let op = env.body.operation();
    if env.cluster_id != ctx.cluster_id {
        let r = error(
            ErrorKind::WrongCluster,
            format!(
                "this node belongs to cluster '{}', the request names '{}'",
                ctx.cluster_id,
                bounded(&env.cluster_id)
            ),
        );
        return (r, Vec::new());
    }
    if let Err(reason) = auth::authorize(identity.role, op) {
        tracing::warn!(peer = %identity, op = op.as_str(), request = %env.request_id, "refused");
        return (error(ErrorKind::Forbidden, reason), Vec::new());
    }
    if let Request::FetchShares { ticket, records } = env.body {
        return records::fetch(ctx, identity, remote, ticket, records).await;
    }
    if let Request::RepairContribute { session } = env.body {
        return super::repair::contribute(ctx, identity, session).await;
    }
    if let Request::RepairContributeBatch { session } = env.body {
        return super::repair::contribute_batch(ctx, identity, session).await;
    }
    let request = Incoming {
        identity,
        remote,
        request_id: env.request_id,
    };
    match dispatch(ctx, &request, env.body, recv).await {
        Ok(r) => (r, Vec::new()),
        Err(e) => {
            tracing::warn!(peer = %identity.name, op = op.as_str(), error = %e, "request failed");
            (error(ErrorKind::BadRequest, e.to_string()), Vec::new())
        }
    }
}

/// At most [`ECHO_CHARS`] characters of a caller's string, for an error message that
/// must not echo unbounded input back.
fn bounded(text: &str) -> String {
    let mut out: String = text.chars().take(ECHO_CHARS).collect();
    if out.len() < text.len() {
        out.push_str("...");
    }
    out
}

/// Most characters of a caller's string an error message repeats.
pub const ECHO_CHARS: usize = 64;

/// Who sent a request, from where, under which id.
struct Incoming<'a> {
    identity: &'a Identity,
    remote: IpAddr,
    request_id: RequestId,
}

async fn dispatch(
    ctx: &ServerContext,
    incoming: &Incoming<'_>,
    body: Request,
    recv: &mut quinn::RecvStream,
) -> Result<Response, ProtoError> {
    let identity = incoming.identity;
    let request_id = incoming.request_id;
    Ok(match body {
        Request::Ping => Response::Pong {
            node_id: ctx.node.id,
            node_name: ctx.node.name.clone(),
            peer_name: identity.name.clone(),
            peer_role: identity.role,
        },
        Request::Status => Response::Status(Box::new(status(ctx))),
        Request::ScrubStatus => Response::Scrub(*super::repair::lock(&ctx.view.scrub)),
        Request::RaftAppend { to, payload } => {
            if let Some(refusal) = wrong_member(ctx, to).or_else(|| not_a_member(ctx, identity)) {
                return Ok(refusal);
            }
            let rpc: openraft::raft::AppendEntriesRequest<TypeConfig> = codec::decode(&payload)?;
            if let Some(refusal) = speaks_for_another(ctx, identity, rpc.vote.leader_id().node_id())
            {
                return Ok(refusal);
            }
            let answer = ctx.raft.append_entries(rpc).await;
            if matches!(&answer, Ok(r) if !matches!(r, openraft::raft::AppendEntriesResponse::HigherVote(_)))
            {
                ctx.leader_contact.touch();
            }
            Response::Raft(codec::encode(&answer)?)
        }
        Request::RaftVote { to, payload } => {
            if let Some(refusal) = wrong_member(ctx, to).or_else(|| not_a_member(ctx, identity)) {
                return Ok(refusal);
            }
            let rpc: openraft::raft::VoteRequest<TypeConfig> = codec::decode(&payload)?;
            if let Some(refusal) = speaks_for_another(ctx, identity, rpc.vote.leader_id().node_id())
            {
                return Ok(refusal);
            }
            Response::Raft(codec::encode(&ctx.raft.vote(rpc).await)?)
        }
        Request::RaftPreVote { to, payload } => {
            if let Some(refusal) = wrong_member(ctx, to).or_else(|| not_a_member(ctx, identity)) {
                return Ok(refusal);
            }
            let rpc: openraft::raft::VoteRequest<TypeConfig> = codec::decode(&payload)?;
            if let Some(refusal) = speaks_for_another(ctx, identity, rpc.vote.leader_id().node_id())
            {
                return Ok(refusal);
            }
            Response::Raft(codec::encode(&ctx.raft.pre_vote(rpc).await)?)
        }
        Request::RaftTransferLeader { to, payload } => {
            if let Some(refusal) = wrong_member(ctx, to).or_else(|| not_a_member(ctx, identity)) {
                return Ok(refusal);
            }
            let rpc: openraft::raft::TransferLeaderRequest<TypeConfig> = codec::decode(&payload)?;
            let from = rpc.from_leader().leader_id().node_id();
            if let Some(refusal) = speaks_for_another(ctx, identity, from) {
                return Ok(refusal);
            }
            let res = ctx
                .raft
                .handle_transfer_leader(rpc)
                .await
                .map_err(openraft::errors::RaftError::<TypeConfig>::Fatal);
            Response::Raft(codec::encode(&res)?)
        }
        Request::RaftJoin { raft_id } => join(ctx, identity, raft_id).await,
        Request::StageShares { items } => records::stage(ctx, identity, items, recv).await,
        Request::CommitRecords { records } => {
            records::commit(ctx, identity, request_id, records, false).await
        }
        Request::CommitSegmented { records } => {
            records::commit(ctx, identity, request_id, records, true).await
        }
        Request::Segments {
            ticket,
            record,
            from,
            limit,
        } => {
            let remote = incoming.remote;
            records::segments(ctx, identity, remote, ticket, record, from, limit).await
        }
        Request::OpenRead { job, records } => {
            let remote = incoming.remote;
            records::open_read(ctx, identity, remote, request_id, job, records, false).await
        }
        Request::OpenReadEach { job, records } => {
            let remote = incoming.remote;
            records::open_read(ctx, identity, remote, request_id, job, records, true).await
        }
        // Answered in handle_request (its answer carries share bytes).
        Request::FetchShares { .. } => error(ErrorKind::Internal, "misrouted fetch"),
        Request::OpenAudit { records, deep } => {
            records::open_audit(ctx, identity, request_id, records, deep).await
        }
        Request::RepairContribute { .. } | Request::RepairContributeBatch { .. } => {
            error(ErrorKind::Internal, "misrouted repair term")
        }
        Request::RepairRunBatch { tasks, mut avoid } => {
            avoid.truncate(kakera_proto::message::MAX_REPAIR_AVOID);
            super::repair::run_batch(ctx, identity, tasks, &avoid).await
        }
        Request::RepairPrepareBatch { session } => {
            super::repair::prepare_batch(ctx, identity, session).await
        }
        Request::SetNodeMode { node, mode, reason } => {
            super::repair::set_node_mode(ctx, identity, request_id, node, mode, reason).await
        }
        Request::Topology => super::repair::topology(ctx).await,
        Request::RepairRun { task, mut avoid } => {
            avoid.truncate(kakera_proto::message::MAX_REPAIR_AVOID);
            super::repair::run(ctx, identity, task, &avoid).await
        }
        Request::RepairPrepare { session } => super::repair::prepare(ctx, identity, session).await,
        Request::RepairPad { session, seed } => super::repair::pad(ctx, identity, session, seed),
        Request::OpenErasureCheck { records } => {
            records::open_erasure_check(ctx, identity, request_id, records).await
        }
        Request::ProbeShares { ticket, records } => {
            records::probe_shares(ctx, identity, ticket, records).await
        }
        Request::VerifyShares { ticket, records } => {
            records::verify_shares(ctx, identity, ticket, records).await
        }
        Request::List {
            filter,
            after,
            limit,
        } => records::list(ctx, filter, after, limit).await,
        Request::CreateGrant { grant } => {
            records::create_grant(ctx, identity, request_id, grant, None).await
        }
        Request::CreateSignedGrant { grant, signatures } => {
            records::create_grant(ctx, identity, request_id, grant, Some(signatures)).await
        }
        Request::ReportShares { reports } => {
            super::report::report(ctx, identity, request_id, reports).await
        }
        Request::ScrubCheck { records } => super::report::scrub_check(ctx, records).await,
        Request::Revoke { crl, certificates } => {
            super::revoke::revoke(ctx, identity, request_id, crl, certificates).await
        }
        Request::RevokeGrant { job, reason } => {
            records::revoke_grant(ctx, identity, request_id, job, reason).await
        }
        Request::ListGrants => records::list_grants(ctx, identity).await,
        Request::ListGrantsPage { after, limit } => {
            let limit = limit.clamp(1, kakera_proto::catalog::MAX_GRANT_PAGE);
            records::list_grants_page(ctx, identity, after, limit).await
        }
        Request::AuditLog { query } => records::audit_log(ctx, query).await,
        Request::Erase { target, reason } => {
            super::erase::erase(ctx, identity, request_id, target, reason).await
        }
        Request::ListErased {
            subject,
            after,
            limit,
        } => super::erase::list_erased(ctx, subject, after, limit).await,
        Request::Lookup { records, subjects } => super::erase::lookup(ctx, records, subjects).await,
        Request::Backup { dir } => super::backup::start(ctx, identity, request_id, dir).await,
        Request::BackupStatus { backup } => {
            Response::BackupPart(Box::new(ctx.backups.state(&ctx.node.data_dir, backup)))
        }
        Request::RaftSnapshot { to, header } => {
            if let Some(refusal) = wrong_member(ctx, to).or_else(|| not_a_member(ctx, identity)) {
                return Ok(refusal);
            }
            let (vote, meta): (
                openraft::alias::VoteOf<TypeConfig>,
                openraft::alias::SnapshotMetaOf<TypeConfig>,
            ) = codec::decode(&header)?;
            // Before a byte of the stream is read: only the leader the vote names
            // may replace this node's catalog.
            if let Some(refusal) = speaks_for_another(ctx, identity, vote.leader_id().node_id()) {
                return Ok(refusal);
            }
            let received = match receive_snapshot(ctx, recv, identity).await {
                Ok(r) if r.meta == meta => r,
                Ok(r) => {
                    crate::raft::ReceivedSnapshot::remove_files(&r.ssts);
                    return Ok(error(
                        ErrorKind::BadRequest,
                        "the snapshot's meta differs from its header's",
                    ));
                }
                Err(e) => {
                    tracing::warn!(peer = %identity.name, error = %e, "snapshot transfer failed");
                    return Ok(error(
                        ErrorKind::BadRequest,
                        format!("snapshot transfer failed: {e}"),
                    ));
                }
            };
            let ssts = received.ssts.clone();
            let snapshot = Snapshot {
                meta,
                snapshot: crate::raft::SnapshotData::Received(received),
            };
            let res = ctx
                .raft
                .install_full_snapshot(vote, snapshot)
                .await
                .map_err(openraft::errors::RaftError::<TypeConfig>::Fatal);
            if matches!(&res, Ok(r) if r.vote == vote) {
                ctx.leader_contact.touch();
            }
            // Installed files were moved into the database; refused ones are here.
            crate::raft::ReceivedSnapshot::remove_files(&ssts);
            Response::Raft(codec::encode(&res)?)
        }
    })
}

/// Most time between two frames of an incoming snapshot.
pub const SNAPSHOT_CHUNK_READ_TIMEOUT_MS: u64 = 30_000;

/// Reads an incoming snapshot stream from `recv` until the sender finishes it,
/// frame by frame within [`SNAPSHOT_CHUNK_READ_TIMEOUT_MS`] each, and hands it
/// through a channel of a few pieces to a blocking task that writes it into an SST
/// file (step 1 of an install, `raft::snapshot`): memory holds a few frames, disk
/// the SST. The stream's own digest and pair count are checked before the file is
/// complete; on any failure it is removed, and a receiver killed mid-way leaves a
/// `.part` file that the next start removes.
async fn receive_snapshot(
    ctx: &ServerContext,
    recv: &mut quinn::RecvStream,
    identity: &Identity,
) -> std::io::Result<crate::raft::snapshot::ReceivedSnapshot> {
    let (tx, stream) = crate::raft::snapshot::stream_channel();
    let sm = ctx.state.clone();
    let source = format!("from {}", identity.name);
    let writer =
        tokio::task::spawn_blocking(move || sm.receive_snapshot(stream.into_reader(), source));
    let idle = std::time::Duration::from_millis(SNAPSHOT_CHUNK_READ_TIMEOUT_MS);
    // Bounded: each pass takes one frame off the stream or ends it.
    loop {
        let frame =
            match tokio::time::timeout(idle, read_raw_frame(recv, TRAILER_FRAME_BYTES)).await {
                Err(_) => Err(std::io::Error::other(format!(
                    "no snapshot bytes for {SNAPSHOT_CHUNK_READ_TIMEOUT_MS} ms"
                ))),
                Ok(Err(e)) => Err(std::io::Error::other(e)),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(f))) => Ok(f),
            };
        let failed = frame.is_err();
        // A writer that stopped (a malformed stream) has dropped its end: its own
        // error is the one to report.
        if tx.send(frame).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    writer.await.map_err(std::io::Error::other)?
}

/// A refusal if a Raft RPC addresses another incarnation than this node's: an old
/// member's traffic must never reach the new one at the same address.
fn wrong_member(ctx: &ServerContext, to: u64) -> Option<Response> {
    (to != ctx.raft_id).then(|| {
        error(
            ErrorKind::BadRequest,
            format!(
                "this node is Raft member {}, not {}; it started with an empty data \
                 directory and rejoins as a new member",
                ids::describe(ctx.raft_id),
                ids::describe(to)
            ),
        )
    })
}

/// P7 for Raft traffic: a node certificate speaks for the cluster only if its name
/// is a node of the config. Any other certificate with role `node` (a retired node's,
/// one issued by mistake) is refused before its payload is decoded.
fn not_a_member(ctx: &ServerContext, identity: &Identity) -> Option<Response> {
    if ctx.config.nodes.iter().any(|n| n.name == identity.name) {
        return None;
    }
    tracing::warn!(peer = %identity, "raft traffic from a certificate that names no configured node");
    Some(error(
        ErrorKind::Forbidden,
        format!(
            "certificate '{}' names no node of this cluster's config; Raft traffic is taken \
             only from configured nodes",
            identity.name
        ),
    ))
}

/// P7 for Raft traffic: the member an RPC speaks for (the vote's leader or
/// candidate) must be the config node whose certificate sent it, so one node's
/// certificate cannot vote, lead or send a snapshot as another.
fn speaks_for_another(ctx: &ServerContext, identity: &Identity, member: &u64) -> Option<Response> {
    let claimed = ids::node_of(*member);
    let sender = ctx.config.nodes.iter().find(|n| n.name == identity.name);
    if sender.is_some_and(|n| n.id == claimed) {
        return None;
    }
    tracing::warn!(peer = %identity, claimed = %ids::describe(*member), "raft traffic speaking for another member");
    Some(error(
        ErrorKind::Forbidden,
        format!(
            "certificate '{}' may speak only for its own node, not for member {}",
            identity.name,
            ids::describe(*member)
        ),
    ))
}

/// A node asks to be taken into the group under a new Raft member id. Only that
/// node's own certificate may ask, and only the leader acts: it records the
/// incarnation through Raft; membership follows in the leader's duties.
async fn join(ctx: &ServerContext, identity: &Identity, raft_id: u64) -> Response {
    let node_id = ids::node_of(raft_id);
    let Some(node) = ctx.config.node(node_id) else {
        return error(
            ErrorKind::Forbidden,
            format!("node {node_id} is not in this cluster's config"),
        );
    };
    if node.name != identity.name {
        return error(
            ErrorKind::Forbidden,
            format!(
                "a certificate named '{}' may not join as node '{}'",
                identity.name, node.name
            ),
        );
    }
    if !ctx.raft.is_leader() {
        let leader = ctx.raft.metrics().borrow_watched().current_leader;
        return error(
            ErrorKind::NotLeader { leader_id: leader },
            "only the leader takes members in",
        );
    }
    match ctx.state.incarnations() {
        Ok(known) if known.get(&node_id) == Some(&raft_id) => return Response::Accepted,
        Ok(_) => {}
        Err(e) => return error(ErrorKind::Internal, format!("reading incarnations: {e}")),
    }
    let cmd = Command::RegisterIncarnation { node_id, raft_id };
    match ctx.raft.client_write(cmd).await {
        Ok(r) => match r.response() {
            CommandResponse::Applied
            | CommandResponse::Erased { .. }
            | CommandResponse::ReadOpened { .. } => {
                tracing::info!(member = %ids::describe(raft_id), node = %node.name, "join accepted");
                Response::Accepted
            }
            CommandResponse::Refused { reason }
            | CommandResponse::Forbidden { reason }
            | CommandResponse::NotFound { reason } => error(ErrorKind::BadRequest, reason.clone()),
        },
        Err(e) => error(
            ErrorKind::Unavailable,
            format!("could not record the join: {e}"),
        ),
    }
}

/// The leader this node reports: openraft's, except that a follower or learner that
/// has not heard from it within [`crate::raft::LEADER_SILENT_AFTER_MS`] (or never
/// since it started) reports none. Pure.
pub fn reported_leader(
    m: &openraft::RaftMetrics<TypeConfig>,
    contact_age_ms: Option<u64>,
) -> Option<u64> {
    let leader = m.current_leader?;
    if leader == m.id {
        return Some(leader);
    }
    match contact_age_ms {
        Some(age) if age <= crate::raft::LEADER_SILENT_AFTER_MS => Some(leader),
        _ => None,
    }
}

/// This node's view of itself and the group.
pub fn status(ctx: &ServerContext) -> NodeStatus {
    NodeStatus {
        node_id: ctx.node.id,
        name: ctx.node.name.clone(),
        rack: ctx.node.rack.clone(),
        zone: ctx.node.zone.clone(),
        raft: raft_status(ctx),
        usage: crate::usage::measure(ctx.shares.db()),
    }
}

/// The Raft group as this node sees it.
pub fn raft_status(ctx: &ServerContext) -> RaftStatus {
    let m = ctx.raft.metrics().borrow_watched().clone();
    let membership = m.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let learners: Vec<u64> = membership.learner_ids().collect();
    let replication = crate::raft::matched_indexes(&m);
    RaftStatus {
        id: ctx.raft_id,
        initialized: m.membership_config.log_id().is_some(),
        state: match m.state {
            ServerState::Leader => "Leader",
            ServerState::Follower => "Follower",
            ServerState::Candidate => "Candidate",
            ServerState::Learner => "Learner",
            ServerState::Shutdown => "Shutdown",
        }
        .to_string(),
        term: m.current_term,
        leader: reported_leader(&m, ctx.leader_contact.age_ms()),
        last_log_index: m.last_log_index,
        committed: m.cluster_committed.map(|l| l.index()),
        applied: m.last_applied.map(|l| l.index()),
        snapshot: m.snapshot.map(|l| l.index()),
        purged: m.purged.map(|l| l.index()),
        voters,
        learners,
        replication,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 21 item 5 (status never calls a node healthy without a leader): a
    /// follower that openraft still says follows node 1 reports no leader once it has
    /// heard nothing from it for the silence bound, or never heard from it at all; a
    /// leader reports itself.
    #[test]
    fn a_silent_leader_is_not_reported() {
        let mut m = openraft::RaftMetrics::<TypeConfig>::new_initial(2);
        m.current_leader = Some(1);
        assert_eq!(reported_leader(&m, Some(0)), Some(1));
        let bound = crate::raft::LEADER_SILENT_AFTER_MS;
        assert_eq!(reported_leader(&m, Some(bound)), Some(1));
        assert_eq!(reported_leader(&m, Some(bound + 1)), None);
        assert_eq!(reported_leader(&m, None), None);
        m.current_leader = Some(2);
        assert_eq!(reported_leader(&m, None), Some(2));
        m.current_leader = None;
        assert_eq!(reported_leader(&m, Some(0)), None);
    }
}
