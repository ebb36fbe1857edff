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

# The shared target dir grows with every incremental build (it once filled the disk
# and every test cluster failed to open RocksDB). Below `min_gb` free on its
# filesystem, drop incremental caches, test binaries older than the newest of each
# name and kakera's own stale libraries: the next build is slower, never wrong.
ensure_target_space() {
  local min_gb="${1:-20}" free_gb
  mkdir -p "$CARGO_TARGET_DIR"
  free_gb=$(df -Pk "$CARGO_TARGET_DIR" | awk 'NR==2 {print int($4 / 1048576)}')
  [ "$free_gb" -ge "$min_gb" ] && return 0
  echo "only ${free_gb} GB free under $CARGO_TARGET_DIR: removing incremental caches and stale test binaries" >&2
  rm -rf "$CARGO_TARGET_DIR"/debug/incremental "$CARGO_TARGET_DIR"/release/incremental
  local deps seen name f
  for deps in "$CARGO_TARGET_DIR"/debug/deps "$CARGO_TARGET_DIR"/release/deps; do
    [ -d "$deps" ] || continue
    declare -A seen=()
    # Newest first; an executable is named `<crate>-<16 hex>` with no extension.
    while IFS= read -r f; do
      [[ "$f" =~ ^(.+)-[0-9a-f]{16}$ ]] || continue
      name="${BASH_REMATCH[1]}"
      if [ -n "${seen[$name]:-}" ]; then rm -f "$deps/$f"; else seen[$name]=1; fi
    done < <(ls -t "$deps")
    # kakera's own libraries change with every commit (hundreds of MB each); keep
    # the two newest of each name and kind (builds with and without a feature).
    while IFS= read -r f; do
      [[ "$f" =~ ^(libkakera_[a-z_]+)-[0-9a-f]{16}\.(rlib|rmeta)$ ]] || continue
      name="${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
      seen[$name]=$(( ${seen[$name]:-0} + 1 ))
      if [ "${seen[$name]}" -gt 2 ]; then rm -f "$deps/$f"; fi
    done < <(ls -t "$deps")
    unset seen
  done
  free_gb=$(df -Pk "$CARGO_TARGET_DIR" | awk 'NR==2 {print int($4 / 1048576)}')
  echo "now ${free_gb} GB free" >&2
}
