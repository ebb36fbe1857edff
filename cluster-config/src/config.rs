//! The cluster config: one TOML file describes a cluster. Parsing keeps the source
//! spans so that every validation problem can name its line.
//!
//! ```toml
//! cluster_id = "kakera-dev"
//! ca_cert = "pki/ca.pem"                 # relative to this file
//! ca_crl = "pki/crl.pem"                 # optional: revocation lists clients apply
//! zone_public_key = "<64 hex digits>"    # optional until `kakera zone keygen`
//! racks = ["rack-a", "rack-b", "rack-c"]
//!
//! [policy]
//! k = 3
//! n = 5
//! max_shares_per_rack = 2                # default k - 1
//!
//! [zones.dc]
//! [zones.hsz]
//! networks = ["10.20.0.0/16"]            # optional: where readers may connect from
//!
//! [[nodes]]
//! id = 1
//! name = "node-1"
//! rack = "rack-a"
//! zone = "dc"
//! addr = "127.0.0.1:7101"
//! data_dir = "data/node-1"               # relative to this file
//! metrics_addr = "127.0.0.1:9101"         # optional: HTTP /metrics, /healthz, /readyz
//!
//! [backup]                               # optional: where nodes write backup parts
//! root = "/var/backups/kakera"           # relative to this file; per rack storage
//!
//! [limits]                               # optional, each field too
//! max_record_bytes = 67108864
//! max_staged_bytes_per_identity = 17179869184
//! max_request_bytes_per_identity = 201326592
//! ```
//!
//! A benchmark cluster (`kakera bench`) may also carry `[baseline] plain_replicas = 3`:
//! its nodes then also accept records stored as plain copies, one per rack, so that a
//! benchmark can compare secret sharing with replication through the same nodes. Such
//! records have no secrecy at all; the cluster id must start with [`BENCH_CLUSTER_PREFIX`]
//! so that no production config carries the section by accident, and only a build with
//! the `bench-baseline` feature (which `scripts/bench-cluster.sh` enables and release
//! packages do not) reads the section at all: any other build refuses a config that
//! has one, so its nodes and clients never take a plain replica whatever the config
//! says.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::error::{ConfigError, Issue};

/// A node's id: stable for the node's life, never reused. (A node that lost its disk
/// rejoins under a new id.)
pub type NodeId = u64;

/// The zone whose readers may reconstruct records.
pub const HSZ_ZONE: &str = "hsz";

/// Most voters in the Raft group; further nodes are learners.
pub const MAX_VOTERS: usize = 5;

/// The cluster id prefix a config needs before it may accept plain replicas
/// (`[baseline]`): only benchmark clusters do.
pub const BENCH_CLUSTER_PREFIX: &str = "bench-";

/// Whether this build reads `[baseline]` (the `bench-baseline` feature): benchmark
/// builds only. Every other build refuses a config with the section.
pub const BASELINE_BUILT: bool = cfg!(feature = "bench-baseline");

/// The sharing policy: k of n, and at most `max_shares_per_rack` shares of one record
/// in any rack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Shares needed to reconstruct.
    pub k: u8,
    /// Shares stored per record.
    pub n: u8,
    /// Most shares of one record in one rack; at most k - 1 (promise P1).
    pub max_shares_per_rack: u8,
}

/// When the leader considers a node suspect or dead, and how hard repair may work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// A node not heard from for this long is suspect (no new shares placed on it).
    pub suspect_after_ms: u64,
    /// A node not heard from for this long is dead: its shares are regenerated
    /// elsewhere.
    pub dead_after_ms: u64,
    /// Most repairs running at once.
    pub repair_parallel: u32,
    /// Most share bytes per second that repair makes helpers read (MB/s, 10^6 bytes).
    pub repair_rate_mb_s: u32,
    /// Share bytes per second each node re-reads to find rotten or missing shares
    /// (MB/s, 10^6 bytes; 0 turns scrubbing off), each share counted as at least one
    /// 4 KiB block. A whole pass over a node's shares takes its stored bytes (small
    /// shares rounded up) divided by this, and up to four times as long while the
    /// node serves requests (its scrubber then runs at a quarter of the rate).
    pub scrub_mb_s: u32,
    /// Most moves to one new holder that run as one masked-repair session (1 to
    /// [`MAX_REPAIR_BATCH_MOVES`]; 1 runs a session per move).
    pub repair_batch_moves: u32,
}

/// The most moves one batched repair session may run.
pub const MAX_REPAIR_BATCH_MOVES: u32 = 256;

impl Default for HealthConfig {
    fn default() -> HealthConfig {
        HealthConfig {
            suspect_after_ms: 5_000,
            dead_after_ms: 60_000,
            repair_parallel: 4,
            repair_rate_mb_s: 50,
            scrub_mb_s: 10,
            repair_batch_moves: MAX_REPAIR_BATCH_MOVES,
        }
    }
}

