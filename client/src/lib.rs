//! kakera-client: the library that jobs and gateways link ([`Client`]: put, get,
//! list, grants, audit; [`blocking::Client`] for simple jobs), with sealing to the
//! zone key ([`seal`], [`zone`]), read planning ([`plan`]) and share verification
//! ([`verify`]). The `kakera` CLI (kakera-cli) and the medical formats
//! (kakera-medical) are built on it; neither is part of it.
//!
//! Everything a job needs is re-exported here, so a job depends on this crate (and
//! tokio) alone. A complete job, reading everything its grant covers:
//!
//! ```no_run
//! use kakera_client::{Client, ClientError, ClusterConfig, IdentityFiles, zone};
//!
//! async fn count(job: &str) -> Result<u64, ClientError> {
//!     let config = ClusterConfig::load("cluster.toml".as_ref())?;
//!     let me = IdentityFiles { cert: "reader.crt.pem".into(), key: "reader.key.pem".into() };
//!     let client = Client::connect_as(config, &me)?
//!         .with_zone_key(zone::load_private("zone.key".as_ref())?);
//!     let mut scope = client.read_scope(job).await?;
//!     let mut bytes = 0u64;
//!     // One batch in memory at a time; erased records come back in `failed`.
//!     while let Some(batch) = scope.next().await? {
//!         bytes += batch.records.iter().map(|r| r.data.len() as u64).sum::<u64>();
//!         for f in &batch.failed {
//!             eprintln!("skipped {}: {}", f.record, f.failure);
//!         }
//!     }
//!     client.close().await;
//!     Ok(bytes)
//! }
//! ```
//!
//! `examples/count_by_kind.rs` is the same job as a program (the demo runs it);
//! docs/job-author.md is the guide (identity, grants, batches, and the build
//! settings a job crate needs).

pub mod blocking;
pub mod client;
pub mod connection;
pub mod error;
pub mod files;
pub mod plan;
pub mod scope;
pub mod seal;
pub mod stream;
pub mod verify;
pub mod zone;

pub use client::{
    Client, FailedRead, IdentityFiles, NewRecord, Page, ReadBatch, ReadFailure, Record,
};
pub use error::ClientError;
pub use plan::BadShare;
pub use scope::ScopeRead;
pub use stream::RecordReader;

// What a job names, from the crates below, so that a job depends on this crate alone.
pub use kakera_config::ClusterConfig;
pub use kakera_net::TlsFiles;
pub use kakera_proto::catalog::{
    Grant, GrantScope, ListFilter, MAX_LIST_PAGE, RecordEntry, RecordRefusal,
};
pub use kakera_proto::record::{Date, RecordId, RecordKind, RecordMeta, SubjectTag};
