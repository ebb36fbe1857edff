//! A plain replica: the benchmark baseline's stored form of a record (one whole copy
//! per holder, threshold 1, nothing sealed or split). Only clusters whose config has
//! `[baseline] plain_replicas` accept it (see `kakera_config::BENCH_CLUSTER_PREFIX`);
//! it exists so that `kakera bench` can measure secret sharing against replication
//! through the same nodes, transport and Raft commit path.
//!
//! Encoding, format version 1 (integers little-endian), shaped like a share's so that
//! the node does the same integrity work per byte:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0      | 4    | magic `KKRP` |
//! | 4      | 1    | format version (1) |
//! | 5      | 3    | reserved, 0 |
//! | 8      | 8    | data length L |
//! | 16     | L    | the record's bytes |
//! | 16 + L | 16   | checksum: BLAKE3 of bytes `0 .. 16 + L`, first 16 bytes |

use crate::error::ProtoError;

/// The magic bytes at the start of every encoded replica.
pub const REPLICA_MAGIC: [u8; 4] = *b"KKRP";
/// The replica format version this build writes and reads.
pub const REPLICA_FORMAT_VERSION: u8 = 1;
/// Bytes before the record's bytes.
pub const REPLICA_HEADER_LEN: usize = 16;
/// Bytes after the record's bytes.
pub const REPLICA_CHECKSUM_LEN: usize = 16;

/// Encodes `data` as a replica.
pub fn encode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(REPLICA_HEADER_LEN + data.len() + REPLICA_CHECKSUM_LEN);
    out.extend_from_slice(&REPLICA_MAGIC);
    out.push(REPLICA_FORMAT_VERSION);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
    let sum = blake3::hash(&out);
    out.extend_from_slice(&sum.as_bytes()[..REPLICA_CHECKSUM_LEN]);
    out
}

/// Checks an encoded replica (magic, version, length, checksum) and returns the
/// record's bytes inside it, without copying.
pub fn decode(bytes: &[u8]) -> Result<&[u8], ProtoError> {
    let bad = |reason: &str| ProtoError::Malformed {
        reason: format!("plain replica: {reason}"),
    };
    if bytes.len() < REPLICA_HEADER_LEN + REPLICA_CHECKSUM_LEN {
        return Err(bad("shorter than its header and checksum"));
    }
    if bytes[..4] != REPLICA_MAGIC {
        return Err(bad("wrong magic"));
    }
    if bytes[4] != REPLICA_FORMAT_VERSION {
        return Err(bad("unknown format version"));
    }
    if bytes[5..8] != [0; 3] {
        return Err(bad("reserved bytes are not zero"));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[8..16]);
    let len = u64::from_le_bytes(len);
    if len != (bytes.len() - REPLICA_HEADER_LEN - REPLICA_CHECKSUM_LEN) as u64 {
        return Err(bad("length field disagrees with the size"));
    }
    let body_end = bytes.len() - REPLICA_CHECKSUM_LEN;
    let sum = blake3::hash(&bytes[..body_end]);
    if bytes[body_end..] != sum.as_bytes()[..REPLICA_CHECKSUM_LEN] {
        return Err(bad("checksum mismatch"));
    }
    Ok(&bytes[REPLICA_HEADER_LEN..body_end])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;

    #[test]
    fn round_trip_and_every_damage_refused() {
        for data in [&b""[..], b"x", &[7u8; 1000]] {
            let enc = encode(data);
            assert_eq!(decode(&enc).unwrap(), data);
        }
        let enc = encode(b"plain bytes");
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 1;
            assert!(decode(&bad).is_err(), "a flipped bit at {i} passed");
        }
        assert!(decode(&enc[..enc.len() - 1]).is_err());
        assert!(decode(&[]).is_err());
    }
}
