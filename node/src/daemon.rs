//! The node daemon: opens storage, starts Raft on the QUIC network, serves requests,
//! bootstraps the group on first start and stops cleanly.
//!
//! Bootstrap: every node of `ClusterConfig::initial_voters` that finds its log empty
//! initialises Raft with that same voter set (openraft accepts the identical initial
//! membership on each voter). Whichever becomes leader then records the cluster
//! identity (`Command::InitCluster`) and adds every other configured node as a
//! learner. A restart finds the log on disk and skips initialisation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kakera_config::{ClusterConfig, NodeConfig};
use openraft::impls::BasicNode;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::NodeError;
use crate::raft::network::QuicNetworkFactory;
use crate::raft::{Command, RaftHandle, open_raft};
use crate::transport::server::{ServerContext, serve};
use crate::transport::{QuicLimits, TlsFiles, TlsMaterial};

/// How to start a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The validated cluster config.
    pub config: ClusterConfig,
    /// BLAKE3 of the config text (recorded at bootstrap).
    pub config_digest: [u8; 32],
    /// Which node of the config this is.
    pub node_id: u64,
    /// The node's certificate and key, and the cluster CA.
    pub tls: TlsFiles,
}

impl NodeOptions {
    /// The default certificate paths of a node: `<data_dir>/node.crt.pem` and
    /// `<data_dir>/node.key.pem`, with the CA from the config.
    pub fn default_tls(config: &ClusterConfig, node: &NodeConfig) -> TlsFiles {
        TlsFiles {
            ca: config.ca_cert.clone(),
            cert: node.data_dir.join("node.crt.pem"),
            key: node.data_dir.join("node.key.pem"),
        }
    }
}

/// A running node.
pub struct NodeHandle {
    /// The node's Raft.
    pub raft: RaftHandle,
    /// This node's config entry.
    pub node: NodeConfig,
    endpoint: quinn::Endpoint,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts a node and returns once it listens.
pub async fn start(opts: NodeOptions) -> Result<NodeHandle, NodeError> {
    let config = &opts.config;
    let node = config.node(opts.node_id).cloned().ok_or_else(|| {
        NodeError::Config(format!(
            "node {} is not in the cluster config",
            opts.node_id
        ))
    })?;
    let tls = TlsMaterial::load(&opts.tls)?;
    let identity =
        kakera_proto::Identity::from_cert_der(tls.leaf()).map_err(|e| NodeError::Tls {
            path: opts.tls.cert.clone(),
            reason: e.to_string(),
        })?;
    if identity.role != kakera_proto::Role::Node {
        return Err(NodeError::Tls {
            path: opts.tls.cert.clone(),
            reason: format!(
                "certificate has role '{}', a node needs role 'node'",
                identity.role
            ),
        });
    }
    let limits = QuicLimits::default();
    let mut endpoint = quinn::Endpoint::server(tls.server_config(limits)?, node.addr)
        .map_err(|e| NodeError::Setup(format!("cannot listen on {}: {e}", node.addr)))?;
    endpoint.set_default_client_config(tls.client_config(limits)?);

    let network = QuicNetworkFactory::new(&endpoint, config, node.id);
    let data_dir: PathBuf = node.data_dir.clone();
    let parts = open_raft(node.id, &config.cluster_id, &data_dir, network).await?;
    let raft = parts.raft.clone();

    let (shutdown, shutdown_rx) = watch::channel(false);
    let ctx = Arc::new(ServerContext {
        node: node.clone(),
        cluster_id: config.cluster_id.clone(),
        raft: raft.clone(),
        max_frame_bytes: kakera_proto::frame::DEFAULT_MAX_FRAME_BYTES,
    });
    let mut tasks = vec![tokio::spawn(serve(
        endpoint.clone(),
        ctx,
        shutdown_rx.clone(),
    ))];

    let voters = config.initial_voters();
    if voters.contains(&node.id)
        && !raft
            .is_initialized()
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?
    {
        let members: BTreeMap<u64, BasicNode> = voters
            .iter()
            .filter_map(|id| config.node(*id))
            .map(|n| (n.id, BasicNode::new(n.addr.to_string())))
            .collect();
        tracing::info!(voters = ?voters, "first start: initialising the Raft group");
        if let Err(e) = raft.initialize(members).await {
            // Another voter's identical initialisation reached us first: fine.
            tracing::info!(error = %e, "initialisation skipped");
        }
    }
    tasks.push(tokio::spawn(leader_duties(
        raft.clone(),
        parts.state.clone(),
        config.clone(),
        opts.config_digest,
        shutdown_rx,
    )));
    tracing::info!(node = %node.name, addr = %node.addr, "node started");
    Ok(NodeHandle {
        raft,
        node,
        endpoint,
        shutdown,
        tasks,
    })
}

/// While this node leads: record the cluster identity once, and make sure every
/// configured node is a member (voters from the bootstrap, the rest as learners).
async fn leader_duties(
    raft: RaftHandle,
    state: crate::raft::state_machine::StateMachine,
    config: ClusterConfig,
    digest: [u8; 32],
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if !raft.is_leader() {
            continue;
        }
        if matches!(state.cluster_record(), Ok(None)) {
            let cmd = Command::InitCluster {
                cluster_id: config.cluster_id.clone(),
                config_digest: digest,
            };
            if let Err(e) = raft.client_write(cmd).await {
                tracing::debug!(error = %e, "recording the cluster identity failed; will retry");
                continue;
            }
        }
        let members: Vec<u64> = raft.voter_ids().chain(raft.learner_ids()).collect();
        for n in config.nodes.iter().filter(|n| !members.contains(&n.id)) {
            tracing::info!(node = %n.name, "adding node as learner");
            if let Err(e) = raft
                .add_learner(n.id, BasicNode::new(n.addr.to_string()), false)
                .await
            {
                tracing::debug!(node = %n.name, error = %e, "add learner failed; will retry");
            }
        }
    }
}

impl NodeHandle {
    /// Stops accepting requests, shuts Raft down and closes the endpoint.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        self.endpoint.close(0u32.into(), b"node shutting down");
        for t in self.tasks {
            let _ = t.await;
        }
        self.endpoint.wait_idle().await;
        tracing::info!(node = %self.node.name, "node stopped");
    }
}
