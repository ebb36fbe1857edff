//! The Raft network over QUIC: each RPC is one request on its own stream to the target
//! node, payload encoded with the codec. Targets are the config's nodes, reached through
//! the daemon's peers (one connection per peer, shared with its other calls); a node
//! not in the config is unreachable.
//!
//! Appends are cut by bytes as well as by count: a request whose encoding exceeds the
//! append budget goes as several RPCs of at most the budget each (an entry larger
//! than the budget alone), in order, answered to openraft as one. Each append's
//! deadline follows the link: at least [`MIN_APPEND_TIMEOUT_MS`], four times the
//! smoothed round trip of recent appends, plus the time its bytes take at
//! [`MIN_APPEND_BYTES_PER_MS`], at most [`MAX_APPEND_TIMEOUT_MS`]: a follower that is
//! slow because the machine is loaded is waited for instead of its stream being
//! restarted every heartbeat.
//!
//! Snapshots stream from a RocksDB view of the live catalog, encoded as they are
//! sent, on their own QUIC stream, each piece read and written within
//! [`SNAPSHOT_IDLE_TIMEOUT_MS`]; the answer (after the receiver has installed it) is
//! awaited for [`SNAPSHOT_INSTALL_TIMEOUT_MS`] plus the time of its bytes at
//! [`MIN_APPEND_BYTES_PER_MS`].

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kakera_proto::{Request, Response, codec};
use openraft::OptionalSend;
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::base::{BoxFuture, BoxStream};
use openraft::entry::RaftEntry;
use openraft::errors::{
    NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;

use super::{SnapshotData, TypeConfig};
use kakera_net::{NetError, Peer};

/// Shortest deadline of one append RPC.
pub const MIN_APPEND_TIMEOUT_MS: u64 = 1_000;
/// Longest deadline of one append RPC: a follower that answers nothing for this long
/// is backed off and retried by openraft.
pub const MAX_APPEND_TIMEOUT_MS: u64 = 10_000;
/// The slowest link an append's or a snapshot's deadline allows for: 10 MB/s.
pub const MIN_APPEND_BYTES_PER_MS: u64 = 10_000;
/// Most time one snapshot chunk may take to be written to the receiver.
pub const SNAPSHOT_IDLE_TIMEOUT_MS: u64 = 30_000;
/// Time a receiver has to install a snapshot once its bytes have arrived, beyond
/// the time its bytes take at [`MIN_APPEND_BYTES_PER_MS`].
pub const SNAPSHOT_INSTALL_TIMEOUT_MS: u64 = 60_000;
/// Default byte budget of one append RPC.
pub const DEFAULT_APPEND_BUDGET_BYTES: u32 = 4 * 1024 * 1024;

/// Builds connections to the other nodes of the config.
pub struct QuicNetworkFactory {
    cluster_id: String,
    peers: BTreeMap<u64, Arc<Peer>>,
    append_budget_bytes: usize,
}

impl QuicNetworkFactory {
    /// A network over `peers` (config node id -> peer) for cluster `cluster_id`. Raft
    /// member ids map to nodes by `kakera_proto::ids::node_of`.
    pub fn new(cluster_id: &str, peers: BTreeMap<u64, Arc<Peer>>) -> Self {
        QuicNetworkFactory {
            cluster_id: cluster_id.to_string(),
            peers,
            append_budget_bytes: DEFAULT_APPEND_BUDGET_BYTES as usize,
        }
    }

    /// The same network cutting appends at `bytes` (`[raft] append_budget_bytes`).
    pub fn with_append_budget_bytes(mut self, bytes: u32) -> Self {
        self.append_budget_bytes = bytes.max(1) as usize;
        self
    }
}

/// A link to one node.
pub struct QuicConnection {
    cluster_id: String,
    target: u64,
    peer: Option<Arc<Peer>>,
    append_budget_bytes: usize,
    /// Smoothed round trip of recent appends (ms), 0 before the first.
    srtt_ms: f64,
}

impl RaftNetworkFactory<TypeConfig> for QuicNetworkFactory {
    type Network = QuicConnection;

    async fn new_client(
        &mut self,
        target: u64,
        _node: &openraft::impls::BasicNode,
    ) -> QuicConnection {
        QuicConnection {
            cluster_id: self.cluster_id.clone(),
            target,
            peer: self.peers.get(&kakera_proto::ids::node_of(target)).cloned(),
            append_budget_bytes: self.append_budget_bytes,
            srtt_ms: 0.0,
        }
    }
}

fn unreachable(e: impl std::fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&io::Error::other(e.to_string())))
}

