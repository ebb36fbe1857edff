#!/usr/bin/env bash
# The test command (README.md): installs what the build needs, then runs every test
# of the workspace. Extra arguments go to `cargo test` (e.g. `-p kakera-shamir`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(kakera_root)"
ensure_rust_components
# RocksDB (librocksdb-sys) runs bindgen, which needs libclang; its C++ needs g++.
ensure_debs libclang-dev g++
cargo test --workspace --locked "$@"
