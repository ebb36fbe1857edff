//! Issue 21, a catalog without a size cliff (P4: state survives and every node keeps
//! up). Five `kakera-node` processes with `[raft]` knobs set low, so that a small
//! catalog is already hundreds of snapshot chunks and several append budgets:
//! - a snapshot streamed a chunk at a time to a follower killed mid-transfer and
//!   again mid-install leaves the follower's old catalog intact, is retried, and ends
//!   with every node's catalog equal to the leader's (a digest over every key);
//! - entries larger than the append byte budget, written while a follower is down,
//!   reach it after its restart although the frame limit is far below what one
//!   count-bounded append of them would need;
//! - a follower killed under load is back within the lag bound within a bounded time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)] // tests: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::{LocalCluster, leader_node, run, wait_all_applied};
use kakera_client::Client;
use kakera_proto::Role;
use kakera_proto::catalog::{Grant, GrantScope};

/// Snapshots after 16 entries, none of the log kept behind them, chunks of 1 KiB.
const SNAPSHOT_KNOBS: &str = "[raft]\nsnapshot_every_entries = 16\nkeep_entries_after_snapshot = 0\nsnapshot_chunk_bytes = 1024\n";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A grant whose scope names `sources` facilities of 60 bytes (about 62 bytes each
/// in the entry and again in its audit entry).
fn grant(job: &str, sources: usize) -> Grant {
    Grant {
        job: job.into(),
        reader: "anon-job".into(),
        scope: GrantScope {
            kinds: vec![],
            sources: (0..sources).map(|i| format!("{i:0>60}")).collect(),
            subjects: vec![],
        },
        expires_at_ms: now_ms() + 3_600_000,
        approval: "IRB-2026-scale".into(),
        created_at_ms: 0,
        created_by: String::new(),
        revoked: None,
    }
}

/// Creates `count` grants `<prefix>-<i>`, each with `sources` sources.
async fn write_grants(op: &Client, prefix: &str, count: usize, sources: usize) {
    for i in 0..count {
        let g = grant(&format!("{prefix}-{i}"), sources);
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = op.create_grant(g.clone()).await {
            assert!(Instant::now() < deadline, "grant {i}: {e}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A follower of the current leader.
async fn a_follower(op: &Client, n: u64) -> u64 {
    let leader = leader_node(op).await.expect("a leader");
    (1..=n).rev().find(|id| *id != leader).unwrap()
}

/// The catalog digest and pair count of a stopped node's database.
fn catalog_of(cluster: &LocalCluster, id: u64) -> ([u8; 32], u64) {
    let db = kakera_node::store::open_read_only(&cluster.dir.join(format!("data/node-{id}/db")))
        .unwrap();
    kakera_node::raft::snapshot::catalog_digest(&db).unwrap()
}

/// Node `id`'s last log index as it reports it.
async fn last_log_index(op: &Client, id: u64) -> u64 {
    op.connection()
        .status_all()
        .await
        .into_iter()
        .find(|(n, _)| n.id == id)
        .and_then(|(_, s)| s.ok())
        .and_then(|s| s.raft.last_log_index)
        .expect("the follower answers its status")
}

/// Waits until the leader has purged its log past `index`, so that a follower whose
/// log ends there can catch up only by snapshot (openraft holds a purge back while
/// a replication request to a dead follower is in flight).
async fn wait_leader_purged_past(op: &Client, index: u64, within: Duration) {
    let started = Instant::now();
    loop {
        let purged = op
            .connection()
            .status_all()
            .await
            .iter()
            .filter_map(|(_, s)| s.as_ref().ok())
            .filter(|s| s.raft.state == "Leader")
            .find_map(|s| s.raft.purged);
        if purged.is_some_and(|p| p > index) {
            return;
        }
        assert!(
            started.elapsed() < within,
            "the leader kept its log from {purged:?} for {within:?}, not past {index}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until node `id`'s applied index is within `slack` entries of the leader's
/// commit index; returns how long that took.
async fn wait_caught_up(op: &Client, id: u64, slack: u64, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let answers = op.connection().status_all().await;
        let committed = answers
            .iter()
            .filter_map(|(_, s)| s.as_ref().ok())
            .filter(|s| s.raft.state == "Leader")
            .filter_map(|s| s.raft.committed)
            .max();
        let applied = answers
            .iter()
            .find(|(n, _)| n.id == id)
            .and_then(|(_, s)| s.as_ref().ok())
            .and_then(|s| s.raft.applied);
        if let (Some(c), Some(a)) = (committed, applied)
            && c.saturating_sub(a) <= slack
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "node {id} did not catch up within {within:?}: applied {applied:?}, leader committed {committed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops every node and checks that all catalogs are the same, pair for pair.
fn assert_catalogs_equal(cluster: &mut LocalCluster) -> u64 {
    for id in cluster.ids.clone() {
        cluster.terminate(id);
    }
    let digests: Vec<_> = cluster
        .ids
        .iter()
        .map(|id| catalog_of(cluster, *id))
        .collect();
    for (i, d) in digests.iter().enumerate() {
        assert_eq!(
            *d,
            digests[0],
            "node {} holds another catalog than node 1",
            i + 1
        );
    }
    digests[0].1
}

/// An operator's client of `cluster`.
fn operator(cluster: &LocalCluster) -> Client {
    Client::connect(
        cluster.config(),
        &cluster.identity("op", Role::Operator, None),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_many_chunks_survives_a_follower_killed_mid_transfer_and_mid_install() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut cluster = run(LocalCluster::prepare_with(dir.path(), 5, SNAPSHOT_KNOBS)).await;
    let op = operator(&cluster);
    wait_all_applied(&op).await;
    let follower = a_follower(&op, 5).await;
    let follower_last = last_log_index(&op, follower).await;
    cluster.kill(follower);
    let before = catalog_of(&cluster, follower);

    // 120 grants of 8 sources: about 150 KiB of catalog, over a hundred chunks, and
    // seven snapshots' worth of entries, none of the log kept behind them.
    write_grants(&op, "snap", 120, 8).await;
    wait_leader_purged_past(&op, follower_last, Duration::from_secs(30)).await;

    // Killed after the first chunk of the incoming snapshot arrived.
    cluster.arm(follower, "snapshot.receive.chunk");
    cluster.spawn(follower);
    let died = cluster.died_at(follower, Duration::from_secs(60)).await;
    assert_eq!(
        died.as_deref(),
        Some("snapshot.receive.chunk"),
        "{}",
        cluster.log(follower)
    );
    assert_eq!(
        catalog_of(&cluster, follower),
        before,
        "an interrupted transfer changed the follower's catalog"
    );
    // One partial file per catalog family (`incoming-<nonce>-<family>.part`), all of
    // the one transfer.
    let mut parts: Vec<(String, String)> =
        std::fs::read_dir(dir.path().join(format!("data/node-{follower}/snapshots")))
            .unwrap()
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let (nonce, family) = name
                    .strip_prefix("incoming-")?
                    .strip_suffix(".part")?
                    .split_once('-')?;
                Some((family.to_string(), nonce.to_string()))
            })
            .collect();
    parts.sort();
    let mut families: Vec<&str> = kakera_node::store::CATALOG_CFS.to_vec();
    families.sort();
    assert_eq!(
        parts.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(),
        families,
        "the killed transfer left its partial files: {parts:?}"
    );
    assert!(
        parts.iter().all(|(_, n)| *n == parts[0].1),
        "partial files of more than one transfer: {parts:?}"
    );

    // Killed again with the SST built and the install marked, before the switch.
    write_grants(&op, "more", 20, 8).await;
    wait_leader_purged_past(&op, follower_last, Duration::from_secs(30)).await;
    cluster.arm(follower, "snapshot.install.marked");
    cluster.spawn(follower);
    let died = cluster.died_at(follower, Duration::from_secs(60)).await;
    assert_eq!(
        died.as_deref(),
        Some("snapshot.install.marked"),
        "{}",
        cluster.log(follower)
    );

    // The next start finishes the install from its own copy, then catches up.
    cluster.disarm(follower);
    cluster.spawn(follower);
    wait_caught_up(&op, follower, 0, Duration::from_secs(60)).await;
    write_grants(&op, "after", 20, 1).await;
    wait_all_applied(&op).await;
    let log = cluster.log(follower);
    assert!(
        log.contains("finished a snapshot install a crash had interrupted"),
        "{log}"
    );
    let pairs = assert_catalogs_equal(&mut cluster);
    assert!(pairs > 300, "{pairs} catalog pairs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_over_the_append_budget_reach_a_restarted_follower() {
    let dir = tempfile::TempDir::new().unwrap();
    // Frames of 64 KiB: 512 entries of 6 KiB in one append would be 3 MiB. The log
    // is kept, so the follower catches up from it, not from a snapshot.
    let knobs = "[limits]\nmax_frame_bytes = 65536\n[raft]\nappend_budget_bytes = 4096\nsnapshot_every_entries = 100000\n";
    let mut cluster = run(LocalCluster::prepare_with(dir.path(), 5, knobs)).await;
    let op = operator(&cluster);
    wait_all_applied(&op).await;
    let follower = a_follower(&op, 5).await;
    cluster.kill(follower);
    // 60 grants of 50 sources: each entry about 6 KiB, over the 4 KiB budget.
    write_grants(&op, "big", 60, 50).await;
    cluster.spawn(follower);
    let took = wait_caught_up(&op, follower, 0, Duration::from_secs(60)).await;
    eprintln!("follower caught up on 60 entries of 6 KiB in {took:?}");
    wait_all_applied(&op).await;
    assert_catalogs_equal(&mut cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_under_load_is_back_within_the_lag_bound() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut cluster = run(LocalCluster::prepare_with(dir.path(), 5, SNAPSHOT_KNOBS)).await;
    let op = operator(&cluster);
    wait_all_applied(&op).await;
    let follower = a_follower(&op, 5).await;
    let writer = {
        let op = operator(&cluster);
        tokio::spawn(async move { write_grants(&op, "load", 600, 4).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.kill(follower);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.spawn(follower);
    // Back within 64 entries (the status lag bound) in at most 30 s of a restart on
    // a loaded two-core machine, while the writer runs.
    let took = wait_caught_up(
        &op,
        follower,
        kakera_cli::status::LAG_SLACK_ENTRIES,
        Duration::from_secs(30),
    )
    .await;
    eprintln!("follower back within the lag bound {took:?} after its restart");
    writer.await.unwrap();
    wait_all_applied(&op).await;
    assert_catalogs_equal(&mut cluster);
}
