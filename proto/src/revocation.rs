//! Certificate revocation, pure: what a CRL says, whether a CA signed it, which
//! certificate a connection presented, and whether a new CRL may replace the one a
//! cluster holds. No IO and no clock; the node keeps the CRLs in its catalog
//! (through Raft) and hands them to rustls' own verifiers, which refuse a revoked
//! certificate at the handshake (issue 22).
//!
//! A certificate is named by its issuer and serial ([`CertRef`]), as a CRL names it.
//! Serials are compared as unsigned big-endian bytes without leading zeros, so the
//! DER integer's sign byte never makes two names of one serial.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::error::{ProtoError, Result};

/// The largest CRL a cluster takes (about 25,000 revoked serials).
pub const MAX_CRL_BYTES: usize = 1024 * 1024;
/// Most certificates one revocation names by their bytes.
pub const MAX_REVOKED_CERTS_PER_REQUEST: usize = 64;
/// The largest certificate a revocation carries.
pub const MAX_CERT_BYTES: usize = 16 * 1024;
/// Most CAs (CRL issuers) a cluster keeps a CRL for: the CA and its successors
/// during rotations.
pub const MAX_CRL_ISSUERS: usize = 16;

/// SHA-256 of an issuer's distinguished name (DER): which CA a CRL or a
/// certificate belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IssuerKey(pub [u8; 32]);

impl IssuerKey {
    fn of(name_der: &[u8]) -> IssuerKey {
        IssuerKey(Sha256::digest(name_der).into())
    }
}

/// A certificate as a CRL names it: its issuer and serial.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CertRef {
    /// The issuing CA.
    pub issuer: IssuerKey,
    /// The serial, big-endian without leading zeros.
    pub serial: Vec<u8>,
}

impl CertRef {
    /// The serial in hex, as `openssl x509 -serial` prints it.
    pub fn serial_hex(&self) -> String {
        hex_upper(&self.serial)
    }
}

impl fmt::Display for CertRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "serial {}", self.serial_hex())
    }
}

fn hex_upper(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "00".into();
    }
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Unsigned big-endian bytes without leading zeros.
fn trim(bytes: &[u8]) -> Vec<u8> {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[first..].to_vec()
}

/// Parses a serial written in hex (colons allowed, as `openssl` prints them).
pub fn parse_serial_hex(s: &str) -> Result<Vec<u8>> {
    let digits: String = s.chars().filter(|c| *c != ':').collect();
    let bad = || ProtoError::Invalid {
        reason: format!("'{s}' is not a certificate serial in hex (like 1A:2B:3C or 1a2b3c)"),
    };
    if digits.is_empty() || digits.len() > 42 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let padded = if digits.len() % 2 == 1 {
        format!("0{digits}")
    } else {
        digits
    };
    let bytes: Vec<u8> = (0..padded.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&padded[i..i + 2], 16).map_err(|_| bad()))
        .collect::<Result<_>>()?;
    Ok(trim(&bytes))
}

/// Who issued the certificate `der` and its serial.
pub fn cert_ref(der: &[u8]) -> Result<CertRef> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| ProtoError::Invalid {
        reason: "not a parsable X.509 certificate".into(),
    })?;
    Ok(CertRef {
        issuer: IssuerKey::of(cert.issuer().as_raw()),
        serial: trim(cert.raw_serial()),
    })
}

/// One revoked serial of a CRL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedSerial {
    /// The serial, big-endian without leading zeros.
    pub serial: Vec<u8>,
    /// The CRL's reason code, as its RFC 5280 name, if it gives one.
    pub reason: Option<String>,
}

/// What a CRL says (its signature not checked: see [`verify_crl`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrlSummary {
    /// The issuing CA.
    pub issuer: IssuerKey,
    /// The issuer's name, for people.
    pub issuer_name: String,
    /// The CRL number, big-endian without leading zeros (a CRL without one is
    /// refused: without it an old CRL could not be told from a new one).
    pub number: Vec<u8>,
    /// The revoked serials, in the CRL's order.
    pub revoked: Vec<RevokedSerial>,
}

impl CrlSummary {
    /// The CRL number in hex.
    pub fn number_hex(&self) -> String {
        hex_upper(&self.number)
    }

    /// Whether the CRL lists the certificate `cert`.
    pub fn lists(&self, cert: &CertRef) -> bool {
        cert.issuer == self.issuer && self.revoked.iter().any(|r| r.serial == cert.serial)
    }
}

