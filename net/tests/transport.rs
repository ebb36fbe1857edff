//! The QUIC transport between two kakera holders: what a path that carries jumbo
//! frames (a datacenter network configured for them, or loopback) is used for.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

use std::path::Path;
use std::time::{Duration, Instant};

use kakera_net::{QuicLimits, TlsFiles, TlsMaterial, client_endpoint};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Writes a CA and one holder certificate named `name` under `dir`.
fn holder(dir: &Path, ca: &Issuer<'_, KeyPair>, ca_pem: &str, name: &str) -> TlsFiles {
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    let files = TlsFiles {
        ca: dir.join("ca.crt.pem"),
        cert: dir.join(format!("{name}.crt.pem")),
        key: dir.join(format!("{name}.key.pem")),
    };
    std::fs::write(&files.ca, ca_pem).unwrap();
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    files
}

/// Path MTU discovery reaches jumbo frames in both directions where the path
/// carries them (loopback here) and keeps them under a burst: each endpoint must
/// announce that it accepts UDP payloads that large (or the peer's discovery stops
/// at 1472 bytes and every share crosses in four times as many packets), and a
/// batch of datagrams sent with segmentation offload must fit one 64 KiB UDP send
/// (or the kernel refuses it, quinn counts the batch lost, and the losses read as an
/// MTU black hole: 1200 bytes for a minute). Issue 24.5: share throughput is bound
/// by the cost per packet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_mtu_discovery_reaches_jumbo_frames_in_both_directions() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "transport test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca_pem = ca_cert.pem();
    let ca = Issuer::new(ca_params, ca_key);
    let server_tls = TlsMaterial::load(&holder(dir.path(), &ca, &ca_pem, "node-1")).unwrap();
    let client_tls = TlsMaterial::load(&holder(dir.path(), &ca, &ca_pem, "gateway")).unwrap();

    let limits = QuicLimits::default();
    let server = server_tls
        .server_endpoint(limits, "127.0.0.1:0".parse().unwrap())
        .unwrap();
    let addr = server.local_addr().unwrap();
    let client = client_endpoint(&client_tls, limits, addr).unwrap();

    let accept = tokio::spawn({
        let server = server.clone();
        async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let got = recv.read_to_end(64 * 1024 * 1024).await.unwrap();
            send.write_all(&got).await.unwrap();
            send.finish().unwrap();
            conn
        }
    });
    let conn = client.connect(addr, "node-1").unwrap().await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let payload = vec![7u8; 8 * 1024 * 1024];
    send.write_all(&payload).await.unwrap();
    send.finish().unwrap();
    let echoed = recv.read_to_end(64 * 1024 * 1024).await.unwrap();
    assert_eq!(echoed.len(), payload.len());
    let server_conn = accept.await.unwrap();

    // Discovery runs in the background after the handshake; allow it a few seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (up, down) = (
            conn.stats().path.current_mtu,
            server_conn.stats().path.current_mtu,
        );
        if up > 6000 && down > 6000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "path MTU stayed at {up} bytes (client to node) and {down} (node to client) on \
             loopback, whose MTU is 65536 ({:?} / {:?})",
            conn.stats().path,
            server_conn.stats().path
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
