#!/usr/bin/env bash
# Builds the Worker (worker/build/) with worker-build, using local tools instead of the
# downloads worker-build would attempt: wasm-bindgen from cargo, wasm-opt (binaryen) and
# esbuild from node_modules, then drops the wasm's name section (see below). Run `npm ci`
# first; scripts/test.sh does.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
export WASM_BINDGEN_BIN="${WASM_BINDGEN_BIN:-$(command -v wasm-bindgen)}"
export WASM_OPT_BIN="${WASM_OPT_BIN:-$root/node_modules/.bin/wasm-opt}"
export ESBUILD_BIN="${ESBUILD_BIN:-$root/node_modules/.bin/esbuild}"
cd "$root/worker"
worker-build --profile worker "$@"

# worker-build keeps the wasm's name section (it passes --debuginfo to wasm-opt): function
# names for stack traces, a fifth of the upload (274 KB raw, 66 KB gzipped). Drop it unless
# WECOM_RELAY_WASM_NAMES=1 asks to keep it for debugging a panic's stack trace.
if [ "${WECOM_RELAY_WASM_NAMES:-0}" != 1 ]; then
  wasm="$root/worker/build/index_bg.wasm"
  "$WASM_OPT_BIN" "$wasm" -o "$wasm.stripped" --strip-debug --strip-producers \
    --enable-mutable-globals --enable-sign-ext --enable-nontrapping-float-to-int \
    --enable-bulk-memory --enable-multivalue --enable-reference-types --enable-exception-handling
  mv "$wasm.stripped" "$wasm"
fi
