//! The net crate's one error type. Messages name files, peers and limits, never record
//! bytes, share bytes or keys.

use std::path::PathBuf;

/// Errors of kakera-net.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A certificate or key file is missing or unusable.
    #[error("TLS material {path}: {reason}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Setting up TLS or QUIC failed.
    #[error("transport setup: {0}")]
    Setup(String),
    /// A peer could not be reached or the connection broke.
    #[error("peer {peer}: {reason}")]
    Peer {
        /// The peer's name and address.
        peer: String,
        /// What happened.
        reason: String,
    },
    /// A certificate was refused: this holder's by the node (revoked, expired, not
    /// from the cluster CA) or the node's here (revoked, not from the cluster CA).
    /// Asking again with the same certificates cannot succeed.
    #[error(
        "peer {peer}: {reason}; if this holder's certificate was revoked or expired, ask the operators for a new one"
    )]
    CertificateRefused {
        /// The peer's name and address.
        peer: String,
        /// What happened.
        reason: String,
    },
    /// A request timed out.
    #[error("peer {peer} did not answer within {timeout_ms} ms")]
    Timeout {
        /// The peer.
        peer: String,
        /// The limit.
        timeout_ms: u64,
    },
    /// The peer answered with a refusal.
    #[error("refused by {peer}: {message}")]
    Refused {
        /// The peer.
        peer: String,
        /// The class of refusal.
        kind: kakera_proto::ErrorKind,
        /// Its sentence.
        message: String,
    },
    /// Fewer free local ports than a local cluster needs.
    #[error(
        "found only {found} of {wanted} free ports on 127.0.0.1 between 20000 and 32767; stop other local clusters or free ports there"
    )]
    NoLocalPort {
        /// Ports asked for.
        wanted: usize,
        /// Ports found free.
        found: usize,
    },
    /// Encoding or decoding a message failed.
    #[error(transparent)]
    Proto(#[from] kakera_proto::ProtoError),
}

impl NetError {
    /// Whether the peer was not reached (as opposed to reached and refusing).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, NetError::Peer { .. } | NetError::Timeout { .. })
    }

    /// Whether asking again later may succeed: the peer was unreachable, or it
    /// answered that it cannot serve now (unavailable, busy).
    pub fn is_transient(&self) -> bool {
        self.is_unreachable()
            || matches!(
                self,
                NetError::Refused {
                    kind: kakera_proto::ErrorKind::Unavailable | kakera_proto::ErrorKind::Busy,
                    ..
                }
            )
    }
}
