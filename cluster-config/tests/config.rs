//! Cluster config parsing and validation: every rule, with the line it names. Guards P1
//! (no policy that would put k shares in a rack) and P4 (no policy that a rack loss
//! would break) at the point where an operator writes the topology.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

use kakera_config::{ClusterConfig, ConfigError, HSZ_ZONE, Issue};

/// A valid 3-rack, 5-node, 3-of-5 config. Line numbers below refer to this text.
const GOOD: &str = r#"cluster_id = "kakera-test"
ca_cert = "pki/ca.pem"
racks = ["rack-a", "rack-b", "rack-c"]

[policy]
k = 3
n = 5

[zones.dc]
[zones.hsz]
networks = ["10.20.0.0/16", "127.0.0.1"]

[[nodes]]
id = 1
name = "node-1"
rack = "rack-a"
zone = "dc"
addr = "127.0.0.1:7101"
data_dir = "data/node-1"

[[nodes]]
id = 2
name = "node-2"
rack = "rack-a"
zone = "dc"
addr = "127.0.0.1:7102"
data_dir = "data/node-2"

[[nodes]]
id = 3
name = "node-3"
rack = "rack-b"
zone = "dc"
addr = "127.0.0.1:7103"
data_dir = "data/node-3"

[[nodes]]
id = 4
name = "node-4"
rack = "rack-b"
zone = "dc"
addr = "127.0.0.1:7104"
data_dir = "data/node-4"

[[nodes]]
id = 5
name = "node-5"
rack = "rack-c"
zone = "dc"
addr = "127.0.0.1:7105"
data_dir = "data/node-5"
"#;

fn issues(text: &str) -> Vec<Issue> {
    match ClusterConfig::parse(text) {
        Err(ConfigError::Invalid { issues }) => issues,
        other => panic!("expected validation issues, got {other:?}"),
    }
}

fn single_issue(text: &str) -> Issue {
    let mut all = issues(text);
    assert_eq!(all.len(), 1, "{all:#?}");
    all.remove(0)
}

#[test]
fn a_good_config_parses_with_defaults() {
    let c = ClusterConfig::parse(GOOD).unwrap();
    assert_eq!(c.cluster_id, "kakera-test");
    assert_eq!(c.policy.k, 3);
    assert_eq!(c.policy.n, 5);
    assert_eq!(c.policy.max_shares_per_rack, 2, "default is k - 1");
    assert_eq!(c.nodes.len(), 5);
    assert_eq!(c.racks, ["rack-a", "rack-b", "rack-c"]);
    assert_eq!(c.zones[HSZ_ZONE].networks.len(), 2);
    assert_eq!(c.node(3).unwrap().rack, "rack-b");
    assert_eq!(c.node_by_name("node-5").unwrap().id, 5);
    assert!(c.zone_public_key.is_none());
}

