//! Node modes, the cluster's topology view, and masked repair between nodes (see
//! `kakera_shamir::repair` for the protocol and `crate::repair` for the decisions).
//!
//! 1. The leader assigns a move through Raft (`RepairStep::Assign`), then asks the new
//!    holder to run it (`RepairRun`).
//! 2. The new holder picks k helpers and sends each `RepairPrepare`. A helper checks
//!    that the move is assigned in its applied state to exactly this requester, and
//!    sends a fresh pad seed directly to every helper after it (`RepairPad`).
//! 3. Once every helper prepared, the new holder asks each for its masked term
//!    (`RepairContribute`), adds them into share x, checks the catalog digest and
//!    stages it (synced). It answers the leader `Repaired`.
//! 4. The leader commits the move (`RepairStep::Commit`): the catalog names the new
//!    holder, which promotes its staged share; the old holder, if alive, deletes its.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kakera_proto::catalog::{NodeMode, RepairTask};
use kakera_proto::message::MAX_REPAIR_BATCH;
use kakera_proto::{
    ErrorKind, Identity, NodeHealth, RepairBatchSession, RepairProgress, RepairSession,
    RepairTermItem, Request, RequestId, Response,
};
use kakera_shamir::Share;
use kakera_shamir::repair::{PadSeed, assemble, masked_term};
use openraft::async_runtime::watch::WatchReceiver;

use super::records::{internal, not_leader, propose};
use super::server::{ServerContext, error};
use crate::clock::unix_ms;
use crate::raft::commands::ClientAction;
use crate::repair::{
    HealthState, HealthTracker, HelperBatch, HelperSession, NodeFacts, Sessions, choose_helpers,
};

/// How long a helper waits to apply a move's assignment.
const ASSIGN_WAIT_MS: u64 = 5_000;
/// How long one helper call may take (a term is at most a record's size).
const HELPER_TIMEOUT_MS: u64 = 60_000;
/// Attempts with different helpers before a repair run gives up.
const MAX_HELPER_ATTEMPTS: usize = 3;

/// Confirmed bad shares by (record, holder).
pub type BadShares = BTreeMap<(kakera_proto::RecordId, u64), kakera_proto::catalog::ShareReport>;

/// What the leader knows of the cluster beyond the replicated state: health, repair
/// progress, share counts; and every node's helper sessions. Shared by the server and
/// the daemon's loops.
#[derive(Debug)]
pub struct ClusterView {
    /// The monotonic clock's origin.
    pub origin: Instant,
    /// Failure detector (meaningful on the leader).
    pub health: Mutex<HealthTracker>,
    /// Repair progress (on the leader).
    pub progress: Mutex<RepairProgress>,
    /// Shares per node as counted by the leader's last full scan.
    pub shares: Mutex<std::collections::BTreeMap<u64, u64>>,
    /// This node's helper sessions and received pads.
    pub sessions: Mutex<Sessions>,
    /// Bad shares their holders confirmed, waiting for in-place repair (on the
    /// leader; at most `report::MAX_CONFIRMED`), by record and holder.
    pub bad_shares: Mutex<BadShares>,
    /// This node's scrubber's progress (`crate::scrub`).
    pub scrub: Mutex<kakera_proto::ScrubStatus>,
    /// Batched repair sessions this node runs as a new holder at once (memory:
    /// each holds k terms of at most `BATCH_SESSION_BYTES`).
    pub repair_sessions: tokio::sync::Semaphore,
    /// Data-path requests this node was asked: its scrubber slows down while these
    /// come (`crate::background`).
    pub foreground: crate::background::Foreground,
}

impl Default for ClusterView {
    fn default() -> ClusterView {
        ClusterView {
            origin: Instant::now(),
            health: Mutex::new(HealthTracker::default()),
            progress: Mutex::new(RepairProgress::default()),
            shares: Mutex::new(Default::default()),
            sessions: Mutex::new(Sessions::default()),
            bad_shares: Mutex::new(BTreeMap::new()),
            scrub: Mutex::new(Default::default()),
            repair_sessions: tokio::sync::Semaphore::new(SESSIONS_AT_ONCE),
            foreground: Default::default(),
        }
    }
}

impl ClusterView {
    /// Milliseconds on the monotonic clock.
    pub fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}

/// Locks a mutex, recovering the data if a holder panicked (the data are plain
/// counters and maps, valid at every step).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The health verdict on `node` now.
pub fn health_of(ctx: &ServerContext, node: u64) -> HealthState {
    let now = ctx.view.now_ms();
    lock(&ctx.view.health).state(node, now, &ctx.config)
}

