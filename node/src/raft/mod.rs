//! Everything that names openraft lives under this module: the type config, the
//! RocksDB log store and state machine, the network over QUIC, and the in-process
//! fault network used by tests. The rest of the node talks to [`RaftHandle`].

pub mod catalog;
pub mod commands;
pub mod fault;
pub mod log_store;
pub mod network;
pub mod state_machine;

use std::io::Cursor;
use std::sync::Arc;

pub use commands::{ClientAction, Command, CommandResponse};

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

/// Snapshot data as it travels and is installed: the encoded catalog.
pub type SnapshotData = Cursor<Vec<u8>>;

/// A shared handle to the node's Raft instance.
pub type RaftHandle = Arc<Raft>;

/// Raft timing for a node. Election timeouts well above heartbeats, as openraft
/// expects; loopback test clusters use the same values as production defaults.
pub fn raft_config(cluster_id: &str) -> Result<Arc<openraft::Config>, String> {
    let config = openraft::Config {
        cluster_name: cluster_id.to_string(),
        heartbeat_interval: 150,
        election_timeout_min: 600,
        election_timeout_max: 1200,
        install_snapshot_timeout: 10_000,
        max_payload_entries: 512,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(5_000),
        max_in_snapshot_log_to_keep: 1_000,
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

/// A node's Raft instance with the handles the rest of the node reads through.
pub struct RaftParts {
    /// The Raft instance.
    pub raft: RaftHandle,
    /// A handle to the applied state (reads of the catalog).
    pub state: state_machine::StateMachine,
}

/// Opens the node database under `data_dir` and starts Raft on it with `network`.
/// Restarting on the same directory resumes from the persisted log, vote and state.
pub async fn open_raft<N>(
    id: u64,
    cluster_id: &str,
    data_dir: &std::path::Path,
    network: N,
) -> std::io::Result<RaftParts>
where
    N: openraft::network::RaftNetworkFactory<TypeConfig>,
    N::Network: openraft::network::NetSnapshot<TypeConfig, SnapshotData = SnapshotData>,
{
    let db = crate::store::open(&data_dir.join("db"))?;
    start_raft(id, cluster_id, db, data_dir, network).await
}

/// Starts Raft as member `id` on an opened node database (see [`crate::store::open`]).
pub async fn start_raft<N>(
    id: u64,
    cluster_id: &str,
    db: Arc<rocksdb::DB>,
    data_dir: &std::path::Path,
    network: N,
) -> std::io::Result<RaftParts>
where
    N: openraft::network::RaftNetworkFactory<TypeConfig>,
    N::Network: openraft::network::NetSnapshot<TypeConfig, SnapshotData = SnapshotData>,
{
    let config = raft_config(cluster_id).map_err(std::io::Error::other)?;
    let log = log_store::LogStore::new(db.clone());
    let node_id = kakera_proto::ids::node_of(id);
    let state = state_machine::StateMachine::new(db, data_dir.join("snapshots"), node_id)?;
    let raft = Raft::new(id, config, network, log, state.clone())
        .await
        .map_err(std::io::Error::other)?;
    Ok(RaftParts {
        raft: Arc::new(raft),
        state,
    })
}
