#!/usr/bin/env bash
# The demo (README's first command): brings up the local 5-node cluster
# (scripts/dev-cluster.sh up), then runs `kakera demo` against it: an operator enters
# a grant, an ingest gateway stores synthetic records (sealed, split 3 of 5 over 3
# racks), an HSZ reader reads the granted ones back, three identities are refused,
# and the auditor prints and verifies the audit trail; then the auditor's CLI: a deep
# share verification, a signed export of the log checked offline, an erasure check;
# then SS-MIX2: a synthetic standard storage tree ingested (twice: nothing is stored
# again), a patient's opt-out erased and checked on every node, and an anonymization
# job writing a 3-anonymous CSV of lab results; a gateway's certificate revoked and
# refused by every node; last, a node stops while entries are committed without it,
# and catches up from a streamed snapshot when it restarts.
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
    *) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done

DIR="${KAKERA_DEV_DIR:-$ROOT/.dev-cluster}"
scripts/dev-cluster.sh up
echo
echo "== kakera demo =="
"$CARGO_TARGET_DIR/debug/kakera" demo --config "$DIR/cluster.toml" \
  --identities "$DIR/clients" --zone-key "$DIR/zone/zone.key" --records "$RECORDS" \
  --committee-key "$DIR/committee/sato.key.json" --committee-key "$DIR/committee/ito.key.json"

# A job as a job author writes one (client/examples/count_by_kind.rs): the reader
# finds its newest demo grant itself, then counts what the grant covers.
RDR=(--config "$DIR/cluster.toml" --cert "$DIR/clients/demo-reader.crt.pem"
  --key "$DIR/clients/demo-reader.key.pem")
echo
echo "== a job on kakera-client: the reader's own grant, its records counted per kind =="
JOB="$("$CARGO_TARGET_DIR/debug/kakera" grant list "${RDR[@]}" --json \
  | grep -o '"job":"demo-study-[0-9]*"' | awk -F'"' 'END { print $4 }')"
cargo run --locked -q -p kakera-client --example count_by_kind -- "$DIR/cluster.toml" \
  "$DIR/clients/demo-reader.crt.pem" "$DIR/clients/demo-reader.key.pem" \
  "$DIR/zone/zone.key" "$JOB"

# The auditor's own commands, as an auditor runs them.
AUD=(--config "$DIR/cluster.toml" --cert "$DIR/clients/demo-auditor.crt.pem"
  --key "$DIR/clients/demo-auditor.key.pem")
KAKERA="$CARGO_TARGET_DIR/debug/kakera"
echo
echo "== kakera audit verify --sample 20 --deep =="
"$KAKERA" audit verify "${AUD[@]}" --sample 20 --deep
echo
echo "== kakera audit verify --all (light; the catalog walked a page at a time) =="
"$KAKERA" audit verify "${AUD[@]}" --all
echo
echo "== kakera audit log --export (signed) and verify-export (offline) =="
EXPORT="$DIR/audit-export-$(date +%Y%m%dT%H%M%S)-$$.jsonl"
"$KAKERA" audit log "${AUD[@]}" --export "$EXPORT"
"$KAKERA" audit verify-export "$EXPORT" --ca "$DIR/pki/ca.crt.pem"
echo
echo "== kakera audit log --verify --json: the verdict is the last line =="
VERDICT="$("$KAKERA" audit log "${AUD[@]}" --verify --json --limit 1 2>/dev/null | awk 'END { print }')"
echo "$VERDICT"
case "$VERDICT" in
  *'"chain_intact":true'*) ;;
  *) echo "the audit log's --json verdict is missing or not intact" >&2; exit 1 ;;
esac
echo
echo "== kakera audit erasure (a record id no node ever stored) =="
"$KAKERA" audit erasure "${AUD[@]}" --record 00000000000000000000000000000001

# SS-MIX2: a hospital's standard storage ingested, an opt-out, an anonymization job.
OPS=(--config "$DIR/cluster.toml" --cert "$DIR/clients/demo-operator.crt.pem"
  --key "$DIR/clients/demo-operator.key.pem")
ING=(--config "$DIR/cluster.toml" --cert "$DIR/clients/demo-ingest.crt.pem"
  --key "$DIR/clients/demo-ingest.key.pem")
FACILITY=1310000001
SS="$DIR/ssmix2"
[ -f "$DIR/linkage.key" ] || "$KAKERA" linkage keygen --out "$DIR/linkage.key"
echo
echo "== kakera demo-data ssmix2 (synthetic standard storage, HL7 v2.5 in ISO-2022-JP) =="
if [ -d "$SS" ]; then
  echo "reusing $SS"
