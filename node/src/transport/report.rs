//! Bad shares reported and confirmed (issue 23, P3). Whoever reads a share can find
//! it bad: a node's scrubber (`crate::scrub`), a reader, an auditor. A report goes to
//! the leader, which records it in the audit log, then asks each named holder to
//! re-read its share (`Request::ScrubCheck`) and keeps only what the holder's own
//! bytes confirm: a share missing there, or one whose bytes do not hash to the
//! digest the catalog names. Confirmed shares wait in the leader's view until the
//! repairer assigns their in-place repair (`RepairCause::Corrupt`). A client that
//! reports good shares as bad changes nothing but the audit log.

use std::collections::BTreeMap;
use std::time::Duration;

use kakera_proto::catalog::{MAX_SHARE_REPORTS, ShareProblem, ShareReport};
use kakera_proto::{ErrorKind, Identity, RecordId, Request, RequestId, Response, ShareCheck};
use openraft::async_runtime::watch::WatchReceiver;

use super::records::{propose, share_checks};
use super::repair::lock;
use super::server::{ServerContext, error};
use crate::raft::ClientAction;

/// How long the leader waits for a holder to re-read the reported shares.
const CONFIRM_TIMEOUT_MS: u64 = 30_000;
/// Most confirmed bad shares the leader keeps waiting for repair.
pub const MAX_CONFIRMED: usize = 100_000;

/// `Request::ScrubCheck`: this node's shares of `records`, re-read.
pub async fn scrub_check(ctx: &ServerContext, records: Vec<RecordId>) -> Response {
    if records.len() > MAX_SHARE_REPORTS {
        return error(
            ErrorKind::TooLarge,
            format!("at most {MAX_SHARE_REPORTS} records per check"),
        );
    }
    share_checks(ctx, records).await
}

/// `Request::ReportShares` at the leader: audits the report, confirms it with the
/// holders, and keeps what they confirm for repair.
pub async fn report(
    ctx: &ServerContext,
    identity: &Identity,
    request_id: RequestId,
    reports: Vec<ShareReport>,
) -> Response {
    let log_index = match propose(
        ctx,
        identity,
        request_id,
        ClientAction::ReportShares {
            reports: reports.clone(),
        },
    )
    .await
    {
        Ok(i) => i,
        Err(r) => return r,
    };
    let confirmed = confirm(ctx, reports).await;
    if !confirmed.is_empty() {
        tracing::warn!(
            reporter = %identity.name,
            confirmed = confirmed.len(),
            "bad shares confirmed by their holders; repairing them in place"
        );
        let mut bad = lock(&ctx.view.bad_shares);
        for r in confirmed {
            let key = (r.record, r.node);
            if bad.len() >= MAX_CONFIRMED && !bad.contains_key(&key) {
                tracing::warn!(
                    "too many confirmed bad shares waiting; the scrubber will find the rest again"
                );
                break;
            }
            bad.insert(key, r);
        }
    }
    Response::Committed { log_index }
}

/// The reports each named holder confirms, asking every holder once for all of its
/// records. A report naming a node that is not the record's holder, or a holder that
/// cannot be asked, confirms nothing.
async fn confirm(ctx: &ServerContext, reports: Vec<ShareReport>) -> Vec<ShareReport> {
    let mut by_node: BTreeMap<u64, Vec<RecordId>> = BTreeMap::new();
    let mut expected = BTreeMap::new();
    for r in &reports {
        let holder = match ctx.state.record(&r.record) {
            Ok(Some(entry)) => entry.holder_on(r.node).map(|h| h.digest),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "catalog read failed while confirming a report");
                None
            }
        };
        if let Some(digest) = holder {
            by_node.entry(r.node).or_default().push(r.record);
            expected.insert((r.node, r.record), digest);
        }
    }
    let mut confirmed = Vec::new();
    for (node, records) in by_node {
        let answer = if node == ctx.node.id {
            Ok(scrub_check(ctx, records).await)
        } else {
            match ctx.peers.get(&node) {
                Some(p) => p
                    .call(
                        &ctx.cluster_id,
                        Request::ScrubCheck { records },
                        Duration::from_millis(CONFIRM_TIMEOUT_MS),
                    )
                    .await
                    .map_err(|e| e.to_string()),
                None => Err(format!("node {node} is not a peer")),
            }
        };
        let items: Vec<ShareCheck> = match answer {
            Ok(Response::ShareChecks { items }) => items,
            Ok(other) => {
                tracing::info!(node, answer = ?other, "a holder did not re-read its shares");
                continue;
            }
            Err(e) => {
                tracing::info!(node, error = %e, "a holder could not be asked to re-read its shares");
                continue;
            }
        };
        for c in items {
            let Some(want) = expected.get(&(node, c.record)) else {
                continue;
            };
            let problem = match &c.held {
                None => Some(ShareProblem::Missing),
                Some(h) if h.computed_digest != *want => Some(ShareProblem::Corrupt),
                Some(_) => None,
            };
            if let Some(problem) = problem {
                confirmed.push(ShareReport {
                    record: c.record,
                    node,
                    problem,
                });
            }
        }
    }
    confirmed
}

/// Sends `reports` to the leader (or handles them here when this node leads).
pub async fn to_leader(
    ctx: &ServerContext,
    identity: &Identity,
    reports: Vec<ShareReport>,
) -> Result<(), String> {
    let leader = ctx
        .raft
        .metrics()
        .borrow_watched()
        .current_leader
        .ok_or("no leader is known")?;
    let leader = kakera_proto::ids::node_of(leader);
    let answer = if leader == ctx.node.id {
        report(ctx, identity, kakera_net::fresh_request_id(), reports).await
    } else {
        let peer = ctx
            .peers
            .get(&leader)
            .ok_or_else(|| format!("the leader, node {leader}, is not a peer"))?;
        peer.call(
            &ctx.cluster_id,
            Request::ReportShares { reports },
            Duration::from_millis(CONFIRM_TIMEOUT_MS * 2),
        )
        .await
        .map_err(|e| e.to_string())?
    };
    match answer {
        Response::Committed { .. } => Ok(()),
        other => Err(format!("the leader did not take the report: {other:?}")),
    }
}