/// Sets a node's mode (operator; at the leader). Decommissioning needs the node to
/// hold no share — or to be dead (removing a node that is gone for good: its shares
/// are then regenerated elsewhere).
pub async fn set_node_mode(
    ctx: &ServerContext,
    identity: &Identity,
    request_id: RequestId,
    node: u64,
    mode: NodeMode,
    reason: String,
) -> Response {
    if ctx.config.node(node).is_none() {
        return error(
            ErrorKind::NotFound,
            format!("node {node} is not in the cluster config"),
        );
    }
    if reason.trim().is_empty() || reason.len() > 512 {
        return error(
            ErrorKind::BadRequest,
            "give a reason of 1-512 characters (it is audited)",
        );
    }
    if !ctx.raft.is_leader() {
        return not_leader(ctx);
    }
    if mode == NodeMode::Decommissioned {
        let held = match count_holdings(ctx, node).await {
            Ok(n) => n,
            Err(r) => return r,
        };
        if held > 0 && health_of(ctx, node) != HealthState::Dead {
            return error(
                ErrorKind::BadRequest,
                format!(
                    "node {node} still holds {held} shares; drain it first \
                     (`kakera node drain {node} --wait`), or remove it once it is dead"
                ),
            );
        }
    }
    let action = ClientAction::SetNodeMode { node, mode, reason };
    match propose(ctx, identity, request_id, action).await {
        Ok(_) => Response::Accepted,
        Err(r) => r,
    }
}

/// Shares the catalog places on `node` (a full scan, bounded by the catalog's size).
async fn count_holdings(ctx: &ServerContext, node: u64) -> Result<u64, Response> {
    let state = ctx.state.clone();
    let count = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let mut after = None;
        let mut held = 0;
        // Bounded: each page advances `after` through a finite catalog.
        loop {
            let (page, next) = state.list(&kakera_proto::catalog::ListFilter::All, after, 1000)?;
            held += page.iter().filter(|e| e.holder_on(node).is_some()).count() as u64;
            match next {
                Some(n) => after = Some(n),
                None => return Ok(held),
            }
        }
    })
    .await;
    match count {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(internal(e)),
        Err(e) => Err(internal(e)),
    }
}

/// What the leader knows of every configured node now: mode (replicated), health
/// (its failure detector; itself always alive), shares held (last scan).
pub fn node_facts(ctx: &ServerContext) -> std::io::Result<BTreeMap<u64, NodeFacts>> {
    let modes = ctx.state.node_modes()?;
    let now = ctx.view.now_ms();
    let health = lock(&ctx.view.health).clone();
    let shares = lock(&ctx.view.shares).clone();
    Ok(ctx
        .config
        .nodes
        .iter()
        .map(|n| {
            let facts = NodeFacts {
                id: n.id,
                rack: n.rack.clone(),
                mode: modes
                    .iter()
                    .find(|m| m.node == n.id)
                    .map_or(NodeMode::Active, |m| m.mode),
                health: if n.id == ctx.node.id {
                    HealthState::Alive
                } else {
                    health.state(n.id, now, &ctx.config)
                },
                shares: shares.get(&n.id).copied().unwrap_or(0),
            };
            (n.id, facts)
        })
        .collect())
}

/// Every node's mode and health and the repair progress (at the leader, once a
/// quorum confirms it still leads: a deposed leader cut off from the others would
/// call every node silent and have clients place shares on itself alone).
pub async fn topology(ctx: &ServerContext) -> Response {
    if !ctx.raft.is_leader() {
        return not_leader(ctx);
    }
    if let Err(r) = crate::transport::records::linearizable(ctx).await {
        return r;
    }
    let facts = match node_facts(ctx) {
        Ok(f) => f,
        Err(e) => return internal(e),
    };
    let now = ctx.view.now_ms();
    let health = lock(&ctx.view.health).clone();
    let nodes = facts
        .into_values()
        .map(|f| NodeHealth {
            node: f.id,
            mode: f.mode,
            health: f.health.as_str().to_string(),
            silent_ms: if f.id == ctx.node.id {
                Some(0)
            } else {
                health.silent_ms(f.id, now)
            },
            shares: f.shares,
        })
        .collect();
    let repair = lock(&ctx.view.progress).clone();
    Response::Topology { nodes, repair }
}

/// The config node id of a node peer, from its certificate's name.
fn node_id_of(ctx: &ServerContext, identity: &Identity) -> Option<u64> {
    ctx.config.node_by_name(&identity.name).map(|n| n.id)
}

/// Waits until the move's assignment is applied here and checks it is the pending one.
async fn assigned(ctx: &ServerContext, task: &RepairTask) -> Result<(), Response> {
    let wait = ctx
        .raft
        .wait(Some(Duration::from_millis(ASSIGN_WAIT_MS)))
        .applied_index_at_least(Some(task.assigned_index), "repair assignment")
        .await;
    if wait.is_err() {
        return Err(error(
            ErrorKind::Unavailable,
            "this node has not applied the repair assignment yet; retry",
        ));
    }
    match ctx.state.pending_repair(&task.record) {
        Ok(Some(p)) if p == *task => Ok(()),
        Ok(_) => Err(error(
            ErrorKind::Forbidden,
            format!("no such repair of record {} is assigned", task.record),
        )),
        Err(e) => Err(internal(e)),
    }
}

