//! Scrubbing (issue 23, P3): every node re-reads, continuously and at `[health]
//! scrub_mb_s`, the shares its catalog says it holds, and reports to the leader each
//! one that is missing or whose bytes do not hash to the digest the catalog names
//! (`transport::report`). The leader confirms with this node before it repairs
//! anything. While the node serves the data path the pass runs at a quarter of that
//! rate (`crate::background`). A pass walks the catalog a page at a time in record
//! order and holds one page and one share; between passes it rests, so an idle
//! cluster does not spin.

use std::sync::Arc;
use std::time::Duration;

use kakera_proto::catalog::{
    ListFilter, MAX_SHARE_REPORTS, RecordEntry, ShareProblem, ShareReport,
};
use kakera_proto::{Digest, Identity, RecordId};
use tokio::sync::watch;

use crate::transport::repair::lock;
use crate::transport::server::ServerContext;

/// Catalog entries read per step.
const SCRUB_PAGE: u32 = 256;
/// Reports are sent at least this often while a pass finds bad shares.
const REPORT_EVERY_MS: u64 = 1_000;
/// Rest between two passes.
pub const PASS_REST_MS: u64 = 30_000;
/// The least one share counts against `scrub_mb_s`: one 4 KiB block, what reading
/// even a share of a hundred bytes takes from the disk, besides a catalog decode, a
/// lookup and a hash. Counted by its bytes alone, a catalog of small records was
/// scrubbed at tens of thousands of shares a second on every node, a load that grew
/// with the catalog (nothing to scrub when empty, a pass that never rests at 10^7).
pub const SHARE_COST_MIN_BYTES: u64 = 4096;

/// What checking one share of a record sealed at `sealed_len` bytes costs the
/// scrubber's budget (a Shamir share is as long as the sealed record).
pub fn share_cost_bytes(sealed_len: u64) -> u64 {
    sealed_len.max(SHARE_COST_MIN_BYTES)
}

/// The problem with this node's share of `entry`, if any: none stored (committed,
/// or staged with the catalog's digest after a snapshot), or bytes that do not hash
/// to the digest the catalog names for this node. `None` when it is sound or this
/// node is not a holder.
fn check(ctx: &ServerContext, entry: &RecordEntry) -> std::io::Result<Option<ShareProblem>> {
    let Some(holder) = entry.holder_on(ctx.node.id) else {
        return Ok(None);
    };
    let stored = match ctx.shares.committed(&entry.id)? {
        Some(s) => Some(s),
        None => ctx
            .shares
            .staged(&entry.id)
            .ok()
            .flatten()
            .filter(|s| s.digest == holder.digest),
    };
    Ok(match stored {
        None => Some(ShareProblem::Missing),
        Some(s) if Digest::of(&s.bytes) != holder.digest => Some(ShareProblem::Corrupt),
        Some(_) => None,
    })
}

/// Where `after` stands in the record-id space, in thousandths.
fn permille(after: Option<RecordId>) -> u64 {
    after.map_or(0, |id| u64::from(id.0[0]) * 1000 / 256)
}

