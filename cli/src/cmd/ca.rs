//! `kakera ca`: the cluster CA and the certificates it issues.

use std::path::PathBuf;

use clap::Subcommand;
use kakera_cli::CliError;
use kakera_cli::pki::{self, IssueRequest};
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
    }
    Ok(Outcome::Ok)
}
