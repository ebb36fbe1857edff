//! The data path as jobs and gateways use it: put and get records, list them, and the
//! grant and audit calls. Follows the write and read paths of docs/design/paths.md:
//!
//! - put: ids, placement (kakera-config), HPKE seal to the zone key, split k of n,
//!   stage each share on its node (all nodes in parallel, many records per message,
//!   digests checked), then one commit per batch through the leader;
//! - get: a read ticket committed through the leader (the audit entry), k shares
//!   fetched with a hedge to one more holder ([`crate::plan`]), each share checked
//!   against its catalog digest, combined, the sealed digest checked, opened with the
//!   zone private key. A bad share is skipped and reported.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kakera_config::{ClusterConfig, NodeView, place};
use kakera_net::{NetError, TlsFiles};
use kakera_proto::audit::{AuditEntry, AuditQuery, ChainBreak, MAX_AUDIT_PAGE, verify_chain};
use kakera_proto::backup::PartState;
use kakera_proto::catalog::{
    EraseTarget, Grant, Holder, ListFilter, MAX_BATCH_RECORDS, MAX_GRANT_PAGE, MAX_LIST_PAGE,
    MAX_RECORD_BYTES, RecordEntry, RecordRefusal, RecordState, Ticket, Tombstone,
};
use kakera_proto::{
    Digest, ErrorKind, FetchedShare, Identity, RecordId, RecordMeta, Request, Response, StageItem,
    SubjectTag, ids,
};
use kakera_shamir::Share;
use zeroize::Zeroizing;

use crate::connection::Connection;

/// A page of the audit log: entries, where the next page starts, the log's head.
type AuditPage = (Vec<AuditEntry>, Option<u64>, Option<(u64, [u8; 32])>);
use crate::error::ClientError;
use crate::plan::{Asks, BadShare, ReadPlan};
use crate::seal::{self, ZonePrivateKey, ZonePublicKey};

/// Most sealed bytes one put batch carries before the client starts another commit.
pub const PUT_BATCH_BYTES: u64 = 64 * 1024 * 1024;
/// Most share bytes in one staging or fetch request (a single larger share goes
/// alone).
pub const REQUEST_BYTES: u64 = 16 * 1024 * 1024;
/// How long the client keeps looking for the leader.
pub const LEADER_DEADLINE_MS: u64 = 20_000;
/// How long one leader request (a commit, a ticket, a listing page) may take.
pub const LEADER_TIMEOUT_MS: u64 = 5_000;
/// Base timeout of one request; transfers add time per byte.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;

/// How long a put keeps asking a holder that does not answer (a node restarting)
/// before it fails; capped at a quarter of the staging lifetime.
pub const STAGE_RETRY_MS: u64 = 30_000;
/// How long a read spends reporting the bad shares it found to the leader.
pub const REPORT_DEADLINE_MS: u64 = 2_000;

/// Records whose segment count a batch read asks the leader for at once (only
/// records that did not open as whole records).
const MARK_SEGMENTED_ASKS: usize = 16;

/// How often [`Client::backup`] asks the nodes how their parts stand.
pub const BACKUP_POLL_MS: u64 = 500;

/// Where the parts of a backup stand, as [`Client::backup`] last saw them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupReport {
    /// The backup.
    pub backup: kakera_proto::backup::BackupId,
    /// The log index of its entry: every part is the state right after it.
    pub log_index: u64,
    /// Its directory under the config's `[backup] root`.
    pub dir: String,
    /// One per configured node.
    pub parts: Vec<BackupPartReport>,
}

/// One node's part.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupPartReport {
    /// The node.
    pub node: u64,
    /// Its name.
    pub name: String,
    /// Its rack (the part is under `<dir>/<rack>/<name>`).
    pub rack: String,
    /// What the node said last.
    pub state: PartState,
    /// Why the node could not be asked, at the last attempt.
    pub unreachable: Option<String>,
}

impl BackupReport {
    /// Whether every node wrote its part.
    pub fn complete(&self) -> bool {
        self.parts
            .iter()
            .all(|p| matches!(p.state, PartState::Done(_)))
    }
}

/// A record to store.
#[derive(Clone)]
pub struct NewRecord {
    /// Its metadata (visible to every node; bound into the seal).
    pub meta: RecordMeta,
    /// Its bytes (plaintext; sealed before they leave the process).
    pub data: Vec<u8>,
}

/// A record read back.
pub struct Record {
    /// The record.
    pub id: RecordId,
    /// Its metadata.
    pub meta: RecordMeta,
    /// Its bytes, wiped from memory when dropped.
    pub data: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print record bytes.
        write!(
            f,
            "Record {{ id: {}, kind: {}, len: {} }}",
            self.id,
            self.meta.kind,
            self.data.len()
        )
    }
}

/// Why one record of a read was not returned: a value a job can match on, with
/// the record's id beside it in [`FailedRead`]. Never holds record or share bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadFailure {
    /// The cluster left it out of the ticket: erased (P6), not in the catalog, or
    /// outside the grant's scope ([`Client::get_batch_each`] and scope reads only;
    /// [`Client::get_batch`] refuses the whole ticket instead).
    Refused(RecordRefusal),
    /// Fewer good shares than the threshold could be fetched (nodes down, shares
    /// bad: see [`ReadBatch::bad_shares`]).
    TooFewShares {
        /// Good shares fetched.
        good: usize,
        /// Shares needed (the record's k).
        needed: usize,
    },
    /// The shares combined (or the replica read) to bytes that do not match the
    /// catalog digest.
    DigestMismatch,
    /// The sealed record could not be opened (wrong zone key, damaged envelope).
    Open(String),
    /// The record is stored as segments (larger than one segment): read it with
    /// [`Client::get_stream`], which holds one segment at a time.
    Segmented {
        /// Its segments.
        segments: u32,
    },
}

impl std::fmt::Display for ReadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadFailure::Refused(why) => write!(f, "{why}"),
            ReadFailure::TooFewShares { good, needed } => write!(
                f,
                "only {good} good shares of the {needed} needed could be fetched"
            ),
            ReadFailure::DigestMismatch => {
                f.write_str("the combined record does not match its catalog digest")
            }
            ReadFailure::Open(why) => write!(f, "opening the sealed record failed: {why}"),
            ReadFailure::Segmented { segments } => write!(
                f,
                "the record is stored as {segments} segments; read it as a stream \
                 (Client::get_stream, or kakera get)"
            ),
        }
    }
}

/// A record a read did not return, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRead {
    /// The record.
    pub record: RecordId,
    /// Why.
    pub failure: ReadFailure,
}

impl From<FailedRead> for ClientError {
    fn from(f: FailedRead) -> ClientError {
        ClientError::Read {
            record: f.record,
            failure: f.failure,
        }
    }
}

/// What a batch read produced.
#[derive(Debug, Default)]
pub struct ReadBatch {
    /// Records read, in request order.
    pub records: Vec<Record>,
    /// Records that could not be read, and why.
    pub failed: Vec<FailedRead>,
    /// Shares skipped as bad (the reads still succeeded if k good ones existed).
    pub bad_shares: Vec<BadShare>,
    /// The read ticket(s) used (their audit entries).
    pub tickets: Vec<u64>,
}

/// A page of a listing.
#[derive(Debug)]
pub struct Page {
    /// Catalog entries.
    pub entries: Vec<RecordEntry>,
    /// Where the next page starts.
    pub next: Option<RecordId>,
}

/// A job's or a tool's identity: its certificate and private key (PEM files). The
/// cluster's CA comes from the config.
#[derive(Debug, Clone)]
pub struct IdentityFiles {
    /// The certificate (PEM).
    pub cert: std::path::PathBuf,
    /// Its private key (PEM).
    pub key: std::path::PathBuf,
}

