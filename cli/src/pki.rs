//! The cluster CA and the certificates it issues (rcgen). Roles and zones are SAN URIs
//! (`kakera://role/…`, `kakera://zone/…`, `kakera://name/…`); node certificates also
//! carry the node name as a DNS SAN, which peers verify. Private keys are written with
//! mode 0600 and never overwritten.

use std::path::{Path, PathBuf};

use kakera_client::files::write_new;
use kakera_proto::Role;
use kakera_proto::identity::{name_uri, zone_uri};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::error::CliError;

/// CA certificate file name inside a CA directory.
pub const CA_CERT: &str = "ca.crt.pem";
/// CA key file name inside a CA directory.
pub const CA_KEY: &str = "ca.key.pem";
/// How long a CA certificate is valid.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// How long an issued certificate is valid.
pub const LEAF_VALIDITY_DAYS: i64 = 397;

fn cert_err(e: impl std::fmt::Display) -> CliError {
    CliError::Certificate(e.to_string())
}

fn ensure_dir(dir: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|source| CliError::File {
        path: dir.to_path_buf(),
        source,
    })
}

fn check_name(what: &str, s: &str) -> Result<(), CliError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(CliError::Invalid(format!(
            "{what} '{s}' must be 1-64 letters, digits, '-', '_' or '.'"
        )))
    }
}

fn ca_params(name: &str) -> Result<CertificateParams, CliError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "kakera");
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    Ok(params)
}

/// Creates a CA in `dir`: `ca.crt.pem`, `ca.key.pem` (0600) and an empty CRL
/// (`crl.pem`). Refuses to overwrite.
pub fn init_ca(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), CliError> {
    ensure_dir(dir)?;
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(CliError::Exists { path: p.clone() });
        }
    }
    let params = ca_params(name)?;
    let key = KeyPair::generate().map_err(cert_err)?;
    let cert = params.self_signed(&key).map_err(cert_err)?;
    write_new(&key_path, &key.serialize_pem(), 0o600)?;
    write_new(&cert_path, &cert.pem(), 0o644)?;
    // An empty CRL from the start, so a config can name it (`ca_crl`) before
    // anything is revoked.
    crl(dir)?;
    Ok((cert_path, key_path))
}

/// What to put in an issued certificate.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// The holder's name (node name, job name, person).
    pub name: String,
    /// The holder's role.
    pub role: Role,
    /// The holder's zone, if any (`hsz` for readers that reconstruct).
    pub zone: Option<String>,
}

/// Issues a certificate signed by the CA in `ca_dir`, writing `<out>/<name>.crt.pem`
/// and `<out>/<name>.key.pem` (0600). Refuses to overwrite.
pub fn issue(
    ca_dir: &Path,
    out: &Path,
    req: &IssueRequest,
) -> Result<(PathBuf, PathBuf), CliError> {
    check_name("name", &req.name)?;
    if let Some(z) = &req.zone {
        check_name("zone", z)?;
    }
    let issuer = load_issuer(ca_dir)?;

    ensure_dir(out)?;
    let cert_path = out.join(format!("{}.crt.pem", req.name));
    let key_path = out.join(format!("{}.key.pem", req.name));
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(CliError::Exists { path: p.clone() });
        }
    }
    let dns = if req.role == Role::Node {
        vec![req.name.clone()]
    } else {
        Vec::new()
    };
    let mut params = CertificateParams::new(dns).map_err(cert_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, req.name.as_str());
    let mut uris = vec![req.role.uri(), name_uri(&req.name)];
    if let Some(z) = &req.zone {
        uris.push(zone_uri(z));
    }
    for u in uris {
        params
            .subject_alt_names
            .push(SanType::URI(u.as_str().try_into().map_err(cert_err)?));
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if req.role == Role::Node {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(LEAF_VALIDITY_DAYS);
    // A random positive serial of 16 bytes (RFC 5280: at most 20), so that a
    // revocation names this certificate and no other.
    let mut serial = [0u8; 16];
    getrandom::fill(&mut serial).map_err(cert_err)?;
    serial[0] = (serial[0] & 0x7f) | 0x01;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let key = KeyPair::generate().map_err(cert_err)?;
    let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
    // The CA keeps a copy of what it issued: `kakera ca revoke --name` finds the
    // certificate there, and the cluster then refuses its holder's commands too.
    let issued = ca_dir.join(ISSUED_DIR);
    ensure_dir(&issued)?;
    write_new(
        &issued.join(format!("{}.crt.pem", hex_upper(&serial))),
        &cert.pem(),
        0o644,
    )?;
    write_new(&key_path, &key.serialize_pem(), 0o600)?;
    write_new(&cert_path, &cert.pem(), 0o644)?;
    Ok((cert_path, key_path))
}

/// The CA's copies of the certificates it issued, `<serial hex>.crt.pem`.
pub const ISSUED_DIR: &str = "issued";
/// The CA's revocations so far and its last CRL number (JSON).
pub const REVOKED_FILE: &str = "revoked.json";
/// The CA's current CRL (PEM), which `kakera ca revoke` and `kakera ca crl` write.
pub const CRL_FILE: &str = "crl.pem";
/// How long a CRL says it is good for; nodes and clients apply it after that too
/// (an old list is better than none), so this only tells other tools.
pub const CRL_VALIDITY_DAYS: i64 = 30;

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// One certificate the CA revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedEntry {
    /// Its serial (hex, as `openssl x509 -serial` prints it).
    pub serial: String,
    /// Its holder, when the CA has the certificate.
    pub name: Option<String>,
    /// The RFC 5280 reason (`key-compromise`, ...).
    pub reason: String,
    /// When (Unix seconds).
    pub at_s: i64,
}