/// Raft tuning (`[raft]`, all fields optional): when snapshots are taken, how they
/// are cut, and how many bytes one append may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTuning {
    /// A snapshot is built after this many log entries since the last one.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log behind a snapshot (a follower this close catches up
    /// from the log, not from a snapshot).
    pub keep_entries_after_snapshot: u64,
    /// Bytes of catalog per snapshot chunk: the most a node holds in memory while it
    /// builds, sends or installs a snapshot.
    pub snapshot_chunk_bytes: u32,
    /// Most bytes of entries one append RPC carries (an entry larger than this goes
    /// alone).
    pub append_budget_bytes: u32,
    /// Most entries one append RPC carries.
    pub append_max_entries: u32,
}

impl Default for RaftTuning {
    fn default() -> RaftTuning {
        RaftTuning {
            snapshot_every_entries: 5_000,
            keep_entries_after_snapshot: 1_000,
            snapshot_chunk_bytes: 4 * 1024 * 1024,
            append_budget_bytes: 4 * 1024 * 1024,
            append_max_entries: 512,
        }
    }
}

impl RaftTuning {
    /// Each rule this tuning breaks, as a sentence; `max_frame_bytes` bounds the
    /// append budget (an append must fit one frame with room for its envelope).
    pub fn problems(&self, max_frame_bytes: u32) -> Vec<String> {
        let mut out = Vec::new();
        if !(16..=10_000_000).contains(&self.snapshot_every_entries) {
            out.push("snapshot_every_entries must be 16..=10000000".to_string());
        }
        if self.keep_entries_after_snapshot > 1_000_000 {
            out.push("keep_entries_after_snapshot must be at most 1000000".to_string());
        }
        if !(1024..=CEILING_SNAPSHOT_CHUNK_BYTES).contains(&self.snapshot_chunk_bytes) {
            out.push(format!(
                "snapshot_chunk_bytes must be 1024..={CEILING_SNAPSHOT_CHUNK_BYTES}"
            ));
        }
        if !(4096..=max_frame_bytes / 2).contains(&self.append_budget_bytes) {
            out.push(format!(
                "append_budget_bytes must be 4096..={} (half of max_frame_bytes)",
                max_frame_bytes / 2
            ));
        }
        if !(1..=4096).contains(&self.append_max_entries) {
            out.push("append_max_entries must be 1..=4096".to_string());
        }
        out
    }
}

/// Ceiling of `snapshot_chunk_bytes`.
pub const CEILING_SNAPSHOT_CHUNK_BYTES: u32 = 64 * 1024 * 1024;

/// How shares land on a node and how long staged (uncommitted) ones live
/// (`[staging]`, all fields optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StagingConfig {
    /// A staged share that no commit claimed within this time is deleted.
    pub ttl_ms: u64,
    /// How often each node looks for expired staged shares.
    pub collect_every_ms: u64,
    /// Shares of at least this many bytes are written once, to a file of their own
    /// beside the node's database, instead of through RocksDB's write-ahead log and
    /// SST files (default 1 MiB; at least [`MIN_FILE_SHARE_BYTES`]).
    pub file_share_min_bytes: u64,
}

/// Floor of `[staging] file_share_min_bytes`: a file per share below it costs more
/// in file-system metadata than it saves.
pub const MIN_FILE_SHARE_BYTES: u64 = 1024;

impl Default for StagingConfig {
    fn default() -> StagingConfig {
        StagingConfig {
            ttl_ms: 15 * 60 * 1000,
            collect_every_ms: 10_000,
            file_share_min_bytes: 1024 * 1024,
        }
    }
}

/// What one peer may ask of a node (`[limits]`, all fields optional). Each limit has
/// a hard ceiling below which it may be set; a request over a limit gets a clear
/// error naming it and the node carries on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Largest request frame (envelope) a node reads, in bytes.
    pub max_frame_bytes: u32,
    /// Bidirectional streams a peer may have open on one connection (QUIC flow
    /// control: a further stream waits until one closes).
    pub max_streams_per_connection: u32,
    /// Requests a node works on at once for one connection; a further one is
    /// answered "busy" at once.
    pub max_requests_per_connection: u32,
    /// Connections one identity (certificate name) may hold to a node at once.
    pub max_connections_per_peer: u32,
    /// Largest record (sealed bytes) a node stages or commits as one piece; a larger
    /// record is stored as segments of at most this size (and at most 8 MiB).
    pub max_record_bytes: u64,
    /// Most records in one staging, commit, read or lookup request.
    pub max_batch_records: u32,
    /// Share bytes one identity may have staged and not yet committed on a node. A
    /// record stored as segments stages every segment before its one commit, so
    /// this bounds the largest such record a gateway can put (default 16 GiB).
    pub max_staged_bytes_per_identity: u64,
    /// Request bytes (envelopes and share bytes) one identity may have in flight on a
    /// node at once: received or announced and not yet handled. A request past it
    /// is answered "busy" before its bytes are read.
    pub max_request_bytes_per_identity: u64,
}

