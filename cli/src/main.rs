//! `kakera`: the command line for operators and auditors.
//!
//! Exit codes: 0 success; 1 the command ran and found a problem (invalid config,
//! refused request, unhealthy cluster); 2 bad usage (from the argument parser); 3 a file or the
//! environment is unusable.
// A command-line program: printing to stdout and stderr is its interface.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cmd::Outcome;

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

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Manage the cluster certificate authority.
    #[command(subcommand)]
    Ca(cmd::ca::CaCmd),
    /// Work with cluster config files.
    #[command(subcommand)]
    Config(cmd::config::ConfigCmd),
    /// Make and hold the zone key that records are sealed to.
    #[command(subcommand)]
    Zone(cmd::zone::ZoneCmd),
    /// Enter, list and revoke the review committee's grants (operator role).
    #[command(subcommand)]
    Grant(cmd::grant::GrantCmd),
    /// Planned node changes (operator role): drain, decommission, remove, add back.
    #[command(subcommand)]
    Node(cmd::node::NodeCmd),
    /// Read and verify the audit log (auditor or operator role).
    #[command(subcommand)]
    Audit(cmd::audit::AuditCmd),
    /// List committed records' metadata (reader, auditor or operator role).
    #[command(
        after_help = "Examples:\n  kakera list --kind claim\n  kakera list --source 1310000001 --json"
    )]
    List(cmd::records::ListArgs),
    /// Run the demo against a running cluster: grant, ingest, read inside the zone,
    /// refusals, audit trail (scripts/demo.sh sets it up).
    #[command(
        after_help = "Example:\n  kakera demo --config .dev-cluster/cluster.toml --identities .dev-cluster/clients --zone-key .dev-cluster/zone/zone.key"
    )]
    Demo(cmd::demo::DemoArgs),
    /// Store an SS-MIX2 standard storage tree (ingest role): each current file becomes a
    /// record; re-runs store nothing twice.
    #[command(subcommand)]
    Ingest(cmd::medical::IngestCmd),
    /// Store files of any kind (ingest role): DICOM studies, waveforms, documents.
    /// Each file becomes one record, described by flags or a manifest; re-runs store
    /// nothing twice. Files that cannot be stored are named and skipped (exit 1).
    #[command(
        after_help = "Examples:\n  kakera put ct-2025-04/ --kind image --data-kind CT --source 1310000001 --patient-id 0000123 --date 2025-04-01 --linkage-key linkage.key\n  kakera put --manifest scans.jsonl --source 1310000001 --linkage-key linkage.key\n\nA manifest line: {\"path\": \"ct/0001.dcm\", \"kind\": \"image\", \"patient_id\": \"0000123\", \"date\": \"2025-04-01\", \"data_kind\": \"CT\"}"
    )]
    Put(cmd::files::PutArgs),
    /// Read records to files or stdout (HSZ reader under a grant): named records, or
    /// everything the grant covers (--all). Records that cannot be read (erased,
    /// outside the grant) are named and skipped (exit 1).
    #[command(
        after_help = "Examples:\n  kakera get --job study-42 --zone-key zone.key --out records/ --all\n  kakera get --job study-42 --zone-key zone.key --out - 0192f3...e1 > record.dcm"
    )]
    Get(cmd::files::GetArgs),
    /// Write synthetic source data for demos and tests (no real person).
    #[command(subcommand, name = "demo-data")]
    DemoData(cmd::medical::DemoDataCmd),
    /// Erase records or every record of a subject (operator role; opt-out). Shares
    /// leave every node's disk; the catalog keeps a tombstone; the subject's records
    /// are refused from then on.
    #[command(
        after_help = "Examples:\n  kakera erase --subject 5be1...09 --reason \"opt-out OPT-2026-0042\"\n  kakera erase --record 0192f3...e1 --reason \"withdrawn at source\"\n  kakera erase --records-from withdrawn.txt --reason \"SS-MIX2 condition flag 0\""
    )]
    Erase(cmd::records::EraseArgs),
    /// Compute a subject tag from a facility and a patient id with the linkage key
    /// (for opt-out requests that arrive with a patient id).
    #[command(
        name = "subject-tag",
        after_help = "Example:\n  kakera subject-tag --facility 1310000001 --patient 0001000007 --linkage-key linkage.key"
    )]
    SubjectTag(cmd::medical::SubjectTagArgs),
    /// Make the linkage key (patient ids to subject tags; kept by the linking step).
    #[command(subcommand)]
    Linkage(cmd::medical::LinkageCmd),
    /// Jobs that run inside the high-security zone under a grant.
    #[command(subcommand)]
    Job(cmd::medical::JobCmd),
    /// Take a consistent cluster backup (operator role): one Raft entry, at which every
    /// node writes its part (RocksDB checkpoint of its shares and the catalog as a
    /// Raft snapshot) to <[backup] root>/<DIR>/<rack>/<node>/ on its own machine.
    /// Mount each rack's backup store at the root on that rack's nodes: no store then
    /// holds k shares of any record. Exit 1 unless every node wrote its part.
    #[command(
        after_help = "Examples:\n  kakera backup 2026-11-21\n  kakera backup nightly/2026-11-21 --timeout-s 3600 --json"
    )]
    Backup(cmd::backup::BackupArgs),
    /// Build this node's data directory from its part of a backup, offline, for a
    /// fresh cluster: run it for every node (on the node's machine, with its rack's
    /// backup store mounted) before starting any. Runs `kakera-node --restore-from`.
    #[command(
        after_help = "Example:\n  kakera restore /var/backups/kakera/2026-11-21 --config cluster.toml --node 3\n\nThe data directory must hold no database; certificates may already be there."
    )]
    Restore(cmd::backup::RestoreArgs),
    /// Measure a local cluster: start five nodes in three racks (3 of 5) in a new
    /// directory, then put and get records of each size with secret sharing and with
    /// the replication baseline (three plain copies, one per rack, same nodes and
    /// commit path), single gets at low load, and repair after killing a node. Prints
    /// a table (or JSON with --json) and writes the report as JSON. Build release
    /// binaries first: debug figures say little.
    #[command(
        after_help = "Examples:\n  scripts/bench-cluster.sh   (release build with the baseline, then kakera bench)\n  cargo build --release -p kakera-node -p kakera-cli --features kakera-node/bench-baseline,kakera-cli/bench-baseline\n  target/release/kakera bench\n  target/release/kakera bench --sizes 1KiB,1MiB --concurrency 8 --out bench.json\n  target/release/kakera bench --sizes 16MiB --no-baseline --no-repair\n\nThe cluster's directory is deleted afterwards unless --keep is given; node logs are in its logs/."
    )]
    Bench(cmd::bench::BenchArgs),
    /// Show every node's state and the cluster's health (exit code 1 if unhealthy).
    #[command(
        after_help = "Example:\n  kakera status --config cluster.toml --cert ops.crt.pem --key ops.key.pem\n\nThe flags default to $KAKERA_CONFIG, $KAKERA_CERT and $KAKERA_KEY."
    )]
    Status(cmd::status::StatusArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli.command, json) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Problem) => ExitCode::from(1),
        Err(e) => {
            let code = e.exit_code();
            eprintln!("error: {e}");
            if json {
                cmd::json_line(&serde_json::json!({ "error": e.to_string(), "exit_code": code }));
            }
            ExitCode::from(code)
        }
    }
}

