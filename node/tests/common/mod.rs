//! Test support: a throwaway PKI (rcgen), a loopback cluster config, `kakera-node`
//! processes, and a client that asks nodes for their status.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)] // test support

pub mod disk;
pub mod history;
pub mod proxy;
pub mod raw;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kakera_net::{Peer, QuicLimits, TlsFiles, TlsMaterial};
use kakera_proto::identity::{name_uri, zone_uri};
use kakera_proto::{NodeStatus, Request, RequestEnvelope, RequestId, Response, Role};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An intermediate CA this CA signs (for tests that a cluster trusts only what
    /// its CA issued directly).
    pub fn intermediate(&self, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A CRL numbered `number` that revokes the certificates in the PEM files
    /// `revoked`, signed by this CA (DER).
    #[allow(dead_code)] // only the revocation tests revoke
    pub fn crl(&self, number: u64, revoked: &[&Path]) -> Vec<u8> {
        self.signed_crl(number, revoked).der().to_vec()
    }

    /// [`Ca::crl`] as PEM, as a CRL file holds it.
    #[allow(dead_code)] // only the revocation tests revoke
    pub fn crl_pem(&self, number: u64, revoked: &[&Path]) -> String {
        self.signed_crl(number, revoked).pem().unwrap()
    }

    #[allow(dead_code)] // only the revocation tests revoke
    fn signed_crl(&self, number: u64, revoked: &[&Path]) -> rcgen::CertificateRevocationList {
        let now = time::OffsetDateTime::now_utc();
        rcgen::CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(1),
            next_update: now + time::Duration::days(1),
            crl_number: rcgen::SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|p| {
                    let serial = kakera_proto::revocation::cert_ref(&cert_der(p))
                        .unwrap()
                        .serial;
                    rcgen::RevokedCertParams {
                        serial_number: rcgen::SerialNumber::from_slice(&serial),
                        revocation_time: now,
                        reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                        invalidity_date: None,
                    }
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .unwrap()
    }

    /// [`Ca::issue`] with a certificate that expires at `not_after`.
    pub fn issue_until(
        &self,
        dir: &Path,
        stem: &str,
        name: &str,
        role: Role,
        not_after: time::OffsetDateTime,
    ) -> (PathBuf, PathBuf) {
        self.issue_with(dir, stem, name, role, None, Some(not_after))
    }

    /// Writes `<dir>/<stem>.crt.pem` and `<dir>/<stem>.key.pem` for a holder.
    pub fn issue(
        &self,
        dir: &Path,
        stem: &str,
        name: &str,
        role: Role,
        zone: Option<&str>,
    ) -> (PathBuf, PathBuf) {
        self.issue_with(dir, stem, name, role, zone, None)
    }

    fn issue_with(
        &self,
        dir: &Path,
        stem: &str,
        name: &str,
        role: Role,
        zone: Option<&str>,
        not_after: Option<time::OffsetDateTime>,
    ) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        if let Some(t) = not_after {
            params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
            params.not_after = t;
        }
        params.distinguished_name.push(DnType::CommonName, name);
        let mut uris = vec![role.uri(), name_uri(name)];
        if let Some(z) = zone {
            uris.push(zone_uri(z));
        }
        for u in uris {
            params
                .subject_alt_names
                .push(SanType::URI(u.as_str().try_into().unwrap()));
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let crt = dir.join(format!("{stem}.crt.pem"));
        let k = dir.join(format!("{stem}.key.pem"));
        // Written whole and renamed into place: a node that watches the files never
        // reads half of one.
        for (path, text) in [(&crt, cert.pem()), (&k, key.serialize_pem())] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
        (crt, k)
    }
}

/// The first certificate of a PEM file (DER).
#[allow(dead_code)] // only some tests read certificates
pub fn cert_der(path: &Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_file(path)
        .unwrap()
        .to_vec()
}

/// `GET path` from a node's metrics port: (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {out}")))?;
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}

/// Record metadata for tests: `kind` from `source`, subject tag all `subject`.
pub fn meta(kind: kakera_proto::RecordKind, source: &str, subject: u8) -> kakera_proto::RecordMeta {
    kakera_proto::RecordMeta {
        subject: kakera_proto::SubjectTag([subject; 32]),
        kind,
        source: source.into(),
        effective: kakera_proto::Date::new(2026, 1, 1).unwrap(),
        data_kind: None,
    }
}

/// The value of the sample `name` (with its labels, as printed) in a metrics page.
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// A port no other test of this process got, free for TCP and UDP, below the
/// ephemeral range (a released `bind(0)` port can go to another socket before the
/// node binds it).
fn free_port() -> u16 {
    kakera_net::ports::local_port().expect("a free local port")
}

pub struct LocalCluster {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub ca: Ca,
    pub ids: Vec<u64>,
    pub addrs: Vec<std::net::SocketAddr>,
    /// Each node's metrics and health port (HTTP).
    pub metrics: Vec<std::net::SocketAddr>,
    pub children: Vec<Option<Child>>,
    /// Where each node listens when it is not its config address (a fault proxy
    /// stands at the config address).
    pub listen: Vec<Option<std::net::SocketAddr>>,
    /// The zone private key whose public half is in the config (readers load it).
    pub zone_key: [u8; 32],
    /// The nodes' RUST_LOG (default `info`).
    pub rust_log: String,
}

impl LocalCluster {
    /// Writes certificates and a config for `n` nodes over racks a, a, b, b, c, ...
    pub fn prepare(dir: &Path, n: u64) -> LocalCluster {
        LocalCluster::prepare_with(dir, n, "")
    }

    /// [`LocalCluster::prepare`] with `extra` TOML sections (e.g. `[staging]`).
    pub fn prepare_with(dir: &Path, n: u64, extra: &str) -> LocalCluster {
        let racks = ["rack-a", "rack-a", "rack-b", "rack-b", "rack-c"];
        let node_racks: Vec<&str> = (0..n as usize).map(|i| racks[i % racks.len()]).collect();
        LocalCluster::prepare_racks(dir, &node_racks, extra)
    }

    /// A cluster whose node `i + 1` stands in `node_racks[i]`.
    pub fn prepare_racks(dir: &Path, node_racks: &[&str], extra: &str) -> LocalCluster {
        let n = node_racks.len() as u64;
        let ca = Ca::new("kakera test CA");
        std::fs::write(dir.join("ca.pem"), &ca.cert_pem).unwrap();
        let mut racks: Vec<&str> = node_racks.to_vec();
        racks.sort_unstable();
        racks.dedup();
        let racks_toml: Vec<String> = racks.iter().map(|r| format!("\"{r}\"")).collect();
        let (private, public) = kakera_client::seal::ZonePrivateKey::generate();
        let mut toml = format!(
            "cluster_id = \"proc-test\"\nca_cert = \"ca.pem\"\nzone_public_key = \"{}\"\nracks = [{}]\n\n[policy]\nk = 3\nn = 5\n\n[zones.dc]\n[zones.hsz]\nnetworks = [\"127.0.0.0/8\"]\n\n[health]\nsuspect_after_ms = 1500\ndead_after_ms = 5000\n{extra}\n",
            public.to_hex(),
            racks_toml.join(", ")
        );
        let mut addrs = Vec::new();
        let mut metrics = Vec::new();
        for id in 1..=n {
            let metrics_addr: std::net::SocketAddr =
                format!("127.0.0.1:{}", free_port()).parse().unwrap();
            metrics.push(metrics_addr);
            let port = free_port();
            let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            addrs.push(addr);
            let name = format!("node-{id}");
            let data = dir.join(format!("data/{name}"));
            ca.issue(&data, "node", &name, Role::Node, None);
            toml.push_str(&format!(
                "\n[[nodes]]\nid = {id}\nname = \"{name}\"\nrack = \"{}\"\nzone = \"dc\"\naddr = \"{addr}\"\ndata_dir = \"data/{name}\"\nmetrics_addr = \"{metrics_addr}\"\n",
                node_racks[id as usize - 1]
            ));
        }
        let config_path = dir.join("cluster.toml");
        std::fs::write(&config_path, toml).unwrap();
        LocalCluster {
            dir: dir.to_path_buf(),
            config_path,
            ca,
            ids: (1..=n).collect(),
            addrs,
            metrics,
            children: (0..n).map(|_| None).collect(),
            listen: (0..n).map(|_| None).collect(),
            zone_key: *private.as_bytes(),
            rust_log: "info".into(),
        }
    }

    /// The cluster config as clients load it.
    pub fn config(&self) -> kakera_config::ClusterConfig {
        kakera_config::ClusterConfig::load(&self.config_path).unwrap()
    }

    /// Certificate files for a holder of `role` (and `zone`) from this cluster's CA.
    pub fn identity(&self, name: &str, role: Role, zone: Option<&str>) -> TlsFiles {
        let dir = self.dir.join("clients");
        let (cert, key) = self.ca.issue(&dir, name, name, role, zone);
        TlsFiles {
            ca: self.dir.join("ca.pem"),
            cert,
            key,
        }
    }

    /// Starts node `id` (appending to its log), with crash points armed through
    /// [`LocalCluster::crash_file`].
    pub fn spawn(&mut self, id: u64) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node-{id}.log")))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kakera-node"));
        cmd.arg("--config")
            .arg(&self.config_path)
            .arg("--node")
            .arg(id.to_string())
            .env("RUST_LOG", &self.rust_log)
            .env(kakera_net::crash::ENV, self.crash_file(id))
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(listen) = self.listen[id as usize - 1] {
            cmd.arg("--listen").arg(listen.to_string());
        }
        self.children[id as usize - 1] = Some(cmd.spawn().unwrap());
    }

    /// Moves every node behind a fault proxy: each listens on a fresh port, and its
    /// config address is left for the proxy. Returns `(id, front, back)` per node for
    /// [`proxy::FaultProxy::start`]. Call before spawning.
    pub fn behind_proxies(&mut self) -> Vec<(u64, std::net::SocketAddr, std::net::SocketAddr)> {
        let mut out = Vec::new();
        for (i, id) in self.ids.iter().enumerate() {
            let back: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            self.listen[i] = Some(back);
            out.push((*id, self.addrs[i], back));
        }
        out
    }

    /// The file that arms node `id`'s crash points.
    pub fn crash_file(&self, id: u64) -> PathBuf {
        self.dir.join(format!("crash-{id}"))
    }

    /// Arms crash point `point` on node `id`: the node kills itself with SIGKILL the
    /// next time it reaches it.
    pub fn arm(&self, id: u64, point: &str) {
        let _ = std::fs::remove_file(self.crash_file(id).with_extension("hit"));
        std::fs::write(self.crash_file(id), point).unwrap();
    }

    /// Disarms node `id` (its crash point was not reached).
    pub fn disarm(&self, id: u64) {
        let _ = std::fs::remove_file(self.crash_file(id));
    }

    /// The crash point node `id` died at, once its process has exited (waits up to
    /// `timeout`); `None` if it is still running or died elsewhere.
    pub async fn died_at(&mut self, id: u64, timeout: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let exited = match self.children[id as usize - 1].as_mut() {
                Some(c) => c.try_wait().unwrap().is_some(),
                None => true,
            };
            if exited {
                self.children[id as usize - 1] = None;
                let hit = self.crash_file(id).with_extension("hit");
                return std::fs::read_to_string(hit).ok();
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether node `id`'s process is running.
    pub fn running(&mut self, id: u64) -> bool {
        match self.children[id as usize - 1].as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// kill -9.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.children[id as usize - 1].take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self, id: u64) -> std::process::ExitStatus {
        let mut c = self.children[id as usize - 1].take().unwrap();
        Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .unwrap();
        c.wait().unwrap()
    }

    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.join(format!("node-{id}.log"))).unwrap_or_default()
    }

    /// A client endpoint with an identity of the given role from this cluster's CA.
    pub fn client(&self, name: &str, role: Role) -> Client {
        let dir = self.dir.join("clients");
        let (cert, key) = self.ca.issue(&dir, name, name, role, None);
        Client::new(&TlsFiles {
            ca: self.dir.join("ca.pem"),
            cert,
            key,
        })
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub struct Client {
    pub endpoint: quinn::Endpoint,
}

impl Client {
    pub fn new(files: &TlsFiles) -> Client {
        let tls = TlsMaterial::load(files).unwrap();
        Client::with_config(tls.client_config(QuicLimits::default()).unwrap())
    }

    pub fn with_config(config: quinn::ClientConfig) -> Client {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(config);
        Client { endpoint }
    }

    pub async fn ask(
        &self,
        addr: std::net::SocketAddr,
        server_name: &str,
        body: Request,
    ) -> Result<Response, kakera_net::NetError> {
        self.ask_with(addr, server_name, body, &[]).await
    }

    /// [`Client::ask`] with raw bytes (share data) after the request.
    pub async fn ask_with(
        &self,
        addr: std::net::SocketAddr,
        server_name: &str,
        body: Request,
        trailer: &[u8],
    ) -> Result<Response, kakera_net::NetError> {
        let peer = Peer::new(self.endpoint.clone(), addr, server_name);
        let env = RequestEnvelope {
            cluster_id: "proc-test".into(),
            request_id: RequestId([7; 16]),
            body,
        };
        peer.request_with(&env, &[trailer], 0, Duration::from_secs(3))
            .await
            .map(|(r, _)| r)
    }

    pub async fn status(
        &self,
        addr: std::net::SocketAddr,
        server_name: &str,
    ) -> Option<NodeStatus> {
        match self.ask(addr, server_name, Request::Status).await {
            Ok(Response::Status(s)) => Some(*s),
            _ => None,
        }
    }
}

/// Starts an `n`-node cluster and waits until its leader answers an operator.
pub async fn start(dir: &std::path::Path, n: u64) -> LocalCluster {
    start_with(dir, n, "").await
}

/// [`start`] with extra config sections.
pub async fn start_with(dir: &std::path::Path, n: u64, extra: &str) -> LocalCluster {
    run(LocalCluster::prepare_with(dir, n, extra)).await
}

/// Spawns every node of a prepared cluster and waits until its leader answers.
pub async fn run(mut cluster: LocalCluster) -> LocalCluster {
    for id in cluster.ids.clone() {
        cluster.spawn(id);
    }
    let operator = kakera_client::Client::connect(
        cluster.config(),
        &cluster.identity("op", Role::Operator, None),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while operator.grants().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "no leader: {}",
            cluster.log(1)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_voters(&operator, cluster.ids.len().min(5)).await;
    cluster
}

/// The operator, the ingest gateway (zone dc) and the granted reader `anon-job`
/// (zone hsz, with the zone key) of a test cluster.
pub fn clients(
    cluster: &LocalCluster,
) -> (
    kakera_client::Client,
    kakera_client::Client,
    kakera_client::Client,
) {
    let connect = |name: &str, role: Role, zone: Option<&str>| {
        kakera_client::Client::connect(cluster.config(), &cluster.identity(name, role, zone))
            .unwrap()
    };
    let reader = connect("anon-job", Role::Reader, Some("hsz"))
        .with_zone_key(kakera_client::seal::ZonePrivateKey::from_bytes(&cluster.zone_key).unwrap());
    (
        connect("op", Role::Operator, None),
        connect("gateway", Role::Ingest, Some("dc")),
        reader,
    )
}

/// Waits until every running node has applied everything the leader committed.
pub async fn wait_all_applied(client: &kakera_client::Client) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answers = client.connection().status_all().await;
        let statuses: Vec<_> = answers
            .iter()
            .filter_map(|(_, s)| s.as_ref().ok())
            .collect();
        let committed = statuses.iter().filter_map(|s| s.raft.committed).max();
        if statuses.len() == client.config().nodes.len()
            && statuses.iter().all(|s| s.raft.applied == committed)
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nodes did not catch up: {:?}",
            answers
                .iter()
                .map(|(n, s)| match s {
                    Ok(s) => format!(
                        "node {}: {} term {} applied {:?} committed {:?}",
                        n.id, s.raft.state, s.raft.term, s.raft.applied, s.raft.committed
                    ),
                    Err(e) => format!("node {}: {e}", n.id),
                })
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The auditor of a test cluster.
#[allow(dead_code)] // not every test file audits
pub fn auditor(cluster: &LocalCluster) -> kakera_client::Client {
    kakera_client::Client::connect(
        cluster.config(),
        &cluster.identity("auditor", Role::Auditor, None),
    )
    .unwrap()
}

/// Enters an hour-long grant over everything for `job`, read by `reader`.
#[allow(dead_code)] // not every test file reads
pub async fn open_grant(operator: &kakera_client::Client, job: &str, reader: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    operator
        .create_grant(kakera_proto::catalog::Grant {
            job: job.into(),
            reader: reader.into(),
            scope: kakera_proto::catalog::GrantScope::default(),
            expires_at_ms: now + 3_600_000,
            approval: "IRB-2026-test".into(),
            created_at_ms: 0,
            created_by: String::new(),
            revoked: None,
        })
        .await
        .unwrap();
}

/// Every catalog entry.
#[allow(dead_code)] // not every test file lists
pub async fn entries(c: &kakera_client::Client) -> Vec<kakera_proto::catalog::RecordEntry> {
    c.list_all(kakera_proto::catalog::ListFilter::All, 100_000)
        .await
        .unwrap()
}

/// Waits until the leader reports `node` holding no share and no move pending.
#[allow(dead_code)] // not every test file repairs
pub async fn wait_moved_off(c: &kakera_client::Client, node: u64, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok((nodes, repair)) = c.topology().await {
            let held = nodes.iter().find(|n| n.node == node).map(|n| n.shares);
            let on_it = entries(c)
                .await
                .iter()
                .filter(|e| e.holder_on(node).is_some())
                .count();
            if held == Some(0) && on_it == 0 && repair.pending == 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: {nodes:?} {repair:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The node the cluster's leader runs on, as `kakera status` judges it.
#[allow(dead_code)]
pub async fn leader_node(c: &kakera_client::Client) -> Option<u64> {
    let answers = c.connection().status_all().await;
    kakera_cli::status::build(c.config(), &answers).leader
}

/// Waits until the leader reports `voters` voting members (the start-up membership
/// change is done): before that, the bootstrapper alone may be the whole quorum.
#[allow(dead_code)]
pub async fn wait_voters(c: &kakera_client::Client, voters: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let answers = c.connection().status_all().await;
        let done = answers.iter().any(|(_, s)| {
            s.as_ref()
                .is_ok_and(|s| s.raft.state == "Leader" && s.raft.voters.len() == voters)
        });
        if done {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the voter set never reached {voters}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
