//! TLS 1.3 with mutual authentication against the cluster CA, for QUIC. The ring
//! provider is chosen explicitly (never rustls' process-wide default).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::error::NetError;

/// The ALPN protocol id of kakera's QUIC connections.
pub const ALPN: &[u8] = b"kakera/1";

/// QUIC limits: bounded streams per connection, keep-alive below the idle timeout.
#[derive(Debug, Clone, Copy)]
pub struct QuicLimits {
    /// Concurrent bidirectional streams (requests) a peer may open per connection.
    pub max_concurrent_streams: u32,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout_ms: u64,
    /// Keep-alive interval; below the idle timeout.
    pub keep_alive_ms: u64,
}

impl Default for QuicLimits {
    fn default() -> Self {
        QuicLimits {
            max_concurrent_streams: 256,
            idle_timeout_ms: 30_000,
            keep_alive_ms: 5_000,
        }
    }
}

/// The files of one identity.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The cluster CA certificate (PEM).
    pub ca: PathBuf,
    /// This holder's certificate (PEM).
    pub cert: PathBuf,
    /// This holder's private key (PEM).
    pub key: PathBuf,
}

/// Loaded TLS material.
pub struct TlsMaterial {
    roots: Arc<RootCertStore>,
    cas: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// Revocation lists both verifiers apply (none: nothing revoked).
    crls: Vec<CertificateRevocationListDer<'static>>,
}

/// Every CRL in a PEM file (`-----BEGIN X509 CRL-----` blocks); an empty file is an
/// empty list.
pub fn read_crls(path: &Path) -> Result<Vec<Vec<u8>>, NetError> {
    CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| tls_err(path, e))?
        .map(|c| c.map(|c| c.to_vec()).map_err(|e| tls_err(path, e)))
        .collect()
}

