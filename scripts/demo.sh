#!/usr/bin/env bash
# The demo (README's first command): brings up the local 5-node cluster
# (scripts/dev-cluster.sh up), then runs `kakera demo` against it: an operator enters
# a grant, an ingest gateway stores synthetic records (sealed, split 3 of 5 over 3
# racks), an HSZ reader reads the granted ones back, three identities are refused,
# and the auditor prints and verifies the audit trail.
#
#   scripts/demo.sh [--records N]     (default 300)
#
# Environment: as scripts/dev-cluster.sh (KAKERA_DEV_DIR, KAKERA_DEV_PORT).
# The cluster keeps running afterwards; stop it with `scripts/dev-cluster.sh down`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT="$(kakera_root)"
cd "$ROOT"

RECORDS=300
while [ $# -gt 0 ]; do
  case "$1" in
    --records) RECORDS="$2"; shift 2 ;;
    *) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done

DIR="${KAKERA_DEV_DIR:-$ROOT/.dev-cluster}"
scripts/dev-cluster.sh up
echo
echo "== kakera demo =="
"$CARGO_TARGET_DIR/debug/kakera" demo --config "$DIR/cluster.toml" \
  --identities "$DIR/clients" --zone-key "$DIR/zone/zone.key" --records "$RECORDS"
echo
echo "the cluster keeps running: scripts/dev-cluster.sh status | down"
