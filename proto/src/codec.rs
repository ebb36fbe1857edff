//! The one place kakera encodes values to bytes: a format-version byte, then bincode
//! 2.0 (pinned: 3.0.0 is an empty release that marks the crate unmaintained,
//! RUSTSEC-2025-0141) with the standard configuration and an allocation limit.
//!
//! Everything that crosses the wire or lands on disk as a structured value goes
//! through [`encode`] and [`decode`]; no other module names bincode.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ProtoError, Result};

/// The wire and storage format version written as the first byte.
pub const FORMAT_VERSION: u8 = 1;

/// The largest encoded value [`decode`] accepts, and the bound on any allocation the
/// decoder makes for a length it reads (a hostile length cannot exhaust memory).
pub const MAX_VALUE_BYTES: usize = 64 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_VALUE_BYTES>()
}

/// Encodes `value` behind the version byte.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = vec![FORMAT_VERSION];
    let body = bincode::serde::encode_to_vec(value, config()).map_err(|e| ProtoError::Encode {
        reason: e.to_string(),
    })?;
    if body.len() >= MAX_VALUE_BYTES {
        return Err(ProtoError::TooLarge {
            size_bytes: body.len() as u64,
            limit_bytes: MAX_VALUE_BYTES as u64,
        });
    }
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a value written by [`encode`]: checks the version byte, bounds every
/// allocation, and refuses trailing bytes and non-canonical encodings, so a value has
/// exactly one encoding (no two byte strings a hash or a signature could tell apart
/// decode to the same value).
pub fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err(ProtoError::Malformed {
            reason: "empty message".into(),
        });
    };
    if version != FORMAT_VERSION {
        return Err(ProtoError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if body.len() > MAX_VALUE_BYTES {
        return Err(ProtoError::TooLarge {
            size_bytes: body.len() as u64,
            limit_bytes: MAX_VALUE_BYTES as u64,
        });
    }
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(body, config()).map_err(|e| {
        ProtoError::Malformed {
            reason: e.to_string(),
        }
    })?;
    if used != body.len() {
        return Err(ProtoError::Malformed {
            reason: format!("{} trailing bytes", body.len() - used),
        });
    }
    // bincode's varints accept longer forms of a value than the minimal one it writes
    // (found by fuzz/fuzz_targets/messages.rs). Every other field has one encoding
    // (fixed-size values, 0/1 for bools and option tags, exact UTF-8), and a longer
    // varint makes the whole encoding longer, so the canonical encoding is the only
    // one of the length it would be written at.
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(&value, &mut size, config()).map_err(|e| {
        ProtoError::Malformed {
            reason: e.to_string(),
        }
    })?;
    if size.bytes_written != body.len() {
        return Err(ProtoError::Malformed {
            reason: format!(
                "non-canonical encoding: {} bytes where the value encodes to {}",
                body.len(),
                size.bytes_written
            ),
        });
    }
    Ok(value)
}
