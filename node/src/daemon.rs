//! The node daemon: opens storage, starts Raft on the QUIC network, serves requests,
//! bootstraps the group on first start and stops cleanly.
//!
//! Start-up (decisions in [`crate::membership`]): a data directory that starts empty
//! draws a new Raft member id and records it before Raft starts. A node whose log holds
//! a membership restarts from disk. Otherwise it asks its peers: if any belongs to an
//! initialised group it asks the leader to take it in (`Request::RaftJoin`); if none
//! does, the bootstrapper (lowest id among the initial voters) initialises a one-voter
//! group once a majority of the initial voters confirmed they hold none. The leader
//! records the cluster identity (`Command::InitCluster`), registers incarnations, adds
//! them as learners and promotes the initial voters once caught up, replacing any old
//! incarnation of the same node. A node that lost its disk therefore rejoins as a new
//! member and never reuses its old votes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kakera_config::{ClusterConfig, NodeConfig};
use openraft::impls::BasicNode;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use kakera_proto::{Request, Response, ids};
use openraft::ChangeMembers;
use openraft::async_runtime::watch::WatchReceiver;

use crate::error::NodeError;
use crate::membership::{
    GroupView, MembershipStep, PeerAnswer, StartPlan, plan_membership, plan_start,
};
use crate::raft::commands::RepairStep;
use crate::raft::network::QuicNetworkFactory;
use crate::raft::state_machine::StateMachine;
use crate::raft::{Command, RaftHandle, start_raft};
use crate::repair::{HealthTracker, NodeFacts, plan_record, prioritize};
use crate::transport::repair::lock;
use crate::transport::server::{ServerContext, serve};
use crate::transport::{Peer, QuicLimits, TlsFiles, TlsMaterial};
use kakera_proto::catalog::RepairTask;

/// How to start a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The validated cluster config.
    pub config: ClusterConfig,
    /// BLAKE3 of the config text (recorded at bootstrap).
    pub config_digest: [u8; 32],
    /// Which node of the config this is.
    pub node_id: u64,
    /// The node's certificate and key, and the cluster CA.
    pub tls: TlsFiles,
    /// Where to bind the QUIC socket when it is not the config address (which stays
    /// the address peers and clients use): behind a NAT or a proxy.
    pub listen: Option<std::net::SocketAddr>,
}

impl NodeOptions {
    /// The default certificate paths of a node: `<data_dir>/node.crt.pem` and
    /// `<data_dir>/node.key.pem`, with the CA from the config.
    pub fn default_tls(config: &ClusterConfig, node: &NodeConfig) -> TlsFiles {
        TlsFiles {
            ca: config.ca_cert.clone(),
            cert: node.data_dir.join("node.crt.pem"),
            key: node.data_dir.join("node.key.pem"),
        }
    }
}

