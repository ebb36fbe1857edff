//! A UDP fault proxy in front of each `kakera-node` process. Peers and clients use a
//! node's config address, where the proxy listens; the node itself listens elsewhere
//! (`kakera-node --listen`). Node-to-node datagrams are recognised by their source (a
//! node's listen address: its one QUIC socket sends all its traffic) and can be cut
//! per direction; clients' datagrams always pass. Cutting datagrams is what a real
//! partition does to QUIC: nothing arrives, nothing is refused.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Most client sessions (source addresses) one relay keeps; beyond, new ones are
/// dropped (a test never comes close).
const MAX_SESSIONS: usize = 1024;

#[derive(Default)]
struct Rules {
    /// Directed node pairs whose datagrams are dropped.
    cut: HashSet<(u64, u64)>,
    /// Datagrams dropped so far.
    dropped: u64,
}

/// The proxies of one cluster.
pub struct FaultProxy {
    rules: Arc<Mutex<Rules>>,
    nodes: Vec<u64>,
    tasks: Vec<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts one relay per node: `(id, front, back)` = the config address the relay
    /// binds and the address the node listens on.
    pub async fn start(nodes: &[(u64, SocketAddr, SocketAddr)]) -> FaultProxy {
        let rules = Arc::new(Mutex::new(Rules::default()));
        let sources: Arc<BTreeMap<SocketAddr, u64>> =
            Arc::new(nodes.iter().map(|(id, _, back)| (*back, *id)).collect());
        let mut tasks = Vec::new();
        for (id, front, back) in nodes {
            let socket = Arc::new(UdpSocket::bind(front).await.unwrap());
            tasks.push(tokio::spawn(relay(
                *id,
                socket,
                *back,
                sources.clone(),
                rules.clone(),
            )));
        }
        FaultProxy {
            rules,
            nodes: nodes.iter().map(|n| n.0).collect(),
            tasks,
        }
    }

    fn set(&self, f: impl FnOnce(&mut Rules)) {
        f(&mut self.rules.lock().unwrap());
    }

    /// Cuts every link between `node` and the other nodes, both ways.
    pub fn isolate(&self, node: u64) {
        let others: Vec<u64> = self.nodes.iter().copied().filter(|n| *n != node).collect();
        self.partition(&[&[node], &others]);
    }

    /// Nodes in different groups cannot reach each other.
    pub fn partition(&self, groups: &[&[u64]]) {
        self.set(|r| {
            for (i, a) in groups.iter().enumerate() {
                for (j, b) in groups.iter().enumerate() {
                    if i != j {
                        for x in *a {
                            for y in *b {
                                r.cut.insert((*x, *y));
                            }
                        }
                    }
                }
            }
        });
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.set(|r| r.cut.clear());
    }

    /// Datagrams dropped so far.
    pub fn dropped(&self) -> u64 {
        self.rules.lock().unwrap().dropped
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn blocked(rules: &Mutex<Rules>, from: Option<u64>, to: u64) -> bool {
    let Some(from) = from else {
        return false;
    };
    let mut r = rules.lock().unwrap();
    let cut = r.cut.contains(&(from, to));
    if cut {
        r.dropped += 1;
    }
    cut
}

/// Relays datagrams for node `to`: from each source to the node through a socket of
/// its own (so the node's answers come back to that socket), and back.
async fn relay(
    to: u64,
    front: Arc<UdpSocket>,
    back: SocketAddr,
    sources: Arc<BTreeMap<SocketAddr, u64>>,
    rules: Arc<Mutex<Rules>>,
) {
    let mut sessions: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (len, src) = match front.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                continue;
            }
        };
        let from = sources.get(&src).copied();
        if blocked(&rules, from, to) {
            continue;
        }
        let upstream = match sessions.get(&src) {
            Some(s) => s.clone(),
            None => {
                if sessions.len() >= MAX_SESSIONS {
                    continue;
                }
                let s = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                s.connect(back).await.unwrap();
                sessions.insert(src, s.clone());
                tokio::spawn(answer(
                    to,
                    from,
                    s.clone(),
                    front.clone(),
                    src,
                    rules.clone(),
                ));
                s
            }
        };
        let _ = upstream.send(&buf[..len]).await;
    }
}

/// Carries node `to`'s answers back to `src`.
async fn answer(
    to: u64,
    from: Option<u64>,
    upstream: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    src: SocketAddr,
    rules: Arc<Mutex<Rules>>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        // While the node is down its port answers ICMP unreachable, which a connected
        // UDP socket reports as an error on the next receive: keep relaying, the node
        // comes back on the same port.
        let len = match upstream.recv(&mut buf).await {
            Ok(len) => len,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                continue;
            }
        };
        // An answer travels to -> from.
        if let Some(f) = from
            && blocked(&rules, Some(to), f)
        {
            continue;
        }
        let _ = front.send_to(&buf[..len], src).await;
    }
}
