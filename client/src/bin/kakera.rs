//! `kakera`: the command line for operators and auditors.
//!
//! Exit codes: 0 success; 1 the command ran and found a problem (invalid config,
//! refused request); 2 bad usage (from the argument parser); 3 a file or the
//! environment is unusable.
// A command-line program: printing to stdout and stderr is its interface.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kakera_client::ClientError;
use kakera_client::pki::{self, IssueRequest};
use kakera_config::{ClusterConfig, ConfigError};
use kakera_proto::Role;

/// kakera: secret-sharing storage for health records.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Manage the cluster certificate authority.
    #[command(subcommand)]
    Ca(CaCmd),
    /// Work with cluster config files.
    #[command(subcommand)]
    Config(ConfigCmd),
}

#[derive(Subcommand, Debug)]
enum CaCmd {
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

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Validate a cluster config and summarise it.
    #[command(after_help = "Example:\n  kakera config check cluster.toml")]
    Check {
        /// The config file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            match e {
                ClientError::Config(ConfigError::Invalid { .. } | ConfigError::Syntax { .. })
                | ClientError::Invalid(_) => ExitCode::from(1),
                _ => ExitCode::from(3),
            }
        }
    }
}

fn run(cmd: Cmd) -> Result<(), ClientError> {
    match cmd {
        Cmd::Ca(CaCmd::Init { dir, name }) => {
            let (cert, key) = pki::init_ca(&dir, &name)?;
            println!("created CA certificate {}", cert.display());
            println!(
                "created CA private key {} (mode 0600; keep it offline)",
                key.display()
            );
        }
        Cmd::Ca(CaCmd::Issue {
            ca_dir,
            role,
            zone,
            name,
            out,
        }) => {
            let role = Role::parse(&role).ok_or_else(|| {
                ClientError::Invalid(format!(
                    "unknown role '{role}': use one of node, ingest, reader, auditor, operator"
                ))
            })?;
            let out = out.unwrap_or_else(|| ca_dir.clone());
            let (cert, key) = pki::issue(&ca_dir, &out, &IssueRequest { name, role, zone })?;
            println!("issued {} (role {role})", cert.display());
            println!("private key {} (mode 0600)", key.display());
        }
        Cmd::Config(ConfigCmd::Check { file }) => {
            let c = ClusterConfig::load(&file)?;
            let racks_used: std::collections::BTreeSet<&str> =
                c.nodes.iter().map(|n| n.rack.as_str()).collect();
            println!(
                "ok: cluster '{}', {} nodes in {} racks, {}-of-{} with at most {} shares per rack, voters {:?}",
                c.cluster_id,
                c.nodes.len(),
                racks_used.len(),
                c.policy.k,
                c.policy.n,
                c.policy.max_shares_per_rack,
                c.initial_voters()
            );
        }
    }
    Ok(())
}