/// Ceiling of `max_frame_bytes` (the codec's own limit).
pub const CEILING_FRAME_BYTES: u32 = 64 * 1024 * 1024;
/// Ceiling of `max_record_bytes` (the catalog's own limit).
pub const CEILING_RECORD_BYTES: u64 = 64 * 1024 * 1024;
/// Ceiling of `max_batch_records` (the catalog's own limit).
pub const CEILING_BATCH_RECORDS: u32 = 4096;
/// Ceiling of `max_streams_per_connection`.
pub const CEILING_STREAMS: u32 = 4096;
/// Ceiling of `max_connections_per_peer`.
pub const CEILING_CONNECTIONS: u32 = 1024;

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            max_frame_bytes: 16 * 1024 * 1024,
            max_streams_per_connection: 256,
            max_requests_per_connection: 128,
            max_connections_per_peer: 32,
            max_record_bytes: CEILING_RECORD_BYTES,
            max_batch_records: CEILING_BATCH_RECORDS,
            max_staged_bytes_per_identity: 16 * 1024 * 1024 * 1024,
            max_request_bytes_per_identity: 192 * 1024 * 1024,
        }
    }
}

impl LimitsConfig {
    /// Each rule this set of limits breaks, as a sentence.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(64 * 1024..=CEILING_FRAME_BYTES).contains(&self.max_frame_bytes) {
            out.push(format!(
                "max_frame_bytes must be 65536..={CEILING_FRAME_BYTES}"
            ));
        }
        if !(1..=CEILING_STREAMS).contains(&self.max_streams_per_connection) {
            out.push(format!(
                "max_streams_per_connection must be 1..={CEILING_STREAMS}"
            ));
        }
        if !(1..=self.max_streams_per_connection).contains(&self.max_requests_per_connection) {
            out.push(
                "max_requests_per_connection must be 1..=max_streams_per_connection".to_string(),
            );
        }
        if !(1..=CEILING_CONNECTIONS).contains(&self.max_connections_per_peer) {
            out.push(format!(
                "max_connections_per_peer must be 1..={CEILING_CONNECTIONS}"
            ));
        }
        if !(1..=CEILING_RECORD_BYTES).contains(&self.max_record_bytes) {
            out.push(format!(
                "max_record_bytes must be 1..={CEILING_RECORD_BYTES}"
            ));
        }
        if !(1..=CEILING_BATCH_RECORDS).contains(&self.max_batch_records) {
            out.push(format!(
                "max_batch_records must be 1..={CEILING_BATCH_RECORDS}"
            ));
        }
        if self.max_staged_bytes_per_identity < self.max_record_bytes {
            out.push("max_staged_bytes_per_identity must be at least max_record_bytes".to_string());
        }
        // One envelope and one largest share must fit at once.
        let one_request = u64::from(self.max_frame_bytes).saturating_add(self.max_record_bytes);
        if self.max_request_bytes_per_identity < one_request {
            out.push(format!(
                "max_request_bytes_per_identity must be at least max_frame_bytes + \
                 max_record_bytes ({one_request})"
            ));
        }
        out
    }
}

/// A zone: a security domain, optionally with the networks its members connect from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ZoneConfig {
    /// Networks members of this zone connect from; empty means any.
    pub networks: Vec<IpNet>,
}

impl ZoneConfig {
    /// Whether a peer at `ip` may act as a member of this zone: any address if the
    /// zone lists no networks, else one inside a listed network (IPv4-mapped IPv6
    /// addresses count as IPv4).
    pub fn admits(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.networks.is_empty() || self.networks.iter().any(|n| n.contains(&ip))
    }
}

/// One storage node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Stable id.
    pub id: NodeId,
    /// Human name, unique; also the certificate name the node presents.
    pub name: String,
    /// The rack (failure domain) the node stands in.
    pub rack: String,
    /// The zone the node belongs to.
    pub zone: String,
    /// QUIC listen and advertise address.
    pub addr: SocketAddr,
    /// Where the node keeps its RocksDB and keys (resolved against the config file's
    /// directory by [`ClusterConfig::load`]).
    pub data_dir: PathBuf,
    /// Where the node serves Prometheus metrics and its health and readiness over
    /// plain HTTP (TCP), apart from the QUIC path; none when absent. Meant for a
    /// local or management address: it shows counts and states, never record data.
    pub metrics_addr: Option<SocketAddr>,
}

/// The largest node id: Raft member ids carry the node id in their low 32 bits and an
/// incarnation in the high 32 (see `kakera_proto::ids`).
pub const MAX_NODE_ID: NodeId = u32::MAX as NodeId;

