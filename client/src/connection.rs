//! A connection to a cluster: one QUIC endpoint with this holder's certificate, and a
//! peer per configured node, each connected on first use.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kakera_config::{ClusterConfig, NodeConfig};
use kakera_net::{NetError, Peer, QuicLimits, TlsFiles, TlsMaterial, client_endpoint};
use kakera_proto::{Identity, NodeStatus, Request, Response, ScrubStatus};

use crate::error::ClientError;

/// How long one node gets to answer a status request.
pub const STATUS_TIMEOUT_MS: u64 = 3_000;

/// A cluster as seen from one holder's certificate.
pub struct Connection {
    config: ClusterConfig,
    identity: Identity,
    peers: BTreeMap<u64, Arc<Peer>>,
    endpoint: quinn::Endpoint,
}

impl Connection {
    /// Loads the holder's certificate and key and prepares a peer per node. Must run
    /// inside a tokio runtime. Nothing is sent until the first request.
    pub fn open(config: ClusterConfig, tls: &TlsFiles) -> Result<Connection, ClientError> {
        let mut material = TlsMaterial::load(tls)?;
        // A node whose certificate the CA revoked is refused at the handshake.
        if let Some(path) = &config.ca_crl {
            material.set_crls(kakera_net::read_crls(path)?);
        }
        let identity = Identity::from_cert_der(material.leaf()).map_err(|e| {
            ClientError::Invalid(format!(
                "{} is not a kakera certificate: {e}",
                tls.cert.display()
            ))
        })?;
        let first = config
            .nodes
            .first()
            .ok_or_else(|| ClientError::Invalid("the config declares no nodes".into()))?;
        let endpoint = client_endpoint(&material, QuicLimits::default(), first.addr)?;
        let peers = config
            .nodes
            .iter()
            .map(|n| (n.id, Arc::new(Peer::new(endpoint.clone(), n.addr, &n.name))))
            .collect();
        Ok(Connection {
            config,
            identity,
            peers,
            endpoint,
        })
    }

    /// The cluster config.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// Who this connection presents itself as.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Sends `body` to node `node_id`.
    pub async fn call(
        &self,
        node_id: u64,
        body: Request,
        timeout: Duration,
    ) -> Result<Response, NetError> {
        self.call_full(node_id, body, &[], 0, timeout)
            .await
            .map(|(r, _)| r)
    }

    /// Sends `body` to node `node_id` with `trailer` bytes after it, and reads up to
    /// `reply_limit_bytes` of raw bytes after the answer.
    pub async fn call_full(
        &self,
        node_id: u64,
        body: Request,
        trailer: &[&[u8]],
        reply_limit_bytes: u64,
        timeout: Duration,
    ) -> Result<(Response, Vec<u8>), NetError> {
        let peer = self.peers.get(&node_id).ok_or_else(|| NetError::Peer {
            peer: format!("node {node_id}"),
            reason: "not in the cluster config".into(),
        })?;
        peer.call_full(
            &self.config.cluster_id,
            body,
            trailer,
            reply_limit_bytes,
            timeout,
        )
        .await
    }

    /// Asks every node for its status, concurrently.
    pub async fn status_all(&self) -> Vec<(NodeConfig, Result<NodeStatus, String>)> {
        let timeout = Duration::from_millis(STATUS_TIMEOUT_MS);
        let asks = self.config.nodes.iter().map(|n| async move {
            let answer = match self.call(n.id, Request::Status, timeout).await {
                Ok(Response::Status(s)) => Ok(*s),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(e) => Err(e.to_string()),
            };
            (n.clone(), answer)
        });
        futures::future::join_all(asks).await
    }

    /// Asks every node for its scrubber's progress, concurrently (a node from
    /// before scrubbing answers with an error).
    pub async fn scrub_all(&self) -> Vec<(NodeConfig, Result<ScrubStatus, String>)> {
        let timeout = Duration::from_millis(STATUS_TIMEOUT_MS);
        let asks = self.config.nodes.iter().map(|n| async move {
            let answer = match self.call(n.id, Request::ScrubStatus, timeout).await {
                Ok(Response::Scrub(s)) => Ok(s),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(e) => Err(e.to_string()),
            };
            (n.clone(), answer)
        });
        futures::future::join_all(asks).await
    }

    /// Closes the endpoint, telling the nodes the connection ends.
    pub async fn close(self) {
        self.endpoint.close(0u32.into(), b"client done");
        self.endpoint.wait_idle().await;
    }
}
