//! `kakera ca`: the cluster CA and the certificates it issues.

use std::path::PathBuf;

use clap::Subcommand;
use kakera_cli::CliError;
use kakera_cli::pki::{self, IssueRequest, RevokeReason, RevokeTarget};
use kakera_proto::Role;

use crate::cmd::*;

#[derive(Subcommand, Debug)]
pub(crate) enum CaCmd {
    /// Create a new CA (ca.crt.pem, and ca.key.pem with mode 0600) in a directory.
    #[command(after_help = "Example:\n  kakera ca init --dir pki")]
    Init {
        /// Where to write the CA files.
        #[arg(long)]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "kakera cluster CA")]
        name: String,
    },
    /// Issue a certificate for a node, gateway, job, auditor or operator.
    #[command(
        after_help = "Examples:\n  kakera ca issue --ca-dir pki --role node --name node-1 --out data/node-1\n  kakera ca issue --ca-dir pki --role reader --zone hsz --name job-17"
    )]
    Issue {
        /// The CA directory (from `kakera ca init`).
        #[arg(long)]
        ca_dir: PathBuf,
        /// node, ingest, reader, auditor or operator.
        #[arg(long)]
        role: String,
        /// The holder's zone (`hsz` for readers that reconstruct records).
        #[arg(long)]
        zone: Option<String>,
        /// The holder's name (for nodes: the node name in the cluster config).
        #[arg(long)]
        name: String,
        /// Where to write <name>.crt.pem and <name>.key.pem (default: the CA directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Revoke certificates: the CA signs a new CRL (crl.pem in its directory) and,
    /// given a cluster and an operator's certificate, the cluster records it at once:
    /// every node refuses the certificates at the handshake and closes their
    /// connections, and the cluster refuses their holders' commands (audited).
    #[command(after_help = "Examples:
  kakera ca revoke --ca-dir pki --name gateway-3 --reason key-compromise \\
    --config cluster.toml --cert op.crt.pem --key op.key.pem
  kakera ca revoke --ca-dir pki --serial 4F:1A:... --reason superseded   (CA offline: then `kakera ca publish`)")]
    Revoke {
        /// The CA directory.
        #[arg(long)]
        ca_dir: PathBuf,
        /// Every certificate the CA issued to this holder name.
        #[arg(long, conflicts_with_all = ["serial", "certificate"], required_unless_present_any = ["serial", "certificate"])]
        name: Option<String>,
        /// The certificate with this serial (hex, colons allowed).
        #[arg(long, conflicts_with = "certificate")]
        serial: Option<String>,
        /// This certificate file.
        #[arg(long = "revoke-cert", id = "certificate")]
        certificate: Option<PathBuf>,
        /// Why.
        #[arg(long, value_enum)]
        reason: RevokeReason,
        /// The cluster to record the CRL in (with --cert and --key of an operator).
        #[command(flatten)]
        cluster: OptionalCluster,
    },
    /// Issue a fresh CRL of everything revoked so far (the first one for a new CA, or
    /// a renewal), written to crl.pem in the CA directory.
    #[command(after_help = "Example:\n  kakera ca crl --ca-dir pki")]
    Crl {
        /// The CA directory.
        #[arg(long)]
        ca_dir: PathBuf,
    },
    /// Record a CRL in the cluster (operator): for a CA kept offline, the CRL that
    /// `kakera ca revoke` wrote there, carried over with the revoked certificates.
    #[command(
        after_help = "Example:\n  kakera ca publish --crl crl.pem --revoked-cert gateway-3.crt.pem \\\n    --config cluster.toml --cert op.crt.pem --key op.key.pem"
    )]
    Publish {
        /// The CRL (PEM).
        #[arg(long)]
        crl: PathBuf,
        /// Revoked certificates (PEM) the CRL lists: the cluster then also refuses
        /// their holders' commands already in flight.
        #[arg(long = "revoked-cert")]
        revoked_certs: Vec<PathBuf>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

/// A cluster and an operator's certificate, all optional (`kakera ca revoke` on an
/// offline CA machine has none).
#[derive(clap::Args, Debug)]
pub(crate) struct OptionalCluster {
    /// The cluster config file.
    #[arg(long, env = "KAKERA_CONFIG")]
    config: Option<PathBuf>,
    /// The operator's certificate (PEM).
    #[arg(long, env = "KAKERA_CERT")]
    cert: Option<PathBuf>,
    /// The operator's private key (PEM).
    #[arg(long, env = "KAKERA_KEY")]
    key: Option<PathBuf>,
}

/// Records `crl` (DER) with `certificates` in the cluster; the log index.
fn publish(
    config: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
    crl: Vec<u8>,
    certificates: Vec<Vec<u8>>,
) -> Result<u64, CliError> {
    let config =
        kakera_config::ClusterConfig::load(config).map_err(kakera_client::ClientError::from)?;
    let tls = kakera_net::TlsFiles {
        ca: config.ca_cert.clone(),
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    };
    runtime()?.block_on(async {
        let c = kakera_client::Client::connect(config, &tls)?;
        let r = c.revoke_certificates(crl, certificates).await;
        c.close().await;
        Ok(r?)
    })
}

/// The DER blocks labelled `label` of a PEM file.
fn pem_blocks(path: &std::path::Path, label: &str) -> Result<Vec<Vec<u8>>, CliError> {
    let bytes = read_file(path)?;
    let blocks: Vec<Vec<u8>> = x509_parser::pem::Pem::iter_from_buffer(&bytes)
        .filter_map(Result::ok)
        .filter(|p| p.label == label)
        .map(|p| p.contents)
        .collect();
    if blocks.is_empty() {
        return Err(CliError::Invalid(format!(
            "{} holds no PEM block '{label}'",
            path.display()
        )));
    }
    Ok(blocks)
}

pub(crate) fn run(cmd: CaCmd, json: bool) -> Result<Outcome, CliError> {
    match cmd {
        CaCmd::Init { dir, name } => {
            let (cert, key) = pki::init_ca(&dir, &name)?;
            report(
                json,
                serde_json::json!({ "ca_cert": cert, "ca_key": key }),
                || {
                    vec![
                        format!("created CA certificate {}", cert.display()),
                        format!(
                            "created CA private key {} (mode 0600; keep it offline)",
                            key.display()
                        ),
                    ]
                },
            );
        }
        CaCmd::Issue {
            ca_dir,
            role,
            zone,
            name,
            out,
        } => {
            let role = Role::parse(&role).ok_or_else(|| {
                CliError::Invalid(format!(
                    "unknown role '{role}': use one of node, ingest, reader, auditor, operator"
                ))
            })?;
            let out = out.unwrap_or_else(|| ca_dir.clone());
            let (cert, key) = pki::issue(
                &ca_dir,
                &out,
                &IssueRequest {
                    name: name.clone(),
                    role,
                    zone: zone.clone(),
                },
            )?;
            report(
                json,
                serde_json::json!({
                    "name": name, "role": role.as_str(), "zone": zone, "cert": cert, "key": key
                }),
                || {
                    vec![
                        format!("issued {} (role {role})", cert.display()),
                        format!("private key {} (mode 0600)", key.display()),
                    ]
                },
            );
        }
        CaCmd::Revoke {
            ca_dir,
            name,
            serial,
            certificate,
            reason,
            cluster,
        } => {
            let target = match (name, serial, certificate) {
                (Some(n), _, _) => RevokeTarget::Name(n),
                (_, Some(s), _) => RevokeTarget::Serial(s),
                (_, _, Some(c)) => RevokeTarget::Cert(c),
                // clap requires one of the three.
                (None, None, None) => {
                    return Err(CliError::Invalid(
                        "name the certificate: --name, --serial or --revoke-cert".into(),
                    ));
                }
            };
            let revoked = pki::revoke(&ca_dir, &target, reason)?;
            let recorded = match (&cluster.config, &cluster.cert, &cluster.key) {
                (Some(config), Some(cert), Some(key)) => Some(publish(
                    config,
                    cert,
                    key,
                    revoked.crl.clone(),
                    revoked.certificates.clone(),
                )?),
                (None, _, _) => None,
                _ => {
                    return Err(CliError::Invalid(format!(
                        "the CRL is written ({}) but not recorded: --config needs --cert and \
                         --key of an operator; record it with `kakera ca publish`",
                        revoked.crl_path.display()
                    )));
                }
            };
            report(
                json,
                serde_json::json!({
                    "revoked": revoked.newly,
                    "crl": revoked.crl_path,
                    "crl_number": revoked.crl_number,
                    "recorded_at_log_index": recorded,
                }),
                || {
                    let mut lines: Vec<String> = revoked
                        .newly
                        .iter()
                        .map(|r| {
                            format!(
                                "revoked serial {} ({}): {}",
                                r.serial,
                                r.name.as_deref().unwrap_or("holder unknown to this CA"),
                                r.reason
                            )
                        })
                        .collect();
                    if revoked.newly.is_empty() {
                        lines.push("already revoked; the CRL is issued again".into());
                    }
                    lines.push(format!(
                        "CRL number {} written to {}",
                        revoked.crl_number,
                        revoked.crl_path.display()
                    ));
                    lines.push(match recorded {
                        Some(i) => format!(
                            "recorded by the cluster at log index {i}: nodes refuse the \
                             certificate now; give clients the new CRL file (config ca_crl)"
                        ),
                        None => "not recorded by any cluster yet: run `kakera ca publish` \
                                 with an operator's certificate"
                            .into(),
                    });
                    lines
                },
            );
        }
        CaCmd::Crl { ca_dir } => {
            let (_, number, path) = pki::crl(&ca_dir)?;
            report(
                json,
                serde_json::json!({ "crl": path, "crl_number": number }),
                || vec![format!("CRL number {number} written to {}", path.display())],
            );
        }
        CaCmd::Publish {
            crl,
            revoked_certs,
            cluster,
        } => {
            let der = pem_blocks(&crl, "X509 CRL")?.remove(0);
            let mut certificates = Vec::new();
            for path in &revoked_certs {
                certificates.extend(pem_blocks(path, "CERTIFICATE")?);
            }
            let index = publish(
                &cluster.config,
                &cluster.cert,
                &cluster.key,
                der,
                certificates,
            )?;
            report(
                json,
                serde_json::json!({ "crl": crl, "recorded_at_log_index": index }),
                || {
                    vec![format!(
                        "{} recorded by the cluster at log index {index}: nodes refuse the \
                         certificates it lists",
                        crl.display()
                    )]
                },
            );
        }
    }
    Ok(Outcome::Ok)
}