impl IdentityFiles {
    /// The TLS files for `config`: this identity and the config's CA.
    pub fn tls(&self, config: &ClusterConfig) -> TlsFiles {
        TlsFiles {
            ca: config.ca_cert.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

/// A connection to a cluster with one identity.
pub struct Client {
    conn: Connection,
    zone_public: Option<ZonePublicKey>,
    zone_private: Option<ZonePrivateKey>,
    /// The config node id of the last node that answered as leader.
    leader_hint: AtomicU64,
}

fn timeout_for(bytes: u64) -> Duration {
    // 10 s, plus one second per 16 MiB (loopback moves far more; WANs less).
    Duration::from_millis(REQUEST_TIMEOUT_MS + bytes / (16 * 1024))
}

fn random_id(now_ms: u64) -> Result<RecordId, ClientError> {
    let mut random = [0u8; 10];
    getrandom::fill(&mut random)
        .map_err(|e| ClientError::Invalid(format!("the OS random source failed: {e}")))?;
    Ok(RecordId::from_parts(now_ms, random))
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Splits `items` into consecutive groups of at most `max_items` and about
/// `max_bytes` (an item larger than `max_bytes` forms a group alone).
fn groups<T>(
    items: Vec<T>,
    max_items: usize,
    max_bytes: u64,
    size: impl Fn(&T) -> u64,
) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0u64;
    for item in items {
        let s = size(&item);
        if !current.is_empty() && (current.len() == max_items || bytes + s > max_bytes) {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += s;
        current.push(item);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// How a put protects its records.
#[derive(Clone)]
pub(crate) enum Protection {
    /// Sealed to the zone key and split k of n (every real record).
    Shared(ZonePublicKey),
    /// The benchmark baseline: plain copies, one per rack, threshold 1, as many as
    /// the config's `[baseline] plain_replicas`. Benchmark builds only.
    #[cfg(feature = "bench-baseline")]
    Plain,
}

impl Protection {
    /// The zone key a shared put seals to; `None` for the baseline's replicas.
    fn zone(&self) -> Option<&ZonePublicKey> {
        match self {
            Protection::Shared(zone) => Some(zone),
            #[cfg(feature = "bench-baseline")]
            Protection::Plain => None,
        }
    }
}

/// What one record's put prepared: its catalog entry and its shares by node.
pub(crate) struct Prepared {
    pub(crate) entry: RecordEntry,
    pub(crate) shares: Vec<(u64, Vec<u8>)>,
}

impl Client {
    /// Connects with the identity in `tls` (certificate, key, cluster CA). Ingest
    /// clients seal to the config's zone public key; readers add the zone private key
    /// with [`Client::with_zone_key`]. Must run inside a tokio runtime.
    pub fn connect(config: ClusterConfig, tls: &TlsFiles) -> Result<Client, ClientError> {
        let zone_public = config
            .zone_public_key
            .map(ZonePublicKey::from_bytes)
            .transpose()?;
        let first = config.nodes.first().map_or(0, |n| n.id);
        Ok(Client {
            conn: Connection::open(config, tls)?,
            zone_public,
            zone_private: None,
            leader_hint: AtomicU64::new(first),
        })
    }

    /// Connects as the certificate and key in `identity`, trusting the CA the config
    /// names (`ca_cert`): what a job needs. Must run inside a tokio runtime.
    pub fn connect_as(
        config: ClusterConfig,
        identity: &IdentityFiles,
    ) -> Result<Client, ClientError> {
        let tls = identity.tls(&config);
        Client::connect(config, &tls)
    }

    /// Adds the zone private key (inside the high-security zone only).
    pub fn with_zone_key(mut self, key: ZonePrivateKey) -> Client {
        self.zone_private = Some(key);
        self
    }

    /// Who this client is, as its certificate says.
    pub fn identity(&self) -> &Identity {
        self.conn.identity()
    }

    /// The cluster config.
    pub fn config(&self) -> &ClusterConfig {
        self.conn.config()
    }

    /// Most records per request: the cluster's `max_batch_records`.
    pub fn batch_records(&self) -> usize {
        (self.config().limits.max_batch_records as usize).clamp(1, MAX_BATCH_RECORDS)
    }

    /// The underlying connection (status calls).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.conn.close().await;
    }

    /// Sends `body` to the leader, following not-leader answers and trying other
    /// nodes while none answers, for up to [`LEADER_DEADLINE_MS`].
    pub async fn leader_call(&self, body: Request) -> Result<Response, ClientError> {
        self.leader_call_until(
            body,
            Instant::now() + Duration::from_millis(LEADER_DEADLINE_MS),
        )
        .await
    }

    /// [`Client::leader_call`] that starts no attempt after `deadline`.
    pub(crate) async fn leader_call_until(
        &self,
        body: Request,
        deadline: Instant,
    ) -> Result<Response, ClientError> {
        let nodes: Vec<u64> = self.config().nodes.iter().map(|n| n.id).collect();
        let mut target = self.leader_hint.load(Ordering::Relaxed);
        // Bounded by the deadline; each failed round sleeps.
        loop {
            let result = self
                .conn
                .call(
                    target,
                    body.clone(),
                    Duration::from_millis(LEADER_TIMEOUT_MS),
                )
                .await;
            let next = match &result {
                Ok(_) => {
                    self.leader_hint.store(target, Ordering::Relaxed);
                    return Ok(result?);
                }
                Err(NetError::Refused {
                    kind: ErrorKind::NotLeader { leader_id },
                    ..
                }) => match leader_id.map(ids::node_of) {
                    Some(l) if l != target && nodes.contains(&l) => Some(l),
                    _ => None,
                },
                Err(NetError::Refused {
                    kind: ErrorKind::Unavailable | ErrorKind::Busy,
                    ..
                }) => None,
                Err(e) if e.is_unreachable() => None,
                Err(_) => return Ok(result?),
            };
            if Instant::now() >= deadline {
                return Err(ClientError::Unavailable(format!(
                    "no leader answered in time (last: {})",
                    result.err().map_or_else(String::new, |e| e.to_string())
                )));
            }
            target = match next {
                Some(l) => l,
                None => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let i = nodes.iter().position(|n| *n == target).unwrap_or(0);
                    nodes[(i + 1) % nodes.len()]
                }
            };
        }
    }

    /// Stores one record; returns its id once it is committed.
    pub async fn put(&self, record: NewRecord) -> Result<RecordId, ClientError> {
        let ids = self.put_batch(vec![record]).await?;
        // put_batch returns one id per record.
        Ok(ids[0])
    }

    /// Stores records; returns their ids (in order) once all are committed. Large
    /// batches go as several commits of at most [`MAX_BATCH_RECORDS`] records and
    /// about [`PUT_BATCH_BYTES`].
    pub async fn put_batch(&self, records: Vec<NewRecord>) -> Result<Vec<RecordId>, ClientError> {
        let now = unix_ms();
        let with_ids = records
            .into_iter()
            .map(|r| Ok((random_id(now)?, r)))
            .collect::<Result<Vec<_>, ClientError>>()?;
        self.put_batch_with_ids(with_ids).await
    }

    /// A fresh record id (creation time in ms and 80 random bits), for callers that
    /// must know a record's id before its put completes: a job that logs what it is
    /// about to store, a test history.
    pub fn new_record_id() -> Result<RecordId, ClientError> {
        random_id(unix_ms())
    }

    /// Like [`Client::put_batch`] with ids the caller drew by
    /// [`Client::new_record_id`]. An id used twice in the batch is refused; an id
    /// already committed is refused by the leader and nothing of its batch commits.
    pub async fn put_batch_with_ids(
        &self,
        records: Vec<(RecordId, NewRecord)>,
    ) -> Result<Vec<RecordId>, ClientError> {
        let zone = self.zone_public_key()?;
        self.put_protected(records, Protection::Shared(zone)).await
    }

    /// The zone's public key from the config, which every put seals to.
    pub(crate) fn zone_public_key(&self) -> Result<ZonePublicKey, ClientError> {
        self.zone_public.clone().ok_or_else(|| {
            ClientError::Invalid(
                "the cluster config has no zone_public_key; run `kakera zone keygen` and add \
                 the key to the config"
                    .into(),
            )
        })
    }

    /// The benchmark baseline's put (`kakera bench`): stores each record as plain
    /// copies, one per rack, through the same staging, commit and Raft path as
    /// [`Client::put_batch_with_ids`] but neither sealed nor split. The records have
    /// no secrecy; only a benchmark cluster (`[baseline] plain_replicas` in its config)
    /// takes them, and the client refuses before sending anything elsewhere. They read
    /// back through [`Client::get_batch`] like any record. Only in builds with the
    /// `bench-baseline` feature, which release packages do not have.
    #[cfg(feature = "bench-baseline")]
    pub async fn put_plain_replicas(
        &self,
        records: Vec<(RecordId, NewRecord)>,
    ) -> Result<Vec<RecordId>, ClientError> {
        self.plain_replicas_taken()?;
        self.put_protected(records, Protection::Plain).await
    }

    /// Refuses the baseline's plain replicas unless this is a benchmark cluster.
    #[cfg(feature = "bench-baseline")]
    pub(crate) fn plain_replicas_taken(&self) -> Result<(), ClientError> {
        if self.config().plain_replicas.is_none() {
            return Err(ClientError::Invalid(
                "this cluster takes no plain replicas: they exist only on benchmark clusters \
                 ([baseline] plain_replicas in the config)"
                    .into(),
            ));
        }
        Ok(())
    }

    pub(crate) async fn put_protected(
        &self,
        records: Vec<(RecordId, NewRecord)>,
        protection: Protection,
    ) -> Result<Vec<RecordId>, ClientError> {
        let mut seen = std::collections::BTreeSet::new();
        if let Some((id, _)) = records.iter().find(|(id, _)| !seen.insert(*id)) {
            return Err(ClientError::Invalid(format!(
                "record id {id} appears twice in one batch"
            )));
        }
        let max_record_bytes = self.config().limits.max_record_bytes.min(MAX_RECORD_BYTES);
        for (_, r) in &records {
            r.meta.validate()?;
            if r.meta.kind == kakera_proto::RecordKind::Segment {
                return Err(ClientError::Invalid(
                    "'segment' is the kind of a record's parts; give the record's own kind".into(),
                ));
            }
            if r.data.len() as u64 > max_record_bytes {
                return Err(ClientError::Invalid(format!(
                    "a record of {} bytes exceeds this cluster's limit of {max_record_bytes} \
                     bytes for a record put whole (max_record_bytes in [limits]); put it as a \
                     stream (Client::put_stream), which stores it as segments",
                    r.data.len()
                )));
            }
        }
        let mut ids = Vec::with_capacity(records.len());
        let batches = groups(records, self.batch_records(), PUT_BATCH_BYTES, |(_, r)| {
            r.data.len() as u64
        });
        for batch in batches {
            ids.extend(self.put_one_batch(&protection, batch).await?);
        }
        Ok(ids)
    }

    async fn put_one_batch(
        &self,
        protection: &Protection,
        records: Vec<(RecordId, NewRecord)>,
    ) -> Result<Vec<RecordId>, ClientError> {
        let config = self.config().clone();
        let protection = protection.clone();
        let accepting = self.accepting_nodes().await;
        let prepared =
            tokio::task::spawn_blocking(move || prepare(&config, &accepting, &protection, records))
                .await
                .map_err(|e| ClientError::Invalid(format!("sealing task failed: {e}")))??;
        let staging_started = Instant::now();
        let entries = self.stage_prepared(prepared, staging_started).await?;
        // Nodes delete staged shares no commit claimed within the staging lifetime;
        // a commit that landed later could name shares already gone. So no commit
        // attempt starts after half the lifetime: the put fails, nothing of it is
        // committed, and the caller may put the records again.
        let commit_by = self.commit_by(staging_started)?;
        kakera_net::crash::point("client.put.staged");
        let ids: Vec<RecordId> = entries.iter().map(|e| e.id).collect();
        match self
            .leader_call_until(Request::CommitRecords { records: entries }, commit_by)
            .await?
        {
            Response::Committed { .. } => {
                kakera_net::crash::point("client.put.committed");
                Ok(ids)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// The last moment a commit of shares staged from `staging_started` may start
    /// (half the staging lifetime, and the leader deadline), or the error of a put
    /// that staged too slowly.
    pub(crate) fn commit_by(&self, staging_started: Instant) -> Result<Instant, ClientError> {
        let ttl_ms = self.config().staging.ttl_ms;
        let commit_by = (staging_started + Duration::from_millis(ttl_ms / 2))
            .min(Instant::now() + Duration::from_millis(LEADER_DEADLINE_MS));
        if Instant::now() >= commit_by {
            return Err(ClientError::Unavailable(format!(
                "staging took longer than half the staging lifetime ({ttl_ms} ms); nothing \
                 was committed, put the records again"
            )));
        }
        Ok(commit_by)
    }

    /// Stages every share of `prepared` on its node (all nodes in parallel), each
    /// acknowledged with the digest the entry names; returns the entries to commit.
    /// A holder that does not answer is asked again until [`STAGE_RETRY_MS`] (at
    /// most a quarter of the staging lifetime) after `staging_started`.
    pub(crate) async fn stage_prepared(
        &self,
        prepared: Vec<Prepared>,
        staging_started: Instant,
    ) -> Result<Vec<RecordEntry>, ClientError> {
        // Shares by node, in record order.
        let mut by_node: BTreeMap<u64, Vec<(RecordId, Vec<u8>)>> = BTreeMap::new();
        let mut entries = Vec::with_capacity(prepared.len());
        for p in prepared {
            for (node, share) in p.shares {
                by_node.entry(node).or_default().push((p.entry.id, share));
            }
            entries.push(p.entry);
        }
        let expected: BTreeMap<(u64, RecordId), Digest> = entries
            .iter()
            .flat_map(|e| e.holders.iter().map(move |h| ((h.node, e.id), h.digest)))
            .collect();
        // A holder that is restarting or busy is asked again, with the same shares
        // (staging is idempotent), until it answers or STAGE_RETRY_MS pass.
        let retry_until = staging_started
            + Duration::from_millis(STAGE_RETRY_MS.min(self.config().staging.ttl_ms / 4));
        let mut work = Vec::new();
        for (node, shares) in by_node {
            for group in groups(shares, self.batch_records(), REQUEST_BYTES, |s| {
                s.1.len() as u64
            }) {
                work.push((node, group));
            }
        }
        let mut sends: FuturesUnordered<_> = work
            .iter()
            .map(|(node, group)| self.stage_on_retrying(*node, group, &expected, retry_until))
            .collect();
        // Every share must be staged before the commit.
        while let Some(result) = sends.next().await {
            result?;
        }
        drop(sends);
        Ok(entries)
    }

    /// [`Client::stage_on`], asked again while the node is unreachable, unavailable
    /// or busy, until `until`.
    pub(crate) async fn stage_on_retrying(
        &self,
        node: u64,
        shares: &[(RecordId, Vec<u8>)],
        expected: &BTreeMap<(u64, RecordId), Digest>,
        until: Instant,
    ) -> Result<(), ClientError> {
        let mut pause_ms = 100u64;
        // Bounded by `until`; each failed attempt sleeps.
        loop {
            match self.stage_on(node, shares, expected).await {
                Err(ClientError::Net(e)) if e.is_transient() && Instant::now() < until => {
                    tracing::debug!(node, error = %e, "staging: node not answering; asking again");
                    tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                    pause_ms = (pause_ms * 2).min(1_000);
                }
                other => return other,
            }
        }
    }

    async fn stage_on(
        &self,
        node: u64,
        shares: &[(RecordId, Vec<u8>)],
        expected: &BTreeMap<(u64, RecordId), Digest>,
    ) -> Result<(), ClientError> {
        let items: Vec<StageItem> = shares
            .iter()
            .map(|(record, s)| StageItem {
                record: *record,
                size_bytes: s.len() as u64,
            })
            .collect();
        // The shares go out one after the other as the trailer: never copied into
        // one buffer first.
        let parts: Vec<&[u8]> = shares.iter().map(|(_, s)| s.as_slice()).collect();
        let timeout = timeout_for(parts.iter().map(|p| p.len() as u64).sum());
        let (answer, _) = self
            .conn
            .call_full(node, Request::StageShares { items }, &parts, 0, timeout)
            .await?;
        let Response::Staged { digests } = answer else {
            return Err(unexpected(&answer));
        };
        if digests.len() != shares.len() {
            return Err(ClientError::Invalid(format!(
                "node {node} acknowledged {} of {} shares",
                digests.len(),
                shares.len()
            )));
        }
        for ((record, _), got) in shares.iter().zip(digests) {
            if expected.get(&(node, *record)) != Some(&got) {
                return Err(ClientError::Invalid(format!(
                    "node {node} acknowledged a different share for record {record} than was sent"
                )));
            }
        }
        Ok(())
    }

    /// Reads one record under `job`'s grant.
    pub async fn get(&self, job: &str, id: RecordId) -> Result<Record, ClientError> {
        let mut batch = self.get_batch(job, &[id]).await?;
        for bad in &batch.bad_shares {
            tracing::warn!(record = %bad.record, node = bad.node, reason = %bad.reason, "bad share skipped");
        }
        if let Some(failed) = batch.failed.pop() {
            return Err(failed.into());
        }
        batch
            .records
            .pop()
            .ok_or_else(|| ClientError::Invalid(format!("record {id} was not returned")))
    }

    /// Reads records under `job`'s grant: one read ticket per [`MAX_BATCH_RECORDS`]
    /// records. A record that cannot be read is in `failed`; the ticket is refused as a
    /// whole (an error) if the grant does not cover every record.
    pub async fn get_batch(&self, job: &str, ids: &[RecordId]) -> Result<ReadBatch, ClientError> {
        let mut opener = self.opener()?;
        let mut out = ReadBatch::default();
        for chunk in ids.chunks(self.batch_records()) {
            let answer = self
                .leader_call(Request::OpenRead {
                    job: job.to_string(),
                    records: chunk.to_vec(),
                })
                .await?;
            let Response::ReadTicket { ticket, entries } = answer else {
                return Err(unexpected(&answer));
            };
            out.tickets.push(ticket.id);
            let failed_before = out.failed.len();
            kakera_net::crash::point("client.get.ticket");
            self.read_under(&mut opener, &ticket, entries, None, &mut out)
                .await;
            self.mark_segmented(ticket.id, &mut out.failed[failed_before..])
                .await;
        }
        Ok(out)
    }

    /// Reads records under `job`'s grant like [`Client::get_batch`], but a record the
    /// grant does not admit (erased meanwhile, not in the catalog, outside the scope)
    /// comes back in `failed` as [`ReadFailure::Refused`] instead of refusing the
    /// ticket; the others are read. A grant that does not admit this reader at all
    /// (none, revoked, expired) is still an error.
    pub async fn get_batch_each(
        &self,
        job: &str,
        ids: &[RecordId],
    ) -> Result<ReadBatch, ClientError> {
        let mut opener = self.opener()?;
        let mut out = ReadBatch::default();
        for chunk in ids.chunks(self.batch_records()) {
            let answer = self
                .leader_call(Request::OpenReadEach {
                    job: job.to_string(),
                    records: chunk.to_vec(),
                })
                .await?;
            let Response::ReadTicketEach(opened) = answer else {
                return Err(unexpected(&answer));
            };
            let kakera_proto::TicketEach {
                ticket,
                entries,
                refused,
            } = *opened;
            out.tickets.push(ticket.id);
            let failed_before = out.failed.len();
            out.failed.extend(refused.into_iter().map(|r| FailedRead {
                record: r.record,
                failure: ReadFailure::Refused(r.why),
            }));
            if !entries.is_empty() {
                self.read_under(&mut opener, &ticket, entries, None, &mut out)
                    .await;
                self.mark_segmented(ticket.id, &mut out.failed[failed_before..])
                    .await;
            }
        }
        Ok(out)
    }

    /// Marks the records of `failed` that did not open because they are stored as
    /// segments (their first segment opens only as a segment): asks the cluster under
    /// `ticket` how many segments each has. Only reads that failed to open ask.
    async fn mark_segmented(&self, ticket: u64, failed: &mut [FailedRead]) {
        let wanted: Vec<(usize, RecordId)> = failed
            .iter()
            .enumerate()
            .filter(|(_, f)| matches!(f.failure, ReadFailure::Open(_)))
            .map(|(i, f)| (i, f.record))
            .collect();
        let mut asks = FuturesUnordered::new();
        let mut answers = Vec::with_capacity(wanted.len());
        // A wrong zone key fails every record of a batch: a few asks at a time.
        for (i, record) in wanted {
            if asks.len() == MARK_SEGMENTED_ASKS
                && let Some(done) = asks.next().await
            {
                answers.push(done);
            }
            asks.push(async move {
                let answer = self
                    .leader_call(Request::Segments {
                        ticket,
                        record,
                        from: 1,
                        limit: 0,
                    })
                    .await;
                (i, answer)
            });
        }
        while let Some(done) = asks.next().await {
            answers.push(done);
        }
        for (i, answer) in answers {
            if let Ok(Response::Segments { count, .. }) = answer
                && count > 1
            {
                failed[i].failure = ReadFailure::Segmented { segments: count };
            }
        }
    }

    /// An opener for one read: records sealed in one put batch share one
    /// encapsulation, decapsulated once.
    pub(crate) fn opener(&self) -> Result<seal::Opener, ClientError> {
        let key = self.zone_private.as_ref().ok_or_else(|| {
            ClientError::Invalid(
                "reading needs the zone private key: load it with `Client::with_zone_key` \
                 (kakera zone unseal)"
                    .into(),
            )
        })?;
        seal::Opener::new(key)
    }

    /// Fetches, checks, combines and opens the records of one ticket. With
    /// `segment`, `entries` is one segment of a record stored as segments, opened
    /// with that binding and the record's metadata.
    pub(crate) async fn read_under(
        &self,
        opener: &mut seal::Opener,
        ticket: &Ticket,
        entries: Vec<RecordEntry>,
        segment: Option<(seal::Binding, &RecordMeta)>,
        out: &mut ReadBatch,
    ) {
        let mut plan = ReadPlan::new(&entries);
        let by_id: BTreeMap<RecordId, &RecordEntry> = entries.iter().map(|e| (e.id, e)).collect();
        let mut good: BTreeMap<RecordId, Vec<Piece>> = BTreeMap::new();
        let mut inflight = FuturesUnordered::new();
        let round_bytes: u64 = entries
            .iter()
            .map(|e| e.sealed_len.saturating_mul(u64::from(e.k)))
            .sum();
        let started = tokio::time::Instant::now();
        let mut first_answer_ms: Option<u64> = None;
        let hedge_at = |first: Option<u64>| {
            let after = Duration::from_millis(crate::plan::hedge_at_ms(first, round_bytes));
            // A deadline past what the clock can express means no hedge: a day.
            started
                .checked_add(after)
                .unwrap_or(started + Duration::from_secs(86_400))
        };
        let hedge = tokio::time::sleep_until(hedge_at(None));
        tokio::pin!(hedge);
        let mut hedged = false;
        // Shares the holders sent that are bad, for the leader (issue 23).
        let mut reports = Vec::new();
        for (node, records) in plan.start() {
            for f in self.fetch_asks(ticket.id, node, records, &by_id) {
                inflight.push(f);
            }
        }
        // Bounded: every ask is answered (or times out) and each record asks at most
        // n holders, so the set drains.
        while !plan.settled() {
            let (node, records, result) = tokio::select! {
                Some(done) = inflight.next() => done,
                () = &mut hedge, if !hedged => {
                    hedged = true;
                    for (node, records) in plan.hedge() {
                        for f in self.fetch_asks(ticket.id, node, records, &by_id) {
                            inflight.push(f);
                        }
                    }
                    continue;
                }
                else => break,
            };
            let mut more = Asks::new();
            match result {
                Err(e) => {
                    for r in &records {
                        merge(
                            &mut more,
                            plan.failed(r, node, format!("node unavailable: {e}")),
                        );
                    }
                }
                Ok((items, data)) => {
                    if first_answer_ms.is_none() {
                        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                        first_answer_ms = Some(ms);
                        hedge.as_mut().reset(hedge_at(first_answer_ms));
                    }
                    for (record, share) in shares_of(&items, data) {
                        let Some(entry) = by_id.get(&record) else {
                            continue;
                        };
                        if plan.complete(&record) {
                            // A hedged answer after k good shares: not needed.
                            plan.good(&record);
                            continue;
                        }
                        let missing = share.is_none();
                        match check_share(entry, node, share) {
                            Ok(s) => {
                                good.entry(record).or_default().push(s);
                                plan.good(&record);
                            }
                            Err(reason) => {
                                // The holder answered: its share itself is bad.
                                reports.push(kakera_proto::catalog::ShareReport {
                                    record,
                                    node,
                                    problem: if missing {
                                        kakera_proto::catalog::ShareProblem::Missing
                                    } else {
                                        kakera_proto::catalog::ShareProblem::Corrupt
                                    },
                                });
                                merge(&mut more, plan.failed(&record, node, reason));
                            }
                        }
                    }
                }
            }
            for (node, records) in more {
                for f in self.fetch_asks(ticket.id, node, records, &by_id) {
                    inflight.push(f);
                }
            }
        }
        out.bad_shares.extend_from_slice(plan.bad_shares());
        self.report_bad_shares(reports).await;
        let cluster_id = self.config().cluster_id.clone();
        for entry in entries {
            let shares = good.remove(&entry.id).unwrap_or_default();
            let (binding, meta) = segment.unwrap_or((seal::Binding::Whole, &entry.meta));
            let result = open_record(opener, &cluster_id, &entry, binding, meta, shares);
            match result {
                Ok(data) => out.records.push(Record {
                    id: entry.id,
                    meta: entry.meta,
                    data,
                }),
                Err(failure) => out.failed.push(FailedRead {
                    record: entry.id,
                    failure,
                }),
            }
        }
    }

    /// The fetch requests for `records` on `node`, split by size.
    fn fetch_asks<'a>(
        &'a self,
        ticket: u64,
        node: u64,
        records: Vec<RecordId>,
        by_id: &BTreeMap<RecordId, &RecordEntry>,
    ) -> Vec<impl std::future::Future<Output = FetchDone> + 'a> {
        let size = |r: &RecordId| {
            by_id.get(r).map_or(0, |e| {
                e.sealed_len + kakera_shamir::share::SHARE_HEADER_LEN as u64 + 16
            })
        };
        groups(records, self.batch_records(), REQUEST_BYTES, size)
            .into_iter()
            .map(|group| {
                let limit: u64 = group.iter().map(size).sum();
                async move {
                    let body = Request::FetchShares {
                        ticket,
                        records: group.clone(),
                    };
                    let result = self
                        .conn
                        .call_full(node, body, &[], limit, timeout_for(limit))
                        .await
                        .map_err(ClientError::from)
                        .and_then(|(answer, data)| match answer {
                            Response::Shares { items } if items.len() == group.len() => {
                                Ok((items, data))
                            }
                            other => Err(unexpected(&other)),
                        });
                    (node, group, result)
                }
            })
            .collect()
    }

    /// Every node's mode and health as the leader sees them, and repair progress.
    pub async fn topology(
        &self,
    ) -> Result<(Vec<kakera_proto::NodeHealth>, kakera_proto::RepairProgress), ClientError> {
        match self.leader_call(Request::Topology).await? {
            Response::Topology { nodes, repair } => Ok((nodes, repair)),
            other => Err(unexpected(&other)),
        }
    }

    /// Takes a cluster backup into `dir` (under the config's `[backup] root`, on every
    /// node): one Raft entry, then every node's part is awaited until it is written
    /// or failed, or `timeout` passes. The report says where each part stands.
    pub async fn backup(&self, dir: &str, timeout: Duration) -> Result<BackupReport, ClientError> {
        kakera_proto::backup::validate_backup_dir(dir)?;
        let answer = self
            .leader_call(Request::Backup {
                dir: dir.to_string(),
            })
            .await?;
        let Response::BackupStarted { backup, log_index } = answer else {
            return Err(unexpected(&answer));
        };
        let deadline = Instant::now() + timeout;
        let nodes = self.config().nodes.clone();
        let mut parts: Vec<BackupPartReport> = nodes
            .iter()
            .map(|n| BackupPartReport {
                node: n.id,
                name: n.name.clone(),
                rack: n.rack.clone(),
                state: PartState::Unknown,
                unreachable: None,
            })
            .collect();
        // Bounded by the deadline; each round sleeps.
        loop {
            let waiting: Vec<usize> = (0..parts.len())
                .filter(|&i| !matches!(parts[i].state, PartState::Done(_) | PartState::Failed(_)))
                .collect();
            if waiting.is_empty() || Instant::now() >= deadline {
                break;
            }
            let asks = waiting.iter().map(|&i| {
                let node = parts[i].node;
                async move {
                    let answer = self
                        .conn
                        .call(
                            node,
                            Request::BackupStatus { backup },
                            Duration::from_millis(LEADER_TIMEOUT_MS),
                        )
                        .await;
                    (i, answer)
                }
            });
            for (i, answer) in futures::future::join_all(asks).await {
                match answer {
                    Ok(Response::BackupPart(state)) => {
                        parts[i].state = *state;
                        parts[i].unreachable = None;
                    }
                    Ok(other) => parts[i].unreachable = Some(unexpected(&other).to_string()),
                    Err(e) => parts[i].unreachable = Some(e.to_string()),
                }
            }
            tokio::time::sleep(Duration::from_millis(BACKUP_POLL_MS)).await;
        }
        Ok(BackupReport {
            backup,
            log_index,
            dir: dir.to_string(),
            parts,
        })
    }

    /// The nodes that take new shares (active and alive, by the leader), asked before
    /// every batch: a drain takes effect for the next batch (a list kept for even a
    /// second placed shares on a node drained within it); every configured node if
    /// the leader cannot say (the leader's placement check and staging still refuse
    /// what cannot work).
    pub(crate) async fn accepting_nodes(&self) -> Vec<u64> {
        match self.topology().await {
            Ok((nodes, _)) => placeable(&nodes, usize::from(self.config().policy.n)),
            Err(e) => {
                tracing::debug!(error = %e, "no topology from the leader; placing on every node");
                self.config().nodes.iter().map(|n| n.id).collect()
            }
        }
    }

    /// Sets a node's mode (operator): drain, decommission, or back to active.
    pub async fn set_node_mode(
        &self,
        node: u64,
        mode: kakera_proto::catalog::NodeMode,
        reason: &str,
    ) -> Result<(), ClientError> {
        let body = Request::SetNodeMode {
            node,
            mode,
            reason: reason.to_string(),
        };
        match self.leader_call(body).await? {
            Response::Accepted => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends `body` to every configured node at once; each node's answer.
    async fn ask_every_node(
        &self,
        body: Request,
    ) -> Vec<(u64, Result<Response, kakera_net::NetError>)> {
        let asks = self.config().nodes.iter().map(|n| {
            let body = body.clone();
            async move { (n.id, self.conn.call(n.id, body, timeout_for(0)).await) }
        });
        futures::future::join_all(asks).await
    }

    /// Checks that records are gone from every node (auditor; see
    /// [`crate::verify::judge_erasure`]): opens an erasure-check ticket (so the check is
    /// in the audit log) and asks every node whether it stores anything of them,
    /// committed or staged. At most [`MAX_BATCH_RECORDS`] per call.
    pub async fn check_erasure(
        &self,
        ids: &[RecordId],
    ) -> Result<Vec<crate::verify::ErasureReport>, ClientError> {
        use crate::verify::{Probe, judge_erasure};
        if ids.is_empty() || ids.len() > self.batch_records() {
            return Err(ClientError::Invalid(format!(
                "check 1 to {} records per call",
                self.batch_records()
            )));
        }
        let answer = self
            .leader_call(Request::OpenErasureCheck {
                records: ids.to_vec(),
            })
            .await?;
        let Response::ReadTicket { ticket, entries } = answer else {
            return Err(unexpected(&answer));
        };
        let live: std::collections::BTreeSet<RecordId> = entries.iter().map(|e| e.id).collect();
        let body = Request::ProbeShares {
            ticket: ticket.id,
            records: ids.to_vec(),
        };
        let mut seen: BTreeMap<RecordId, BTreeMap<u64, Probe>> = BTreeMap::new();
        for (node, answer) in self.ask_every_node(body).await {
            match answer {
                Ok(Response::Probes { items }) if items.len() == ids.len() => {
                    for item in items {
                        seen.entry(item.record).or_default().insert(
                            node,
                            Probe::Answered {
                                committed: item.committed,
                                staged: item.staged,
                            },
                        );
                    }
                }
                other => {
                    let reason = failure_reason(other);
                    for id in ids {
                        seen.entry(*id)
                            .or_default()
                            .insert(node, Probe::Unreachable(reason.clone()));
                    }
                }
            }
        }
        Ok(ids
            .iter()
            .map(|id| {
                judge_erasure(
                    *id,
                    live.contains(id),
                    self.config(),
                    &seen.remove(id).unwrap_or_default(),
                )
            })
            .collect())
    }

    /// Verifies records' shares as an auditor (see [`crate::verify`]): opens an audit
    /// ticket (so the run is in the audit log), asks every node to re-read its shares
    /// of them, and with `deep` also fetches every holder's share and checks that they
    /// form one sharing of the sealed digest. At most [`MAX_BATCH_RECORDS`] per call.
    pub async fn verify(
        &self,
        ids: &[RecordId],
        deep: bool,
    ) -> Result<Vec<crate::verify::RecordReport>, ClientError> {
        use crate::verify::{Observation, judge, judge_deep};
        if ids.len() > self.batch_records() {
            return Err(ClientError::Invalid(format!(
                "verify at most {} records per call",
                self.batch_records()
            )));
        }
        let answer = self
            .leader_call(Request::OpenAudit {
                records: ids.to_vec(),
                deep,
            })
            .await?;
        let Response::ReadTicket { ticket, entries } = answer else {
            return Err(unexpected(&answer));
        };
        // Light: every node re-reads what it holds of every record.
        let body = Request::VerifyShares {
            ticket: ticket.id,
            records: ids.to_vec(),
        };
        let mut seen: BTreeMap<RecordId, BTreeMap<u64, Observation>> = BTreeMap::new();
        for (node, answer) in self.ask_every_node(body).await {
            match answer {
                Ok(Response::ShareChecks { items }) if items.len() == ids.len() => {
                    for item in items {
                        let obs = item.held.map_or(Observation::Absent, Observation::Held);
                        seen.entry(item.record).or_default().insert(node, obs);
                    }
                }
                other => {
                    let reason = failure_reason(other);
                    for id in ids {
                        seen.entry(*id)
                            .or_default()
                            .insert(node, Observation::Unreachable(reason.clone()));
                    }
                }
            }
        }
        if !deep {
            let reports: Vec<_> = entries
                .iter()
                .map(|e| judge(e, self.config(), &seen.remove(&e.id).unwrap_or_default()))
                .collect();
            self.report_findings(&reports).await;
            return Ok(reports);
        }
        // Deep: every holder's share, fetched under the deep audit ticket.
        let by_id: BTreeMap<RecordId, &RecordEntry> = entries.iter().map(|e| (e.id, e)).collect();
        let mut per_node: BTreeMap<u64, Vec<RecordId>> = BTreeMap::new();
        for e in &entries {
            for h in &e.holders {
                per_node.entry(h.node).or_default().push(e.id);
            }
        }
        let mut fetches = FuturesUnordered::new();
        for (node, records) in per_node {
            for f in self.fetch_asks(ticket.id, node, records, &by_id) {
                fetches.push(f);
            }
        }
        type Fetched = BTreeMap<u64, Result<Option<Vec<u8>>, String>>;
        let mut fetched: BTreeMap<RecordId, Fetched> = BTreeMap::new();
        while let Some((node, records, result)) = fetches.next().await {
            match result {
                Err(e) => {
                    for r in records {
                        fetched
                            .entry(r)
                            .or_default()
                            .insert(node, Err(e.to_string()));
                    }
                }
                Ok((items, data)) => {
                    for (record, share) in shares_of(&items, data) {
                        fetched.entry(record).or_default().insert(node, Ok(share));
                    }
                }
            }
        }
        drop(fetches);
        let reports: Vec<_> = entries
            .iter()
            .map(|e| {
                judge_deep(
                    e,
                    self.config(),
                    &fetched.remove(&e.id).unwrap_or_default(),
                    &seen.remove(&e.id).unwrap_or_default(),
                )
            })
            .collect();
        self.report_findings(&reports).await;
        Ok(reports)
    }

    /// Reports the missing and corrupt shares an audit found to the leader
    /// ([`Client::report_bad_shares`]).
    async fn report_findings(&self, reports: &[crate::verify::RecordReport]) {
        use crate::verify::Finding;
        use kakera_proto::catalog::{ShareProblem, ShareReport};
        let bad = reports
            .iter()
            .flat_map(|r| {
                r.findings
                    .iter()
                    .filter_map(|f| match f {
                        Finding::Missing { node, .. } => Some((*node, ShareProblem::Missing)),
                        Finding::Corrupt { node, .. } => Some((*node, ShareProblem::Corrupt)),
                        _ => None,
                    })
                    .map(|(node, problem)| ShareReport {
                        record: r.record,
                        node,
                        problem,
                    })
            })
            .collect();
        self.report_bad_shares(bad).await;
    }

    /// A page of catalog entries: at most `limit`, which may not exceed
    /// [`MAX_LIST_PAGE`] (a larger one is refused rather than cut short without a
    /// word); pass the page's `next` back as `after` for the following page.
    pub async fn list(
        &self,
        filter: ListFilter,
        after: Option<RecordId>,
        limit: u32,
    ) -> Result<Page, ClientError> {
        if limit > MAX_LIST_PAGE {
            return Err(ClientError::Invalid(format!(
                "a page holds at most {MAX_LIST_PAGE} entries, not {limit}: follow Page::next \
                 for more (or list_all for a small listing)"
            )));
        }
        match self
            .leader_call(Request::List {
                filter,
                after,
                limit,
            })
            .await?
        {
            Response::Listing { entries, next } => Ok(Page { entries, next }),
            other => Err(unexpected(&other)),
        }
    }

    /// Every catalog entry matching `filter`, page by page, at most `max` of them.
    pub async fn list_all(
        &self,
        filter: ListFilter,
        max: usize,
    ) -> Result<Vec<RecordEntry>, ClientError> {
        let mut out = Vec::new();
        let mut after = None;
        // Bounded by `max` and by the catalog's size (each page advances `after`).
        loop {
            let page = self.list(filter.clone(), after, MAX_LIST_PAGE).await?;
            out.extend(page.entries);
            match page.next {
                Some(n) if out.len() < max => after = Some(n),
                _ => break,
            }
        }
        out.truncate(max);
        Ok(out)
    }

    /// Creates a grant (operator).
    pub async fn create_grant(&self, grant: Grant) -> Result<(), ClientError> {
        match self.leader_call(Request::CreateGrant { grant }).await? {
            Response::Committed { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Creates a grant with the review committee's signatures over its terms
    /// (operator; see `kakera_proto::committee`). Needed when the config names a
    /// committee; the cluster refuses it with fewer than the threshold of valid,
    /// distinct member signatures.
    pub async fn create_signed_grant(
        &self,
        grant: Grant,
        signatures: Vec<kakera_proto::committee::CommitteeSignature>,
    ) -> Result<(), ClientError> {
        match self
            .leader_call(Request::CreateSignedGrant { grant, signatures })
            .await?
        {
            Response::Committed { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Erases records or every record of a subject (operator; P6). A subject
    /// erasure also records the opt-out, so its records are refused from then on.
    /// Repeats the request until nothing of the target remains; returns every record
    /// it erased (records erased before are not listed again).
    pub async fn erase(
        &self,
        target: EraseTarget,
        reason: &str,
    ) -> Result<Vec<RecordId>, ClientError> {
        let mut all = Vec::new();
        // Bounded: each round erases up to MAX_BATCH_RECORDS of the subject's records
        // (it stops when none remain); a record list is one round.
        loop {
            let answer = self
                .leader_call(Request::Erase {
                    target: target.clone(),
                    reason: reason.to_string(),
                })
                .await?;
            let Response::Erased { erased, remaining } = answer else {
                return Err(unexpected(&answer));
            };
            let progressed = !erased.is_empty();
            all.extend(erased);
            kakera_net::crash::point("client.erase.round");
            if !remaining || !progressed {
                return Ok(all);
            }
        }
    }

    /// Every tombstone (of one subject's opt-out, or all), in record id order
    /// (auditor or operator).
    pub async fn tombstones(
        &self,
        subject: Option<SubjectTag>,
    ) -> Result<Vec<Tombstone>, ClientError> {
        let mut out = Vec::new();
        let mut after = None;
        // Bounded by the number of tombstones (each page advances `after`).
        loop {
            let (items, next) = self.tombstones_page(subject, after).await?;
            out.extend(items);
            match next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// One page of [`Client::tombstones`] (at most [`MAX_LIST_PAGE`]), in record id
    /// order after `after`, and where the next page starts: for a walk over every
    /// erasure that holds a page at a time.
    pub async fn tombstones_page(
        &self,
        subject: Option<SubjectTag>,
        after: Option<RecordId>,
    ) -> Result<(Vec<Tombstone>, Option<RecordId>), ClientError> {
        let answer = self
            .leader_call(Request::ListErased {
                subject,
                after,
                limit: MAX_LIST_PAGE,
            })
            .await?;
        match answer {
            Response::Tombstones { items, next } => Ok((items, next)),
            other => Err(unexpected(&other)),
        }
    }

    /// Every record the entry that erased `id` erased, `id` included: a record stored
    /// as segments is erased with all its parts in one entry (so are the records of
    /// one erasure request), and after it nothing in the catalog links them any more
    /// but that entry in the audit log. Empty if `id` is not erased. Needs the audit
    /// log: an auditor's identity (an operator's is refused as forbidden).
    pub async fn erased_with(&self, id: RecordId) -> Result<Vec<RecordId>, ClientError> {
        let answer = self
            .leader_call(Request::ListErased {
                subject: None,
                after: record_before(&id),
                limit: 1,
            })
            .await?;
        let Response::Tombstones { items, .. } = answer else {
            return Err(unexpected(&answer));
        };
        let Some(tomb) = items.into_iter().find(|t| t.id == id) else {
            return Ok(Vec::new());
        };
        // From the erasure on, the entries naming `id` are its erasure and the
        // erasure checks since: the erasing entry comes first.
        let query = AuditQuery {
            record: Some(id),
            since_ms: Some(tomb.at_ms),
            ..AuditQuery::default()
        };
        let (entries, _) = self.audit_log(query, ERASED_WITH_MAX_ENTRIES).await?;
        let mut out: Vec<RecordId> = entries
            .into_iter()
            .filter(|e| {
                e.log_index == tomb.log_index
                    && matches!(e.action, kakera_proto::audit::AuditAction::Erase { .. })
            })
            .flat_map(|e| e.records)
            .collect();
        out.push(id);
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Where records stand (committed, erased, absent) and which of `subjects` opted
    /// out (ingest, operator, auditor). At most [`MAX_BATCH_RECORDS`] of each.
    pub async fn lookup(
        &self,
        records: &[RecordId],
        subjects: &[SubjectTag],
    ) -> Result<(Vec<RecordState>, Vec<SubjectTag>), ClientError> {
        let answer = self
            .leader_call(Request::Lookup {
                records: records.to_vec(),
                subjects: subjects.to_vec(),
            })
            .await?;
        match answer {
            Response::Lookup {
                records: states,
                opted_out,
            } if states.len() == records.len() => Ok((states, opted_out)),
            other => Err(unexpected(&other)),
        }
    }

    /// Revokes a grant (operator).
    pub async fn revoke_grant(&self, job: &str, reason: &str) -> Result<(), ClientError> {
        match self
            .leader_call(Request::RevokeGrant {
                job: job.to_string(),
                reason: reason.to_string(),
            })
            .await?
        {
            Response::Committed { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Tells the leader about shares a read found bad (P3: detected, skipped,
    /// reported and repaired): it audits the report, confirms each with its holder
    /// and repairs the confirmed ones in place. Best effort within
    /// [`REPORT_DEADLINE_MS`]: the read's result does not depend on it, and a share
    /// not reported now is found by the holder's scrubber.
    async fn report_bad_shares(&self, mut reports: Vec<kakera_proto::catalog::ShareReport>) {
        if reports.is_empty() {
            return;
        }
        reports.truncate(kakera_proto::catalog::MAX_SHARE_REPORTS);
        let deadline = Instant::now() + Duration::from_millis(REPORT_DEADLINE_MS);
        match self
            .leader_call_until(Request::ReportShares { reports }, deadline)
            .await
        {
            Ok(Response::Committed { .. }) => {}
            Ok(other) => tracing::info!(answer = ?other, "bad shares not reported"),
            Err(e) => tracing::info!(error = %e, "bad shares not reported"),
        }
    }

    /// Records a certificate revocation list the cluster CA signed (operator):
    /// every node refuses the certificates it lists at the handshake and closes
    /// their connections, and the cluster refuses every command of the
    /// `certificates` given (DER, each listed in the CRL) from this entry on.
    /// Returns the log index that recorded it.
    pub async fn revoke_certificates(
        &self,
        crl: Vec<u8>,
        certificates: Vec<Vec<u8>>,
    ) -> Result<u64, ClientError> {
        match self
            .leader_call(Request::Revoke { crl, certificates })
            .await?
        {
            Response::Committed { log_index } => Ok(log_index),
            other => Err(unexpected(&other)),
        }
    }

    /// Every grant (operator, auditor); a reader gets the grants naming it. Fetched
    /// a page at a time ([`Client::grants_page`]).
    pub async fn grants(&self) -> Result<Vec<Grant>, ClientError> {
        let mut out = Vec::new();
        let mut after = None;
        // Bounded by the number of grants: every page moves `after` forward.
        loop {
            let (page, next) = self.grants_page(after, MAX_GRANT_PAGE).await?;
            out.extend(page);
            match next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// A page of grants in job order after `after` (at most `limit`, itself at most
    /// [`MAX_GRANT_PAGE`]), and the job to pass as `after` for the next page.
    pub async fn grants_page(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> Result<(Vec<Grant>, Option<String>), ClientError> {
        match self
            .leader_call(Request::ListGrantsPage { after, limit })
            .await?
        {
            Response::GrantsPage { grants, next } => Ok((grants, next)),
            other => Err(unexpected(&other)),
        }
    }

    /// One page of audit entries: the entries, where the next page starts, the head.
    async fn audit_page(&self, query: &AuditQuery) -> Result<AuditPage, ClientError> {
        let answer = self
            .leader_call(Request::AuditLog {
                query: query.clone(),
            })
            .await?;
        match answer {
            Response::Audit {
                entries,
                next_after,
                head,
            } => Ok((entries, next_after, head)),
            other => Err(unexpected(&other)),
        }
    }

    /// Audit entries matching `query` (all pages, at most `max`), and the log's head.
    pub async fn audit_log(
        &self,
        mut query: AuditQuery,
        max: usize,
    ) -> Result<(Vec<AuditEntry>, Option<(u64, [u8; 32])>), ClientError> {
        let mut out = Vec::new();
        let mut head = None;
        query.limit = MAX_AUDIT_PAGE;
        // Bounded by `max` and the log's length (each page advances `after_seq`).
        loop {
            let (entries, next_after, h) = self.audit_page(&query).await?;
            head = head.or(h);
            out.extend(entries);
            match next_after {
                Some(n) if out.len() < max && n > query.after_seq => query.after_seq = n,
                _ => break,
            }
        }
        out.truncate(max);
        Ok((out, head))
    }

    /// Reads the audit log a page at a time and checks its hash chain from the first
    /// entry to the head the first page reported (entries appended meanwhile are
    /// left for the next check). Holds one page in memory, whatever the log's length.
    /// Returns the number of entries checked, or where the chain breaks.
    pub async fn verify_audit_log(&self) -> Result<Result<u64, ChainBreak>, ClientError> {
        let mut query = AuditQuery {
            limit: MAX_AUDIT_PAGE,
            ..AuditQuery::default()
        };
        let mut head: Option<(u64, [u8; 32])> = None;
        let (mut prev, mut seq, mut prev_at) = ([0u8; 32], 0u64, 0u64);
        // Bounded by the head's seq: each page advances `after_seq`.
        loop {
            let (entries, next_after, h) = self.audit_page(&query).await?;
            head = head.or(h);
            let until = head.map_or(0, |(s, _)| s);
            let page: Vec<&AuditEntry> = entries.iter().filter(|e| e.seq <= until).collect();
            if let Some(first) = page.first()
                && first.at_ms < prev_at
            {
                return Ok(Err(ChainBreak::TimeBackwards { seq: first.seq }));
            }
            prev = match verify_chain((prev, seq), page.iter().copied()) {
                Ok(h) => h,
                Err(b) => return Ok(Err(b)),
            };
            if let Some(last) = page.last() {
                seq = last.seq;
                prev_at = last.at_ms;
            }
            match next_after {
                Some(n) if seq < until && n > query.after_seq => query.after_seq = n,
                _ => break,
            }
        }
        match head {
            Some((hs, hash)) if hs == seq && hash == prev => Ok(Ok(seq)),
            None if seq == 0 => Ok(Ok(0)),
            Some((hs, _)) if seq < hs => Ok(Err(ChainBreak::Gap {
                after: seq,
                found: hs,
            })),
            Some((hs, _)) => Ok(Err(ChainBreak::BadLink { seq: hs.max(1) })),
            None => Ok(Err(ChainBreak::Gap {
                after: 0,
                found: seq,
            })),
        }
    }
}

type FetchDone = (
    u64,
    Vec<RecordId>,
    Result<(Vec<FetchedShare>, Vec<u8>), ClientError>,
);

/// Each record of a fetch answer with its share's bytes (the bytes follow the answer
/// in item order), or `None` if the node holds none or the bytes fall short.
/// Audit entries [`Client::erased_with`] reads at most to find an erasing entry.
const ERASED_WITH_MAX_ENTRIES: usize = 1_000;

/// The record id just before `id` in id order (for a listing that starts after it),
/// or `None` for the first possible id.
fn record_before(id: &RecordId) -> Option<RecordId> {
    let n = u128::from_be_bytes(id.0).checked_sub(1)?;
    Some(RecordId(n.to_be_bytes()))
}

/// Each record's share in a node's answer, in the answer's order: the answer's own
/// buffer when it holds that share alone (a large record's share is not copied),
/// else a copy of its part; `None` where the node holds none.
fn shares_of(items: &[FetchedShare], data: Vec<u8>) -> Vec<(RecordId, Option<Vec<u8>>)> {
    if let [item] = items
        && item.size_bytes == Some(data.len() as u64)
    {
        return vec![(item.record, Some(data))];
    }
    let mut offset = 0usize;
    items
        .iter()
        .map(|item| {
            let share = item.size_bytes.and_then(|s| {
                let end = offset.checked_add(usize::try_from(s).ok()?)?;
                let bytes = data.get(offset..end)?;
                offset = end;
                Some(bytes.to_vec())
            });
            (item.record, share)
        })
        .collect()
}

fn merge(into: &mut Asks, more: Asks) {
    for (node, records) in more {
        into.entry(node).or_default().extend(records);
    }
}

/// Why a node's answer is not the one asked for, as a sentence.
fn failure_reason(answer: Result<Response, kakera_net::NetError>) -> String {
    match answer {
        Err(e) => e.to_string(),
        Ok(r) => unexpected(&r).to_string(),
    }
}

pub(crate) fn unexpected(r: &Response) -> ClientError {
    match r {
        Response::Error(e) => ClientError::Invalid(e.message.clone()),
        other => ClientError::Invalid(format!(
            "the node answered with an unexpected message ({})",
            response_name(other)
        )),
    }
}

fn response_name(r: &Response) -> &'static str {
    match r {
        Response::Pong { .. } => "pong",
        Response::Status(_) => "status",
        Response::Raft(_) => "raft",
        Response::Error(_) => "error",
        Response::Accepted => "accepted",
        Response::Staged { .. } => "staged",
        Response::Committed { .. } => "committed",
        Response::ReadTicket { .. } | Response::ReadTicketEach(_) => "read ticket",
        Response::Shares { .. } => "shares",
        Response::ShareChecks { .. } => "share checks",
        Response::Probes { .. } => "probes",
        Response::Topology { .. } => "topology",
        Response::RepairTerm { .. } => "repair term",
        Response::Repaired { .. } => "repaired",
        Response::Listing { .. } => "listing",
        Response::Grants { .. } | Response::GrantsPage { .. } => "grants",
        Response::Audit { .. } => "audit",
        Response::Erased { .. } => "erased",
        Response::Tombstones { .. } => "tombstones",
        Response::Lookup { .. } => "lookup",
        Response::BackupStarted { .. } => "backup started",
        Response::BackupPart(_) => "backup part",
        Response::Scrub(_) => "scrub status",
        Response::RepairedBatch { .. } => "repaired batch",
        Response::RepairTerms { .. } => "repair terms",
        Response::Segments { .. } => "segments",
    }
}

/// A fetched piece of a record that passed its checks.
enum Piece {
    /// A share (every real record).
    Share(Share),
    /// A whole plain copy (a benchmark cluster's baseline record).
    Plain(Zeroizing<Vec<u8>>),
}

/// Checks a fetched share against the catalog: present, digest, decodable, right x and
/// threshold. The reason never contains share bytes.
fn check_share(entry: &RecordEntry, node: u64, bytes: Option<Vec<u8>>) -> Result<Piece, String> {
    let holder: &Holder = entry
        .holder_on(node)
        .ok_or_else(|| format!("node {node} is not a holder of this record"))?;
    let bytes = bytes.ok_or_else(|| "the node holds no share of this record".to_string())?;
    let substituted =
        || "the share's digest differs from the catalog's (corrupt or substituted)".to_string();
    if entry.is_plain_replica() {
        if Digest::of(&bytes) != holder.digest {
            return Err(substituted());
        }
        let data = kakera_proto::replica::decode(&bytes)
            .map_err(|e| format!("the replica does not decode: {e}"))?;
        return Ok(Piece::Plain(Zeroizing::new(data.to_vec())));
    }
    // One pass gives the checksum check and the digest the catalog names. The
    // catalog's digest is of a valid encoding, so one that does not decode differs.
    let (share, digest) = Share::decode_owned(bytes)
        .map_err(|e| format!("the share's digest differs from the catalog's (corrupt: {e})"))?;
    if Digest(digest) != holder.digest {
        return Err(substituted());
    }
    if share.x() != holder.x || share.threshold() != entry.k {
        return Err("the share's x or threshold differs from the catalog's".into());
    }
    Ok(Piece::Share(share))
}

/// Combines k good shares, checks the sealed digest, opens the seal. A plain replica
/// (benchmark baseline) is its own bytes, checked against the same digest.
fn open_record(
    opener: &mut seal::Opener,
    cluster_id: &str,
    entry: &RecordEntry,
    binding: seal::Binding,
    meta: &RecordMeta,
    pieces: Vec<Piece>,
) -> Result<Zeroizing<Vec<u8>>, ReadFailure> {
    let k = usize::from(entry.k);
    let mut shares = Vec::with_capacity(pieces.len());
    for piece in pieces {
        match piece {
            Piece::Share(s) => shares.push(s),
            Piece::Plain(data) => {
                if Digest::of(&data) != entry.sealed_digest || data.len() as u64 != entry.sealed_len
                {
                    return Err(ReadFailure::DigestMismatch);
                }
                return Ok(data);
            }
        }
    }
    if shares.len() < k {
        return Err(ReadFailure::TooFewShares {
            good: shares.len(),
            needed: k,
        });
    }
    // Shares that passed their catalog digests but do not combine (mixed lengths)
    // cannot make the record: to the reader, the same as a digest mismatch.
    let sealed = kakera_shamir::combine(&shares[..k]).map_err(|_| ReadFailure::DigestMismatch)?;
    if Digest::of(&sealed) != entry.sealed_digest || sealed.len() as u64 != entry.sealed_len {
        return Err(ReadFailure::DigestMismatch);
    }
    opener
        .open_bound(cluster_id, &entry.id, meta, binding, &sealed)
        .map_err(|e| ReadFailure::Open(e.to_string()))
}

/// Ids, seal, split and placement for a batch (CPU work; runs off the async threads).
/// `accepting` lists the nodes that take new shares.
fn prepare(
    config: &ClusterConfig,
    accepting: &[u64],
    protection: &Protection,
    records: Vec<(RecordId, NewRecord)>,
) -> Result<Vec<Prepared>, ClientError> {
    let Some(zone) = protection.zone() else {
        #[cfg(feature = "bench-baseline")]
        return prepare_plain(config, accepting, records);
        #[cfg(not(feature = "bench-baseline"))]
        return Err(ClientError::Invalid(
            "no replication baseline in this build".into(),
        ));
    };
    let views = accepting_views(config, accepting);
    let mut out = Vec::with_capacity(records.len());
    // One encapsulation for the batch; each record is sealed under its own key.
    let mut sealer = seal::Sealer::new(zone)?;
    for (id, r) in records {
        let sealed = sealer.seal(&config.cluster_id, &id, &r.meta, &r.data)?;
        out.push(split_sealed(config, &views, id, r.meta, sealed)?);
    }
    Ok(out)
}

/// One segment of a record stored as segments, prepared like a record: sealed with
/// its [`seal::Binding::Segment`] under `record_meta` (the record's), split, placed
/// by its own id; its entry carries `entry_meta` (the record's for the first
/// segment, [`kakera_proto::catalog::segment_meta`] for the parts).
#[allow(clippy::too_many_arguments)] // the parts of one segment, named
pub(crate) fn prepare_segment(
    config: &ClusterConfig,
    accepting: &[u64],
    protection: &Protection,
    id: RecordId,
    record_meta: &RecordMeta,
    entry_meta: RecordMeta,
    binding: seal::Binding,
    data: Vec<u8>,
) -> Result<Prepared, ClientError> {
    let Some(zone) = protection.zone() else {
        // The baseline's replicas: the segment's bytes as a record.
        let record = NewRecord {
            meta: entry_meta,
            data,
        };
        let mut one = prepare(config, accepting, protection, vec![(id, record)])?;
        return one
            .pop()
            .ok_or_else(|| ClientError::Invalid("a replica was not prepared".into()));
    };
    let views = accepting_views(config, accepting);
    let sealed = seal::Sealer::new(zone)?.seal_bound(
        &config.cluster_id,
        &id,
        record_meta,
        binding,
        &data,
    )?;
    // A streamed put holds as few copies of a segment as it can: the plaintext goes
    // once it is sealed, the sealed bytes once they are split.
    drop(data);
    split_sealed(config, &views, id, entry_meta, sealed)
}

/// Splits sealed bytes k of n over the nodes placement picks for `id`; each share
/// is dropped (wiped) as soon as it is encoded.
fn split_sealed(
    config: &ClusterConfig,
    views: &[NodeView<'_>],
    id: RecordId,
    meta: RecordMeta,
    sealed: Vec<u8>,
) -> Result<Prepared, ClientError> {
    let policy = config.policy;
    let nodes = place(&id.0, views, &policy)
        .map_err(|e| ClientError::Invalid(format!("placement: {e}")))?;
    let shares = kakera_shamir::split(&sealed, policy.k, policy.n)
        .map_err(|e| ClientError::Invalid(format!("splitting record {id}: {e}")))?;
    let sealed_len = sealed.len() as u64;
    let sealed_digest = Digest::of(&sealed);
    drop(sealed);
    let mut holders = Vec::with_capacity(shares.len());
    let mut encoded = Vec::with_capacity(shares.len());
    // place() returns n nodes in share order: share x = i + 1 goes to nodes[i].
    for (node, share) in nodes.iter().zip(shares) {
        let (bytes, digest) = share.encode_with_digest();
        holders.push(Holder {
            node: *node,
            x: share.x(),
            digest: Digest(digest),
        });
        encoded.push((*node, bytes));
    }
    Ok(Prepared {
        entry: RecordEntry {
            id,
            meta,
            sealed_len,
            sealed_digest,
            k: policy.k,
            holders,
            committed_at_ms: 0,
        },
        shares: encoded,
    })
}

/// The benchmark baseline's [`prepare`]: each record as plain replicas, one per rack,
/// threshold 1 (the config's plain-replica rules).
#[cfg(feature = "bench-baseline")]
fn prepare_plain(
    config: &ClusterConfig,
    accepting: &[u64],
    records: Vec<(RecordId, NewRecord)>,
) -> Result<Vec<Prepared>, ClientError> {
    let policy = config.policy_for(1).ok_or_else(|| {
        ClientError::Invalid("this cluster takes no plain replicas ([baseline])".into())
    })?;
    let views = accepting_views(config, accepting);
    let mut out = Vec::with_capacity(records.len());
    for (id, r) in records {
        let nodes = place(&id.0, &views, &policy)
            .map_err(|e| ClientError::Invalid(format!("placement: {e}")))?;
        let encoded = kakera_proto::replica::encode(&r.data);
        let digest = Digest::of(&encoded);
        let holders = (1..=policy.n)
            .zip(&nodes)
            .map(|(x, &node)| Holder { node, x, digest })
            .collect();
        out.push(Prepared {
            entry: RecordEntry {
                id,
                meta: r.meta,
                sealed_len: r.data.len() as u64,
                sealed_digest: Digest::of(&r.data),
                k: 1,
                holders,
                committed_at_ms: 0,
            },
            shares: nodes.iter().map(|&n| (n, encoded.clone())).collect(),
        });
    }
    Ok(out)
}

/// The nodes to place new shares on, from the leader's view of `nodes`: active ones
/// that are alive if there are at least `n`; else active ones not called dead (a node
/// slow to answer the leader's probes under load is suspect, not gone); else every
/// active one (a node restarting: staging waits for it).
fn placeable(nodes: &[kakera_proto::NodeHealth], n: usize) -> Vec<u64> {
    let active = || {
        nodes
            .iter()
            .filter(|h| h.mode == kakera_proto::catalog::NodeMode::Active)
    };
    let alive: Vec<u64> = active()
        .filter(|h| h.health == "alive")
        .map(|h| h.node)
        .collect();
    if alive.len() >= n {
        return alive;
    }
    let not_dead: Vec<u64> = active()
        .filter(|h| h.health != "dead")
        .map(|h| h.node)
        .collect();
    if not_dead.len() >= n {
        return not_dead;
    }
    active().map(|h| h.node).collect()
}

/// The placement views of the accepting nodes.
fn accepting_views<'c>(config: &'c ClusterConfig, accepting: &[u64]) -> Vec<NodeView<'c>> {
    config
        .nodes
        .iter()
        .filter(|n| accepting.contains(&n.id))
        .map(|n| NodeView {
            id: n.id,
            rack: &n.rack,
            fill: 0,
        })
        .collect()
}

#[cfg(test)]
mod placeable_tests {
    use super::placeable;
    use kakera_proto::NodeHealth;
    use kakera_proto::catalog::NodeMode;

    fn node(node: u64, mode: NodeMode, health: &str) -> NodeHealth {
        NodeHealth {
            node,
            mode,
            health: health.into(),
            silent_ms: None,
            shares: 0,
        }
    }

    /// P4 (an acknowledged write is kept): new shares go to alive active nodes;
    /// a suspect node is used before a dead one; a draining node never.
    #[test]
    fn shares_are_placed_on_alive_then_suspect_then_any_active_node() {
        let a = NodeMode::Active;
        let mut nodes = vec![
            node(1, a, "alive"),
            node(2, a, "alive"),
            node(3, a, "alive"),
            node(4, NodeMode::Draining, "alive"),
            node(5, a, "suspect"),
            node(6, a, "dead"),
        ];
        assert_eq!(placeable(&nodes, 3), vec![1, 2, 3]);
        assert_eq!(placeable(&nodes, 4), vec![1, 2, 3, 5]);
        assert_eq!(placeable(&nodes, 5), vec![1, 2, 3, 5, 6]);
        nodes[0].health = "unknown".into();
        assert_eq!(placeable(&nodes, 3), vec![1, 2, 3, 5]);
    }
}

#[cfg(test)]
mod tests {
    use super::{groups, shares_of};
    use kakera_proto::RecordId;
    use kakera_proto::message::FetchedShare;

    fn item(id: u8, size_bytes: Option<u64>) -> FetchedShare {
        FetchedShare {
            record: RecordId([id; 16]),
            size_bytes,
        }
    }

    /// A node's answer holding one share alone hands its buffer over (a large
    /// record's share is not copied); an answer of several shares is cut at their
    /// sizes, a share the node lacks is `None`, and sizes past the data give `None`
    /// rather than a panic.
    #[test]
    fn shares_are_cut_from_an_answer_without_copying_a_lone_one() {
        let lone = vec![9u8; 1000];
        let at = lone.as_ptr();
        let got = shares_of(&[item(1, Some(1000))], lone);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.as_ref().map(|v| v.as_ptr()), Some(at));

        let data: Vec<u8> = (0..10).collect();
        let got = shares_of(&[item(1, Some(4)), item(2, None), item(3, Some(6))], data);
        assert_eq!(got[0], (RecordId([1; 16]), Some(vec![0, 1, 2, 3])));
        assert_eq!(got[1], (RecordId([2; 16]), None));
        assert_eq!(got[2], (RecordId([3; 16]), Some(vec![4, 5, 6, 7, 8, 9])));

        let got = shares_of(&[item(1, Some(11))], (0..10).collect());
        assert_eq!(got, vec![(RecordId([1; 16]), None)]);
    }

    #[test]
    fn the_record_before_an_id_is_one_less() {
        use super::record_before;
        assert_eq!(record_before(&RecordId([0; 16])), None);
        let mut one = [0u8; 16];
        one[15] = 1;
        assert_eq!(record_before(&RecordId(one)), Some(RecordId([0; 16])));
        let mut carry = [0u8; 16];
        carry[14] = 1;
        let mut want = [0u8; 16];
        want[15] = 0xff;
        assert_eq!(record_before(&RecordId(carry)), Some(RecordId(want)));
    }

    #[test]
    fn groups_respect_count_and_bytes() {
        let g = groups(vec![5u64, 5, 5, 20, 1, 1], 2, 10, |s| *s);
        assert_eq!(g, vec![vec![5, 5], vec![5], vec![20], vec![1, 1]]);
        assert!(groups(Vec::<u64>::new(), 2, 10, |s| *s).is_empty());
    }
}
