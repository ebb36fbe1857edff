//! `kakera`: the command line for operators and auditors.
//!
//! Exit codes: 0 success; 1 the command ran and found a problem (invalid config,
//! refused request, unhealthy cluster); 2 bad usage (from the argument parser); 3 a file or the
//! environment is unusable.
// A command-line program: printing to stdout and stderr is its interface.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kakera_client::connection::Connection;
use kakera_client::export::{self, ExportQuery, ExportSigner};
use kakera_client::linkage::LinkageKey;
use kakera_client::pki::{self, IssueRequest};
use kakera_client::{Client, ClientError, demo, ingest, status, zone};
use kakera_config::{ClusterConfig, ConfigError};
use kakera_net::TlsFiles;
use kakera_proto::audit::AuditQuery;
use kakera_proto::catalog::{EraseTarget, Grant, GrantScope, ListFilter, RecordEntry};
use kakera_proto::{Date, RecordId, RecordKind, Role, SubjectTag};

/// jemalloc keeps freed pages for reuse: the data path allocates share-sized buffers
/// (up to 64 MiB) per request, which glibc's malloc maps and zeroes afresh every time
/// (a quarter of the CPU in the 16 MiB profile; docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// kakera: secret-sharing storage for health records.
#[derive(Parser, Debug)]
#[command(version, about, after_help = EXIT_CODES)]
struct Cli {
    /// Print the result as JSON on stdout (one object, or one per line for lists);
    /// an error is printed as {"error": ..., "exit_code": ...}. Progress stays on
    /// stderr.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

/// The exit codes every command uses (also in docs/operations.md).
const EXIT_CODES: &str = "Exit codes:\n  0  done; nothing wrong found\n  1  the command ran and found a problem, or the cluster refused (invalid config, \
refused request, unhealthy cluster, failed verification, incomplete backup)\n  2  bad usage (unknown flag, missing argument)\n  3  a file or the environment is unusable (unreadable file, no route to the cluster, \
bad certificate)\n\nEvery command takes --json.";

/// `kakera bench` options.
#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// Record sizes, comma-separated (1KiB, 64KiB, 1MiB, 16MiB, or bytes).
    #[arg(long, value_delimiter = ',', default_value = "1KiB,64KiB,1MiB,16MiB")]
    sizes: Vec<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Record bytes stored per size and mode; the record count follows.
    #[arg(long, default_value = "64MiB")]
    bytes_per_size: String,
    /// Fewest records per size.
    #[arg(long, default_value_t = 8)]
    min_records: u64,
    /// Most records per size.
    #[arg(long, default_value_t = 100_000)]
    max_records: u64,
    /// Bytes per request: small records are batched up to this.
    #[arg(long, default_value = "256KiB")]
    batch_bytes: String,
    /// Single-record gets at concurrency 1 for the low-load latency (0 skips).
    #[arg(long, default_value_t = 1000)]
    single_gets: usize,
    /// Skip the replication baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Skip the repair measurement.
    #[arg(long)]
    no_repair: bool,
    /// Most seconds the repair may take.
    #[arg(long, default_value_t = 900)]
    repair_timeout_s: u64,
    /// Repairs at once in the benchmark cluster ([health] repair_parallel).
    #[arg(long, default_value_t = 16)]
    repair_parallel: u32,
    /// Repair rate limit in the benchmark cluster, MB/s ([health] repair_rate_mb_s).
    #[arg(long, default_value_t = 10_000)]
    repair_rate_mb_s: u32,
    /// Where the report is written.
    #[arg(long, default_value = "kakera-bench.json")]
    out: PathBuf,
    /// The cluster's directory (default: a new one under the temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the cluster's directory (data, logs, config) afterwards.
    #[arg(long)]
    keep: bool,
    /// The kakera-node binary (default: beside this one, else on PATH).
    #[arg(long)]
    node_binary: Option<PathBuf>,
    /// Scale mode: fill the catalog to this many records (checkpoints at every power
    /// of ten from 10^4) and probe puts, gets and node memory at each; --sizes and
    /// the repair, baseline and single-get phases do not apply.
    #[arg(long)]
    scale_records: Option<u64>,
    /// Scale mode: size of each fill record.
    #[arg(long, default_value = "64")]
    fill_bytes: String,
    /// Scale mode: records per probe (1 KiB each), put then read back.
    #[arg(long, default_value_t = 8192)]
    probe_records: u64,
    /// Scale mode: probes per checkpoint; the median one's records/s is reported.
    #[arg(long, default_value_t = 3)]
    probe_rounds: u32,
    /// Scale mode: skip the catch-ups at the end (a killed follower, then a wiped one)
    #[arg(long)]
    no_catch_up: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Manage the cluster certificate authority.
    #[command(subcommand)]
    Ca(CaCmd),
    /// Work with cluster config files.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Make and hold the zone key that records are sealed to.
    #[command(subcommand)]
    Zone(ZoneCmd),
    /// Enter, list and revoke the review committee's grants (operator role).
    #[command(subcommand)]
    Grant(GrantCmd),
    /// Planned node changes (operator role): drain, decommission, remove, add back.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Read and verify the audit log (auditor or operator role).
    #[command(subcommand)]
    Audit(AuditCmd),
    /// List committed records' metadata (reader, auditor or operator role).
    #[command(
        after_help = "Examples:\n  kakera list --kind claim\n  kakera list --source 1310000001 --json"
    )]
    List {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Only records of this subject tag (64 hex digits).
        #[arg(long, conflicts_with_all = ["kind", "source"])]
        subject: Option<String>,
        /// Only records of this kind (ssmix2, claim, checkup, long-term-care, death).
        #[arg(long, conflicts_with = "source")]
        kind: Option<String>,
        /// Only records from this source facility.
        #[arg(long)]
        source: Option<String>,
        /// At most this many records.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Run the demo against a running cluster: grant, ingest, read inside the zone,
    /// refusals, audit trail (scripts/demo.sh sets it up).
    #[command(
        after_help = "Example:\n  kakera demo --config .dev-cluster/cluster.toml --identities .dev-cluster/clients --zone-key .dev-cluster/zone/zone.key"
    )]
    Demo {
        /// The cluster config file.
        #[arg(long, env = "KAKERA_CONFIG")]
        config: PathBuf,
        /// Directory with the demo identities (demo-ingest, demo-reader,
        /// demo-intruder, demo-operator, demo-auditor).
        #[arg(long)]
        identities: PathBuf,
        /// The zone private key file (from `kakera zone keygen`).
        #[arg(long)]
        zone_key: PathBuf,
        /// How many synthetic records to store.
        #[arg(long, default_value_t = 300)]
        records: usize,
    },
    /// Store an SS-MIX2 standard storage tree (ingest role): each current file becomes a
    /// record; re-runs store nothing twice.
    #[command(subcommand)]
    Ingest(IngestCmd),
    /// Write synthetic source data for demos and tests (no real person).
    #[command(subcommand, name = "demo-data")]
    DemoData(DemoDataCmd),
    /// Erase records or every record of a subject (operator role; opt-out). Shares
    /// leave every node's disk; the catalog keeps a tombstone; the subject's records
    /// are refused from then on.
    #[command(
        after_help = "Examples:\n  kakera erase --subject 5be1...09 --reason \"opt-out OPT-2026-0042\"\n  kakera erase --record 0192f3...e1 --reason \"withdrawn at source\"\n  kakera erase --records-from withdrawn.txt --reason \"SS-MIX2 condition flag 0\""
    )]
    Erase {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Every record of this subject tag (64 hex digits; see `kakera subject-tag`).
        #[arg(long, conflicts_with_all = ["records", "records_from"])]
        subject: Option<String>,
        /// A record id (32 hex digits); repeatable.
        #[arg(long = "record", conflicts_with = "records_from")]
        records: Vec<String>,
        /// A file with one record id per line (as `kakera ingest` writes withdrawn ids).
        #[arg(long)]
        records_from: Option<PathBuf>,
        /// Why (kept in the tombstones and the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Compute a subject tag from a facility and a patient id with the linkage key
    /// (for opt-out requests that arrive with a patient id).
    #[command(
        name = "subject-tag",
        after_help = "Example:\n  kakera subject-tag --facility 1310000001 --patient 0001000007 --linkage-key linkage.key"
    )]
    SubjectTag {
        /// The facility code.
        #[arg(long)]
        facility: String,
        /// The patient id at that facility.
        #[arg(long)]
        patient: String,
        /// The linkage key file.
        #[arg(long, env = "KAKERA_LINKAGE_KEY")]
        linkage_key: PathBuf,
    },
    /// Make the linkage key (patient ids to subject tags; kept by the linking step).
    #[command(subcommand)]
    Linkage(LinkageCmd),
    /// Jobs that run inside the high-security zone under a grant.
    #[command(subcommand)]
    Job(JobCmd),
    /// Take a consistent cluster backup (operator role): one Raft entry, at which every
    /// node writes its part (RocksDB checkpoint of its shares and the catalog as a
    /// Raft snapshot) to <[backup] root>/<DIR>/<rack>/<node>/ on its own machine.
    /// Mount each rack's backup store at the root on that rack's nodes: no store then
    /// holds k shares of any record. Exit 1 unless every node wrote its part.
    #[command(
        after_help = "Examples:\n  kakera backup 2026-11-21\n  kakera backup nightly/2026-11-21 --timeout-s 3600 --json"
    )]
    Backup {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The backup's directory under the config's [backup] root (relative; letters,
        /// digits, '-', '_', '.', '/').
        dir: String,
        /// Stop waiting for the nodes' parts after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
    },
    /// Build this node's data directory from its part of a backup, offline, for a
    /// fresh cluster: run it for every node (on the node's machine, with its rack's
    /// backup store mounted) before starting any. Runs `kakera-node --restore-from`.
    #[command(
        after_help = "Example:\n  kakera restore /var/backups/kakera/2026-11-21 --config cluster.toml --node 3\n\nThe data directory must hold no database; certificates may already be there."
    )]
    Restore {
        /// The backup's directory as this machine sees it: <[backup] root>/<DIR>.
        backup_dir: PathBuf,
        /// The cluster config file (the same cluster id and node names as the backup).
        #[arg(long, env = "KAKERA_CONFIG")]
        config: PathBuf,
        /// The node to restore (its id in the config).
        #[arg(long)]
        node: u64,
        /// The kakera-node binary (default: beside this one, else on PATH).
        #[arg(long)]
        node_binary: Option<PathBuf>,
    },
    /// Measure a local cluster: start five nodes in three racks (3 of 5) in a new
    /// directory, then put and get records of each size with secret sharing and with
    /// the replication baseline (three plain copies, one per rack, same nodes and
    /// commit path), single gets at low load, and repair after killing a node. Prints
    /// a table (or JSON with --json) and writes the report as JSON. Build release
    /// binaries first: debug figures say little.
    #[command(
        after_help = "Examples:\n  cargo build --release -p kakera-node -p kakera-client\n  target/release/kakera bench\n  target/release/kakera bench --sizes 1KiB,1MiB --concurrency 8 --out bench.json\n  target/release/kakera bench --sizes 16MiB --no-baseline --no-repair\n\nThe cluster's directory is deleted afterwards unless --keep is given; node logs are in its logs/."
    )]
    Bench(BenchArgs),
    /// Show every node's state and the cluster's health (exit code 1 if unhealthy).
    #[command(
        after_help = "Example:\n  kakera status --config cluster.toml --cert ops.crt.pem --key ops.key.pem\n\nThe flags default to $KAKERA_CONFIG, $KAKERA_CERT and $KAKERA_KEY."
    )]
    Status {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Subcommand, Debug)]
