//! The node's side of the QUIC transport: the request server. TLS material, peers and
//! client endpoints live in kakera-net, shared with the client.

pub mod server;

pub use kakera_net::{Peer, QuicLimits, TlsFiles, TlsMaterial};
