//! Sealing records to the zone key: HPKE (RFC 9180) base mode with DHKEM(X25519,
//! HKDF-SHA256), HKDF-SHA256 and ChaCha20Poly1305. The AAD binds the cluster id, the
//! record id and the metadata, so a sealed record moved to another id or relabelled
//! does not open. What is shared among the nodes is exactly the sealed bytes.
//!
//! Sealed format v2 (written): `KKSL` | version 2 | encapsulated key (32 bytes) |
//! ciphertext with its 16-byte tag. One encapsulation per put batch ([`Sealer`]):
//! each record's ChaCha20Poly1305 key is exported from the batch's HPKE context
//! (RFC 9180 §5.3) with `EXPORT_LABEL || record id` as the exporter context, and
//! used for that record alone (nonce zero; a sealer refuses an id twice). Every
//! record still opens on its own with the zone key; a reader opening many records
//! of one batch decapsulates once ([`Opener`]). X25519 was two thirds of the client's
//! CPU for 1 KiB puts with one encapsulation per record (docs/performance.md).
//!
//! A record stored as segments (issue 24.3) seals each segment on its own like a
//! record, under the segment's own id's key, with an AAD that names the record
//! (its first segment's id and its metadata), the segment's index and whether it
//! is the last ([`Binding::Segment`]): segments do not open reordered, moved to
//! another record, or with the record cut short.
//!
//! Sealed format v1 (still read): the same layout with version 1, each record
//! sealed by its own single-shot HPKE encapsulation.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;

use chacha20poly1305::aead::{Aead as _, KeyInit, Payload};
use hpke::aead::{AeadCtxR, AeadCtxS, ChaCha20Poly1305};
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use kakera_proto::{RecordId, RecordMeta, codec};
use zeroize::Zeroizing;

use crate::error::ClientError;

type Kem = X25519HkdfSha256;
type Kdf = HkdfSha256;
type Aead = ChaCha20Poly1305;

/// First bytes of a sealed record.
pub const SEAL_MAGIC: [u8; 4] = *b"KKSL";
/// The sealed format this build writes (it reads this one and version 1).
pub const SEAL_VERSION: u8 = 2;
/// The older sealed format: one single-shot encapsulation per record.
const SEAL_V1: u8 = 1;
/// Bytes of the X25519 encapsulated key.
const ENC_BYTES: usize = 32;
/// Bytes of the AEAD tag.
const TAG_BYTES: usize = 16;
/// Bytes a sealed record adds to its plaintext.
pub const SEAL_OVERHEAD_BYTES: usize = SEAL_MAGIC.len() + 1 + ENC_BYTES + TAG_BYTES;
/// The HPKE info string of format v1 (domain separation).
const INFO: &[u8] = b"kakera sealed record v1";
/// The HPKE info string of format v2's batch contexts.
const INFO_V2: &[u8] = b"kakera sealed batch v2";
/// The exporter context's prefix for a record's key (the record id follows).
const EXPORT_LABEL: &[u8] = b"kakera record key v2";
/// Most batch contexts an [`Opener`] keeps (it starts again when full).
const MAX_OPEN_CONTEXTS: usize = 4096;

/// The zone's public key: anyone may seal to it.
#[derive(Clone, PartialEq, Eq)]
pub struct ZonePublicKey([u8; 32]);

impl ZonePublicKey {
    /// From the 32 raw bytes (e.g. the config's `zone_public_key`).
    pub fn from_bytes(bytes: [u8; 32]) -> Result<ZonePublicKey, ClientError> {
        <Kem as hpke::Kem>::PublicKey::from_bytes(&bytes)
            .map_err(|e| ClientError::Invalid(format!("not an X25519 public key: {e}")))?;
        Ok(ZonePublicKey(bytes))
    }

    /// The raw bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// Lower-case hex, as the config holds it.
    pub fn to_hex(&self) -> String {
        crate::zone::hex(&self.0)
    }
}

impl fmt::Debug for ZonePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ZonePublicKey({})", self.to_hex())
    }
}

/// The zone's private key: held only inside the HSZ, zeroized on drop, never printed.
#[derive(Clone)]
pub struct ZonePrivateKey(Zeroizing<[u8; 32]>);

impl ZonePrivateKey {
    /// A new random key pair (from the OS generator).
    pub fn generate() -> (ZonePrivateKey, ZonePublicKey) {
        let (sk, pk) = Kem::gen_keypair();
        let mut raw = Zeroizing::new([0u8; 32]);
        // Written straight into the zeroizing buffer: no copy of the key is left.
        sk.write_exact(raw.as_mut_slice());
        let mut pk_raw = [0u8; 32];
        pk.write_exact(&mut pk_raw);
        (ZonePrivateKey(raw), ZonePublicKey(pk_raw))
    }

