//! The crate's one error type. No variant carries share or secret bytes.

/// Everything that can go wrong in kakera-shamir.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShamirError {
    /// The threshold and share count break `2 <= k <= n <= 255`.
    #[error("invalid threshold: need 2 <= k <= n <= 255, got k = {k}, n = {n}")]
    InvalidThreshold {
        /// The threshold asked for.
        k: usize,
        /// The number of shares asked for.
        n: usize,
    },
    /// An x coordinate of 0 would make that share the secret itself.
    #[error("x coordinate 0 is not allowed: the share at x = 0 is the secret")]
    ZeroX,
    /// Two shares (or two requested coordinates) have the same x.
    #[error("x coordinate {x} appears more than once")]
    DuplicateX {
        /// The repeated coordinate.
        x: u8,
    },
    /// Fewer shares than the threshold were given.
    #[error("not enough shares: have {have}, need {need}")]
    NotEnoughShares {
        /// How many distinct shares were given.
        have: usize,
        /// How many the operation needs.
        need: usize,
    },
    /// The shares' data lengths differ.
    #[error("share at x = {x} is {found} bytes long, expected {expected}")]
    LengthMismatch {
        /// The x coordinate of the first share whose length differs.
        x: u8,
        /// The length of the first share.
        expected: usize,
        /// The length of this share.
        found: usize,
    },
    /// The shares come from different sharings (different records or refreshes).
    #[error("shares come from different sharings (set ids differ): they cannot be combined")]
    DifferentSets,
    /// The shares claim different thresholds.
    #[error("shares claim different thresholds: {expected} and {found}")]
    ThresholdMismatch {
        /// The threshold of the first share.
        expected: u8,
        /// The threshold of a later share.
        found: u8,
    },
    /// A caller-provided output buffer has the wrong length, or the wrong number of
    /// buffers was given.
    #[error("output buffers do not fit: expected {expected}, found {found}")]
    BufferMismatch {
        /// The expected buffer count or length.
        expected: usize,
        /// The buffer count or length given.
        found: usize,
    },
    /// A consistency check needs more than k shares to say anything.
    #[error("a consistency check needs more than k = {k} shares, got {have}")]
    TooFewForCheck {
        /// The threshold.
        k: u8,
        /// The number of shares given.
        have: usize,
    },
    /// An encoded share is shorter than its header and checksum, or than its declared
    /// length.
    #[error("encoded share is truncated: {len} bytes, need at least {need}")]
    Truncated {
        /// The encoded length given.
        len: usize,
        /// The length the encoding needs.
        need: usize,
    },
    /// An encoded share is longer than its declared length.
    #[error("encoded share has {extra} trailing bytes after its checksum")]
    TrailingBytes {
        /// How many bytes follow the checksum.
        extra: usize,
    },
    /// The bytes do not start with the share magic: not a kakera share.
    #[error("not a kakera share (bad magic bytes)")]
    BadMagic,
    /// The share was written by a format version this build does not read.
    #[error("unsupported share format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version in the share.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// A header field holds a value no writer produces.
    #[error("malformed share header: {field}")]
    MalformedHeader {
        /// Which field is wrong.
        field: &'static str,
    },
    /// The checksum does not match: the share was corrupted in storage or transit.
    #[error("share checksum mismatch: the share is corrupted")]
    ChecksumMismatch,
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Rng(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ShamirError>;
