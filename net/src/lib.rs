//! kakera-net: the QUIC transport shared by nodes and clients. One bidirectional stream
//! per request carrying one [`kakera_proto::RequestEnvelope`] frame and one
//! [`kakera_proto::Response`] frame; TLS 1.3 with mutual authentication against the
//! cluster CA, the ring provider chosen explicitly.
//!
//! This crate has no knowledge of Raft, RocksDB or records; the node's server side and
//! its Raft network build on it, and so does the client.

pub mod crash;
pub mod error;
pub mod peer;
pub mod ports;
pub mod tls;
pub mod verify;

pub use error::NetError;
pub use peer::{
    CLOSE_CERTIFICATE_EXPIRED, CLOSE_CERTIFICATE_REVOKED, Peer, SharedClientConfig, StreamPacing,
    client_endpoint, fresh_request_id,
};
pub use tls::{ALPN, QuicLimits, TlsFiles, TlsMaterial, provider, read_crls};