fn crl_err(reason: impl fmt::Display) -> ProtoError {
    ProtoError::Invalid {
        reason: format!("not a usable certificate revocation list: {reason}"),
    }
}

fn parse(der: &[u8]) -> Result<CertificateRevocationList<'_>> {
    if der.len() > MAX_CRL_BYTES {
        return Err(ProtoError::TooLarge {
            size_bytes: der.len() as u64,
            limit_bytes: MAX_CRL_BYTES as u64,
        });
    }
    let (rest, crl) = CertificateRevocationList::from_der(der).map_err(crl_err)?;
    if !rest.is_empty() {
        return Err(crl_err("bytes after its end"));
    }
    Ok(crl)
}

/// Reads a DER CRL. Deterministic: every node that applies the same bytes gets the
/// same summary.
pub fn parse_crl(der: &[u8]) -> Result<CrlSummary> {
    let crl = parse(der)?;
    let number = crl
        .crl_number()
        .map(|n| trim(&n.to_bytes_be()))
        .ok_or_else(|| crl_err("it has no CRL number"))?;
    let revoked = crl
        .iter_revoked_certificates()
        .map(|r| RevokedSerial {
            serial: trim(r.raw_serial()),
            reason: r.reason_code().map(|(_, code)| code.to_string()),
        })
        .collect();
    Ok(CrlSummary {
        issuer: IssuerKey::of(crl.issuer().as_raw()),
        issuer_name: crl.issuer().to_string(),
        number,
        revoked,
    })
}

/// Reads a DER CRL and checks that one of `cas` (DER certificates) issued it: the
/// CA's subject is the CRL's issuer and its key signed the CRL.
pub fn verify_crl(der: &[u8], cas: &[&[u8]]) -> Result<CrlSummary> {
    let crl = parse(der)?;
    let summary = parse_crl(der)?;
    for ca in cas {
        let Ok((_, ca)) = X509Certificate::from_der(ca) else {
            continue;
        };
        if ca.subject().as_raw() != crl.issuer().as_raw() {
            continue;
        }
        return match crl.verify_signature(ca.public_key()) {
            Ok(()) => Ok(summary),
            Err(_) => Err(crl_err(format!(
                "its signature does not verify with the key of CA '{}'",
                summary.issuer_name
            ))),
        };
    }
    Err(crl_err(format!(
        "its issuer '{}' is none of the CAs this node trusts",
        summary.issuer_name
    )))
}

/// Compares CRL numbers (unsigned big-endian, no leading zeros).
fn number_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Whether `new` may replace `old` (same issuer): its number is higher, and it
/// still lists every serial `old` did. Revocation is for good: a replayed older
/// CRL, or one that forgets a serial, would give a revoked certificate back.
pub fn check_succession(old: &CrlSummary, new: &CrlSummary) -> std::result::Result<(), String> {
    if old.issuer != new.issuer {
        return Err("the CRLs are from different CAs".into());
    }
    if number_cmp(&new.number, &old.number) != std::cmp::Ordering::Greater {
        return Err(format!(
            "its CRL number {} is not above the cluster's current {}; issue a new CRL \
             (`kakera ca revoke` numbers them)",
            new.number_hex(),
            old.number_hex()
        ));
    }
    let listed: BTreeSet<&[u8]> = new.revoked.iter().map(|r| r.serial.as_slice()).collect();
    if let Some(gone) = old
        .revoked
        .iter()
        .find(|r| !listed.contains(r.serial.as_slice()))
    {
        return Err(format!(
            "it no longer lists serial {}, which the cluster's current CRL revokes; a \
             revocation is never undone",
            hex_upper(&gone.serial)
        ));
    }
    Ok(())
}

/// Every certificate some CRL of a set revokes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevokedSet {
    certs: BTreeSet<CertRef>,
}

