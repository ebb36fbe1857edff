//! A share and its self-describing encoding.
//!
//! Encoding, format version 1 (all integers little-endian):
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0      | 4    | magic `KKSH` |
//! | 4      | 1    | format version (1) |
//! | 5      | 1    | threshold k (2..=255) |
//! | 6      | 1    | x coordinate (1..=255) |
//! | 7      | 1    | reserved, 0 |
//! | 8      | 16   | set id: random, the same for every share of one sharing |
//! | 24     | 8    | data length L |
//! | 32     | L    | share data |
//! | 32 + L | 16   | checksum: BLAKE3 of bytes `0 .. 32 + L`, first 16 bytes |
//!
//! The checksum catches corruption in storage or transit; it is not an authenticator
//! (the Raft catalog's digests are). BLAKE3 is table-free, so computing it over share
//! data is constant time.

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Result, ShamirError};

/// The magic bytes at the start of every encoded share.
pub const SHARE_MAGIC: [u8; 4] = *b"KKSH";
/// The share format version this build writes and reads.
pub const SHARE_FORMAT_VERSION: u8 = 1;
/// Bytes before the share data.
pub const SHARE_HEADER_LEN: usize = 32;
/// Bytes after the share data.
pub const SHARE_CHECKSUM_LEN: usize = 16;

/// Identifies one sharing: every share produced by one split (or one refresh) carries
/// the same random set id, so shares of different records, or of before and after a
/// refresh, are refused instead of combined into garbage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SetId(pub [u8; 16]);

/// One share: the evaluation at `x` of a random polynomial of degree < k whose constant
/// term is the secret, byte by byte. The data is zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Share {
    #[zeroize(skip)]
    set_id: SetId,
    k: u8,
    x: u8,
    /// Holds the data at `start..end`: the whole buffer for a share built from its
    /// parts, the encoding it arrived in for [`Share::decode_owned`] (no copy of a
    /// share of many megabytes). Zeroized whole, header and checksum included.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl PartialEq for Share {
    fn eq(&self, other: &Share) -> bool {
        self.set_id == other.set_id
            && self.k == other.k
            && self.x == other.x
            && self.data() == other.data()
    }
}

impl Eq for Share {}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print share bytes.
        f.debug_struct("Share")
            .field("k", &self.k)
            .field("x", &self.x)
            .field("len", &(self.end - self.start))
            .finish_non_exhaustive()
    }
}

impl Share {
    /// Assembles a share from its parts (for example after a streaming split, or after
    /// reading the data from storage). Checks `k >= 2` and `x != 0`.
    pub fn from_parts(set_id: SetId, k: u8, x: u8, data: Vec<u8>) -> Result<Share> {
        if k < 2 {
            return Err(ShamirError::InvalidThreshold {
                k: k.into(),
                n: k.into(),
            });
        }
        if x == 0 {
            return Err(ShamirError::ZeroX);
        }
        let end = data.len();
        Ok(Share {
            set_id,
            k,
            x,
            buf: data,
            start: 0,
            end,
        })
    }

    /// The sharing this share belongs to.
    pub fn set_id(&self) -> SetId {
        self.set_id
    }

    /// The threshold: how many shares reconstruct the secret.
    pub fn threshold(&self) -> u8 {
        self.k
    }

    /// The x coordinate (never 0).
    pub fn x(&self) -> u8 {
        self.x
    }

