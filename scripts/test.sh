#!/usr/bin/env bash
# The test command (README.md): installs what the build needs, then runs every test
# of the workspace, then the benchmark's test once more with its baseline compiled in.
# Extra arguments go to `cargo test` (e.g. `-p kakera-shamir`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(kakera_root)"
ensure_rust_components
# RocksDB (librocksdb-sys) runs bindgen, which needs libclang; its C++ needs g++.
ensure_debs libclang-dev g++
ensure_target_space 20
cargo test --workspace --locked "$@"
# The benchmark's replication baseline (plain copies, no secrecy) is compiled only
# with the bench-baseline feature, which no default build has: its test runs once
# more with it, against binaries built with it (skipped when arguments narrow the run).
if [ $# -eq 0 ]; then
  features=kakera-node/bench-baseline,kakera-cli/bench-baseline
  cargo build --locked -q -p kakera-node -p kakera-cli --bins --features "$features"
  cargo test --locked -p kakera-node --features "$features" --test bench
fi