/// `revoked.json`: what the CA revoked and the last CRL number it used.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RevokedLedger {
    crl_number: u64,
    revoked: Vec<RevokedEntry>,
}

/// Why a certificate is revoked (RFC 5280's reason codes that apply to a leaf).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RevokeReason {
    /// Its private key was lost or may be known to someone else.
    KeyCompromise,
    /// Its holder changed organisation or role.
    AffiliationChanged,
    /// A new certificate replaces it (rotation).
    Superseded,
    /// Its holder no longer operates (a node taken out, a job ended).
    CessationOfOperation,
    /// Its holder may no longer do what the certificate allows.
    PrivilegeWithdrawn,
    /// No reason given.
    Unspecified,
}

impl RevokeReason {
    fn code(self) -> RevocationReason {
        match self {
            RevokeReason::KeyCompromise => RevocationReason::KeyCompromise,
            RevokeReason::AffiliationChanged => RevocationReason::AffiliationChanged,
            RevokeReason::Superseded => RevocationReason::Superseded,
            RevokeReason::CessationOfOperation => RevocationReason::CessationOfOperation,
            RevokeReason::PrivilegeWithdrawn => RevocationReason::PrivilegeWithdrawn,
            RevokeReason::Unspecified => RevocationReason::Unspecified,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            RevokeReason::KeyCompromise => "key-compromise",
            RevokeReason::AffiliationChanged => "affiliation-changed",
            RevokeReason::Superseded => "superseded",
            RevokeReason::CessationOfOperation => "cessation-of-operation",
            RevokeReason::PrivilegeWithdrawn => "privilege-withdrawn",
            RevokeReason::Unspecified => "unspecified",
        }
    }

