//! Sealing records to the zone key: HPKE (RFC 9180) base mode with DHKEM(X25519,
//! HKDF-SHA256), HKDF-SHA256 and ChaCha20Poly1305, one encapsulation per record so
//! every record opens on its own. The AAD binds the cluster id, the record id and the
//! metadata, so a sealed record moved to another id or relabelled does not open.
//!
//! Sealed format v1: `KKSL` | version 1 | encapsulated key (32 bytes) | ciphertext
//! with its 16-byte tag. What is shared among the nodes is exactly these bytes.

use std::fmt;

use hpke::aead::ChaCha20Poly1305;
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
/// The sealed format this build writes and reads.
pub const SEAL_VERSION: u8 = 1;
/// Bytes of the X25519 encapsulated key.
const ENC_BYTES: usize = 32;
/// Bytes of the AEAD tag.
const TAG_BYTES: usize = 16;
/// Bytes a sealed record adds to its plaintext.
pub const SEAL_OVERHEAD_BYTES: usize = SEAL_MAGIC.len() + 1 + ENC_BYTES + TAG_BYTES;
/// The HPKE info string (domain separation).
const INFO: &[u8] = b"kakera sealed record v1";

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

/// The associated data of a record: cluster id, record id and metadata, encoded.
fn aad(cluster_id: &str, id: &RecordId, meta: &RecordMeta) -> Result<Vec<u8>, ClientError> {
    codec::encode(&(cluster_id, id, meta)).map_err(ClientError::from)
}

/// Seals `plaintext` for the zone, bound to `cluster_id`, `id` and `meta`.
pub fn seal(
    zone: &ZonePublicKey,
    cluster_id: &str,
    id: &RecordId,
    meta: &RecordMeta,
    plaintext: &[u8],
) -> Result<Vec<u8>, ClientError> {
    let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(&zone.0)
        .map_err(|e| ClientError::Invalid(format!("zone public key: {e}")))?;
    let aad = aad(cluster_id, id, meta)?;
    let (enc, ciphertext) =
        hpke::single_shot_seal::<Aead, Kdf, Kem>(&OpModeS::Base, &pk, INFO, plaintext, &aad)
            .map_err(|e| ClientError::Seal(format!("sealing record {id} failed: {e}")))?;
    let mut out = Vec::with_capacity(SEAL_OVERHEAD_BYTES + plaintext.len());
    out.extend_from_slice(&SEAL_MAGIC);
    out.push(SEAL_VERSION);
    out.extend_from_slice(&enc.to_bytes());
    out.extend_from_slice(&ciphertext);
    debug_assert_eq!(out.len(), SEAL_OVERHEAD_BYTES + plaintext.len());
    Ok(out)
}

/// Opens a sealed record with the zone private key. Fails, without saying more, if
/// the bytes, the record id, the metadata or the cluster id differ from sealing time.
pub fn open(
    zone: &ZonePrivateKey,
    cluster_id: &str,
    id: &RecordId,
    meta: &RecordMeta,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    if sealed.len() < SEAL_OVERHEAD_BYTES || sealed[..4] != SEAL_MAGIC {
        return Err(ClientError::Seal(format!(
            "record {id}: not a sealed record"
        )));
    }
    if sealed[4] != SEAL_VERSION {
        return Err(ClientError::Seal(format!(
            "record {id}: sealed format version {} is not supported (this build reads {SEAL_VERSION})",
            sealed[4]
        )));
    }
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&sealed[5..5 + ENC_BYTES])
        .map_err(|_| ClientError::Seal(format!("record {id}: bad encapsulated key")))?;
    let sk = zone.hpke_key()?;
    let aad = aad(cluster_id, id, meta)?;
    hpke::single_shot_open::<Aead, Kdf, Kem>(
        &OpModeR::Base,
        &sk,
        &enc,
        INFO,
        &sealed[5 + ENC_BYTES..],
        &aad,
    )
    .map(Zeroizing::new)
    .map_err(|_| {
        ClientError::Seal(format!(
            "record {id} does not open with this zone key (wrong key, or the record, its id \
             or its metadata changed)"
        ))
    })
}
