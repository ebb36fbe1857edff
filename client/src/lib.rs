//! kakera-client: the library jobs and gateways link (the data path arrives with it)
//! and the `kakera` CLI's building blocks for operators and auditors.

pub mod connection;
pub mod error;
pub mod pki;
pub mod seal;
pub mod status;
pub mod zone;

pub use error::ClientError;
