//! The node crate's one error type. Messages name files, peers and limits, never
//! record bytes, share bytes or keys.

use std::path::PathBuf;

/// Errors of kakera-node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The cluster config could not be loaded or does not fit this node.
    #[error("config: {0}")]
    Config(String),
    /// The transport failed: TLS material, QUIC setup or a peer.
    #[error(transparent)]
    Net(#[from] kakera_net::NetError),
    /// The node's own certificate does not fit a node.
    #[error("certificate {path}: {reason}")]
    Identity {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The node cannot listen on its configured address.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address from the config.
        addr: std::net::SocketAddr,
        /// The system's reason.
        reason: String,
    },
    /// Encoding or decoding a message failed.
    #[error(transparent)]
    Proto(#[from] kakera_proto::ProtoError),
    /// Storage or Raft failed.
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    /// Raft refused or failed an operation.
    #[error("raft: {0}")]
    Raft(String),
    /// A backup part cannot be restored here; the sentence says why.
    #[error("restore: {0}")]
    Restore(String),
}
