//! kakera-cli: the `kakera` command for operators, auditors and gateways, and the
//! pieces it is built from: the cluster CA ([`pki`]), the status verdict
//! ([`status`]), signed audit exports ([`export`]), review committee keys
//! ([`committee`]), the demo ([`demo`]) and the
//! cluster benchmark ([`bench`]). Jobs link kakera-client, not this crate.

pub mod bench;
pub mod committee;
pub mod demo;
pub mod error;
pub mod export;
pub mod pki;
pub mod status;

pub use error::CliError;