/// Runs this node's scrubber until shutdown (not at all when `scrub_mb_s` is 0).
pub async fn run(ctx: Arc<ServerContext>, identity: Identity, mut shutdown: watch::Receiver<bool>) {
    let rate_mb_s = ctx.config.health.scrub_mb_s;
    lock(&ctx.view.scrub).rate_mb_s = rate_mb_s;
    if rate_mb_s == 0 {
        tracing::info!("scrubbing is off ([health] scrub_mb_s = 0)");
        return;
    }
    let mut cursor: Option<RecordId> = None;
    let mut found: Vec<ShareReport> = Vec::new();
    let mut last_report = tokio::time::Instant::now();
    let mut started = tokio::time::Instant::now();
    let mut spent_bytes = 0u64;
    let mut serving = ctx.view.foreground.watch();
    // Bounded by shutdown; every step reads one page and sleeps for its bytes.
    loop {
        if *shutdown.borrow() {
            return;
        }
        let step_ctx = ctx.clone();
        let after = cursor;
        let step = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let (page, next) = step_ctx.state.list(&ListFilter::All, after, SCRUB_PAGE)?;
            let (mut checked, mut bytes, mut bad) = (0u64, 0u64, Vec::new());
            for e in &page {
                if e.holder_on(step_ctx.node.id).is_none() {
                    continue;
                }
                checked += 1;
                bytes += share_cost_bytes(e.sealed_len);
                if let Some(problem) = check(&step_ctx, e)? {
                    bad.push(ShareReport {
                        record: e.id,
                        node: step_ctx.node.id,
                        problem,
                    });
                }
            }
            Ok((checked, bytes, bad, next))
        })
        .await;
        let (checked, bytes, bad, next) = match step {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "scrub step failed; trying again");
                rest(&mut shutdown, 1_000).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "scrub step panicked; trying again");
                rest(&mut shutdown, 1_000).await;
                continue;
            }
        };
        for b in &bad {
            tracing::warn!(record = %b.record, problem = b.problem.as_str(), "scrub: bad share");
        }
        {
            let mut p = lock(&ctx.view.scrub);
            p.checked += checked;
            p.bad += bad.len() as u64;
            p.position_permille = permille(next);
        }
        // Kept for the next report while the leader cannot be reached: at most one
        // report's worth (the next pass finds the rest again).
        let room = MAX_SHARE_REPORTS.saturating_sub(found.len());
        found.extend(bad.into_iter().take(room));
        let due = last_report.elapsed() >= Duration::from_millis(REPORT_EVERY_MS)
            || found.len() >= MAX_SHARE_REPORTS
            || next.is_none();
        if !found.is_empty() && due {
            match crate::transport::report::to_leader(&ctx, &identity, found.clone()).await {
                Ok(()) => found.clear(),
                Err(e) => {
                    tracing::info!(error = %e, "scrub: report not taken yet; it is sent again")
                }
            }
            last_report = tokio::time::Instant::now();
        }
        // Pacing: the bytes read so far against the rate since the pass started; a
        // step while the node serves requests counts four times (a quarter of the
        // pace: `crate::background`).
        let cost = crate::background::step_cost(bytes, serving.busy(&ctx.view.foreground));
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let wait_ms = crate::repair::pace_wait_ms(spent_bytes, cost, elapsed_ms, rate_mb_s);
        spent_bytes = spent_bytes.saturating_add(cost);
        if wait_ms > 0 {
            rest(&mut shutdown, wait_ms).await;
        }
        cursor = next;
        if cursor.is_none() {
            lock(&ctx.view.scrub).passes += 1;
            rest(&mut shutdown, PASS_REST_MS).await;
            started = tokio::time::Instant::now();
            spent_bytes = 0;
        }
    }
}

/// Sleeps `ms`, or less if the node shuts down.
async fn rest(shutdown: &mut watch::Receiver<bool>, ms: u64) {
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(ms)) => {}
        _ = shutdown.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page of small shares costs the scrubber a block each, so that the rate
    /// bounds the shares checked a second whatever their size: at the default
    /// 10 MB/s, 256 shares of 100 bytes wait as long as 1 MiB of large ones, and a
    /// share above a block counts its own length.
    #[test]
    fn a_small_share_costs_a_block() {
        assert_eq!(share_cost_bytes(100), 4096);
        assert_eq!(share_cost_bytes(0), 4096);
        assert_eq!(share_cost_bytes(16 << 20), 16 << 20);
        let page: u64 = (0..256).map(|_| share_cost_bytes(100)).sum();
        assert_eq!(page, 1 << 20);
        // Ten pages of small shares in 0 ms at 10 MB/s: the bucket (one second)
        // holds 9.5 of them, so the tenth waits.
        assert!(crate::repair::pace_wait_ms(9 * page, page, 0, 10) > 0);
    }
}