enum IngestCmd {
    /// Walk <root>/<pid[0:3]>/<pid[3:6]>/<pid>/<date>/<kind>/<file> and store each
    /// current file. Condition flag 0 files are not stored; ones stored earlier are
    /// listed as withdrawn for an operator to erase. Malformed paths are reported and
    /// skipped.
    #[command(
        after_help = "Example:\n  kakera ingest ssmix2 /mnt/ssmix2 --source 1310000001 --linkage-key linkage.key --withdrawn-out withdrawn.txt"
    )]
    Ssmix2 {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The standard storage root.
        root: PathBuf,
        /// The facility code (10-digit medical institution code).
        #[arg(long)]
        source: String,
        /// The linkage key file.
        #[arg(long, env = "KAKERA_LINKAGE_KEY")]
        linkage_key: PathBuf,
        /// Files per batch.
        #[arg(long, default_value_t = kakera_client::ingest::DEFAULT_BATCH_FILES)]
        batch: usize,
        /// Write the ids of withdrawn records (stored earlier, now flag 0) to this file.
        #[arg(long)]
        withdrawn_out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum DemoDataCmd {
    /// A synthetic SS-MIX2 standard storage tree: ADT-00, ADT-22, PPR-01, OMP-01,
    /// OML-11, OMG-13 files, HL7 v2.5 in ISO-2022-JP, with updates and deletions.
    #[command(after_help = "Example:\n  kakera demo-data ssmix2 --patients 200 --out ssmix2-demo")]
    Ssmix2 {
        /// How many patients.
        #[arg(long)]
        patients: usize,
        /// Where to write the tree (files are never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// The facility code in MSH-4.
        #[arg(long, default_value = "1310000001")]
        facility: String,
        /// Seed (the same seed writes the same tree).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Subcommand, Debug)]
enum LinkageCmd {
    /// Generate a linkage key file (mode 0600; never overwritten).
    #[command(after_help = "Example:\n  kakera linkage keygen --out linkage.key")]
    Keygen {
        /// The new key file.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum JobCmd {
    /// Read every SS-MIX2 record of the given data kinds under a grant, replace
    /// identifiers by research ids, generalize birth date to year and address to
    /// prefecture, drop names, write CSV, and check k-anonymity over (birth year,
    /// sex, prefecture). Exit 1 if a group breaks it (unless --suppress drops it).
    #[command(
        after_help = "Example:\n  kakera job anonymize --job study-17 --kinds ADT-00,OML-11 --k 5 --out study-17.csv --zone-key hsz/zone.key"
    )]
    Anonymize {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The job (its grant names this reader).
        #[arg(long)]
        job: String,
        /// SS-MIX2 data kinds, comma-separated (ADT-00,OML-11), or `any`.
        #[arg(long)]
        kinds: String,
        /// Only records from this facility.
        #[arg(long)]
        source: Option<String>,
        /// The zone private key file (inside the HSZ).
        #[arg(long, env = "KAKERA_ZONE_KEY")]
        zone_key: PathBuf,
        /// The CSV file to write (never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// Every (birth year, sex, prefecture) group must hold at least k people.
        #[arg(long, default_value_t = 5)]
        k: usize,
        /// Drop the rows of groups smaller than k instead of failing.
        #[arg(long)]
        suppress: bool,
        /// Generalize birth years to bands of this many years (1: the year).
        #[arg(long, default_value_t = 1)]
        birth_band: u16,
        /// A linkage-format key file for stable research ids across runs (default: a
        /// fresh random key per run).
        #[arg(long)]
        research_key: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum GrantCmd {
    /// Record an approval: job, reader, scope, expiry and the approval reference.
    #[command(
        after_help = "Example:\n  kakera grant create --job study-17 --reader anon-job-17 --kinds claim,checkup --sources any --expires 2027-03-31 --approval IRB-2026-017"
    )]
    Create {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The job's name (unique; a new approval needs a new name).
        #[arg(long)]
        job: String,
        /// The certificate name of the reader that runs the job.
        #[arg(long)]
        reader: String,
        /// Record kinds, comma-separated, or `any`.
        #[arg(long)]
        kinds: String,
        /// Source facilities, comma-separated, or `any`.
        #[arg(long)]
        sources: String,
        /// Subject tags (64 hex digits), comma-separated; default any.
        #[arg(long)]
        subjects: Option<String>,
        /// Expiry: a date (YYYY-MM-DD, end of day UTC) or an RFC 3339 time.
        #[arg(long)]
        expires: String,
        /// The review committee's approval reference.
        #[arg(long)]
        approval: String,
    },
    /// List every grant with its state.
    #[command(after_help = "Example:\n  kakera grant list --json")]
    List {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Revoke a grant: reads under it stop at once.
    #[command(
        after_help = "Example:\n  kakera grant revoke --job study-17 --reason \"consent withdrawn\""
    )]
    Revoke {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The job.
        #[arg(long)]
        job: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
enum NodeCmd {
    /// Stop placing shares on a node and move every share it holds elsewhere (masked
    /// repair, rack rule kept). --wait shows progress until it holds none.
    #[command(after_help = "Example:\n  kakera node drain 4 --reason \"disk replacement\" --wait")]
    Drain {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The config node id.
        node: u64,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// Wait until the node holds no share, with a progress bar.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout_s: u64,
    },
    /// Retire a drained node (it must hold no share); it may then be switched off.
    #[command(after_help = "Example:\n  kakera node decommission 4 --reason \"hardware retired\"")]
    Decommission {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The config node id.
        node: u64,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Give up on a dead node: its shares are regenerated on other nodes.
    #[command(after_help = "Example:\n  kakera node remove 4 --reason \"disk failed, node gone\"")]
    Remove {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The config node id.
        node: u64,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Return a node to service (after a drain, or a node newly added to the config).
    #[command(after_help = "Example:\n  kakera node add 4 --reason \"disk replaced\"")]
    Add {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The config node id.
        node: u64,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCmd {
    /// Verify records' shares (auditor role): light re-reads every node's digests;
    /// --deep also fetches all n shares and checks they form one sharing of the sealed
    /// digest. Exit 1 if any record has a problem. Every run is in the audit log.
    #[command(
        after_help = "Examples:\n  kakera audit verify --all\n  kakera audit verify --sample 500 --deep --rate 50\n  kakera audit verify --record 0192f3...e1 --json"
    )]
    Verify {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Records to verify (32 hex digits each).
        #[arg(long = "record", conflicts_with_all = ["all", "sample"])]
        records: Vec<String>,
        /// Every record in the catalog.
        #[arg(long, conflicts_with = "sample")]
        all: bool,
        /// A random sample of this many records.
        #[arg(long)]
        sample: Option<usize>,
        /// Fetch and check every share (not only the nodes' digests).
        #[arg(long)]
        deep: bool,
        /// Most MB/s of shares the audit makes nodes read, so it does not starve jobs.
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Print audit entries (oldest first); --verify checks the whole hash chain.
    #[command(
        after_help = "Examples:\n  kakera audit log --job study-17\n  kakera audit log --record 0192f3...e1 --json\n  kakera audit log --since 2026-11-01\n  kakera audit log --verify"
    )]
    Log {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Only entries naming this record id (32 hex digits).
        #[arg(long)]
        record: Option<String>,
        /// Only entries naming this job.
        #[arg(long)]
        job: Option<String>,
        /// Only entries at or after this date (YYYY-MM-DD) or RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// At most this many entries (default 10000 printed; an export takes all).
        #[arg(long)]
        limit: Option<usize>,
        /// Check the whole chain from the first entry to the head (exit 1 if broken).
        #[arg(long)]
        verify: bool,
        /// Write the selected entries to this new file as JSON lines signed with this
        /// auditor's key (check it with `kakera audit verify-export`).
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
    },
    /// Check a signed audit export offline: the signature, that the cluster CA issued
    /// the signer's certificate to an auditor, and every entry's hash and links.
    #[command(
        after_help = "Example:\n  kakera audit verify-export audit-2026-11.jsonl --ca ca/ca.crt.pem"
    )]
    VerifyExport {
        /// The export file.
        file: PathBuf,
        /// The cluster CA's certificate (PEM).
        #[arg(long)]
        ca: PathBuf,
    },
    /// Confirm that no node holds any share (committed or staged) of erased records:
    /// asks every node. Without --record or --subject, every tombstone is checked.
    /// Exit 1 unless every record is out of the catalog and on no node.
    #[command(
        after_help = "Examples:\n  kakera audit erasure\n  kakera audit erasure --record 0192f3...e1\n  kakera audit erasure --subject 5be1...09 --json"
    )]
    Erasure {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Records to check (32 hex digits each).
        #[arg(long = "record", conflicts_with = "subject")]
        records: Vec<String>,
        /// Every record erased with this subject's opt-out, and any still live.
        #[arg(long)]
        subject: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ZoneCmd {
    /// Generate the zone key pair: zone.pub for the config, and zone.key (mode 0600)
    /// or, with --custodians, one file per custodian.
    #[command(
        after_help = "Examples:\n  kakera zone keygen --out hsz-key\n  kakera zone keygen --out hsz-key --custodians 5 --threshold 3"
    )]
    Keygen {
        /// Directory to write the files to (nothing is overwritten).
        #[arg(long)]
        out: PathBuf,
        /// The zone the key belongs to.
        #[arg(long, default_value = "hsz")]
        zone: String,
        /// Split the private key among this many custodian files.
        #[arg(long, requires = "threshold")]
        custodians: Option<u8>,
        /// How many custodian files rebuild the key.
        #[arg(long, requires = "custodians")]
        threshold: Option<u8>,
    },
    /// Rebuild the zone private key from custodian files in memory and check it against
    /// the public key; with --out, write it (mode 0600) for a job inside the HSZ.
    #[command(
        after_help = "Example:\n  kakera zone unseal hsz-key/custodian-1.key hsz-key/custodian-4.key hsz-key/custodian-5.key"
    )]
    Unseal {
        /// Custodian files (at least the threshold).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write the rebuilt private key to this new file (mode 0600).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// How to reach a cluster: its config and this holder's certificate.
#[derive(clap::Args, Debug)]
struct ClusterArgs {
    /// The cluster config file.
    #[arg(long, env = "KAKERA_CONFIG")]
    config: PathBuf,
    /// This holder's certificate (PEM), issued by the cluster CA.
    #[arg(long, env = "KAKERA_CERT")]
    cert: PathBuf,
    /// This holder's private key (PEM).
    #[arg(long, env = "KAKERA_KEY")]
    key: PathBuf,
}

impl ClusterArgs {
    fn tls(&self, config: &ClusterConfig) -> TlsFiles {
        TlsFiles {
            ca: config.ca_cert.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }

    /// Loads the config and opens a connection (inside a tokio runtime).
    fn connect(&self) -> Result<Connection, ClientError> {
        let config = ClusterConfig::load(&self.config)?;
        let tls = self.tls(&config);
        Connection::open(config, &tls)
    }

    /// Loads the config and makes a data-path client (inside a tokio runtime).
    fn client(&self) -> Result<Client, ClientError> {
        let config = ClusterConfig::load(&self.config)?;
        let tls = self.tls(&config);
        Client::connect(config, &tls)
    }
}

/// Parses `YYYY-MM-DD` (with `end_of_day`: 23:59:59.999 UTC, else 00:00 UTC) or an
/// RFC 3339 time, to Unix ms.
fn parse_time(text: &str, end_of_day: bool) -> Result<u64, ClientError> {
    let bad = || {
        ClientError::Invalid(format!(
            "'{text}' is not a date (YYYY-MM-DD) or an RFC 3339 time (2026-11-21T09:00:00Z)"
        ))
    };
    let t = if let Ok(d) = Date::parse(text) {
        let month = time::Month::try_from(d.month).map_err(|_| bad())?;
        let date =
            time::Date::from_calendar_date(i32::from(d.year), month, d.day).map_err(|_| bad())?;
        let day = date.midnight().assume_utc();
        if end_of_day {
            day + time::Duration::days(1) - time::Duration::milliseconds(1)
        } else {
            day
        }
    } else {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map_err(|_| bad())?
    };
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad())
}

/// Splits a comma-separated list; `any` (or nothing) means no restriction.
fn list_arg(text: &str) -> Vec<String> {
    if text.trim().eq_ignore_ascii_case("any") {
        return Vec::new();
    }
    text.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn json_line(value: &serde_json::Value) {
    println!("{value}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn entry_json(e: &RecordEntry) -> serde_json::Value {
    serde_json::json!({
        "id": e.id.to_string(),
        "subject": hex(&e.meta.subject.0),
        "kind": e.meta.kind.as_str(),
        "data_kind": e.meta.data_kind,
        "source": e.meta.source,
        "effective": e.meta.effective.to_string(),
        "sealed_bytes": e.sealed_len,
        "sealed_digest": e.sealed_digest.to_string(),
        "k": e.k,
        "holders": e.holders.iter().map(|h| serde_json::json!({
            "node": h.node, "x": h.x, "digest": h.digest.to_string()
        })).collect::<Vec<_>>(),
        "committed_at": demo::format_ms(e.committed_at_ms),
    })
}

/// `ssmix2/OML-11`, or the kind alone.
fn kind_label(meta: &kakera_proto::RecordMeta) -> String {
    match &meta.data_kind {
        Some(d) => format!("{}/{d}", meta.kind.as_str()),
        None => meta.kind.as_str().to_string(),
    }
}

fn grant_json(g: &Grant, now_ms: u64) -> serde_json::Value {
    serde_json::json!({
        "job": g.job,
        "reader": g.reader,
        "kinds": g.scope.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        "sources": g.scope.sources,
        "subjects": g.scope.subjects.iter().map(|s| hex(&s.0)).collect::<Vec<_>>(),
        "expires": demo::format_ms(g.expires_at_ms),
        "approval": g.approval,
        "created": demo::format_ms(g.created_at_ms),
        "created_by": g.created_by,
        "active": g.active(now_ms),
        "revoked": g.revoked.as_ref().map(|r| serde_json::json!({
            "at": demo::format_ms(r.at_ms), "by": r.by, "reason": r.reason
        })),
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A runtime for the commands that talk to the cluster.
fn runtime() -> Result<tokio::runtime::Runtime, ClientError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Invalid(format!("cannot start the async runtime: {e}")))
}

#[derive(Subcommand, Debug)]
enum CaCmd {
    /// Create a new CA (ca.crt.pem, and ca.key.pem with mode 0600) in a directory.
    #[command(after_help = "Example:\n  kakera ca init --dir pki")]
    Init {
        /// Where to write the CA files.
        #[arg(long)]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "kakera cluster CA")]
        name: String,
    },
    /// Issue a certificate for a node, gateway, job, auditor or operator.
    #[command(
        after_help = "Examples:\n  kakera ca issue --ca-dir pki --role node --name node-1 --out data/node-1\n  kakera ca issue --ca-dir pki --role reader --zone hsz --name job-17"
    )]
    Issue {
        /// The CA directory (from `kakera ca init`).
        #[arg(long)]
        ca_dir: PathBuf,
        /// node, ingest, reader, auditor or operator.
        #[arg(long)]
        role: String,
        /// The holder's zone (`hsz` for readers that reconstruct records).
        #[arg(long)]
        zone: Option<String>,
        /// The holder's name (for nodes: the node name in the cluster config).
        #[arg(long)]
        name: String,
        /// Where to write <name>.crt.pem and <name>.key.pem (default: the CA directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Validate a cluster config and summarise it.
    #[command(after_help = "Example:\n  kakera config check cluster.toml")]
    Check {
        /// The config file.
        file: PathBuf,
    },
}

/// What a command found, beyond success or failure.
enum Outcome {
    /// All well.
    Ok,
    /// The command ran and found a problem it already reported (exit code 1).
    Problem,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli.command, json) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Problem) => ExitCode::from(1),
        Err(e) => {
            let code: u8 = match e {
                ClientError::Config(ConfigError::Invalid { .. } | ConfigError::Syntax { .. })
                | ClientError::Invalid(_)
                | ClientError::Proto(kakera_proto::ProtoError::Invalid { .. })
                | ClientError::Read { .. }
                | ClientError::Bench(_)
                | ClientError::Net(kakera_net::NetError::Refused { .. }) => 1,
                _ => 3,
            };
            eprintln!("error: {e}");
            if json {
                json_line(&serde_json::json!({ "error": e.to_string(), "exit_code": code }));
            }
            ExitCode::from(code)
        }
    }
}

