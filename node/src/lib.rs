//! kakera-node: the storage daemon. One QUIC endpoint with mutual TLS, openraft over
//! RocksDB for the catalog, and (with the data path) the share store.

pub mod background;
pub mod backup;
pub mod clock;
pub mod daemon;
pub mod effects;
pub mod erasure;
pub mod error;
pub mod membership;
pub mod metrics;
pub mod ops_port;
pub mod raft;
pub mod repair;
pub mod scrub;
pub mod share_files;
pub mod shares;
pub mod store;
pub mod transport;
pub mod trust;
pub mod usage;

pub use error::NodeError;
