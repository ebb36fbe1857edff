#!/usr/bin/env bash
# Benchmarks kakera-shamir against sharks 0.5 in the same run (criterion, short
# measurement) and prints one line per case:
#   case split_mb_s combine_mb_s sharks_split_mb_s sharks_combine_mb_s split_ratio combine_ratio
# MB is 10^6 bytes of secret. Our figures use the buffer-reusing API (split_into,
# combine_into); the allocating API's figures are in target/criterion as `kakera`.
# Notes on stderr give the split ratio against sharks' dealer_rng with ChaCha8 too.
# Usage: scripts/bench-shamir.sh [--measure-seconds S]   (default 1)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(kakera_root)"

measure=1
while [ $# -gt 0 ]; do
  case "$1" in
    --measure-seconds) measure="$2"; shift 2 ;;
    -h|--help) sed -n 2,8p "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

cargo bench --locked -p kakera-shamir --bench shamir --no-run >&2
cargo bench --locked -p kakera-shamir --bench shamir -- \
  --warm-up-time 0.3 --measurement-time "$measure" --sample-size 10 --noplot >/dev/null 2>&1

python3 - "$CARGO_TARGET_DIR/criterion" <<'PY'
import json, os, sys
root = sys.argv[1]
def mbs(group, fn):
    with open(os.path.join(root, group, fn, "new", "estimates.json")) as f:
        ns = json.load(f)["mean"]["point_estimate"]
    with open(os.path.join(root, group, fn, "new", "benchmark.json")) as f:
        nbytes = json.load(f)["throughput"]["Bytes"]
    return nbytes / ns * 1e3  # bytes per ns -> MB/s
notes = []
print("case split_mb_s combine_mb_s sharks_split_mb_s sharks_combine_mb_s split_ratio combine_ratio")
for kn in ("3of5", "5of9"):
    for size in ("1KiB", "64KiB", "1MiB"):
        s, c = f"split_{kn}_{size}", f"combine_{kn}_{size}"
        ours_s, ours_c = mbs(s, "kakera_into"), mbs(c, "kakera_into")
        sh_s, sh_c = mbs(s, "sharks"), mbs(c, "sharks")
        print(f"{kn}_{size} {ours_s:.0f} {ours_c:.0f} {sh_s:.1f} {sh_c:.1f} {ours_s/sh_s:.0f}x {ours_c/sh_c:.0f}x")
        fast = mbs(s, "sharks_chacha8")
        notes.append(f"{kn}_{size}: sharks dealer_rng(ChaCha8) {fast:.1f} MB/s, split ratio against it {ours_s/fast:.0f}x")
print("# sharks_split_mb_s is Sharks::dealer (thread_rng). Against sharks' fastest split:", file=sys.stderr)
for n in notes:
    print("#   " + n, file=sys.stderr)
PY