/// Prints `value` as one JSON line in JSON mode, else the text lines `text` gives.
fn report(json: bool, value: serde_json::Value, text: impl FnOnce() -> Vec<String>) {
    if json {
        json_line(&value);
    } else {
        for line in text() {
            println!("{line}");
        }
    }
}

fn run(cmd: Cmd, json: bool) -> Result<Outcome, ClientError> {
    match cmd {
        Cmd::Ca(CaCmd::Init { dir, name }) => {
            let (cert, key) = pki::init_ca(&dir, &name)?;
            report(
                json,
                serde_json::json!({ "ca_cert": cert, "ca_key": key }),
                || {
                    vec![
                        format!("created CA certificate {}", cert.display()),
                        format!(
                            "created CA private key {} (mode 0600; keep it offline)",
                            key.display()
                        ),
                    ]
                },
            );
        }
        Cmd::Ca(CaCmd::Issue {
            ca_dir,
            role,
            zone,
            name,
            out,
        }) => {
            let role = Role::parse(&role).ok_or_else(|| {
                ClientError::Invalid(format!(
                    "unknown role '{role}': use one of node, ingest, reader, auditor, operator"
                ))
            })?;
            let out = out.unwrap_or_else(|| ca_dir.clone());
            let (cert, key) = pki::issue(
                &ca_dir,
                &out,
                &IssueRequest {
                    name: name.clone(),
                    role,
                    zone: zone.clone(),
                },
            )?;
            report(
                json,
                serde_json::json!({
                    "name": name, "role": role.as_str(), "zone": zone, "cert": cert, "key": key
                }),
                || {
                    vec![
                        format!("issued {} (role {role})", cert.display()),
                        format!("private key {} (mode 0600)", key.display()),
                    ]
                },
            );
        }
        Cmd::Config(ConfigCmd::Check { file }) => {
            let c = ClusterConfig::load(&file)?;
            let racks_used: std::collections::BTreeSet<&str> =
                c.nodes.iter().map(|n| n.rack.as_str()).collect();
            report(
                json,
                serde_json::json!({
                    "ok": true,
                    "cluster_id": c.cluster_id,
                    "nodes": c.nodes.len(),
                    "racks": racks_used,
                    "k": c.policy.k,
                    "n": c.policy.n,
                    "max_shares_per_rack": c.policy.max_shares_per_rack,
                    "voters": c.initial_voters(),
                    "backup_root": c.backup_root,
                    "metrics": c.nodes.iter().filter_map(|n| n.metrics_addr.map(|a| (n.name.clone(), a.to_string()))).collect::<std::collections::BTreeMap<_, _>>(),
                }),
                || {
                    vec![format!(
                        "ok: cluster '{}', {} nodes in {} racks, {}-of-{} with at most {} shares \
                         per rack, voters {:?}",
                        c.cluster_id,
                        c.nodes.len(),
                        racks_used.len(),
                        c.policy.k,
                        c.policy.n,
                        c.policy.max_shares_per_rack,
                        c.initial_voters()
                    )]
                },
            );
        }
        Cmd::Status { cluster } => return status(&cluster, json),
        Cmd::Backup {
            cluster,
            dir,
            timeout_s,
        } => return backup(&cluster, &dir, timeout_s, json),
        Cmd::Bench(args) => return bench(args, json),
        Cmd::Restore {
            backup_dir,
            config,
            node,
            node_binary,
        } => return restore(&backup_dir, &config, node, node_binary, json),
        Cmd::Ingest(IngestCmd::Ssmix2 {
            cluster,
            root,
            source,
            linkage_key,
            batch,
            withdrawn_out,
        }) => {
            return ingest_ssmix2(
                &cluster,
                &root,
                &source,
                &linkage_key,
                batch,
                withdrawn_out.as_deref(),
                json,
            );
        }
        Cmd::DemoData(DemoDataCmd::Ssmix2 {
            patients,
            out,
            facility,
            seed,
        }) => {
            if patients == 0 || patients > 1_000_000 {
                return Err(ClientError::Invalid(
                    "--patients must be 1 to 1000000".into(),
                ));
            }
            let g = kakera_client::ssmix2_gen::generate(&out, patients, &facility, seed)?;
            report(
                json,
                serde_json::json!({
                    "files": g.files, "current": g.current, "flag_0": g.deleted,
                    "bytes": g.bytes, "patients": g.patients, "out": out,
                }),
                || {
                    vec![format!(
                        "wrote {} files ({} current, {} with condition flag 0), {:.1} MB, for {} \
                         synthetic patients under {}",
                        g.files,
                        g.current,
                        g.deleted,
                        g.bytes as f64 / 1e6,
                        g.patients,
                        out.display()
                    )]
                },
            );
        }
        Cmd::Erase {
            cluster,
            subject,
            records,
            records_from,
            reason,
        } => return erase(&cluster, subject, records, records_from, &reason, json),
        Cmd::SubjectTag {
            facility,
            patient,
            linkage_key,
        } => {
            let key = LinkageKey::load(&linkage_key)?;
            let tag = key.subject_tag(&facility, &patient).to_string();
            report(json, serde_json::json!({ "subject": tag }), || {
                vec![tag.clone()]
            });
        }
        Cmd::Linkage(LinkageCmd::Keygen { out }) => {
            LinkageKey::generate()?.write(&out)?;
            report(json, serde_json::json!({ "linkage_key": out }), || {
                vec![format!(
                    "wrote linkage key {} (mode 0600): give it to the ingest gateway and the \
                     opt-out desk only, never to a node",
                    out.display()
                )]
            });
        }
        Cmd::Job(JobCmd::Anonymize {
            cluster,
            job,
            kinds,
            source,
            zone_key,
            out,
            k,
            suppress,
            birth_band,
            research_key,
        }) => {
            let job_args = AnonymizeArgs {
                birth_band,
                job,
                kinds: list_arg(&kinds),
                source,
                zone_key,
                out,
                k,
                suppress,
                research_key,
            };
            return job_anonymize(&cluster, &job_args, json);
        }
        Cmd::Grant(cmd) => return grant(cmd, json),
        Cmd::Node(cmd) => return node_cmd(cmd, json),
        Cmd::Audit(AuditCmd::Log {
            cluster,
            record,
            job,
            since,
            limit,
            verify,
            export,
        }) => {
            let query = AuditQuery {
                record: record.as_deref().map(RecordId::parse).transpose()?,
                job,
                since_ms: since.as_deref().map(|s| parse_time(s, false)).transpose()?,
                after_seq: 0,
                limit: 0,
            };
            if let Some(file) = export {
                if verify || json {
                    return Err(ClientError::Invalid(
                        "--export writes a file; run --verify or --json separately".into(),
                    ));
                }
                return audit_export(&cluster, query, limit.unwrap_or(usize::MAX), &file);
            }
            return audit_log(&cluster, query, limit.unwrap_or(10_000), json, verify);
        }
        Cmd::Audit(AuditCmd::VerifyExport { file, ca }) => return verify_export(&file, &ca, json),
        Cmd::Audit(AuditCmd::Erasure {
            cluster,
            records,
            subject,
        }) => {
            let records = records
                .iter()
                .map(|r| RecordId::parse(r))
                .collect::<Result<Vec<_>, _>>()?;
            let subject = subject.as_deref().map(SubjectTag::parse).transpose()?;
            return audit_erasure(&cluster, records, subject, json);
        }
        Cmd::Audit(AuditCmd::Verify {
            cluster,
            records,
            all,
            sample,
            deep,
            rate,
        }) => {
            let records = records
                .iter()
                .map(|r| RecordId::parse(r))
                .collect::<Result<Vec<_>, _>>()?;
            if records.is_empty() && !all && sample.is_none() {
                return Err(ClientError::Invalid(
                    "say which records: --record ID (repeatable), --all or --sample N".into(),
                ));
            }
            if rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
                return Err(ClientError::Invalid(
                    "--rate must be a positive MB/s".into(),
                ));
            }
            return audit_verify(&cluster, records, sample, deep, rate, json);
        }
        Cmd::List {
            cluster,
            subject,
            kind,
            source,
            limit,
        } => {
            let filter = match (subject, kind, source) {
                (Some(s), _, _) => ListFilter::Subject(SubjectTag::parse(&s)?),
                (_, Some(k), _) => ListFilter::Kind(RecordKind::parse(&k)?),
                (_, _, Some(f)) => ListFilter::Source(f),
                _ => ListFilter::All,
            };
            let entries = runtime()?.block_on(async {
                let c = cluster.client()?;
                let entries = c.list_all(filter, limit).await;
                c.close().await;
                entries
            })?;
            for e in &entries {
                if json {
                    json_line(&entry_json(e));
                } else {
                    println!(
                        "{}  {:<14} {:<12} {}  {:>10} B  subject {}",
                        e.id,
                        kind_label(&e.meta),
                        e.meta.source,
                        e.meta.effective,
                        e.sealed_len,
                        &hex(&e.meta.subject.0)[..16]
                    );
                }
            }
            if !json {
                println!("{} record(s)", entries.len());
            }
        }
        Cmd::Demo {
            config,
            identities,
            zone_key,
            records,
        } => {
            let config = ClusterConfig::load(&config)?;
            let files = demo::DemoFiles {
                dir: identities,
                zone_key,
            };
            let steps = runtime()?.block_on(demo::run(config, &files, records))?;
            let all_ok = steps.iter().all(|s| s.ok);
            if json {
                json_line(&serde_json::json!({
                    "ok": all_ok,
                    "steps": steps.iter().map(|s| serde_json::json!({ "ok": s.ok, "text": s.text })).collect::<Vec<_>>(),
                }));
            } else {
                for s in &steps {
                    println!("{}{}", if s.ok { "" } else { "UNEXPECTED: " }, s.text);
                }
                if all_ok {
                    println!("demo finished: every step behaved as promised");
                }
            }
            return Ok(if all_ok {
                Outcome::Ok
            } else {
                Outcome::Problem
            });
        }
        Cmd::Zone(ZoneCmd::Keygen {
            out,
            zone: zone_name,
            custodians,
            threshold,
        }) => {
            let custody = match (custodians, threshold) {
                (Some(custodians), Some(threshold)) => zone::Custody::Split {
                    custodians,
                    threshold,
                },
                _ => zone::Custody::Single,
            };
            let made = zone::keygen(&out, &zone_name, custody)?;
            report(
                json,
                serde_json::json!({
                    "zone": zone_name,
                    "public_key": made.public.to_hex(),
                    "public_file": made.public_file,
                    "secret_files": made.secret_files,
                }),
                || {
                    let mut lines = vec![format!(
                        "zone public key written to {}",
                        made.public_file.display()
                    )];
                    for f in &made.secret_files {
                        lines.push(format!(
                            "private key material written to {} (mode 0600)",
                            f.display()
                        ));
                    }
                    lines.push(format!(
                        "add to the cluster config:\nzone_public_key = \"{}\"",
                        made.public.to_hex()
                    ));
                    lines
                },
            );
        }
        Cmd::Zone(ZoneCmd::Unseal { files, out }) => {
            let (private, public) = zone::unseal(&files)?;
            if let Some(path) = &out {
                zone::write_private(path, "hsz", &private)?;
            }
            report(
                json,
                serde_json::json!({
                    "custodian_files": files.len(),
                    "public_key": public.to_hex(),
                    "private_key_file": out,
                }),
                || {
                    let mut lines = vec![format!(
                        "the {} custodian file(s) rebuild the zone key with public key {}",
                        files.len(),
                        public.to_hex()
                    )];
                    if let Some(path) = &out {
                        lines.push(format!(
                            "private key written to {} (mode 0600)",
                            path.display()
                        ));
                    }
                    lines
                },
            );
        }
    }
    Ok(Outcome::Ok)
}

