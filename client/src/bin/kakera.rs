//! `kakera`: the command line for operators and auditors.
//!
//! Exit codes: 0 success; 1 the command ran and found a problem (invalid config,
//! refused request, unhealthy cluster); 2 bad usage (from the argument parser); 3 a file or the
//! environment is unusable.
// A command-line program: printing to stdout and stderr is its interface.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kakera_client::connection::Connection;
use kakera_client::pki::{self, IssueRequest};
use kakera_client::{ClientError, status, zone};
use kakera_config::{ClusterConfig, ConfigError};
use kakera_net::TlsFiles;
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
    /// Make and hold the zone key that records are sealed to.
    #[command(subcommand)]
    Zone(ZoneCmd),
    /// Show every node's state and the cluster's health (exit code 1 if unhealthy).
    #[command(
        after_help = "Example:\n  kakera status --config cluster.toml --cert ops.crt.pem --key ops.key.pem\n\nThe flags default to $KAKERA_CONFIG, $KAKERA_CERT and $KAKERA_KEY."
    )]
    Status {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ZoneCmd {
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

/// How to reach a cluster: its config and this holder's certificate.
#[derive(clap::Args, Debug)]
struct ClusterArgs {
    /// The cluster config file.
    #[arg(long, env = "KAKERA_CONFIG")]
    config: PathBuf,
    /// This holder's certificate (PEM), issued by the cluster CA.
    #[arg(long, env = "KAKERA_CERT")]
    cert: PathBuf,
    /// This holder's private key (PEM).
    #[arg(long, env = "KAKERA_KEY")]
    key: PathBuf,
}

impl ClusterArgs {
    /// Loads the config and opens a connection (inside a tokio runtime).
    fn connect(&self) -> Result<Connection, ClientError> {
        let config = ClusterConfig::load(&self.config)?;
        let tls = TlsFiles {
            ca: config.ca_cert.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        };
        Connection::open(config, &tls)
    }
}

/// A runtime for the commands that talk to the cluster.
fn runtime() -> Result<tokio::runtime::Runtime, ClientError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Invalid(format!("cannot start the async runtime: {e}")))
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

/// What a command found, beyond success or failure.
enum Outcome {
    /// All well.
    Ok,
    /// The command ran and found a problem it already reported (exit code 1).
    Problem,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Problem) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            match e {
                ClientError::Config(ConfigError::Invalid { .. } | ConfigError::Syntax { .. })
                | ClientError::Invalid(_)
                | ClientError::Net(kakera_net::NetError::Refused { .. }) => ExitCode::from(1),
                _ => ExitCode::from(3),
            }
        }
    }
}

fn run(cmd: Cmd) -> Result<Outcome, ClientError> {
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
        Cmd::Status { cluster, json } => return status(&cluster, json),
        Cmd::Zone(ZoneCmd::Keygen {
            out,
            zone: zone_name,
            custodians,
            threshold,
        }) => {
            let custody = match (custodians, threshold) {
                (Some(custodians), Some(threshold)) => zone::Custody::Split {
                    custodians,
                    threshold,
                },
                _ => zone::Custody::Single,
            };
            let made = zone::keygen(&out, &zone_name, custody)?;
            println!("zone public key written to {}", made.public_file.display());
            for f in &made.secret_files {
                println!(
                    "private key material written to {} (mode 0600)",
                    f.display()
                );
            }
            println!(
                "add to the cluster config:\nzone_public_key = \"{}\"",
                made.public.to_hex()
            );
        }
        Cmd::Zone(ZoneCmd::Unseal { files, out }) => {
            let (private, public) = zone::unseal(&files)?;
            println!(
                "the {} custodian file(s) rebuild the zone key with public key {}",
                files.len(),
                public.to_hex()
            );
            if let Some(path) = out {
                zone::write_private(&path, "hsz", &private)?;
                println!("private key written to {} (mode 0600)", path.display());
            }
        }
    }
    Ok(Outcome::Ok)
}

fn status(args: &ClusterArgs, json: bool) -> Result<Outcome, ClientError> {
    let report = runtime()?.block_on(async {
        let conn = args.connect()?;
        let answers = conn.status_all().await;
        let report = status::build(conn.config(), &answers);
        conn.close().await;
        Ok::<_, ClientError>(report)
    })?;
    if json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| ClientError::Invalid(format!("cannot encode the report: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", status::render(&report));
    }
    Ok(if report.healthy() {
        Outcome::Ok
    } else {
        Outcome::Problem
    })
}