fn network(e: impl std::fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&io::Error::other(e.to_string())))
}

/// The deadline of an append of `bytes` with `floor` from openraft and a smoothed
/// round trip of `srtt_ms` (module docs).
pub fn append_timeout(floor: Duration, srtt_ms: f64, bytes: usize) -> Duration {
    let floor_ms = (floor.as_millis() as u64).max(MIN_APPEND_TIMEOUT_MS);
    let rtt_ms = (srtt_ms.max(0.0) * 4.0) as u64;
    let transfer_ms = bytes as u64 / MIN_APPEND_BYTES_PER_MS;
    Duration::from_millis(
        (floor_ms.max(rtt_ms) + transfer_ms).clamp(floor_ms, MAX_APPEND_TIMEOUT_MS),
    )
}

/// Cuts `rpc` into requests of at most `budget` encoded bytes of entries each, in
/// order, each starting where the previous one ended; an entry over the budget goes
/// alone. A request within the budget comes back whole.
pub fn split_append(
    rpc: AppendEntriesRequest<TypeConfig>,
    budget: usize,
) -> Result<Vec<AppendEntriesRequest<TypeConfig>>, kakera_proto::ProtoError> {
    let mut parts = Vec::new();
    let mut group = Vec::new();
    let mut group_bytes = 0usize;
    let mut prev = rpc.prev_log_id;
    let mut group_prev = prev;
    for entry in rpc.entries {
        let size = codec::encode(&entry)?.len();
        if !group.is_empty() && group_bytes + size > budget {
            parts.push(AppendEntriesRequest {
                vote: rpc.vote,
                prev_log_id: group_prev,
                entries: std::mem::take(&mut group),
                leader_commit: rpc.leader_commit,
            });
            group_bytes = 0;
            group_prev = prev;
        }
        prev = Some(entry.log_id());
        group_bytes += size;
        group.push(entry);
    }
    parts.push(AppendEntriesRequest {
        vote: rpc.vote,
        prev_log_id: group_prev,
        entries: group,
        leader_commit: rpc.leader_commit,
    });
    Ok(parts)
}

impl QuicConnection {
    /// One append RPC of already-encoded `bytes`, under the adaptive deadline; a
    /// success updates the smoothed round trip.
    async fn append_encoded(
        &mut self,
        bytes: Vec<u8>,
        floor: Duration,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let timeout = append_timeout(floor, self.srtt_ms, bytes.len());
        let body = Request::RaftAppend {
            to: self.target,
            payload: bytes,
        };
        let started = Instant::now();
        let res = self.call(body, &[], timeout).await;
        if res.is_ok() {
            let rtt = started.elapsed().as_secs_f64() * 1000.0;
            self.srtt_ms = if self.srtt_ms == 0.0 {
                rtt
            } else {
                0.875 * self.srtt_ms + 0.125 * rtt
            };
        }
        res
    }

    /// An append within the byte budget: one RPC when it fits, else its parts in
    /// order, answered as one (module docs).
    async fn append_budgeted(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        floor: Duration,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let bytes = codec::encode(&rpc).map_err(network)?;
        if bytes.len() <= self.append_budget_bytes || rpc.entries.len() <= 1 {
            return self.append_encoded(bytes, floor).await;
        }
        drop(bytes);
        let parts = split_append(rpc, self.append_budget_bytes).map_err(network)?;
        let count = parts.len();
        // The last entry the follower has confirmed, part by part.
        let mut matched = None;
        for (i, part) in parts.into_iter().enumerate() {
            let last = part.entries.last().map(|e| e.log_id());
            let bytes = codec::encode(&part).map_err(network)?;
            match self.append_encoded(bytes, floor).await? {
                AppendEntriesResponse::Success if i + 1 == count => {
                    return Ok(AppendEntriesResponse::Success);
                }
                AppendEntriesResponse::Success => matched = last,
                AppendEntriesResponse::PartialSuccess(m) => {
                    return Ok(AppendEntriesResponse::PartialSuccess(m));
                }
                // The first part failed its prev check: the whole request did.
                AppendEntriesResponse::Conflict if i == 0 => {
                    return Ok(AppendEntriesResponse::Conflict);
                }
                // A later part cannot conflict where the earlier one matched, unless
                // the follower changed meanwhile: report what did match.
                AppendEntriesResponse::Conflict => {
                    return Ok(AppendEntriesResponse::PartialSuccess(matched));
                }
                other => return Ok(other),
            }
        }
        Ok(AppendEntriesResponse::Success)
    }

