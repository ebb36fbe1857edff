//! Raft member ids. A node's data directory gets a new Raft identity every time it
//! starts empty (first start, or after losing its disk), so a wiped node can never
//! reuse votes it cast before: the low 32 bits are the node id from the cluster
//! config, the high 32 bits an incarnation drawn at random when the directory is
//! created.

/// Bits of a Raft member id that hold the config node id.
const NODE_BITS: u32 = 32;

/// The Raft member id of incarnation `incarnation` of config node `node_id`
/// (`node_id` fits in 32 bits; kakera-config validates that).
pub fn raft_id(node_id: u64, incarnation: u32) -> u64 {
    debug_assert!(node_id <= u64::from(u32::MAX), "node ids are 32-bit");
    (u64::from(incarnation) << NODE_BITS) | (node_id & u64::from(u32::MAX))
}

/// The config node a Raft member id belongs to.
pub fn node_of(raft_id: u64) -> u64 {
    raft_id & u64::from(u32::MAX)
}

/// The incarnation part of a Raft member id.
pub fn incarnation_of(raft_id: u64) -> u32 {
    (raft_id >> NODE_BITS) as u32
}

/// `node-3#1a2b3c4d`-style text for logs and status output.
pub fn describe(raft_id: u64) -> String {
    format!("{}#{:08x}", node_of(raft_id), incarnation_of(raft_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_split_back_into_their_parts() {
        for (node, inc) in [
            (1u64, 0u32),
            (7, 1),
            (u64::from(u32::MAX), u32::MAX),
            (42, 0xdead_beef),
        ] {
            let id = raft_id(node, inc);
            assert_eq!(node_of(id), node);
            assert_eq!(incarnation_of(id), inc);
        }
        assert_eq!(raft_id(3, 0), 3);
        assert_ne!(raft_id(3, 1), raft_id(3, 2));
        assert_eq!(describe(raft_id(3, 0x1a2b)), "3#00001a2b");
    }
}
