#!/usr/bin/env bash
# Builds the Worker (worker/build/) with worker-build, using local tools instead of the
# downloads worker-build would attempt: wasm-bindgen from cargo, wasm-opt (binaryen) and
# esbuild from node_modules. Run `npm ci` first; scripts/test.sh does.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
export WASM_BINDGEN_BIN="${WASM_BINDGEN_BIN:-$(command -v wasm-bindgen)}"
export WASM_OPT_BIN="${WASM_OPT_BIN:-$root/node_modules/.bin/wasm-opt}"
export ESBUILD_BIN="${ESBUILD_BIN:-$root/node_modules/.bin/esbuild}"
cd "$root/worker"
exec worker-build --profile worker "$@"