    /// From the 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<ZonePrivateKey, ClientError> {
        let raw: [u8; 32] = bytes.try_into().map_err(|_| {
            ClientError::Invalid(format!(
                "a zone private key is 32 bytes, not {}",
                bytes.len()
            ))
        })?;
        let raw = Zeroizing::new(raw);
        <Kem as hpke::Kem>::PrivateKey::from_bytes(raw.as_slice())
            .map_err(|_| ClientError::Invalid("not an X25519 private key".into()))?;
        Ok(ZonePrivateKey(raw))
    }

    /// The raw bytes (for writing the key file or splitting among custodians).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The matching public key.
    pub fn public_key(&self) -> Result<ZonePublicKey, ClientError> {
        let sk = self.hpke_key()?;
        let mut pk = [0u8; 32];
        Kem::sk_to_pk(&sk).write_exact(&mut pk);
        Ok(ZonePublicKey(pk))
    }

    fn hpke_key(&self) -> Result<<Kem as hpke::Kem>::PrivateKey, ClientError> {
        <Kem as hpke::Kem>::PrivateKey::from_bytes(self.0.as_slice())
            .map_err(|_| ClientError::Invalid("not an X25519 private key".into()))
    }
}

impl fmt::Debug for ZonePrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ZonePrivateKey(..)")
    }
}

/// What a sealed message belongs to besides its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// A record kept whole: the record id and metadata given.
    Whole,
    /// One segment of a record stored as segments: the metadata given is the
    /// record's, the id given is the segment's own.
    Segment {
        /// The record (its first segment's id).
        parent: RecordId,
        /// The segment's position, from 0.
        index: u32,
        /// Whether it is the record's last segment.
        last: bool,
    },
}

/// Domain label of a segment's associated data.
const SEGMENT_AAD_LABEL: &str = "kakera record segment v1";

/// The associated data of a record: cluster id, record id and metadata, encoded;
/// for a segment, its label, the cluster id, the record, its metadata, the index
/// and the last flag.
fn aad(
    cluster_id: &str,
    id: &RecordId,
    meta: &RecordMeta,
    binding: Binding,
) -> Result<Vec<u8>, ClientError> {
    match binding {
        Binding::Whole => codec::encode(&(cluster_id, id, meta)),
        Binding::Segment {
            parent,
            index,
            last,
        } => codec::encode(&(SEGMENT_AAD_LABEL, cluster_id, parent, meta, index, last)),
    }
    .map_err(ClientError::from)
}

/// Seals one record for the zone, bound to `cluster_id`, `id` and `meta` (a batch of
/// one: [`Sealer`]).
pub fn seal(
    zone: &ZonePublicKey,
    cluster_id: &str,
    id: &RecordId,
    meta: &RecordMeta,
    plaintext: &[u8],
) -> Result<Vec<u8>, ClientError> {
    Sealer::new(zone)?.seal(cluster_id, id, meta, plaintext)
}

/// Opens one sealed record (v1 or v2) with the zone private key. Fails, without
/// saying more, if the bytes, the record id, the metadata or the cluster id differ
/// from sealing time.
pub fn open(
    zone: &ZonePrivateKey,
    cluster_id: &str,
    id: &RecordId,
    meta: &RecordMeta,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    Opener::new(zone)?.open(cluster_id, id, meta, sealed)
}

/// The exporter context of record `id`'s key.
fn export_context(id: &RecordId) -> Vec<u8> {
    [EXPORT_LABEL, &id.0].concat()
}

/// The AEAD of one record, keyed by its exported key (the key is zeroized here and
/// in the cipher, whose `zeroize` feature is on).
fn record_cipher(
    export: impl FnOnce(&[u8], &mut [u8]) -> Result<(), hpke::HpkeError>,
    id: &RecordId,
) -> Result<chacha20poly1305::ChaCha20Poly1305, hpke::HpkeError> {
    let mut key = Zeroizing::new([0u8; 32]);
    export(&export_context(id), key.as_mut_slice())?;
    Ok(chacha20poly1305::ChaCha20Poly1305::new(&(*key).into()))
}

/// The nonce of every v2 record: each record key encrypts exactly one message.
fn zero_nonce() -> chacha20poly1305::Nonce {
    [0u8; 12].into()
}

/// Seals the records of one batch under one HPKE encapsulation to the zone key.
/// Each record gets its own exported key; an id sealed twice is refused (its key
/// and nonce would repeat).
pub struct Sealer {
    enc: [u8; ENC_BYTES],
    ctx: AeadCtxS<Aead, Kdf, Kem>,
    sealed: HashSet<RecordId>,
}

