//! `kakera node`: planned node changes (drain, decommission, remove, add).

use clap::Subcommand;
use kakera_cli::CliError;

use crate::cmd::*;

#[derive(Subcommand, Debug)]
pub(crate) enum NodeCmd {
    /// Stop placing shares on a node and move every share it holds elsewhere (masked
    /// repair, rack rule kept). --wait shows progress until it holds none.
    #[command(after_help = "Example:\n  kakera node drain 4 --reason \"disk replacement\" --wait")]
    Drain {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The config node id.
        node: u64,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// Wait until the node holds no share, with a progress bar.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout_s: u64,
    },
    /// Retire a drained node (it must hold no share); it may then be switched off.
    #[command(after_help = "Example:\n  kakera node decommission 4 --reason \"hardware retired\"")]
    Decommission {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The config node id.
        node: u64,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Give up on a dead node: its shares are regenerated on other nodes.
    #[command(after_help = "Example:\n  kakera node remove 4 --reason \"disk failed, node gone\"")]
    Remove {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The config node id.
        node: u64,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Return a node to service (after a drain, or a node newly added to the config).
    #[command(after_help = "Example:\n  kakera node add 4 --reason \"disk replaced\"")]
    Add {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The config node id.
        node: u64,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

pub(crate) fn run(cmd: NodeCmd, json: bool) -> Result<Outcome, CliError> {
    use kakera_proto::catalog::NodeMode;
    let (cluster, node, mode, reason, wait) = match cmd {
        NodeCmd::Drain {
            cluster,
            node,
            reason,
            wait,
            timeout_s,
        } => (
            cluster,
            node,
            NodeMode::Draining,
            reason,
            wait.then_some(timeout_s),
        ),
        NodeCmd::Decommission {
            cluster,
            node,
            reason,
        }
        | NodeCmd::Remove {
            cluster,
            node,
            reason,
        } => (cluster, node, NodeMode::Decommissioned, reason, None),
        NodeCmd::Add {
            cluster,
            node,
            reason,
        } => (cluster, node, NodeMode::Active, reason, None),
    };
    runtime()?.block_on(async {
        let c = cluster.client()?;
        c.set_node_mode(node, mode, &reason).await?;
        if !json {
            println!("node {node} is now {}", mode.as_str());
        }
        if let Some(timeout_s) = wait {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout_s);
            let mut first: Option<u64> = None;
            let bar = progress(
                0,
                json,
                &format!("draining node {node} [{{bar:30}}] {{pos}}/{{len}} shares moved, {{per_sec}}, ETA {{eta}}"),
            );
            // Bounded by the deadline.
            loop {
                let (nodes, repair) = c.topology().await?;
                let held = nodes.iter().find(|n| n.node == node).map_or(0, |n| n.shares);
                let total = *first.get_or_insert(held.max(1));
                bar.set_length(total);
                bar.set_position(total.saturating_sub(held));
                if held == 0 && repair.pending == 0 {
                    bar.finish_and_clear();
                    if !json {
                        println!("node {node} holds no share; decommission it with `kakera node decommission {node}`");
                    }
                    break;
                }
                if std::time::Instant::now() > deadline {
                    bar.finish_and_clear();
                    report(
                        json,
                        serde_json::json!({ "node": node, "mode": mode.as_str(), "drained": false, "shares_left": held }),
                        || vec![format!("node {node} still holds {held} shares after {timeout_s} s; repair continues (see `kakera status`)")],
                    );
                    c.close().await;
                    return Ok(Outcome::Problem);
                }
                tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
            }
        }
        if json {
            json_line(&serde_json::json!({
                "node": node,
                "mode": mode.as_str(),
                "drained": wait.map(|_| true),
            }));
        }
        c.close().await;
        Ok(Outcome::Ok)
    })
}