    async fn call<T: serde::Serialize + DeserializeOwned>(
        &self,
        body: Request,
        trailer: &[u8],
        timeout: Duration,
    ) -> Result<T, RPCError<TypeConfig>> {
        let peer = self.peer.as_ref().ok_or_else(|| {
            unreachable(format!("node {} is not in the cluster config", self.target))
        })?;
        let (response, _) = peer
            .call_full(&self.cluster_id, body, &[trailer], 0, timeout)
            .await
            .map_err(net_error)?;
        decode_raft(response)
    }
}

fn net_error(e: NetError) -> RPCError<TypeConfig> {
    match e {
        // A revoked or expired certificate, ours or the peer's: back off as from a
        // node that is down rather than retry at once.
        NetError::Peer { .. } | NetError::CertificateRefused { .. } => unreachable(e),
        NetError::Refused { kind, message, .. } => network(format!("{kind:?}: {message}")),
        other => network(other),
    }
}

fn decode_raft<T: serde::Serialize + DeserializeOwned>(
    response: Response,
) -> Result<T, RPCError<TypeConfig>> {
    let bytes = match response {
        Response::Raft(bytes) => bytes,
        _ => {
            return Err(network(
                "the peer answered a Raft RPC with another kind of answer",
            ));
        }
    };
    let result: Result<T, RaftError<TypeConfig>> = codec::decode(&bytes).map_err(network)?;
    result.map_err(unreachable)
}

impl RaftNetworkV2<TypeConfig> for QuicConnection {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.append_budgeted(rpc, option.hard_ttl()).await
    }

    /// Sequential like openraft's default, through the byte budget and the adaptive
    /// deadline; a request answered in part ends the stream (openraft opens the next
    /// one from what matched).
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>>
            + OptionalSend
            + Unpin
            + 'static,
    {
        let floor = option.hard_ttl();
        let strm = futures::stream::unfold(Some((self, input)), move |state| async move {
            let (net, mut input) = state?;
            let req = input.next().await?;
            let prev = req.prev_log_id;
            let last = req.entries.last().map(|e| e.log_id()).or(prev);
            match net.append_budgeted(req, floor).await {
                Ok(resp) => {
                    let whole = match &resp {
                        AppendEntriesResponse::PartialSuccess(partial) => *partial == last,
                        _ => true,
                    };
                    let result = resp.into_stream_result(prev, last);
                    let next = (result.is_ok() && whole).then_some((net, input));
                    Some((Ok(result), next))
                }
                Err(e) => Some((Err(e), None)),
            }
        });
        let strm: BoxStream<'s, _> = Box::pin(strm);
        Box::pin(async move { Ok(strm) })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let bytes = codec::encode(&rpc).map_err(network)?;
        let body = Request::RaftVote {
            to: self.target,
            payload: bytes,
        };
        self.call(body, &[], option.hard_ttl()).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let bytes = codec::encode(&rpc).map_err(network)?;
        let body = Request::RaftPreVote {
            to: self.target,
            payload: bytes,
        };
        self.call(body, &[], option.hard_ttl()).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let to_streaming = |e: RPCError<TypeConfig>| super::rpc_to_streaming(e);
        let super::SnapshotData::Live(mut stream) = snapshot.snapshot else {
            return Err(to_streaming(network(
                "only a live snapshot is sent (a received or file snapshot is installed where it is)",
            )));
        };
        let header = codec::encode(&(vote, snapshot.meta)).map_err(|e| to_streaming(network(e)))?;
        let peer = self.peer.clone().ok_or_else(|| {
            to_streaming(unreachable(format!(
                "node {} is not in the cluster config",
                self.target
            )))
        })?;
        let body = Request::RaftSnapshot {
            to: self.target,
            header,
        };
        let cluster_id = self.cluster_id.clone();
        let send = async move {
            let started = Instant::now();
            let (response, size_bytes) = peer
                .call_streaming(
                    &cluster_id,
                    body,
                    stream.receiver(),
                    kakera_net::StreamPacing {
                        idle: Duration::from_millis(SNAPSHOT_IDLE_TIMEOUT_MS),
                        answer: Duration::from_millis(SNAPSHOT_INSTALL_TIMEOUT_MS),
                        answer_bytes_per_ms: MIN_APPEND_BYTES_PER_MS,
                    },
                )
                .await
                .map_err(net_error)?;
            tracing::info!(
                peer = %peer.name(),
                size_bytes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "snapshot sent and installed"
            );
            decode_raft::<SnapshotResponse<TypeConfig>>(response)
        };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            res = send => res.map_err(to_streaming),
        }
    }
}