/// Helper side, step 2: checks the session against the catalog, sends pads to the
/// helpers after this one, and keeps the session.
pub async fn prepare(ctx: &ServerContext, identity: &Identity, session: RepairSession) -> Response {
    let task = &session.task;
    if node_id_of(ctx, identity) != Some(task.to) {
        return error(
            ErrorKind::Forbidden,
            "only the assigned new holder may run this repair",
        );
    }
    if let Err(r) = assigned(ctx, task).await {
        return r;
    }
    let entry = match ctx.state.record(&task.record) {
        Ok(Some(e)) => e,
        Ok(None) => return error(ErrorKind::NotFound, "the record is not in the catalog"),
        Err(e) => return internal(e),
    };
    // Exactly k distinct holders, each with its catalog x, none at the target x.
    let mut seen = std::collections::BTreeSet::new();
    let sound = session.helpers.len() == usize::from(entry.k)
        && session.helpers.iter().all(|(n, x)| {
            seen.insert(*n) && *x != task.x && entry.holder_on(*n).is_some_and(|h| h.x == *x)
        });
    let Some(pos) = session.helpers.iter().position(|(n, _)| *n == ctx.node.id) else {
        return error(ErrorKind::BadRequest, "this node is not among the helpers");
    };
    if !sound || task.to == ctx.node.id {
        return error(
            ErrorKind::BadRequest,
            "the helpers do not match the catalog (k distinct holders other than the target)",
        );
    }
    let later: Vec<u64> = session.helpers[pos + 1..].iter().map(|(n, _)| *n).collect();
    let drawn = match send_pads(ctx, session.id, &later).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let now = ctx.view.now_ms();
    let kept = lock(&ctx.view.sessions).insert(
        HelperSession {
            session,
            drawn,
            at_ms: now,
        },
        now,
    );
    if kept {
        Response::Accepted
    } else {
        error(
            ErrorKind::Unavailable,
            "too many repair sessions here; retry",
        )
    }
}

/// Draws a fresh pad seed for each helper in `later` (the ones after this helper in
/// session order) and sends it to that helper directly; the seeds drawn.
async fn send_pads(
    ctx: &ServerContext,
    session: [u8; 16],
    later: &[u64],
) -> Result<Vec<PadSeed>, Response> {
    let mut drawn = Vec::with_capacity(later.len());
    for node in later {
        let seed = PadSeed::random().map_err(internal)?;
        let peer = ctx
            .peers
            .get(node)
            .ok_or_else(|| error(ErrorKind::BadRequest, format!("node {node} is not a peer")))?;
        let body = Request::RepairPad {
            session,
            seed: *seed.as_bytes(),
        };
        let timeout = Duration::from_millis(HELPER_TIMEOUT_MS);
        match peer.call(&ctx.cluster_id, body, timeout).await {
            Ok(Response::Accepted) => drawn.push(seed),
            other => {
                return Err(error(
                    ErrorKind::Unavailable,
                    format!(
                        "helper node {node} did not take its pad: {}",
                        describe(&other)
                    ),
                ));
            }
        }
    }
    Ok(drawn)
}

/// Helper side: keeps a pad from another helper.
pub fn pad(
    ctx: &ServerContext,
    identity: &Identity,
    session: [u8; 16],
    seed: [u8; 32],
) -> Response {
    let Some(from) = node_id_of(ctx, identity) else {
        return error(
            ErrorKind::Forbidden,
            "the sender is not a node of this cluster",
        );
    };
    let now = ctx.view.now_ms();
    if lock(&ctx.view.sessions).pad(session, from, PadSeed::from_bytes(seed), now) {
        Response::Accepted
    } else {
        error(ErrorKind::Unavailable, "too many repair pads here; retry")
    }
}

/// Helper side, step 3: the masked term (as trailer bytes).
pub async fn contribute(
    ctx: &ServerContext,
    identity: &Identity,
    session_id: [u8; 16],
) -> (Response, Vec<u8>) {
    let refuse = |r: Response| (r, Vec::new());
    let taken = lock(&ctx.view.sessions).take(session_id, ctx.node.id);
    let (session, seeds) = match taken {
        Ok(t) => t,
        Err(reason) => return refuse(error(ErrorKind::BadRequest, reason)),
    };
    if node_id_of(ctx, identity) != Some(session.task.to) {
        return refuse(error(
            ErrorKind::Forbidden,
            "only the assigned new holder may collect the terms",
        ));
    }
    let shares = ctx.shares.clone();
    let work = tokio::task::spawn_blocking(move || -> Result<(Response, Vec<u8>), String> {
        let stored = shares
            .committed(&session.task.record)
            .map_err(|e| e.to_string())?
            .ok_or("this helper holds no committed share of the record")?;
        let share = Share::decode(&stored.bytes).map_err(|e| e.to_string())?;
        let xs: Vec<u8> = session.helpers.iter().map(|(_, x)| *x).collect();
        let term = masked_term(&share, &xs, session.task.x, &seeds).map_err(|e| e.to_string())?;
        Ok((
            Response::RepairTerm {
                set_id: share.set_id().0,
                k: share.threshold(),
                size_bytes: term.len() as u64,
            },
            term.to_vec(),
        ))
    })
    .await;
    match work {
        Ok(Ok(answer)) => {
            kakera_net::crash::point("repair.contributed");
            answer
        }
        Ok(Err(reason)) => refuse(error(ErrorKind::Unavailable, reason)),
        Err(e) => refuse(internal(e)),
    }
}

