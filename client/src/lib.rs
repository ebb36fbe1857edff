//! kakera-client: the library jobs and gateways link ([`Client`]: put, get, list,
//! grants, audit; [`blocking::Client`] for simple jobs) and the `kakera` CLI's
//! building blocks for operators and auditors.

pub mod anonymize;
pub mod bench;
pub mod blocking;
pub mod client;
pub mod connection;
pub mod demo;
pub mod error;
pub mod export;
pub mod ingest;
pub mod linkage;
pub mod pki;
pub mod plan;
pub mod seal;
pub mod ssmix2;
pub mod ssmix2_gen;
pub mod status;
pub mod verify;
pub mod zone;

pub use client::{Client, NewRecord, Page, ReadBatch, Record};
pub use error::ClientError;
pub use plan::BadShare;
