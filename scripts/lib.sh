# Shared helpers for kakera's scripts. Source it; it changes nothing by itself.

# Keep the cargo target dir outside the clone so RocksDB and friends build once.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kakera-target}"

# Run from the repository root.
kakera_root() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd
}

# Install Debian packages that are missing (apt-get update once, quietly).
ensure_debs() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Make sure the toolchain has the components CI uses.
ensure_rust_components() {
  command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup first" >&2; return 1; }
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep "^$c" >/dev/null || rustup component add "$c"
  done
}
