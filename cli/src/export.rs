//! Signed exports of the audit log, checkable offline.
//!
//! An export is a JSON-lines file:
//!
//! 1. a header line (`format`, `version`, cluster, exporter, the exporter's certificate
//!    in PEM, the query that selected the entries, the log's head when exported, and
//!    whether the export is the complete log from entry 1);
//! 2. one line per audit entry: the readable fields `kakera audit log --json` prints,
//!    plus `canonical`, the entry's encoded bytes (hex) from which its hash is computed;
//! 3. a signature line: the exporter's signature (the private key of its certificate,
//!    ECDSA P-256 as the cluster CA issues them) over every byte before that line.
//!
//! [`verify_export`] needs only the file and the cluster CA's certificate: it checks the
//! signature, that the CA issued the exporter's certificate to an auditor and that it
//! was valid when the export was made, that each readable line says exactly what its
//! canonical bytes say, each entry's hash, the hash links between consecutive entries,
//! and — for a complete export — the whole chain from entry 1 to the head. It is pure:
//! no network, no clock.

use std::fmt;

use kakera_proto::audit::{AuditEntry, ChainBreak, Outcome, verify_chain};
use kakera_proto::{Identity, Role, codec};
use rcgen::{KeyPair, SigningKey};
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{ASN1Time, FromDer, X509Certificate};

use crate::demo::format_ms;
use crate::error::CliError;
use kakera_client::zone::hex;

/// The `format` field of an export's header.
pub const EXPORT_FORMAT: &str = "kakera-audit-export";
/// The export format version this build writes and reads.
pub const EXPORT_VERSION: u32 = 1;
/// Largest export [`verify_export`] accepts (bytes), so a hostile file cannot exhaust
/// memory: about four million entries.
pub const MAX_EXPORT_BYTES: usize = 4 << 30;

use crate::committee::unhex;

/// The readable JSON of an audit entry (what `kakera audit log --json` prints).
pub fn entry_json(e: &AuditEntry) -> serde_json::Value {
    let (outcome, reason) = match &e.outcome {
        Outcome::Applied => ("applied", None),
        Outcome::Refused { reason } => ("refused", Some(reason.clone())),
    };
    serde_json::json!({
        "seq": e.seq,
        "prev": hex(&e.prev),
        "hash": hex(&e.hash()),
        "log_index": e.log_index,
        "at": format_ms(e.at_ms),
        "actor": {
            "name": e.actor.name,
            "role": e.actor.role.as_str(),
            "zone": e.actor.zone,
            "fingerprint": e.actor.fingerprint.to_hex(),
        },
        "request_id": e.request_id.map(|r| r.to_string()),
        "action": e.action.as_str(),
        "detail": format!("{:?}", e.action),
        "job": e.job,
        "records": e.records.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "outcome": outcome,
        "reason": reason,
    })
}

/// The query that selected an export's entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportQuery {
    /// Only entries naming this record.
    pub record: Option<String>,
    /// Only entries naming this job.
    pub job: Option<String>,
    /// Only entries at or after this time (Unix ms).
    pub since_ms: Option<u64>,
}

impl ExportQuery {
    /// Whether the query selects every entry.
    pub fn is_everything(&self) -> bool {
        self.record.is_none() && self.job.is_none() && self.since_ms.is_none()
    }
}

/// An export's first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportHeader {
    /// Always [`EXPORT_FORMAT`].
    pub format: String,
    /// [`EXPORT_VERSION`].
    pub version: u32,
    /// The cluster the entries come from.
    pub cluster_id: String,
    /// When the export was made (Unix ms, the exporter's clock).
    pub exported_at_ms: u64,
    /// The exporter's name, as its certificate says.
    pub exporter: String,
    /// SHA-256 of the exporter's certificate (hex).
    pub exporter_fingerprint: String,
    /// The exporter's certificate (PEM); its key made the signature.
    pub certificate_pem: String,
    /// What selected the entries.
    pub query: ExportQuery,
    /// The log's last entry when exported (0 for an empty log).
    pub head_seq: u64,
    /// That entry's hash (hex; zeros for an empty log).
    pub head_hash: String,
    /// Whether the file holds every entry from 1 to `head_seq`.
    pub complete: bool,
    /// How many entry lines follow.
    pub entries: u64,
}

