#!/usr/bin/env bash
# Runs every check and test of wecom-relay, installing whatever a fresh machine lacks:
# the wasm targets, wasm-bindgen-cli (the version Cargo.lock pins), worker-build, the npm
# packages (wrangler with workerd, binaryen, esbuild; package-lock.json), redis-server (Debian's
# package), the Python peer (wechatpy from PyPI) in .venv/, cargo-deny for the dependency
# policy, and for the fuzz smoke pass a nightly toolchain and cargo-fuzz. Safe to re-run: installed pieces are reused.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
step() { printf '\n==> %s\n' "$*"; }

step "toolchain: components and targets"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add wasm32-unknown-unknown wasm32v1-none
WBG_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if ! command -v wasm-bindgen-test-runner >/dev/null || [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WBG_VERSION" ]; then
  step "installing wasm-bindgen-cli $WBG_VERSION (matches Cargo.lock)"
  # Not --locked: the registry mirror lacks one of its locked dependencies.
  cargo install wasm-bindgen-cli --version "$WBG_VERSION"
fi
export PATH="$HOME/.cargo/bin:$PATH"

if ! worker-build --version 2>/dev/null | grep -qx '\(worker-build \)\?0.8.7'; then
  step "installing worker-build 0.8.7"
  cargo install worker-build --version 0.8.7 --locked
fi

step "npm packages: wrangler (with workerd), binaryen's wasm-opt, esbuild"
npm ci --no-audit --no-fund --loglevel=error

step "services: redis-server (Debian's package) for the replica tests, which start their own on loopback"
if ! command -v redis-server >/dev/null; then
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq redis-server >/dev/null
fi
redis-server --version

step "python peer: wechatpy in .venv"
if ! .venv/bin/python -c 'import wechatpy, cryptography' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/peers/requirements.txt
fi
export WECOM_RELAY_PYTHON="$PWD/.venv/bin/python"

step "fmt"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo fmt --manifest-path native/fuzz/Cargo.toml -- --check

step "clippy (host and wasm32)"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy -p wecom-relay-worker --target wasm32-unknown-unknown --locked -- -D warnings

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "release readiness: the dependency policy (cargo deny: licences, bans, sources; deny.toml) and the core as a crate of its own (cargo publish --dry-run)"
if ! cargo deny --version 2>/dev/null | grep -qx 'cargo-deny 0.20.2'; then
  cargo install cargo-deny --version 0.20.2 --locked
fi
cargo deny --locked check bans licenses sources
cargo publish --dry-run --locked -p wecom-relay-core

step "no_std: the core without std, also for a target that has no std at all"
cargo build -p wecom-relay-core --no-default-features --locked
cargo build -p wecom-relay-core --no-default-features --target wasm32v1-none --locked

step "the Worker: build with worker-build and check packaging (wrangler deploy --dry-run)"
export CI=true WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false NO_COLOR=1
node_modules/.bin/wrangler deploy --dry-run --outdir dist
wasm=worker/build/index_bg.wasm
echo "worker wasm: $(wc -c < "$wasm") bytes raw, $(gzip -9 -c "$wasm" | wc -c) bytes gzip"

step "tests (unit, property, route, and the behaviour suite on every twin: the wecom-relay binary, and the Worker under wrangler dev with its Durable Objects, with a Queue, and with waitUntil; wechatpy plays WeCom)"
cargo build -p wecom-relay --locked
WECOM_RELAY_TWINS=native,worker,worker-queue,worker-objects cargo test --workspace --locked

step "fuzzing: the kept config.yaml inputs, then every core target for 5 s (nightly and cargo-fuzz are installed if missing; the long run is scripts/fuzz.sh 60 all)"
cargo test -p wecom-relay --features fuzz --test fuzz_regressions --locked
scripts/fuzz.sh 5 core

step "the README's run command: wecom-relay demo"
cargo run -q -p wecom-relay --locked -- demo

step "packaging: the systemd unit (systemd-analyze), and the image (docker build, or its static musl binary where no container engine runs)"
scripts/package-check.sh

step "the release binary, its code laid out by native/link-order.txt (native/build.rs; bench/link-order.sh rewrites the file)"
cargo build --release --locked -p wecom-relay
python3 scripts/link-order-check.py target/release/wecom-relay native/link-order.txt

step "tests (the core on wasm32 under node)"
cargo test -p wecom-relay-core --target wasm32-unknown-unknown --locked

step "all checks passed"