fn run(command: Cmd, json: bool) -> Result<Outcome, kakera_cli::CliError> {
    match command {
        Cmd::Ca(c) => cmd::ca::run(c, json),
        Cmd::Config(c) => cmd::config::run(c, json),
        Cmd::Zone(c) => cmd::zone::run(c, json),
        Cmd::Grant(c) => cmd::grant::run(c, json),
        Cmd::Node(c) => cmd::node::run(c, json),
        Cmd::Audit(c) => cmd::audit::run(c, json),
        Cmd::List(a) => cmd::records::list(a, json),
        Cmd::Erase(a) => cmd::records::run_erase(a, json),
        Cmd::Demo(a) => cmd::demo::run(a, json),
        Cmd::Ingest(c) => cmd::medical::ingest(c, json),
        Cmd::DemoData(c) => cmd::medical::demo_data(c, json),
        Cmd::Put(a) => cmd::files::put(a, json),
        Cmd::Get(a) => cmd::files::get(a, json),
        Cmd::SubjectTag(a) => cmd::medical::subject_tag(a, json),
        Cmd::Linkage(c) => cmd::medical::linkage(c, json),
        Cmd::Job(c) => cmd::medical::job(c, json),
        Cmd::Backup(a) => cmd::backup::run_backup(a, json),
        Cmd::Restore(a) => cmd::backup::run_restore(a, json),
        Cmd::Bench(a) => cmd::bench::run(a, json),
        Cmd::Status(a) => cmd::status::run(a, json),
    }
}
