#!/usr/bin/env bash
# A whole-machine CPU profile of each probe of `kakera bench --scale-records`.
#
#   scripts/profile-probes.sh OUT_DIR KAKERA_BINARY [bench arguments...]
#
# Runs `KAKERA_BINARY bench [arguments]` with its progress in OUT_DIR/bench.log and,
# from each "probe at N records" line to the probe's result line, `perf record -a`
# (the cpu-clock software event, which works in a VM without hardware counters) into
# OUT_DIR/probe-K-N.data. Afterwards it writes OUT_DIR/probe-K-N.txt: the samples by
# thread name and by shared object, and the hottest symbols, so that two probes of
# one run (the largest catalog and the closing baseline, say) compare line by line.
# The profile costs every probe alike (one sample per millisecond per core).
# A tool for an investigation, not part of the tests: it needs Debian's linux-perf.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 OUT_DIR KAKERA_BINARY [bench arguments...]" >&2
  exit 2
fi
out="$1"
kakera="$2"
shift 2
command -v perf >/dev/null || {
  source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
  ensure_debs linux-perf
}
mkdir -p "$out"
log="$out/bench.log"
: >"$log"

"$kakera" bench "$@" 2>"$log" &
bench=$!

perf_pid=""
stop_perf() {
  if [ -n "$perf_pid" ]; then
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    perf_pid=""
  fi
}
trap 'stop_perf; kill "$bench" 2>/dev/null || true' EXIT

k=0
current=""
# Bounded by the bench: tail ends when the bench process does (--pid).
while IFS= read -r line; do
  echo "$(date +%T) $line"
  if [[ "$line" =~ ^probe\ at\ ([0-9]+)\ records ]]; then
    stop_perf
    k=$((k + 1))
    current="$out/probe-$k-${BASH_REMATCH[1]}"
    perf record -a -e cpu-clock -F 997 -o "$current.data" >/dev/null 2>&1 &
    perf_pid=$!
  elif [[ "$line" =~ ^\ \ put\ [0-9]+\ records/s ]]; then
    stop_perf
  fi
done < <(tail -n +1 --pid="$bench" -f "$log")
stop_perf
status=0
wait "$bench" || status=$?

# `head` ends each report early: its pipe's status is not the script's.
set +o pipefail
for data in "$out"/probe-*.data; do
  [ -e "$data" ] || continue
  txt="${data%.data}.txt"
  {
    echo "== by thread name"
    perf report -i "$data" --stdio -n --sort comm 2>/dev/null | grep -v '^#' | grep -v '^$' | head -30
    echo "== by shared object"
    perf report -i "$data" --stdio -n --sort dso 2>/dev/null | grep -v '^#' | grep -v '^$' | head -20
    echo "== hottest symbols"
    perf report -i "$data" --stdio -n --sort comm,dso,sym 2>/dev/null | grep -v '^#' | grep -v '^$' | head -60
  } >"$txt"
done
echo "profiles and summaries in $out" >&2
exit "$status"
