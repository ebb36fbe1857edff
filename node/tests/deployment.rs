//! Operations (issue 9): the example three-rack deployment (`scripts/deploy-example.sh
//! --local`) is a working cluster: its config validates, its six nodes start from the
//! generated bundles and become ready, the custodians' files rebuild the zone key,
//! and a record stored with its gateway identity reads back with its reader's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::http_get;
use kakera_client::{Client, NewRecord};
use kakera_net::TlsFiles;
use kakera_proto::RecordKind;

struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn kakera_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_kakera-node")).with_file_name("kakera");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace (`cargo test --workspace`)",
        bin.display()
    );
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_three_rack_deployment_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("deploy");
    let script = manifest_dir().join("../scripts/deploy-example.sh");
    let gen_out = Command::new("bash")
        .arg(&script)
        .arg("--out")
        .arg(&out)
        .arg("--local")
        .arg("--base-port")
        .arg("27600")
        .arg("--kakera")
        .arg(kakera_bin())
        .output()
        .unwrap();
    assert!(
        gen_out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&gen_out.stdout),
        String::from_utf8_lossy(&gen_out.stderr)
    );
    let steps = std::fs::read_to_string(out.join("STEPS.md")).unwrap();
    for needle in [
        "kakera ca init",
        "kakera zone keygen",
        "kakera config check",
        "systemctl",
    ] {
        assert!(steps.contains(needle), "the runbook lacks {needle}");
    }
    let config_path = out.join("cluster.toml");
    let config = kakera_config::ClusterConfig::load(&config_path).unwrap();
    assert_eq!(config.nodes.len(), 6);
    assert_eq!(config.racks.len(), 3);

    let mut nodes = Nodes(Vec::new());
    for n in &config.nodes {
        let log = std::fs::File::create(dir.path().join(format!("{}.log", n.name))).unwrap();
        nodes.0.push(
            Command::new(env!("CARGO_BIN_EXE_kakera-node"))
                .arg("--config")
                .arg(&config_path)
                .arg("--node")
                .arg(n.id.to_string())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }
    for n in &config.nodes {
        let deadline = Instant::now() + Duration::from_secs(90);
        let addr = n.metrics_addr.unwrap();
        while !matches!(http_get(addr, "/readyz").await, Ok((200, _))) {
            assert!(
                Instant::now() < deadline,
                "{} never became ready: {}",
                n.name,
                std::fs::read_to_string(dir.path().join(format!("{}.log", n.name))).unwrap()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    // Three custodians rebuild the zone key.
    let key_path = dir.path().join("job-zone.key");
    let unseal = Command::new(kakera_bin())
        .args(["zone", "unseal"])
        .arg(out.join("zone-ceremony/custodian-2.key"))
        .arg(out.join("zone-ceremony/custodian-4.key"))
        .arg(out.join("zone-ceremony/custodian-5.key"))
        .arg("--out")
        .arg(&key_path)
        .output()
        .unwrap();
    assert!(
        unseal.status.success(),
        "{}",
        String::from_utf8_lossy(&unseal.stderr)
    );
    let zone_key = kakera_client::zone::load_private(&key_path).unwrap();

    let who = |name: &str| TlsFiles {
        ca: config.ca_cert.clone(),
        cert: out.join(format!("clients/{name}.crt.pem")),
        key: out.join(format!("clients/{name}.key.pem")),
    };
    let operator = Client::connect(config.clone(), &who("ops-1")).unwrap();
    let gateway = Client::connect(config.clone(), &who("gateway-1")).unwrap();
    let reader = Client::connect(config.clone(), &who("anon-job-1"))
        .unwrap()
        .with_zone_key(zone_key);
    common::open_grant(&operator, "deploy-check", "anon-job-1").await;
    let data = b"a record through the example deployment".to_vec();
    let id = gateway
        .put(NewRecord {
            meta: common::meta(RecordKind::Checkup, "deploy-test", 9),
            data: data.clone(),
        })
        .await
        .unwrap();
    let back = reader.get("deploy-check", id).await.unwrap();
    assert_eq!(back.data.as_slice(), data.as_slice());

    // The configured backup root takes a backup.
    let report = operator
        .backup("first", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(report.complete(), "{report:#?}");
    assert!(out.join("backups/first/rack-a/node-1/part.json").exists());
}

/// This package's directory: cargo's run-time variable first, so a test binary built
/// from another clone sharing the target dir still reads this clone's files.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}
