#!/usr/bin/env bash
# Builds and runs every cargo-fuzz target for N seconds each.
# Usage: scripts/fuzz.sh [--seconds N] [TARGET ...]   (default 30 seconds, all targets)
# Needs cargo-fuzz (installed here if missing). cargo-fuzz passes nightly-only flags to
# rustc; on a stable toolchain RUSTC_BOOTSTRAP=1 lets them through for this build only.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(kakera_root)/fuzz"

seconds=30
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    -h|--help) sed -n 2,5p "$0"; exit 0 ;;
    -*) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "--seconds takes a whole number" >&2; exit 2; }

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
# The fuzz workspace keeps its own target dir (sanitizer builds differ from normal ones).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR}/fuzz"
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)

failed=0
for t in "${targets[@]}"; do
  echo "== fuzz $t for ${seconds}s"
  if ! cargo fuzz run "$t" -- -max_total_time="$seconds" -rss_limit_mb=4096; then
    echo "!! $t found a failure: see fuzz/artifacts/$t (add it as a regression test)" >&2
    failed=1
  fi
done
exit $failed
