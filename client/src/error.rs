//! The client library's one error type; every message is a sentence a person can act on.

use std::path::PathBuf;

/// Errors of kakera-client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A file that would be written already exists; nothing was overwritten.
    #[error(
        "{path} already exists; remove it or choose another directory (nothing was overwritten)"
    )]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Reading the bytes of a streamed put failed.
    #[error("reading the record's bytes failed: {0}")]
    Source(std::io::Error),
    /// An argument is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The transport failed: certificate files, QUIC setup, or a node.
    #[error(transparent)]
    Net(#[from] kakera_net::NetError),
    /// Sealing or opening a record failed (the message never holds record bytes).
    #[error("{0}")]
    Seal(String),
    /// Encoding a value failed.
    #[error(transparent)]
    Proto(#[from] kakera_proto::ProtoError),
    /// A record could not be read back (erased, too few good shares, a digest
    /// mismatch).
    #[error("record {record} could not be read: {failure}")]
    Read {
        /// The record.
        record: kakera_proto::RecordId,
        /// Why (never record or share bytes).
        failure: crate::client::ReadFailure,
    },
    /// The cluster could not serve the request now (no leader); retry later.
    #[error("{0}; check `kakera status` and retry")]
    Unavailable(String),
    /// The cluster config is invalid.
    #[error(transparent)]
    Config(#[from] kakera_config::ConfigError),
}