    /// The share data, as long as the secret.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Mutable access to the data, for callers that reuse buffers. Changing it changes
    /// the share; the checksum is computed at encoding time.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    /// Length of [`Share::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        SHARE_HEADER_LEN + (self.end - self.start) + SHARE_CHECKSUM_LEN
    }

    /// The self-describing encoding (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// The encoding and the BLAKE3 hash of all of it (checksum included), from one
    /// pass over the data: the hash a holder's catalog entry names.
    pub fn encode_with_digest(&self) -> (Vec<u8>, [u8; 32]) {
        let mut out = Vec::with_capacity(self.encoded_len());
        let digest = self.encode_into_hashed(&mut out);
        (out, digest)
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        self.encode_into_hashed(out);
    }

    /// Appends the encoding to `out`; returns the BLAKE3 hash of the encoding.
    fn encode_into_hashed(&self, out: &mut Vec<u8>) -> [u8; 32] {
        let start = out.len();
        out.reserve(self.encoded_len());
        out.extend_from_slice(&SHARE_MAGIC);
        out.push(SHARE_FORMAT_VERSION);
        out.push(self.k);
        out.push(self.x);
        out.push(0);
        out.extend_from_slice(&self.set_id.0);
        out.extend_from_slice(&((self.end - self.start) as u64).to_le_bytes());
        out.extend_from_slice(self.data());
        let (sum, digest) = checksum_and_digest(&out[start..]);
        out.extend_from_slice(&sum);
        digest
    }

    /// Decodes and verifies an encoded share. Every malformed input gets its own error;
    /// none panics.
    pub fn decode(bytes: &[u8]) -> Result<Share> {
        Share::decode_with_digest(bytes).map(|(share, _)| share)
    }

    /// [`Share::decode`], with the BLAKE3 hash of all of `bytes` from the same pass.
    pub fn decode_with_digest(bytes: &[u8]) -> Result<(Share, [u8; 32])> {
        let (set_id, k, x, data_end, digest) = Share::parse(bytes)?;
        let data = bytes[SHARE_HEADER_LEN..data_end].to_vec();
        let end = data.len();
        let share = Share {
            set_id,
            k,
            x,
            buf: data,
            start: 0,
            end,
        };
        Ok((share, digest))
    }

    /// [`Share::decode_with_digest`] that keeps `bytes` as the share's buffer instead
    /// of copying the data out of it: for a reader that received the encoding in a
    /// buffer of its own. On error the buffer is dropped unread.
    pub fn decode_owned(bytes: Vec<u8>) -> Result<(Share, [u8; 32])> {
        let (set_id, k, x, data_end, digest) = Share::parse(&bytes)?;
        let share = Share {
            set_id,
            k,
            x,
            buf: bytes,
            start: SHARE_HEADER_LEN,
            end: data_end,
        };
        Ok((share, digest))
    }

    /// Checks an encoding exactly as [`Share::decode`] does (header, length,
    /// checksum) without copying the share data out: for a holder that stores the
    /// bytes as they came.
    pub fn check(bytes: &[u8]) -> Result<()> {
        Share::parse(bytes).map(|_| ())
    }

    /// [`Share::check`], returning the BLAKE3 hash of all of `bytes` (what the
    /// catalog names) from the same pass over the data.
    pub fn check_with_digest(bytes: &[u8]) -> Result<[u8; 32]> {
        Share::parse(bytes).map(|(.., digest)| digest)
    }

    /// [`Share::check_with_digest`], also returning the share's threshold k and x
    /// from its header: for a holder that checks a share against the cluster's
    /// policy before it stores it.
    pub fn check_with_params(bytes: &[u8]) -> Result<(u8, u8, [u8; 32])> {
        Share::parse(bytes).map(|(_, k, x, _, digest)| (k, x, digest))
    }

    /// Validates an encoding; returns its set id, k, x, the end of its data and the
    /// BLAKE3 hash of all of it.
    fn parse(bytes: &[u8]) -> Result<(SetId, u8, u8, usize, [u8; 32])> {
        let min = SHARE_HEADER_LEN + SHARE_CHECKSUM_LEN;
        if bytes.len() < min {
            return Err(ShamirError::Truncated {
                len: bytes.len(),
                need: min,
            });
        }
        if bytes[0..4] != SHARE_MAGIC {
            return Err(ShamirError::BadMagic);
        }
        if bytes[4] != SHARE_FORMAT_VERSION {
            return Err(ShamirError::UnsupportedVersion {
                found: bytes[4],
                supported: SHARE_FORMAT_VERSION,
            });
        }
        let (k, x) = (bytes[5], bytes[6]);
        if k < 2 {
            return Err(ShamirError::MalformedHeader {
                field: "threshold k below 2",
            });
        }
        if x == 0 {
            return Err(ShamirError::MalformedHeader {
                field: "x coordinate 0",
            });
        }
        if bytes[7] != 0 {
            return Err(ShamirError::MalformedHeader {
                field: "reserved byte not 0",
            });
        }
        let mut set_id = [0u8; 16];
        set_id.copy_from_slice(&bytes[8..24]);
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&bytes[24..32]);
        let declared = u64::from_le_bytes(len_bytes);
        let available = (bytes.len() - min) as u64;
        if declared > available {
            return Err(ShamirError::Truncated {
                len: bytes.len(),
                need: usize::try_from(declared)
                    .ok()
                    .and_then(|d| d.checked_add(min))
                    .unwrap_or(usize::MAX),
            });
        }
        if declared < available {
            return Err(ShamirError::TrailingBytes {
                extra: (available - declared) as usize,
            });
        }
        let data_end = SHARE_HEADER_LEN + declared as usize;
        let (expected, digest) = checksum_and_digest(&bytes[..data_end]);
        if !crate::kernel::ct_eq(&expected, &bytes[data_end..]) {
            return Err(ShamirError::ChecksumMismatch);
        }
        Ok((SetId(set_id), k, x, data_end, digest))
    }
}

