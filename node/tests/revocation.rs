//! Issue 22 (no stale identity), P7: a certificate the CA revokes is refused by
//! every node at the handshake, loses its open connections within seconds, and
//! changes nothing in the cluster from the entry that revoked it on; a client that
//! has the CRL refuses a revoked node.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::raw::ask_on;
use common::{cert_der, clients, start};
use kakera_client::{Client, NewRecord};
use kakera_net::{QuicLimits, TlsFiles, TlsMaterial};
use kakera_proto::audit::{AuditAction, AuditQuery, Outcome};
use kakera_proto::catalog::RecordState;
use kakera_proto::{Date, RecordKind, RecordMeta, Request, Response, Role, SubjectTag};

fn record(i: u64) -> NewRecord {
    NewRecord {
        meta: RecordMeta {
            subject: SubjectTag([(i % 5) as u8; 32]),
            kind: RecordKind::Claim,
            source: "revocation-test".into(),
            effective: Date::new(2026, 1, 1).unwrap(),
            data_kind: None,
        },
        data: format!("claim {i} from a gateway whose key leaks").into_bytes(),
    }
}

/// A fresh QUIC connection under `files` to `addr`, and a ping on it: `Err` when
/// the handshake or the connection fails, `Ok` with the node's answer otherwise.
async fn ping_fresh(
    files: &TlsFiles,
    addr: std::net::SocketAddr,
    server_name: &str,
) -> Result<Response, String> {
    let tls = TlsMaterial::load(files).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(tls.client_config(QuicLimits::default()).unwrap());
    let conn = endpoint
        .connect(addr, server_name)
        .unwrap()
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(5), ask_on(&conn, Request::Ping, &[]))
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
}

/// An ingest gateway's certificate is revoked while it writes: its next request
/// fails, its open connections close with the revocation code, every node refuses
/// it at the handshake (a node restarted afterwards too), no commit of it is
/// applied after the revocation's entry, and every record it was told is stored is
/// stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_gateway_is_cut_off_mid_stream_and_commits_nothing_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 5).await;
    let (operator, _, _) = clients(&cluster);
    let leaked = cluster.identity("leaked-gateway", Role::Ingest, Some("dc"));
    let ingest = Arc::new(Client::connect(cluster.config(), &leaked).unwrap());

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (ingest, stop, acked) = (ingest.clone(), stop.clone(), acked.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                match ingest.put_batch(vec![record(i), record(i + 1)]).await {
                    Ok(ids) => acked.lock().unwrap().extend(ids),
                    Err(e) => return Some(e.to_string()),
                }
                i += 2;
            }
            None
        })
    };
    while acked.lock().unwrap().len() < 20 {
        assert!(
            !writer.is_finished(),
            "the writer failed before any revocation"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A connection of the gateway held open on every node, to watch it close.
    let mut held = Vec::new();
    for (i, addr) in cluster.addrs.iter().enumerate() {
        let conn = common::raw::connect(&leaked, *addr, &format!("node-{}", i + 1)).await;
        assert!(matches!(
            ask_on(&conn, Request::Ping, &[]).await,
            Ok(Response::Pong { .. })
        ));
        held.push(conn);
    }

    let crl = cluster.ca.crl(1, &[&leaked.cert]);
    operator
        .revoke_certificates(crl.clone(), vec![cert_der(&leaked.cert)])
        .await
        .unwrap();

    // Its next request fails: the writer stops with the refusal.
    let refusal = tokio::time::timeout(Duration::from_secs(20), writer)
        .await
        .expect("the revoked gateway kept writing")
        .unwrap()
        .expect("the writer stopped without an error");
    assert!(
        refusal.contains("revoked") || refusal.contains("closed"),
        "unexpected refusal: {refusal}"
    );
    // Every open connection closes with the revocation's code, within seconds.
    for conn in &held {
        let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed())
            .await
            .expect("a revoked certificate's connection stayed open");
        match reason {
            quinn::ConnectionError::ApplicationClosed(close) => assert_eq!(
                close.error_code,
                kakera_node::trust::CLOSE_CERTIFICATE_REVOKED.into()
            ),
            other => panic!("closed for another reason: {other}"),
        }
    }
    // Every node refuses it at the handshake: no answer at all, not even a refusal.
    for (i, addr) in cluster.addrs.iter().enumerate() {
        let answer = ping_fresh(&leaked, *addr, &format!("node-{}", i + 1)).await;
        assert!(
            answer.is_err(),
            "node-{} answered a revoked certificate: {answer:?}",
            i + 1
        );
    }
    // A node restarted after the revocation has it from its catalog before it
    // answers anyone.
    cluster.kill(3);
    cluster.spawn(3);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while operator
        .connection()
        .call(3, Request::Ping, Duration::from_secs(2))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "node-3 did not come back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = ping_fresh(&leaked, cluster.addrs[2], "node-3").await;
    assert!(
        answer.is_err(),
        "a restarted node answered a revoked certificate: {answer:?}"
    );
    // Another certificate of the same role still works.
    let fresh = cluster.identity("new-gateway", Role::Ingest, Some("dc"));
    let replacement = Client::connect(cluster.config(), &fresh).unwrap();
    replacement
        .put_batch(vec![record(1_000_000)])
        .await
        .unwrap();

    // Nothing it staged is committed after the revocation: in the audit log, no
    // commit of the gateway applied after the entry that revoked it.
    let (log, _) = operator
        .audit_log(AuditQuery::default(), 100_000)
        .await
        .unwrap();
    let revoked_at = log
        .iter()
        .find(|e| matches!(e.action, AuditAction::Revoke { .. }) && e.outcome == Outcome::Applied)
        .expect("the revocation is audited")
        .seq;
    match &log.iter().find(|e| e.seq == revoked_at).unwrap().action {
        AuditAction::Revoke { holders, .. } => {
            assert_eq!(holders.len(), 1);
            assert_eq!(holders[0].0, "leaked-gateway");
        }
        _ => unreachable!(),
    }
    let late: Vec<_> = log
        .iter()
        .filter(|e| {
            e.actor.name == "leaked-gateway"
                && matches!(e.action, AuditAction::CommitRecords)
                && e.outcome == Outcome::Applied
                && e.seq > revoked_at
        })
        .collect();
    assert!(
        late.is_empty(),
        "commits applied after the revocation: {late:?}"
    );
    // Everything it was told is stored is stored.
    let acked = acked.lock().unwrap().clone();
    for chunk in acked.chunks(1000) {
        let (states, _) = operator.lookup(chunk, &[]).await.unwrap();
        assert!(states.iter().all(|s| *s == RecordState::Committed));
    }

    // The revocation stands: the same CRL again, or one that forgets the serial,
    // cannot replace it; a CRL another CA signed is refused; and only an operator
    // may bring one.
    let again = operator.revoke_certificates(crl, Vec::new()).await;
    assert!(again.is_err(), "a replayed CRL was accepted");
    let forgets = operator
        .revoke_certificates(cluster.ca.crl(2, &[]), Vec::new())
        .await;
    assert!(format!("{:?}", forgets.unwrap_err()).contains("never undone"));
    let other = common::Ca::new("kakera test CA");
    let forged = operator
        .revoke_certificates(other.crl(9, &[&fresh.cert]), Vec::new())
        .await;
    assert!(forged.is_err(), "a CRL of another CA was accepted");
    let by_gateway = replacement
        .revoke_certificates(cluster.ca.crl(3, &[&leaked.cert, &fresh.cert]), Vec::new())
        .await;
    assert!(by_gateway.is_err(), "a gateway recorded a CRL");
    replacement
        .put_batch(vec![record(1_000_001)])
        .await
        .unwrap();
}

