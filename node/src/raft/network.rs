//! The Raft network over QUIC: each RPC is one request on its own stream to the target
//! node, payload encoded with the codec. Targets are the config's nodes, reached through
//! the daemon's peers (one connection per peer, shared with its other calls); a node
//! not in the config is unreachable.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use kakera_proto::{Request, Response, codec};
use openraft::OptionalSend;
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::errors::{
    NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;

use super::{SnapshotData, TypeConfig};
use kakera_net::{NetError, Peer};

/// Builds connections to the other nodes of the config.
pub struct QuicNetworkFactory {
    cluster_id: String,
    peers: BTreeMap<u64, Arc<Peer>>,
}

impl QuicNetworkFactory {
    /// A network over `peers` (config node id -> peer) for cluster `cluster_id`. Raft
    /// member ids map to nodes by `kakera_proto::ids::node_of`.
    pub fn new(cluster_id: &str, peers: BTreeMap<u64, Arc<Peer>>) -> Self {
        QuicNetworkFactory {
            cluster_id: cluster_id.to_string(),
            peers,
        }
    }
}

/// A link to one node.
pub struct QuicConnection {
    cluster_id: String,
    target: u64,
    peer: Option<Arc<Peer>>,
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
        }
    }
}

fn unreachable(e: impl std::fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&io::Error::other(e.to_string())))
}

fn network(e: impl std::fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&io::Error::other(e.to_string())))
}

impl QuicConnection {
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
            .call_full(&self.cluster_id, body, trailer, 0, timeout)
            .await
            .map_err(|e| match e {
                NetError::Peer { .. } => unreachable(e),
                NetError::Refused { kind, message, .. } => network(format!("{kind:?}: {message}")),
                other => network(other),
            })?;
        let bytes = match response {
            Response::Raft(bytes) => bytes,
            other => return Err(network(format!("unexpected answer {other:?}"))),
        };
        let result: Result<T, RaftError<TypeConfig>> = codec::decode(&bytes).map_err(network)?;
        result.map_err(unreachable)
    }
}

impl RaftNetworkV2<TypeConfig> for QuicConnection {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let bytes = codec::encode(&rpc).map_err(network)?;
        let body = Request::RaftAppend {
            to: self.target,
            payload: bytes,
        };
        self.call(body, &[], option.hard_ttl()).await
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

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let data = snapshot.snapshot.into_inner();
        let header = codec::encode(&(vote, snapshot.meta))
            .map_err(|e| super::rpc_to_streaming(network(e)))?;
        let body = Request::RaftSnapshot {
            to: self.target,
            header,
            size_bytes: data.len() as u64,
        };
        let send = self.call::<SnapshotResponse<TypeConfig>>(body, &data, option.hard_ttl());
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            res = send => res.map_err(super::rpc_to_streaming),
        }
    }
}
