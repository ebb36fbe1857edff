//! Outbound requests to one peer over a cached QUIC connection.

use std::net::SocketAddr;
use std::time::Duration;

use kakera_proto::frame::{DEFAULT_MAX_FRAME_BYTES, read_frame, write_frame, write_raw_frame};
use kakera_proto::{RequestEnvelope, Response};
use tokio::sync::Mutex;

use crate::error::NodeError;

/// A peer reached over QUIC. The connection is opened on first use and reopened after
/// it breaks.
pub struct Peer {
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    server_name: String,
    conn: Mutex<Option<quinn::Connection>>,
}

impl Peer {
    /// A peer at `addr` whose certificate names `server_name` (its node name).
    pub fn new(endpoint: quinn::Endpoint, addr: SocketAddr, server_name: &str) -> Peer {
        Peer {
            endpoint,
            addr,
            server_name: server_name.to_string(),
            conn: Mutex::new(None),
        }
    }

    /// The peer's name.
    pub fn name(&self) -> &str {
        &self.server_name
    }

    fn err(&self, reason: impl std::fmt::Display) -> NodeError {
        NodeError::Peer {
            peer: format!("{} ({})", self.server_name, self.addr),
            reason: reason.to_string(),
        }
    }

    async fn connection(&self) -> Result<quinn::Connection, NodeError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref()
            && c.close_reason().is_none()
        {
            return Ok(c.clone());
        }
        let connecting = self
            .endpoint
            .connect(self.addr, &self.server_name)
            .map_err(|e| self.err(e))?;
        let conn = connecting.await.map_err(|e| self.err(e))?;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    async fn forget(&self) {
        *self.conn.lock().await = None;
    }

    /// Sends one request and reads its response, within `timeout`. `trailer` frames
    /// (snapshot data) follow the request on the same stream.
    pub async fn request_with(
        &self,
        env: &RequestEnvelope,
        trailer: &[&[u8]],
        timeout: Duration,
    ) -> Result<Response, NodeError> {
        let attempt = async {
            let conn = self.connection().await?;
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| self.err(e))?;
            write_frame(&mut send, env, DEFAULT_MAX_FRAME_BYTES).await?;
            for chunk in trailer {
                write_raw_frame(&mut send, chunk, DEFAULT_MAX_FRAME_BYTES).await?;
            }
            send.finish().map_err(|e| self.err(e))?;
            // TLS 1.3: a client whose certificate the server rejects learns it here,
            // on its first request, not at connect().
            match read_frame::<_, Response>(&mut recv, DEFAULT_MAX_FRAME_BYTES).await {
                Ok(Some(r)) => Ok(r),
                Ok(None) => Err(self.err("the peer closed the stream without answering")),
                Err(e) => Err(self.err(format!(
                    "{e} (if this persists, check that this certificate is issued by the cluster CA)"
                ))),
            }
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(NodeError::Timeout {
                peer: self.server_name.clone(),
                timeout_ms: timeout.as_millis() as u64,
            }),
        };
        if matches!(
            result,
            Err(NodeError::Peer { .. } | NodeError::Timeout { .. })
        ) {
            self.forget().await;
        }
        result
    }

    /// Sends one request and reads its response.
    pub async fn request(
        &self,
        env: &RequestEnvelope,
        timeout: Duration,
    ) -> Result<Response, NodeError> {
        self.request_with(env, &[], timeout).await
    }
}