// The config's bound on moves per session is the wire's.
const _: () = assert!(
    kakera_config::MAX_REPAIR_BATCH_MOVES as usize == MAX_REPAIR_BATCH,
    "kakera_config::MAX_REPAIR_BATCH_MOVES must equal kakera_proto's MAX_REPAIR_BATCH"
);

/// Waits until this node has applied every task's assignment and checks that each
/// is assigned, as given, in its applied state.
async fn all_assigned(ctx: &ServerContext, tasks: &[RepairTask]) -> Result<(), Response> {
    let Some(last) = tasks.iter().map(|t| t.assigned_index).max() else {
        return Ok(());
    };
    let wait = ctx
        .raft
        .wait(Some(Duration::from_millis(ASSIGN_WAIT_MS)))
        .applied_index_at_least(Some(last), "repair assignment")
        .await;
    if wait.is_err() {
        return Err(error(
            ErrorKind::Unavailable,
            "this node has not applied the repair assignment yet; retry",
        ));
    }
    for t in tasks {
        match ctx.state.pending_repair(&t.record) {
            Ok(Some(p)) if p == *t => {}
            Ok(_) => {
                return Err(error(
                    ErrorKind::Forbidden,
                    format!("no such repair of record {} is assigned", t.record),
                ));
            }
            Err(e) => return Err(internal(e)),
        }
    }
    Ok(())
}

/// The batch's tasks if they are sound for one session: 1 to [`MAX_REPAIR_BATCH`]
/// tasks, one new holder, each record's k helpers among `helpers` exactly (distinct
/// holders, none at the target x).
fn check_batch(ctx: &ServerContext, session: &RepairBatchSession) -> Result<u64, Response> {
    let bad = |m: String| error(ErrorKind::BadRequest, m);
    let to = session
        .tasks
        .first()
        .map(|t| t.to)
        .ok_or_else(|| bad("an empty repair batch".into()))?;
    if session.tasks.len() > MAX_REPAIR_BATCH || session.tasks.iter().any(|t| t.to != to) {
        return Err(bad(format!(
            "a repair batch holds 1 to {MAX_REPAIR_BATCH} moves to one node"
        )));
    }
    let distinct: std::collections::BTreeSet<u64> = session.helpers.iter().copied().collect();
    if distinct.len() != session.helpers.len() || distinct.contains(&to) {
        return Err(bad(
            "the helpers must be distinct nodes other than the new holder".into(),
        ));
    }
    let mut total_bytes = 0u64;
    for t in &session.tasks {
        let entry = match ctx.state.record(&t.record) {
            Ok(Some(e)) => e,
            Ok(None) => {
                return Err(error(
                    ErrorKind::NotFound,
                    format!("record {} is not in the catalog", t.record),
                ));
            }
            Err(e) => return Err(internal(e)),
        };
        let sound = session.helpers.len() == usize::from(entry.k)
            && session
                .helpers
                .iter()
                .all(|n| entry.holder_on(*n).is_some_and(|h| h.x != t.x));
        if !sound {
            return Err(bad(format!(
                "the helpers do not match the catalog for record {} (k distinct holders other than the target)",
                t.record
            )));
        }
        total_bytes = total_bytes.saturating_add(entry.sealed_len);
    }
    // The terms this helper builds for one answer: bounded like the new holder's
    // sessions (one larger record may go alone).
    if session.tasks.len() > 1 && total_bytes > BATCH_SESSION_BYTES {
        return Err(bad(format!(
            "a repair session moves at most {BATCH_SESSION_BYTES} bytes of shares (one larger record alone)"
        )));
    }
    Ok(to)
}

/// Helper side of a batched session, step 2: checks every task against the
/// catalog, sends one pad seed to each helper after this one (each share of the
/// batch is masked with its own pad derived from it), and keeps the session.
pub async fn prepare_batch(
    ctx: &ServerContext,
    identity: &Identity,
    session: RepairBatchSession,
) -> Response {
    let to = match check_batch(ctx, &session) {
        Ok(to) => to,
        Err(r) => return r,
    };
    if node_id_of(ctx, identity) != Some(to) {
        return error(
            ErrorKind::Forbidden,
            "only the assigned new holder may run this repair",
        );
    }
    if let Err(r) = all_assigned(ctx, &session.tasks).await {
        return r;
    }
    let Some(pos) = session.helpers.iter().position(|n| *n == ctx.node.id) else {
        return error(ErrorKind::BadRequest, "this node is not among the helpers");
    };
    let later = session.helpers[pos + 1..].to_vec();
    let drawn = match send_pads(ctx, session.id, &later).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let now = ctx.view.now_ms();
    let kept = lock(&ctx.view.sessions).insert_batch(
        HelperBatch {
            session,
            drawn,
            at_ms: now,
        },
        now,
    );
    if kept {
        Response::Accepted
    } else {
        error(
            ErrorKind::Unavailable,
            "too many repair sessions here; retry",
        )
    }
}

