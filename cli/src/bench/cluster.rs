//! The benchmark's own cluster on 127.0.0.1: a fresh CA, zone key and config in a
//! directory of its own, five `kakera-node` processes in three racks (a, a, b, b, c;
//! 3 of 5), and a sixth node (rack c) that starts only when repair is measured: it
//! stands for the machine that replaces a removed one. The config is a benchmark
//! cluster's (`bench-` id, `[baseline] plain_replicas = 3`), so the same nodes also take
//! the replication baseline. Every node process is killed when this value drops.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kakera_config::ClusterConfig;
use kakera_net::TlsFiles;
use kakera_proto::Role;

use crate::error::CliError;
use crate::pki::{self, IssueRequest};
use kakera_client::Client;
use kakera_client::zone::{self, Custody};

/// Nodes running from the start.
pub const ACTIVE_NODES: u64 = 5;
/// The node started for the repair measurement.
pub const SPARE_NODE: u64 = 6;
/// Racks of nodes 1..=6.
const RACKS: [&str; 6] = ["rack-a", "rack-a", "rack-b", "rack-b", "rack-c", "rack-c"];
/// How long start-up may take before the benchmark gives up.
const READY_TIMEOUT_MS: u64 = 90_000;
/// The ingest gateway, reader and operator the benchmark acts as.
pub const INGEST: &str = "bench-ingest";
/// The HSZ reader.
pub const READER: &str = "bench-reader";
/// The operator (grants, node changes, listings).
pub const OPERATOR: &str = "bench-operator";

/// Repair pacing for the benchmark cluster (`[health]`).
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// Most repairs at once.
    pub repair_parallel: u32,
    /// Most MB/s of helper reads.
    pub repair_rate_mb_s: u32,
    /// Most moves per masked-repair session.
    pub repair_batch_moves: u32,
    /// Shares of at least this many bytes go to files (`[staging]
    /// file_share_min_bytes`).
    pub file_share_min_bytes: u64,
    /// The largest record put whole (`[limits] max_record_bytes`).
    pub max_record_bytes: u64,
}

/// A running benchmark cluster.
pub struct BenchCluster {
    dir: PathBuf,
    config_path: PathBuf,
    config: ClusterConfig,
    node_binary: PathBuf,
    zone_key: PathBuf,
    log_filter: String,
    children: BTreeMap<u64, Child>,
}

fn file_err(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |source| CliError::File {
        path: path.to_path_buf(),
        source,
    }
}

impl BenchCluster {
    /// Creates the cluster's files in `dir` (which must not hold one already) and
    /// starts nodes 1..=5; they log what `log_filter` lets through unless `RUST_LOG`
    /// is set.
    pub fn create(
        dir: &Path,
        node_binary: &Path,
        pacing: Pacing,
        log_filter: &str,
    ) -> Result<BenchCluster, CliError> {
        if dir.join("cluster.toml").exists() {
            return Err(CliError::Exists {
                path: dir.join("cluster.toml"),
            });
        }
        std::fs::create_dir_all(dir.join("logs")).map_err(file_err(dir))?;
        let pki_dir = dir.join("pki");
        pki::init_ca(&pki_dir, "kakera bench CA")?;
        let clients = dir.join("clients");
        for (name, role, zone) in [
            (INGEST, Role::Ingest, Some("dc")),
            (READER, Role::Reader, Some("hsz")),
            (OPERATOR, Role::Operator, None),
        ] {
            pki::issue(
                &pki_dir,
                &clients,
                &IssueRequest {
                    name: name.into(),
                    role,
                    zone: zone.map(str::to_string),
                },
            )?;
        }
        let keys = zone::keygen(&dir.join("zone"), "hsz", Custody::Single)?;
        let zone_public =
            std::fs::read_to_string(&keys.public_file).map_err(file_err(&keys.public_file))?;
        let mut suffix = [0u8; 4];
        getrandom::fill(&mut suffix)
            .map_err(|e| CliError::Bench(format!("the OS random source failed: {e}")))?;
        let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        let ports = kakera_net::ports::local_ports(RACKS.len())?;
        let mut text = format!(
            "# Written by `kakera bench`: a benchmark cluster, never for real records.\n\
             cluster_id = \"{prefix}{suffix}\"\n\
             ca_cert = \"pki/ca.crt.pem\"\n\
             zone_public_key = \"{zone}\"\n\
             racks = [\"rack-a\", \"rack-b\", \"rack-c\"]\n\n\
             [policy]\nk = 3\nn = 5\n\n\
             [zones.dc]\n[zones.hsz]\nnetworks = [\"127.0.0.1\"]\n\n\
             [health]\nsuspect_after_ms = 1000\ndead_after_ms = 3000\n\
             repair_parallel = {parallel}\nrepair_rate_mb_s = {rate}\n\
             repair_batch_moves = {batch}\n\n\
             [staging]\nfile_share_min_bytes = {files}\n\n\
             [limits]\nmax_record_bytes = {whole}\n",
            prefix = kakera_config::BENCH_CLUSTER_PREFIX,
            zone = zone_public.trim(),
            parallel = pacing.repair_parallel,
            rate = pacing.repair_rate_mb_s,
            batch = pacing.repair_batch_moves,
            files = pacing.file_share_min_bytes,
            whole = pacing.max_record_bytes,
        );
        if super::BASELINE_BUILT {
            text.push_str("\n[baseline]\nplain_replicas = 3\n");
        }
        for (i, (rack, port)) in RACKS.iter().zip(&ports).enumerate() {
            let id = i as u64 + 1;
            // Writing to a String cannot fail.
            let _ = write!(
                text,
                "\n[[nodes]]\nid = {id}\nname = \"node-{id}\"\nrack = \"{rack}\"\nzone = \"dc\"\n\
                 addr = \"127.0.0.1:{port}\"\ndata_dir = \"data/node-{id}\"\n"
            );
            let data = dir.join(format!("data/node-{id}"));
            let (cert, key) = pki::issue(
                &pki_dir,
                &data,
                &IssueRequest {
                    name: format!("node-{id}"),
                    role: Role::Node,
                    zone: None,
                },
            )?;
            std::fs::rename(&cert, data.join("node.crt.pem")).map_err(file_err(&cert))?;
            std::fs::rename(&key, data.join("node.key.pem")).map_err(file_err(&key))?;
        }
        let config_path = dir.join("cluster.toml");
        std::fs::write(&config_path, &text).map_err(file_err(&config_path))?;
        let config = ClusterConfig::load(&config_path)?;
        let mut cluster = BenchCluster {
            dir: dir.to_path_buf(),
            config_path,
            config,
            node_binary: node_binary.to_path_buf(),
            zone_key: keys
                .secret_files
                .first()
                .cloned()
                .ok_or_else(|| CliError::Bench("zone keygen wrote no private key".into()))?,
            log_filter: log_filter.to_string(),
            children: BTreeMap::new(),
        };
        for id in 1..=ACTIVE_NODES {
            cluster.start_node(id)?;
        }
        Ok(cluster)
    }

