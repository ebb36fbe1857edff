//! The node's side of the QUIC transport: the request server and the data path. TLS material, peers and
//! client endpoints live in kakera-net, shared with the client.

pub mod backup;
pub mod erase;
pub mod records;
pub mod repair;
pub mod report;
pub mod revoke;
pub mod server;

pub use kakera_net::{Peer, QuicLimits, TlsFiles, TlsMaterial};
