//! A blocking wrapper around [`crate::Client`] for simple jobs and scripts: it owns a
//! small tokio runtime and runs each call to completion on it.

use kakera_config::ClusterConfig;
use kakera_net::TlsFiles;
use kakera_proto::RecordId;
use kakera_proto::catalog::{ListFilter, RecordEntry};

use crate::client::{self, NewRecord, ReadBatch, Record};
use crate::error::ClientError;
use crate::seal::ZonePrivateKey;

/// [`crate::Client`] with blocking calls. Do not use it from inside an async runtime.
pub struct Client {
    runtime: tokio::runtime::Runtime,
    inner: client::Client,
}

impl Client {
    /// Connects (see [`crate::Client::connect`]).
    pub fn connect(config: ClusterConfig, tls: &TlsFiles) -> Result<Client, ClientError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| ClientError::Invalid(format!("cannot start a runtime: {e}")))?;
        let inner = {
            let _guard = runtime.enter();
            client::Client::connect(config, tls)?
        };
        Ok(Client { runtime, inner })
    }

    /// Adds the zone private key (inside the high-security zone only).
    pub fn with_zone_key(self, key: ZonePrivateKey) -> Client {
        Client {
            runtime: self.runtime,
            inner: self.inner.with_zone_key(key),
        }
    }

    /// The async client, for calls this wrapper does not cover.
    pub fn inner(&self) -> &client::Client {
        &self.inner
    }

    /// See [`crate::Client::put`].
    pub fn put(&self, record: NewRecord) -> Result<RecordId, ClientError> {
        self.runtime.block_on(self.inner.put(record))
    }

    /// See [`crate::Client::put_batch`].
    pub fn put_batch(&self, records: Vec<NewRecord>) -> Result<Vec<RecordId>, ClientError> {
        self.runtime.block_on(self.inner.put_batch(records))
    }

    /// See [`crate::Client::get`].
    pub fn get(&self, job: &str, id: RecordId) -> Result<Record, ClientError> {
        self.runtime.block_on(self.inner.get(job, id))
    }

    /// See [`crate::Client::get_batch`].
    pub fn get_batch(&self, job: &str, ids: &[RecordId]) -> Result<ReadBatch, ClientError> {
        self.runtime.block_on(self.inner.get_batch(job, ids))
    }

    /// See [`crate::Client::list_all`].
    pub fn list(&self, filter: ListFilter, max: usize) -> Result<Vec<RecordEntry>, ClientError> {
        self.runtime.block_on(self.inner.list_all(filter, max))
    }
}
