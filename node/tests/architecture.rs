//! The node's module layering (ARCHITECTURE.md, "kakera-node"), checked from the
//! source: the Raft state machine decides and never acts (no file under
//! `node/src/raft/` reaches backup, erasure, transport or the effect runner), and the
//! modules of `node/src` import each other without a loop. A `crate::<module>` path
//! in code (not in a comment, not in a `#[cfg(test)]` module) is an import.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("{e}")).path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`raft/snapshot.rs` -> `raft`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap_or_else(|e| panic!("{e}"));
    let first = rel
        .components()
        .next()
        .unwrap_or_else(|| panic!("empty path"))
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_string()
}

/// The modules `text` names as `crate::<module>` in code, before its test module.
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("#[cfg(test)]") {
            break;
        }
        if code.starts_with("//") {
            continue;
        }
        let code = code.split("//").next().unwrap_or("");
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// module -> the modules it imports (itself left out).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = manifest_dir().join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let module = module_of(&src, &file);
        if module == "lib" || module == "bin" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}"));
        let deps = graph.entry(module.clone()).or_default();
        deps.extend(imports(&text).into_iter().filter(|m| *m != module));
    }
    graph
}

/// A loop through `at`, if there is one (depth-first, colours by set).
fn find_loop(
    graph: &BTreeMap<String, BTreeSet<String>>,
    at: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(start) = path.iter().position(|m| m == at) {
        let mut cycle = path[start..].to_vec();
        cycle.push(at.to_string());
        return Some(cycle);
    }
    if done.contains(at) {
        return None;
    }
    path.push(at.to_string());
    for next in graph.get(at).into_iter().flatten() {
        if let Some(cycle) = find_loop(graph, next, path, done) {
            return Some(cycle);
        }
    }
    path.pop();
    done.insert(at.to_string());
    None
}

/// Issue 25: the state machine decides and others act. `raft` builds on the store
/// and the share store only; checkpoints, purges and the network are reached through
/// the effects it returns (`raft::effects`), never by import.
#[test]
fn the_raft_module_imports_only_the_stores() {
    let graph = graph();
    let raft = graph
        .get("raft")
        .unwrap_or_else(|| panic!("no raft module in {graph:?}"));
    let allowed: BTreeSet<String> = ["store", "shares", "error", "clock"]
        .into_iter()
        .map(String::from)
        .collect();
    let extra: Vec<&String> = raft.difference(&allowed).collect();
    assert!(
        extra.is_empty(),
        "node/src/raft/ imports {extra:?}; it may import only {allowed:?}"
    );
}

/// Issue 25: no import loop among the node's modules (there was one through eleven
/// files: raft -> backup -> transport -> raft, store -> raft, metrics <-> transport).
#[test]
fn the_node_modules_import_each_other_without_a_loop() {
    let graph = graph();
    assert!(graph.len() >= 10, "modules found: {:?}", graph.keys());
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(cycle) = find_loop(&graph, module, &mut Vec::new(), &mut done) {
            panic!("an import loop: {}", cycle.join(" -> "));
        }
    }
}

/// The checker itself: a path in code counts, a comment and a test module do not.
#[test]
fn imports_are_read_from_code_only() {
    let text = "use crate::store::cf;\n/// see `crate::backup`\nlet x = crate::clock::unix_ms(); // crate::daemon\n#[cfg(test)]\nmod tests { use crate::transport; }\n";
    let found: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(found, vec!["clock".to_string(), "store".to_string()]);
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        find_loop(&g, "a", &mut Vec::new(), &mut BTreeSet::new()),
        Some(vec!["a".to_string(), "b".to_string(), "a".to_string()])
    );
}

/// This package's directory: cargo's run-time variable first, so a test binary built
/// from another clone sharing the target dir still reads this clone's files.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}
