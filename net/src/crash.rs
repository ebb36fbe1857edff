//! Crash points: a test hook that kills this process with SIGKILL at a named step of
//! the write, read or repair path, so tests can check what survives a `kill -9` at
//! exactly that instant.
//!
//! Disarmed unless the process was started with `KAKERA_CRASH_FILE=<path>`. Then each
//! point reads that file; when it holds the point's name, the point removes the file
//! (one shot: the restarted process runs normally), writes the name to `<path>.hit`
//! (so a test knows the process died where it meant), and sends itself SIGKILL: no
//! destructor, flush or shutdown code runs, as with `kill -9` from outside. The points
//! are listed in [`POINTS`] and numbered in docs/design/paths.md.

use std::path::PathBuf;
use std::sync::OnceLock;

/// The environment variable that arms crash points.
pub const ENV: &str = "KAKERA_CRASH_FILE";

/// Every crash point, in path order (node side, then client side).
pub const POINTS: &[&str] = &[
    // Write path (node): shares synced to staging, before the answer.
    "stage.synced",
    // Write path (leader): commit request checked, before it is proposed.
    "commit.received",
    // Any node: an applied entry's batch not yet written / written, before the answer.
    "apply.before_write",
    "apply.after_write",
    // Write path (leader): commit applied, before the client hears of it.
    "commit.applied",
    // Read path (leader): read ticket committed, before the answer.
    "ticket.applied",
    // Read path (holder): shares read, before they are sent.
    "fetch.read",
    // Repair (leader): moves assigned through Raft, before any runs.
    "repair.assigned",
    // Repair (helper): masked term computed, before it is sent.
    "repair.contributed",
    // Repair (new holder): regenerated share staged, before the answer.
    "repair.staged",
    // Repair (leader): moves done, before the commit is proposed.
    "repair.before_commit",
    // Snapshot (receiving follower): the first chunk of an incoming snapshot
    // written to its .part file, before the rest arrives.
    "snapshot.receive.chunk",
    // Snapshot install (any node): the SST built and the install marker synced,
    // before the catalog is replaced.
    "snapshot.install.marked",
    // Snapshot install: the SST ingested, before the applied id and membership are
    // written and the marker cleared.
    "snapshot.install.ingested",
    // Erasure (any node): the erase entry applied (shares deleted, purge markers
    // written), before the purger runs.
    "erase.applied",
    // Erasure (any node): erased shares compacted off the disk, before the purge
    // markers are cleared.
    "erase.compacted",
    // Client: every share staged, before the commit is sent.
    "client.put.staged",
    // Client: commit acknowledged, before put returns.
    "client.put.committed",
    // Client: read ticket opened, before any share is fetched.
    "client.get.ticket",
    // Client: one erase round answered, before the next round or the return.
    "client.erase.round",
];

fn armed() -> Option<&'static PathBuf> {
    static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
    FILE.get_or_init(|| std::env::var_os(ENV).map(PathBuf::from))
        .as_ref()
}

/// Whether crash points are armed in this process (a test set-up; a production unit
/// must never set the variable).
pub fn is_armed() -> bool {
    armed().is_some()
}

/// Kills this process with SIGKILL if the crash file names `name`; otherwise returns.
/// Costs one environment lookup (cached) when disarmed.
pub fn point(name: &'static str) {
    debug_assert!(POINTS.contains(&name), "unlisted crash point {name}");
    let Some(path) = armed() else {
        return;
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    if text.trim() != name {
        return;
    }
    // Disarm first: if removal fails the restarted process would die again, which a
    // test sees; nothing else depends on it.
    let _ = std::fs::remove_file(path);
    let mut hit = path.clone().into_os_string();
    hit.push(".hit");
    let _ = std::fs::write(&hit, name);
    tracing::warn!(
        point = name,
        "crash point reached: killing this process (test hook)"
    );
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    // SIGKILL cannot be caught; should the call itself fail, end without cleanup.
    std::process::abort();
}
