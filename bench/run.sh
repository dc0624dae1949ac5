#!/usr/bin/env bash
# Every benchmark side by side, printed as one table of ratios (bench/run.py). Not part of the
# test command: it takes about ten minutes and wants the machine to itself.
#
# Installs what is missing: wrk and nginx-light (Debian's packages), the Python peers in
# bench/.venv (wechatpy and the Hermes agent from PyPI, pinned in bench/requirements.txt), the
# wasm32-wasip1 target; builds the release binaries, the Worker (scripts/worker-build.sh, if
# worker-build is installed: scripts/test.sh installs it) and the core for wasm.
# Usage: bench/run.sh [run.py options, e.g. --rounds 5 --secs 10 --only load]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
step() { printf '\n==> %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]} (Debian's packages)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin"

if ! bench/.venv/bin/python -c 'import wechatpy, plugins.platforms.wecom.callback_adapter' 2>/dev/null; then
  step "python peers in bench/.venv: wechatpy and hermes-agent"
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install --quiet --disable-pip-version-check -r bench/requirements.txt
fi
export BENCH_PYTHON="$root/bench/.venv/bin/python"

step "release builds"
rustup target add wasm32-wasip1 >/dev/null 2>&1
# One package at a time: built together, cargo unifies their dependencies' features, and the
# relay's symbols would not be the ones a plain `cargo build --release` gives (see
# native/build.rs for why its symbols matter).
cargo build --release --locked -p wecom-relay
cargo build --release --locked -p wecom-relay-bench
cargo build --locked --profile worker -p wecom-relay-bench --no-default-features --target wasm32-wasip1
if command -v worker-build >/dev/null || [ -x "$HOME/.cargo/bin/worker-build" ]; then
  [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
  CI=true WRANGLER_SEND_METRICS=false NO_COLOR=1 bash scripts/worker-build.sh >/dev/null
fi

step "measuring"
exec "$BENCH_PYTHON" bench/run.py "$@"
