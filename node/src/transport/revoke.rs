//! `Request::Revoke`: an operator brings a CRL the cluster CA signed. The leader
//! checks the signature against the CAs it trusts (the state machine cannot: which
//! CAs a node trusts is its own file, not replicated state), then proposes it; every
//! node applies it to its TLS verifiers and connections (`crate::trust`).

use std::time::Duration;

use kakera_proto::revocation;
use kakera_proto::{ErrorKind, Identity, RequestId, Response};

use super::records::propose;
use super::server::{ServerContext, error};
use crate::raft::ClientAction;

/// How long the leader waits for its own keeper to put a recorded CRL in force
/// before it answers (the answer then means: this node refuses the certificates).
const IN_FORCE_WAIT_MS: u64 = 2_000;

/// Records a CRL; see the module docs.
pub async fn revoke(
    ctx: &ServerContext,
    identity: &Identity,
    request_id: RequestId,
    crl: Vec<u8>,
    certificates: Vec<Vec<u8>>,
) -> Response {
    let cas = ctx.trust.view().cas.clone();
    let cas: Vec<&[u8]> = cas.iter().map(Vec::as_slice).collect();
    if let Err(e) = revocation::verify_crl(&crl, &cas) {
        return error(ErrorKind::Forbidden, e.to_string());
    }
    let mut changes = ctx.trust.subscribe();
    changes.mark_unchanged();
    match propose(
        ctx,
        identity,
        request_id,
        ClientAction::Revoke { crl, certificates },
    )
    .await
    {
        Ok(log_index) => {
            let in_force =
                tokio::time::timeout(Duration::from_millis(IN_FORCE_WAIT_MS), changes.changed())
                    .await;
            if !matches!(in_force, Ok(Ok(()))) {
                tracing::warn!(
                    log_index,
                    "a recorded revocation was not in force on the leader within {IN_FORCE_WAIT_MS} ms"
                );
            }
            Response::Committed { log_index }
        }
        Err(r) => r,
    }
}
