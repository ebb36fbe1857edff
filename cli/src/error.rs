//! The CLI crate's one error type; every message is a sentence a person can act on.
//! Errors of the libraries below arrive wrapped ([`CliError::Client`],
//! [`CliError::Medical`]); [`CliError::exit_code`] maps every one to the exit codes
//! the commands document.

use std::path::PathBuf;

use kakera_client::ClientError;
use kakera_config::ConfigError;
use kakera_medical::MedicalError;
use kakera_net::NetError;
use kakera_proto::ProtoError;

/// Errors of kakera-cli.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A file that would be written already exists; nothing was overwritten.
    #[error(
        "{path} already exists; remove it or choose another directory (nothing was overwritten)"
    )]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The CA's files are missing.
    #[error("no CA in {dir}: run `kakera ca init --dir {dir}` first")]
    MissingCa {
        /// Where the CA was looked for.
        dir: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Issuing or reading a certificate failed.
    #[error("certificate: {0}")]
    Certificate(String),
    /// An argument is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The benchmark's cluster failed, or a measured request failed or read back wrong
    /// bytes (the figures would be meaningless).
    #[error("benchmark: {0}")]
    Bench(String),
    /// The client library failed: the cluster, the transport, a key file, a config.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// An ingest or a medical format failed.
    #[error(transparent)]
    Medical(#[from] MedicalError),
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> CliError {
        CliError::Client(ClientError::Config(e))
    }
}

impl From<ProtoError> for CliError {
    fn from(e: ProtoError) -> CliError {
        CliError::Client(ClientError::Proto(e))
    }
}

impl From<NetError> for CliError {
    fn from(e: NetError) -> CliError {
        CliError::Client(ClientError::Net(e))
    }
}

impl CliError {
    /// The exit code: 1 when the command ran and the cluster or the input said no
    /// (invalid config or argument, refused request, unreadable record, benchmark
    /// failure), 3 when a file or the environment is unusable.
    pub fn exit_code(&self) -> u8 {
        let client = |e: &ClientError| match e {
            ClientError::Config(ConfigError::Invalid { .. } | ConfigError::Syntax { .. })
            | ClientError::Invalid(_)
            | ClientError::Proto(ProtoError::Invalid { .. })
            | ClientError::Read { .. }
            | ClientError::Net(NetError::Refused { .. } | NetError::CertificateRefused { .. }) => 1,
            _ => 3,
        };
        match self {
            CliError::Invalid(_) | CliError::Bench(_) => 1,
            CliError::Client(e) => client(e),
            CliError::Medical(
                MedicalError::Invalid(_) | MedicalError::Proto(ProtoError::Invalid { .. }),
            ) => 1,
            CliError::Medical(MedicalError::Client(e)) => client(e),
            _ => 3,
        }
    }
}
