//! kakera-client: the library that jobs and gateways link ([`Client`]: put, get,
//! list, grants, audit; [`blocking::Client`] for simple jobs), with sealing to the
//! zone key ([`seal`], [`zone`]), read planning ([`plan`]) and share verification
//! ([`verify`]). The `kakera` CLI (kakera-cli) and the medical formats
//! (kakera-medical) are built on it; neither is part of it.
//!
//! A complete job is `examples/count_by_kind.rs`; docs/job-author.md is the guide
//! (identity, grants, paging, batches, and the build settings a job crate needs).

pub mod blocking;
pub mod client;
pub mod connection;
pub mod error;
pub mod files;
pub mod plan;
pub mod seal;
pub mod verify;
pub mod zone;

pub use client::{Client, NewRecord, Page, ReadBatch, Record};
pub use error::ClientError;
pub use plan::BadShare;
