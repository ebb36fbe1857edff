//! A complete job, as a job author writes one (docs/job-author.md): connect as an HSZ
//! reader, load the zone key, learn the grant's scope from the cluster, walk the
//! records it covers a page at a time, read each page in one batch and count the
//! records per kind. Memory holds one page of entries and one batch of records,
//! whatever the size of the catalog.
//!
//! ```sh
//! cargo run --release -p kakera-client --example count_by_kind -- \
//!   .dev-cluster/cluster.toml .dev-cluster/clients/demo-reader.crt.pem \
//!   .dev-cluster/clients/demo-reader.key.pem .dev-cluster/zone/zone.key JOB
//! ```
// An example program: printing is its interface.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use kakera_client::{Client, ClientError, zone};
use kakera_config::ClusterConfig;
use kakera_net::TlsFiles;
use kakera_proto::catalog::{ListFilter, MAX_LIST_PAGE};

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
    let tls = TlsFiles {
        ca: config.ca_cert.clone(),
        cert: PathBuf::from(cert),
        key: PathBuf::from(key),
    };
    let client =
        Client::connect(config, &tls)?.with_zone_key(zone::load_private(zone_key.as_ref())?);

    // The grant says which records the job may read; a reader sees its own grants.
    let grant = client
        .grants()
        .await?
        .into_iter()
        .find(|g| g.job == job)
        .ok_or_else(|| ClientError::Invalid(format!("no grant for job {job} names this reader")))?;
    let filters: Vec<ListFilter> = if grant.scope.kinds.is_empty() {
        vec![ListFilter::All]
    } else {
        grant
            .scope
            .kinds
            .iter()
            .map(|k| ListFilter::Kind(*k))
            .collect()
    };

    let mut per_kind: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    let mut unreadable = 0u64;
    let page_size = MAX_LIST_PAGE.min(client.batch_records() as u32);
    for filter in filters {
        let mut after = None;
        // Bounded by the catalog: every page moves `after` forward.
        loop {
            let page = client.list(filter.clone(), after, page_size).await?;
            let ids: Vec<_> = page
                .entries
                .iter()
                .filter(|e| grant.scope.covers(&e.meta))
                .map(|e| e.id)
                .collect();
            if !ids.is_empty() {
                let batch = client.get_batch(job, &ids).await?;
                for r in &batch.records {
                    let slot = per_kind.entry(r.meta.kind.as_str()).or_default();
                    slot.0 += 1;
                    slot.1 += r.data.len() as u64;
                }
                unreadable += batch.failed.len() as u64;
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    client.close().await;

    for (kind, (records, bytes)) in &per_kind {
        println!("{kind:<16} {records:>8} records {bytes:>12} bytes");
    }
    println!("unreadable: {unreadable}");
    Ok(())
}
