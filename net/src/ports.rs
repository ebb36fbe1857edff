//! Ports for clusters on one machine (the benchmark's, the tests'): chosen below the
//! kernel's ephemeral range, so a port handed out here is not given to some other
//! socket's `bind(0)` or outgoing connection between the moment it is checked and
//! the moment a node binds it. Asking the kernel for a free port (`bind` to port 0)
//! and releasing it has exactly that race: the kernel may hand the same port to the
//! next socket that asks, and a node then fails with "address already in use".
//!
//! Each port is handed out once per process (a counter), starts at an offset taken
//! from the process id so two processes doing this at once rarely meet, and is
//! checked free for both TCP and UDP on 127.0.0.1 before it is returned.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::NetError;

/// The first port handed out (below: well-known and registered services).
pub const FIRST_PORT: u16 = 20_000;
/// One past the last port handed out: Linux's default ephemeral range starts at
/// 32768 (`net.ipv4.ip_local_port_range`).
pub const END_PORT: u16 = 32_768;

/// How many candidates this process has taken so far.
static TAKEN: AtomicU32 = AtomicU32::new(0);

/// The `nth` candidate of a process whose id is `pid`: consecutive from an offset
/// spread by the process id, wrapping within `FIRST_PORT..END_PORT`.
pub fn candidate(pid: u32, nth: u32) -> u16 {
    let span = u32::from(END_PORT - FIRST_PORT);
    // 64 ports apart per process id step, so consecutive pids start apart.
    let offset = (pid.wrapping_mul(64) % span + nth % span) % span;
    // offset < span <= u16::MAX - FIRST_PORT, so the sum fits a u16.
    FIRST_PORT + offset as u16
}

/// Whether `port` is free on 127.0.0.1 for both a TCP listener and a UDP socket at
/// this moment.
fn free_now(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
}

/// `count` distinct ports on 127.0.0.1 that were free for TCP and UDP when checked,
/// none of them handed out before by this process.
pub fn local_ports(count: usize) -> Result<Vec<u16>, NetError> {
    let span = u32::from(END_PORT - FIRST_PORT);
    let pid = std::process::id();
    let mut out = Vec::with_capacity(count);
    // Bounded: at most one pass over the range per call.
    for _ in 0..span {
        if out.len() == count {
            break;
        }
        // Other threads take from the same counter, so after a whole range of
        // their takes a candidate of this call could come round again.
        let port = candidate(pid, TAKEN.fetch_add(1, Ordering::Relaxed));
        if free_now(port) && !out.contains(&port) {
            out.push(port);
        }
    }
    if out.len() < count {
        return Err(NetError::NoLocalPort {
            wanted: count,
            found: out.len(),
        });
    }
    Ok(out)
}

/// One port from [`local_ports`].
pub fn local_port() -> Result<u16, NetError> {
    Ok(local_ports(1)?[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Candidates stay below the ephemeral range for any process id and count.
    #[test]
    fn candidates_stay_outside_the_ephemeral_range() {
        for pid in [0, 1, 2, 4_194_303, u32::MAX] {
            for nth in [0, 1, 12_767, 12_768, 1_000_000, u32::MAX] {
                let p = candidate(pid, nth);
                assert!(
                    (FIRST_PORT..END_PORT).contains(&p),
                    "pid {pid} nth {nth}: {p}"
                );
            }
        }
    }

    /// One process's consecutive candidates are distinct over the whole range.
    #[test]
    fn a_process_gets_each_port_once_per_pass() {
        let span = u32::from(END_PORT - FIRST_PORT);
        let mut seen = std::collections::HashSet::new();
        for nth in 0..span {
            assert!(seen.insert(candidate(12_345, nth)));
        }
    }

    /// Ports handed out are distinct across calls and threads, and bindable.
    #[test]
    fn handed_out_ports_are_distinct_and_free() {
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| local_ports(8).unwrap()))
            .collect();
        let mut all = Vec::new();
        for t in threads {
            all.extend(t.join().unwrap());
        }
        let mut unique = all.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 32);
        for port in all {
            assert!((FIRST_PORT..END_PORT).contains(&port));
        }
        // A port someone holds over UDP or TCP is not free.
        let port = local_port().unwrap();
        assert!(free_now(port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
        assert!(!free_now(port));
        drop(udp);
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        assert!(!free_now(port));
        drop(tcp);
    }
}