/// Helper side of a batched session, step 3: every task's masked term, in task
/// order (as trailer bytes).
pub async fn contribute_batch(
    ctx: &ServerContext,
    identity: &Identity,
    session_id: [u8; 16],
) -> (Response, Vec<u8>) {
    let refuse = |r: Response| (r, Vec::new());
    let taken = lock(&ctx.view.sessions).take_batch(session_id, ctx.node.id);
    let (session, seeds) = match taken {
        Ok(t) => t,
        Err(reason) => return refuse(error(ErrorKind::BadRequest, reason)),
    };
    if session.tasks.first().map(|t| t.to) != node_id_of(ctx, identity) {
        return refuse(error(
            ErrorKind::Forbidden,
            "only the assigned new holder may collect the terms",
        ));
    }
    let (shares, state) = (ctx.shares.clone(), ctx.state.clone());
    let work = tokio::task::spawn_blocking(move || -> Result<(Response, Vec<u8>), String> {
        let mut items = Vec::with_capacity(session.tasks.len());
        let mut out = Vec::new();
        for t in &session.tasks {
            let entry = state
                .record(&t.record)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("record {} is not in the catalog", t.record))?;
            let xs: Vec<u8> = session
                .helpers
                .iter()
                .map(|n| entry.holder_on(*n).map(|h| h.x))
                .collect::<Option<_>>()
                .ok_or("a helper is no longer a holder of the record")?;
            let stored = shares
                .committed(&t.record)
                .map_err(|e| e.to_string())?
                .ok_or("this helper holds no committed share of the record")?;
            let share = Share::decode(&stored.bytes).map_err(|e| e.to_string())?;
            let record_seeds: Vec<PadSeed> = seeds.iter().map(|s| s.derive(&t.record.0)).collect();
            let term = masked_term(&share, &xs, t.x, &record_seeds).map_err(|e| e.to_string())?;
            items.push(RepairTermItem {
                record: t.record,
                set_id: share.set_id().0,
                k: share.threshold(),
                size_bytes: term.len() as u64,
            });
            out.extend_from_slice(&term);
        }
        Ok((Response::RepairTerms { items }, out))
    })
    .await;
    match work {
        Ok(Ok(answer)) => {
            kakera_net::crash::point("repair.contributed");
            answer
        }
        Ok(Err(reason)) => refuse(error(ErrorKind::Unavailable, reason)),
        Err(e) => refuse(internal(e)),
    }
}

/// New-holder side of [`Request::RepairRunBatch`]: checks the caller is the leader.
pub async fn run_batch(
    ctx: &ServerContext,
    identity: &Identity,
    tasks: Vec<RepairTask>,
    avoid: &[u64],
) -> Response {
    let leader_node = ctx
        .raft
        .metrics()
        .borrow_watched()
        .current_leader
        .map(kakera_proto::ids::node_of);
    if node_id_of(ctx, identity).is_none() || node_id_of(ctx, identity) != leader_node {
        return error(ErrorKind::Forbidden, "only the leader runs repairs");
    }
    run_assigned_batch(ctx, tasks, avoid).await
}

/// Most share bytes one batched session moves (its terms travel in one answer per
/// helper).
const BATCH_SESSION_BYTES: u64 = 8 * 1024 * 1024;

/// Runs assigned moves whose new holder is this node, batched: the moves that share
/// a helper set run as one session (one pad exchange, one request per helper), and
/// every regenerated share is stored in one synced write. A batch whose session
/// fails runs move by move ([`run_assigned`], which tries other helpers).
pub async fn run_assigned_batch(
    ctx: &ServerContext,
    tasks: Vec<RepairTask>,
    avoid: &[u64],
) -> Response {
    if tasks.len() > MAX_REPAIR_BATCH || tasks.iter().any(|t| t.to != ctx.node.id) {
        return error(
            ErrorKind::BadRequest,
            format!("a repair batch holds at most {MAX_REPAIR_BATCH} moves to this node"),
        );
    }
    if let Err(r) = all_assigned(ctx, &tasks).await {
        return r;
    }
    let mut done = Vec::new();
    let mut failed = Vec::new();
    // (helpers) -> [(task, entry, expected digest)]
    type Group = Vec<(
        RepairTask,
        kakera_proto::catalog::RecordEntry,
        kakera_proto::Digest,
    )>;
    let mut groups: BTreeMap<Vec<u64>, Vec<Group>> = BTreeMap::new();
    for t in tasks {
        let entry = match ctx.state.record(&t.record) {
            Ok(Some(e)) => e,
            Ok(None) => {
                failed.push((t.record, "the record is not in the catalog".to_string()));
                continue;
            }
            Err(e) => {
                failed.push((t.record, e.to_string()));
                continue;
            }
        };
        let Some(expected) = entry
            .holder_on(t.from)
            .filter(|h| h.x == t.x)
            .map(|h| h.digest)
        else {
            failed.push((t.record, "the catalog does not match the move".to_string()));
            continue;
        };
        let in_place = t.cause == kakera_proto::catalog::RepairCause::Corrupt;
        let staged = ctx
            .shares
            .staged(&t.record)
            .ok()
            .flatten()
            .is_some_and(|s| s.digest == expected);
        let restored = in_place
            && ctx
                .shares
                .committed(&t.record)
                .ok()
                .flatten()
                .is_some_and(|s| kakera_proto::Digest::of(&s.bytes) == expected);
        if staged || restored {
            done.push((t.record, expected));
            continue;
        }
        let Some(helpers) = choose_helpers(&entry, &t, &[], avoid) else {
            failed.push((t.record, "fewer than k holders can help".to_string()));
            continue;
        };
        let key: Vec<u64> = helpers.iter().map(|(n, _)| *n).collect();
        let chunks = groups.entry(key).or_default();
        // A Shamir share is as long as the sealed record.
        let size = entry.sealed_len;
        let fits = chunks.last().is_some_and(|c| {
            c.len() < MAX_REPAIR_BATCH
                && c.iter().map(|(_, e, _)| e.sealed_len).sum::<u64>() + size <= BATCH_SESSION_BYTES
        });
        if !fits {
            chunks.push(Vec::new());
        }
        if let Some(c) = chunks.last_mut() {
            c.push((t, entry, expected));
        }
    }
    // Sessions run SESSIONS_AT_ONCE at a time on this node (whatever number of
    // batches the leader sends), each moving at most BATCH_SESSION_BYTES.
    let jobs = groups
        .into_iter()
        .flat_map(|(helpers, chunks)| chunks.into_iter().map(move |c| (helpers.clone(), c)));
    let mut results = futures::StreamExt::buffer_unordered(
        futures::stream::iter(jobs.map(|(helpers, chunk)| run_chunk(ctx, helpers, chunk, avoid))),
        SESSIONS_AT_ONCE,
    );
    while let Some((ok, bad)) = futures::StreamExt::next(&mut results).await {
        done.extend(ok);
        failed.extend(bad);
    }
    Response::RepairedBatch { done, failed }
}