impl RevokedSet {
    /// The certificates the CRLs list.
    pub fn of<'a>(crls: impl IntoIterator<Item = &'a CrlSummary>) -> RevokedSet {
        let certs = crls
            .into_iter()
            .flat_map(|c| {
                c.revoked.iter().map(|r| CertRef {
                    issuer: c.issuer,
                    serial: r.serial.clone(),
                })
            })
            .collect();
        RevokedSet { certs }
    }

    /// Whether `cert` is revoked.
    pub fn contains(&self, cert: &CertRef) -> bool {
        self.certs.contains(cert)
    }

    /// How many certificates are revoked.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Whether nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, IsCa, Issuer,
        KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams, SerialNumber,
    };

    struct TestCa {
        issuer: Issuer<'static, KeyPair>,
        der: Vec<u8>,
    }

    fn ca(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(ca: &TestCa, serial: &[u8]) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["node-1".to_string()]).unwrap();
        params.serial_number = Some(SerialNumber::from_slice(serial));
        let key = KeyPair::generate().unwrap();
        params.signed_by(&key, &ca.issuer).unwrap().der().to_vec()
    }

    fn crl(ca: &TestCa, number: u64, serials: &[&[u8]]) -> Vec<u8> {
        let now = time::OffsetDateTime::now_utc();
        CertificateRevocationListParams {
            this_update: now,
            next_update: now + time::Duration::days(30),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: now,
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&ca.issuer)
        .unwrap()
        .der()
        .to_vec()
    }

    /// P7 (issue 22): a CRL counts only when the cluster's CA signed it; one signed
    /// by another CA under the same name, or altered, is refused.
    #[test]
    fn a_crl_counts_only_with_the_cas_signature() {
        let ours = ca("kakera cluster CA");
        let impostor = ca("kakera cluster CA");
        let good = crl(&ours, 1, &[&[0x42]]);
        let summary = verify_crl(&good, &[&ours.der]).unwrap();
        assert_eq!(summary.revoked.len(), 1);
        assert_eq!(summary.revoked[0].reason.as_deref(), Some("KeyCompromise"));
        let forged = crl(&impostor, 1, &[&[0x42]]);
        assert!(verify_crl(&forged, &[&ours.der]).is_err());
        let mut altered = good.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(verify_crl(&altered, &[&ours.der]).is_err());
        let other = ca("another CA");
        assert!(verify_crl(&good, &[&other.der]).is_err());
        // The CA during an overlap: the right one of two is found.
        assert!(verify_crl(&good, &[&other.der, &ours.der]).is_ok());
    }

    /// P7: the serial a CRL lists names the certificate a connection presents,
    /// whatever sign byte either encoding carries.
    #[test]
    fn a_listed_serial_names_the_presented_certificate() {
        let ca = ca("kakera cluster CA");
        let revoked = leaf(&ca, &[0x80, 0x01]);
        let kept = leaf(&ca, &[0x7f, 0x01]);
        let summary = parse_crl(&crl(&ca, 3, &[&[0x80, 0x01]])).unwrap();
        let set = RevokedSet::of([&summary]);
        assert!(set.contains(&cert_ref(&revoked).unwrap()));
        assert!(!set.contains(&cert_ref(&kept).unwrap()));
        assert!(summary.lists(&cert_ref(&revoked).unwrap()));
        // Another CA's certificate with the same serial is not revoked.
        let other = self::ca("another CA");
        assert!(!set.contains(&cert_ref(&leaf(&other, &[0x80, 0x01])).unwrap()));
        assert_eq!(cert_ref(&revoked).unwrap().serial_hex(), "8001");
        assert_eq!(parse_serial_hex("80:01").unwrap(), vec![0x80, 0x01]);
        assert_eq!(parse_serial_hex("0x80").ok(), None);
    }

    /// P7: a revocation is never undone: an older or equal CRL number, or a CRL
    /// that leaves out a serial the current one lists, cannot replace it.
    #[test]
    fn a_crl_replaces_another_only_forward() {
        let ca = ca("kakera cluster CA");
        let one = parse_crl(&crl(&ca, 1, &[&[1]])).unwrap();
        let two = parse_crl(&crl(&ca, 2, &[&[1], &[2]])).unwrap();
        let forgets = parse_crl(&crl(&ca, 3, &[&[2]])).unwrap();
        let big = parse_crl(&crl(&ca, 256, &[&[1], &[2]])).unwrap();
        assert!(check_succession(&one, &two).is_ok());
        assert!(check_succession(&two, &one).is_err());
        assert!(check_succession(&two, &two).is_err());
        assert!(check_succession(&two, &forgets).is_err());
        assert!(check_succession(&two, &big).is_ok());
        assert!(check_succession(&big, &two).is_err());
    }

    /// Hostile input: a CRL larger than the bound or not a CRL at all is an error,
    /// never a panic.
    #[test]
    fn garbage_is_refused() {
        assert!(parse_crl(&[]).is_err());
        assert!(parse_crl(&[0x30, 0x03, 1, 2, 3]).is_err());
        assert!(parse_crl(&vec![0u8; MAX_CRL_BYTES + 1]).is_err());
        assert!(cert_ref(b"not a certificate").is_err());
    }
}
