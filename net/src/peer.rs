//! Outbound requests to one peer over a cached QUIC connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kakera_proto::frame::{
    DEFAULT_MAX_FRAME_BYTES, TRAILER_CHUNK_BYTES, read_frame, read_frame_into, write_frame,
    write_raw_frame, write_trailer,
};
use kakera_proto::{ProtoError, Request, RequestEnvelope, RequestId, Response};
use tokio::sync::Mutex;

use crate::error::NetError;
use crate::tls::{QuicLimits, TlsMaterial};

/// A QUIC endpoint for outbound requests only (clients, the CLI), bound to an ephemeral
/// port on the unspecified address of `family_of`'s family.
pub fn client_endpoint(
    tls: &TlsMaterial,
    limits: QuicLimits,
    family_of: SocketAddr,
) -> Result<quinn::Endpoint, NetError> {
    let bind: SocketAddr = if family_of.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = crate::tls::udp_socket(bind)
        .map_err(|e| NetError::Setup(format!("cannot open a UDP socket on {bind}: {e}")))?;
    let mut config = quinn::EndpointConfig::default();
    crate::tls::accept_jumbo_frames(&mut config).map_err(|e| NetError::Setup(e.to_string()))?;
    let mut endpoint = quinn::Endpoint::new(config, None, socket, Arc::new(quinn::TokioRuntime))
        .map_err(|e| NetError::Setup(format!("cannot open a QUIC endpoint on {bind}: {e}")))?;
    endpoint.set_default_client_config(tls.client_config(limits)?);
    Ok(endpoint)
}

/// A request id unique within this process and unlikely to repeat across processes:
/// wall-clock nanoseconds and a counter. For tracing; never used for security.
pub fn fresh_request_id() -> RequestId {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&nanos.to_be_bytes());
    id[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    RequestId(id)
}

/// How long a QUIC handshake may take before the peer counts as unreachable.
pub const CONNECT_TIMEOUT_MS: u64 = 2_000;

/// How [`Peer::call_streaming`] paces a transfer of unbounded length.
#[derive(Debug, Clone, Copy)]
pub struct StreamPacing {
    /// Deadline for opening the stream, for each piece from the source and for
    /// writing each frame.
    pub idle: Duration,
    /// Deadline for the answer once everything is sent, before the allowance for
    /// its size.
    pub answer: Duration,
    /// The answer's deadline grows by one millisecond per this many bytes sent (the
    /// receiver's work after the last byte is linear in the stream's size).
    pub answer_bytes_per_ms: u64,
}

/// QUIC application close code: the peer's certificate expired while connected.
pub const CLOSE_CERTIFICATE_EXPIRED: u32 = 3;
/// QUIC application close code: the peer's certificate was revoked.
pub const CLOSE_CERTIFICATE_REVOKED: u32 = 4;

/// Why a connection ended, when a certificate was refused: the node closed it
/// because the holder's certificate expired or was revoked, or a TLS alert ended it
/// (a handshake that refused a certificate: ours by the node, or the node's by us).
/// Asking again with the same certificate cannot succeed.
fn certificate_refusal(e: &quinn::ConnectionError) -> Option<String> {
    // QUIC carries a TLS alert as a CRYPTO_ERROR, codes 0x100 to 0x1ff.
    let tls_alert = |code: u64| (0x100..=0x1ff).contains(&code);
    match e {
        quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code == CLOSE_CERTIFICATE_REVOKED.into()
                || c.error_code == CLOSE_CERTIFICATE_EXPIRED.into() =>
        {
            Some(format!(
                "the node closed the connection: {}",
                String::from_utf8_lossy(&c.reason)
            ))
        }
        quinn::ConnectionError::ConnectionClosed(c) if tls_alert(u64::from(c.error_code)) => {
            Some(format!("the node refused this holder's certificate ({c})"))
        }
        quinn::ConnectionError::TransportError(t) if tls_alert(u64::from(t.code)) => {
            Some(format!("the node's certificate was refused here ({t})"))
        }
        _ => None,
    }
}

/// A client config that a holder can replace while peers use it (a node's renewed
/// certificate): each new connection reads the current one.
pub type SharedClientConfig = Arc<std::sync::RwLock<quinn::ClientConfig>>;

