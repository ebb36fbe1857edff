//! kakera-config: the cluster's topology and policy (one TOML file), its validation,
//! and placement of shares on nodes.
//!
//! Pure apart from [`ClusterConfig::load`], which reads the one file it is given: no
//! network, no clock, no async. Placement is a deterministic function that the client,
//! the Raft leader, repair and the auditor all evaluate the same way.

pub mod config;
pub mod error;
pub mod placement;

pub use config::{
    BASELINE_BUILT, BENCH_CLUSTER_PREFIX, ClusterConfig, CommitteeConfig, CommitteeMember,
    HSZ_ZONE, HealthConfig, LimitsConfig, MAX_COMMITTEE_MEMBERS, MAX_NODE_ID,
    MAX_REPAIR_BATCH_MOVES, MAX_VOTERS, MIN_FILE_SHARE_BYTES, NodeConfig, NodeId, Policy,
    RaftTuning, StagingConfig, ZoneConfig,
};
pub use error::{ConfigError, Issue, PlacementError};
pub use placement::{
    NodeView, PlacementViolation, capacity, check_holders, choose_replacement, place,
    rendezvous_score,
};