impl Sealer {
    /// A fresh encapsulation to `zone` (from the OS generator).
    pub fn new(zone: &ZonePublicKey) -> Result<Sealer, ClientError> {
        let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(&zone.0)
            .map_err(|e| ClientError::Invalid(format!("zone public key: {e}")))?;
        let (enc, ctx) = hpke::setup_sender::<Aead, Kdf, Kem>(&OpModeS::Base, &pk, INFO_V2)
            .map_err(|e| ClientError::Seal(format!("HPKE setup failed: {e}")))?;
        let mut raw = [0u8; ENC_BYTES];
        enc.write_exact(&mut raw);
        Ok(Sealer {
            enc: raw,
            ctx,
            sealed: HashSet::new(),
        })
    }

    /// Seals `plaintext`, bound to `cluster_id`, `id` and `meta`.
    pub fn seal(
        &mut self,
        cluster_id: &str,
        id: &RecordId,
        meta: &RecordMeta,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        self.seal_bound(cluster_id, id, meta, Binding::Whole, plaintext)
    }

    /// Seals `plaintext` under `id`'s key, bound to `cluster_id`, `meta` and
    /// `binding` (a whole record: `id`; a segment: its record, index and place).
    pub fn seal_bound(
        &mut self,
        cluster_id: &str,
        id: &RecordId,
        meta: &RecordMeta,
        binding: Binding,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        if !self.sealed.insert(*id) {
            return Err(ClientError::Invalid(format!(
                "record {id} appears twice in one batch"
            )));
        }
        let aad = aad(cluster_id, id, meta, binding)?;
        let fail =
            |e: &dyn fmt::Display| ClientError::Seal(format!("sealing record {id} failed: {e}"));
        let cipher = record_cipher(|c, out| self.ctx.export(c, out), id).map_err(|e| fail(&e))?;
        let ciphertext = cipher
            .encrypt(
                &zero_nonce(),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|e| fail(&e))?;
        let out = framed(SEAL_VERSION, &self.enc, &ciphertext);
        debug_assert_eq!(out.len(), SEAL_OVERHEAD_BYTES + plaintext.len());
        Ok(out)
    }
}

/// A sealed record's bytes: magic, `version`, encapsulated key, ciphertext + tag.
fn framed(version: u8, enc: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEAL_MAGIC.len() + 1 + enc.len() + ciphertext.len());
    out.extend_from_slice(&SEAL_MAGIC);
    out.push(version);
    out.extend_from_slice(enc);
    out.extend_from_slice(ciphertext);
    out
}

/// Opens sealed records with the zone private key, decapsulating each batch's key
/// once (it keeps up to [`MAX_OPEN_CONTEXTS`] batch contexts).
pub struct Opener {
    sk: <Kem as hpke::Kem>::PrivateKey,
    contexts: HashMap<[u8; ENC_BYTES], AeadCtxR<Aead, Kdf, Kem>>,
}

impl Opener {
    /// An opener with `zone`'s key.
    pub fn new(zone: &ZonePrivateKey) -> Result<Opener, ClientError> {
        Ok(Opener {
            sk: zone.hpke_key()?,
            contexts: HashMap::new(),
        })
    }

    /// Opens a sealed record (v1 or v2). Fails, without saying more, if the bytes,
    /// the record id, the metadata or the cluster id differ from sealing time.
    pub fn open(
        &mut self,
        cluster_id: &str,
        id: &RecordId,
        meta: &RecordMeta,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        self.open_bound(cluster_id, id, meta, Binding::Whole, sealed)
    }