/// A peer reached over QUIC. The connection is opened on first use and reopened after
/// it breaks.
pub struct Peer {
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    server_name: String,
    conn: Mutex<Option<quinn::Connection>>,
    /// The client config for new connections, if not the endpoint's default.
    config: Option<SharedClientConfig>,
}

impl Peer {
    /// A peer at `addr` whose certificate names `server_name` (its node name).
    pub fn new(endpoint: quinn::Endpoint, addr: SocketAddr, server_name: &str) -> Peer {
        Peer {
            endpoint,
            addr,
            server_name: server_name.to_string(),
            conn: Mutex::new(None),
            config: None,
        }
    }

    /// The same peer, connecting with whatever `config` holds when it connects.
    pub fn with_client_config(mut self, config: SharedClientConfig) -> Peer {
        self.config = Some(config);
        self
    }

    /// The peer's name.
    pub fn name(&self) -> &str {
        &self.server_name
    }

    fn err(&self, reason: impl std::fmt::Display) -> NetError {
        NetError::Peer {
            peer: format!("{} ({})", self.server_name, self.addr),
            reason: reason.to_string(),
        }
    }

    /// A stream failure, with the hint that fits its most common cause.
    fn transport_err(&self, e: kakera_proto::ProtoError) -> NetError {
        match e {
            kakera_proto::ProtoError::TooLarge { .. } => NetError::Proto(e),
            other => self.err(format!(
                "{other} (if this persists, check that this certificate is issued by the \
                 cluster CA)"
            )),
        }
    }

    /// A connection error: [`NetError::CertificateRefused`] when it says a
    /// certificate was refused, else [`NetError::Peer`].
    fn conn_err(&self, e: &quinn::ConnectionError) -> NetError {
        match certificate_refusal(e) {
            Some(reason) => NetError::CertificateRefused {
                peer: format!("{} ({})", self.server_name, self.addr),
                reason,
            },
            None => self.err(e),
        }
    }

    /// A stream failure on `conn`: the node's own words if it closed the connection
    /// (a limit, a refused identity), else [`Peer::transport_err`].
    fn failure(&self, conn: &quinn::Connection, e: kakera_proto::ProtoError) -> NetError {
        match conn.close_reason() {
            Some(closed) if certificate_refusal(&closed).is_some() => self.conn_err(&closed),
            Some(quinn::ConnectionError::ApplicationClosed(close)) if !close.reason.is_empty() => {
                self.err(format!(
                    "the node closed the connection: {}",
                    String::from_utf8_lossy(&close.reason)
                ))
            }
            _ => self.transport_err(e),
        }
    }

