//! Identities carried in certificates. The cluster CA issues every certificate with
//! SAN URIs that name the holder's role and, where it has one, its zone:
//!
//! - `kakera://role/<node|ingest|reader|auditor|operator>` (exactly one);
//! - `kakera://zone/<zone>` (at most one; readers that reconstruct need `hsz`);
//! - `kakera://name/<name>` (the holder's name; the subject CN is the fallback).
//!
//! Nodes read the identity from the peer's certificate on every request; nothing a
//! peer says in a message can change it.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{ProtoError, Result};

/// The URI scheme and authority of kakera SAN URIs.
pub const URI_PREFIX: &str = "kakera://";

/// What a certificate's holder may do. Enforced by nodes on every request
/// ([`crate::auth`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// A storage node: Raft RPCs, share transfers between nodes.
    Node,
    /// An ingest gateway (or HSZ job) that writes records: can write, not read.
    Ingest,
    /// An anonymization job: reads records within a grant, only from the HSZ.
    Reader,
    /// An auditor: verifies shares and the access trail; reads no record.
    Auditor,
    /// A datacenter operator: membership, grants, erasure; reads no record.
    Operator,
}

impl Role {
    /// Every role, for exhaustive tests and help texts.
    pub const ALL: [Role; 5] = [
        Role::Node,
        Role::Ingest,
        Role::Reader,
        Role::Auditor,
        Role::Operator,
    ];

    /// The lowercase name used in certificates and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Ingest => "ingest",
            Role::Reader => "reader",
            Role::Auditor => "auditor",
            Role::Operator => "operator",
        }
    }

    /// Parses a lowercase role name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The SAN URI that carries this role.
    pub fn uri(self) -> String {
        format!("{URI_PREFIX}role/{}", self.as_str())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The SAN URI that carries a zone.
pub fn zone_uri(zone: &str) -> String {
    format!("{URI_PREFIX}zone/{zone}")
}

/// The SAN URI that carries a name.
pub fn name_uri(name: &str) -> String {
    format!("{URI_PREFIX}name/{name}")
}

/// SHA-256 of a certificate's DER, as `openssl x509 -fingerprint -sha256` shows it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }

    /// Lowercase hex of all 32 bytes.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Who a peer is, as its certificate says.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// The holder's name.
    pub name: String,
    /// The holder's role.
    pub role: Role,
    /// The holder's zone, if the certificate names one.
    pub zone: Option<String>,
    /// The certificate's fingerprint (audit entries name it).
    pub fingerprint: Fingerprint,
}

impl Identity {
    /// When the certificate `der` stops being valid (its notAfter, Unix ms), or `None`
    /// if it does not parse.
    pub fn not_after_ms(der: &[u8]) -> Option<u64> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let secs = cert.validity().not_after.timestamp();
        Some(u64::try_from(secs).unwrap_or(0).saturating_mul(1000))
    }

    /// Reads the identity from a DER certificate (already verified against the
    /// cluster CA by TLS).
    pub fn from_cert_der(der: &[u8]) -> Result<Identity> {
        let bad = |reason: &str| ProtoError::Identity {
            reason: reason.to_string(),
        };
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|_| bad("not a parsable X.509 certificate"))?;
        let mut roles = Vec::new();
        let mut zones = Vec::new();
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for gn in &san.value.general_names {
                if let GeneralName::URI(uri) = gn
                    && let Some(rest) = uri.strip_prefix(URI_PREFIX)
                {
                    if let Some(r) = rest.strip_prefix("role/") {
                        roles.push(r.to_string());
                    } else if let Some(z) = rest.strip_prefix("zone/") {
                        zones.push(z.to_string());
                    } else if let Some(n) = rest.strip_prefix("name/") {
                        names.push(n.to_string());
                    }
                }
            }
        }
        let role = match roles.as_slice() {
            [one] => Role::parse(one).ok_or_else(|| bad("unknown role in certificate"))?,
            [] => return Err(bad("certificate names no kakera role")),
            _ => return Err(bad("certificate names more than one kakera role")),
        };
        let zone = match zones.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            _ => return Err(bad("certificate names more than one zone")),
        };
        let name = match names.as_slice() {
            [one] => one.clone(),
            [] => cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_string)
                .ok_or_else(|| bad("certificate names no holder"))?,
            _ => return Err(bad("certificate names more than one holder")),
        };
        Ok(Identity {
            name,
            role,
            zone,
            fingerprint: Fingerprint::of(der),
        })
    }

    /// Whether this identity belongs to the given zone.
    pub fn in_zone(&self, zone: &str) -> bool {
        self.zone.as_deref() == Some(zone)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.name, self.role)?;
        if let Some(z) = &self.zone {
            write!(f, ", zone {z}")?;
        }
        write!(f, ", {})", &self.fingerprint.to_hex()[..16])
    }
}