else
  "$KAKERA" demo-data ssmix2 --patients 200 --out "$SS" --facility "$FACILITY"
fi
echo
echo "== kakera ingest ssmix2 (then again: nothing is stored twice) =="
"$KAKERA" ingest ssmix2 "${ING[@]}" "$SS" --source "$FACILITY" --linkage-key "$DIR/linkage.key"
"$KAKERA" ingest ssmix2 "${ING[@]}" "$SS" --source "$FACILITY" --linkage-key "$DIR/linkage.key" --json
echo
# the first patient directory in name order; awk reads all its input, so no
# writer in the pipeline dies of SIGPIPE under pipefail
PATIENT="$(find "$SS" -mindepth 3 -maxdepth 3 -type d -printf '%f\n' | sort | awk 'NR == 1')"
echo "== opt-out: patient $PATIENT of $FACILITY asks to be erased =="
TAG="$("$KAKERA" subject-tag --facility "$FACILITY" --patient "$PATIENT" --linkage-key "$DIR/linkage.key")"
echo "subject tag $TAG"
"$KAKERA" erase "${OPS[@]}" --subject "$TAG" --reason "opt-out request DEMO-OPT-1"
"$KAKERA" audit erasure "${AUD[@]}" --subject "$TAG"
echo
echo "== kakera demo-data fhir + ingest fhir: a FHIR R4 bulk export of the same patients =="
FH="$DIR/fhir"
[ -d "$FH" ] || "$KAKERA" demo-data fhir --patients 200 --out "$FH" --facility "$FACILITY" --ssmix2 "$SS"
FHJ="$("$KAKERA" ingest fhir "${ING[@]}" "$FH" --source "$FACILITY" --linkage-key "$DIR/linkage.key" --json)"
echo "$FHJ"
# The opted-out patient's FHIR resources are refused: the linkage key gave the FHIR
# Patient's identifier the same subject as their SS-MIX2 PID-3.
case "$FHJ" in *'"opted_out":0,'*) echo "the opted-out patient's FHIR resources were not linked"; exit 1 ;; esac
echo
echo "== kakera job anonymize (lab results, birth decades, 3-anonymous, inside the HSZ) =="
STAMP="$(date +%Y%m%dT%H%M%S)-$$"
# A grant as the review committee approves it: two members sign the terms offline
# (kakera grant sign, with their own keys), the operator submits the signatures.
signed_grant() {
  local sigs=() m
  for m in sato ito; do
    sigs+=(--signature "$("$KAKERA" grant sign --config "$DIR/cluster.toml" \
      --key "$DIR/committee/$m.key.json" "$@")")
  done
  "$KAKERA" grant create "${OPS[@]}" "$@" "${sigs[@]}"
}
echo "review committee: sato and ito sign; the operator alone would be refused"
signed_grant --job "demo-ssmix2-$STAMP" --reader demo-reader \
  --kinds ssmix2,fhir --sources "$FACILITY" --expires "$(date -u -d '+2 days' +%F)" \
  --approval DEMO-IRB-SSMIX2
# SS-MIX2 lab results (OML-11) and FHIR lab Observations, one research id per person.
"$KAKERA" job anonymize "${RDR[@]}" --job "demo-ssmix2-$STAMP" --kinds OML-11,OBSERVATION --k 3 \
  --birth-band 10 --suppress --out "$DIR/anonymized-$STAMP.csv" --zone-key "$DIR/zone/zone.key"
head -4 "$DIR/anonymized-$STAMP.csv"
echo "rows from FHIR Observations: $(grep -c ",OBSERVATION," "$DIR/anonymized-$STAMP.csv" || true)"
echo
echo "== kakera put: files of any kind (a CT series and a 20 MiB slide image) from a directory; again: nothing twice =="
CT="$DIR/ct-$STAMP/ct-2025-04"
mkdir -p "$CT"
for i in 1 2 3; do head -c $((200000 + i * 1000)) /dev/urandom >"$CT/slice-$i.dcm"; done
# Larger than one segment (8 MiB): streamed from the file, stored as 3 segments.
head -c $((20 * 1024 * 1024 + 321)) /dev/urandom >"$CT/slide-1.svs"
PUT=(--kind image --data-kind CT --source "$FACILITY" --patient-id 0000123
  --date 2025-04-01 --linkage-key "$DIR/linkage.key")
