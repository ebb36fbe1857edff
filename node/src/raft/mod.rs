//! Everything that names openraft lives under this module: the type config, the
//! RocksDB log store and state machine, the network over QUIC, and the in-process
//! fault network used by tests. The rest of the node talks to [`RaftHandle`].

pub mod catalog;
pub mod commands;
pub mod effects;
pub mod fault;
pub mod log_store;
pub mod network;
pub mod snapshot;
pub mod state_machine;

use std::sync::Arc;

use kakera_config::RaftTuning;

pub use commands::{ClientAction, Command, CommandResponse};
pub use effects::{Effect, EffectRunner, NoEffects};

openraft::declare_raft_types!(
    /// kakera's Raft type configuration: u64 node ids, the address as node info.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = u64,
        Node = openraft::impls::BasicNode,
);

/// The Raft instance of a node.
pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachine>;

/// Snapshot data as it travels and is installed: the live catalog streamed in
/// bounded chunks, or what a receiver wrote of one (see [`snapshot`]).
pub use snapshot::{ReceivedSnapshot, SnapshotData};

/// A shared handle to the node's Raft instance.
pub type RaftHandle = Arc<Raft>;

/// Heartbeat interval: also openraft's per-append deadline, which the QUIC network
/// stretches to what the link is doing (see [`network`]).
pub const HEARTBEAT_MS: u64 = 150;
/// Shortest election timeout.
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 600;
/// Longest election timeout.
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 1200;
/// A follower that has heard nothing from its leader for this long reports no
/// leader (status, readiness), though openraft still names it: with Pre-Vote a
/// follower that cannot win an election keeps its last leader's id.
pub const LEADER_SILENT_AFTER_MS: u64 = 2 * ELECTION_TIMEOUT_MAX_MS;

/// Raft timing for a node. Election timeouts well above heartbeats, as openraft
/// expects; loopback test clusters use the same values as production defaults.
/// Snapshot transfers keep their own per-chunk deadlines (see [`network`]), so the
/// snapshot timeout here only bounds a transfer that makes no progress at all.
pub fn raft_config(cluster_id: &str, tuning: &RaftTuning) -> Result<Arc<openraft::Config>, String> {
    let config = openraft::Config {
        cluster_name: cluster_id.to_string(),
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
        election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
        install_snapshot_timeout: 60_000,
        max_payload_entries: u64::from(tuning.append_max_entries),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(tuning.snapshot_every_entries),
        max_in_snapshot_log_to_keep: tuning.keep_entries_after_snapshot,
        // A node asks whether it could win before it raises its term: a follower
        // restarted after kill -9 (or cut off for a while) would otherwise start an
        // election before it hears the leader and make it step down.
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    config
        .validate()
        .map(Arc::new)
        .map_err(|e| format!("invalid Raft configuration: {e}"))
}

/// Maps a failed RPC to the error type of a snapshot transfer (shared by every Raft
/// network implementation).
pub fn rpc_to_streaming(
    e: openraft::errors::RPCError<TypeConfig>,
) -> openraft::errors::StreamingError<TypeConfig> {
    use openraft::errors::{RPCError, StreamingError, Unreachable};
    match e {
        RPCError::Network(n) => StreamingError::Network(n),
        RPCError::Timeout(t) => StreamingError::Timeout(t),
        RPCError::Unreachable(u) => StreamingError::Unreachable(u),
        RPCError::RemoteError(r) => StreamingError::Unreachable(Unreachable::new(&r)),
    }
}

/// On a leader: each member's matched log index (None if not yet known), from the
/// Raft metrics. Empty on other nodes.
pub fn matched_indexes<C: FromIterator<(u64, Option<u64>)>>(
    m: &openraft::RaftMetrics<TypeConfig>,
) -> C {
    m.replication
        .iter()
        .flat_map(|r| r.iter())
        .map(|(id, lid)| (*id, lid.as_ref().map(|l| l.index())))
        .collect()
}

/// Opens the node database under `dir` ([`crate::store::open`]) and brings an older
/// version's layout up to date: staged shares ([`crate::shares::upgrade`]) and the
/// catalog over its four families ([`catalog::split_families`]). Every node start and
/// restore opens its database here.
pub fn open_db(dir: &std::path::Path) -> std::io::Result<Arc<rocksdb::DB>> {
    let db = crate::store::open(dir)?;
    let moved = crate::shares::upgrade(&db)?;
    if moved > 0 {
        tracing::info!(
            shares = moved,
            "staged shares moved to the current share layout"
        );
    }
    let moved = catalog::split_families(&db)?;
    if moved > 0 {
        tracing::info!(
            keys = moved,
            "catalog keys moved to the record, audit and index families"
        );
    }
    Ok(db)
}

/// A node's Raft instance with the handles the rest of the node reads through.
pub struct RaftParts {
    /// The Raft instance.
    pub raft: RaftHandle,
    /// A handle to the applied state (reads of the catalog).
    pub state: state_machine::StateMachine,
}

/// Opens the node database under `data_dir` and starts Raft on it with `network`,
/// with no effect runner (tests of the consensus alone). Restarting on the same
/// directory resumes from the persisted log, vote and state.
pub async fn open_raft<N>(
    id: u64,
    cluster_id: &str,
    tuning: &RaftTuning,
    data_dir: &std::path::Path,
    network: N,
) -> std::io::Result<RaftParts>
where
    N: openraft::network::RaftNetworkFactory<TypeConfig>,
    N::Network: openraft::network::NetSnapshot<TypeConfig, SnapshotData = SnapshotData>,
{
    let db = open_db(&data_dir.join("db"))?;
    let shares = crate::shares::ShareStore::new(db);
    let effects: Arc<dyn EffectRunner> = Arc::new(NoEffects);
    start_raft(id, cluster_id, tuning, &shares, data_dir, network, effects).await
}

/// Starts Raft as member `id` on the opened node database `shares` stores in (see
/// [`crate::store::open`]). The state machine promotes and releases shares through
/// `shares` itself, so its staging ledger is the one the node's server counts in;
/// `effects` performs what applied entries ask for (checkpoints, purges).
pub async fn start_raft<N>(
    id: u64,
    cluster_id: &str,
    tuning: &RaftTuning,
    shares: &crate::shares::ShareStore,
    data_dir: &std::path::Path,
    network: N,
    effects: Arc<dyn EffectRunner>,
) -> std::io::Result<RaftParts>
where
    N: openraft::network::RaftNetworkFactory<TypeConfig>,
    N::Network: openraft::network::NetSnapshot<TypeConfig, SnapshotData = SnapshotData>,
{
    let config = raft_config(cluster_id, tuning).map_err(std::io::Error::other)?;
    let log = log_store::LogStore::new(shares.db().clone());
    let node_id = kakera_proto::ids::node_of(id);
    let state =
        state_machine::StateMachine::new(shares.clone(), data_dir.join("snapshots"), node_id)?
            .with_snapshot_chunk_bytes(tuning.snapshot_chunk_bytes as usize)
            .with_effects(effects);
    let raft = Raft::new(id, config, network, log, state.clone())
        .await
        .map_err(std::io::Error::other)?;
    Ok(RaftParts {
        raft: Arc::new(raft),
        state,
    })
}