/// A validated cluster config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Names the cluster; peers with another cluster id are refused.
    pub cluster_id: String,
    /// The cluster CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// Revocation lists (PEM) the CA issued (`kakera ca revoke` writes them): clients
    /// refuse a node they list; nodes apply them with the ones the catalog holds.
    pub ca_crl: Option<PathBuf>,
    /// The HSZ's X25519 public key, which ingest clients seal records to.
    pub zone_public_key: Option<[u8; 32]>,
    /// Declared racks, in file order.
    pub racks: Vec<String>,
    /// Declared zones.
    pub zones: BTreeMap<String, ZoneConfig>,
    /// The sharing policy.
    pub policy: Policy,
    /// The storage nodes, in file order.
    pub nodes: Vec<NodeConfig>,
    /// Failure detection and repair pacing (`[health]`, all fields optional).
    pub health: HealthConfig,
    /// Lifetime of staged shares (`[staging]`, all fields optional).
    pub staging: StagingConfig,
    /// Raft tuning (`[raft]`, all fields optional).
    pub raft: RaftTuning,
    /// What one peer may ask of a node (`[limits]`, all fields optional).
    pub limits: LimitsConfig,
    /// Where nodes write backup parts (`[backup] root`; resolved against the config
    /// file's directory). Each node resolves it on its own machine: mount each rack's
    /// backup store there, so that no store receives more than one rack's parts.
    /// Without it, backups are refused.
    pub backup_root: Option<PathBuf>,
    /// Benchmark clusters only (`[baseline] plain_replicas`): besides shared records,
    /// nodes accept records stored as this many plain copies, one per rack, with
    /// threshold 1. `None` everywhere else.
    pub plain_replicas: Option<u8>,
    /// The data provision review committee (`[committee]`): who signs grants and how
    /// many signatures a grant needs. Without it, an operator creates grants alone.
    pub committee: Option<CommitteeConfig>,
}

/// The data provision review committee: a grant takes effect only with `threshold`
/// valid signatures of distinct members over its terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitteeConfig {
    /// Signatures a grant needs (t of m).
    pub threshold: u8,
    /// The members, each with its Ed25519 public key.
    pub members: Vec<CommitteeMember>,
}

/// One member of the review committee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitteeMember {
    /// The member's name, as signatures and the audit log name it.
    pub name: String,
    /// Its Ed25519 public key (from `kakera committee keygen`).
    pub public_key: [u8; 32],
}

/// Most members a committee lists.
pub const MAX_COMMITTEE_MEMBERS: usize = 32;

impl ClusterConfig {
    /// The placement rules for a record entry with threshold `k`: the cluster's policy
    /// when `k` is its k; on a benchmark cluster with `[baseline] plain_replicas = c`,
    /// 1 of c with one copy per rack when `k` is 1; otherwise none (refused).
    pub fn policy_for(&self, k: u8) -> Option<Policy> {
        if k == self.policy.k {
            return Some(self.policy);
        }
        match self.plain_replicas {
            Some(copies) if k == 1 => Some(Policy {
                k: 1,
                n: copies,
                max_shares_per_rack: 1,
            }),
            _ => None,
        }
    }

