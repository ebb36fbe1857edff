//! The state machine's commands. Every change to the catalog is one of these, applied
//! in log order on every node.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A change to the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Written once by the bootstrapping node: binds the Raft group to a cluster id and
    /// to the config it was bootstrapped from.
    InitCluster {
        /// The cluster id from the config.
        cluster_id: String,
        /// BLAKE3 of the config file's text.
        config_digest: [u8; 32],
    },
    /// Records the current Raft member id of a configured node: its first start, or
    /// its return with an empty data directory. The leader then adds it and retires
    /// the older incarnation (see `crate::membership`).
    RegisterIncarnation {
        /// The config node id.
        node_id: u64,
        /// Its new Raft member id (`kakera_proto::ids::raft_id`).
        raft_id: u64,
    },
    /// Sets an operator-visible cluster metadata value.
    SetMeta {
        /// The key (at most 256 bytes).
        key: String,
        /// The value (at most 64 KiB).
        value: String,
    },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::InitCluster { cluster_id, .. } => write!(f, "InitCluster({cluster_id})"),
            Command::RegisterIncarnation { raft_id, .. } => write!(
                f,
                "RegisterIncarnation({})",
                kakera_proto::ids::describe(*raft_id)
            ),
            Command::SetMeta { key, .. } => write!(f, "SetMeta({key})"),
        }
    }
}

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CommandResponse {
    /// Applied.
    #[default]
    Applied,
    /// Refused by the state machine (the log entry stays; the state did not change).
    Refused {
        /// Why, for the caller.
        reason: String,
    },
}

/// Most bytes of a metadata key.
pub const MAX_META_KEY_BYTES: usize = 256;
/// Most bytes of a metadata value.
pub const MAX_META_VALUE_BYTES: usize = 64 * 1024;
