//! `kakera grant`: the review committee's grants, entered by an operator.

use clap::Subcommand;
use kakera_cli::CliError;
use kakera_cli::demo;
use kakera_proto::catalog::{Grant, GrantScope};
use kakera_proto::{RecordKind, SubjectTag};

use crate::cmd::*;

/// A grant's terms, as the committee approves them and the operator enters them.
#[derive(clap::Args, Debug)]
pub(crate) struct Terms {
    /// The job's name (unique; a new approval needs a new name).
    #[arg(long)]
    job: String,
    /// The certificate name of the reader that runs the job.
    #[arg(long)]
    reader: String,
    /// Record kinds, comma-separated, or `any`.
    #[arg(long)]
    kinds: String,
    /// Source facilities, comma-separated, or `any`.
    #[arg(long)]
    sources: String,
    /// Subject tags (64 hex digits), comma-separated; default any.
    #[arg(long)]
    subjects: Option<String>,
    /// Expiry: a date (YYYY-MM-DD, end of day UTC) or an RFC 3339 time.
    #[arg(long)]
    expires: String,
    /// The review committee's approval reference.
    #[arg(long)]
    approval: String,
}

#[derive(Subcommand, Debug)]
pub(crate) enum GrantCmd {
    /// Record an approval: job, reader, scope, expiry and the approval reference;
    /// with `--signature` for each committee member who signed it when the config
    /// names a review committee.
    #[command(
        after_help = "Example:\n  kakera grant create --job study-17 --reader anon-job-17 --kinds claim,checkup --sources any --expires 2027-03-31 --approval IRB-2026-017 --signature sato:9f3c... --signature ito:51ab..."
    )]
    Create {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        terms: Terms,
        /// A committee member's signature, `MEMBER:HEX` from `kakera grant sign`
        /// (repeat for each member).
        #[arg(long = "signature")]
        signatures: Vec<String>,
    },
    /// Sign a grant's terms as a member of the review committee (offline: needs the
    /// cluster config for its id and the member's key, no connection). Prints
    /// `MEMBER:HEX` for the operator's `grant create --signature`.
    #[command(
        after_help = "Example:\n  kakera grant sign --config cluster.toml --key sato.committee.json --job study-17 --reader anon-job-17 --kinds claim,checkup --sources any --expires 2027-03-31 --approval IRB-2026-017"
    )]
    Sign {
        /// The cluster config file (the signature is bound to its cluster id).
        #[arg(long, env = "KAKERA_CONFIG")]
        config: std::path::PathBuf,
        /// The member's key file (from `kakera grant keygen`).
        #[arg(long)]
        key: std::path::PathBuf,
        #[command(flatten)]
        terms: Terms,
    },
    /// Make a review committee member's signing key (Ed25519): writes the key file
    /// (0600; keep it with the member) and prints the `[[committee.members]]` entry
    /// for the cluster config.
    #[command(
        after_help = "Example:\n  kakera grant keygen --member sato --out sato.committee.json"
    )]
    Keygen {
        /// The member's name, as the config and the audit log will name it.
        #[arg(long)]
        member: String,
        /// Where to write the key (refused if it exists).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// List grants with their state: every grant for an operator or auditor, its own
    /// grants (its scope) for a reader.
    #[command(after_help = "Example:\n  kakera grant list --json")]
    List {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Revoke a grant: reads under it stop at once.
    #[command(
        after_help = "Example:\n  kakera grant revoke --job study-17 --reason \"consent withdrawn\""
    )]
    Revoke {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The job.
        #[arg(long)]
        job: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

pub(crate) fn run(cmd: GrantCmd, json: bool) -> Result<Outcome, CliError> {
    let rt = runtime()?;
    match cmd {
        GrantCmd::Create {
            cluster,
            terms,
            signatures,
        } => {
            let grant = terms.grant()?;
            grant.validate(now_ms())?;
            let job = grant.job.clone();
            let signatures = signatures
                .iter()
                .map(|s| parse_signature(s))
                .collect::<Result<Vec<_>, _>>()?;
            let signed = !signatures.is_empty();
            rt.block_on(async {
                let c = cluster.client()?;
                let r = if signed {
                    c.create_signed_grant(grant, signatures).await
                } else {
                    c.create_grant(grant).await
                };
                c.close().await;
                r
            })?;
            report(
                json,
                serde_json::json!({ "job": job, "created": true, "signed": signed }),
                || vec![format!("grant for job {job} created")],
            );
        }
        GrantCmd::Sign { config, key, terms } => {
            let config = kakera_config::ClusterConfig::load(&config)?;
            let grant = terms.grant()?;
            grant.validate(now_ms())?;
            let signed = kakera_cli::committee::sign_grant(&key, &config.cluster_id, &grant)?;
            let line = format!(
                "{}:{}",
                signed.member,
                kakera_client::zone::hex(&signed.signature)
            );
            if json {
                json_line(&serde_json::json!({
                    "member": signed.member,
                    "job": grant.job,
                    "signature": line,
                }));
            } else {
                println!("{line}");
            }
        }
        GrantCmd::Keygen { member, out } => {
            let pkcs8 =
                ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                    .map_err(|_| CliError::Invalid("the OS random source failed".into()))?;
            let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                .map_err(|_| CliError::Invalid("a fresh key did not parse".into()))?;
            let public =
                kakera_client::zone::hex(ring::signature::KeyPair::public_key(&pair).as_ref());
            let file = zeroize::Zeroizing::new(
                serde_json::json!({
                    "kind": kakera_cli::committee::MEMBER_KEY_KIND,
                    "member": member,
                    "pkcs8": kakera_client::zone::hex(pkcs8.as_ref()),
                })
                .to_string(),
            );
            kakera_client::files::write_new(&out, &file, 0o600)?;
            if json {
                json_line(&serde_json::json!({
                    "member": member,
                    "key_file": out.display().to_string(),
                    "public_key": public,
                }));
            } else {
                println!("wrote {} (keep it with {member}; 0600)", out.display());
                println!("add to the cluster config:");
                println!("[[committee.members]]\nname = \"{member}\"\npublic_key = \"{public}\"");
            }
        }
        GrantCmd::List { cluster } => {
            let grants = rt.block_on(async {
                let c = cluster.client()?;
                let r = c.grants().await;
                c.close().await;
                r
            })?;
            let now = now_ms();
            for g in &grants {
                if json {
                    json_line(&grant_json(g, now));
                } else {
                    let state = match (&g.revoked, g.active(now)) {
                        (Some(r), _) => format!("revoked by {} ({})", r.by, r.reason),
                        (None, true) => "active".to_string(),
                        (None, false) => "expired".to_string(),
                    };
                    let kinds: Vec<&str> = g.scope.kinds.iter().map(|k| k.as_str()).collect();
                    println!(
                        "{}  reader {}  kinds {}  sources {}  expires {}  approval {}  {}",
                        g.job,
                        g.reader,
                        if kinds.is_empty() {
                            "any".into()
                        } else {
                            kinds.join(",")
                        },
                        if g.scope.sources.is_empty() {
                            "any".into()
                        } else {
                            g.scope.sources.join(",")
                        },
                        demo::format_ms(g.expires_at_ms),
                        g.approval,
                        state
                    );
                }
            }
            if !json {
                println!("{} grant(s)", grants.len());
            }
        }
        GrantCmd::Revoke {
            cluster,
            job,
            reason,
        } => {
            rt.block_on(async {
                let c = cluster.client()?;
                let r = c.revoke_grant(&job, &reason).await;
                c.close().await;
                r
            })?;
            report(
                json,
                serde_json::json!({ "job": job, "revoked": true }),
                || vec![format!("grant for job {job} revoked")],
            );
        }
    }
    Ok(Outcome::Ok)
}

impl Terms {
    /// The grant these terms describe (its expiry a date's end of day, UTC).
    fn grant(&self) -> Result<Grant, CliError> {
        let kinds = list_arg(&self.kinds)
            .iter()
            .map(|k| RecordKind::parse(k))
            .collect::<Result<Vec<_>, _>>()?;
        let subjects = self
            .subjects
            .as_deref()
            .map(list_arg)
            .unwrap_or_default()
            .iter()
            .map(|s| SubjectTag::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Grant {
            job: self.job.clone(),
            reader: self.reader.clone(),
            scope: GrantScope {
                kinds,
                sources: list_arg(&self.sources),
                subjects,
            },
            expires_at_ms: parse_time(&self.expires, true)?,
            approval: self.approval.clone(),
            created_at_ms: 0,
            created_by: String::new(),
            revoked: None,
        })
    }
}

/// `MEMBER:HEX` from `kakera grant sign`.
fn parse_signature(text: &str) -> Result<kakera_proto::committee::CommitteeSignature, CliError> {
    let bad = || {
        CliError::Invalid(format!(
            "'{}' is not a signature from `kakera grant sign` (MEMBER:HEX)",
            text.chars().take(80).collect::<String>()
        ))
    };
    let (member, hex) = text.split_once(':').ok_or_else(bad)?;
    let signature = kakera_cli::committee::unhex(hex)
        .filter(|s| s.len() == 64)
        .ok_or_else(bad)?;
    Ok(kakera_proto::committee::CommitteeSignature {
        member: member.to_string(),
        signature,
    })
}