/// The checksum of `body` (header and data) and the BLAKE3 hash of `body` followed
/// by that checksum (the whole encoding), in one pass over `body`: BLAKE3's state
/// after `body` gives the first, and the same state fed the checksum the second.
fn checksum_and_digest(body: &[u8]) -> ([u8; SHARE_CHECKSUM_LEN], [u8; 32]) {
    let mut hasher = blake3::Hasher::new();
    hasher.update(body);
    let mut sum = [0u8; SHARE_CHECKSUM_LEN];
    sum.copy_from_slice(&hasher.finalize().as_bytes()[..SHARE_CHECKSUM_LEN]);
    hasher.update(&sum);
    (sum, *hasher.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Share {
        Share::from_parts(SetId([7; 16]), 3, 2, vec![1, 2, 3, 4, 5]).unwrap()
    }

    /// A holder reads k and x from the header the same way decoding does, and a
    /// damaged share gives no parameters at all.
    #[test]
    fn parameters_come_from_a_checked_header() {
        let bytes = sample().encode();
        let (k, x, digest) = Share::check_with_params(&bytes).unwrap();
        assert_eq!((k, x), (3, 2));
        assert_eq!(digest, Share::check_with_digest(&bytes).unwrap());
        let mut bad = bytes.clone();
        bad[SHARE_HEADER_LEN] ^= 1;
        assert!(Share::check_with_params(&bad).is_err());
    }

    #[test]
    fn encoding_round_trips() {
        let s = sample();
        let bytes = s.encode();
        assert_eq!(bytes.len(), s.encoded_len());
        assert_eq!(Share::decode(&bytes).unwrap(), s);
    }

    /// The one-pass digest is the BLAKE3 hash of the whole encoding, across BLAKE3's
    /// chunk boundaries, and the checksum inside is unchanged (the golden test).
    #[test]
    fn one_pass_digest_is_the_hash_of_the_encoding() {
        for len in [0usize, 1, 975, 976, 977, 1024, 2048, 5_000, 70_001] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let s = Share::from_parts(SetId([3; 16]), 3, 1, data).unwrap();
            let (bytes, digest) = s.encode_with_digest();
            assert_eq!(bytes, s.encode());
            assert_eq!(&digest, blake3::hash(&bytes).as_bytes(), "len {len}");
            assert_eq!(Share::check_with_digest(&bytes).unwrap(), digest);
            assert_eq!(
                Share::decode_with_digest(&bytes).unwrap(),
                (s.clone(), digest)
            );
            let mut bad = bytes.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert_eq!(
                Share::check_with_digest(&bad),
                Err(ShamirError::ChecksumMismatch)
            );
        }
    }

    /// A share decoded in its own buffer is the share decoded by copy: same data,
    /// same digest, same re-encoding; writing through `data_mut` changes the data
    /// only (not the header kept in the buffer); a damaged buffer is refused the
    /// same way; after `zeroize` it holds no data.
    #[test]
    fn decoding_in_place_equals_decoding_by_copy() {
        for len in [0usize, 1, 977, 70_001] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
            let s = Share::from_parts(SetId([5; 16]), 3, 4, data).unwrap();
            let (bytes, digest) = s.encode_with_digest();
            let (mut owned, owned_digest) = Share::decode_owned(bytes.clone()).unwrap();
            assert_eq!(owned_digest, digest);
            assert_eq!(owned, s);
            assert_eq!(owned.data(), s.data());
            assert_eq!(owned.encode(), bytes);
            assert_eq!(owned.encoded_len(), bytes.len());
            if len > 0 {
                owned.data_mut()[0] ^= 1;
                assert_ne!(owned, s);
                assert_eq!(owned.x(), 4);
                assert_eq!(owned.encode()[SHARE_HEADER_LEN], s.data()[0] ^ 1);
            }
            let mut bad = bytes.clone();
            bad[SHARE_HEADER_LEN / 2] ^= 1;
            assert_eq!(
                Share::decode_owned(bad.clone()).err(),
                Share::decode_with_digest(&bad).err()
            );
            owned.zeroize();
            assert!(owned.data().is_empty());
        }
    }

    #[test]
    fn golden_encoding_is_stable() {
        // Guards the on-disk and on-wire format: a change here is a format change and
        // needs a new format version.
        let bytes = sample().encode();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            &hex[..74],
            "4b4b5348010302000707070707070707070707070707070705000000000000000102030405"
        );
        assert_eq!(hex.len(), 2 * (32 + 5 + 16));
        let sum = blake3::hash(&bytes[..37]);
        assert_eq!(&bytes[37..], &sum.as_bytes()[..16]);
    }

    #[test]
    fn every_malformation_has_its_own_error() {
        let good = sample().encode();
        assert!(matches!(
            Share::decode(&good[..10]),
            Err(ShamirError::Truncated { .. })
        ));
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(Share::decode(&b), Err(ShamirError::BadMagic));
        let mut b = good.clone();
        b[4] = 9;
        assert!(matches!(
            Share::decode(&b),
            Err(ShamirError::UnsupportedVersion { found: 9, .. })
        ));
        let mut b = good.clone();
        b[5] = 1;
        assert!(matches!(
            Share::decode(&b),
            Err(ShamirError::MalformedHeader { .. })
        ));
        let mut b = good.clone();
        b[6] = 0;
        assert!(matches!(
            Share::decode(&b),
            Err(ShamirError::MalformedHeader { .. })
        ));
        let mut b = good.clone();
        b[7] = 1;
        assert!(matches!(
            Share::decode(&b),
            Err(ShamirError::MalformedHeader { .. })
        ));
        let mut b = good.clone();
        b[24] = 200;
        assert!(matches!(
            Share::decode(&b),
            Err(ShamirError::Truncated { .. })
        ));
        let mut b = good.clone();
        b[24] = 1;
        assert!(matches!(
            Share::decode(&b),
            Err(ShamirError::TrailingBytes { extra: 4 })
        ));
        let mut b = good.clone();
        b[33] ^= 0x40;
        assert_eq!(Share::decode(&b), Err(ShamirError::ChecksumMismatch));
        let mut b = good.clone();
        b[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            Share::decode(&b),
            Err(ShamirError::Truncated { .. })
        ));
    }

    #[test]
    fn check_agrees_with_decode() {
        let good = sample().encode();
        assert_eq!(Share::check(&good), Ok(()));
        for i in 0..good.len() {
            for flip in [0x01, 0x80] {
                let mut b = good.clone();
                b[i] ^= flip;
                assert_eq!(Share::check(&b), Share::decode(&b).map(|_| ()), "byte {i}");
                assert!(Share::check(&b).is_err(), "a damaged byte {i} passed");
            }
        }
        assert_eq!(
            Share::check(&good[..3]),
            Share::decode(&good[..3]).map(|_| ())
        );
    }

    #[test]
    fn debug_output_never_shows_share_bytes() {
        let s = Share::from_parts(SetId([0; 16]), 2, 1, vec![0xAB; 4]).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("171"), "{shown}");
        assert!(!shown.to_lowercase().contains("ab"), "{shown}");
    }
}