/// A running node.
pub struct NodeHandle {
    /// The node's Raft.
    pub raft: RaftHandle,
    /// This node's config entry.
    pub node: NodeConfig,
    endpoint: quinn::Endpoint,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts a node and returns once it listens.
pub async fn start(opts: NodeOptions) -> Result<NodeHandle, NodeError> {
    let config = &opts.config;
    let node = config.node(opts.node_id).cloned().ok_or_else(|| {
        NodeError::Config(format!(
            "node {} is not in the cluster config",
            opts.node_id
        ))
    })?;
    let tls = TlsMaterial::load(&opts.tls)?;
    let identity =
        kakera_proto::Identity::from_cert_der(tls.leaf()).map_err(|e| NodeError::Identity {
            path: opts.tls.cert.clone(),
            reason: e.to_string(),
        })?;
    if identity.role != kakera_proto::Role::Node {
        return Err(NodeError::Identity {
            path: opts.tls.cert.clone(),
            reason: format!(
                "certificate has role '{}', a node needs role 'node'",
                identity.role
            ),
        });
    }
    let limits = QuicLimits {
        max_concurrent_streams: config.limits.max_streams_per_connection,
        ..QuicLimits::default()
    };
    let bind = opts.listen.unwrap_or(node.addr);
    let endpoint = tls
        .server_endpoint(limits, bind)
        .map_err(|e| NodeError::Listen {
            addr: bind,
            reason: e.to_string(),
        })?;
    // Bound before anything starts, so a taken port fails the start cleanly.
    let metrics_listener = match node.metrics_addr {
        None => None,
        Some(addr) => {
            Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| NodeError::Listen {
                        addr,
                        reason: format!("metrics port: {e}"),
                    })?,
            )
        }
    };

    let data_dir: PathBuf = node.data_dir.clone();
    let db = crate::raft::open_db(&data_dir.join("db"))?;
    let raft_id = member_id(&db, node.id)?;
    let shares = crate::shares::ShareStore::with_file_threshold(
        db.clone(),
        config.staging.file_share_min_bytes,
    );
    // Share files a crash left without a value (between a file's write and its
    // value's), before anything is served.
    let orphans = shares.sweep_orphan_files()?;
    if orphans > 0 {
        tracing::info!(orphans, "share files no value named were removed");
    }
    // The client side of this node's certificate, replaced when it is renewed.
    let client_config: kakera_net::SharedClientConfig = Arc::new(std::sync::RwLock::new(
        tls.client_config(limits).map_err(|e| NodeError::Listen {
            addr: bind,
            reason: e.to_string(),
        })?,
    ));
    // One peer (one QUIC connection) per other node, shared by Raft and the duties.
    let peers: BTreeMap<u64, Arc<Peer>> = config
        .nodes
        .iter()
        .filter(|n| n.id != node.id)
        .map(|n| {
            let peer = Peer::new(endpoint.clone(), n.addr, &n.name)
                .with_client_config(client_config.clone());
            (n.id, Arc::new(peer))
        })
        .collect();
    let network = QuicNetworkFactory::new(&config.cluster_id, peers.clone())
        .with_append_budget_bytes(
            config
                .raft
                .append_budget_bytes
                .min(config.limits.max_frame_bytes / 2),
        );
    let purge = crate::erasure::PurgeSignal::default();
    let backup_signal = Arc::new(tokio::sync::Notify::new());
    let trust = Arc::new(crate::trust::Trust::default());
    let effects = Arc::new(crate::effects::NodeEffects::new(
        db.clone(),
        data_dir.clone(),
        purge.clone(),
        backup_signal.clone(),
        trust.clone(),
    ));
    let parts = start_raft(
        raft_id,
        &config.cluster_id,
        &config.raft,
        &shares,
        &data_dir,
        network,
        effects,
    )
    .await?;
    let raft = parts.raft.clone();
    // Revoked certificates are refused from the first handshake on: the CRLs the
    // catalog holds are applied before the node serves.
    let mut keeper = crate::trust::Keeper {
        trust: trust.clone(),
        state: parts.state.clone(),
        files: opts.tls.clone(),
        crl_file: config.ca_crl.clone(),
        name: node.name.clone(),
        limits,
        endpoint: endpoint.clone(),
        client_config: client_config.clone(),
        peers: peers.clone(),
        material: tls,
    };
    if let Err(e) = keeper.apply().await {
        return Err(NodeError::Listen {
            addr: bind,
            reason: format!("the revocation lists could not be applied: {e}"),
        });
    }

    let (shutdown, shutdown_rx) = watch::channel(false);
    let backups = Arc::new(crate::backup::BackupBoard::default());
    let ctx = Arc::new(ServerContext {
        node: node.clone(),
        config: config.clone(),
        cluster_id: config.cluster_id.clone(),
        raft_id,
        raft: raft.clone(),
        state: parts.state.clone(),
        shares: shares.clone(),
        max_frame_bytes: config.limits.max_frame_bytes,
        peers: peers.clone(),
        view: Arc::new(crate::transport::repair::ClusterView::default()),
        connections: Default::default(),
        request_bytes: Default::default(),
        metrics: crate::metrics::Metrics::new(),
        backups: backups.clone(),
        leader_contact: Default::default(),
        trust,
    });
    let mut tasks = vec![tokio::spawn(serve(
        endpoint.clone(),
        ctx.clone(),
        shutdown_rx.clone(),
    ))];
    if let Some(listener) = metrics_listener {
        tasks.push(tokio::spawn(crate::ops_port::serve_http(
            listener,
            ctx.clone(),
            shutdown_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(
        crate::backup::Exporter {
            config: config.clone(),
            node: node.clone(),
            signal: backup_signal,
            board: backups,
        }
        .run(shutdown_rx.clone()),
    ));
    tasks.push(tokio::spawn(keeper.run(shutdown_rx.clone())));
    tasks.push(tokio::spawn(watch_health(ctx.clone(), shutdown_rx.clone())));
    tasks.push(tokio::spawn(crate::scrub::run(
        ctx.clone(),
        identity.clone(),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(
        Repairer::new(ctx.clone()).run(shutdown_rx.clone()),
    ));
    let duties = Duties {
        raft: raft.clone(),
        raft_id,
        state: parts.state.clone(),
        config: config.clone(),
        node: node.clone(),
        digest: opts.config_digest,
        peers,
    };
    tasks.push(tokio::spawn(duties.run(shutdown_rx.clone())));
    tasks.push(tokio::spawn(
        crate::erasure::Purger::new(shares.clone(), purge).run(shutdown_rx.clone()),
    ));
    tasks.push(tokio::spawn(collect_staged(
        raft.clone(),
        config.staging,
        shares,
        parts.state.clone(),
        node.id,
        shutdown_rx,
    )));
    tracing::info!(
        node = %node.name,
        addr = %node.addr,
        listen = %bind,
        member = %ids::describe(raft_id),
        "node started"
    );
    if kakera_net::crash::is_armed() {
        tracing::warn!(
            variable = kakera_net::crash::ENV,
            "crash points are armed: this process kills itself when the named file says \
             so; a test hook that a production unit must never set"
        );
    }
    if let Some(copies) = config.plain_replicas {
        tracing::warn!(
            copies,
            "this is a benchmark cluster ([baseline] plain_replicas): it also accepts \
             records stored as plain copies, which have no secrecy; it must never hold real \
             records"
        );
    }
    Ok(NodeHandle {
        raft,
        node,
        endpoint,
        shutdown,
        tasks,
    })
}

/// This data directory's Raft member id: the one it was created with, or (empty
/// directory) a new incarnation, recorded before Raft starts.
fn member_id(db: &rocksdb::DB, node_id: u64) -> Result<u64, NodeError> {
    if let Some(id) = crate::store::self_raft_id(db)? {
        if ids::node_of(id) != node_id {
            return Err(NodeError::Config(format!(
                "the data directory belongs to node {}, not node {node_id}; check --node \
                 and data_dir in the config",
                ids::node_of(id)
            )));
        }
        return Ok(id);
    }
    let mut incarnation = [0u8; 4];
    getrandom::fill(&mut incarnation).map_err(|e| {
        NodeError::Io(std::io::Error::other(format!(
            "no randomness for the member id: {e}"
        )))
    })?;
    let id = ids::raft_id(node_id, u32::from_le_bytes(incarnation));
    crate::store::set_self_raft_id(db, id)?;
    tracing::info!(member = %ids::describe(id), "empty data directory: new Raft member id");
    Ok(id)
}

/// Most staged shares deleted per collector step.
const STAGED_GC_BATCH: usize = 1024;

/// Deletes staged shares that no commit claimed within the config's
/// `[staging] ttl_ms`, looking every `collect_every_ms`, and only while this node
/// knows a leader and has applied everything it knows committed: a node back from
/// a crash first applies the commits it missed (which promote their staged shares),
/// so a share committed while it was down is never taken for an orphan.
async fn collect_staged(
    raft: RaftHandle,
    staging: kakera_config::StagingConfig,
    shares: crate::shares::ShareStore,
    state: crate::raft::state_machine::StateMachine,
    node_id: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(staging.collect_every_ms));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let caught_up = {
            let m = raft.metrics().borrow_watched().clone();
            m.current_leader.is_some()
                && m.cluster_committed.is_some()
                && m.last_applied.map(|l| l.index()) >= m.cluster_committed.map(|l| l.index())
        };
        if !caught_up {
            continue;
        }
        let store = shares.clone();
        let state = state.clone();
        let now = crate::clock::unix_ms();
        let claim = move |id: &kakera_proto::RecordId| {
            use crate::shares::Claim;
            if let Some(d) = state
                .record(id)?
                .and_then(|e| e.holder_on(node_id).map(|h| h.digest))
            {
                return Ok(Claim::Committed(d));
            }
            if state.pending_repair(id)?.is_some_and(|t| t.to == node_id) {
                return Ok(Claim::RepairAssigned);
            }
            Ok(Claim::None)
        };
        match tokio::task::spawn_blocking(move || {
            store.collect_expired(now, staging.ttl_ms, STAGED_GC_BATCH, claim)
        })
        .await
        {
            Ok(Ok(c)) if c == crate::shares::Collected::default() => {}
            Ok(Ok(c)) => tracing::info!(
                deleted = c.deleted,
                promoted = c.promoted,
                "expired staged shares collected"
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "collecting staged shares failed"),
            Err(e) => tracing::warn!(error = %e, "staged-share collector task failed"),
        }
    }
}

/// How long a peer gets to answer a status probe or a join.
const PEER_TIMEOUT_MS: u64 = 2_000;
/// Period of the start-up and leader loops.
const TICK_MS: u64 = 500;

/// The node's background duties: decide how to start (restart, bootstrap, join),
/// then, whenever it leads, keep the cluster record and the membership right.
struct Duties {
    raft: RaftHandle,
    raft_id: u64,
    state: StateMachine,
    config: ClusterConfig,
    node: NodeConfig,
    digest: [u8; 32],
    peers: BTreeMap<u64, Arc<Peer>>,
}

impl Duties {
    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(TICK_MS));
        let mut joined = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if !joined {
                joined = self.start_step().await;
                continue;
            }
            if self.raft.is_leader() {
                self.leader_step().await;
            }
        }
    }

    fn is_member(&self) -> bool {
        let m = self
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .clone();
        m.membership().voter_ids().any(|v| v == self.raft_id)
            || m.membership().learner_ids().any(|l| l == self.raft_id)
    }

    async fn call(&self, peer: &Peer, body: Request) -> Result<Response, kakera_net::NetError> {
        peer.call(
            &self.config.cluster_id,
            body,
            Duration::from_millis(PEER_TIMEOUT_MS),
        )
        .await
    }

    /// One attempt to get into the group; true once this node is a member.
    async fn start_step(&self) -> bool {
        if self.is_member() {
            return true;
        }
        let initialized = self.raft.is_initialized().await.unwrap_or(false);
        let answers = if initialized {
            Vec::new()
        } else {
            let probes = self.peers.iter().map(|(id, peer)| async move {
                match self.call(peer, Request::Status).await {
                    Ok(Response::Status(s)) => Some(PeerAnswer {
                        node_id: *id,
                        initialized: s.raft.initialized,
                    }),
                    _ => None,
                }
            });
            futures::future::join_all(probes)
                .await
                .into_iter()
                .flatten()
                .collect()
        };
        let plan = plan_start(
            self.node.id,
            initialized,
            &self.config.initial_voters(),
            &answers,
        );
        match plan {
            StartPlan::Restart => true,
            StartPlan::Bootstrap => {
                let members =
                    BTreeMap::from([(self.raft_id, BasicNode::new(self.node.addr.to_string()))]);
                tracing::info!("first start of the cluster: initialising the Raft group");
                if let Err(e) = self.raft.initialize(members).await {
                    tracing::warn!(error = %e, "initialisation failed; will retry");
                    return false;
                }
                true
            }
            StartPlan::Join => {
                self.ask_to_join().await;
                false
            }
            StartPlan::Wait { reason } => {
                tracing::info!(%reason, "waiting for peers before the first start");
                false
            }
        }
    }

    /// Asks the peers, leader first if one is named, to take this member in.
    async fn ask_to_join(&self) {
        let mut order: Vec<u64> = self.peers.keys().copied().collect();
        let mut tried = std::collections::BTreeSet::new();
        // Bounded: each node is asked at most once per attempt.
        while let Some(id) = order.pop() {
            if !tried.insert(id) {
                continue;
            }
            let Some(peer) = self.peers.get(&id) else {
                continue;
            };
            match self
                .call(
                    peer,
                    Request::RaftJoin {
                        raft_id: self.raft_id,
                    },
                )
                .await
            {
                Ok(Response::Accepted) => {
                    tracing::info!(via = %peer.name(), "join accepted; waiting to be added");
                    return;
                }
                Err(kakera_net::NetError::Refused {
                    kind: kakera_proto::ErrorKind::NotLeader { leader_id: Some(l) },
                    ..
                }) => order.push(ids::node_of(l)),
                Err(e) => tracing::debug!(peer = %peer.name(), error = %e, "join not taken"),
                Ok(other) => {
                    tracing::debug!(peer = %peer.name(), answer = ?other, "join not taken")
                }
            }
        }
    }

    /// While leading: record the cluster identity once, then take one membership step.
    async fn leader_step(&self) {
        if matches!(self.state.cluster_record(), Ok(None)) {
            let cmd = Command::InitCluster {
                cluster_id: self.config.cluster_id.clone(),
                config_digest: self.digest,
            };
            if let Err(e) = self.raft.client_write(cmd).await {
                tracing::debug!(error = %e, "recording the cluster identity failed; will retry");
                return;
            }
        }
        // The review committee from the config, recorded once (the state machine
        // refuses a different one).
        if let Some(c) = &self.config.committee {
            let committee = kakera_proto::committee::Committee {
                threshold: c.threshold,
                members: c
                    .members
                    .iter()
                    .map(|m| (m.name.clone(), m.public_key))
                    .collect(),
            };
            match self.state.committee() {
                Ok(None) => {
                    if let Err(e) = self
                        .raft
                        .client_write(Command::SetCommittee { committee })
                        .await
                    {
                        tracing::debug!(error = %e, "recording the review committee failed; will retry");
                        return;
                    }
                }
                Ok(Some(recorded)) if recorded != committee => {
                    tracing::debug!(
                        "the config's review committee differs from the one recorded; the recorded one stays in force"
                    );
                }
                Ok(Some(_)) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the recorded review committee"),
            }
        }
        let view = match self.group_view() {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the membership state");
                return;
            }
        };
        let step = plan_membership(&view);
        let result = match &step {
            MembershipStep::None => return,
            MembershipStep::RegisterSelf => self
                .raft
                .client_write(Command::RegisterIncarnation {
                    node_id: self.node.id,
                    raft_id: self.raft_id,
                })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            MembershipStep::AddLearner(id) => {
                let Some(n) = self.config.node(ids::node_of(*id)) else {
                    return;
                };
                self.raft
                    .add_learner(*id, BasicNode::new(n.addr.to_string()), false)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            MembershipStep::ReplaceVoters(voters) => self
                .raft
                .change_membership(ChangeMembers::ReplaceAllVoters(voters.clone()), false)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            MembershipStep::RemoveLearners(stale) => self
                .raft
                .change_membership(ChangeMembers::RemoveNodes(stale.clone()), false)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        match result {
            Ok(()) => tracing::info!(step = ?step, "membership step done"),
            Err(e) => {
                tracing::info!(step = ?step, error = %e, "membership step failed; will retry")
            }
        }
    }

    fn group_view(&self) -> std::io::Result<GroupView> {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        Ok(GroupView {
            config_nodes: self.config.nodes.iter().map(|n| n.id).collect(),
            wanted_voters: self.config.initial_voters().into_iter().collect(),
            incarnations: self.state.incarnations()?,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            matched: crate::raft::matched_indexes(&m),
            last_log_index: m.last_log_index.unwrap_or(0),
            leader: self.raft_id,
        })
    }
}

