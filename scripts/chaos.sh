#!/usr/bin/env bash
# A chaos soak: five kakera-node processes behind UDP fault proxies, a continuous
# writer and reader, and random faults for N minutes (kill -9 the leader or any node,
# isolate the leader, split the cluster 2|3; each healed after 1-5 s). Every operation
# is recorded and the history checked for linearizability per record. Prints the
# faults injected, the operations done and the violations found (must be 0).
# Usage: scripts/chaos.sh [--minutes N]   (default 5)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(kakera_root)"

minutes=5
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    -h|--help) sed -n 2,7p "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$minutes" =~ ^[0-9]+$ ]] && [ "$minutes" -gt 0 ] || { echo "--minutes takes a whole number above 0" >&2; exit 2; }

log="$CARGO_TARGET_DIR/chaos-$(date +%Y%m%d-%H%M%S).log"
echo "chaos soak for $minutes minute(s); full output in $log"
set +e
KAKERA_CHAOS_SECONDS=$((minutes * 60)) \
  cargo test -p kakera-node --test chaos -- --ignored --exact chaos_soak --nocapture >"$log" 2>&1
status=$?
set -e
# The report line, and on failure the violations or the panic.
grep -E '^faults injected' "$log" || true
if [ "$status" -ne 0 ]; then
  grep -A40 -E '^thread .* panicked' "$log" | head -60 || true
  echo "chaos soak FAILED (exit $status)" >&2
fi
exit "$status"
