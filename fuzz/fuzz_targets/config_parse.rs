//! Cluster config parsing never panics; a config that parses keeps its invariants
//! (policy within the topology, limits within their ceilings).
#![no_main]

use kakera_config::ClusterConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = ClusterConfig::parse(text) {
        assert!(config.policy.k >= 1 && config.policy.k <= config.policy.n);
        assert!(config.limits.problems().is_empty(), "limits were validated");
        assert!(config.nodes.len() >= usize::from(config.policy.n));
    }
});
