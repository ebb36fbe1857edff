//! `kakera zone`: the zone key's ceremony and its custodians.

use std::path::PathBuf;

use clap::Subcommand;
use kakera_cli::CliError;
use kakera_client::zone;

use crate::cmd::*;

#[derive(Subcommand, Debug)]
pub(crate) enum ZoneCmd {
    /// Generate the zone key pair: zone.pub for the config, and zone.key (mode 0600)
    /// or, with --custodians, one file per custodian.
    #[command(
        after_help = "Examples:\n  kakera zone keygen --out hsz-key\n  kakera zone keygen --out hsz-key --custodians 5 --threshold 3"
    )]
    Keygen {
        /// Directory to write the files to (nothing is overwritten).
        #[arg(long)]
        out: PathBuf,
        /// The zone the key belongs to.
        #[arg(long, default_value = "hsz")]
        zone: String,
        /// Split the private key among this many custodian files.
        #[arg(long, requires = "threshold")]
        custodians: Option<u8>,
        /// How many custodian files rebuild the key.
        #[arg(long, requires = "custodians")]
        threshold: Option<u8>,
    },
    /// Rebuild the zone private key from custodian files in memory and check it against
    /// the public key; with --out, write it (mode 0600) for a job inside the HSZ.
    #[command(
        after_help = "Example:\n  kakera zone unseal hsz-key/custodian-1.key hsz-key/custodian-4.key hsz-key/custodian-5.key"
    )]
    Unseal {
        /// Custodian files (at least the threshold).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write the rebuilt private key to this new file (mode 0600).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub(crate) fn run(cmd: ZoneCmd, json: bool) -> Result<Outcome, CliError> {
    match cmd {
        ZoneCmd::Keygen {
            out,
            zone: zone_name,
            custodians,
            threshold,
        } => {
            let custody = match (custodians, threshold) {
                (Some(custodians), Some(threshold)) => zone::Custody::Split {
                    custodians,
                    threshold,
                },
                _ => zone::Custody::Single,
            };
            let made = zone::keygen(&out, &zone_name, custody)?;
            report(
                json,
                serde_json::json!({
                    "zone": zone_name,
                    "public_key": made.public.to_hex(),
                    "public_file": made.public_file,
                    "secret_files": made.secret_files,
                }),
                || {
                    let mut lines = vec![format!(
                        "zone public key written to {}",
                        made.public_file.display()
                    )];
                    for f in &made.secret_files {
                        lines.push(format!(
                            "private key material written to {} (mode 0600)",
                            f.display()
                        ));
                    }
                    lines.push(format!(
                        "add to the cluster config:\nzone_public_key = \"{}\"",
                        made.public.to_hex()
                    ));
                    lines
                },
            );
        }
        ZoneCmd::Unseal { files, out } => {
            let (private, public) = zone::unseal(&files)?;
            if let Some(path) = &out {
                zone::write_private(path, "hsz", &private)?;
            }
            report(
                json,
                serde_json::json!({
                    "custodian_files": files.len(),
                    "public_key": public.to_hex(),
                    "private_key_file": out,
                }),
                || {
                    let mut lines = vec![format!(
                        "the {} custodian file(s) rebuild the zone key with public key {}",
                        files.len(),
                        public.to_hex()
                    )];
                    if let Some(path) = &out {
                        lines.push(format!(
                            "private key written to {} (mode 0600)",
                            path.display()
                        ));
                    }
                    lines
                },
            );
        }
    }
    Ok(Outcome::Ok)
}
