//! `kakera grant`: the review committee's grants, entered by an operator.

use clap::Subcommand;
use kakera_cli::CliError;
use kakera_cli::demo;
use kakera_proto::catalog::{Grant, GrantScope};
use kakera_proto::{RecordKind, SubjectTag};

use crate::cmd::*;

#[derive(Subcommand, Debug)]
pub(crate) enum GrantCmd {
    /// Record an approval: job, reader, scope, expiry and the approval reference.
    #[command(
        after_help = "Example:\n  kakera grant create --job study-17 --reader anon-job-17 --kinds claim,checkup --sources any --expires 2027-03-31 --approval IRB-2026-017"
    )]
    Create {
        #[command(flatten)]
        cluster: ClusterArgs,
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
            job,
            reader,
            kinds,
            sources,
            subjects,
            expires,
            approval,
        } => {
            let kinds = list_arg(&kinds)
                .iter()
                .map(|k| RecordKind::parse(k))
                .collect::<Result<Vec<_>, _>>()?;
            let subjects = subjects
                .as_deref()
                .map(list_arg)
                .unwrap_or_default()
                .iter()
                .map(|s| SubjectTag::parse(s))
                .collect::<Result<Vec<_>, _>>()?;
            let grant = Grant {
                job: job.clone(),
                reader,
                scope: GrantScope {
                    kinds,
                    sources: list_arg(&sources),
                    subjects,
                },
                expires_at_ms: parse_time(&expires, true)?,
                approval,
                created_at_ms: 0,
                created_by: String::new(),
                revoked: None,
            };
            grant.validate(now_ms())?;
            rt.block_on(async {
                let c = cluster.client()?;
                let r = c.create_grant(grant).await;
                c.close().await;
                r
            })?;
            report(
                json,
                serde_json::json!({ "job": job, "created": true }),
                || vec![format!("grant for job {job} created")],
            );
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
