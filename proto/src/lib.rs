//! kakera-proto: what crosses the wire between kakera clients and nodes.
//!
//! - [`codec`]: the one encoding module (format-version byte + bincode 2.0, with an
//!   allocation limit);
//! - [`frame`]: length-prefixed frames with a hard size limit;
//! - [`message`]: requests, responses and the operation each request asks for;
//! - [`identity`]: roles and zones read from certificates;
//! - [`ids`]: Raft member ids (config node id + incarnation);
//! - [`record`]: record ids, metadata and digests as the catalog holds them;
//! - [`catalog`]: committed records, grants and tickets as the Raft catalog holds them;
//! - [`audit`]: audit log entries and their hash chain;
//! - [`auth`]: the role x operation matrix;
//! - [`replica`]: the benchmark baseline's plain copies (benchmark clusters only).
//!
//! Depends on neither openraft nor RocksDB, so the client's build stays small.

pub mod audit;
pub mod auth;
pub mod backup;
pub mod catalog;
pub mod codec;
pub mod committee;
pub mod error;
pub mod frame;
pub mod identity;
pub mod ids;
pub mod message;
pub mod record;
pub mod replica;
pub mod revocation;

pub use error::{ProtoError, Result};
pub use identity::{Fingerprint, Identity, Role};
pub use message::{
    ErrorKind, ErrorReply, FetchedShare, HeldShare, NodeHealth, NodeStatus, NodeUsage, Operation,
    RaftStatus, RepairBatchSession, RepairProgress, RepairSession, RepairTermItem, Request,
    RequestEnvelope, RequestId, Response, ScrubStatus, ShareCheck, ShareProbe, StageItem,
    TicketEach,
};
pub use record::{Date, Digest, RecordId, RecordKind, RecordMeta, SubjectTag};
