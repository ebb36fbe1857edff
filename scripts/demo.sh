#!/usr/bin/env bash
# The demo (README's first command): brings up the local 5-node cluster
# (scripts/dev-cluster.sh up), then runs `kakera demo` against it: an operator enters
# a grant, an ingest gateway stores synthetic records (sealed, split 3 of 5 over 3
# racks), an HSZ reader reads the granted ones back, three identities are refused,
# and the auditor prints and verifies the audit trail; then the auditor's CLI: a deep
# share verification, a signed export of the log checked offline, an erasure check.
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

# The auditor's own commands, as an auditor runs them.
AUD=(--config "$DIR/cluster.toml" --cert "$DIR/clients/demo-auditor.crt.pem"
  --key "$DIR/clients/demo-auditor.key.pem")
KAKERA="$CARGO_TARGET_DIR/debug/kakera"
echo
echo "== kakera audit verify --sample 20 --deep =="
"$KAKERA" audit verify "${AUD[@]}" --sample 20 --deep
echo
echo "== kakera audit log --export (signed) and verify-export (offline) =="
EXPORT="$DIR/audit-export-$(date +%Y%m%dT%H%M%S)-$$.jsonl"
"$KAKERA" audit log "${AUD[@]}" --export "$EXPORT"
"$KAKERA" audit verify-export "$EXPORT" --ca "$DIR/pki/ca.crt.pem"
echo
echo "== kakera audit erasure (a record id no node ever stored) =="
"$KAKERA" audit erasure "${AUD[@]}" --record 00000000000000000000000000000001
echo
echo "the cluster keeps running: scripts/dev-cluster.sh status | down"
