//! The node's runner for what applied entries ask for ([`crate::raft::Effect`]): the
//! state machine decides, this acts. A backup checkpoint is taken here, on the apply
//! path, before the next entry applies; erasures and snapshot installs wake the
//! purger; checkpoints wake the backup exporter; revocations (and snapshot installs)
//! wake the TLS keeper.

use std::path::PathBuf;
use std::sync::Arc;

use rocksdb::DB;
use tokio::sync::Notify;

use crate::erasure::PurgeSignal;
use crate::raft::{Effect, EffectRunner};

/// Performs effects for one node.
pub struct NodeEffects {
    db: Arc<DB>,
    data_dir: PathBuf,
    purge: PurgeSignal,
    backups: Arc<Notify>,
    trust: Arc<crate::trust::Trust>,
}

impl NodeEffects {
    /// A runner over the node's database and data directory. `purge` wakes the
    /// node's purger, `backups` its backup exporter, `trust` its TLS keeper.
    pub fn new(
        db: Arc<DB>,
        data_dir: PathBuf,
        purge: PurgeSignal,
        backups: Arc<Notify>,
        trust: Arc<crate::trust::Trust>,
    ) -> NodeEffects {
        NodeEffects {
            db,
            data_dir,
            purge,
            backups,
            trust,
        }
    }
}

impl EffectRunner for NodeEffects {
    fn run(&self, effect: Effect) {
        match effect {
            Effect::Checkpoint {
                backup,
                dir,
                log_index,
                at_ms,
            } => {
                crate::backup::checkpoint_at_apply(
                    &self.db,
                    &self.data_dir,
                    backup,
                    &dir,
                    log_index,
                    at_ms,
                );
                self.backups.notify_one();
            }
            Effect::PurgeErased => self.purge.erased(),
            Effect::SweepAfterInstall => {
                self.purge.catalog_replaced();
                // The snapshot may hold CRLs this node never applied.
                self.trust.catalog_changed();
            }
            Effect::RevocationsChanged => self.trust.catalog_changed(),
        }
    }
}
