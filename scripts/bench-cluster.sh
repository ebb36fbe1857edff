#!/usr/bin/env bash
# The cluster benchmark: builds release binaries, then runs `kakera bench`, which
# starts its own 5-node, 3-rack cluster (3 of 5) in a temporary directory and measures
# put and get throughput and latency per record size with secret sharing and with the
# plain 3-replica baseline, single gets at low load, and repair after killing a node.
# Prints the table; the JSON report goes to kakera-bench.json (or --out FILE).
#
#   scripts/bench-cluster.sh                       every default (1KiB,64KiB,1MiB,16MiB)
#   scripts/bench-cluster.sh --sizes 1KiB --concurrency 16 --out /tmp/r.json
#
# Every argument goes to `kakera bench` (see `kakera bench --help`). Takes about 5
# minutes after the build on a 2-core machine; the first release build compiles
# RocksDB (about 20 minutes).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(kakera_root)"
case "${1:-}" in -h|--help) sed -n 2,13p "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

ensure_debs libclang-dev g++
cargo build --release --locked -q -p kakera-node -p kakera-cli --bins \
  --features kakera-node/bench-baseline,kakera-cli/bench-baseline
exec "$CARGO_TARGET_DIR/release/kakera" bench \
  --node-binary "$CARGO_TARGET_DIR/release/kakera-node" "$@"