/// Batched sessions one new holder runs at once.
const SESSIONS_AT_ONCE: usize = 4;

/// Runs one chunk of a batch as a session and stores its shares: the records done
/// (with their digests) and the ones that failed. A failed session runs its moves
/// one by one ([`run_assigned`], which tries other helpers).
async fn run_chunk(
    ctx: &ServerContext,
    helpers: Vec<u64>,
    chunk: Vec<(
        RepairTask,
        kakera_proto::catalog::RecordEntry,
        kakera_proto::Digest,
    )>,
    avoid: &[u64],
) -> (
    Vec<(kakera_proto::RecordId, kakera_proto::Digest)>,
    Vec<(kakera_proto::RecordId, String)>,
) {
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    // The node's bound on sessions in flight, whichever batches they belong to.
    let Ok(_slot) = ctx.view.repair_sessions.acquire().await else {
        failed.extend(
            chunk
                .iter()
                .map(|(t, _, _)| (t.record, "the node is stopping".to_string())),
        );
        return (done, failed);
    };
    let session_tasks: Vec<RepairTask> = chunk.iter().map(|(t, _, _)| t.clone()).collect();
    match session_batch(ctx, &session_tasks, &helpers).await {
        Ok(shares) => {
            let mut store = Vec::with_capacity(shares.len());
            for ((t, _, expected), bytes) in chunk.iter().zip(shares) {
                if kakera_proto::Digest::of(&bytes) == *expected {
                    let in_place = t.cause == kakera_proto::catalog::RepairCause::Corrupt;
                    store.push((t.record, bytes, in_place));
                } else {
                    failed.push((
                        t.record,
                        "the regenerated share does not match the catalog digest (a helper's share is bad)"
                            .to_string(),
                    ));
                }
            }
            let records: Vec<kakera_proto::RecordId> = store.iter().map(|(r, _, _)| *r).collect();
            let shares_store = ctx.shares.clone();
            let now = unix_ms();
            let stored =
                tokio::task::spawn_blocking(move || shares_store.store_repaired(&store, now)).await;
            match stored {
                Ok(Ok(results)) => {
                    kakera_net::crash::point("repair.staged");
                    for (record, r) in records.into_iter().zip(results) {
                        match r {
                            Ok(d) => done.push((record, d)),
                            Err(reason) => failed.push((record, reason)),
                        }
                    }
                }
                Ok(Err(e)) => failed.extend(records.into_iter().map(|r| (r, e.to_string()))),
                Err(e) => failed.extend(records.into_iter().map(|r| (r, e.to_string()))),
            }
        }
        Err(reason) => {
            tracing::info!(%reason, moves = session_tasks.len(), "a batched repair session failed; running its moves one by one");
            for t in session_tasks {
                let record = t.record;
                match Box::pin(run_assigned(ctx, t, avoid)).await {
                    Response::Repaired { digest } => done.push((record, digest)),
                    other => failed.push((record, format!("{other:?}"))),
                }
            }
        }
    }
    (done, failed)
}