    /// The cached connection, or a new one; `true` when it is new.
    async fn connection(&self) -> Result<(quinn::Connection, bool), NetError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref()
            && c.close_reason().is_none()
        {
            return Ok((c.clone(), false));
        }
        let connecting = match &self.config {
            Some(shared) => {
                // A poisoned lock only means a writer panicked between two whole
                // configs; the value is one of them either way.
                let config = shared.read().unwrap_or_else(|p| p.into_inner()).clone();
                self.endpoint
                    .connect_with(config, self.addr, &self.server_name)
            }
            None => self.endpoint.connect(self.addr, &self.server_name),
        }
        .map_err(|e| self.err(e))?;
        // A node that is down never answers the handshake (UDP has no refusal):
        // give up after a short, fixed time rather than the request's whole timeout.
        let conn = tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connecting)
            .await
            .map_err(|_| self.err(format!("no handshake within {CONNECT_TIMEOUT_MS} ms")))?
            .map_err(|e| self.conn_err(&e))?;
        *guard = Some(conn.clone());
        Ok((conn, true))
    }

    /// Closes the open connection, if any, when the certificate the peer presented
    /// on it is one `revoked` names; a later request connects anew (and the
    /// handshake refuses a revoked certificate). Returns whether it closed one.
    pub async fn close_if(
        &self,
        revoked: impl Fn(&[u8]) -> bool,
        code: u32,
        reason: &[u8],
    ) -> bool {
        let mut guard = self.conn.lock().await;
        let Some(conn) = guard.as_ref() else {
            return false;
        };
        let presented = conn.peer_identity().and_then(|any| {
            any.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
                .ok()
        });
        let hit = presented
            .as_ref()
            .and_then(|certs| certs.first())
            .is_some_and(|leaf| revoked(leaf));
        if hit {
            conn.close(code.into(), reason);
            *guard = None;
        }
        hit
    }

    async fn forget(&self) {
        *self.conn.lock().await = None;
    }

    /// Sends one request and reads its response, within `timeout`. `trailer` (share
    /// bytes, snapshot data) follows the request on the same stream as raw frames.
    /// Raw frames after the response (share bytes) are read to the end of the stream,
    /// at most `reply_limit_bytes` of them.
    pub async fn request_with(
        &self,
        env: &RequestEnvelope,
        trailer: &[&[u8]],
        reply_limit_bytes: u64,
        timeout: Duration,
    ) -> Result<(Response, Vec<u8>), NetError> {
        // A cached connection may belong to a process that has since restarted: its
        // first packet draws a stateless reset and the connection closes. Then the
        // request goes once more on a new connection (every request is safe to repeat:
        // staging and commits are idempotent, a repeated ticket is only audited twice).
        let attempts = async {
            let (conn, fresh) = self.connection().await?;
            match self.attempt(&conn, env, trailer, reply_limit_bytes).await {
                Err(e) if !fresh && conn.close_reason().is_some() => {
                    tracing::debug!(peer = %self.server_name, error = %e, "stale connection: reconnecting");
                    self.forget().await;
                    let (conn, _) = self.connection().await?;
                    self.attempt(&conn, env, trailer, reply_limit_bytes).await
                }
                other => other,
            }
        };
        let result = match tokio::time::timeout(timeout, attempts).await {
            Ok(r) => r,
            Err(_) => Err(NetError::Timeout {
                peer: self.server_name.clone(),
                timeout_ms: timeout.as_millis() as u64,
            }),
        };
        if result.as_ref().is_err_and(NetError::is_unreachable) {
            self.forget().await;
        }
        result
    }

    /// One request on `conn`.
    async fn attempt(
        &self,
        conn: &quinn::Connection,
        env: &RequestEnvelope,
        trailer: &[&[u8]],
        reply_limit_bytes: u64,
    ) -> Result<(Response, Vec<u8>), NetError> {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| self.conn_err(&e))?;
        // TLS 1.3: a client whose certificate the server rejects learns it on its
        // first request, while writing or while reading the answer. A peer that
        // refuses the request at once (busy) answers without reading it and stops
        // the stream, and one that refuses it after the envelope does not read the
        // trailer: either way the answer, not the failed write, is the result.
        let wrote = match write_frame(&mut send, env, DEFAULT_MAX_FRAME_BYTES).await {
            Ok(()) => write_trailer(&mut send, trailer).await,
            Err(e) => Err(e),
        };
        if wrote.is_ok() {
            send.finish().map_err(|e| self.err(e))?;
        }
        let response = match read_frame::<_, Response>(&mut recv, DEFAULT_MAX_FRAME_BYTES).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Err(match wrote {
                    Err(e) => self.failure(conn, e),
                    Ok(()) => self.err("the peer closed the stream without answering"),
                });
            }
            Err(e) => return Err(self.failure(conn, wrote.err().unwrap_or(e))),
        };
        let mut extra = Vec::new();
        // Bounded: each frame adds at least one byte (an empty one ends the loop)
        // and the total is capped. Frames land in `extra` directly.
        if reply_limit_bytes > 0 {
            loop {
                match read_frame_into(
                    &mut recv,
                    &mut extra,
                    DEFAULT_MAX_FRAME_BYTES,
                    reply_limit_bytes,
                    reply_limit_bytes,
                )
                .await
                {
                    Ok(Some(n)) if n > 0 => {}
                    Ok(_) => break,
                    Err(ProtoError::Malformed { .. }) => {
                        return Err(self.err(format!(
                            "the answer runs past the expected {reply_limit_bytes} bytes"
                        )));
                    }
                    Err(e) => return Err(self.failure(conn, e)),
                }
            }
        }
        Ok((response, extra))
    }

    /// Sends `body` to this peer for `cluster_id` and returns the answer; a refusal
    /// ([`Response::Error`]) becomes [`NetError::Refused`].
    pub async fn call(
        &self,
        cluster_id: &str,
        body: Request,
        timeout: Duration,
    ) -> Result<Response, NetError> {
        self.call_full(cluster_id, body, &[], 0, timeout)
            .await
            .map(|(r, _)| r)
    }

    /// [`Peer::call`] with `trailer` bytes after the request and up to
    /// `reply_limit_bytes` of raw bytes after the answer.
    pub async fn call_full(
        &self,
        cluster_id: &str,
        body: Request,
        trailer: &[&[u8]],
        reply_limit_bytes: u64,
        timeout: Duration,
    ) -> Result<(Response, Vec<u8>), NetError> {
        let env = RequestEnvelope {
            cluster_id: cluster_id.to_string(),
            request_id: fresh_request_id(),
            body,
        };
        match self
            .request_with(&env, trailer, reply_limit_bytes, timeout)
            .await?
        {
            (Response::Error(reply), _) => Err(NetError::Refused {
                peer: self.server_name.clone(),
                kind: reply.kind,
                message: reply.message,
            }),
            other => Ok(other),
        }
    }

    /// Sends `body`, then every piece `source` yields as raw frames (a piece larger
    /// than a frame goes as several) until it ends, then reads the answer. A piece
    /// that does not come within `pacing.idle`, or an error piece, aborts the call.
    /// Returns the answer and the bytes sent.
    pub async fn call_streaming(
        &self,
        cluster_id: &str,
        body: Request,
        source: &mut tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
        pacing: StreamPacing,
    ) -> Result<(Response, u64), NetError> {
        let StreamPacing {
            idle,
            answer,
            answer_bytes_per_ms,
        } = pacing;
        let env = RequestEnvelope {
            cluster_id: cluster_id.to_string(),
            request_id: fresh_request_id(),
            body,
        };
        let timeout_err = |ms: Duration| NetError::Timeout {
            peer: self.server_name.clone(),
            timeout_ms: ms.as_millis() as u64,
        };
        let (conn, _) = self.connection().await?;
        let (mut send, mut recv) = tokio::time::timeout(idle, conn.open_bi())
            .await
            .map_err(|_| timeout_err(idle))?
            .map_err(|e| self.err(e))?;
        tokio::time::timeout(idle, write_frame(&mut send, &env, DEFAULT_MAX_FRAME_BYTES))
            .await
            .map_err(|_| timeout_err(idle))?
            .map_err(|e| self.failure(&conn, e))?;
        let mut sent = 0u64;
        // Bounded by the source, which ends; each piece within `idle`.
        loop {
            let piece = tokio::time::timeout(idle, source.recv())
                .await
                .map_err(|_| timeout_err(idle))?;
            let piece = match piece {
                None => break,
                Some(Ok(p)) => p,
                Some(Err(e)) => return Err(self.err(format!("reading what to send: {e}"))),
            };
            for frame in piece.chunks(TRAILER_CHUNK_BYTES) {
                tokio::time::timeout(
                    idle,
                    write_raw_frame(&mut send, frame, TRAILER_CHUNK_BYTES as u32),
                )
                .await
                .map_err(|_| timeout_err(idle))?
                .map_err(|e| self.failure(&conn, e))?;
            }
            sent += piece.len() as u64;
        }
        let answer = answer + Duration::from_millis(sent / answer_bytes_per_ms.max(1));
        send.finish().map_err(|e| self.err(e))?;
        let response = tokio::time::timeout(
            answer,
            read_frame::<_, Response>(&mut recv, DEFAULT_MAX_FRAME_BYTES),
        )
        .await
        .map_err(|_| timeout_err(answer))?
        .map_err(|e| self.failure(&conn, e))?
        .ok_or_else(|| self.err("the peer closed the stream without answering"))?;
        match response {
            Response::Error(reply) => Err(NetError::Refused {
                peer: self.server_name.clone(),
                kind: reply.kind,
                message: reply.message,
            }),
            other => Ok((other, sent)),
        }
    }

    /// Sends one request and reads its response.
    pub async fn request(
        &self,
        env: &RequestEnvelope,
        timeout: Duration,
    ) -> Result<Response, NetError> {
        self.request_with(env, &[], 0, timeout)
            .await
            .map(|(r, _)| r)
    }
}