/// Period of the leader's health probes.
const HEALTH_TICK_MS: u64 = 500;
/// How long a health probe may take.
const HEALTH_PROBE_TIMEOUT_MS: u64 = 1_000;
/// Period of the leader's repair loop.
const REPAIR_TICK_MS: u64 = 1_000;
/// Catalog entries the repair scan reads per page (pages per tick:
/// `crate::repair::scan_pages_per_tick`).
const REPAIR_SCAN_PAGE: u32 = 500;
/// Most needs one scan pass keeps (the most urgent are assigned first).
const MAX_PLANNED: usize = 10_000;
/// Most moves assigned per pass.
const MAX_ASSIGN_PER_PASS: usize = 4_096;
/// How long a new holder may take to run one move.
const REPAIR_RUN_TIMEOUT_MS: u64 = 120_000;

/// While leading: probes every node and feeds the failure detector. A node that stops
/// leading forgets what it saw (a new leader starts with a full grace period).
async fn watch_health(ctx: Arc<ServerContext>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(HEALTH_TICK_MS));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if !ctx.raft.is_leader() {
            *lock(&ctx.view.health) = HealthTracker::default();
            continue;
        }
        let probes = ctx.peers.iter().map(|(id, peer)| {
            let ctx = &ctx;
            async move {
                let r = peer
                    .call(
                        &ctx.cluster_id,
                        Request::Ping,
                        Duration::from_millis(HEALTH_PROBE_TIMEOUT_MS),
                    )
                    .await;
                (*id, matches!(r, Ok(Response::Pong { .. })))
            }
        });
        let answers = futures::future::join_all(probes).await;
        let now = ctx.view.now_ms();
        let mut h = lock(&ctx.view.health);
        h.probed(now);
        h.answered(ctx.node.id, now);
        for (id, ok) in answers {
            if ok {
                h.answered(id, now);
            }
        }
    }
}