/// An export's last line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportSignature {
    /// The signature scheme, named after the exporter key's algorithm.
    pub algorithm: String,
    /// How many bytes before this line the signature covers (all of them).
    pub signed_bytes: u64,
    /// The signature (hex; ASN.1 DER for ECDSA).
    pub value: String,
}

#[derive(Serialize, Deserialize)]
struct SignatureLine {
    signature: ExportSignature,
}

/// The key and certificate an export is signed with.
pub struct ExportSigner {
    key: KeyPair,
    cert_pem: String,
    identity: Identity,
}

impl ExportSigner {
    /// Loads an identity's certificate and private key (PEM). The key never leaves
    /// this value and is not printed.
    pub fn load(cert_path: &std::path::Path, key_path: &std::path::Path) -> Result<Self, CliError> {
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|source| CliError::File {
                path: p.to_path_buf(),
                source,
            })
        };
        let cert_pem = read(cert_path)?;
        let key_pem = zeroize::Zeroizing::new(read(key_path)?);
        let key = KeyPair::from_pem(&key_pem).map_err(|_| {
            CliError::Certificate(format!(
                "{} is not a PEM private key this build can sign with",
                key_path.display()
            ))
        })?;
        let der = pem_cert_der(&cert_pem).ok_or_else(|| {
            CliError::Certificate(format!("{} holds no PEM certificate", cert_path.display()))
        })?;
        let identity = Identity::from_cert_der(&der)?;
        let signer = ExportSigner {
            key,
            cert_pem,
            identity,
        };
        // The key must belong to the certificate, or every export would fail to verify.
        let probe = signer.sign(b"kakera export key check")?;
        check_signature(&der, b"kakera export key check", &probe).map_err(|_| {
            CliError::Certificate(format!(
                "the key in {} does not belong to the certificate in {}",
                key_path.display(),
                cert_path.display()
            ))
        })?;
        Ok(signer)
    }

    /// Who signs.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, CliError> {
        self.key
            .sign(msg)
            .map_err(|_| CliError::Certificate("signing the export failed".into()))
    }
}

/// The DER of the first certificate in a PEM text.
fn pem_cert_der(pem_text: &str) -> Option<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes()).ok()?;
    (pem.label == "CERTIFICATE").then_some(pem.contents)
}

/// The verification algorithm for a certificate's key, and its name in exports.
fn algorithm_of(
    cert: &X509Certificate<'_>,
) -> Option<(
    &'static dyn ring::signature::VerificationAlgorithm,
    &'static str,
)> {
    use x509_parser::oid_registry::{
        OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ED25519,
    };
    let spki = cert.public_key();
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
        if curve == OID_EC_P256 {
            return Some((
                &ring::signature::ECDSA_P256_SHA256_ASN1,
                "ecdsa-p256-sha256",
            ));
        }
        if curve == OID_NIST_EC_P384 {
            return Some((
                &ring::signature::ECDSA_P384_SHA384_ASN1,
                "ecdsa-p384-sha384",
            ));
        }
        return None;
    }
    if *alg == OID_SIG_ED25519 {
        return Some((&ring::signature::ED25519, "ed25519"));
    }
    None
}

/// Checks `sig` over `msg` with the key of the DER certificate `der`.
fn check_signature(der: &[u8], msg: &[u8], sig: &[u8]) -> Result<&'static str, ExportFlaw> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| ExportFlaw::Malformed {
        line: 1,
        reason: "the certificate does not parse".into(),
    })?;
    let (alg, name) = algorithm_of(&cert).ok_or(ExportFlaw::UnsupportedKey)?;
    ring::signature::UnparsedPublicKey::new(alg, &cert.public_key().subject_public_key.data)
        .verify(msg, sig)
        .map_err(|_| ExportFlaw::BadSignature)?;
    Ok(name)
}