"$KAKERA" put "${ING[@]}" "$CT" "${PUT[@]}"
AGAIN="$("$KAKERA" put "${ING[@]}" "$CT" "${PUT[@]}" --json)"
echo "$AGAIN"
case "$AGAIN" in *'"stored":0,'*) ;; *) echo "a second put stored files again"; exit 1 ;; esac
echo "== kakera get --all: the grant's images back to files, byte for byte =="
signed_grant --job "demo-images-$STAMP" --reader demo-reader --kinds image \
  --sources "$FACILITY" --expires "$(date -u -d '+2 days' +%F)" --approval DEMO-IRB-CT
OUT="$DIR/ct-$STAMP/read"
"$KAKERA" get "${RDR[@]}" --job "demo-images-$STAMP" --zone-key "$DIR/zone/zone.key" \
  --all --out "$OUT"
for f in "$CT"/*; do
  sum="$(sha256sum <"$f" | cut -d' ' -f1)"
  match=no
  for r in "$OUT"/*; do
    [ "$(basename "$r")" = records.jsonl ] && continue
    [ "$(sha256sum <"$r" | cut -d' ' -f1)" = "$sum" ] && match=yes
  done
  [ "$match" = yes ] || { echo "$(basename "$f") was not read back"; exit 1; }
done
echo "$(ls "$CT" | wc -l) files put, read back identical; metadata in $OUT/records.jsonl"
grep -q '"segments":3' "$OUT/records.jsonl" || { echo "the slide image was not stored as segments"; exit 1; }
echo "the slide image was streamed in and out as 3 segments of at most 8 MiB"
echo "== the hospital withdraws the slide image: erased by its id, every segment with it =="
SLIDE="$(grep '"segments":3' "$OUT/records.jsonl" | sed 's/.*"id":"\([0-9a-f]*\)".*/\1/')"
"$KAKERA" erase "${OPS[@]}" --record "$SLIDE" --reason "withdrawn DEMO-WD-1"
GONE="$("$KAKERA" audit erasure "${AUD[@]}" --record "$SLIDE")"
echo "$GONE"
case "$GONE" in
  *"2 record(s) erased in the same entries"*"3 of 3 record(s) confirmed erased"*) ;;
  *) echo "the audit did not confirm every segment of the slide image erased"; exit 1 ;;
esac
echo
echo "== revocation: a gateway's key leaks; the CA revokes its certificate =="
LEAK="demo-leaked-$STAMP"
"$KAKERA" ca issue --ca-dir "$DIR/pki" --role ingest --zone dc --name "$LEAK" \
  --out "$DIR/clients" >/dev/null
LK=(--config "$DIR/cluster.toml" --cert "$DIR/clients/$LEAK.crt.pem"
  --key "$DIR/clients/$LEAK.key.pem")
if "$KAKERA" status "${LK[@]}" >/dev/null 2>&1; then
  echo "before: $LEAK reaches every node"
else
  echo "before: $LEAK did not reach every node (see kakera status)"
fi
SINCE="$(date -u -d '-1 minute' +%Y-%m-%dT%H:%M:%SZ)"
"$KAKERA" ca revoke --ca-dir "$DIR/pki" --name "$LEAK" --reason key-compromise "${OPS[@]}"
if "$KAKERA" status "${LK[@]}" >/dev/null 2>&1; then
  echo "a revoked certificate was still accepted" >&2
  exit 1
fi
echo "after: every node refuses $LEAK at the handshake; the audit log names it:"
"$KAKERA" audit log "${AUD[@]}" --since "$SINCE" | grep " revoke .*$LEAK" | tail -n 1
echo
echo "== node-5 stops; 20 grants are committed without it; it restarts and catches up =="
LOG5="$DIR/logs/node-5.log"
BEFORE="$(grep -c 'snapshot installed' "$LOG5" || true)"
scripts/dev-cluster.sh stop 5
for i in $(seq 1 20); do
  signed_grant --job "demo-catch-up-$STAMP-$i" --reader demo-reader \
    --kinds ssmix2 --sources "$FACILITY" --expires "$(date -u -d "+1 day" +%F)" \
    --approval DEMO-IRB-CATCH-UP >/dev/null
done
scripts/dev-cluster.sh up >/dev/null
if [ "$(grep -c 'snapshot installed' "$LOG5" || true)" -gt "$BEFORE" ]; then
  grep 'snapshot installed' "$LOG5" | tail -n 1 | sed 's/\x1b\[[0-9;]*m//g' |
    sed 's/.*snapshot installed/node-5: snapshot installed (streamed from the leader, no file on either disk)/'
else
  echo "node-5 caught up from the leader's log (the log still held every entry it needed)"
fi
scripts/dev-cluster.sh status
echo
echo "the cluster keeps running: scripts/dev-cluster.sh status | down"