/// The leader's repair loop: scans the catalog for shares on dead or draining nodes,
/// assigns moves (most urgent first) through Raft, has the new holders run them within
/// the configured parallelism and rate, and commits the ones that succeeded.
struct Repairer {
    ctx: Arc<ServerContext>,
    cursor: Option<kakera_proto::RecordId>,
    planned: Vec<crate::repair::Need>,
    counts: BTreeMap<u64, u64>,
    was_leader: bool,
    /// Passes finished since this node began to lead (whether the last one found
    /// shares to move is `view.progress.needed`).
    passes: u64,
}

impl Repairer {
    fn new(ctx: Arc<ServerContext>) -> Repairer {
        Repairer {
            ctx,
            cursor: None,
            planned: Vec::new(),
            counts: BTreeMap::new(),
            was_leader: false,
            passes: 0,
        }
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(REPAIR_TICK_MS));
        let mut busy = false;
        // Bounded by shutdown; a step that moved shares, or one in the middle of a
        // pass while shares need moving, is followed at once by the next.
        loop {
            if busy {
                if *shutdown.borrow() {
                    return;
                }
            } else {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => return,
                }
            }
            busy = false;
            let leader = self.ctx.raft.is_leader();
            if leader != self.was_leader {
                self.cursor = None;
                self.planned.clear();
                self.counts.clear();
                *lock(&self.ctx.view.progress) = kakera_proto::RepairProgress::default();
                self.was_leader = leader;
                self.passes = 0;
            }
            if !leader {
                continue;
            }
            match self.step(&shutdown).await {
                // While the last pass found shares to move, the scan goes on without
                // an idle tick too: assignments come at the end of a pass.
                Ok(moved) => {
                    busy = moved > 0
                        || (self.cursor.is_some() && lock(&self.ctx.view.progress).needed > 0);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "repair step failed; will retry");
                    lock(&self.ctx.view.progress).last_error = Some(e);
                }
            }
        }
    }

    /// One scan step and one execution slice; returns the moves committed.
    async fn step(&mut self, shutdown: &watch::Receiver<bool>) -> Result<u64, String> {
        let facts = crate::transport::repair::node_facts(&self.ctx).map_err(|e| e.to_string())?;
        self.assign_in_place(&facts).await?;
        self.scan(&facts).await?;
        self.execute(&facts, shutdown).await
    }

    /// Assigns the in-place repair of the bad shares their holders confirmed
    /// (`transport::report`), fewest good shares first, at most
    /// [`MAX_ASSIGN_PER_PASS`] per step, without waiting for a scan pass. A report
    /// whose share moves anyway (its holder dead or draining) or is gone is dropped;
    /// one whose holder is only suspect waits.
    async fn assign_in_place(&mut self, facts: &BTreeMap<u64, NodeFacts>) -> Result<(), String> {
        let reports: Vec<_> = lock(&self.ctx.view.bad_shares)
            .values()
            .take(MAX_ASSIGN_PER_PASS)
            .copied()
            .collect();
        if reports.is_empty() {
            return Ok(());
        }
        let mut bad_on: BTreeMap<kakera_proto::RecordId, usize> = BTreeMap::new();
        for r in &reports {
            *bad_on.entry(r.record).or_default() += 1;
        }
        let mut needs = Vec::new();
        let mut done = Vec::new();
        for r in &reports {
            let entry = self
                .ctx
                .state
                .record(&r.record)
                .map_err(|e| e.to_string())?;
            let pending = self
                .ctx
                .state
                .pending_repair(&r.record)
                .map_err(|e| e.to_string())?;
            let waits = facts
                .get(&r.node)
                .is_some_and(|f| f.evicts().is_none() && !f.accepts());
            match entry.as_ref().and_then(|e| {
                crate::repair::plan_in_place(e, r, facts, pending.as_ref(), bad_on[&r.record])
            }) {
                Some(n) => {
                    needs.push(n);
                    done.push((r.record, r.node));
                }
                // Another move of the record is pending: ask again after it.
                None if pending.is_some() || waits => {}
                None => done.push((r.record, r.node)),
            }
        }
        prioritize(&mut needs);
        let tasks: Vec<RepairTask> = needs.into_iter().map(|n| n.task).collect();
        if !tasks.is_empty() {
            tracing::info!(
                shares = tasks.len(),
                "assigning in-place repairs of bad shares"
            );
            let cmd = Command::Repair {
                at_ms: crate::clock::unix_ms(),
                step: RepairStep::Assign { tasks },
            };
            self.ctx
                .raft
                .client_write(cmd)
                .await
                .map_err(|e| format!("assigning in-place repairs: {e}"))?;
        }
        let mut bad = lock(&self.ctx.view.bad_shares);
        for key in done {
            bad.remove(&key);
        }
        Ok(())
    }

    /// Scans a few pages; at the end of a pass, publishes counts and assigns moves.
    async fn scan(&mut self, facts: &BTreeMap<u64, NodeFacts>) -> Result<(), String> {
        let ctx = self.ctx.clone();
        let facts_owned = facts.clone();
        let cursor = self.cursor;
        let pages = crate::repair::scan_pages_per_tick(
            facts,
            crate::repair::ScanState {
                passed_once: self.passes > 0,
                found_needs: lock(&self.ctx.view.progress).needed > 0 || !self.planned.is_empty(),
            },
        );
        let scanned = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let mut after = cursor;
            let mut needs = Vec::new();
            let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
            let mut wrapped = false;
            for _ in 0..pages {
                let (page, next) = ctx.state.list(
                    &kakera_proto::catalog::ListFilter::All,
                    after,
                    REPAIR_SCAN_PAGE,
                )?;
                for e in &page {
                    for h in &e.holders {
                        *counts.entry(h.node).or_default() += 1;
                    }
                    let pending = ctx.state.pending_repair(&e.id)?;
                    if let Some(n) = plan_record(e, &facts_owned, &ctx.config, pending.as_ref()) {
                        needs.push(n);
                    }
                }
                after = next;
                if after.is_none() {
                    wrapped = true;
                    break;
                }
            }
            Ok((needs, counts, after, wrapped))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let (needs, counts, after, wrapped) = scanned;
        for (n, c) in counts {
            *self.counts.entry(n).or_default() += c;
        }
        let room = MAX_PLANNED.saturating_sub(self.planned.len());
        self.planned.extend(needs.into_iter().take(room));
        self.cursor = after;
        if !wrapped {
            return Ok(());
        }
        // End of a pass.
        self.passes += 1;
        let mut planned = std::mem::take(&mut self.planned);
        *lock(&self.ctx.view.shares) = std::mem::take(&mut self.counts);
        {
            let mut p = lock(&self.ctx.view.progress);
            p.needed = planned.len() as u64;
            p.waiting = planned.iter().filter(|n| !n.placed).count() as u64;
        }
        prioritize(&mut planned);
        let fresh: Vec<RepairTask> = planned
            .into_iter()
            .filter(|n| n.placed && n.task.assigned_index == 0)
            .take(MAX_ASSIGN_PER_PASS)
            .map(|n| n.task)
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        tracing::info!(moves = fresh.len(), "assigning share moves");
        let cmd = Command::Repair {
            at_ms: crate::clock::unix_ms(),
            step: RepairStep::Assign { tasks: fresh },
        };
        self.ctx
            .raft
            .client_write(cmd)
            .await
            .map_err(|e| format!("assigning moves: {e}"))?;
        kakera_net::crash::point("repair.assigned");
        Ok(())
    }

    /// Runs pending moves whose new holder accepts shares: `repair_parallel` at a time
    /// (a finished move's slot is refilled at once), paced to `repair_rate_mb_s`
    /// ([`crate::repair::pace_wait_ms`]), committing finished moves in groups of
    /// [`REPAIR_COMMIT_GROUP`]. Starts moves for at most [`REPAIR_SLICE_MS`], so the
    /// scan keeps running between slices. Returns how many moves it committed.
    async fn execute(
        &mut self,
        facts: &BTreeMap<u64, NodeFacts>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<u64, String> {
        let ctx = self.ctx.clone();
        let pending = ctx
            .state
            .pending_repairs(MAX_ASSIGN_PER_PASS)
            .map_err(|e| e.to_string())?;
        lock(&ctx.view.progress).pending = pending.len() as u64;
        // What a move makes its helpers read: k shares of the record.
        let mut queue = crate::repair::BatchQueue::default();
        for t in pending {
            if facts.get(&t.to).is_some_and(NodeFacts::accepts) {
                let cost = match ctx.state.record(&t.record) {
                    Ok(Some(e)) => e.sealed_len.saturating_mul(u64::from(e.k)),
                    _ => 0,
                };
                queue.push(t, cost);
            }
        }
        if queue.is_empty() {
            return Ok(0);
        }
        let avoid: Vec<u64> = facts
            .values()
            .filter(|f| f.health != crate::repair::HealthState::Alive)
            .map(|f| f.id)
            .collect();
        let parallel = ctx.config.health.repair_parallel.max(1) as usize;
        let batch_moves = (ctx.config.health.repair_batch_moves as usize)
            .clamp(1, kakera_proto::message::MAX_REPAIR_BATCH);
        let budget_bytes = u64::from(ctx.config.health.repair_rate_mb_s.max(1)) * 1_000_000;
        let rate_mb_s = ctx.config.health.repair_rate_mb_s;
        let started = tokio::time::Instant::now();
        let mut spent_bytes = 0u64;
        let mut running = tokio::task::JoinSet::new();
        let mut done = Vec::new();
        let mut moved = 0u64;
        let mut last_error = None;
        // Bounded: at most MAX_ASSIGN_PER_PASS moves start, each once, and every
        // started move ends (its call has a timeout).
        loop {
            while running.len() < parallel
                && started.elapsed() < Duration::from_millis(REPAIR_SLICE_MS)
                && !*shutdown.borrow()
            {
                // The next batch: up to `repair_batch_moves` moves to one new holder,
                // reading at most one second of the rate (so batches are paced like
                // single moves).
                let Some((batch, cost_bytes)) = queue.next_batch(batch_moves, budget_bytes) else {
                    break;
                };
                let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                let wait_ms =
                    crate::repair::pace_wait_ms(spent_bytes, cost_bytes, elapsed_ms, rate_mb_s);
                if wait_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                }
                spent_bytes = spent_bytes.saturating_add(cost_bytes);
                running.spawn(run_moves(ctx.clone(), batch, avoid.clone()));
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            match joined {
                Ok((tasks, Ok(Response::RepairedBatch { done: ok, failed }))) => {
                    let ok: std::collections::BTreeSet<_> =
                        ok.into_iter().map(|(r, _)| r).collect();
                    done.extend(tasks.into_iter().filter(|t| ok.contains(&t.record)));
                    if let Some((record, reason)) = failed.first() {
                        last_error = Some(format!(
                            "{} of the moves to one node failed; record {record}: {reason}",
                            failed.len()
                        ));
                    }
                }
                Ok((tasks, Ok(other))) => {
                    last_error = Some(format!(
                        "moving {} shares to node {}: {other:?}",
                        tasks.len(),
                        tasks.first().map_or(0, |t| t.to)
                    ));
                }
                Ok((tasks, Err(e))) => {
                    last_error = Some(format!(
                        "moving {} shares to node {}: {e}",
                        tasks.len(),
                        tasks.first().map_or(0, |t| t.to)
                    ));
                }
                Err(e) => last_error = Some(format!("a share move's task failed: {e}")),
            }
            if done.len() >= REPAIR_COMMIT_GROUP {
                moved += commit_moves(&ctx, std::mem::take(&mut done)).await?;
            }
        }
        if let Some(e) = &last_error {
            tracing::warn!(error = %e, "a share move failed; it will be retried");
        }
        moved += commit_moves(&ctx, done).await?;
        if last_error.is_some() {
            lock(&ctx.view.progress).last_error = last_error;
        }
        Ok(moved)
    }
}

