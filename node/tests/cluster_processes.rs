//! Five `kakera-node` processes on loopback with QUIC and mutual TLS: the group forms
//! from the config, kill -9 of the leader elects another, the killed node restarts from
//! disk and catches up, a node that lost its disk rejoins as a new member, and SIGTERM
//! stops a node cleanly. Guards P4 (crash at any instant) and P7 (mutual
//! authentication, roles from certificates).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::{Client, LocalCluster};
use kakera_node::raft::TypeConfig;
use kakera_proto::ids::node_of;
use kakera_proto::{ErrorKind, NodeStatus, Request, Response, Role, codec};
use rustls_pki_types::pem::PemObject;

async fn statuses(cluster: &LocalCluster, client: &Client) -> Vec<NodeStatus> {
    let mut out = Vec::new();
    for (i, addr) in cluster.addrs.iter().enumerate() {
        if cluster.children[i].is_some()
            && let Some(s) = client.status(*addr, &format!("node-{}", i + 1)).await
        {
            out.push(s);
        }
    }
    out
}

/// Waits for a leader newer than `after_term` that at least three nodes follow and
/// whose voters are one member of each of `voters` (config node ids).
async fn wait_group(
    cluster: &LocalCluster,
    client: &Client,
    after_term: u64,
    voters: &[u64],
) -> NodeStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = statuses(cluster, client).await;
        if let Some(leader) = all
            .iter()
            .find(|s| s.raft.state == "Leader" && s.raft.term > after_term)
            && all
                .iter()
                .filter(|s| s.raft.leader == Some(leader.raft.id))
                .count()
                >= 3
            && leader
                .raft
                .voters
                .iter()
                .map(|v| node_of(*v))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .eq(voters.iter().copied())
        {
            return leader.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no leader after term {after_term} with voters {voters:?}; logs:\n{}",
            (1..=5)
                .map(|i| cluster.log(i))
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Five processes started together, and the group they form with all five voting.
async fn five_node_group() -> (tempfile::TempDir, LocalCluster, Client, NodeStatus) {
    let dir = tempfile::TempDir::new().unwrap();
    let mut cluster = LocalCluster::prepare(dir.path(), 5);
    for id in 1..=5 {
        cluster.spawn(id);
    }
    let operator = cluster.client("ops", Role::Operator);
    let leader = wait_group(&cluster, &operator, 0, &[1, 2, 3, 4, 5]).await;
    (dir, cluster, operator, leader)
}

/// Polls every node's status until `done` holds for (leader, node `id`), for 60 s.
async fn wait_for_node(
    cluster: &LocalCluster,
    client: &Client,
    id: u64,
    what: &str,
    done: impl Fn(&NodeStatus, &NodeStatus) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = statuses(cluster, client).await;
        let leader = all.iter().find(|s| s.raft.state == "Leader");
        let node = all.iter().find(|s| s.node_id == id);
        if let (Some(l), Some(n)) = (leader, node)
            && done(l, n)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {all:#?}\nlog of node {id}:\n{}",
            cluster.log(id)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_elects_another_and_the_node_catches_up_after_restart() {
    let (_dir, mut cluster, operator, first) = five_node_group().await;
    // The bootstrapper (lowest initial voter) formed the group; every other node
    // joined and was promoted.
    assert_eq!(first.raft.learners, Vec::<u64>::new());

    cluster.kill(first.node_id);
    let second = wait_group(&cluster, &operator, first.raft.term, &[1, 2, 3, 4, 5]).await;
    assert_ne!(second.node_id, first.node_id);

    cluster.spawn(first.node_id);
    wait_for_node(
        &cluster,
        &operator,
        first.node_id,
        "restarted node did not catch up",
        |l, b| {
            b.raft.applied.is_some()
                && b.raft.applied >= l.raft.committed
                && b.raft.leader == Some(l.raft.id)
                && b.raft.id == first.raft.id
        },
    )
    .await;

    // SIGTERM stops a node cleanly (exit code 0).
    let follower = *cluster
        .ids
        .iter()
        .find(|&&id| id != second.node_id)
        .unwrap();
    assert!(
        cluster.terminate(follower).success(),
        "{}",
        cluster.log(follower)
    );
    assert!(cluster.log(follower).contains("node stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_without_a_cluster_certificate_or_role_are_refused_and_the_node_keeps_serving() {
    let (dir, cluster, operator, leader) = five_node_group().await;
    let addr = cluster.addrs[leader.node_id as usize - 1];
    let name = format!("node-{}", leader.node_id);

    // A certificate from another CA: connect may succeed (TLS 1.3), the first request
    // fails.
    let rogue_ca = common::Ca::new("rogue CA");
    let rogue_dir = dir.path().join("rogue");
    let (cert, key) = rogue_ca.issue(&rogue_dir, "rogue", "rogue", Role::Operator, None);
    let ca_copy = rogue_dir.join("cluster-ca.pem");
    std::fs::copy(dir.path().join("ca.pem"), &ca_copy).unwrap();
    let rogue = Client::new(&kakera_net::TlsFiles {
        ca: ca_copy,
        cert,
        key,
    });
    let err = rogue
        .ask(addr, &name, Request::Ping)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&name), "{err}");

    // Issue 22: a certificate issued under an intermediate that the cluster CA
    // signed, presented with that intermediate, is refused: only what the CA issued
    // itself is trusted (the CA's path length of 0, enforced).
    let intermediate = cluster.ca.intermediate("an intermediate the CA signed");
    let sub_dir = dir.path().join("intermediate");
    let (cert, key) = intermediate.issue(&sub_dir, "sub-op", "sub-op", Role::Operator, None);
    let chain = format!(
        "{}{}",
        std::fs::read_to_string(&cert).unwrap(),
        intermediate.cert_pem
    );
    std::fs::write(&cert, chain).unwrap();
    let sub = Client::new(&kakera_net::TlsFiles {
        ca: dir.path().join("ca.pem"),
        cert,
        key,
    });
    assert!(
        sub.ask(addr, &name, Request::Ping).await.is_err(),
        "a leaf under an intermediate was served"
    );

    // No client certificate at all.
    let mut roots = rustls::RootCertStore::empty();
    let ca_der =
        rustls_pki_types::CertificateDer::from_pem_file(dir.path().join("ca.pem")).unwrap();
    roots.add(ca_der).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(kakera_net::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![kakera_net::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let anonymous = Client::with_config(quinn::ClientConfig::new(std::sync::Arc::new(quic)));
    assert!(anonymous.ask(addr, &name, Request::Ping).await.is_err());

    // A valid certificate whose role may not send Raft traffic.
    let vote = |to: u64| Request::RaftVote {
        to,
        payload: vec![1, 2, 3],
    };
    match operator
        .ask(addr, &name, vote(leader.raft.id))
        .await
        .unwrap()
    {
        Response::Error(e) => {
            assert_eq!(e.kind, ErrorKind::Forbidden);
            assert!(e.message.contains("operator"), "{}", e.message);
        }
        other => panic!("raft traffic from an operator was not refused: {other:?}"),
    }
    // Issue 22 (P7 for Raft): a valid node certificate whose name is no configured
    // node is refused before its payload is read.
    let node_client = cluster.client("node-impostor", Role::Node);
    match node_client
        .ask(addr, &name, vote(leader.raft.id))
        .await
        .unwrap()
    {
        Response::Error(e) => {
            assert_eq!(e.kind, ErrorKind::Forbidden);
            assert!(e.message.contains("names no node"), "{}", e.message);
        }
        other => panic!("raft traffic from a non-member was not refused: {other:?}"),
    }
    // A member's certificate with garbage Raft bytes gets a clear error, not a crash.
    let other = if leader.node_id == 1 { 2 } else { 1 };
    let member = cluster.client(&format!("node-{other}"), Role::Node);
    match member.ask(addr, &name, vote(leader.raft.id)).await.unwrap() {
        Response::Error(e) => assert_eq!(e.kind, ErrorKind::BadRequest),
        other => panic!("garbage was accepted: {other:?}"),
    }
    // Issue 22: a member may speak only for itself. Well-formed RPCs under a much
    // higher vote that name another member (a vote, an append, a snapshot that would
    // replace the catalog) and the same vote from a non-member are all refused, and
    // the leader's term and leadership do not move.
    let before = wait_group(&cluster, &operator, 0, &[1, 2, 3, 4, 5]).await;
    let third = *cluster
        .ids
        .iter()
        .find(|&&id| id != leader.node_id && id != other)
        .unwrap();
    let third_member = before
        .raft
        .voters
        .iter()
        .copied()
        .find(|m| kakera_proto::ids::node_of(*m) == third)
        .unwrap();
    let forged: openraft::alias::VoteOf<TypeConfig> =
        openraft::vote::Vote::new(before.raft.term + 100, third_member);
    let forged_vote = Request::RaftVote {
        to: leader.raft.id,
        payload: codec::encode(&openraft::raft::VoteRequest::<TypeConfig>::new(
            forged, None,
        ))
        .unwrap(),
    };
    let forged_append = Request::RaftAppend {
        to: leader.raft.id,
        payload: codec::encode(&openraft::raft::AppendEntriesRequest::<TypeConfig> {
            vote: openraft::vote::Vote::new_committed(before.raft.term + 100, third_member),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        })
        .unwrap(),
    };
    let forged_snapshot = Request::RaftSnapshot {
        to: leader.raft.id,
        header: codec::encode(&(
            forged,
            openraft::alias::SnapshotMetaOf::<TypeConfig>::default(),
        ))
        .unwrap(),
    };
    for (who, client) in [("a member", &member), ("a non-member", &node_client)] {
        for body in [&forged_vote, &forged_append, &forged_snapshot] {
            match client.ask(addr, &name, body.clone()).await.unwrap() {
                Response::Error(e) => {
                    assert_eq!(e.kind, ErrorKind::Forbidden, "{who}: {}", e.message);
                }
                other => panic!("{who} spoke for member {third}: {other:?}"),
            }
        }
    }
    let after = wait_group(&cluster, &operator, 0, &[1, 2, 3, 4, 5]).await;
    assert_eq!(
        (after.raft.term, after.node_id),
        (before.raft.term, before.node_id),
        "a forged vote moved the term or the leadership"
    );
    // Raft traffic for another incarnation at this address is refused.
    match node_client
        .ask(addr, &name, vote(leader.raft.id ^ (1 << 40)))
        .await
        .unwrap()
    {
        Response::Error(e) => {
            assert_eq!(e.kind, ErrorKind::BadRequest);
            assert!(e.message.contains("new member"), "{}", e.message);
        }
        other => panic!("traffic for another incarnation was accepted: {other:?}"),
    }
    // A node certificate may not join under another node's id.
    let victim = if leader.node_id == 2 { 3 } else { 2 };
    match node_client
        .ask(
            addr,
            &name,
            Request::RaftJoin {
                raft_id: kakera_proto::ids::raft_id(victim, 99),
            },
        )
        .await
        .unwrap()
    {
        Response::Error(e) => {
            assert_eq!(e.kind, ErrorKind::Forbidden);
            assert!(e.message.contains("node-impostor"), "{}", e.message);
        }
        other => panic!("an impostor's join was accepted: {other:?}"),
    }

    // Throughout, the node keeps answering its legitimate peers.
    match operator.ask(addr, &name, Request::Ping).await.unwrap() {
        Response::Pong {
            peer_name,
            peer_role,
            ..
        } => {
            assert_eq!(peer_name, "ops");
            assert_eq!(peer_role, Role::Operator);
        }
        other => panic!("{other:?}"),
    }
    let again = wait_group(&cluster, &operator, 0, &[1, 2, 3, 4, 5]).await;
    assert_eq!(again.node_id, leader.node_id);
    assert_eq!(again.raft.voters, leader.raft.voters);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_disk_rejoins_as_a_new_member_and_replaces_its_old_self() {
    let (dir, mut cluster, operator, leader) = five_node_group().await;
    let lost = *cluster
        .ids
        .iter()
        .find(|&&id| id != leader.node_id)
        .unwrap();
    let old_member = *leader
        .raft
        .voters
        .iter()
        .find(|v| node_of(**v) == lost)
        .unwrap();

    // kill -9 and wipe everything but the certificate.
    cluster.kill(lost);
    let data = dir.path().join(format!("data/node-{lost}"));
    std::fs::remove_dir_all(data.join("db")).unwrap();
    let _ = std::fs::remove_dir_all(data.join("snapshots"));
    cluster.spawn(lost);
    wait_for_node(
        &cluster,
        &operator,
        lost,
        "the wiped node did not rejoin as a new member",
        |l, b| {
            node_of(b.raft.id) == lost
                && b.raft.id != old_member
                && l.raft.voters.contains(&b.raft.id)
                && !l.raft.voters.contains(&old_member)
                && !l.raft.learners.contains(&old_member)
                && l.raft.voters.len() == 5
                && b.raft.applied >= l.raft.committed
        },
    )
    .await;
    assert!(
        cluster.log(lost).contains("empty data directory"),
        "{}",
        cluster.log(lost)
    );
}
