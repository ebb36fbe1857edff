//! A fault-injecting Raft network for in-process clusters: RPCs go straight to the
//! target node's `Raft` handle, through rules that drop, delay or cut them. This is
//! where consensus is tested against partitions (madsim and turmoil have no quinn
//! support, so faults are injected at the Raft network trait; QUIC itself is tested on
//! real loopback).
//!
//! Every rule is checked in both directions: a request crosses `from -> to`, its answer
//! `to -> from`.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::alias::{SnapshotOf, VoteOf};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, Snapshot};

use super::{Raft, SnapshotData, TypeConfig};

#[derive(Default)]
struct Rules {
    nodes: BTreeMap<u64, Arc<Raft>>,
    /// Directed links that drop everything.
    cut: HashSet<(u64, u64)>,
    /// Probability in [0, 1] that any one message is lost.
    drop_probability: f64,
    /// Added to every message, each way.
    delay_ms: u64,
    /// xorshift state for drops: deterministic per router.
    rng: u64,
}

/// The shared switchboard of an in-process cluster.
#[derive(Clone, Default)]
pub struct FaultRouter {
    rules: Arc<Mutex<Rules>>,
}

impl FaultRouter {
    /// A router with no faults; `seed` makes random drops reproducible.
    pub fn new(seed: u64) -> FaultRouter {
        let router = FaultRouter::default();
        router.lock().rng = seed | 1;
        router
    }

    fn lock(&self) -> MutexGuard<'_, Rules> {
        // A panic while holding this lock can only come from a test thread that is
        // already failing; keep going with the rules as they were.
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `raft` reachable as node `id` (again, after a restart).
    pub fn register(&self, id: u64, raft: Arc<Raft>) {
        self.lock().nodes.insert(id, raft);
    }

    /// Makes node `id` unreachable, as if its process were gone.
    pub fn unregister(&self, id: u64) {
        self.lock().nodes.remove(&id);
    }

    /// Splits the cluster: nodes in different groups cannot talk. Nodes not named in
    /// any group keep talking to everyone.
    pub fn partition(&self, groups: &[&[u64]]) {
        let mut rules = self.lock();
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i != j {
                    for &x in *a {
                        for &y in *b {
                            rules.cut.insert((x, y));
                        }
                    }
                }
            }
        }
    }

    /// Cuts node `id` off from every other registered node.
    pub fn isolate(&self, id: u64) {
        let others: Vec<u64> = self
            .lock()
            .nodes
            .keys()
            .copied()
            .filter(|&n| n != id)
            .collect();
        self.partition(&[&[id], &others]);
    }

    /// Removes every cut.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    /// Sets the probability that a message is lost.
    pub fn set_drop_probability(&self, p: f64) {
        self.lock().drop_probability = p.clamp(0.0, 1.0);
    }

    /// Sets a delay added to every message, each way.
    pub fn set_delay_ms(&self, delay_ms: u64) {
        self.lock().delay_ms = delay_ms;
    }

    /// Decides the fate of one message from `from` to `to`: the target if it gets
    /// through (after the delay), or why not.
    async fn pass(&self, from: u64, to: u64) -> Result<Arc<Raft>, Fault> {
        let (target, delay_ms) = {
            let mut rules = self.lock();
            if rules.cut.contains(&(from, to)) {
                return Err(Fault::Cut);
            }
            if rules.drop_probability > 0.0 {
                let mut x = rules.rng;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                rules.rng = x;
                if (x % 1_000_000) as f64 / 1_000_000.0 < rules.drop_probability {
                    return Err(Fault::Dropped);
                }
            }
            let target = rules.nodes.get(&to).cloned().ok_or(Fault::Down)?;
            (target, rules.delay_ms)
        };
        if delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        Ok(target)
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Cut,
    Dropped,
    Down,
}

impl Fault {
    fn into_rpc(self) -> RPCError<TypeConfig> {
        match self {
            Fault::Cut => RPCError::Unreachable(Unreachable::new(&io::Error::other("link cut"))),
            Fault::Down => RPCError::Unreachable(Unreachable::new(&io::Error::other("node down"))),
            Fault::Dropped => {
                RPCError::Network(NetworkError::new(&io::Error::other("message lost")))
            }
        }
    }
}

/// Creates connections from one node through the router.
pub struct FaultNetworkFactory {
    /// The node these connections start from.
    pub from: u64,
    /// The shared router.
    pub router: FaultRouter,
}

/// One node's view of a link to another.
pub struct FaultConnection {
    from: u64,
    to: u64,
    router: FaultRouter,
}

impl RaftNetworkFactory<TypeConfig> for FaultNetworkFactory {
    type Network = FaultConnection;

    async fn new_client(
        &mut self,
        target: u64,
        _node: &openraft::impls::BasicNode,
    ) -> FaultConnection {
        FaultConnection {
            from: self.from,
            to: target,
            router: self.router.clone(),
        }
    }
}

impl FaultConnection {
    /// Sends through the router both ways, mapping the remote's error to unreachable.
    async fn call<T, E, F, Fut>(&self, f: F) -> Result<T, RPCError<TypeConfig>>
    where
        E: std::error::Error + 'static,
        F: FnOnce(Arc<Raft>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let target = self
            .router
            .pass(self.from, self.to)
            .await
            .map_err(Fault::into_rpc)?;
        let answer = f(target)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        self.router
            .pass(self.to, self.from)
            .await
            .map_err(Fault::into_rpc)?;
        Ok(answer)
    }
}

impl RaftNetworkV2<TypeConfig> for FaultConnection {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(|raft| async move { raft.append_entries(rpc).await })
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(|raft| async move { raft.vote(rpc).await }).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(|raft| async move { raft.pre_vote(rpc).await })
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let send = self.call(|raft| async move {
            raft.install_full_snapshot(
                vote,
                Snapshot {
                    meta: snapshot.meta,
                    snapshot: snapshot.snapshot,
                },
            )
            .await
        });
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            res = send => res.map_err(super::rpc_to_streaming),
        }
    }
}