fn grant(cmd: GrantCmd, json: bool) -> Result<Outcome, ClientError> {
    let rt = runtime()?;
    match cmd {
        GrantCmd::Create {
            cluster,
            job,
            reader,
            kinds,
            sources,
            subjects,
            expires,
            approval,
        } => {
            let kinds = list_arg(&kinds)
                .iter()
                .map(|k| RecordKind::parse(k))
                .collect::<Result<Vec<_>, _>>()?;
            let subjects = subjects
                .as_deref()
                .map(list_arg)
                .unwrap_or_default()
                .iter()
                .map(|s| SubjectTag::parse(s))
                .collect::<Result<Vec<_>, _>>()?;
            let grant = Grant {
                job: job.clone(),
                reader,
                scope: GrantScope {
                    kinds,
                    sources: list_arg(&sources),
                    subjects,
                },
                expires_at_ms: parse_time(&expires, true)?,
                approval,
                created_at_ms: 0,
                created_by: String::new(),
                revoked: None,
            };
            grant.validate(now_ms())?;
            rt.block_on(async {
                let c = cluster.client()?;
                let r = c.create_grant(grant).await;
                c.close().await;
                r
            })?;
            report(
                json,
                serde_json::json!({ "job": job, "created": true }),
                || vec![format!("grant for job {job} created")],
            );
        }
        GrantCmd::List { cluster } => {
            let grants = rt.block_on(async {
                let c = cluster.client()?;
                let r = c.grants().await;
                c.close().await;
                r
            })?;
            let now = now_ms();
            for g in &grants {
                if json {
                    json_line(&grant_json(g, now));
                } else {
                    let state = match (&g.revoked, g.active(now)) {
                        (Some(r), _) => format!("revoked by {} ({})", r.by, r.reason),
                        (None, true) => "active".to_string(),
                        (None, false) => "expired".to_string(),
                    };
                    let kinds: Vec<&str> = g.scope.kinds.iter().map(|k| k.as_str()).collect();
                    println!(
                        "{}  reader {}  kinds {}  sources {}  expires {}  approval {}  {}",
                        g.job,
                        g.reader,
                        if kinds.is_empty() {
                            "any".into()
                        } else {
                            kinds.join(",")
                        },
                        if g.scope.sources.is_empty() {
                            "any".into()
                        } else {
                            g.scope.sources.join(",")
                        },
                        demo::format_ms(g.expires_at_ms),
                        g.approval,
                        state
                    );
                }
            }
            if !json {
                println!("{} grant(s)", grants.len());
            }
        }
        GrantCmd::Revoke {
            cluster,
            job,
            reason,
        } => {
            rt.block_on(async {
                let c = cluster.client()?;
                let r = c.revoke_grant(&job, &reason).await;
                c.close().await;
                r
            })?;
            report(
                json,
                serde_json::json!({ "job": job, "revoked": true }),
                || vec![format!("grant for job {job} revoked")],
            );
        }
    }
    Ok(Outcome::Ok)
}