    /// Opens what [`Sealer::seal_bound`] sealed with the same arguments.
    pub fn open_bound(
        &mut self,
        cluster_id: &str,
        id: &RecordId,
        meta: &RecordMeta,
        binding: Binding,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        if sealed.len() < SEAL_OVERHEAD_BYTES || sealed[..4] != SEAL_MAGIC {
            return Err(ClientError::Seal(format!(
                "record {id}: not a sealed record"
            )));
        }
        let version = sealed[4];
        if version != SEAL_VERSION && version != SEAL_V1 {
            return Err(ClientError::Seal(format!(
                "record {id}: sealed format version {version} is not supported (this build \
                 reads {SEAL_V1} and {SEAL_VERSION})"
            )));
        }
        let mut enc_raw = [0u8; ENC_BYTES];
        enc_raw.copy_from_slice(&sealed[5..5 + ENC_BYTES]);
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&enc_raw)
            .map_err(|_| ClientError::Seal(format!("record {id}: bad encapsulated key")))?;
        let aad = aad(cluster_id, id, meta, binding)?;
        let ciphertext = &sealed[5 + ENC_BYTES..];
        let refused = || {
            ClientError::Seal(format!(
                "record {id} does not open with this zone key (wrong key, or the record, its \
                 id or its metadata changed)"
            ))
        };
        if version == SEAL_V1 {
            return hpke::single_shot_open::<Aead, Kdf, Kem>(
                &OpModeR::Base,
                &self.sk,
                &enc,
                INFO,
                ciphertext,
                &aad,
            )
            .map(Zeroizing::new)
            .map_err(|_| refused());
        }
        if self.contexts.len() >= MAX_OPEN_CONTEXTS && !self.contexts.contains_key(&enc_raw) {
            self.contexts.clear();
        }
        let ctx = match self.contexts.entry(enc_raw) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(new) => new.insert(
                hpke::setup_receiver::<Aead, Kdf, Kem>(&OpModeR::Base, &self.sk, &enc, INFO_V2)
                    .map_err(|_| refused())?,
            ),
        };
        let cipher = record_cipher(|c, out| ctx.export(c, out), id).map_err(|_| refused())?;
        cipher
            .decrypt(
                &zero_nonce(),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| refused())
    }
}