    /// The cluster's config.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// Starts node `id` (its log goes to `logs/node-<id>.log`, appended to). `RUST_LOG`
    /// passes through; without it nodes log what the cluster's filter lets through.
    pub fn start_node(&mut self, id: u64) -> Result<(), CliError> {
        let log_path = self.node_log(id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(file_err(&log_path))?;
        let err = log.try_clone().map_err(file_err(&log_path))?;
        let child = Command::new(&self.node_binary)
            .arg("--config")
            .arg(&self.config_path)
            .arg("--node")
            .arg(id.to_string())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| self.log_filter.clone()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| {
                CliError::Bench(format!(
                    "cannot start {} (build it with `cargo build --release -p kakera-node`, \
                     or name it with --node-binary): {e}",
                    self.node_binary.display()
                ))
            })?;
        self.children.insert(id, child);
        Ok(())
    }

    /// Where node `id` logs.
    pub fn node_log(&self, id: u64) -> PathBuf {
        self.dir.join(format!("logs/node-{id}.log"))
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("data/node-{id}"))
    }

    /// The running nodes' process ids.
    pub fn pids(&self) -> Vec<(u64, u32)> {
        self.children.iter().map(|(id, c)| (*id, c.id())).collect()
    }

    /// Kills node `id` with SIGKILL (a machine lost, nothing flushed) and reaps it.
    pub fn kill_node(&mut self, id: u64) -> Result<(), CliError> {
        let mut child = self
            .children
            .remove(&id)
            .ok_or_else(|| CliError::Bench(format!("node {id} is not running")))?;
        child
            .kill()
            .and_then(|()| child.wait().map(|_| ()))
            .map_err(|e| CliError::Bench(format!("cannot stop node {id}: {e}")))
    }

    /// Whether every started node process is still running; the first one that
    /// exited otherwise, with where its log is.
    pub fn check_alive(&mut self) -> Result<(), CliError> {
        for (id, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(CliError::Bench(format!(
                    "node {id} exited ({status}); see {}",
                    self.dir.join(format!("logs/node-{id}.log")).display()
                )));
            }
        }
        Ok(())
    }

    fn tls(&self, name: &str) -> TlsFiles {
        let clients = self.dir.join("clients");
        TlsFiles {
            ca: self.config.ca_cert.clone(),
            cert: clients.join(format!("{name}.crt.pem")),
            key: clients.join(format!("{name}.key.pem")),
        }
    }

    /// A client acting as `name` (one of [`INGEST`], [`READER`], [`OPERATOR`]); the
    /// reader holds the zone private key.
    pub fn client(&self, name: &str) -> Result<Client, CliError> {
        let client = Client::connect(self.config.clone(), &self.tls(name))?;
        if name == READER {
            return Ok(client.with_zone_key(zone::load_private(&self.zone_key)?));
        }
        Ok(client)
    }

    /// Waits until the leader reports every node in `nodes` alive and every node in
    /// `down` dead (a new leader counts a node it never heard from as alive for a
    /// grace period; shares placed on it then would wait for it).
    pub async fn wait_health(
        &mut self,
        client: &Client,
        nodes: &[u64],
        down: &[u64],
    ) -> Result<(), CliError> {
        let deadline = Instant::now() + Duration::from_millis(READY_TIMEOUT_MS);
        loop {
            self.check_alive()?;
            let last = match client.topology().await {
                Ok((health, _)) => {
                    let is = |id: &u64, state: &str| {
                        health.iter().any(|h| h.node == *id && h.health == state)
                    };
                    if nodes.iter().all(|id| is(id, "alive"))
                        && down.iter().all(|id| is(id, "dead"))
                    {
                        return Ok(());
                    }
                    format!("{health:?}")
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(CliError::Bench(format!(
                    "nodes {nodes:?} not all alive (or {down:?} not dead) after {} s (last \
                     answer: {last}); logs in {}",
                    READY_TIMEOUT_MS / 1000,
                    self.dir.join("logs").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for BenchCluster {
    fn drop(&mut self) {
        for (id, child) in &mut self.children {
            if let Err(e) = child.kill().and_then(|()| child.wait().map(|_| ())) {
                tracing::warn!(node = id, error = %e, "could not stop a benchmark node");
            }
        }
    }
}