fn tls_err(path: &Path, reason: impl std::fmt::Display) -> NetError {
    NetError::Tls {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Every certificate in a PEM file; an error if there is none.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err(path, e))?;
    if certs.is_empty() {
        return Err(tls_err(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The crypto provider kakera uses everywhere: ring, chosen explicitly.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsMaterial {
    /// Reads the CA, certificate chain and key.
    pub fn load(files: &TlsFiles) -> Result<TlsMaterial, NetError> {
        let mut roots = RootCertStore::empty();
        let cas = read_certs(&files.ca)?;
        for ca in &cas {
            roots.add(ca.clone()).map_err(|e| tls_err(&files.ca, e))?;
        }
        let chain = read_certs(&files.cert)?;
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| tls_err(&files.key, e))?;
        Ok(TlsMaterial {
            roots: Arc::new(roots),
            cas,
            chain,
            key,
            crls: Vec::new(),
        })
    }

    /// The trusted CA certificates (DER), in file order.
    pub fn ca_certs(&self) -> &[CertificateDer<'static>] {
        &self.cas
    }

    /// Makes both verifiers refuse every certificate these CRLs (DER) list, from the
    /// next config built. A certificate of a CA no CRL covers is still accepted
    /// (during a CA rotation one CA may have no CRL yet); a CRL past its next-update
    /// time still counts (an old list is better than none).
    pub fn set_crls(&mut self, crls: Vec<Vec<u8>>) {
        self.crls = crls
            .into_iter()
            .map(CertificateRevocationListDer::from)
            .collect();
    }

    /// The leaf certificate of this holder.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// A QUIC server config that requires a client certificate the cluster CA issued
    /// directly (see [`crate::verify`]).
    pub fn server_config(&self, limits: QuicLimits) -> Result<quinn::ServerConfig, NetError> {
        let mut builder =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider());
        if !self.crls.is_empty() {
            builder = builder
                .with_crls(self.crls.iter().cloned())
                .only_check_end_entity_revocation()
                .allow_unknown_revocation_status();
        }
        let webpki = builder
            .build()
            .map_err(|e| NetError::Setup(format!("client verifier: {e}")))?;
        let verifier = Arc::new(crate::verify::DirectClientVerifier(webpki));
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| NetError::Setup(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| NetError::Setup(format!("server certificate: {e}")))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| NetError::Setup(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        config.transport_config(transport(limits)?);
        Ok(config)
    }

    /// A QUIC endpoint that serves on `bind` (and makes outbound connections too).
    ///
    /// Its stateless-reset key (and connection-id check key) is derived from this
    /// holder's private key, so it stays the same across restarts: a peer still holding a connection to the previous
    /// process gets a stateless reset from the restarted one at its first packet and
    /// reconnects at once, instead of waiting for the idle timeout.
    pub fn server_endpoint(
        &self,
        limits: QuicLimits,
        bind: std::net::SocketAddr,
    ) -> Result<quinn::Endpoint, std::io::Error> {
        let mut secret = blake3::derive_key(
            "kakera 2026-11 QUIC stateless reset key",
            self.key.secret_der(),
        );
        let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
        // Connection ids carry a keyed check that the restarted process must accept
        // too (it answers only ids it could have issued): derive that key as well.
        let mut cid_key = [0u8; 8];
        cid_key.copy_from_slice(&blake3::keyed_hash(&secret, b"connection ids").as_bytes()[..8]);
        let cid_key = u64::from_le_bytes(cid_key);
        zeroize::Zeroize::zeroize(&mut secret);
        let server = self
            .server_config(limits)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let socket = udp_socket(bind)?;
        let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
        config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        accept_jumbo_frames(&mut config)?;
        let mut endpoint =
            quinn::Endpoint::new(config, Some(server), socket, Arc::new(quinn::TokioRuntime))?;
        endpoint.set_default_client_config(
            self.client_config(limits)
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        );
        Ok(endpoint)
    }

    /// A QUIC client config that presents this holder's certificate and trusts only
    /// certificates the cluster CA issued directly (see [`crate::verify`]).
    pub fn client_config(&self, limits: QuicLimits) -> Result<quinn::ClientConfig, NetError> {
        let mut builder = rustls::client::WebPkiServerVerifier::builder_with_provider(
            self.roots.clone(),
            provider(),
        );
        if !self.crls.is_empty() {
            builder = builder
                .with_crls(self.crls.iter().cloned())
                .only_check_end_entity_revocation()
                .allow_unknown_revocation_status();
        }
        let webpki = builder
            .build()
            .map_err(|e| NetError::Setup(format!("server verifier: {e}")))?;
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| NetError::Setup(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::verify::DirectServerVerifier(webpki)))
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| NetError::Setup(format!("client certificate: {e}")))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| NetError::Setup(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(transport(limits)?);
        Ok(config)
    }
}

/// Bytes one stream may have unread at the receiver.
const STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
/// Bytes all streams of one connection may have unread at the receiver.
const CONNECTION_WINDOW_BYTES: u32 = 64 * 1024 * 1024;
/// The largest UDP payload path MTU discovery tries: a jumbo frame's worth, as much
/// as fits [`QUINN_GSO_SEGMENTS`] times in one UDP send (65,507 bytes). quinn sends
/// up to that many datagrams in one `sendmsg` with segmentation offload; a batch of
/// ten 8972-byte datagrams is refused by the kernel (`EMSGSIZE`), which quinn takes
/// as the loss of all ten.
const MTU_UPPER_BOUND_BYTES: u16 = 6500;
/// Datagrams quinn 0.11 puts in one segmentation-offload send (its private
/// `MAX_TRANSMIT_SEGMENTS`).
const QUINN_GSO_SEGMENTS: usize = 10;
const _: () = assert!(MTU_UPPER_BOUND_BYTES as usize * QUINN_GSO_SEGMENTS <= 65_507);

/// Bytes of datagrams a QUIC socket may hold unread (and unsent): the kernel caps it
/// at `net.core.rmem_max` / `wmem_max`. Its default (208 KiB) holds about thirty
/// 6500-byte datagrams; a node descheduled for a millisecond while a peer sends at
/// full rate drops the rest (`RcvbufErrors`, 2.4 % of datagrams in a 16 MiB run at
/// the default), and losses of large datagrams also count as evidence of an MTU
/// black hole (the path falls back to 1200 bytes for a minute).
const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// A UDP socket bound to `bind` for a QUIC endpoint, with buffers of
/// [`SOCKET_BUFFER_BYTES`] (or the kernel's cap).
pub(crate) fn udp_socket(bind: std::net::SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(bind)?;
    rustix::net::sockopt::set_socket_recv_buffer_size(&socket, SOCKET_BUFFER_BYTES)?;
    rustix::net::sockopt::set_socket_send_buffer_size(&socket, SOCKET_BUFFER_BYTES)?;
    Ok(socket)
}

/// Announces that this endpoint accepts UDP payloads up to [`MTU_UPPER_BOUND_BYTES`]
/// (the `max_udp_payload_size` transport parameter). A peer's path MTU discovery
/// stops at what this endpoint announces, quinn's default being 1472: without it
/// the discovery's own upper bound is never reached.
pub(crate) fn accept_jumbo_frames(config: &mut quinn::EndpointConfig) -> std::io::Result<()> {
    config
        .max_udp_payload_size(MTU_UPPER_BOUND_BYTES)
        .map(|_| ())
        .map_err(|e| std::io::Error::other(format!("UDP payload size: {e}")))
}

fn transport(limits: QuicLimits) -> Result<Arc<quinn::TransportConfig>, NetError> {
    assert!(
        limits.keep_alive_ms < limits.idle_timeout_ms,
        "keep-alive must be below the idle timeout"
    );
    let mut t = quinn::TransportConfig::default();
    // Windows sized for shares of megabytes between nodes a fraction of a
    // millisecond apart (quinn's defaults assume 100 ms and 12.5 MB/s per stream);
    // the connection window bounds what one peer may have in flight to a node.
    t.stream_receive_window(quinn::VarInt::from_u32(STREAM_WINDOW_BYTES));
    t.receive_window(quinn::VarInt::from_u32(CONNECTION_WINDOW_BYTES));
    t.send_window(u64::from(CONNECTION_WINDOW_BYTES));
    // Probe for jumbo-frame and loopback paths; stays at 1452 or below where they fail.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MTU_UPPER_BOUND_BYTES);
    t.mtu_discovery_config(Some(mtu));
    t.max_concurrent_bidi_streams(limits.max_concurrent_streams.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.keep_alive_interval(Some(Duration::from_millis(limits.keep_alive_ms)));
    t.max_idle_timeout(Some(
        Duration::from_millis(limits.idle_timeout_ms)
            .try_into()
            .map_err(|e| NetError::Setup(format!("idle timeout: {e}")))?,
    ));
    Ok(Arc::new(t))
}
