//! The medical crate's one error type; every message is a sentence a person can act on.

use std::path::PathBuf;

/// Errors of kakera-medical.
#[derive(Debug, thiserror::Error)]
pub enum MedicalError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// An argument or an input file is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// An ingest run stopped part-way because the cluster failed; running the same
    /// command again resumes it (what was stored is skipped).
    #[error("{0}")]
    Interrupted(String),
    /// Record metadata built from the input is not valid.
    #[error(transparent)]
    Proto(#[from] kakera_proto::ProtoError),
    /// The client library failed (the cluster, a key file, sealing).
    #[error(transparent)]
    Client(#[from] kakera_client::ClientError),
}