/// One batched masked-repair session: prepares every helper, collects each one's
/// terms, and assembles every task's share (encoded), in task order.
async fn session_batch(
    ctx: &ServerContext,
    tasks: &[RepairTask],
    helpers: &[u64],
) -> Result<Vec<Vec<u8>>, String> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| e.to_string())?;
    let session = RepairBatchSession {
        id,
        tasks: tasks.to_vec(),
        helpers: helpers.to_vec(),
    };
    let timeout = Duration::from_millis(HELPER_TIMEOUT_MS);
    let peer = |n: u64| {
        ctx.peers
            .get(&n)
            .cloned()
            .ok_or_else(|| format!("node {n} is not a peer"))
    };
    let prepares = helpers.iter().map(|n| {
        let body = Request::RepairPrepareBatch {
            session: session.clone(),
        };
        let p = peer(*n);
        async move {
            match p {
                Ok(p) => match p.call(&ctx.cluster_id, body, timeout).await {
                    Ok(Response::Accepted) => Ok(()),
                    other => Err(format!("helper node {n}: {}", describe(&other))),
                },
                Err(e) => Err(e),
            }
        }
    });
    for r in futures::future::join_all(prepares).await {
        r?;
    }
    let limit = BATCH_SESSION_BYTES + 2 * kakera_proto::catalog::MAX_RECORD_BYTES;
    let contributions = helpers.iter().map(|n| {
        let p = peer(*n);
        async move {
            let body = Request::RepairContributeBatch { session: id };
            match p {
                Ok(p) => p
                    .call_full(&ctx.cluster_id, body, &[], limit, timeout)
                    .await
                    .map_err(|e| format!("helper node {n}: {e}")),
                Err(e) => Err(e),
            }
        }
    });
    // Per helper: the terms of every task, in task order.
    let mut per_helper: Vec<Vec<(RepairTermItem, Vec<u8>)>> = Vec::with_capacity(helpers.len());
    for (n, r) in helpers
        .iter()
        .zip(futures::future::join_all(contributions).await)
    {
        let (answer, bytes) = r?;
        let Response::RepairTerms { items } = answer else {
            return Err(format!("helper node {n}: unexpected answer {answer:?}"));
        };
        let total: u64 = items.iter().map(|i| i.size_bytes).sum();
        if items.len() != tasks.len() || total != bytes.len() as u64 {
            return Err(format!(
                "helper node {n} sent terms that do not match the session"
            ));
        }
        let mut at = 0usize;
        let mut terms = Vec::with_capacity(items.len());
        for (item, t) in items.into_iter().zip(tasks) {
            if item.record != t.record {
                return Err(format!("helper node {n} sent terms out of order"));
            }
            let len = usize::try_from(item.size_bytes).map_err(|e| e.to_string())?;
            terms.push((item, bytes[at..at + len].to_vec()));
            at += len;
        }
        per_helper.push(terms);
    }
    let mut out = Vec::with_capacity(tasks.len());
    for (i, t) in tasks.iter().enumerate() {
        let first = &per_helper[0][i].0;
        if per_helper
            .iter()
            .any(|h| (h[i].0.set_id, h[i].0.k) != (first.set_id, first.k))
        {
            return Err(format!(
                "record {}: the helpers hold shares of different sharings",
                t.record
            ));
        }
        let refs: Vec<&[u8]> = per_helper.iter().map(|h| h[i].1.as_slice()).collect();
        let share = assemble(&refs, kakera_shamir::SetId(first.set_id), first.k, t.x)
            .map_err(|e| e.to_string())?;
        out.push(share.encode());
    }
    Ok(out)
}

fn describe<T: std::fmt::Debug>(r: &Result<T, kakera_net::NetError>) -> String {
    match r {
        Err(e) => e.to_string(),
        Ok(other) => format!("unexpected answer {other:?}"),
    }
}

/// New-holder side: runs an assigned move (steps 2-3) and stages the share.
pub async fn run(
    ctx: &ServerContext,
    identity: &Identity,
    task: RepairTask,
    avoid: &[u64],
) -> Response {
    let leader_node = ctx
        .raft
        .metrics()
        .borrow_watched()
        .current_leader
        .map(kakera_proto::ids::node_of);
    if node_id_of(ctx, identity).is_none() || node_id_of(ctx, identity) != leader_node {
        return error(ErrorKind::Forbidden, "only the leader starts repairs");
    }
    run_assigned(ctx, task, avoid).await
}