/// Writes an export of `entries` (ascending `seq`) and signs it. `head` is the log's
/// head when the entries were read; `complete` says the entries are the whole log.
pub fn write_export(
    signer: &ExportSigner,
    cluster_id: &str,
    exported_at_ms: u64,
    query: ExportQuery,
    head: Option<(u64, [u8; 32])>,
    entries: &[AuditEntry],
) -> Result<Vec<u8>, CliError> {
    let (head_seq, head_hash) = head.unwrap_or((0, [0; 32]));
    let complete = query.is_everything()
        && entries.len() as u64 == head_seq
        && entries.first().is_none_or(|e| e.seq == 1);
    let header = ExportHeader {
        format: EXPORT_FORMAT.into(),
        version: EXPORT_VERSION,
        cluster_id: cluster_id.into(),
        exported_at_ms,
        exporter: signer.identity.name.clone(),
        exporter_fingerprint: signer.identity.fingerprint.to_hex(),
        certificate_pem: signer.cert_pem.clone(),
        query,
        head_seq,
        head_hash: hex(&head_hash),
        complete,
        entries: entries.len() as u64,
    };
    let json_err =
        |e: serde_json::Error| CliError::Invalid(format!("cannot encode the export: {e}"));
    let mut out = serde_json::to_vec(&header).map_err(json_err)?;
    out.push(b'\n');
    for e in entries {
        let mut line = entry_json(e);
        let canonical = codec::encode(e)?;
        line["canonical"] = serde_json::Value::String(hex(&canonical));
        serde_json::to_writer(&mut out, &line).map_err(json_err)?;
        out.push(b'\n');
    }
    let der = pem_cert_der(&signer.cert_pem)
        .ok_or_else(|| CliError::Certificate("the exporter's certificate is not PEM".into()))?;
    let sig = signer.sign(&out)?;
    let algorithm = check_signature(&der, &out, &sig)
        .map_err(|f| CliError::Certificate(format!("the export's own signature fails: {f}")))?;
    let line = SignatureLine {
        signature: ExportSignature {
            algorithm: algorithm.into(),
            signed_bytes: out.len() as u64,
            value: hex(&sig),
        },
    };
    serde_json::to_writer(&mut out, &line).map_err(json_err)?;
    out.push(b'\n');
    Ok(out)
}

/// What a verified export holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// The header.
    pub header: ExportHeader,
    /// The exporter's identity, as its certificate says.
    pub exporter: Identity,
    /// The first and last entry's sequence numbers, if any.
    pub seq_range: Option<(u64, u64)>,
    /// Runs of consecutive entries whose links were checked.
    pub runs: usize,
}

/// Why an export does not verify. Each names the line (1-based) where it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportFlaw {
    /// A line is not what the format says.
    Malformed {
        /// The line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The exporter's key type is not one this build verifies.
    UnsupportedKey,
    /// The signature does not match the file: something was changed after signing.
    BadSignature,
    /// The exporter's certificate was not issued by the given CA.
    NotIssuedByCa,
    /// The certificate was not valid when the export says it was made.
    CertificateNotValid,
    /// The certificate's role is not auditor.
    NotAuditor {
        /// The role it names.
        role: Role,
    },
    /// A readable line (its hash included) says something its canonical bytes do not.
    ReadableMismatch {
        /// The line.
        line: usize,
        /// The entry.
        seq: u64,
    },
    /// The entries are not in ascending order.
    OutOfOrder {
        /// The entry that comes too early.
        seq: u64,
    },
    /// The hash chain breaks inside a run of consecutive entries.
    Chain(ChainBreak),
    /// A complete export does not end at the head it names.
    HeadMismatch,
    /// The header's entry count is not the number of entry lines.
    CountMismatch {
        /// The header's count.
        said: u64,
        /// The lines found.
        found: u64,
    },
}

impl fmt::Display for ExportFlaw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExportFlaw::Malformed { line, reason } => write!(f, "line {line}: {reason}"),
            ExportFlaw::UnsupportedKey => f.write_str(
                "the exporter's certificate has a key type this build cannot verify (use ECDSA P-256, P-384 or Ed25519)",
            ),
            ExportFlaw::BadSignature => f.write_str(
                "the signature does not match the file: it was changed after it was signed, or signed with another key",
            ),
            ExportFlaw::NotIssuedByCa => {
                f.write_str("the exporter's certificate was not issued by the given CA")
            }
            ExportFlaw::CertificateNotValid => f.write_str(
                "the exporter's certificate was not valid at the export's stated time",
            ),
            ExportFlaw::NotAuditor { role } => write!(
                f,
                "the export was signed by a {role} certificate; only auditors sign exports"
            ),
            ExportFlaw::ReadableMismatch { line, seq } => write!(
                f,
                "line {line} (entry {seq}): the readable fields differ from the entry's canonical bytes"
            ),
            ExportFlaw::OutOfOrder { seq } => {
                write!(f, "entry {seq} is out of order: entries must ascend")
            }
            ExportFlaw::Chain(b) => write!(f, "{b}"),
            ExportFlaw::HeadMismatch => f.write_str(
                "the export says it is the complete log but its last entry is not the head it names",
            ),
            ExportFlaw::CountMismatch { said, found } => write!(
                f,
                "the header says {said} entries but the file holds {found}"
            ),
        }
    }
}