/// Records per verification round (one audit ticket each).
const VERIFY_CHUNK_RECORDS: usize = 512;

fn audit_verify(
    args: &ClusterArgs,
    records: Vec<RecordId>,
    sample: Option<usize>,
    deep: bool,
    rate_mb_s: Option<f64>,
    json: bool,
) -> Result<Outcome, ClientError> {
    use kakera_client::verify::{RecordReport, summary};
    let reports: Vec<RecordReport> = runtime()?.block_on(async {
        let c = args.client()?;
        let ids = if records.is_empty() {
            let all: Vec<RecordId> = c
                .list_all(ListFilter::All, usize::MAX)
                .await?
                .into_iter()
                .map(|e| e.id)
                .collect();
            match sample {
                Some(n) => sample_of(all, n)?,
                None => all,
            }
        } else {
            records
        };
        let started = std::time::Instant::now();
        let mut reports = Vec::with_capacity(ids.len());
        let mut bytes_read: u64 = 0;
        for chunk in ids.chunks(VERIFY_CHUNK_RECORDS) {
            let got = c.verify(chunk, deep).await?;
            // What the nodes read for this round: every share of every record.
            bytes_read += got.iter().map(|r| r.bytes_read).sum::<u64>();
            reports.extend(got);
            let elapsed = started.elapsed().as_secs_f64();
            if let Some(rate) = rate_mb_s {
                let due = bytes_read as f64 / (rate * 1e6);
                if due > elapsed {
                    tokio::time::sleep(std::time::Duration::from_secs_f64(due - elapsed)).await;
                }
            }
            let elapsed = started.elapsed().as_secs_f64().max(1e-3);
            let done = reports.len();
            let eta = elapsed / done as f64 * (ids.len() - done) as f64;
            eprint!(
                "\rverified {done}/{} records, {:.1} MB at {:.1} MB/s, ETA {eta:.0} s   ",
                ids.len(),
                bytes_read as f64 / 1e6,
                bytes_read as f64 / 1e6 / elapsed
            );
        }
        eprintln!();
        c.close().await;
        Ok::<_, ClientError>(reports)
    })?;
    let totals = summary(&reports);
    for r in &reports {
        if json {
            json_line(&serde_json::json!({
                "record": r.record.to_string(),
                "labels": r.labels(),
                "good_shares": r.good_shares,
                "n": r.n,
                "findings": r.findings,
            }));
        } else if !r.ok() {
            let details: Vec<String> = r.findings.iter().map(describe_finding).collect();
            println!(
                "{}  {}: {}",
                r.record,
                r.labels().join(", "),
                details.join("; ")
            );
        }
    }
    if json {
        json_line(
            &serde_json::json!({ "summary": totals, "records": reports.len(), "deep": deep }),
        );
    } else {
        let parts: Vec<String> = totals.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "{} records verified ({}): {}",
            reports.len(),
            if deep { "deep" } else { "light" },
            parts.join(", ")
        );
    }
    Ok(if reports.iter().all(RecordReport::ok) {
        Outcome::Ok
    } else {
        Outcome::Problem
    })
}

fn describe_finding(f: &kakera_client::verify::Finding) -> String {
    use kakera_client::verify::Finding;
    match f {
        Finding::Missing { node, rack } => format!("node {node} ({rack}) has no share"),
        Finding::Corrupt { node, rack } => {
            format!("node {node} ({rack}) holds a share that does not match the catalog digest")
        }
        Finding::Unreachable { node, rack, reason } => {
            format!("node {node} ({rack}) did not answer: {reason}")
        }
        Finding::Unexpected { node, rack } => {
            format!("node {node} ({rack}) holds a share the catalog does not give it")
        }
        Finding::Misplaced { rack, nodes, max } => format!(
            "rack {rack} holds {} shares (nodes {nodes:?}), more than {max}",
            nodes.len()
        ),
        Finding::Inconsistent { detail } => detail.clone(),
    }
}

/// `n` ids drawn at random without replacement.
fn sample_of(mut ids: Vec<RecordId>, n: usize) -> Result<Vec<RecordId>, ClientError> {
    // Partial Fisher-Yates with OS randomness.
    let n = n.min(ids.len());
    for i in 0..n {
        let mut r = [0u8; 8];
        getrandom::fill(&mut r)
            .map_err(|e| ClientError::Invalid(format!("the OS random source failed: {e}")))?;
        let j = i + (u64::from_le_bytes(r) % (ids.len() - i) as u64) as usize;
        ids.swap(i, j);
    }
    ids.truncate(n);
    Ok(ids)
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::File {
        path: path.to_path_buf(),
        source,
    })
}

fn audit_export(
    args: &ClusterArgs,
    query: AuditQuery,
    limit: usize,
    file: &std::path::Path,
) -> Result<Outcome, ClientError> {
    let signer = ExportSigner::load(&args.cert, &args.key)?;
    if signer.identity().role != Role::Auditor {
        return Err(ClientError::Invalid(format!(
            "{} is a {} certificate; only an auditor's certificate signs exports",
            args.cert.display(),
            signer.identity().role
        )));
    }
    if file.exists() {
        return Err(ClientError::Exists {
            path: file.to_path_buf(),
        });
    }
    let export_query = ExportQuery {
        record: query.record.map(|r| r.to_string()),
        job: query.job.clone(),
        since_ms: query.since_ms,
    };
    let (cluster_id, mut entries, head) = runtime()?.block_on(async {
        let c = args.client()?;
        let (entries, head) = c.audit_log(query, limit).await?;
        let id = c.config().cluster_id.clone();
        c.close().await;
        Ok::<_, ClientError>((id, entries, head))
    })?;
    // Entries appended while the pages were read lie beyond the head the file names.
    let head_seq = head.map_or(0, |(s, _)| s);
    entries.retain(|e| e.seq <= head_seq);
    let bytes = export::write_export(&signer, &cluster_id, now_ms(), export_query, head, &entries)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ClientError::Invalid("the export is not UTF-8".into()))?;
    pki::write_new(file, &text, 0o640)?;
    let range = match (entries.first(), entries.last()) {
        (Some(a), Some(b)) => format!("entries {}..{}", a.seq, b.seq),
        _ => "no entries".to_string(),
    };
    println!(
        "exported {} audit entries ({range}; log head {head_seq}) to {}, signed by {}",
        entries.len(),
        file.display(),
        signer.identity()
    );
    println!(
        "check it anywhere with: kakera audit verify-export {} --ca <cluster CA certificate>",
        file.display()
    );
    Ok(Outcome::Ok)
}

