//! Backup requests at the leader (operator): one Raft entry, at which every node
//! checkpoints its state; what the nodes do with it is in `crate::backup`.

use kakera_proto::backup::{BackupId, validate_backup_dir};
use kakera_proto::{ErrorKind, Identity, RequestId, Response};

use super::records::{internal, propose_for};
use super::server::{ServerContext, error};
use crate::raft::{ClientAction, CommandResponse};

/// Starts a backup into `dir` (under the config's `[backup] root`): answers once the
/// entry is committed and applied at the leader, with the backup's id and index.
pub async fn start(
    ctx: &ServerContext,
    identity: &Identity,
    request_id: RequestId,
    dir: String,
) -> Response {
    if let Err(e) = validate_backup_dir(&dir) {
        return error(ErrorKind::BadRequest, e.to_string());
    }
    if ctx.config.backup_root.is_none() {
        return error(
            ErrorKind::BadRequest,
            "the cluster config has no [backup] root: add one (each rack's backup store \
             mounted at that path on its nodes), restart the nodes, and ask again",
        );
    }
    let mut id = [0u8; 16];
    if let Err(e) = getrandom::fill(&mut id) {
        return internal(format!("no randomness for a backup id: {e}"));
    }
    let backup = BackupId(id);
    match propose_for(
        ctx,
        identity,
        request_id,
        ClientAction::Backup { backup, dir },
    )
    .await
    {
        Ok((log_index, CommandResponse::Applied)) => {
            tracing::info!(peer = %identity.name, %backup, log_index, "backup started");
            Response::BackupStarted { backup, log_index }
        }
        Ok((_, other)) => internal(format!("backup applied with answer {other:?}")),
        Err(r) => r,
    }
}
