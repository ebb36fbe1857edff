//! The cluster CA and the certificates it issues (rcgen). Roles and zones are SAN URIs
//! (`kakera://role/…`, `kakera://zone/…`, `kakera://name/…`); node certificates also
//! carry the node name as a DNS SAN, which peers verify. Private keys are written with
//! mode 0600 and never overwritten.

use std::path::{Path, PathBuf};

use kakera_client::files::write_new;
use kakera_proto::Role;
use kakera_proto::identity::{name_uri, zone_uri};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
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

/// Creates a CA in `dir`: `ca.crt.pem` and `ca.key.pem` (0600). Refuses to overwrite.
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
    let (ca_cert, ca_key) = (ca_dir.join(CA_CERT), ca_dir.join(CA_KEY));
    if !ca_cert.exists() || !ca_key.exists() {
        return Err(CliError::MissingCa {
            dir: ca_dir.to_path_buf(),
        });
    }
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| CliError::File {
            path: p.to_path_buf(),
            source,
        })
    };
    let ca_key_pair = KeyPair::from_pem(&read(&ca_key)?).map_err(cert_err)?;
    let issuer = Issuer::from_ca_cert_pem(&read(&ca_cert)?, ca_key_pair).map_err(cert_err)?;

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
    let key = KeyPair::generate().map_err(cert_err)?;
    let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
    write_new(&key_path, &key.serialize_pem(), 0o600)?;
    write_new(&cert_path, &cert.pem(), 0o644)?;
    Ok((cert_path, key_path))
}
