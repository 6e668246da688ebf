#!/usr/bin/env node
// Cargo runner for wasm32-wasip1 binaries (`cargo test --target wasm32-wasip1`): runs the test
// binary under Node's built-in WASI (Node 20+), so the pure core's unit tests execute as 32-bit
// wasm, the plugin's real target. Used by `make unit-wasm32` through
// CARGO_TARGET_WASM32_WASIP1_RUNNER="node --no-warnings scripts/wasi-run.mjs".
//
// The library exports proxy-wasm entry points that import host functions (module "env"); unit
// tests never call them, so they are linked to stubs that throw if one ever is. proxy-wasm's
// `_initialize` export sits next to the test harness's `_start`; node:wasi refuses a module with
// both, so only `_start` and the memory are handed to it.
import { readFile } from "node:fs/promises";
import { argv, env, exit, stderr } from "node:process";
import { WASI } from "node:wasi";

const [, , wasmPath, ...args] = argv;
if (!wasmPath) {
  stderr.write("usage: wasi-run.mjs FILE.wasm [ARGS...]\n");
  exit(2);
}

const wasi = new WASI({
  version: "preview1",
  args: [wasmPath, ...args],
  env: Object.fromEntries(
    Object.entries(env).filter(([k]) => k.startsWith("RUST_") || k === "TZ"),
  ),
  returnOnExit: true,
});

const module = await WebAssembly.compile(await readFile(wasmPath));
const imports = { wasi_snapshot_preview1: wasi.wasiImport };
for (const imp of WebAssembly.Module.imports(module)) {
  if (imp.module === "wasi_snapshot_preview1") continue;
  if (imp.kind !== "function") {
    stderr.write(`wasi-run: cannot provide import ${imp.module}.${imp.name} (${imp.kind})\n`);
    exit(2);
  }
  imports[imp.module] ??= {};
  imports[imp.module][imp.name] = () => {
    throw new Error(`host function ${imp.module}.${imp.name} called outside Envoy`);
  };
}
const instance = await WebAssembly.instantiate(module, imports);
const { _start, memory } = instance.exports;
exit(wasi.start({ exports: { _start, memory } }));