fn verify_export(
    file: &std::path::Path,
    ca: &std::path::Path,
    json: bool,
) -> Result<Outcome, ClientError> {
    let bytes = read_file(file)?;
    let ca_pem = String::from_utf8(read_file(ca)?)
        .map_err(|_| ClientError::Invalid(format!("{} is not a PEM file", ca.display())))?;
    match export::verify_export(&bytes, &ca_pem) {
        Ok(s) => {
            let range = s.seq_range.map_or("no entries".to_string(), |(a, b)| {
                format!("entries {a}..{b}")
            });
            report(
                json,
                serde_json::json!({
                    "verified": true,
                    "entries": s.header.entries,
                    "seq_range": s.seq_range,
                    "cluster_id": s.header.cluster_id,
                    "signed_by": s.exporter.to_string(),
                    "exported_at": demo::format_ms(s.header.exported_at_ms),
                    "complete": s.header.complete,
                    "head_seq": s.header.head_seq,
                    "runs": s.runs,
                }),
                || {
                    let mut lines = vec![format!(
                        "export verified: {} entries ({range}) of cluster '{}', signed by {} at {}",
                        s.header.entries,
                        s.header.cluster_id,
                        s.exporter,
                        demo::format_ms(s.header.exported_at_ms)
                    )];
                    lines.push(if s.header.complete {
                        format!(
                            "complete log: every link intact from entry 1 to the head ({})",
                            s.header.head_seq
                        )
                    } else {
                        format!(
                            "selection of the log (head was {}): links checked within {} run(s) \
                             of consecutive entries",
                            s.header.head_seq, s.runs
                        )
                    });
                    lines
                },
            );
            Ok(Outcome::Ok)
        }
        Err(flaw) => {
            report(
                json,
                serde_json::json!({ "verified": false, "flaw": flaw.to_string() }),
                || vec![format!("export NOT verified: {flaw}")],
            );
            Ok(Outcome::Problem)
        }
    }
}

fn ingest_ssmix2(
    args: &ClusterArgs,
    root: &std::path::Path,
    source: &str,
    linkage_key: &std::path::Path,
    batch: usize,
    withdrawn_out: Option<&std::path::Path>,
    json: bool,
) -> Result<Outcome, ClientError> {
    use std::io::{IsTerminal, Write};
    let key = LinkageKey::load(linkage_key)?;
    let tty = std::io::stderr().is_terminal();
    let mut last_line = std::time::Instant::now();
    let summary = runtime()?.block_on(async {
        let c = args.client()?;
        let s = ingest::ingest_ssmix2(&c, &key, root, source, batch, |p| {
            let done = p.files_done == p.files_total;
            if !json && (done || last_line.elapsed().as_millis() >= 1000 || tty) {
                last_line = std::time::Instant::now();
                let line = format!(
                    "{:>8}/{} files  {:>7.0} files/s  {:>6.2} MB/s  ETA {:>5.0} s",
                    p.files_done,
                    p.files_total,
                    p.files_per_s(),
                    p.mb_per_s(),
                    p.eta_s()
                );
                if tty {
                    eprint!("\r{line}");
                    if done {
                        eprintln!();
                    }
                } else {
                    eprintln!("{line}");
                }
                let _ = std::io::stderr().flush();
            }
        })
        .await;
        c.close().await;
        s
    })?;
    if let Some(path) = withdrawn_out {
        let text: String = summary
            .withdrawn
            .iter()
            .map(|id| format!("{id}\n"))
            .collect();
        pki::write_new(path, &text, 0o644)?;
    }
    if json {
        println!(
            "{}",
            serde_json::to_string(&summary)
                .map_err(|e| ClientError::Invalid(format!("encoding the summary: {e}")))?
        );
    } else {
        println!("files in the tree:            {}", summary.files);
        println!(
            "stored now:                   {} ({:.1} MB)",
            summary.stored,
            summary.stored_bytes as f64 / 1e6
        );
        println!("already stored (skipped):     {}", summary.already_stored);
        println!(
            "deleted at the source:        {} (condition flag 0, never stored)",
            summary.deleted_at_source
        );
        println!(
            "withdrawn since stored:       {}{}",
            summary.withdrawn.len(),
            if summary.withdrawn.is_empty() {
                String::new()
            } else {
                format!(
                    " (flag 0 now; an operator erases them: kakera erase --records-from {} \
                     --reason \"withdrawn at source\")",
                    withdrawn_out.map_or("<file>".into(), |p| p.display().to_string())
                )
            }
        );
        println!("erased before (not restored): {}", summary.erased);
        println!("opted-out subjects (refused): {}", summary.opted_out);
        println!("malformed paths (skipped):    {}", summary.malformed.len());
        for (p, why) in summary.malformed.iter().take(20) {
            println!("    {}: {why}", p.display());
        }
        println!("unreadable (skipped):         {}", summary.unreadable.len());
        for (p, why) in summary.unreadable.iter().take(20) {
            println!("    {}: {why}", p.display());
        }
    }
    Ok(Outcome::Ok)
}

fn erase(
    args: &ClusterArgs,
    subject: Option<String>,
    records: Vec<String>,
    records_from: Option<PathBuf>,
    reason: &str,
    json: bool,
) -> Result<Outcome, ClientError> {
    let mut ids = records
        .iter()
        .map(|r| RecordId::parse(r))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(path) = &records_from {
        let text = std::fs::read_to_string(path).map_err(|source| ClientError::File {
            path: path.clone(),
            source,
        })?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            ids.push(RecordId::parse(line).map_err(|e| {
                ClientError::Invalid(format!("{} line {}: {e}", path.display(), n + 1))
            })?);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    let subject = subject.map(|tag| SubjectTag::parse(&tag)).transpose()?;
    if subject.is_none() && ids.is_empty() {
        return Err(ClientError::Invalid(
            "say what to erase: --subject TAG, --record ID or --records-from FILE".into(),
        ));
    }
    let erased = runtime()?.block_on(async {
        let c = args.client()?;
        let targets: Vec<EraseTarget> = match subject {
            Some(tag) => vec![EraseTarget::Subject(tag)],
            None => ids
                .chunks(c.batch_records())
                .map(|c| EraseTarget::Records(c.to_vec()))
                .collect(),
        };
        let mut all = Vec::new();
        for t in targets {
            all.extend(c.erase(t, reason).await?);
        }
        c.close().await;
        Ok::<_, ClientError>(all)
    })?;
    report(
        json,
        serde_json::json!({
            "erased": erased.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }),
        || {
            let mut lines: Vec<String> = erased.iter().map(|id| format!("{id}  erased")).collect();
            lines.push(format!(
                "{} record(s) erased now (records erased before are not listed); every node \
                 deletes its shares and compacts them off disk. Check with `kakera audit erasure`.",
                erased.len()
            ));
            lines
        },
    );
    Ok(Outcome::Ok)
}

struct AnonymizeArgs {
    birth_band: u16,
    job: String,
    kinds: Vec<String>,
    source: Option<String>,
    zone_key: PathBuf,
    out: PathBuf,
    k: usize,
    suppress: bool,
    research_key: Option<PathBuf>,
}

/// Records read per read ticket in the anonymization job.
const JOB_READ_BATCH: usize = 256;

fn job_anonymize(
    args: &ClusterArgs,
    a: &AnonymizeArgs,
    json: bool,
) -> Result<Outcome, ClientError> {
    use kakera_client::anonymize::{self, ResearchKey};
    if a.k == 0 {
        return Err(ClientError::Invalid("--k must be at least 1".into()));
    }
    if a.birth_band == 0 || a.birth_band > 100 {
        return Err(ClientError::Invalid(
            "--birth-band must be 1 to 100 years".into(),
        ));
    }
    let key = match &a.research_key {
        Some(path) => {
            // A linkage-format file; its bytes key the research ids only.
            let lk = LinkageKey::load(path)?;
            ResearchKey::from_bytes(lk.subject_tag("kakera research id", "v1").0)
        }
        None => ResearchKey::random()?,
    };
    let zone_key = zone::load_private(&a.zone_key)?;
    let (records, failed) = runtime()?.block_on(async {
        let c = args.client()?.with_zone_key(zone_key);
        let filter = match &a.source {
            Some(f) => ListFilter::Source(f.clone()),
            None => ListFilter::Kind(RecordKind::Ssmix2),
        };
        let entries: Vec<RecordEntry> = c
            .list_all(filter, usize::MAX)
            .await?
            .into_iter()
            .filter(|e| e.meta.kind == RecordKind::Ssmix2)
            .filter(|e| {
                a.kinds.is_empty()
                    || e.meta
                        .data_kind
                        .as_ref()
                        .is_some_and(|d| a.kinds.contains(d))
            })
            .collect();
        let metas: std::collections::BTreeMap<RecordId, kakera_proto::RecordMeta> =
            entries.iter().map(|e| (e.id, e.meta.clone())).collect();
        let ids: Vec<RecordId> = entries.iter().map(|e| e.id).collect();
        let mut records = Vec::with_capacity(ids.len());
        let mut failed = Vec::new();
        for chunk in ids.chunks(JOB_READ_BATCH) {
            let batch = c.get_batch(&a.job, chunk).await?;
            for r in batch.records {
                if let Some(m) = metas.get(&r.id) {
                    records.push((r.id, m.clone(), r.data));
                }
            }
            failed.extend(batch.failed.into_iter().map(|(id, e)| (id, e.to_string())));
        }
        c.close().await;
        Ok::<_, ClientError>((records, failed))
    })?;
    let out = anonymize::anonymize(
        records.iter().map(|(id, m, d)| (*id, m, d.as_slice())),
        &key,
        anonymize::Policy {
            k: a.k,
            birth_band_years: a.birth_band,
            suppress: a.suppress,
        },
    );
    pki::write_new(&a.out, &anonymize::to_csv(&out.rows), 0o600)?;
    if json {
        let k_anonymous = out.small_groups.is_empty();
        json_line(&serde_json::json!({
            "job": a.job,
            "records_read": records.len(),
            "rows": out.rows.len(),
            "people": out.people,
            "out": a.out,
            "failed": failed.iter().map(|(id, why)| serde_json::json!({"record": id.to_string(), "reason": why.to_string()})).collect::<Vec<_>>(),
            "skipped": out.skipped.iter().map(|(id, why)| serde_json::json!({"record": id.to_string(), "reason": why.to_string()})).collect::<Vec<_>>(),
            "k": a.k,
            "k_anonymous": k_anonymous,
            "suppressed_rows": out.suppressed_rows,
            "small_groups": out.small_groups.iter().map(|g| serde_json::json!({
                "birth_year": g.birth_year.to_string(), "sex": g.sex.to_string(),
                "prefecture": g.prefecture.to_string(), "people": g.people,
            })).collect::<Vec<_>>(),
        }));
        return Ok(if failed.is_empty() && (k_anonymous || a.suppress) {
            Outcome::Ok
        } else {
            Outcome::Problem
        });
    }
    println!(
        "read {} record(s) under job '{}'; wrote {} row(s) for {} people to {}",
        records.len(),
        a.job,
        out.rows.len(),
        out.people,
        a.out.display()
    );
    for (id, why) in &failed {
        println!("    could not read {id}: {why}");
    }
    for (id, why) in &out.skipped {
        println!("    skipped {id}: {why}");
    }
    if out.small_groups.is_empty() {
        println!(
            "k-anonymity holds: every (birth year, sex, prefecture) group has at least {} people",
            a.k
        );
        return Ok(if failed.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Problem
        });
    }
    println!(
        "{} group(s) of (birth year, sex, prefecture) have fewer than {} people{}:",
        out.small_groups.len(),
        a.k,
        if a.suppress {
            format!("; their {} row(s) were left out", out.suppressed_rows)
        } else {
            String::new()
        }
    );
    for g in &out.small_groups {
        println!(
            "    {} {} {}: {} people",
            g.birth_year, g.sex, g.prefecture, g.people
        );
    }
    Ok(if a.suppress && failed.is_empty() {
        Outcome::Ok
    } else {
        if !a.suppress {
            println!(
                "the CSV breaks {}-anonymity: do not release it; re-run with --suppress or \
                 coarser groups",
                a.k
            );
        }
        Outcome::Problem
    })
}

