#!/usr/bin/env bash
# Installs binaryen's wasm-opt at a pinned version into .tools/ and links it as
# .tools/bin/wasm-opt: npm's `binaryen` package (binaryen compiled to WebAssembly, run by Node),
# the same bytes on every machine. Debian bookworm's binaryen is version 108, whose -Oz leaves
# the module 2.3 KB larger (make dist).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
tools="$here/.tools"
version="${BINARYEN_VERSION:-132.0.0}"
if [ -x "$tools/bin/wasm-opt" ] && "$tools/bin/wasm-opt" --version 2>/dev/null | grep -q "version ${version%%.*} "; then
  exit 0
fi
echo "installing binaryen $version (wasm-opt) from npm into $tools" >&2
command -v npm >/dev/null || "$here/scripts/deb-install.sh" nodejs npm
mkdir -p "$tools/binaryen" "$tools/bin"
npm install --silent --no-audit --no-fund --prefix "$tools/binaryen" "binaryen@$version" >/dev/null ||
  { echo "npm could not install binaryen@$version (it needs the npm registry; WASM_OPT=/path/to/wasm-opt uses another)" >&2; exit 1; }
ln -sf "$tools/binaryen/node_modules/binaryen/bin/wasm-opt" "$tools/bin/wasm-opt"
"$tools/bin/wasm-opt" --version
