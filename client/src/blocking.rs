//! A blocking wrapper around [`crate::Client`] for simple jobs and scripts: it owns a
//! small tokio runtime and runs each call to completion on it.
//!
//! It cannot block inside an async runtime (tokio would panic): there every call,
//! `connect` included, returns [`ClientError::Invalid`] saying so; use the async
//! [`crate::Client`] from async code, or create and call this wrapper on a thread of
//! its own (`std::thread::spawn`; tokio's `spawn_blocking` threads still carry the
//! runtime and are refused too). Call [`Client::close`] when done.

use std::future::Future;

use kakera_config::ClusterConfig;
use kakera_net::TlsFiles;
use kakera_proto::catalog::{Grant, ListFilter, RecordEntry, RecordState};
use kakera_proto::{RecordId, SubjectTag};

use crate::client::{self, IdentityFiles, NewRecord, Page, ReadBatch, Record};
use crate::error::ClientError;
use crate::seal::ZonePrivateKey;

/// Refuses to block where tokio would panic: inside an async runtime.
fn outside_runtime() -> Result<(), ClientError> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(ClientError::Invalid(
            "the blocking client was called from inside an async runtime, where it cannot \
             block: use kakera_client::Client (async) there, or call the blocking client \
             from a thread of its own (std::thread::spawn)"
                .into(),
        ));
    }
    Ok(())
}

/// [`crate::Client`] with blocking calls, for code without an async runtime.
pub struct Client {
    runtime: tokio::runtime::Runtime,
    inner: client::Client,
}

impl Client {
    /// Connects (see [`crate::Client::connect`]).
    pub fn connect(config: ClusterConfig, tls: &TlsFiles) -> Result<Client, ClientError> {
        outside_runtime()?;
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

    /// Connects as `identity`, trusting the config's CA (see
    /// [`crate::Client::connect_as`]).
    pub fn connect_as(
        config: ClusterConfig,
        identity: &IdentityFiles,
    ) -> Result<Client, ClientError> {
        let tls = identity.tls(&config);
        Client::connect(config, &tls)
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

    /// Runs one call to completion (refused inside an async runtime).
    fn run<T>(&self, call: impl Future<Output = Result<T, ClientError>>) -> Result<T, ClientError> {
        outside_runtime()?;
        self.runtime.block_on(call)
    }

    /// See [`crate::Client::put`].
    pub fn put(&self, record: NewRecord) -> Result<RecordId, ClientError> {
        self.run(self.inner.put(record))
    }

    /// See [`crate::Client::put_batch`].
    pub fn put_batch(&self, records: Vec<NewRecord>) -> Result<Vec<RecordId>, ClientError> {
        self.run(self.inner.put_batch(records))
    }

    /// See [`crate::Client::get`].
    pub fn get(&self, job: &str, id: RecordId) -> Result<Record, ClientError> {
        self.run(self.inner.get(job, id))
    }

    /// See [`crate::Client::get_batch`].
    pub fn get_batch(&self, job: &str, ids: &[RecordId]) -> Result<ReadBatch, ClientError> {
        self.run(self.inner.get_batch(job, ids))
    }

    /// See [`crate::Client::get_batch_each`].
    pub fn get_batch_each(&self, job: &str, ids: &[RecordId]) -> Result<ReadBatch, ClientError> {
        self.run(self.inner.get_batch_each(job, ids))
    }

    /// Starts reading everything `job`'s grant covers (see
    /// [`crate::Client::read_scope`]): an iterator of batches.
    pub fn read_scope(&self, job: &str) -> Result<ScopeRead<'_>, ClientError> {
        let inner = self.run(self.inner.read_scope(job))?;
        Ok(ScopeRead {
            client: self,
            inner,
            ended: false,
        })
    }

    /// One page of the listing (see [`crate::Client::list`]): at most
    /// `kakera_proto::catalog::MAX_LIST_PAGE` entries; pass `next` back as `after`.
    pub fn list_page(
        &self,
        filter: ListFilter,
        after: Option<RecordId>,
        limit: u32,
    ) -> Result<Page, ClientError> {
        self.run(self.inner.list(filter, after, limit))
    }

    /// Up to `max` entries, collected in memory (see [`crate::Client::list_all`]):
    /// for small listings; walk [`Client::list_page`] for large ones.
    pub fn list(&self, filter: ListFilter, max: usize) -> Result<Vec<RecordEntry>, ClientError> {
        self.run(self.inner.list_all(filter, max))
    }

    /// See [`crate::Client::grants`]: a reader gets the grants naming it.
    pub fn grants(&self) -> Result<Vec<Grant>, ClientError> {
        self.run(self.inner.grants())
    }

    /// See [`crate::Client::lookup`].
    pub fn lookup(
        &self,
        records: &[RecordId],
        subjects: &[SubjectTag],
    ) -> Result<(Vec<RecordState>, Vec<SubjectTag>), ClientError> {
        self.run(self.inner.lookup(records, subjects))
    }

    /// Closes the connections and stops the runtime.
    pub fn close(self) -> Result<(), ClientError> {
        outside_runtime()?;
        self.runtime.block_on(self.inner.close());
        Ok(())
    }
}

/// A blocking [`crate::ScopeRead`]: an iterator of batches, each a
/// `Result<ReadBatch, ClientError>`; it ends after the scope is walked or after the
/// first error (a revoked grant, the cluster unavailable).
pub struct ScopeRead<'c> {
    client: &'c Client,
    inner: crate::scope::ScopeRead<'c>,
    ended: bool,
}

impl ScopeRead<'_> {
    /// The grant being read.
    pub fn grant(&self) -> &Grant {
        self.inner.grant()
    }
}

impl Iterator for ScopeRead<'_> {
    type Item = Result<ReadBatch, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        let next = outside_runtime().and_then(|()| self.client.runtime.block_on(self.inner.next()));
        match next {
            Ok(Some(batch)) => Some(Ok(batch)),
            Ok(None) => {
                self.ended = true;
                None
            }
            Err(e) => {
                self.ended = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report
    use super::*;

    /// Inside an async runtime the blocking client says what to use instead; before,
    /// tokio panicked (a runtime dropped, or blocked on, in an async context).
    #[test]
    fn inside_a_runtime_the_blocking_client_refuses_instead_of_panicking() {
        let tls = TlsFiles {
            ca: "missing-ca.pem".into(),
            cert: "missing.crt.pem".into(),
            key: "missing.key.pem".into(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let refused =
            runtime.block_on(async { Client::connect(crate::verify::tests::config(), &tls).err() });
        match refused {
            Some(ClientError::Invalid(why)) => assert!(why.contains("async runtime"), "{why}"),
            other => panic!("expected a refusal naming the runtime, got {other:?}"),
        }
        // Outside a runtime it gets as far as the missing certificate files.
        assert!(!matches!(
            Client::connect(crate::verify::tests::config(), &tls),
            Err(ClientError::Invalid(_))
        ));
    }
}
