//! A complete job, as a job author writes one (docs/job-author.md): connect as an HSZ
//! reader, load the zone key, and read everything the job's grant covers with one
//! call that streams batches ([`kakera_client::Client::read_scope`]), counting the
//! records per kind. Memory holds one listing page and one batch of records,
//! whatever the size of the catalog; a record erased meanwhile is reported by id
//! and skipped. Everything comes from kakera-client (and tokio for the runtime).
//!
//! ```sh
//! cargo run --release -p kakera-client --example count_by_kind -- \
//!   .dev-cluster/cluster.toml .dev-cluster/clients/demo-reader.crt.pem \
//!   .dev-cluster/clients/demo-reader.key.pem .dev-cluster/zone/zone.key JOB
//! ```
// An example program: printing is its interface.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::process::ExitCode;

use kakera_client::{Client, ClientError, ClusterConfig, IdentityFiles, ReadFailure, zone};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [config, cert, key, zone_key, job] = args.as_slice() else {
        eprintln!("usage: count_by_kind CONFIG CERT KEY ZONE_KEY JOB");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(count(config, cert, key, zone_key, job)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn count(
    config: &str,
    cert: &str,
    key: &str,
    zone_key: &str,
    job: &str,
) -> Result<(), ClientError> {
    let config = ClusterConfig::load(config.as_ref())?;
    let me = IdentityFiles {
        cert: cert.into(),
        key: key.into(),
    };
    let client =
        Client::connect_as(config, &me)?.with_zone_key(zone::load_private(zone_key.as_ref())?);

    // The grant names the records; the scope read lists and reads them in batches.
    let mut scope = client.read_scope(job).await?;
    println!(
        "grant {} (approval {}): {} kinds, {} sources, {} subjects in scope",
        scope.grant().job,
        scope.grant().approval,
        scope.grant().scope.kinds.len(),
        scope.grant().scope.sources.len(),
        scope.grant().scope.subjects.len()
    );
    let mut per_kind: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    let (mut erased, mut unreadable) = (0u64, 0u64);
    while let Some(batch) = scope.next().await? {
        for r in &batch.records {
            let slot = per_kind.entry(r.meta.kind.as_str()).or_default();
            slot.0 += 1;
            slot.1 += r.data.len() as u64;
        }
        for f in &batch.failed {
            match &f.failure {
                ReadFailure::Refused(why) => {
                    erased += 1;
                    eprintln!("skipped {}: {why}", f.record);
                }
                other => {
                    unreadable += 1;
                    eprintln!("unreadable {}: {other}", f.record);
                }
            }
        }
    }
    client.close().await;

    for (kind, (records, bytes)) in &per_kind {
        println!("{kind:<16} {records:>8} records {bytes:>12} bytes");
    }
    println!("left out (erased meanwhile): {erased}");
    println!("unreadable: {unreadable}");
    Ok(())
}