/// Seals one record in format v1 (one single-shot encapsulation), as builds before
/// format v2 wrote it: tests check such records still open.
#[cfg(test)]
pub(crate) fn seal_v1(
    zone: &ZonePublicKey,
    cluster_id: &str,
    id: &RecordId,
    meta: &RecordMeta,
    plaintext: &[u8],
) -> Result<Vec<u8>, ClientError> {
    let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(&zone.0)
        .map_err(|e| ClientError::Invalid(format!("zone public key: {e}")))?;
    let aad = aad(cluster_id, id, meta, Binding::Whole)?;
    let (enc, ciphertext) =
        hpke::single_shot_seal::<Aead, Kdf, Kem>(&OpModeS::Base, &pk, INFO, plaintext, &aad)
            .map_err(|e| ClientError::Seal(format!("sealing record {id} failed: {e}")))?;
    Ok(framed(SEAL_V1, &enc.to_bytes(), &ciphertext))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kakera_proto::{Date, RecordKind, SubjectTag};

    fn meta(kind: RecordKind) -> RecordMeta {
        RecordMeta {
            subject: SubjectTag([3; 32]),
            kind,
            source: "1312345678".into(),
            effective: Date::new(2025, 1, 1).unwrap_or_else(|e| panic!("{e}")),
            data_kind: None,
        }
    }

    fn id(n: u8) -> RecordId {
        RecordId::from_parts(1_700_000_000_000, [n; 10])
    }

    fn ok<T>(r: Result<T, ClientError>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    /// P2 for records stored as segments: a segment opens only as itself, at its
    /// index, in its record, with its last flag; never as a whole record.
    #[test]
    fn segments_open_only_in_their_place() {
        let (sk, pk) = ZonePrivateKey::generate();
        let m = meta(RecordKind::Image);
        let mut sealer = ok(Sealer::new(&pk));
        let parent = id(1);
        let bind = |index, last| Binding::Segment {
            parent,
            index,
            last,
        };
        let first = ok(sealer.seal_bound("c", &parent, &m, bind(0, false), b"zero"));
        let tail = ok(sealer.seal_bound("c", &id(2), &m, bind(1, true), b"one"));
        let mut opener = ok(Opener::new(&sk));
        let open = |o: &mut Opener, sid: &RecordId, b: Binding, sealed: &[u8]| {
            o.open_bound("c", sid, &m, b, sealed).map(|p| p.to_vec())
        };
        assert_eq!(
            ok(open(&mut opener, &parent, bind(0, false), &first)),
            b"zero"
        );
        assert_eq!(ok(open(&mut opener, &id(2), bind(1, true), &tail)), b"one");
        // Cut short (the tail read as not last), reordered, moved, or read whole.
        assert!(open(&mut opener, &id(2), bind(1, false), &tail).is_err());
        assert!(open(&mut opener, &id(2), bind(0, true), &tail).is_err());
        let elsewhere = Binding::Segment {
            parent: id(9),
            index: 1,
            last: true,
        };
        assert!(open(&mut opener, &id(2), elsewhere, &tail).is_err());
        assert!(open(&mut opener, &parent, Binding::Whole, &first).is_err());
        let mut other = m.clone();
        other.kind = RecordKind::File;
        assert!(
            opener
                .open_bound("c", &id(2), &other, bind(1, true), &tail)
                .is_err()
        );
    }

    /// P2 with one encapsulation per batch: every record of a batch opens on its
    /// own (a fresh opener each), under its own id only, and the batch shares one
    /// encapsulated key while no two records share a keystream.
    #[test]
    fn records_of_one_batch_open_one_by_one_and_only_as_themselves() {
        let (sk, pk) = ZonePrivateKey::generate();
        let m = meta(RecordKind::Claim);
        let mut sealer = ok(Sealer::new(&pk));
        let plain = vec![0u8; 64];
        let sealed: Vec<Vec<u8>> = (1..=4)
            .map(|n| ok(sealer.seal("c1", &id(n), &m, &plain)))
            .collect();
        for (i, s) in sealed.iter().enumerate() {
            assert_eq!(s[4], SEAL_VERSION);
            assert_eq!(s[5..5 + ENC_BYTES], sealed[0][5..5 + ENC_BYTES]);
            let n = i as u8 + 1;
            assert_eq!(ok(open(&sk, "c1", &id(n), &m, s)).as_slice(), &plain[..]);
            // Another record's id (same batch, same enc) does not open it.
            let other = if n == 1 { 2 } else { 1 };
            assert!(open(&sk, "c1", &id(other), &m, s).is_err());
        }
        // Same plaintext, same batch: distinct ciphertexts (distinct keys).
        assert_ne!(sealed[0][5 + ENC_BYTES..], sealed[1][5 + ENC_BYTES..]);
        // A record id twice in a batch is refused: its key and nonce would repeat.
        let twice = sealer.seal("c1", &id(1), &m, b"other bytes");
        assert!(matches!(twice, Err(ClientError::Invalid(_))), "{twice:?}");
        // A new batch encapsulates afresh.
        let next = ok(ok(Sealer::new(&pk)).seal("c1", &id(1), &m, &plain));
        assert_ne!(next[5..5 + ENC_BYTES], sealed[0][5..5 + ENC_BYTES]);
    }

    /// One opener reads records of many batches and of both formats, and still
    /// refuses a tampered record after it has the batch's context.
    #[test]
    fn an_opener_reads_many_batches_and_version_1_records() {
        let (sk, pk) = ZonePrivateKey::generate();
        let m = meta(RecordKind::Checkup);
        let mut opener = ok(Opener::new(&sk));
        let mut batches = Vec::new();
        for b in 0..3u8 {
            let mut sealer = ok(Sealer::new(&pk));
            for n in 0..3u8 {
                let rid = id(b * 10 + n);
                let data = vec![b ^ n; 100 + usize::from(n)];
                batches.push((rid, data.clone(), ok(sealer.seal("c1", &rid, &m, &data))));
            }
        }
        let v1 = ok(seal_v1(
            &pk,
            "c1",
            &id(99),
            &m,
            b"written by an older build",
        ));
        assert_eq!(v1[4], 1);
        for (rid, data, sealed) in &batches {
            assert_eq!(ok(opener.open("c1", rid, &m, sealed)).as_slice(), &data[..]);
        }
        assert_eq!(opener.contexts.len(), 3);
        assert_eq!(
            ok(opener.open("c1", &id(99), &m, &v1)).as_slice(),
            b"written by an older build"
        );
        let (rid, _, sealed) = &batches[0];
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(opener.open("c1", rid, &m, &tampered).is_err());
        assert!(opener.open("c2", rid, &m, sealed).is_err());
        assert!(
            opener
                .open("c1", rid, &meta(RecordKind::Death), sealed)
                .is_err()
        );
        // An unknown version is refused with its number.
        let mut v9 = sealed.clone();
        v9[4] = 9;
        let e = opener.open("c1", rid, &m, &v9).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("version 9")));
    }

    /// The opener's context cache is bounded: past the bound it starts again and
    /// still opens every record.
    #[test]
    fn the_opener_cache_is_bounded() {
        let (sk, pk) = ZonePrivateKey::generate();
        let m = meta(RecordKind::Ssmix2);
        let mut opener = ok(Opener::new(&sk));
        for n in 0..=MAX_OPEN_CONTEXTS {
            let rid = RecordId::from_parts(
                1,
                (n as u128).to_be_bytes()[6..]
                    .try_into()
                    .unwrap_or_else(|e| panic!("{e}")),
            );
            let sealed = ok(seal(&pk, "c1", &rid, &m, b"x"));
            assert_eq!(ok(opener.open("c1", &rid, &m, &sealed)).as_slice(), b"x");
            assert!(opener.contexts.len() <= MAX_OPEN_CONTEXTS);
        }
        assert_eq!(opener.contexts.len(), 1);
    }
}
