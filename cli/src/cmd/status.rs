//! `kakera status`: every node's state and the cluster's verdict.

use kakera_cli::CliError;
use kakera_cli::status;

use crate::cmd::*;

#[derive(clap::Args, Debug)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub(crate) fn run(args: StatusArgs, json: bool) -> Result<Outcome, CliError> {
    status(&args.cluster, json)
}

pub(crate) fn status(args: &ClusterArgs, json: bool) -> Result<Outcome, CliError> {
    let (report, topology, scrub) = runtime()?.block_on(async {
        let conn = args.connect()?;
        let answers = conn.status_all().await;
        let report = status::build(conn.config(), &answers);
        let scrub = conn.scrub_all().await;
        conn.close().await;
        // The leader's view of modes, health and repair (absent without a leader).
        let topology = match args.client() {
            Ok(c) => {
                let t = c.topology().await.ok();
                c.close().await;
                t
            }
            Err(_) => None,
        };
        Ok::<_, CliError>((report, topology, scrub))
    })?;
    if json {
        let value = serde_json::json!({
            "cluster": report,
            "nodes": topology.as_ref().map(|(n, _)| n),
            "repair": topology.as_ref().map(|(_, r)| r),
            "scrub": scrub.iter().map(|(n, s)| serde_json::json!({
                "node": n.id,
                "status": s.as_ref().ok().map(|s| serde_json::json!({
                    "rate_mb_s": s.rate_mb_s,
                    "checked": s.checked,
                    "bad": s.bad,
                    "passes": s.passes,
                    "position_permille": s.position_permille,
                })),
            })).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&value)
            .map_err(|e| CliError::Invalid(format!("cannot encode the report: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", status::render(&report));
        match &topology {
            Some((nodes, repair)) => {
                println!("leader's view (mode, health, shares held):");
                for n in nodes {
                    let silent = n
                        .silent_ms
                        .map_or("never heard".to_string(), |ms| format!("heard {ms} ms ago"));
                    println!(
                        "  node {:<4} {:<15} {:<8} {:>8} shares  {silent}",
                        n.node,
                        n.mode.as_str(),
                        n.health,
                        n.shares
                    );
                }
                println!(
                    "repair: {} moves pending, {} done by this leader, {} shares need a move, {} wait for a node{}",
                    repair.pending,
                    repair.done,
                    repair.needed,
                    repair.waiting,
                    repair
                        .last_error
                        .as_ref()
                        .map_or(String::new(), |e| format!("; last failure: {e}"))
                );
            }
            None => println!("leader's view: unavailable (no leader answered)"),
        }
        println!("scrub (shares re-read against the catalog's digests, since each node started):");
        for (n, s) in &scrub {
            match s {
                Ok(s) if s.rate_mb_s == 0 => println!("  node {:<4} off", n.id),
                Ok(s) => println!(
                    "  node {:<4} {:>3} MB/s  pass {:>3} at {:>3}%  {:>9} checked  {:>5} bad",
                    n.id,
                    s.rate_mb_s,
                    s.passes + 1,
                    s.position_permille / 10,
                    s.checked,
                    s.bad
                ),
                Err(_) => println!("  node {:<4} -", n.id),
            }
        }
    }
    let degraded = topology.as_ref().is_some_and(|(nodes, r)| {
        r.needed > 0
            || nodes.iter().any(|n| {
                n.health != "alive" && n.mode != kakera_proto::catalog::NodeMode::Decommissioned
            })
    });
    Ok(if report.healthy() && !degraded {
        Outcome::Ok
    } else {
        Outcome::Problem
    })
}