    /// Reads, parses and validates a config file; relative paths in it are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
        Self::load_with_text(path).map(|(config, _)| config)
    }

    /// Like [`ClusterConfig::load`], also returning the file's text (whose digest a
    /// node records at bootstrap), so the file is read once.
    pub fn load_with_text(path: &Path) -> Result<(ClusterConfig, String), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = ClusterConfig::parse(&text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.ca_cert = base.join(&config.ca_cert);
        if let Some(crl) = &mut config.ca_crl {
            *crl = base.join(&*crl);
        }
        for node in &mut config.nodes {
            node.data_dir = base.join(&node.data_dir);
        }
        if let Some(root) = &mut config.backup_root {
            *root = base.join(&*root);
        }
        Ok((config, text))
    }

    /// Parses and validates TOML text. Paths are left as written.
    pub fn parse(text: &str) -> Result<ClusterConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            line: e.span().map_or(1, |s| line_of(text, s.start)),
            message: e.message().trim().to_string(),
        })?;
        validate(text, raw)
    }

    /// The node with this id.
    pub fn node(&self, id: NodeId) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The node with this name.
    pub fn node_by_name(&self, name: &str) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The initial Raft voters: up to [`MAX_VOTERS`] nodes spread over racks, taking
    /// one node per rack in turn (racks in file order, nodes by id), so that losing one
    /// rack loses as few voters as possible. Deterministic: every node computes the
    /// same set from the same config.
    pub fn initial_voters(&self) -> Vec<NodeId> {
        let mut per_rack: Vec<Vec<NodeId>> = self
            .racks
            .iter()
            .map(|rack| {
                let mut ids: Vec<NodeId> = self
                    .nodes
                    .iter()
                    .filter(|n| &n.rack == rack)
                    .map(|n| n.id)
                    .collect();
                ids.sort_unstable();
                ids.reverse(); // pop() takes the lowest id first
                ids
            })
            .collect();
        let mut voters = Vec::new();
        // Bounded: each round takes at least one node or ends the loop.
        while voters.len() < MAX_VOTERS.min(self.nodes.len()) {
            let before = voters.len();
            for ids in per_rack.iter_mut() {
                if voters.len() == MAX_VOTERS {
                    break;
                }
                if let Some(id) = ids.pop() {
                    voters.push(id);
                }
            }
            if voters.len() == before {
                break;
            }
        }
        voters.sort_unstable();
        voters
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cluster_id: Spanned<String>,
    ca_cert: Spanned<String>,
    #[serde(default)]
    ca_crl: Option<Spanned<String>>,
    #[serde(default)]
    zone_public_key: Option<Spanned<String>>,
    racks: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    zones: BTreeMap<String, Spanned<RawZone>>,
    policy: Spanned<RawPolicy>,
    #[serde(default)]
    nodes: Vec<Spanned<RawNode>>,
    #[serde(default)]
    health: Option<Spanned<RawHealth>>,
    #[serde(default)]
    staging: Option<Spanned<RawStaging>>,
    #[serde(default)]
    limits: Option<Spanned<RawLimits>>,
    #[serde(default)]
    raft: Option<Spanned<RawRaft>>,
    #[serde(default)]
    backup: Option<Spanned<RawBackup>>,
    #[serde(default)]
    baseline: Option<Spanned<RawBaseline>>,
    #[serde(default)]
    committee: Option<Spanned<RawCommittee>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommittee {
    threshold: Spanned<u8>,
    members: Vec<Spanned<RawMember>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    name: String,
    public_key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBaseline {
    plain_replicas: Spanned<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackup {
    root: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_frame_bytes: Option<u32>,
    max_streams_per_connection: Option<u32>,
    max_requests_per_connection: Option<u32>,
    max_connections_per_peer: Option<u32>,
    max_record_bytes: Option<u64>,
    max_batch_records: Option<u32>,
    max_staged_bytes_per_identity: Option<u64>,
    max_request_bytes_per_identity: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRaft {
    snapshot_every_entries: Option<u64>,
    keep_entries_after_snapshot: Option<u64>,
    snapshot_chunk_bytes: Option<u32>,
    append_budget_bytes: Option<u32>,
    append_max_entries: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStaging {
    ttl_ms: Option<u64>,
    collect_every_ms: Option<u64>,
    file_share_min_bytes: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    suspect_after_ms: Option<u64>,
    dead_after_ms: Option<u64>,
    repair_parallel: Option<u32>,
    repair_rate_mb_s: Option<u32>,
    scrub_mb_s: Option<u32>,
    repair_batch_moves: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    k: Spanned<u8>,
    n: Spanned<u8>,
    #[serde(default)]
    max_shares_per_rack: Option<Spanned<u8>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawZone {
    #[serde(default)]
    networks: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: Spanned<NodeId>,
    name: Spanned<String>,
    rack: Spanned<String>,
    zone: Spanned<String>,
    addr: Spanned<String>,
    data_dir: Spanned<String>,
    #[serde(default)]
    metrics_addr: Option<Spanned<String>>,
}

/// Collects issues with their lines.
struct Issues<'t> {
    text: &'t str,
    list: Vec<Issue>,
}

impl Issues<'_> {
    /// Records the first line of `key` in `seen`; on a repeat, reports `what` as used
    /// twice with both lines.
    fn unique(
        &mut self,
        seen: &mut HashMap<String, usize>,
        key: String,
        span: Range<usize>,
        field: String,
        what: &str,
    ) {
        let line = line_of(self.text, span.start);
        if let Some(first) = seen.insert(key, line) {
            self.at(
                span,
                field,
                format!("{what} is used twice (first on line {first})"),
            );
        }
    }

    fn at(&mut self, span: Range<usize>, field: impl Into<String>, message: impl Into<String>) {
        self.list.push(Issue {
            line: Some(line_of(self.text, span.start)),
            field: field.into(),
            message: message.into(),
        });
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn validate(text: &str, raw: RawConfig) -> Result<ClusterConfig, ConfigError> {
    let mut issues = Issues {
        text,
        list: Vec::new(),
    };

    if !is_name(raw.cluster_id.get_ref()) {
        issues.at(
            raw.cluster_id.span(),
            "cluster_id",
            "must be 1-64 characters of letters, digits, '-', '_' or '.'",
        );
    }
    if raw.ca_cert.get_ref().trim().is_empty() {
        issues.at(
            raw.ca_cert.span(),
            "ca_cert",
            "must name the CA certificate file",
        );
    }
    let zone_public_key = raw.zone_public_key.as_ref().and_then(|k| {
        let parsed = parse_hex32(k.get_ref());
        if parsed.is_none() {
            issues.at(
                k.span(),
                "zone_public_key",
                "must be 64 hex digits (an X25519 public key from `kakera zone keygen`)",
            );
        }
        parsed
    });

    // Racks.
    let mut racks = Vec::new();
    let mut rack_lines: HashMap<&str, usize> = HashMap::new();
    if raw.racks.get_ref().is_empty() {
        issues.at(raw.racks.span(), "racks", "declare at least one rack");
    }
    for (i, rack) in raw.racks.get_ref().iter().enumerate() {
        let name = rack.get_ref().as_str();
        if !is_name(name) {
            issues.at(rack.span(), format!("racks[{i}]"), "not a valid rack name");
        }
        if let Some(first) = rack_lines.insert(name, line_of(text, rack.span().start)) {
            issues.at(
                rack.span(),
                format!("racks[{i}]"),
                format!("rack \"{name}\" is declared twice (first on line {first})"),
            );
        } else {
            racks.push(name.to_string());
        }
    }

    // Zones.
    let mut zones = BTreeMap::new();
    for (name, zone) in &raw.zones {
        if !is_name(name) {
            issues.at(
                zone.span(),
                format!("zones.{name}"),
                "not a valid zone name",
            );
        }
        let mut networks = Vec::new();
        for (i, net) in zone.get_ref().networks.iter().enumerate() {
            match parse_net(net.get_ref()) {
                Some(n) => networks.push(n),
                None => issues.at(
                    net.span(),
                    format!("zones.{name}.networks[{i}]"),
                    format!(
                        "\"{}\" is not a network (write it like 10.20.0.0/16 or ::1/128)",
                        net.get_ref()
                    ),
                ),
            }
        }
        zones.insert(name.clone(), ZoneConfig { networks });
    }

    // Policy.
    let p = raw.policy.get_ref();
    let (k, n) = (*p.k.get_ref(), *p.n.get_ref());
    if k < 2 {
        issues.at(p.k.span(), "policy.k", "must be at least 2");
    }
    if n < k {
        issues.at(p.n.span(), "policy.n", format!("must be at least k = {k}"));
    }
    let max_per_rack = match &p.max_shares_per_rack {
        Some(m) => {
            let m_val = *m.get_ref();
            if m_val == 0 || m_val >= k {
                issues.at(
                    m.span(),
                    "policy.max_shares_per_rack",
                    format!(
                        "must be between 1 and k - 1 = {} so that no rack ever holds k shares \
                         of a record",
                        k.saturating_sub(1)
                    ),
                );
            }
            m_val
        }
        None => k.saturating_sub(1),
    };
    let policy = Policy {
        k,
        n,
        max_shares_per_rack: max_per_rack,
    };

    // Nodes.
    let mut nodes = Vec::new();
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut addrs: HashMap<String, usize> = HashMap::new();
    let mut dirs: HashMap<String, usize> = HashMap::new();
    if raw.nodes.is_empty() {
        issues.list.push(Issue {
            line: None,
            field: "nodes".into(),
            message: "declare the storage nodes as [[nodes]] tables".into(),
        });
    }
    for (i, node) in raw.nodes.iter().enumerate() {
        let r = node.get_ref();
        let field = |f: &str| format!("nodes[{i}].{f}");
        let id = *r.id.get_ref();
        if id == 0 || id > MAX_NODE_ID {
            issues.at(
                r.id.span(),
                field("id"),
                format!("node ids run from 1 to {MAX_NODE_ID}"),
            );
        }
        issues.unique(
            &mut ids,
            id.to_string(),
            r.id.span(),
            field("id"),
            &format!("id {id}"),
        );
        if !is_name(r.name.get_ref()) {
            issues.at(r.name.span(), field("name"), "not a valid node name");
        }
        let name = r.name.get_ref();
        issues.unique(
            &mut names,
            name.clone(),
            r.name.span(),
            field("name"),
            &format!("name \"{name}\""),
        );
        if !rack_lines.contains_key(r.rack.get_ref().as_str()) {
            issues.at(
                r.rack.span(),
                field("rack"),
                format!(
                    "unknown rack \"{}\" (declared: {})",
                    r.rack.get_ref(),
                    racks.join(", ")
                ),
            );
        }
        if !zones.contains_key(r.zone.get_ref()) {
            let declared: Vec<&str> = zones.keys().map(String::as_str).collect();
            issues.at(
                r.zone.span(),
                field("zone"),
                format!(
                    "unknown zone \"{}\" (declared: {}); add a [zones.{}] table",
                    r.zone.get_ref(),
                    declared.join(", "),
                    r.zone.get_ref()
                ),
            );
        }
        let addr = match r.addr.get_ref().parse::<SocketAddr>() {
            Ok(a) => {
                issues.unique(
                    &mut addrs,
                    a.to_string(),
                    r.addr.span(),
                    field("addr"),
                    &format!("address {a}"),
                );
                Some(a)
            }
            Err(_) => {
                issues.at(
                    r.addr.span(),
                    field("addr"),
                    format!(
                        "\"{}\" is not an IP address with a port, like 127.0.0.1:7101",
                        r.addr.get_ref()
                    ),
                );
                None
            }
        };
        if r.data_dir.get_ref().trim().is_empty() {
            issues.at(r.data_dir.span(), field("data_dir"), "must not be empty");
        } else {
            let dir = r.data_dir.get_ref();
            issues.unique(
                &mut dirs,
                dir.clone(),
                r.data_dir.span(),
                field("data_dir"),
                &format!("data_dir \"{dir}\""),
            );
        }
        let metrics_addr = match &r.metrics_addr {
            None => None,
            Some(m) => match m.get_ref().parse::<SocketAddr>() {
                // Not checked for uniqueness: it is bound on each node's own machine,
                // where 127.0.0.1:9101 on every node is fine.
                Ok(a) => Some(a),
                Err(_) => {
                    issues.at(
                        m.span(),
                        field("metrics_addr"),
                        format!(
                            "\"{}\" is not an IP address with a port, like 127.0.0.1:9101",
                            m.get_ref()
                        ),
                    );
                    None
                }
            },
        };
        if let Some(addr) = addr {
            nodes.push(NodeConfig {
                id: *r.id.get_ref(),
                name: r.name.get_ref().clone(),
                rack: r.rack.get_ref().clone(),
                zone: r.zone.get_ref().clone(),
                addr,
                data_dir: PathBuf::from(r.data_dir.get_ref()),
                metrics_addr,
            });
        }
    }

    // Health and repair pacing.
    let mut health = HealthConfig::default();
    if let Some(h) = &raw.health {
        let r = h.get_ref();
        health.suspect_after_ms = r.suspect_after_ms.unwrap_or(health.suspect_after_ms);
        health.dead_after_ms = r.dead_after_ms.unwrap_or(health.dead_after_ms);
        health.repair_parallel = r.repair_parallel.unwrap_or(health.repair_parallel);
        health.repair_rate_mb_s = r.repair_rate_mb_s.unwrap_or(health.repair_rate_mb_s);
        health.scrub_mb_s = r.scrub_mb_s.unwrap_or(health.scrub_mb_s);
        health.repair_batch_moves = r.repair_batch_moves.unwrap_or(health.repair_batch_moves);
        if !(1..=MAX_REPAIR_BATCH_MOVES).contains(&health.repair_batch_moves) {
            issues.at(
                h.span(),
                "health",
                format!("repair_batch_moves must be 1-{MAX_REPAIR_BATCH_MOVES}"),
            );
        }
        if health.suspect_after_ms < 500 || health.dead_after_ms <= health.suspect_after_ms {
            issues.at(
                h.span(),
                "health",
                "need 500 <= suspect_after_ms < dead_after_ms",
            );
        }
        if !(1..=64).contains(&health.repair_parallel) || health.repair_rate_mb_s == 0 {
            issues.at(
                h.span(),
                "health",
                "repair_parallel must be 1-64 and repair_rate_mb_s at least 1",
            );
        }
    }

    // Staged-share lifetime.
    let mut staging = StagingConfig::default();
    if let Some(st) = &raw.staging {
        let r = st.get_ref();
        staging.ttl_ms = r.ttl_ms.unwrap_or(staging.ttl_ms);
        staging.collect_every_ms = r.collect_every_ms.unwrap_or(staging.collect_every_ms);
        staging.file_share_min_bytes = r
            .file_share_min_bytes
            .unwrap_or(staging.file_share_min_bytes);
        if staging.file_share_min_bytes < MIN_FILE_SHARE_BYTES {
            issues.at(
                st.span(),
                "staging",
                format!("file_share_min_bytes must be at least {MIN_FILE_SHARE_BYTES}"),
            );
        }
        if staging.ttl_ms < 1_000
            || staging.collect_every_ms < 100
            || staging.collect_every_ms > staging.ttl_ms
        {
            issues.at(
                st.span(),
                "staging",
                "need ttl_ms >= 1000 and 100 <= collect_every_ms <= ttl_ms",
            );
        }
    }

    // Per-peer limits.
    let mut limits = LimitsConfig::default();
    if let Some(l) = &raw.limits {
        let r = l.get_ref();
        let d = limits;
        limits = LimitsConfig {
            max_frame_bytes: r.max_frame_bytes.unwrap_or(d.max_frame_bytes),
            max_streams_per_connection: r
                .max_streams_per_connection
                .unwrap_or(d.max_streams_per_connection),
            max_requests_per_connection: r
                .max_requests_per_connection
                .unwrap_or(d.max_requests_per_connection),
            max_connections_per_peer: r
                .max_connections_per_peer
                .unwrap_or(d.max_connections_per_peer),
            max_record_bytes: r.max_record_bytes.unwrap_or(d.max_record_bytes),
            max_batch_records: r.max_batch_records.unwrap_or(d.max_batch_records),
            max_staged_bytes_per_identity: r
                .max_staged_bytes_per_identity
                .unwrap_or(d.max_staged_bytes_per_identity),
            max_request_bytes_per_identity: r
                .max_request_bytes_per_identity
                .unwrap_or(d.max_request_bytes_per_identity),
        };
        for problem in limits.problems() {
            issues.at(l.span(), "limits", problem);
        }
    }

    // Raft tuning (after the limits: the append budget must fit a frame).
    let mut raft = RaftTuning::default();
    if let Some(t) = &raw.raft {
        let r = t.get_ref();
        let d = raft;
        raft = RaftTuning {
            snapshot_every_entries: r.snapshot_every_entries.unwrap_or(d.snapshot_every_entries),
            keep_entries_after_snapshot: r
                .keep_entries_after_snapshot
                .unwrap_or(d.keep_entries_after_snapshot),
            snapshot_chunk_bytes: r.snapshot_chunk_bytes.unwrap_or(d.snapshot_chunk_bytes),
            append_budget_bytes: r.append_budget_bytes.unwrap_or(d.append_budget_bytes),
            append_max_entries: r.append_max_entries.unwrap_or(d.append_max_entries),
        };
        for problem in raft.problems(limits.max_frame_bytes) {
            issues.at(t.span(), "raft", problem);
        }
    }

    let backup_root = match &raw.backup {
        None => None,
        Some(b) => {
            let root = b.get_ref().root.get_ref();
            if root.trim().is_empty() {
                issues.at(b.get_ref().root.span(), "backup.root", "must not be empty");
            }
            Some(PathBuf::from(root))
        }
    };

    let plain_replicas = match &raw.baseline {
        None => None,
        Some(b) if !BASELINE_BUILT => {
            issues.at(
                b.span(),
                "baseline",
                "plain replicas have no secrecy, and this build has no benchmark baseline \
                 (only builds with the `bench-baseline` feature, as scripts/bench-cluster.sh \
                 makes them, read it): remove [baseline]"
                    .to_string(),
            );
            None
        }
        Some(b) => {
            let copies = &b.get_ref().plain_replicas;
            if !raw.cluster_id.get_ref().starts_with(BENCH_CLUSTER_PREFIX) {
                issues.at(
                    b.span(),
                    "baseline",
                    format!(
                        "plain replicas have no secrecy and are for benchmark clusters \
                         only: remove [baseline], or name the cluster \
                         \"{BENCH_CLUSTER_PREFIX}...\""
                    ),
                );
            }
            if *copies.get_ref() == 0 || usize::from(*copies.get_ref()) > racks.len() {
                issues.at(
                    copies.span(),
                    "baseline.plain_replicas",
                    format!(
                        "must be between 1 and the number of racks ({}): one copy per rack",
                        racks.len()
                    ),
                );
            }
            Some(*copies.get_ref())
        }
    };

    // The review committee.
    let committee = raw.committee.as_ref().map(|c| {
        let raw_c = c.get_ref();
        let mut members: Vec<CommitteeMember> = Vec::new();
        for (i, m) in raw_c.members.iter().enumerate() {
            let at = format!("committee.members[{i}]");
            let member = m.get_ref();
            if !is_name(&member.name) {
                issues.at(m.span(), &at, "name: not a valid member name");
            }
            if members.iter().any(|o| o.name == member.name) {
                issues.at(
                    m.span(),
                    &at,
                    format!("member {} is listed twice", member.name),
                );
            }
            match parse_hex32(&member.public_key) {
                Some(key) if members.iter().any(|o| o.public_key == key) => {
                    issues.at(m.span(), &at, "two members have the same public key");
                }
                Some(key) => members.push(CommitteeMember {
                    name: member.name.clone(),
                    public_key: key,
                }),
                None => issues.at(
                    m.span(),
                    &at,
                    "public_key: must be 64 hex digits (an Ed25519 public key from \
                     `kakera committee keygen`)",
                ),
            }
        }
        let threshold = *raw_c.threshold.get_ref();
        if raw_c.members.is_empty() || raw_c.members.len() > MAX_COMMITTEE_MEMBERS {
            issues.at(
                c.span(),
                "committee.members",
                format!("list 1 to {MAX_COMMITTEE_MEMBERS} members"),
            );
        }
        if threshold == 0 || usize::from(threshold) > raw_c.members.len() {
            issues.at(
                raw_c.threshold.span(),
                "committee.threshold",
                format!(
                    "must be between 1 and the number of members ({})",
                    raw_c.members.len()
                ),
            );
        }
        CommitteeConfig { threshold, members }
    });

    // The policy against the topology (only meaningful once the parts are valid).
    if issues.list.is_empty() {
        for problem in crate::placement::policy_problems(&policy, &nodes) {
            issues.at(raw.policy.span(), "policy", problem);
        }
    }

    if !issues.list.is_empty() {
        issues.list.sort_by_key(|i| i.line.unwrap_or(usize::MAX));
        return Err(ConfigError::Invalid {
            issues: issues.list,
        });
    }
    Ok(ClusterConfig {
        cluster_id: raw.cluster_id.into_inner(),
        ca_cert: PathBuf::from(raw.ca_cert.into_inner()),
        ca_crl: raw.ca_crl.map(|c| PathBuf::from(c.into_inner())),
        zone_public_key,
        racks,
        zones,
        policy,
        nodes,
        health,
        staging,
        raft,
        limits,
        backup_root,
        plain_replicas,
        committee,
    })
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}