    fn parse(s: &str) -> Option<RevokeReason> {
        [
            RevokeReason::KeyCompromise,
            RevokeReason::AffiliationChanged,
            RevokeReason::Superseded,
            RevokeReason::CessationOfOperation,
            RevokeReason::PrivilegeWithdrawn,
            RevokeReason::Unspecified,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// Which certificates to revoke.
#[derive(Debug, Clone)]
pub enum RevokeTarget {
    /// Every certificate the CA issued to this holder name (its `issued/` copies).
    Name(String),
    /// The certificate with this serial (hex).
    Serial(String),
    /// This certificate file.
    Cert(PathBuf),
}

/// What a revocation produced.
#[derive(Debug, Clone)]
pub struct Revoked {
    /// The new CRL (DER), also written to `<ca dir>/crl.pem`.
    pub crl: Vec<u8>,
    /// Its number.
    pub crl_number: u64,
    /// The certificates revoked by this call (already revoked ones are not repeated).
    pub newly: Vec<RevokedEntry>,
    /// Every revoked certificate the CA has a copy of (DER), to send with the CRL so
    /// the cluster refuses their holders' commands too.
    pub certificates: Vec<Vec<u8>>,
    /// Where the CRL was written.
    pub crl_path: PathBuf,
}

fn read_file(p: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(p).map_err(|source| CliError::File {
        path: p.to_path_buf(),
        source,
    })
}

/// Replaces `path` with `contents` (a new file renamed over it, then the directory
/// synced): a crash leaves the old file or the new one, never half of one.
fn replace_file(path: &Path, contents: &[u8]) -> Result<(), CliError> {
    let file_err = |source| CliError::File {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(file_err)?;
    std::io::Write::write_all(&mut f, contents)
        .and_then(|()| f.sync_all())
        .map_err(file_err)?;
    std::fs::rename(&tmp, path).map_err(file_err)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(file_err)?;
    }
    Ok(())
}

/// The CA's issuer (certificate and key) in `ca_dir`.
fn load_issuer(ca_dir: &Path) -> Result<Issuer<'static, KeyPair>, CliError> {
    let (ca_cert, ca_key) = (ca_dir.join(CA_CERT), ca_dir.join(CA_KEY));
    if !ca_cert.exists() || !ca_key.exists() {
        return Err(CliError::MissingCa {
            dir: ca_dir.to_path_buf(),
        });
    }
    let text = |p: &Path| String::from_utf8(read_file(p)?).map_err(cert_err);
    let key = KeyPair::from_pem(&text(&ca_key)?).map_err(cert_err)?;
    Issuer::from_ca_cert_pem(&text(&ca_cert)?, key).map_err(cert_err)
}

/// The DER certificates of a PEM file.
fn pem_certs(path: &Path) -> Result<Vec<Vec<u8>>, CliError> {
    let bytes = read_file(path)?;
    let certs: Vec<Vec<u8>> = x509_parser::pem::Pem::iter_from_buffer(&bytes)
        .filter_map(Result::ok)
        .filter(|p| p.label == "CERTIFICATE")
        .map(|p| p.contents)
        .collect();
    if certs.is_empty() {
        return Err(CliError::Certificate(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// A certificate to revoke: its serial (hex), holder and bytes when the CA has them.
#[derive(Debug, Clone)]
struct Known {
    serial: String,
    name: Option<String>,
    der: Option<Vec<u8>>,
}

/// The certificates in the CA's `issued/` directory, in file-name order.
fn issued(ca_dir: &Path) -> Result<Vec<Known>, CliError> {
    let dir = ca_dir.join(ISSUED_DIR);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(".crt.pem"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(CliError::File { path: dir, source }),
    };
    files.sort();
    let mut out = Vec::new();
    for f in files {
        for der in pem_certs(&f)? {
            let serial = cert_ref(&der)?.serial_hex();
            let name = kakera_proto::Identity::from_cert_der(&der)
                .ok()
                .map(|i| i.name);
            out.push(Known {
                serial,
                name,
                der: Some(der),
            });
        }
    }
    Ok(out)
}

fn cert_ref(der: &[u8]) -> Result<kakera_proto::revocation::CertRef, CliError> {
    kakera_proto::revocation::cert_ref(der).map_err(|e| CliError::Certificate(e.to_string()))
}

fn ledger(ca_dir: &Path) -> Result<RevokedLedger, CliError> {
    let path = ca_dir.join(REVOKED_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            CliError::Invalid(format!(
                "{} is not a revocation ledger: {e}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RevokedLedger::default()),
        Err(source) => Err(CliError::File { path, source }),
    }
}

/// Signs a CRL of every revocation in the ledger with the next number, writes it
/// to `<ca_dir>/crl.pem` and the ledger to `revoked.json`.
fn issue_crl(
    ca_dir: &Path,
    issuer: &Issuer<'static, KeyPair>,
    mut ledger: RevokedLedger,
) -> Result<(Vec<u8>, u64, PathBuf), CliError> {
    ledger.crl_number += 1;
    let now = OffsetDateTime::now_utc();
    let mut revoked_certs = Vec::with_capacity(ledger.revoked.len());
    for r in &ledger.revoked {
        let serial = kakera_proto::revocation::parse_serial_hex(&r.serial)
            .map_err(|e| CliError::Invalid(e.to_string()))?;
        revoked_certs.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial),
            revocation_time: OffsetDateTime::from_unix_timestamp(r.at_s).unwrap_or(now),
            reason_code: Some(
                RevokeReason::parse(&r.reason)
                    .unwrap_or(RevokeReason::Unspecified)
                    .code(),
            ),
            invalidity_date: None,
        });
    }
    let crl = CertificateRevocationListParams {
        this_update: now - Duration::minutes(5),
        next_update: now + Duration::days(CRL_VALIDITY_DAYS),
        crl_number: SerialNumber::from(ledger.crl_number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(issuer)
    .map_err(cert_err)?;
    let der = crl.der().to_vec();
    let path = ca_dir.join(CRL_FILE);
    // The ledger first: a crash between the two leaves a ledger one number ahead,
    // and the next CRL still numbers above every one written.
    let ledger_json = serde_json::to_vec_pretty(&ledger).map_err(cert_err)?;
    replace_file(&ca_dir.join(REVOKED_FILE), &ledger_json)?;
    replace_file(&path, crl.pem().map_err(cert_err)?.as_bytes())?;
    Ok((der, ledger.crl_number, path))
}

/// Issues a fresh CRL of everything revoked so far (`kakera ca crl`): the first
/// one for a new CA, or a renewal before the last one's next-update time.
pub fn crl(ca_dir: &Path) -> Result<(Vec<u8>, u64, PathBuf), CliError> {
    let issuer = load_issuer(ca_dir)?;
    issue_crl(ca_dir, &issuer, ledger(ca_dir)?)
}

/// Revokes certificates (`kakera ca revoke`): records them in the CA's ledger and
/// signs a new CRL of every revocation so far. Revoking a certificate again only
/// issues the CRL again (a failed submission can be retried).
pub fn revoke(
    ca_dir: &Path,
    target: &RevokeTarget,
    reason: RevokeReason,
) -> Result<Revoked, CliError> {
    let issuer = load_issuer(ca_dir)?;
    let ca_der = pem_certs(&ca_dir.join(CA_CERT))?.remove(0);
    let ca_subject = {
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).map_err(cert_err)?;
        ca.subject().as_raw().to_vec()
    };
    let ours = |der: &[u8]| -> Result<bool, CliError> {
        let (_, c) = x509_parser::parse_x509_certificate(der).map_err(cert_err)?;
        Ok(c.issuer().as_raw() == ca_subject.as_slice())
    };
    let issued = issued(ca_dir)?;
    let chosen: Vec<Known> = match target {
        RevokeTarget::Name(name) => {
            check_name("name", name)?;
            let found: Vec<Known> = issued
                .iter()
                .filter(|k| k.name.as_deref() == Some(name.as_str()))
                .cloned()
                .collect();
            if found.is_empty() {
                return Err(CliError::Invalid(format!(
                    "the CA in {} issued no certificate named '{name}' that it kept a copy \
                     of (in {ISSUED_DIR}/); revoke an older one with --cert FILE or --serial",
                    ca_dir.display()
                )));
            }
            found
        }
        RevokeTarget::Serial(hex) => {
            let serial = kakera_proto::revocation::parse_serial_hex(hex)
                .map_err(|e| CliError::Invalid(e.to_string()))?;
            let serial = hex_upper(&serial);
            let copy = issued.iter().find(|k| k.serial == serial);
            vec![copy.cloned().unwrap_or(Known {
                serial,
                name: None,
                der: None,
            })]
        }
        RevokeTarget::Cert(path) => {
            let der = pem_certs(path)?.remove(0);
            if !ours(&der)? {
                return Err(CliError::Invalid(format!(
                    "{} was not issued by the CA in {}",
                    path.display(),
                    ca_dir.display()
                )));
            }
            let name = kakera_proto::Identity::from_cert_der(&der)
                .ok()
                .map(|i| i.name);
            vec![Known {
                serial: cert_ref(&der)?.serial_hex(),
                name,
                der: Some(der),
            }]
        }
    };
    let mut ledger = ledger(ca_dir)?;
    let at_s = OffsetDateTime::now_utc().unix_timestamp();
    let mut newly = Vec::new();
    for k in &chosen {
        if ledger.revoked.iter().any(|r| r.serial == k.serial) {
            continue;
        }
        let entry = RevokedEntry {
            serial: k.serial.clone(),
            name: k.name.clone(),
            reason: reason.as_str().to_string(),
            at_s,
        };
        ledger.revoked.push(entry.clone());
        newly.push(entry);
    }
    let revoked_serials: std::collections::BTreeSet<&str> =
        ledger.revoked.iter().map(|r| r.serial.as_str()).collect();
    // Every revoked certificate the CA has (its copies, and a file given now), at
    // most what one request carries: the newest revocations first.
    let mut certificates: Vec<Vec<u8>> = chosen.iter().filter_map(|k| k.der.clone()).collect();
    for k in issued.iter().rev() {
        if certificates.len() >= kakera_proto::revocation::MAX_REVOKED_CERTS_PER_REQUEST {
            break;
        }
        if let Some(der) = &k.der
            && revoked_serials.contains(k.serial.as_str())
            && !certificates.contains(der)
        {
            certificates.push(der.clone());
        }
    }
    certificates.truncate(kakera_proto::revocation::MAX_REVOKED_CERTS_PER_REQUEST);
    let (crl, crl_number, crl_path) = issue_crl(ca_dir, &issuer, ledger)?;
    Ok(Revoked {
        crl,
        crl_number,
        newly,
        certificates,
        crl_path,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

    use super::*;
    use kakera_proto::revocation::{CertRef, RevokedSet, parse_crl, verify_crl};

    fn issue_to(ca: &Path, name: &str, out: &Path) -> PathBuf {
        let req = IssueRequest {
            name: name.into(),
            role: Role::Ingest,
            zone: Some("dc".into()),
        };
        issue(ca, out, &req).unwrap().0
    }

    fn cert(path: &Path) -> CertRef {
        kakera_proto::revocation::cert_ref(&pem_certs(path).unwrap()[0]).unwrap()
    }

    /// Issue 22: `kakera ca revoke --name` revokes every certificate the CA issued to
    /// that holder and no other, in a CRL the CA signed; revoking again adds nothing
    /// but numbers the CRL higher (a failed submission can be retried); a CA keeps
    /// every revocation in later CRLs.
    #[test]
    fn revoking_by_name_lists_every_certificate_of_the_holder_and_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("pki");
        init_ca(&ca, "test CA").unwrap();
        let first = issue_to(&ca, "gw-1", &dir.path().join("a"));
        let renewed = issue_to(&ca, "gw-1", &dir.path().join("b"));
        let other = issue_to(&ca, "gw-2", &dir.path().join("c"));
        let ca_der = pem_certs(&ca.join(CA_CERT)).unwrap().remove(0);

        let r = revoke(
            &ca,
            &RevokeTarget::Name("gw-1".into()),
            RevokeReason::KeyCompromise,
        )
        .unwrap();
        assert_eq!(r.newly.len(), 2);
        assert_eq!(r.certificates.len(), 2);
        let summary = verify_crl(&r.crl, &[&ca_der]).unwrap();
        let set = RevokedSet::of([&summary]);
        assert!(set.contains(&cert(&first)) && set.contains(&cert(&renewed)));
        assert!(!set.contains(&cert(&other)));
        // The file on disk is the same CRL.
        let pem = std::fs::read(ca.join(CRL_FILE)).unwrap();
        let on_disk = x509_parser::pem::Pem::iter_from_buffer(&pem)
            .next()
            .unwrap()
            .unwrap()
            .contents;
        assert_eq!(on_disk, r.crl);

        let again = revoke(
            &ca,
            &RevokeTarget::Name("gw-1".into()),
            RevokeReason::KeyCompromise,
        )
        .unwrap();
        assert!(again.newly.is_empty());
        assert!(again.crl_number > r.crl_number);
        let by_serial = revoke(
            &ca,
            &RevokeTarget::Serial(cert(&other).serial_hex()),
            RevokeReason::Superseded,
        )
        .unwrap();
        let later = parse_crl(&by_serial.crl).unwrap();
        assert!(kakera_proto::revocation::check_succession(&summary, &later).is_ok());
        assert_eq!(RevokedSet::of([&later]).len(), 3);
    }

    /// Bad input gets a clear error and changes nothing: an unknown holder, a
    /// certificate of another CA.
    #[test]
    fn unknown_holders_and_foreign_certificates_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("pki");
        let foreign = dir.path().join("other");
        init_ca(&ca, "test CA").unwrap();
        init_ca(&foreign, "other CA").unwrap();
        let theirs = issue_to(&foreign, "gw-9", &dir.path().join("d"));
        let before = std::fs::read(ca.join(CRL_FILE)).unwrap();
        let e = revoke(
            &ca,
            &RevokeTarget::Name("nobody".into()),
            RevokeReason::Unspecified,
        )
        .unwrap_err();
        assert!(e.to_string().contains("no certificate named"), "{e}");
        let e = revoke(&ca, &RevokeTarget::Cert(theirs), RevokeReason::Unspecified).unwrap_err();
        assert!(e.to_string().contains("not issued by"), "{e}");
        assert_eq!(std::fs::read(ca.join(CRL_FILE)).unwrap(), before);
    }
}
