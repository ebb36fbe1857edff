//! openraft's own storage conformance suite against kakera's RocksDB log store and
//! state machine (DESIGN: "storage checked by openraft's own test suite"). Guards P4:
//! a store that loses or reorders log entries, votes or applied state fails here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

use kakera_node::raft::TypeConfig;
use kakera_node::raft::log_store::LogStore;
use kakera_node::raft::state_machine::StateMachine;
use kakera_node::store;
use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use tempfile::TempDir;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let err = |e: std::io::Error| StorageError::read(TypeConfig::err_from_error(&e));
        let dir = TempDir::new().map_err(err)?;
        let db = store::open(&dir.path().join("db")).map_err(err)?;
        let sm = StateMachine::new(
            kakera_node::shares::ShareStore::new(db.clone()),
            dir.path().join("snapshots"),
            1,
        )
        .map_err(err)?;
        Ok((dir, LogStore::new(db), sm))
    }
}

#[test]
fn openraft_storage_conformance_suite_passes() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { Suite::test_all(RocksBuilder).await.unwrap() });
}
