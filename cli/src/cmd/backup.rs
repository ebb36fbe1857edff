//! `kakera backup` and `kakera restore`.

use std::path::PathBuf;

use kakera_cli::CliError;

use crate::cmd::*;

#[derive(clap::Args, Debug)]
pub(crate) struct BackupArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The backup's directory under the config's [backup] root (relative; letters,
    /// digits, '-', '_', '.', '/').
    dir: String,
    /// Stop waiting for the nodes' parts after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
}

pub(crate) fn run_backup(args: BackupArgs, json: bool) -> Result<Outcome, CliError> {
    let BackupArgs {
        cluster,
        dir,
        timeout_s,
    } = args;
    backup(&cluster, &dir, timeout_s, json)
}

pub(crate) fn backup(
    args: &ClusterArgs,
    dir: &str,
    timeout_s: u64,
    json: bool,
) -> Result<Outcome, CliError> {
    use kakera_proto::backup::PartState;
    let report = runtime()?.block_on(async {
        let c = args.client()?;
        eprintln!("backup into {dir}: waiting up to {timeout_s} s for every node's part");
        let r = c
            .backup(dir, std::time::Duration::from_secs(timeout_s))
            .await;
        c.close().await;
        r
    })?;
    let complete = report.complete();
    if json {
        json_line(&serde_json::to_value(&report).map_err(|e| CliError::Invalid(e.to_string()))?);
    } else {
        println!(
            "backup {} at log index {} into <[backup] root>/{}/<rack>/<node>",
            report.backup, report.log_index, report.dir
        );
        for p in &report.parts {
            let state = match &p.state {
                PartState::Done(m) => format!(
                    "written: {} shares, {:.1} MB, catalog {:.1} MB",
                    m.shares,
                    m.share_bytes as f64 / 1e6,
                    m.catalog_bytes as f64 / 1e6
                ),
                PartState::Failed(why) => format!("FAILED: {why}"),
                PartState::Writing => "still writing".into(),
                PartState::Unknown => match &p.unreachable {
                    Some(why) => format!("no answer: {why}"),
                    None => "has not applied the backup entry".into(),
                },
            };
            println!("  {:<12} {:<10} {state}", p.name, p.rack);
        }
        if complete {
            println!(
                "complete: every node wrote its part; each rack's directory holds at most \
                 max_shares_per_rack shares of a record. Keep each rack's parts on that rack's store."
            );
        } else {
            println!(
                "INCOMPLETE: not every node wrote its part; fix the cause and take another backup"
            );
        }
    }
    Ok(if complete {
        Outcome::Ok
    } else {
        Outcome::Problem
    })
}

#[derive(clap::Args, Debug)]
pub(crate) struct RestoreArgs {
    /// The backup's directory as this machine sees it: <[backup] root>/<DIR>.
    backup_dir: PathBuf,
    /// The cluster config file (the same cluster id and node names as the backup).
    #[arg(long, env = "KAKERA_CONFIG")]
    config: PathBuf,
    /// The node to restore (its id in the config).
    #[arg(long)]
    node: u64,
    /// The kakera-node binary (default: beside this one, else on PATH).
    #[arg(long)]
    node_binary: Option<PathBuf>,
}

pub(crate) fn run_restore(args: RestoreArgs, json: bool) -> Result<Outcome, CliError> {
    let RestoreArgs {
        backup_dir,
        config,
        node,
        node_binary,
    } = args;
    restore(&backup_dir, &config, node, node_binary, json)
}

pub(crate) fn restore(
    backup_dir: &std::path::Path,
    config: &std::path::Path,
    node: u64,
    node_binary: Option<PathBuf>,
    json: bool,
) -> Result<Outcome, CliError> {
    let binary = node_binary_or_beside(node_binary);
    let out = std::process::Command::new(&binary)
        .arg("--config")
        .arg(config)
        .arg("--node")
        .arg(node.to_string())
        .arg("--restore-from")
        .arg(backup_dir)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "warn")
        .output()
        .map_err(|source| CliError::File {
            path: binary.clone(),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let reason = stderr.lines().rev().find(|l| !l.trim().is_empty()).map_or(
            "kakera-node failed without a message".to_string(),
            |l| {
                // The log line's message: after the level and target.
                l.split_once(": ").map_or(l, |(_, m)| m).trim().to_string()
            },
        );
        return Err(CliError::Invalid(format!(
            "restore of node {node} failed: {reason}"
        )));
    }
    let value: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| CliError::Invalid(format!("kakera-node printed no restore report: {e}")))?;
    report(json, value.clone(), || {
        vec![format!(
            "node {node} restored as member {} at log index {}: {} shares ({:.1} MB), {} left \
             out, {} missing; catalog {}. Restore every node, then start them.",
            value["member"].as_str().unwrap_or("?"),
            value["log_index"],
            value["shares"],
            value["share_bytes"].as_f64().unwrap_or(0.0) / 1e6,
            value["skipped"],
            value["missing"],
            value["catalog_digest"].as_str().unwrap_or("?"),
        )]
    });
    Ok(Outcome::Ok)
}
