#!/usr/bin/env bash
# Rewrites native/link-order.txt (see bench/link_order.py and native/build.rs): run it after a
# compiler or dependency update, or a change to what a request runs, and commit the file. A
# stale file costs nothing but memory: the names it misses are laid out as if it were absent.
#
# Installs what is missing: valgrind, perf and wrk (Debian's packages). About four minutes.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v valgrind >/dev/null || missing+=(valgrind)
command -v perf >/dev/null || missing+=(linux-perf)
command -v wrk >/dev/null || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# One package at a time: built together, cargo unifies their dependencies' features, and the
# relay's symbols would not be the ones a plain `cargo build --release` gives (see
# native/build.rs for why its symbols matter).
cargo build --release --locked -p wecom-relay
cargo build --release --locked -p wecom-relay-bench
exec python3 bench/link_order.py
