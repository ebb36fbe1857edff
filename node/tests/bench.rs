//! `kakera bench` end to end, small: it brings up its own cluster, stores and reads
//! records with secret sharing and with the plain-replica baseline through the same
//! nodes, measures single gets and repair after killing a node, and writes a report.
//! The figures of a debug build mean nothing; this test checks that every phase ran
//! over every record (each get checks every byte it read, so a wrong read fails the
//! run), that the ratios pair the two modes, and that repair moved every share the
//! killed node held. Guards the benchmark itself (issue 10) and, through the
//! baseline, that plain replicas work only where the config allows them (P1 is
//! checked on a normal cluster in `adversarial.rs`). The baseline exists only in
//! builds with the `bench-baseline` feature (`scripts/test.sh` runs this test once
//! more with it); a default build measures sharing alone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

use std::path::Path;
use std::process::Command;

#[test]
fn bench_measures_both_modes_and_repair() {
    let dir = tempfile::TempDir::new().unwrap();
    let report_path = dir.path().join("report.json");
    let baseline = cfg!(feature = "bench-baseline");
    let kakera = Path::new(env!("CARGO_BIN_EXE_kakera-node")).with_file_name("kakera");
    let out = Command::new(&kakera)
        .args([
            "bench",
            "--sizes",
            "1KiB,64KiB,160KiB",
            "--max-record-bytes",
            "64KiB",
            "--bytes-per-size",
            "256KiB",
            "--min-records",
            "6",
            "--batch-bytes",
            "64KiB",
            "--concurrency",
            "2",
            "--single-gets",
            "20",
            "--repair-timeout-s",
            "120",
        ])
        .args(if baseline {
            None
        } else {
            Some("--no-baseline")
        })
        .arg("--out")
        .arg(&report_path)
        .arg("--dir")
        .arg(dir.path().join("cluster"))
        .arg("--node-binary")
        .arg(env!("CARGO_BIN_EXE_kakera-node"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kakera bench failed:\n{stderr}\n{stdout}"
    );
    assert_eq!(
        stdout.contains("cost of secret sharing"),
        baseline,
        "{stdout}"
    );
    assert!(
        !dir.path().join("cluster").exists(),
        "the cluster's directory was left behind"
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report["setup"]["nodes"], 5);
    assert_eq!(report["setup"]["k"], 3);
    assert_eq!(report["setup"]["replicas"], if baseline { 3 } else { 0 });
    let phases = report["phases"].as_array().unwrap();
    // Per size: put and get in both modes; then single gets in both modes.
    let expect = [
        ("put", "sharing", 1024, 256),
        ("put", "replicas", 1024, 256),
        ("get", "sharing", 1024, 256),
        ("get", "replicas", 1024, 256),
        ("put", "sharing", 65536, 6),
        ("put", "replicas", 65536, 6),
        ("get", "sharing", 65536, 6),
        ("get", "replicas", 65536, 6),
        // Above max_record_bytes: streamed as three segments, one record a request.
        ("put", "sharing", 163840, 6),
        ("put", "replicas", 163840, 6),
        ("get", "sharing", 163840, 6),
        ("get", "replicas", 163840, 6),
        ("get", "sharing", 1024, 20),
        ("get", "replicas", 1024, 20),
    ];
    let expect: Vec<_> = expect
        .into_iter()
        .filter(|(_, mode, _, _)| baseline || *mode == "sharing")
        .collect();
    assert_eq!(phases.len(), expect.len(), "{phases:#?}");
    for (p, (op, mode, size, records)) in phases.iter().zip(expect) {
        assert_eq!(p["op"], op, "{p}");
        assert_eq!(p["mode"], mode, "{p}");
        assert_eq!(p["record_bytes"], size, "{p}");
        assert_eq!(p["records"], records, "{p}");
        assert!(p["records_per_s"].as_f64().unwrap() > 0.0, "{p}");
        let lat = &p["latency"];
        assert!(lat["p50_us"].as_u64().unwrap() > 0, "{p}");
        assert!(lat["p50_us"].as_u64() <= lat["p99_us"].as_u64(), "{p}");
        assert!(lat["p99_us"].as_u64() <= lat["p999_us"].as_u64(), "{p}");
    }
    // 1 KiB at 64 KiB per request: 64 records per batch; the single gets one each.
    let single = phases.len() - (if baseline { 2 } else { 1 });
    assert_eq!(phases[0]["batch_records"], 64);
    assert_eq!(phases[single]["batch_records"], 1);
    let streamed = if baseline { 8 } else { 4 };
    assert_eq!(phases[streamed]["batch_records"], 1, "{}", phases[streamed]);
    assert!(report["client_peak_rss_bytes"].as_u64().unwrap() > 0);
    assert_eq!(phases[single]["concurrency"], 1);
    // A ratio for each (op, shape) measured in both modes.
    let ratios = report["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), if baseline { 7 } else { 0 }, "{ratios:#?}");
    for r in ratios {
        assert!(r["time_ratio"].as_f64().unwrap() > 0.0, "{r}");
    }

    let repair = &report["repair"];
    assert_eq!(repair["new_node"], 6);
    // Every record stored with sharing has a share on each of the five nodes: 256 +
    // 6 + 20 records, the 6 streamed ones in 3 segments each, and their bytes.
    assert_eq!(repair["moves"], 282 + 6 * 3, "{repair}");
    let share_bytes = repair["share_bytes"].as_u64().unwrap();
    // Share header + checksum + the seal's overhead (magic, version, X25519 key, tag).
    let overhead = 32 + 16 + (4 + 1 + 32 + 16);
    assert_eq!(
        share_bytes,
        276 * (1024 + overhead) + 6 * (65536 + overhead) + 6 * (163840 + 3 * overhead)
    );
    assert!(repair["mb_per_s"].as_f64().unwrap() > 0.0, "{repair}");
}
