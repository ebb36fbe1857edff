//! `kakera demo`: the demo against a running cluster.

use std::path::PathBuf;

use kakera_cli::CliError;
use kakera_cli::demo;
use kakera_config::ClusterConfig;

use crate::cmd::*;

#[derive(clap::Args, Debug)]
pub(crate) struct DemoArgs {
    /// The cluster config file.
    #[arg(long, env = "KAKERA_CONFIG")]
    config: PathBuf,
    /// Directory with the demo identities (demo-ingest, demo-reader,
    /// demo-intruder, demo-operator, demo-auditor).
    #[arg(long)]
    identities: PathBuf,
    /// The zone private key file (from `kakera zone keygen`).
    #[arg(long)]
    zone_key: PathBuf,
    /// A review committee member's key file (repeat for each signer); needed when
    /// the config names a committee.
    #[arg(long = "committee-key")]
    committee_keys: Vec<PathBuf>,
    /// How many synthetic records to store.
    #[arg(long, default_value_t = 300)]
    records: usize,
}

pub(crate) fn run(args: DemoArgs, json: bool) -> Result<Outcome, CliError> {
    let DemoArgs {
        config,
        identities,
        zone_key,
        committee_keys,
        records,
    } = args;
    let config = ClusterConfig::load(&config)?;
    let files = demo::DemoFiles {
        dir: identities,
        zone_key,
        committee_keys,
    };
    let steps = runtime()?.block_on(demo::run(config, &files, records))?;
    let all_ok = steps.iter().all(|s| s.ok);
    if json {
        json_line(&serde_json::json!({
            "ok": all_ok,
            "steps": steps.iter().map(|s| serde_json::json!({ "ok": s.ok, "text": s.text })).collect::<Vec<_>>(),
        }));
    } else {
        for s in &steps {
            println!("{}{}", if s.ok { "" } else { "UNEXPECTED: " }, s.text);
        }
        if all_ok {
            println!("demo finished: every step behaved as promised");
        }
    }
    Ok(if all_ok {
        Outcome::Ok
    } else {
        Outcome::Problem
    })
}
