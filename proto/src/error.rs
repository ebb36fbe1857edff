//! The crate's one error type. Messages name what is wrong with the input, never its
//! contents.

/// Errors of kakera-proto.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// A frame or message is larger than the limit.
    #[error("message of {size_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    TooLarge {
        /// The size announced or produced.
        size_bytes: u64,
        /// The limit in force.
        limit_bytes: u64,
    },
    /// The message was written by a codec version this build does not read.
    #[error("unsupported wire format version {found} (this build speaks version {supported})")]
    UnsupportedVersion {
        /// The version byte received.
        found: u8,
        /// The version this build speaks.
        supported: u8,
    },
    /// The bytes are not a valid message of the expected type.
    #[error("malformed message: {reason}")]
    Malformed {
        /// What the decoder found wrong.
        reason: String,
    },
    /// A value (a record id, a date, a kind, a source code) is not acceptable.
    #[error("{reason}")]
    Invalid {
        /// What is wrong, as a sentence.
        reason: String,
    },
    /// A message could not be encoded (a bug, or a value the format cannot hold).
    #[error("cannot encode message: {reason}")]
    Encode {
        /// What the encoder said.
        reason: String,
    },
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// Reading or writing the stream failed.
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer's certificate does not carry a valid kakera identity.
    #[error("certificate identity: {reason}")]
    Identity {
        /// What is missing or wrong.
        reason: String,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ProtoError>;