/// Runs an assigned move whose new holder is this node (the leader calls it directly
/// when it is the new holder itself).
pub async fn run_assigned(ctx: &ServerContext, task: RepairTask, avoid: &[u64]) -> Response {
    if task.to != ctx.node.id {
        return error(
            ErrorKind::BadRequest,
            "this node is not the move's new holder",
        );
    }
    if let Err(r) = assigned(ctx, &task).await {
        return r;
    }
    let entry = match ctx.state.record(&task.record) {
        Ok(Some(e)) => e,
        Ok(None) => return error(ErrorKind::NotFound, "the record is not in the catalog"),
        Err(e) => return internal(e),
    };
    let Some(expected) = entry
        .holder_on(task.from)
        .filter(|h| h.x == task.x)
        .map(|h| h.digest)
    else {
        return error(ErrorKind::BadRequest, "the catalog does not match the move");
    };
    // In place: this node's own share is bad and is regenerated over it.
    let in_place = task.cause == kakera_proto::catalog::RepairCause::Corrupt;
    // Already staged by an earlier run whose answer was lost.
    if let Ok(Some(s)) = ctx.shares.staged(&task.record)
        && s.digest == expected
    {
        return Response::Repaired { digest: expected };
    }
    // Already restored in place (or the report was wrong after all): the bytes
    // themselves hash to the catalog's digest.
    if in_place
        && let Ok(Some(s)) = ctx.shares.committed(&task.record)
        && kakera_proto::Digest::of(&s.bytes) == expected
    {
        return Response::Repaired { digest: expected };
    }
    let mut excluded = Vec::new();
    let mut last = String::from("no attempt was made");
    for _ in 0..MAX_HELPER_ATTEMPTS {
        let Some(helpers) = choose_helpers(&entry, &task, &excluded, avoid) else {
            break;
        };
        match session(ctx, &task, &helpers).await {
            Ok(bytes) => {
                let digest = kakera_proto::Digest::of(&bytes);
                if digest != expected {
                    return error(
                        ErrorKind::Internal,
                        "the regenerated share does not match the catalog digest (a helper's share is bad)",
                    );
                }
                let shares = ctx.shares.clone();
                let record = task.record;
                let now = unix_ms();
                let staged = tokio::task::spawn_blocking(move || {
                    if in_place {
                        shares.restore(&record, &bytes, now)
                    } else {
                        shares.stage_repaired(&record, &bytes, now)
                    }
                })
                .await;
                return match staged {
                    Ok(Ok(d)) => {
                        kakera_net::crash::point("repair.staged");
                        Response::Repaired { digest: d }
                    }
                    Ok(Err(e)) => internal(e),
                    Err(e) => internal(e),
                };
            }
            Err((failed, reason)) => {
                last = reason;
                excluded.extend(failed);
            }
        }
    }
    error(
        ErrorKind::Unavailable,
        format!("repair of record {} failed: {last}", task.record),
    )
}

/// One masked-repair session with `helpers`. On failure: the helpers that failed and
/// why.
async fn session(
    ctx: &ServerContext,
    task: &RepairTask,
    helpers: &[(u64, u8)],
) -> Result<Vec<u8>, (Vec<u64>, String)> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| (Vec::new(), e.to_string()))?;
    let session = RepairSession {
        id,
        task: task.clone(),
        helpers: helpers.to_vec(),
    };
    let timeout = Duration::from_millis(HELPER_TIMEOUT_MS);
    let peer = |n: u64| ctx.peers.get(&n).cloned();
    // Prepare every helper; pads flow between them during this step.
    let prepares = helpers.iter().map(|(n, _)| {
        let body = Request::RepairPrepare {
            session: session.clone(),
        };
        let p = peer(*n);
        async move {
            let r = match p {
                Some(p) => p.call(&ctx.cluster_id, body, timeout).await,
                None => Err(kakera_net::NetError::Refused {
                    peer: format!("node {n}"),
                    kind: ErrorKind::BadRequest,
                    message: "not a peer".into(),
                }),
            };
            (*n, r)
        }
    });
    let mut failed = Vec::new();
    let mut reason = String::new();
    for (n, r) in futures::future::join_all(prepares).await {
        if !matches!(r, Ok(Response::Accepted)) {
            reason = format!("helper node {n}: {}", describe(&r));
            failed.push(n);
        }
    }
    if !failed.is_empty() {
        return Err((failed, reason));
    }
    let limit = 2 * kakera_proto::catalog::MAX_RECORD_BYTES;
    let contributions = helpers.iter().map(|(n, _)| {
        let p = peer(*n);
        async move {
            let body = Request::RepairContribute { session: id };
            let r = match p {
                Some(p) => {
                    p.call_full(&ctx.cluster_id, body, &[], limit, timeout)
                        .await
                }
                None => Err(kakera_net::NetError::Refused {
                    peer: format!("node {n}"),
                    kind: ErrorKind::BadRequest,
                    message: "not a peer".into(),
                }),
            };
            (*n, r)
        }
    });
    let mut terms = Vec::with_capacity(helpers.len());
    let mut facts = None;
    for (n, r) in futures::future::join_all(contributions).await {
        match r {
            Ok((
                Response::RepairTerm {
                    set_id,
                    k,
                    size_bytes,
                },
                bytes,
            )) if size_bytes == bytes.len() as u64 => {
                if facts.is_some_and(|f| f != (set_id, k)) {
                    failed.push(n);
                    reason = format!("helper node {n} holds a share of another sharing");
                }
                facts = Some((set_id, k));
                terms.push(bytes);
            }
            other => {
                reason = format!("helper node {n}: {}", describe(&other.map(|(r, _)| r)));
                failed.push(n);
            }
        }
    }
    if !failed.is_empty() {
        return Err((failed, reason));
    }
    let Some((set_id, k)) = facts else {
        return Err((Vec::new(), "no helper answered".into()));
    };
    let refs: Vec<&[u8]> = terms.iter().map(Vec::as_slice).collect();
    let share = assemble(&refs, kakera_shamir::SetId(set_id), k, task.x)
        .map_err(|e| (Vec::new(), e.to_string()))?;
    Ok(share.encode())
}
