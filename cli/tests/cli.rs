//! The `kakera` CLI as an operator uses it: CA and certificates (P7: roles and zones
//! come from certificates the cluster CA issues; keys are private), config checks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use kakera_proto::{Identity, Role};

fn kakera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kakera"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn der_of(pem_path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(pem_path).unwrap();
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    decode_b64(&b64)
}

fn decode_b64(s: &str) -> Vec<u8> {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        acc = (acc << 6) | T.iter().position(|&t| t == c).unwrap() as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn ca_init_and_issue_write_private_keys_0600_and_never_overwrite() {
    let dir = tempfile::TempDir::new().unwrap();
    let pki = dir.path().join("pki");
    let pki_s = pki.to_str().unwrap();
    let o = kakera(&["ca", "init", "--dir", pki_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mode = std::fs::metadata(pki.join("ca.key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let again = kakera(&["ca", "init", "--dir", pki_s]);
    assert_eq!(again.status.code(), Some(3));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );

    let out = dir.path().join("job");
    let o = kakera(&[
        "ca",
        "issue",
        "--ca-dir",
        pki_s,
        "--role",
        "reader",
        "--zone",
        "hsz",
        "--name",
        "job-17",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mode = std::fs::metadata(out.join("job-17.key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let id = Identity::from_cert_der(&der_of(&out.join("job-17.crt.pem"))).unwrap();
    assert_eq!(
        (id.name.as_str(), id.role, id.zone.as_deref()),
        ("job-17", Role::Reader, Some("hsz"))
    );

    let dup = kakera(&[
        "ca",
        "issue",
        "--ca-dir",
        pki_s,
        "--role",
        "reader",
        "--name",
        "job-17",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(stderr(&dup).contains("already exists"), "{}", stderr(&dup));

    let bad_role = kakera(&[
        "ca", "issue", "--ca-dir", pki_s, "--role", "admin", "--name", "x",
    ]);
    assert_eq!(bad_role.status.code(), Some(1));
    assert!(stderr(&bad_role).contains("unknown role 'admin'"));

    let no_ca = kakera(&[
        "ca",
        "issue",
        "--ca-dir",
        dir.path().join("nope").to_str().unwrap(),
        "--role",
        "node",
        "--name",
        "n1",
    ]);
    assert_eq!(no_ca.status.code(), Some(3));
    assert!(
        stderr(&no_ca).contains("kakera ca init"),
        "{}",
        stderr(&no_ca)
    );
}

#[test]
fn config_check_summarises_a_good_config_and_lists_every_problem_of_a_bad_one() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut toml = String::from(
        "cluster_id = \"c\"\nca_cert = \"ca.pem\"\nracks = [\"a\", \"b\", \"c\"]\n[policy]\nk = 3\nn = 5\n[zones.dc]\n",
    );
    for (id, rack) in [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c")] {
        toml.push_str(&format!(
            "[[nodes]]\nid = {id}\nname = \"n{id}\"\nrack = \"{rack}\"\nzone = \"dc\"\naddr = \"127.0.0.1:{}\"\ndata_dir = \"d{id}\"\n",
            7000 + id
        ));
    }
    let good = dir.path().join("good.toml");
    std::fs::write(&good, &toml).unwrap();
    let o = kakera(&["config", "check", good.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("5 nodes in 3 racks, 3-of-5"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        toml.replace("rack = \"c\"", "rack = \"z\"")
            .replace("7005", "7001"),
    )
    .unwrap();
    let o = kakera(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("2 problem(s)"), "{err}");
    assert!(err.contains("unknown rack \"z\""), "{err}");
    assert!(err.contains("127.0.0.1:7001 is used twice"), "{err}");
}

#[test]
fn zone_keygen_with_custodians_and_unseal_from_the_command_line() {
    let dir = tempfile::TempDir::new().unwrap();
    let out = dir.path().join("hsz-key");
    let o = kakera(&[
        "zone",
        "keygen",
        "--out",
        out.to_str().unwrap(),
        "--custodians",
        "3",
        "--threshold",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let public = std::fs::read_to_string(out.join("zone.pub")).unwrap();
    assert!(
        stdout.contains(&format!("zone_public_key = \"{}\"", public.trim())),
        "{stdout}"
    );
    // The public key line parses in a cluster config.
    assert_eq!(public.trim().len(), 64);

    let c = |i: u8| out.join(format!("custodian-{i}.key"));
    let job_key = dir.path().join("job.key");
    let o = kakera(&[
        "zone",
        "unseal",
        c(3).to_str().unwrap(),
        c(1).to_str().unwrap(),
        "--out",
        job_key.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(public.trim()));
    assert_eq!(
        std::fs::metadata(&job_key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let sk = kakera_client::zone::load_private(&job_key).unwrap();
    assert_eq!(sk.public_key().unwrap().to_hex(), public.trim());

    // One custodian is not enough: exit code 1 and a sentence, no key material.
    let o = kakera(&["zone", "unseal", c(2).to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("needs 2"), "{}", stderr(&o));
    let share_line = std::fs::read_to_string(c(2)).unwrap();
    let share_hex = share_line
        .lines()
        .find(|l| l.starts_with("share"))
        .unwrap()
        .split('"')
        .nth(1)
        .unwrap()
        .to_string();
    assert!(!stderr(&o).contains(&share_hex));
    // --custodians without --threshold is a usage error.
    let o = kakera(&["zone", "keygen", "--out", "x", "--custodians", "3"]);
    assert_eq!(o.status.code(), Some(2));
}

/// Bad grant and audit arguments are refused with a sentence naming the fix, before
/// anything is sent (exit code 1, no panic).
#[test]
fn grant_and_audit_arguments_are_checked_before_anything_is_sent() {
    let cluster = [
        "--config",
        "/nonexistent/cluster.toml",
        "--cert",
        "x.pem",
        "--key",
        "y.pem",
    ];
    let create = |extra: &[&str]| {
        let mut args = vec!["grant", "create"];
        args.extend_from_slice(&cluster);
        args.extend_from_slice(&[
            "--job",
            "study-1",
            "--reader",
            "anon",
            "--sources",
            "any",
            "--approval",
            "IRB-1",
        ]);
        args.extend_from_slice(extra);
        kakera(&args)
    };
    let o = create(&["--kinds", "claim,xray", "--expires", "2099-01-01"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("ssmix2"), "{}", stderr(&o));
    let o = create(&["--kinds", "claim", "--expires", "next week"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("YYYY-MM-DD"), "{}", stderr(&o));
    let o = create(&["--kinds", "any", "--expires", "2001-01-01"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("in the past"), "{}", stderr(&o));

    let mut args = vec!["audit", "log"];
    args.extend_from_slice(&cluster);
    args.extend_from_slice(&["--record", "not-hex"]);
    let o = kakera(&args);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("32 hex digits"), "{}", stderr(&o));
}

/// Every leaf command of `kakera` (as `kakera --help` lists them, recursively).
fn leaf_commands(prefix: &[String]) -> Vec<Vec<String>> {
    let mut args: Vec<&str> = prefix.iter().map(String::as_str).collect();
    args.push("--help");
    let o = kakera(&args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    let help = String::from_utf8_lossy(&o.stdout).into_owned();
    let Some(list) = help.split("Commands:\n").nth(1) else {
        return vec![prefix.to_vec()];
    };
    let mut out = Vec::new();
    for line in list.lines() {
        if line.is_empty() || !line.starts_with("  ") {
            break;
        }
        let name = line.split_whitespace().next().unwrap();
        if name == "help" {
            continue;
        }
        let mut next = prefix.to_vec();
        next.push(name.to_string());
        out.extend(leaf_commands(&next));
    }
    out
}

/// Operations (issue 9): every command documents an example and the exit codes, and
/// takes --json.
#[test]
fn every_command_has_an_example_exit_codes_and_json() {
    let top = kakera(&["--help"]);
    let top_help = String::from_utf8_lossy(&top.stdout);
    for needle in ["Exit codes:", "  0 ", "  1 ", "  2 ", "  3 ", "--json"] {
        assert!(
            top_help.contains(needle),
            "{needle:?} missing from:\n{top_help}"
        );
    }
    let leaves = leaf_commands(&[]);
    assert!(leaves.len() >= 27, "{leaves:?}");
    for leaf in leaves {
        let mut args: Vec<&str> = leaf.iter().map(String::as_str).collect();
        args.push("--help");
        let help = String::from_utf8_lossy(&kakera(&args).stdout).into_owned();
        assert!(help.contains("Example"), "{leaf:?} has no example:\n{help}");
        assert!(help.contains("--json"), "{leaf:?} takes no --json:\n{help}");
    }
}

fn json_of(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON value ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

/// Operations (issue 9): offline commands print one JSON object with --json, errors
/// too, and the exit codes are the documented ones.
#[test]
fn json_output_and_exit_codes() {
    let dir = tempfile::TempDir::new().unwrap();
    let d = |p: &str| dir.path().join(p).to_str().unwrap().to_string();

    let o = kakera(&["ca", "init", "--dir", &d("pki"), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        json_of(&o)["ca_cert"]
            .as_str()
            .unwrap()
            .ends_with("ca.crt.pem")
    );

    let o = kakera(&[
        "ca",
        "issue",
        "--ca-dir",
        &d("pki"),
        "--role",
        "reader",
        "--zone",
        "hsz",
        "--name",
        "job-1",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = json_of(&o);
    assert_eq!(
        (v["role"].as_str(), v["zone"].as_str()),
        (Some("reader"), Some("hsz"))
    );

    let o = kakera(&["zone", "keygen", "--out", &d("zone"), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json_of(&o)["public_key"].as_str().unwrap().len(), 64);
    // The private key never appears in the output.
    let private = std::fs::read_to_string(dir.path().join("zone/zone.key")).unwrap();
    for line in private.lines().filter(|l| l.len() >= 32) {
        assert!(!String::from_utf8_lossy(&o.stdout).contains(line.trim()));
    }

    let o = kakera(&["linkage", "keygen", "--out", &d("linkage.key"), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = kakera(&[
        "subject-tag",
        "--facility",
        "1310000001",
        "--patient",
        "0001",
        "--linkage-key",
        &d("linkage.key"),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json_of(&o)["subject"].as_str().unwrap().len(), 64);

    // 1: a problem found (an invalid config), as JSON too.
    std::fs::write(dir.path().join("bad.toml"), "cluster_id = \"x\"\n").unwrap();
    let o = kakera(&["config", "check", &d("bad.toml"), "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v = json_of(&o);
    assert_eq!(v["exit_code"], 1);
    assert!(!v["error"].as_str().unwrap().is_empty(), "{v}");

    // 2: usage.
    let o = kakera(&["backup"]);
    assert_eq!(o.status.code(), Some(2));
    let o = kakera(&["status", "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));

    // 3: a file that is not there.
    let o = kakera(&["config", "check", &d("missing.toml"), "--json"]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(json_of(&o)["exit_code"], 3);

    // A restore whose part is missing: a sentence, exit 1.
    std::fs::create_dir_all(dir.path().join("node")).unwrap();
    let good = format!(
        "cluster_id = \"c\"\nca_cert = \"pki/ca.crt.pem\"\nracks = [\"a\", \"b\", \"c\"]\n\
         [policy]\nk = 2\nn = 3\n[zones.dc]\n{}",
        (1..=3)
            .map(|i| format!(
                "[[nodes]]\nid = {i}\nname = \"n{i}\"\nrack = \"{}\"\nzone = \"dc\"\n\
                 addr = \"127.0.0.1:{}\"\ndata_dir = \"node/{i}\"\n",
                ["a", "b", "c"][i - 1],
                7100 + i
            ))
            .collect::<String>()
    );
    std::fs::write(dir.path().join("good.toml"), good).unwrap();
    let node_binary = Path::new(env!("CARGO_BIN_EXE_kakera")).with_file_name("kakera-node");
    if node_binary.exists() {
        let o = kakera(&[
            "restore",
            &d("no-backup"),
            "--config",
            &d("good.toml"),
            "--node",
            "1",
            "--json",
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let v = json_of(&o);
        assert!(v["error"].as_str().unwrap().contains("part.json"), "{v}");
    }
}
