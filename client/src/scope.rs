//! Reading everything a grant covers, a batch at a time: [`Client::read_scope`].
//!
//! The job names its grant; the reader learns the grant's scope from the cluster,
//! lists the catalog through the narrowest filters that cover it
//! ([`GrantScope::list_filters`]), keeps the entries the scope covers and reads them
//! in batches bounded by count ([`Client::batch_records`]) and by sealed bytes
//! ([`SCOPE_BATCH_BYTES`]). Tickets are opened per batch with
//! [`Client::get_batch_each`], so a record erased (or opted out) between the listing
//! and the read comes back in [`ReadBatch::failed`] as a typed
//! [`ReadFailure::Refused`] and the job goes on. Memory holds one listing page and
//! one batch, whatever the size of the catalog.

use std::collections::VecDeque;

use kakera_proto::RecordId;
use kakera_proto::catalog::{Grant, ListFilter, MAX_LIST_PAGE, RecordEntry};

use crate::client::{Client, ReadBatch};
use crate::error::ClientError;

/// Most sealed bytes one batch of a scope read holds (a record larger than this is
/// read alone).
pub const SCOPE_BATCH_BYTES: u64 = 64 * 1024 * 1024;

/// A read of a grant's whole scope in progress; see the module docs.
pub struct ScopeRead<'c> {
    client: &'c Client,
    grant: Grant,
    /// Listing filters still to walk (the current one first); at most
    /// `MAX_SCOPE_ITEMS`, since each names one kind, source or subject of the grant.
    filters: VecDeque<ListFilter>,
    /// Where the current filter's listing continues.
    after: Option<RecordId>,
    /// Entries listed and covered but not read yet: at most one listing page.
    pending: VecDeque<RecordEntry>,
    /// Records listed so far (covered by the scope).
    listed: u64,
}

impl Client {
    /// Starts reading every record `job`'s grant covers (see [`ScopeRead`]). The
    /// grant must name this reader (a reader lists only its own grants).
    pub async fn read_scope(&self, job: &str) -> Result<ScopeRead<'_>, ClientError> {
        let grant = self
            .grants()
            .await?
            .into_iter()
            .find(|g| g.job == job)
            .ok_or_else(|| {
                ClientError::Invalid(format!(
                    "no grant for job '{job}' names this certificate: ask the operator which \
                     job names your grants (kakera grant list)"
                ))
            })?;
        Ok(ScopeRead {
            client: self,
            filters: grant.scope.list_filters().into(),
            grant,
            after: None,
            pending: VecDeque::new(),
            listed: 0,
        })
    }
}

impl ScopeRead<'_> {
    /// The grant being read (its scope, expiry, approval reference).
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// Records listed so far under the scope (read or reported failed).
    pub fn listed(&self) -> u64 {
        self.listed
    }

    /// The next batch: records read, and the ones that could not be, each with a
    /// typed reason. `None` once the whole scope has been walked. An error (the
    /// grant revoked or expired, the cluster unavailable) ends the read; the records
    /// of earlier batches stay valid.
    pub async fn next(&mut self) -> Result<Option<ReadBatch>, ClientError> {
        let ids = self.next_ids().await?;
        if ids.is_empty() {
            return Ok(None);
        }
        self.client
            .get_batch_each(&self.grant.job, &ids)
            .await
            .map(Some)
    }

    /// The ids of the next batch: listed entries the scope covers, up to the batch's
    /// count and byte bounds (a record over the byte bound goes alone). Empty when
    /// the scope is exhausted.
    async fn next_ids(&mut self) -> Result<Vec<RecordId>, ClientError> {
        let max_records = self.client.batch_records();
        let mut ids = Vec::new();
        let mut bytes = 0u64;
        // Bounded: each round either takes a pending entry, lists a page that moves
        // `after` forward, or drops a finished filter.
        loop {
            if let Some(entry) = self.pending.front() {
                let size = entry.sealed_len;
                if !ids.is_empty() && bytes.saturating_add(size) > SCOPE_BATCH_BYTES {
                    return Ok(ids);
                }
                bytes = bytes.saturating_add(size);
                ids.push(entry.id);
                self.pending.pop_front();
                if ids.len() >= max_records {
                    return Ok(ids);
                }
                continue;
            }
            let Some(filter) = self.filters.front().cloned() else {
                return Ok(ids);
            };
            let page_size = MAX_LIST_PAGE.min(u32::try_from(max_records).unwrap_or(u32::MAX));
            let page = self.client.list(filter, self.after, page_size).await?;
            let covered = page
                .entries
                .into_iter()
                .filter(|e| self.grant.scope.covers(&e.meta));
            for entry in covered {
                self.listed += 1;
                self.pending.push_back(entry);
            }
            match page.next {
                Some(next) => self.after = Some(next),
                None => {
                    self.filters.pop_front();
                    self.after = None;
                }
            }
        }
    }
}
