//! What applying an entry asks the rest of the node to do. The state machine decides
//! ([`Effect`] values, one list per entry, after the entry's write batch is durable);
//! an [`EffectRunner`] outside `raft/` acts on them (`crate::effects`), as openraft's
//! engine returns commands for its runtime and quinn-proto leaves IO to its driver.
//! Nothing under `raft/` takes a checkpoint, purges a disk or wakes a task itself.

use kakera_proto::backup::BackupId;

/// One thing the node must do because of an applied entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A backup entry was applied: take this node's checkpoint now, before the next
    /// entry applies, so that it holds exactly the state at `log_index`.
    Checkpoint {
        /// The backup.
        backup: BackupId,
        /// Its directory under the config's `[backup] root`.
        dir: String,
        /// The entry's log index.
        log_index: u64,
        /// The entry's leader time (Unix ms): a replayed old entry writes no part.
        at_ms: u64,
    },
    /// Shares were erased in the entry's batch and their purge markers written:
    /// take their bytes off the disk (P6).
    PurgeErased,
    /// The catalog was replaced by a snapshot: committed shares must be swept
    /// against the new tombstones (records erased in entries never applied here).
    SweepAfterInstall,
    /// A certificate revocation list was recorded: refuse what it lists at the next
    /// handshake and close the connections it names.
    RevocationsChanged,
}

/// Performs [`Effect`]s. Called on the apply path, in entry order, after the entry's
/// write; a checkpoint is taken before `run` returns, every other effect only
/// signals a task of the node.
pub trait EffectRunner: Send + Sync {
    /// Performs `effect`.
    fn run(&self, effect: Effect);
}

/// A runner that performs nothing, for a state machine opened alone (storage tests,
/// a restore's offline replay).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEffects;

impl EffectRunner for NoEffects {
    fn run(&self, effect: Effect) {
        tracing::debug!(?effect, "effect not run: no runner attached");
    }
}