/// A node's certificate is revoked: the other nodes refuse it, and a client whose
/// config names the CRL file refuses to talk to it, while a client without the CRL
/// still reaches it (the refusal is the client's own check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_is_refused_by_nodes_and_by_clients_with_the_crl() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path(), 5).await;
    let (operator, _, _) = clients(&cluster);
    let node5 = dir.path().join("data/node-5/node.crt.pem");
    let crl = cluster.ca.crl(1, &[&node5]);
    operator
        .revoke_certificates(crl.clone(), vec![cert_der(&node5)])
        .await
        .unwrap();

    // The CRL file a client's config names.
    std::fs::write(dir.path().join("crl.pem"), cluster.ca.crl_pem(1, &[&node5])).unwrap();
    let text = std::fs::read_to_string(&cluster.config_path).unwrap();
    let with_crl = dir.path().join("cluster-with-crl.toml");
    std::fs::write(
        &with_crl,
        text.replacen(
            "ca_cert = \"ca.pem\"\n",
            "ca_cert = \"ca.pem\"\nca_crl = \"crl.pem\"\n",
            1,
        ),
    )
    .unwrap();
    let config = kakera_config::ClusterConfig::load(&with_crl).unwrap();
    assert!(config.ca_crl.is_some());
    let files = cluster.identity("careful-op", Role::Operator, None);
    let careful = Client::connect(config, &files).unwrap();
    let timeout = Duration::from_secs(5);
    let to_node5 = careful.connection().call(5, Request::Ping, timeout).await;
    assert!(
        to_node5.is_err(),
        "a client with the CRL talked to a revoked node"
    );
    assert!(matches!(
        careful.connection().call(1, Request::Ping, timeout).await,
        Ok(Response::Pong { .. })
    ));
    let unaware = Client::connect(cluster.config(), &files).unwrap();
    assert!(matches!(
        unaware.connection().call(5, Request::Ping, timeout).await,
        Ok(Response::Pong { .. })
    ));

    // Node 1 refuses node 5's certificate, as a client of it.
    let node5_files = TlsFiles {
        ca: dir.path().join("ca.pem"),
        cert: node5.clone(),
        key: dir.path().join("data/node-5/node.key.pem"),
    };
    let answer = ping_fresh(&node5_files, cluster.addrs[0], "node-1").await;
    assert!(
        answer.is_err(),
        "node-1 answered a revoked node: {answer:?}"
    );
    // The cluster keeps working on the other four.
    let (_, ingest, _) = clients(&cluster);
    ingest.put_batch(vec![record(7)]).await.unwrap();
}