#[test]
fn load_resolves_paths_against_the_config_directory() {
    let dir = std::env::temp_dir().join(format!("kakera-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cluster.toml");
    std::fs::write(&path, GOOD).unwrap();
    let c = ClusterConfig::load(&path).unwrap();
    assert_eq!(c.ca_cert, dir.join("pki/ca.pem"));
    assert_eq!(c.nodes[0].data_dir, dir.join("data/node-1"));
    std::fs::remove_dir_all(&dir).unwrap();
    match ClusterConfig::load(&dir.join("missing.toml")) {
        Err(ConfigError::Io { path, .. }) => assert!(path.ends_with("missing.toml")),
        other => panic!("expected an IO error, got {other:?}"),
    }
}

#[test]
fn voters_are_spread_over_racks_and_capped_at_five() {
    let c = ClusterConfig::parse(GOOD).unwrap();
    assert_eq!(c.initial_voters(), vec![1, 2, 3, 4, 5]);
    // Add two more nodes: still five voters, no rack with more than two.
    let mut text = GOOD.to_string();
    for (id, rack) in [(6, "rack-c"), (7, "rack-a")] {
        text.push_str(&format!(
            "\n[[nodes]]\nid = {id}\nname = \"node-{id}\"\nrack = \"{rack}\"\nzone = \"dc\"\n\
             addr = \"127.0.0.1:71{id:02}\"\ndata_dir = \"data/node-{id}\"\n"
        ));
    }
    let c = ClusterConfig::parse(&text).unwrap();
    let voters = c.initial_voters();
    assert_eq!(voters.len(), 5);
    for rack in &c.racks {
        let in_rack = voters
            .iter()
            .filter(|v| &c.node(**v).unwrap().rack == rack)
            .count();
        assert!(in_rack <= 2, "{rack} has {in_rack} voters: {voters:?}");
    }
}

#[test]
fn syntax_errors_name_the_line() {
    let text = GOOD.replace("k = 3", "k = three");
    match ClusterConfig::parse(&text) {
        Err(ConfigError::Syntax { line, message }) => {
            assert_eq!(line, 6, "{message}");
        }
        other => panic!("{other:?}"),
    }
    let text = GOOD.replace("rack = \"rack-c\"", "rack = \"rack-c\"\nrak = \"x\"");
    match ClusterConfig::parse(&text) {
        Err(ConfigError::Syntax { line, message }) => {
            assert_eq!(line, 49, "{message}");
            assert!(message.contains("rak"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn duplicate_ids_names_addresses_and_dirs_are_reported_with_both_lines() {
    let i = single_issue(&GOOD.replace("id = 4\n", "id = 2\n"));
    assert_eq!(i.line, Some(38));
    assert_eq!(i.field, "nodes[3].id");
    assert!(i.message.contains("first on line 22"), "{}", i.message);

    let i = single_issue(&GOOD.replace("127.0.0.1:7105", "127.0.0.1:7101"));
    assert_eq!(i.line, Some(50));
    assert_eq!(i.field, "nodes[4].addr");

    let i = single_issue(&GOOD.replace("\"node-3\"", "\"node-1\""));
    assert_eq!(i.field, "nodes[2].name");

    let i = single_issue(&GOOD.replace("data/node-2", "data/node-1"));
    assert_eq!(i.field, "nodes[1].data_dir");

    let i =
        single_issue(&GOOD.replace(r#""rack-b", "rack-c"]"#, r#""rack-b", "rack-c", "rack-a"]"#));
    assert_eq!(i.line, Some(3));
    assert!(i.message.contains("declared twice"));
}

#[test]
fn unknown_racks_and_zones_are_named() {
    let i = single_issue(&GOOD.replace("rack = \"rack-c\"", "rack = \"rack-z\""));
    assert_eq!(i.line, Some(48));
    assert_eq!(i.field, "nodes[4].rack");
    assert!(i.message.contains("rack-z") && i.message.contains("rack-a, rack-b, rack-c"));

    let text = GOOD.replacen("zone = \"dc\"", "zone = \"dmz\"", 1);
    let i = single_issue(&text);
    assert_eq!(i.line, Some(17));
    assert!(i.message.contains("[zones.dmz]"), "{}", i.message);
}

#[test]
fn bad_values_are_reported_all_at_once() {
    let text = GOOD
        .replace("127.0.0.1:7103", "localhost")
        .replace("\"10.20.0.0/16\"", "\"10.20.0.0/99\"")
        .replace("cluster_id = \"kakera-test\"", "cluster_id = \"has space\"")
        .replace(
            "ca_cert = \"pki/ca.pem\"",
            "ca_cert = \"pki/ca.pem\"\nzone_public_key = \"abcd\"",
        );
    let all = issues(&text);
    let fields: Vec<&str> = all.iter().map(|i| i.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "cluster_id",
            "zone_public_key",
            "zones.hsz.networks[0]",
            "nodes[2].addr"
        ]
    );
    // Sorted by line, and Display names the line.
    assert!(all.windows(2).all(|w| w[0].line <= w[1].line));
    assert!(
        all[3].to_string().starts_with("line 35: nodes[2].addr:"),
        "{}",
        all[3]
    );
}

#[test]
fn a_zone_public_key_in_hex_is_read() {
    let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let text = GOOD.replace(
        "ca_cert = \"pki/ca.pem\"",
        &format!("ca_cert = \"pki/ca.pem\"\nzone_public_key = \"{key}\""),
    );
    let c = ClusterConfig::parse(&text).unwrap();
    assert_eq!(c.zone_public_key.unwrap()[1], 0x11);
}

#[test]
fn policies_the_topology_cannot_hold_are_refused() {
    // max_shares_per_rack = k would let a rack hold k shares (P1).
    let i = single_issue(&GOOD.replace("n = 5", "n = 5\nmax_shares_per_rack = 3"));
    assert_eq!(i.field, "policy.max_shares_per_rack");
    assert_eq!(i.line, Some(8));

    // k < 2 and n < k.
    let all = issues(&GOOD.replace("k = 3", "k = 1"));
    assert!(all.iter().any(|i| i.field == "policy.k"));
    let i = single_issue(&GOOD.replace("n = 5", "n = 2"));
    assert_eq!(i.field, "policy.n");

    // Fewer than n nodes.
    let i = single_issue(&GOOD.replace("n = 5", "n = 6"));
    assert_eq!(i.field, "policy");
    assert!(i.message.contains("at least 6 nodes"), "{}", i.message);

    // Two racks for 3-of-5 with 2 per rack: capacity 4 < 5.
    let two_racks = GOOD.replace("rack = \"rack-c\"", "rack = \"rack-b\"");
    let all = issues(&two_racks);
    assert!(
        all.iter()
            .any(|i| i.field == "policy" && i.message.contains("hold only 4")),
        "{all:#?}"
    );

    // 3-of-4 with 2 per rack: a rack loss leaves 2 < 3.
    let text = GOOD.replace("n = 5", "n = 4");
    let i = single_issue(&text);
    assert!(
        i.message.contains("losing the largest rack"),
        "{}",
        i.message
    );
    assert_eq!(i.line, Some(5));
}

#[test]
fn no_nodes_is_an_issue_not_a_crash() {
    let text = GOOD.split("[[nodes]]").next().unwrap();
    let all = issues(text);
    assert!(all.iter().any(|i| i.field == "nodes"), "{all:#?}");
    // Display of the whole error lists every problem on its own line.
    let err = ClusterConfig::parse(text).unwrap_err().to_string();
    assert!(err.contains("problem(s)"), "{err}");
}

#[test]
fn node_ids_must_fit_in_32_bits_and_not_be_zero() {
    // Raft member ids carry the node id in their low 32 bits (kakera_proto::ids).
    let zero = single_issue(&GOOD.replace("id = 5\n", "id = 0\n"));
    assert_eq!(zero.field, "nodes[4].id");
    assert_eq!(zero.line, Some(46));
    let big = single_issue(&GOOD.replace("id = 5\n", "id = 4294967296\n"));
    assert_eq!(big.field, "nodes[4].id");
    assert!(big.message.contains("4294967295"), "{}", big.message);
    assert!(ClusterConfig::parse(&GOOD.replace("id = 5\n", "id = 4294967295\n")).is_ok());
}

#[test]
fn health_and_staging_sections_are_optional_and_checked() {
    let c = ClusterConfig::parse(GOOD).unwrap();
    assert_eq!(c.health, kakera_config::HealthConfig::default());
    assert_eq!(c.staging, kakera_config::StagingConfig::default());
    assert_eq!(c.staging.ttl_ms, 15 * 60 * 1000);

    let set = format!(
        "{GOOD}\n[health]\nsuspect_after_ms = 1500\ndead_after_ms = 5000\n\n[staging]\nttl_ms = 4000\ncollect_every_ms = 500\n"
    );
    let c = ClusterConfig::parse(&set).unwrap();
    assert_eq!(c.health.dead_after_ms, 5000);
    assert_eq!(c.staging.ttl_ms, 4000);
    assert_eq!(c.staging.collect_every_ms, 500);

    // A collector slower than the lifetime, and a lifetime under a second, are refused.
    let slow = format!("{GOOD}\n[staging]\nttl_ms = 2000\ncollect_every_ms = 3000\n");
    let issue = single_issue(&slow);
    assert_eq!(issue.field, "staging");
    assert!(issue.message.contains("collect_every_ms"), "{issue:?}");
    let short = format!("{GOOD}\n[staging]\nttl_ms = 10\n");
    assert_eq!(single_issue(&short).field, "staging");
    let unknown = format!("{GOOD}\n[staging]\nttl_s = 10\n");
    assert!(ClusterConfig::parse(&unknown).is_err());

    // Large shares go to files from 1 MiB by default; a threshold below 1 KiB (a
    // file per small share) is refused with the floor named.
    assert_eq!(c.staging.file_share_min_bytes, 1024 * 1024);
    let files = format!("{GOOD}\n[staging]\nfile_share_min_bytes = 65536\n");
    assert_eq!(
        ClusterConfig::parse(&files)
            .unwrap()
            .staging
            .file_share_min_bytes,
        65536
    );
    let tiny = format!("{GOOD}\n[staging]\nfile_share_min_bytes = 10\n");
    let issue = single_issue(&tiny);
    assert!(issue.message.contains("at least 1024"), "{issue:?}");
}

/// P7: limits default to safe values, may be lowered, and are refused above their
/// ceilings or out of order, naming the `[limits]` section.
#[test]
fn limits_default_may_be_set_and_are_checked() {
    let c = ClusterConfig::parse(GOOD).unwrap();
    assert_eq!(c.limits, kakera_config::LimitsConfig::default());
    assert!(c.limits.problems().is_empty());

    let set = format!("{GOOD}\n[limits]\nmax_record_bytes = 4096\nmax_batch_records = 8\n");
    let c = ClusterConfig::parse(&set).unwrap();
    assert_eq!(c.limits.max_record_bytes, 4096);
    assert_eq!(c.limits.max_batch_records, 8);
    assert_eq!(
        c.limits.max_frame_bytes,
        kakera_config::LimitsConfig::default().max_frame_bytes
    );

    for (bad, names) in [
        ("max_record_bytes = 67108865", "max_record_bytes"),
        ("max_batch_records = 4097", "max_batch_records"),
        ("max_batch_records = 0", "max_batch_records"),
        ("max_frame_bytes = 1024", "max_frame_bytes"),
        ("max_connections_per_peer = 0", "max_connections_per_peer"),
        (
            "max_streams_per_connection = 8\nmax_requests_per_connection = 9",
            "max_requests_per_connection",
        ),
        (
            "max_record_bytes = 8192\nmax_staged_bytes_per_identity = 8191",
            "max_staged_bytes_per_identity",
        ),
    ] {
        let issue = single_issue(&format!("{GOOD}\n[limits]\n{bad}\n"));
        assert_eq!(issue.field, "limits", "{bad}");
        assert!(issue.message.contains(names), "{bad}: {}", issue.message);
    }
    let unknown = format!("{GOOD}\n[limits]\nmax_everything = 1\n");
    assert!(matches!(
        ClusterConfig::parse(&unknown),
        Err(ConfigError::Syntax { .. })
    ));
}

/// Operations (issue 9): the metrics address is optional and parsed.
#[test]
fn metrics_addresses_are_optional_and_parsed() {
    let c = ClusterConfig::parse(GOOD).unwrap();
    assert!(c.nodes.iter().all(|n| n.metrics_addr.is_none()));

    let with = GOOD
        .replace(
            "data_dir = \"data/node-1\"\n",
            "data_dir = \"data/node-1\"\nmetrics_addr = \"127.0.0.1:9101\"\n",
        )
        .replace(
            "data_dir = \"data/node-2\"\n",
            "data_dir = \"data/node-2\"\nmetrics_addr = \"127.0.0.1:9102\"\n",
        );
    let c = ClusterConfig::parse(&with).unwrap();
    assert_eq!(
        c.node(1).unwrap().metrics_addr,
        Some("127.0.0.1:9101".parse().unwrap())
    );

    // The same address on two nodes is fine: each binds it on its own machine.
    assert!(ClusterConfig::parse(&with.replace("127.0.0.1:9102", "127.0.0.1:9101")).is_ok());

    let i = single_issue(&with.replace("127.0.0.1:9102", "localhost"));
    assert_eq!(i.field, "nodes[1].metrics_addr");
    assert!(i.message.contains("not an IP address"), "{}", i.message);
}

/// Operations (issue 9): the backup root is optional, resolved against the config's
/// directory, and never empty.
#[test]
fn backup_root_is_optional_and_resolved() {
    assert_eq!(ClusterConfig::parse(GOOD).unwrap().backup_root, None);
    let with = format!("{GOOD}\n[backup]\nroot = \"backups\"\n");
    let c = ClusterConfig::parse(&with).unwrap();
    assert_eq!(c.backup_root, Some("backups".into()));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, &with).unwrap();
    let c = ClusterConfig::load(&path).unwrap();
    assert_eq!(c.backup_root, Some(dir.path().join("backups")));
    let i = single_issue(&format!("{GOOD}\n[backup]\nroot = \" \"\n"));
    assert_eq!(i.field, "backup.root");
}

/// P1: plain replicas (no secrecy) are a benchmark baseline only. A build without the
/// `bench-baseline` feature (every release package) refuses a config that asks for
/// them, even a benchmark cluster's, so its nodes never take one whatever the config
/// says.
#[cfg(not(feature = "bench-baseline"))]
#[test]
fn a_default_build_refuses_plain_replicas_whatever_the_config_says() {
    let bench = GOOD.replacen("cluster_id = \"", "cluster_id = \"bench-", 1);
    for text in [GOOD, bench.as_str()] {
        for copies in [0, 3, 4] {
            let i = single_issue(&format!("{text}\n[baseline]\nplain_replicas = {copies}\n"));
            assert_eq!(i.field, "baseline");
            assert!(i.message.contains("bench-baseline"), "{}", i.message);
        }
        let c = ClusterConfig::parse(text).unwrap();
        assert_eq!(c.plain_replicas, None);
        assert_eq!(c.policy_for(1), None);
    }
}

/// P1: plain replicas (no secrecy) are a benchmark baseline only. Even in a benchmark
/// build, a config that is not named as a benchmark cluster cannot enable them, and
/// copies are one per rack.
#[cfg(feature = "bench-baseline")]
#[test]
fn plain_replicas_only_in_bench_clusters() {
    assert_eq!(ClusterConfig::parse(GOOD).unwrap().plain_replicas, None);
    let i = single_issue(&format!("{GOOD}\n[baseline]\nplain_replicas = 3\n"));
    assert_eq!(i.field, "baseline");
    assert!(i.message.contains("benchmark"), "{}", i.message);
    let bench = GOOD.replacen("cluster_id = \"", "cluster_id = \"bench-", 1);
    let c = ClusterConfig::parse(&format!("{bench}\n[baseline]\nplain_replicas = 3\n")).unwrap();
    assert_eq!(c.plain_replicas, Some(3));
    let plain = c.policy_for(1).unwrap();
    assert_eq!((plain.k, plain.n, plain.max_shares_per_rack), (1, 3, 1));
    assert_eq!(c.policy_for(3), Some(c.policy));
    assert_eq!(c.policy_for(2), None);
    assert_eq!(ClusterConfig::parse(GOOD).unwrap().policy_for(1), None);
    for copies in [0, 4] {
        let i = single_issue(&format!("{bench}\n[baseline]\nplain_replicas = {copies}\n"));
        assert_eq!(i.field, "baseline.plain_replicas");
    }
}

/// Issue 22: the review committee is read with its threshold and keys; a threshold
/// above the member count, a member listed twice, a key given twice or a key that is
/// not 64 hex digits are each refused, and without the section there is none.
#[test]
fn the_review_committee_is_read_and_checked() {
    assert!(ClusterConfig::parse(GOOD).unwrap().committee.is_none());
    let key = |b: u8| format!("{b:02x}").repeat(32);
    let with = |threshold: u8, members: &[(&str, String)]| {
        let mut text = format!("{GOOD}\n[committee]\nthreshold = {threshold}\n");
        for (name, k) in members {
            text.push_str(&format!(
                "[[committee.members]]\nname = \"{name}\"\npublic_key = \"{k}\"\n"
            ));
        }
        text
    };
    let good = ClusterConfig::parse(&with(
        2,
        &[("sato", key(1)), ("tanaka", key(2)), ("ito", key(3))],
    ))
    .unwrap()
    .committee
    .unwrap();
    assert_eq!(good.threshold, 2);
    assert_eq!(good.members.len(), 3);
    assert_eq!(good.members[1].name, "tanaka");
    assert_eq!(good.members[1].public_key, [2; 32]);
    for (text, field) in [
        (
            with(3, &[("sato", key(1)), ("tanaka", key(2))]),
            "committee.threshold",
        ),
        (with(0, &[("sato", key(1))]), "committee.threshold"),
        (
            with(1, &[("sato", key(1)), ("sato", key(2))]),
            "committee.members[1]",
        ),
        (
            with(1, &[("sato", key(1)), ("ito", key(1))]),
            "committee.members[1]",
        ),
        (with(1, &[("sato", "xyz".into())]), "committee.members[0]"),
    ] {
        let issue = single_issue(&text);
        assert_eq!(issue.field, field, "{issue:?}");
    }
}
