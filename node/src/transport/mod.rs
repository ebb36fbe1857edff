//! QUIC transport: one endpoint per node serves requests and carries the node's own
//! outbound calls (Raft RPCs). One bidirectional stream per request.

pub mod client;
pub mod server;
pub mod tls;

pub use client::Peer;
pub use tls::{QuicLimits, TlsFiles, TlsMaterial};
