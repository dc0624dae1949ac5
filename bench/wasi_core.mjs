// The core's per-callback cost compiled to wasm (wasm32-wasip1, the Worker's size-tuned
// profile), run under node's WASI: `wecom-relay-bench core CORPUS SECS` inside wasm.
// Usage: node wasi_core.mjs BENCH.wasm CORPUS SECS. Prints the tool's JSON line.
import { readFile } from "node:fs/promises";
import { dirname, basename } from "node:path";
import { WASI } from "node:wasi";

const [wasmPath, corpus, secs] = process.argv.slice(2);
const wasi = new WASI({
  version: "preview1",
  args: ["wecom-relay-bench", "core", `/corpus/${basename(corpus)}`, secs],
  preopens: { "/corpus": dirname(corpus) },
  returnOnExit: true,
});
const module = await WebAssembly.compile(await readFile(wasmPath));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
process.exitCode = wasi.start(instance);
