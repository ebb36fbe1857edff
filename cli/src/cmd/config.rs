//! `kakera config`: checking a cluster config.

use std::path::PathBuf;

use clap::Subcommand;
use kakera_cli::CliError;
use kakera_config::ClusterConfig;

use crate::cmd::*;

#[derive(Subcommand, Debug)]
pub(crate) enum ConfigCmd {
    /// Validate a cluster config and summarise it.
    #[command(after_help = "Example:\n  kakera config check cluster.toml")]
    Check {
        /// The config file.
        file: PathBuf,
    },
}

pub(crate) fn run(cmd: ConfigCmd, json: bool) -> Result<Outcome, CliError> {
    match cmd {
        ConfigCmd::Check { file } => {
            let c = ClusterConfig::load(&file)?;
            let racks_used: std::collections::BTreeSet<&str> =
                c.nodes.iter().map(|n| n.rack.as_str()).collect();
            report(
                json,
                serde_json::json!({
                    "ok": true,
                    "cluster_id": c.cluster_id,
                    "nodes": c.nodes.len(),
                    "racks": racks_used,
                    "k": c.policy.k,
                    "n": c.policy.n,
                    "max_shares_per_rack": c.policy.max_shares_per_rack,
                    "voters": c.initial_voters(),
                    "backup_root": c.backup_root,
                    "committee": c.committee.as_ref().map(|m| serde_json::json!({
                        "threshold": m.threshold,
                        "members": m.members.iter().map(|x| x.name.clone()).collect::<Vec<_>>(),
                    })),
                    "metrics": c.nodes.iter().filter_map(|n| n.metrics_addr.map(|a| (n.name.clone(), a.to_string()))).collect::<std::collections::BTreeMap<_, _>>(),
                }),
                || {
                    vec![
                        format!(
                            "ok: cluster '{}', {} nodes in {} racks, {}-of-{} with at most {} \
                             shares per rack, voters {:?}",
                            c.cluster_id,
                            c.nodes.len(),
                            racks_used.len(),
                            c.policy.k,
                            c.policy.n,
                            c.policy.max_shares_per_rack,
                            c.initial_voters()
                        ),
                        match &c.committee {
                            Some(m) => format!(
                                "grants: {} of {} review committee signatures ({})",
                                m.threshold,
                                m.members.len(),
                                m.members
                                    .iter()
                                    .map(|x| x.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                            None => "grants: an operator creates them alone (no [committee])"
                                .to_string(),
                        },
                    ]
                },
            );
        }
    }
    Ok(Outcome::Ok)
}