fn audit_erasure(
    args: &ClusterArgs,
    mut records: Vec<RecordId>,
    subject: Option<SubjectTag>,
    json: bool,
) -> Result<Outcome, ClientError> {
    let reports = runtime()?.block_on(async {
        let c = args.client()?;
        if records.is_empty() {
            let tombs = c.tombstones(subject).await?;
            if !json {
                println!(
                    "{} erased record(s){}; asking every node about each",
                    tombs.len(),
                    subject.map_or(String::new(), |t| format!(
                        " of subject {}",
                        &hex(&t.0)[..16]
                    ))
                );
            }
            records.extend(tombs.iter().map(|t| t.id));
        }
        if let Some(tag) = subject {
            // Records of the subject still live (its erasure not finished, or never
            // asked for) are reported as not erased.
            let live = c.list_all(ListFilter::Subject(tag), usize::MAX).await?;
            records.extend(live.iter().map(|e| e.id));
        }
        records.sort_unstable();
        records.dedup();
        let mut reports = Vec::with_capacity(records.len());
        for chunk in records.chunks(c.batch_records()) {
            reports.extend(c.check_erasure(chunk).await?);
        }
        c.close().await;
        Ok::<_, ClientError>(reports)
    })?;
    let mut confirmed = 0;
    for r in &reports {
        if r.confirmed() {
            confirmed += 1;
        }
        if json {
            json_line(&serde_json::json!({
                "record": r.record.to_string(),
                "confirmed": r.confirmed(),
                "in_catalog": r.in_catalog,
                "remnants": r.remnants,
                "unreachable": r.unreachable.iter().map(|(n, rack, why)| serde_json::json!({"node": n, "rack": rack, "reason": why})).collect::<Vec<_>>(),
                "nodes_checked": r.nodes_checked,
            }));
            continue;
        }
        if r.confirmed() {
            println!(
                "{}  gone: not in the catalog, and none of {} nodes holds any share of it",
                r.record, r.nodes_checked
            );
            continue;
        }
        println!("{}  NOT confirmed erased:", r.record);
        if r.in_catalog {
            println!("    the record is live in the catalog (it was never erased)");
        }
        for m in &r.remnants {
            let what = match (m.committed, m.staged) {
                (true, true) => "a committed and a staged share",
                (true, false) => "a committed share",
                _ => "a staged share",
            };
            println!("    node {} ({}) still holds {what}", m.node, m.rack);
        }
        for (node, rack, why) in &r.unreachable {
            println!("    node {node} ({rack}) could not be checked: {why}");
        }
    }
    if !json {
        println!(
            "{confirmed} of {} record(s) confirmed erased on every node",
            reports.len()
        );
    }
    Ok(if confirmed == reports.len() {
        Outcome::Ok
    } else {
        Outcome::Problem
    })
}

fn audit_log(
    args: &ClusterArgs,
    query: AuditQuery,
    limit: usize,
    json: bool,
    verify: bool,
) -> Result<Outcome, ClientError> {
    let (entries, verdict) = runtime()?.block_on(async {
        let c = args.client()?;
        let verdict = if verify {
            Some(c.verify_audit_log().await?)
        } else {
            None
        };
        let (entries, _) = c.audit_log(query, limit).await?;
        c.close().await;
        Ok::<_, ClientError>((entries, verdict))
    })?;
    if !verify || json {
        for e in &entries {
            if json {
                json_line(&export::entry_json(e));
            } else {
                println!("{}", demo::describe(e));
            }
        }
    }
    match verdict {
        Some(Ok(n)) => {
            eprintln!("audit chain verified: {n} entries, every link intact up to the head");
            Ok(Outcome::Ok)
        }
        Some(Err(b)) => {
            eprintln!("audit chain BROKEN: {b}");
            Ok(Outcome::Problem)
        }
        None => Ok(Outcome::Ok),
    }
}

fn node_cmd(cmd: NodeCmd, json: bool) -> Result<Outcome, ClientError> {
    use kakera_proto::catalog::NodeMode;
    let (cluster, node, mode, reason, wait) = match cmd {
        NodeCmd::Drain {
            cluster,
            node,
            reason,
            wait,
            timeout_s,
        } => (
            cluster,
            node,
            NodeMode::Draining,
            reason,
            wait.then_some(timeout_s),
        ),
        NodeCmd::Decommission {
            cluster,
            node,
            reason,
        }
        | NodeCmd::Remove {
            cluster,
            node,
            reason,
        } => (cluster, node, NodeMode::Decommissioned, reason, None),
        NodeCmd::Add {
            cluster,
            node,
            reason,
        } => (cluster, node, NodeMode::Active, reason, None),
    };
    runtime()?.block_on(async {
        let c = cluster.client()?;
        c.set_node_mode(node, mode, &reason).await?;
        if !json {
            println!("node {node} is now {}", mode.as_str());
        }
        if let Some(timeout_s) = wait {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout_s);
            let mut first: Option<u64> = None;
            let started = std::time::Instant::now();
            // Bounded by the deadline.
            loop {
                let (nodes, repair) = c.topology().await?;
                let held = nodes.iter().find(|n| n.node == node).map_or(0, |n| n.shares);
                let total = *first.get_or_insert(held.max(1));
                let moved = total.saturating_sub(held);
                let rate = moved as f64 / started.elapsed().as_secs_f64().max(0.001);
                let eta = if rate > 0.0 { held as f64 / rate } else { f64::NAN };
                let width = 30usize;
                let filled = (moved as usize * width / total.max(1) as usize).min(width);
                eprint!(
                    "\rdraining node {node} [{}{}] {moved}/{total} shares moved, {rate:.1}/s, ETA {}   ",
                    "#".repeat(filled),
                    ".".repeat(width - filled),
                    if eta.is_finite() { format!("{eta:.0} s") } else { "?".into() }
                );
                if held == 0 && repair.pending == 0 {
                    eprintln!();
                    if !json {
                        println!("node {node} holds no share; decommission it with `kakera node decommission {node}`");
                    }
                    break;
                }
                if std::time::Instant::now() > deadline {
                    eprintln!();
                    report(
                        json,
                        serde_json::json!({ "node": node, "mode": mode.as_str(), "drained": false, "shares_left": held }),
                        || vec![format!("node {node} still holds {held} shares after {timeout_s} s; repair continues (see `kakera status`)")],
                    );
                    c.close().await;
                    return Ok(Outcome::Problem);
                }
                tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
            }
        }
        if json {
            json_line(&serde_json::json!({
                "node": node,
                "mode": mode.as_str(),
                "drained": wait.map(|_| true),
            }));
        }
        c.close().await;
        Ok(Outcome::Ok)
    })
}

