#!/usr/bin/env bash
# cargo deny over the workspace: licenses, sources and bans always; advisories against
# the RustSec database. The database comes from GitHub when the network reaches it;
# otherwise from a local git copy named by KAKERA_ADVISORY_DB (default: the workplace
# mirror, if present). With neither, the advisory check is reported as not run.
# Usage: scripts/deny.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(kakera_root)"

command -v cargo-deny >/dev/null || cargo install cargo-deny --locked

echo "== cargo deny: licenses, sources, bans"
cargo deny check licenses sources bans

echo "== cargo deny: advisories"
if timeout 120 cargo deny fetch db >/dev/null 2>&1; then
  cargo deny check advisories
  exit 0
fi
local_db="${KAKERA_ADVISORY_DB:-/work/.mirror/rustsec+advisory-db/repo}"
if [ ! -d "$local_db" ]; then
  echo "!! advisories NOT checked: GitHub is out of reach and no local copy of the" >&2
  echo "!! RustSec database was found (set KAKERA_ADVISORY_DB to a git copy of it)" >&2
  exit 0
fi
# cargo-deny reads a database from <db-path>/<name derived from its url>; ask it
# which name it expects, then put a checkout of the local copy there.
db_path="$(mktemp -d)"
trap 'rm -rf "$db_path"' EXIT
sed "s|^db-urls = .*|&\ndb-path = \"$db_path\"|" deny.toml >"$db_path/deny.toml"
# (That first run fails by design: the directory is not there yet.)
expected="$( (cargo deny --offline --config "$db_path/deny.toml" check advisories 2>&1 || true) \
  | sed -n "s|.*cannot change to '\([^']*\)'.*|\1|p" | awk 'NR == 1')"
[ -n "$expected" ] || { echo "could not learn where cargo-deny looks for its database" >&2; exit 1; }
git clone -q "$local_db" "$expected"
echo "(RustSec database from $local_db, last change $(git -C "$expected" log -1 --format=%cs))"
cargo deny --offline --config "$db_path/deny.toml" check advisories