/// Moves committed through Raft in one entry, at most.
const REPAIR_COMMIT_GROUP: usize = 1024;
/// How long one repair slice starts new moves before the loop scans again.
const REPAIR_SLICE_MS: u64 = 10_000;

/// Has the new holder of `tasks` (one node) run them as a batch: this node itself,
/// or a peer.
async fn run_moves(
    ctx: Arc<ServerContext>,
    tasks: Vec<RepairTask>,
    avoid: Vec<u64>,
) -> (Vec<RepairTask>, Result<Response, String>) {
    let to = tasks.first().map_or(0, |t| t.to);
    let answer = if to == ctx.node.id {
        Ok(crate::transport::repair::run_assigned_batch(&ctx, tasks.clone(), &avoid).await)
    } else {
        match ctx.peers.get(&to) {
            Some(p) => p
                .call(
                    &ctx.cluster_id,
                    Request::RepairRunBatch {
                        tasks: tasks.clone(),
                        avoid,
                    },
                    Duration::from_millis(REPAIR_RUN_TIMEOUT_MS),
                )
                .await
                .map_err(|e| e.to_string()),
            None => Err(format!("node {to} is not a peer")),
        }
    };
    (tasks, answer)
}

/// Commits finished moves through Raft (one entry) and counts them as done.
async fn commit_moves(ctx: &ServerContext, done: Vec<RepairTask>) -> Result<u64, String> {
    if done.is_empty() {
        return Ok(0);
    }
    let moved = done.len() as u64;
    kakera_net::crash::point("repair.before_commit");
    let cmd = Command::Repair {
        at_ms: crate::clock::unix_ms(),
        step: RepairStep::Commit { tasks: done },
    };
    ctx.raft
        .client_write(cmd)
        .await
        .map_err(|e| format!("committing moves: {e}"))?;
    tracing::info!(moves = moved, "share moves committed");
    lock(&ctx.view.progress).done += moved;
    Ok(moved)
}

/// Most time a stopping node waits for its closed connections to drain.
pub const SHUTDOWN_DRAIN_MS: u64 = 3_000;

impl NodeHandle {
    /// Stops accepting requests, shuts Raft down and closes the endpoint.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        self.endpoint.close(0u32.into(), b"node shutting down");
        for t in self.tasks {
            let _ = t.await;
        }
        // Closed connections drain within a few round trips; one whose peer went
        // away mid-handshake would hold this until QUIC's idle timeout.
        let drain = std::time::Duration::from_millis(SHUTDOWN_DRAIN_MS);
        if tokio::time::timeout(drain, self.endpoint.wait_idle())
            .await
            .is_err()
        {
            tracing::info!(
                drain_ms = SHUTDOWN_DRAIN_MS,
                "connections still draining at shutdown; closing anyway"
            );
        }
        tracing::info!(node = %self.node.name, "node stopped");
    }
}
