//! The node's runner for what applied entries ask for ([`crate::raft::Effect`]): the
//! state machine decides, this acts. A backup checkpoint is taken here, on the apply
//! path, before the next entry applies; erasures and snapshot installs wake the
//! purger; checkpoints wake the backup exporter.

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
}

impl NodeEffects {
    /// A runner over the node's database and data directory. `purge` wakes the
    /// node's purger, `backups` its backup exporter.
    pub fn new(
        db: Arc<DB>,
        data_dir: PathBuf,
        purge: PurgeSignal,
        backups: Arc<Notify>,
    ) -> NodeEffects {
        NodeEffects {
            db,
            data_dir,
            purge,
            backups,
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
            Effect::SweepAfterInstall => self.purge.catalog_replaced(),
        }
    }
}