fn malformed(line: usize, reason: impl Into<String>) -> ExportFlaw {
    ExportFlaw::Malformed {
        line,
        reason: reason.into(),
    }
}

/// Checks an export against the cluster CA's certificate (PEM). Pure: no network, no
/// clock (validity is checked at the export's own stated time).
pub fn verify_export(bytes: &[u8], ca_pem: &str) -> Result<ExportSummary, ExportFlaw> {
    if bytes.len() > MAX_EXPORT_BYTES {
        return Err(malformed(
            0,
            "the file is larger than any export this build writes",
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| malformed(0, "the file is not UTF-8"))?;
    if !text.ends_with('\n') {
        return Err(malformed(
            0,
            "the file does not end with a newline (truncated?)",
        ));
    }
    let body = &text[..text.len() - 1];
    let (signed, sig_line) = match body.rfind('\n') {
        Some(i) => (&text[..=i], &body[i + 1..]),
        None => return Err(malformed(1, "the file has no signature line")),
    };
    let lines: Vec<&str> = signed.lines().collect();
    let sig_line_no = lines.len() + 1;
    let sig: SignatureLine = serde_json::from_str(sig_line)
        .map_err(|e| malformed(sig_line_no, format!("not a signature line: {e}")))?;
    if sig.signature.signed_bytes != signed.len() as u64 {
        // Lines were added or removed after signing.
        return Err(ExportFlaw::BadSignature);
    }
    let header_text = lines.first().ok_or_else(|| malformed(1, "no header"))?;
    let header: ExportHeader = serde_json::from_str(header_text)
        .map_err(|e| malformed(1, format!("not an export header: {e}")))?;
    if header.format != EXPORT_FORMAT {
        return Err(malformed(
            1,
            format!("format is '{}', not '{EXPORT_FORMAT}'", header.format),
        ));
    }
    if header.version != EXPORT_VERSION {
        return Err(malformed(
            1,
            format!(
                "format version {} (this build reads {EXPORT_VERSION})",
                header.version
            ),
        ));
    }
    // The signature, with the certificate the header carries.
    let der = pem_cert_der(&header.certificate_pem)
        .ok_or_else(|| malformed(1, "the header's certificate is not PEM"))?;
    let value = unhex(&sig.signature.value)
        .ok_or_else(|| malformed(sig_line_no, "the signature is not hex"))?;
    let algorithm = check_signature(&der, signed.as_bytes(), &value)?;
    if algorithm != sig.signature.algorithm {
        return Err(malformed(
            sig_line_no,
            format!(
                "the signature names {} but the key is {algorithm}",
                sig.signature.algorithm
            ),
        ));
    }
    // The certificate: issued by the CA, valid then, an auditor's.
    let ca_der =
        pem_cert_der(ca_pem).ok_or_else(|| malformed(0, "the CA file holds no PEM certificate"))?;
    let (_, ca) = X509Certificate::from_der(&ca_der)
        .map_err(|_| malformed(0, "the CA certificate does not parse"))?;
    let (_, cert) = X509Certificate::from_der(&der)
        .map_err(|_| malformed(1, "the certificate does not parse"))?;
    cert.verify_signature(Some(ca.public_key()))
        .map_err(|_| ExportFlaw::NotIssuedByCa)?;
    let at = ASN1Time::from_timestamp((header.exported_at_ms / 1000) as i64)
        .map_err(|_| malformed(1, "exported_at_ms is not a time"))?;
    if !cert.validity().is_valid_at(at) {
        return Err(ExportFlaw::CertificateNotValid);
    }
    let exporter = Identity::from_cert_der(&der).map_err(|e| malformed(1, e.to_string()))?;
    if exporter.role != Role::Auditor {
        return Err(ExportFlaw::NotAuditor {
            role: exporter.role,
        });
    }
    if exporter.fingerprint.to_hex() != header.exporter_fingerprint
        || exporter.name != header.exporter
    {
        return Err(malformed(
            1,
            "the header's exporter is not the certificate's holder",
        ));
    }
    // The entries.
    let mut entries = Vec::with_capacity(lines.len().saturating_sub(1));
    for (i, l) in lines.iter().enumerate().skip(1) {
        let line_no = i + 1;
        let mut v: serde_json::Value =
            serde_json::from_str(l).map_err(|e| malformed(line_no, format!("not JSON: {e}")))?;
        let canonical = v
            .as_object_mut()
            .and_then(|o| o.remove("canonical"))
            .and_then(|c| c.as_str().and_then(unhex))
            .ok_or_else(|| malformed(line_no, "no canonical bytes"))?;
        let entry: AuditEntry = codec::decode(&canonical)
            .map_err(|e| malformed(line_no, format!("canonical bytes do not decode: {e}")))?;
        if entry_json(&entry) != v {
            return Err(ExportFlaw::ReadableMismatch {
                line: line_no,
                seq: entry.seq,
            });
        }
        entries.push(entry);
    }
    if header.entries != entries.len() as u64 {
        return Err(ExportFlaw::CountMismatch {
            said: header.entries,
            found: entries.len() as u64,
        });
    }
    // Links inside each run of consecutive entries; order and time across runs.
    let mut runs = 0;
    let mut start = 0;
    while start < entries.len() {
        let mut end = start + 1;
        while end < entries.len() && entries[end].seq == entries[end - 1].seq + 1 {
            end += 1;
        }
        let first = &entries[start];
        if start > 0 {
            let before = &entries[start - 1];
            if first.seq <= before.seq {
                return Err(ExportFlaw::OutOfOrder { seq: first.seq });
            }
            if first.at_ms < before.at_ms {
                return Err(ExportFlaw::Chain(ChainBreak::TimeBackwards {
                    seq: first.seq,
                }));
            }
        }
        let run = &entries[start..end];
        verify_chain((first.prev, first.seq.saturating_sub(1)), run).map_err(ExportFlaw::Chain)?;
        runs += 1;
        start = end;
    }
    if header.complete {
        let last = verify_chain(([0; 32], 0), &entries).map_err(ExportFlaw::Chain)?;
        if entries.len() as u64 != header.head_seq || hex(&last) != header.head_hash {
            return Err(ExportFlaw::HeadMismatch);
        }
    }
    let seq_range = entries
        .first()
        .zip(entries.last())
        .map(|(a, b)| (a.seq, b.seq));
    Ok(ExportSummary {
        header,
        exporter,
        seq_range,
        runs,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the report
mod tests {
    use kakera_proto::audit::AuditAction;
    use kakera_proto::catalog::Actor;
    use kakera_proto::{Fingerprint, RecordId};

    use super::*;
    use crate::pki::{CA_CERT, IssueRequest, init_ca, issue};

    struct Fixture {
        _dir: tempfile::TempDir,
        ca_pem: String,
        auditor: ExportSigner,
        operator: ExportSigner,
        stranger: ExportSigner,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca, "test-ca").unwrap();
        let other_ca = dir.path().join("other-ca");
        init_ca(&other_ca, "other-ca").unwrap();
        let signer = |ca_dir: &std::path::Path, name: &str, role: Role| {
            let req = IssueRequest {
                name: name.into(),
                role,
                zone: None,
            };
            let (c, k) = issue(ca_dir, &dir.path().join(name), &req).unwrap();
            ExportSigner::load(&c, &k).unwrap()
        };
        std::fs::create_dir_all(dir.path().join("aud")).unwrap();
        std::fs::create_dir_all(dir.path().join("op")).unwrap();
        std::fs::create_dir_all(dir.path().join("aud2")).unwrap();
        Fixture {
            ca_pem: std::fs::read_to_string(ca.join(CA_CERT)).unwrap(),
            auditor: signer(&ca, "aud", Role::Auditor),
            operator: signer(&ca, "op", Role::Operator),
            stranger: signer(&other_ca, "aud2", Role::Auditor),
            _dir: dir,
        }
    }

    fn chain(len: u64) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for seq in 1..=len {
            let prev = out.last().map_or([0; 32], AuditEntry::hash);
            out.push(AuditEntry {
                seq,
                prev,
                log_index: seq + 10,
                at_ms: 1_790_000_000_000 + seq,
                actor: Actor {
                    name: "job-7".into(),
                    role: Role::Reader,
                    zone: Some("hsz".into()),
                    fingerprint: Fingerprint([7; 32]),
                },
                request_id: None,
                action: AuditAction::OpenRead { ticket: seq + 10 },
                job: Some(if seq % 2 == 0 { "study-a" } else { "study-b" }.into()),
                records: vec![RecordId([seq as u8; 16])],
                outcome: Outcome::Applied,
            });
        }
        out
    }

    fn head(entries: &[AuditEntry]) -> Option<(u64, [u8; 32])> {
        entries.last().map(|e| (e.seq, e.hash()))
    }

    fn now_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    fn export(
        signer: &ExportSigner,
        query: ExportQuery,
        entries: &[AuditEntry],
        all: &[AuditEntry],
    ) -> Vec<u8> {
        write_export(signer, "test-cluster", now_ms(), query, head(all), entries).unwrap()
    }

    /// Re-signs a file whose lines were edited, as a forger holding `signer`'s key would.
    fn resign(signer: &ExportSigner, file: &[u8]) -> Vec<u8> {
        let text = std::str::from_utf8(file).unwrap();
        let body = &text[..text.len() - 1];
        let cut = body.rfind('\n').unwrap() + 1;
        let mut out = text.as_bytes()[..cut].to_vec();
        let sig = signer.sign(&out).unwrap();
        let line = SignatureLine {
            signature: ExportSignature {
                algorithm: "ecdsa-p256-sha256".into(),
                signed_bytes: out.len() as u64,
                value: hex(&sig),
            },
        };
        serde_json::to_writer(&mut out, &line).unwrap();
        out.push(b'\n');
        out
    }

    fn edit_line(file: &[u8], line: usize, edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
        let text = std::str::from_utf8(file).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let mut v: serde_json::Value = serde_json::from_str(&lines[line - 1]).unwrap();
        edit(&mut v);
        lines[line - 1] = serde_json::to_string(&v).unwrap();
        (lines.join("\n") + "\n").into_bytes()
    }

    /// P5: a complete export and a filtered one verify offline with only the CA
    /// certificate; the summary names the exporter and the entries' range.
    #[test]
    fn exports_verify_offline() {
        let f = fixture();
        let all = chain(9);
        let file = export(&f.auditor, ExportQuery::default(), &all, &all);
        let s = verify_export(&file, &f.ca_pem).unwrap();
        assert!(s.header.complete);
        assert_eq!(s.seq_range, Some((1, 9)));
        assert_eq!(s.runs, 1);
        assert_eq!(s.exporter.name, "aud");

        let picked: Vec<AuditEntry> = all
            .iter()
            .filter(|e| e.job.as_deref() == Some("study-a"))
            .cloned()
            .collect();
        let query = ExportQuery {
            job: Some("study-a".into()),
            ..ExportQuery::default()
        };
        let file = export(&f.auditor, query, &picked, &all);
        let s = verify_export(&file, &f.ca_pem).unwrap();
        assert!(!s.header.complete);
        assert_eq!(s.seq_range, Some((2, 8)));
        assert_eq!(s.runs, 4);

        let empty = export(&f.auditor, ExportQuery::default(), &[], &[]);
        assert!(verify_export(&empty, &f.ca_pem).unwrap().header.complete);
    }

    /// P5: any change after signing is caught: a flipped character in any line, a
    /// removed line, a truncated file.
    #[test]
    fn changes_after_signing_are_caught() {
        let f = fixture();
        let all = chain(5);
        let file = export(&f.auditor, ExportQuery::default(), &all, &all);
        let text = std::str::from_utf8(&file).unwrap();
        let line_starts: Vec<usize> = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .filter(|&i| i < text.len())
            .collect();
        // A digit changed in each entry line's `at` field and in the header.
        for &start in &line_starts[..line_starts.len() - 1] {
            let pos = start + text[start..].find(|c: char| c.is_ascii_digit()).unwrap();
            let mut bad = file.clone();
            bad[pos] = if bad[pos] == b'9' { b'1' } else { bad[pos] + 1 };
            assert!(
                verify_export(&bad, &f.ca_pem).is_err(),
                "a change at byte {pos} went unnoticed"
            );
        }
        let lines: Vec<&str> = text.lines().collect();
        let mut dropped = lines.clone();
        dropped.remove(3);
        let dropped = (dropped.join("\n") + "\n").into_bytes();
        assert_eq!(
            verify_export(&dropped, &f.ca_pem).unwrap_err(),
            ExportFlaw::BadSignature
        );
        let truncated = &file[..file.len() - 10];
        assert!(matches!(
            verify_export(truncated, &f.ca_pem).unwrap_err(),
            ExportFlaw::Malformed { .. }
        ));
    }

    /// P5: the signer must be an auditor certified by the cluster CA.
    #[test]
    fn signer_must_be_an_auditor_of_this_ca() {
        let f = fixture();
        let all = chain(3);
        let by_operator = export(&f.operator, ExportQuery::default(), &all, &all);
        assert_eq!(
            verify_export(&by_operator, &f.ca_pem).unwrap_err(),
            ExportFlaw::NotAuditor {
                role: Role::Operator
            }
        );
        let by_stranger = export(&f.stranger, ExportQuery::default(), &all, &all);
        assert_eq!(
            verify_export(&by_stranger, &f.ca_pem).unwrap_err(),
            ExportFlaw::NotIssuedByCa
        );
        // A certificate swapped into the header no longer matches the signature.
        let good = export(&f.auditor, ExportQuery::default(), &all, &all);
        let swapped = edit_line(&good, 1, |v| {
            v["certificate_pem"] = serde_json::Value::String(f.stranger.cert_pem.clone());
        });
        assert_eq!(
            verify_export(&swapped, &f.ca_pem).unwrap_err(),
            ExportFlaw::BadSignature
        );
    }

    /// P5: even a file re-signed by a valid auditor is checked entry by entry: a
    /// readable field that disagrees with the canonical bytes, an entry changed at the
    /// source (its successor's link breaks), a complete export missing its last entry.
    #[test]
    fn resigned_forgeries_are_caught_by_the_chain() {
        let f = fixture();
        let all = chain(6);
        let file = export(&f.auditor, ExportQuery::default(), &all, &all);
        let readable = resign(
            &f.auditor,
            &edit_line(&file, 4, |v| {
                v["job"] = serde_json::Value::String("other".into())
            }),
        );
        assert_eq!(
            verify_export(&readable, &f.ca_pem).unwrap_err(),
            ExportFlaw::ReadableMismatch { line: 4, seq: 3 }
        );

        let mut changed = all.clone();
        changed[2].records = vec![RecordId([0xee; 16])];
        let file = export(&f.auditor, ExportQuery::default(), &changed, &all);
        assert_eq!(
            verify_export(&file, &f.ca_pem).unwrap_err(),
            ExportFlaw::Chain(ChainBreak::BadLink { seq: 4 })
        );

        let short = &all[..5];
        let mut file = export(&f.auditor, ExportQuery::default(), short, &all);
        // write_export marks it incomplete; a forger claims it is complete.
        file = resign(
            &f.auditor,
            &edit_line(&file, 1, |v| v["complete"] = true.into()),
        );
        assert_eq!(
            verify_export(&file, &f.ca_pem).unwrap_err(),
            ExportFlaw::HeadMismatch
        );

        let file = export(&f.auditor, ExportQuery::default(), &all, &all);
        let miscounted = resign(
            &f.auditor,
            &edit_line(&file, 1, |v| v["entries"] = 7.into()),
        );
        assert_eq!(
            verify_export(&miscounted, &f.ca_pem).unwrap_err(),
            ExportFlaw::CountMismatch { said: 7, found: 6 }
        );
    }

    /// A key that does not belong to the certificate is refused when loading.
    #[test]
    fn mismatched_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca, "test-ca").unwrap();
        for name in ["a", "b"] {
            let req = IssueRequest {
                name: name.into(),
                role: Role::Auditor,
                zone: None,
            };
            issue(&ca, dir.path(), &req).unwrap();
        }
        let err = ExportSigner::load(&dir.path().join("a.crt.pem"), &dir.path().join("b.key.pem"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("does not belong"), "{err}");
    }
}