fn status(args: &ClusterArgs, json: bool) -> Result<Outcome, ClientError> {
    let (report, topology) = runtime()?.block_on(async {
        let conn = args.connect()?;
        let answers = conn.status_all().await;
        let report = status::build(conn.config(), &answers);
        conn.close().await;
        // The leader's view of modes, health and repair (absent without a leader).
        let topology = match args.client() {
            Ok(c) => {
                let t = c.topology().await.ok();
                c.close().await;
                t
            }
            Err(_) => None,
        };
        Ok::<_, ClientError>((report, topology))
    })?;
    if json {
        let value = serde_json::json!({
            "cluster": report,
            "nodes": topology.as_ref().map(|(n, _)| n),
            "repair": topology.as_ref().map(|(_, r)| r),
        });
        let text = serde_json::to_string_pretty(&value)
            .map_err(|e| ClientError::Invalid(format!("cannot encode the report: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", status::render(&report));
        match &topology {
            Some((nodes, repair)) => {
                println!("leader's view (mode, health, shares held):");
                for n in nodes {
                    let silent = n
                        .silent_ms
                        .map_or("never heard".to_string(), |ms| format!("heard {ms} ms ago"));
                    println!(
                        "  node {:<4} {:<15} {:<8} {:>8} shares  {silent}",
                        n.node,
                        n.mode.as_str(),
                        n.health,
                        n.shares
                    );
                }
                println!(
                    "repair: {} moves pending, {} done by this leader, {} shares need a move, {} wait for a node{}",
                    repair.pending,
                    repair.done,
                    repair.needed,
                    repair.waiting,
                    repair
                        .last_error
                        .as_ref()
                        .map_or(String::new(), |e| format!("; last failure: {e}"))
                );
            }
            None => println!("leader's view: unavailable (no leader answered)"),
        }
    }
    let degraded = topology.as_ref().is_some_and(|(nodes, r)| {
        r.needed > 0
            || nodes.iter().any(|n| {
                n.health != "alive" && n.mode != kakera_proto::catalog::NodeMode::Decommissioned
            })
    });
    Ok(if report.healthy() && !degraded {
        Outcome::Ok
    } else {
        Outcome::Problem
    })
}

fn backup(
    args: &ClusterArgs,
    dir: &str,
    timeout_s: u64,
    json: bool,
) -> Result<Outcome, ClientError> {
    use kakera_proto::backup::PartState;
    let report = runtime()?.block_on(async {
        let c = args.client()?;
        eprintln!("backup into {dir}: waiting up to {timeout_s} s for every node's part");
        let r = c
            .backup(dir, std::time::Duration::from_secs(timeout_s))
            .await;
        c.close().await;
        r
    })?;
    let complete = report.complete();
    if json {
        json_line(&serde_json::to_value(&report).map_err(|e| ClientError::Invalid(e.to_string()))?);
    } else {
        println!(
            "backup {} at log index {} into <[backup] root>/{}/<rack>/<node>",
            report.backup, report.log_index, report.dir
        );
        for p in &report.parts {
            let state = match &p.state {
                PartState::Done(m) => format!(
                    "written: {} shares, {:.1} MB, catalog {:.1} MB",
                    m.shares,
                    m.share_bytes as f64 / 1e6,
                    m.catalog_bytes as f64 / 1e6
                ),
                PartState::Failed(why) => format!("FAILED: {why}"),
                PartState::Writing => "still writing".into(),
                PartState::Unknown => match &p.unreachable {
                    Some(why) => format!("no answer: {why}"),
                    None => "has not applied the backup entry".into(),
                },
            };
            println!("  {:<12} {:<10} {state}", p.name, p.rack);
        }
        if complete {
            println!(
                "complete: every node wrote its part; each rack's directory holds at most \
                 max_shares_per_rack shares of a record. Keep each rack's parts on that rack's store."
            );
        } else {
            println!(
                "INCOMPLETE: not every node wrote its part; fix the cause and take another backup"
            );
        }
    }
    Ok(if complete {
        Outcome::Ok
    } else {
        Outcome::Problem
    })
}

/// The kakera-node binary: as given, else beside this one, else on PATH.
fn node_binary_or_beside(given: Option<PathBuf>) -> PathBuf {
    given
        .or_else(|| {
            let beside = std::env::current_exe().ok()?.parent()?.join("kakera-node");
            beside.exists().then_some(beside)
        })
        .unwrap_or_else(|| PathBuf::from("kakera-node"))
}

fn bench(args: BenchArgs, json: bool) -> Result<Outcome, ClientError> {
    use kakera_client::bench::{self, stats};
    let size = |t: &str| stats::parse_size(t).map_err(ClientError::Invalid);
    let sizes = args
        .sizes
        .iter()
        .map(|s| size(s))
        .collect::<Result<Vec<_>, _>>()?;
    let own_dir = args.dir.is_none();
    let dir = match args.dir {
        Some(d) => d,
        None => {
            std::env::temp_dir().join(format!("kakera-bench-{}-{}", std::process::id(), now_ms()))
        }
    };
    let mut say = |line: String| eprintln!("{line}");
    if let Some(records) = args.scale_records {
        let opts = bench::scale::ScaleOptions {
            records,
            fill_bytes: size(&args.fill_bytes)?.max(1),
            probe_records: args.probe_records.max(1),
            probe_rounds: args.probe_rounds.max(1),
            probe_bytes: 1024,
            batch_bytes: size(&args.batch_bytes)?,
            concurrency: args.concurrency.max(1),
            catch_up: !args.no_catch_up,
            dir: dir.clone(),
            node_binary: node_binary_or_beside(args.node_binary),
        };
        let result = bench_runtime()?.block_on(bench::scale::run(&opts, &mut say));
        let report = finish_bench_dir(result, &dir, own_dir, args.keep)?;
        return write_bench_report(&report, &args.out, json, || bench::scale::render(&report));
    }
    let opts = bench::BenchOptions {
        sizes,
        concurrency: args.concurrency,
        bytes_per_size: size(&args.bytes_per_size)?,
        min_records: args.min_records.max(1),
        max_records: args.max_records.max(args.min_records.max(1)),
        batch_bytes: size(&args.batch_bytes)?,
        single_gets: args.single_gets,
        single_get_bytes: 1024,
        baseline: !args.no_baseline,
        repair: !args.no_repair,
        repair_timeout_s: args.repair_timeout_s,
        repair_parallel: args.repair_parallel,
        repair_rate_mb_s: args.repair_rate_mb_s,
        dir: dir.clone(),
        node_binary: node_binary_or_beside(args.node_binary),
    };
    let result = bench_runtime()?.block_on(bench::run(&opts, &mut say));
    let report = finish_bench_dir(result, &dir, own_dir, args.keep)?;
    write_bench_report(&report, &args.out, json, || {
        stats::render(&report.phases, &report.ratios, report.repair.as_ref())
    })
}

/// The benchmark's runtime: multi-threaded, since client work (sealing, splitting
/// and QUIC) uses every core, as a job would. The nodes stop when a benchmark returns
/// (its cluster drops).
fn bench_runtime() -> Result<tokio::runtime::Runtime, ClientError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Invalid(format!("cannot start the async runtime: {e}")))
}

/// Deletes the benchmark cluster's directory unless it is kept (or was the caller's
/// and the run failed: its logs say why).
fn finish_bench_dir<T>(
    result: Result<T, ClientError>,
    dir: &std::path::Path,
    own_dir: bool,
    keep: bool,
) -> Result<T, ClientError> {
    if !keep && (own_dir || result.is_ok()) {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            eprintln!("could not delete {}: {e}", dir.display());
        }
    } else {
        eprintln!("the cluster's files stay in {}", dir.display());
    }
    result
}

/// Writes the report as JSON to `out` and prints it (as JSON or as `table`).
fn write_bench_report<R: serde::Serialize>(
    report: &R,
    out: &std::path::Path,
    json: bool,
    table: impl FnOnce() -> String,
) -> Result<Outcome, ClientError> {
    let value = serde_json::to_value(report)
        .map_err(|e| ClientError::Invalid(format!("cannot encode the report: {e}")))?;
    let text = serde_json::to_string_pretty(&value)
        .map_err(|e| ClientError::Invalid(format!("cannot encode the report: {e}")))?;
    std::fs::write(out, text + "\n").map_err(|source| ClientError::File {
        path: out.to_path_buf(),
        source,
    })?;
    if json {
        json_line(&value);
    } else {
        print!("{}", table());
        println!("report written to {}", out.display());
    }
    Ok(Outcome::Ok)
}

fn restore(
    backup_dir: &std::path::Path,
    config: &std::path::Path,
    node: u64,
    node_binary: Option<PathBuf>,
    json: bool,
) -> Result<Outcome, ClientError> {
    let binary = node_binary_or_beside(node_binary);
    let out = std::process::Command::new(&binary)
        .arg("--config")
        .arg(config)
        .arg("--node")
        .arg(node.to_string())
        .arg("--restore-from")
        .arg(backup_dir)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "warn")
        .output()
        .map_err(|source| ClientError::File {
            path: binary.clone(),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let reason = stderr.lines().rev().find(|l| !l.trim().is_empty()).map_or(
            "kakera-node failed without a message".to_string(),
            |l| {
                // The log line's message: after the level and target.
                l.split_once(": ").map_or(l, |(_, m)| m).trim().to_string()
            },
        );
        return Err(ClientError::Invalid(format!(
            "restore of node {node} failed: {reason}"
        )));
    }
    let value: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| ClientError::Invalid(format!("kakera-node printed no restore report: {e}")))?;
    report(json, value.clone(), || {
        vec![format!(
            "node {node} restored as member {} at log index {}: {} shares ({:.1} MB), {} left \
             out, {} missing; catalog {}. Restore every node, then start them.",
            value["member"].as_str().unwrap_or("?"),
            value["log_index"],
            value["shares"],
            value["share_bytes"].as_f64().unwrap_or(0.0) / 1e6,
            value["skipped"],
            value["missing"],
            value["catalog_digest"].as_str().unwrap_or("?"),
        )]
    });
    Ok(Outcome::Ok)
}
