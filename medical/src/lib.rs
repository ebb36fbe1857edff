//! kakera-medical: the medical formats kakera stores and the tools around them, on
//! top of kakera-client. SS-MIX2 standard storage trees ([`ssmix2`], [`ingest`]),
//! files of any kind ([`files`]),
//! synthetic trees for demos and tests ([`ssmix2_gen`]), the linkage key that turns
//! a facility's patient id into a subject tag ([`linkage`]), and the anonymization
//! job's pure logic ([`anonymize`]). Nothing here talks to a node except through
//! [`kakera_client::Client`].

pub mod anonymize;
pub mod error;
pub mod fhir;
pub mod fhir_gen;
pub mod files;
pub mod ingest;
pub mod linkage;
pub mod ssmix2;
pub mod ssmix2_gen;
pub mod store;

pub use error::MedicalError;
