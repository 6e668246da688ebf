#!/usr/bin/env bash
# Builds the end-to-end tests' rate limit service, tests/rls-server (Envoy's ShouldRateLimit on
# the limitador crate with its Redis storage), into target/rls-server/:
#   target/rls-server/debug/rls-server   the server
#   target/rls-server/debug/rls-call     a client for tests and by hand
# (release/ instead of debug/ with --release).
#
# limitador 0.14.0, the newest on crates.io, does not compile with only its `redis_storage`
# feature (two items are gated on `disk_storage`, i.e. RocksDB). Its source is not in this
# repository: this script has cargo fetch the published crate (checksum pinned below), unpacks
# it into target/rls-server/patched/limitador-<ver>/, applies
# tests/rls-server/limitador-redis-only.patch, and builds with --locked; the server's
# Cargo.toml points [patch.crates-io] at that copy. Needs crates.io the first time only; a
# second run is a no-op cargo build (about a second).
#
# Usage: scripts/build-rls-server.sh [--release]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
ver=0.14.0
# sha256 of limitador-0.14.0.crate, as in the crates.io index (`cksum`).
sha=77e33de992fdc347850a81f1ed242cc702900a9651a2b5d044d153a2db5e2d1a
out=$root/target/rls-server
patched=$out/patched/limitador-$ver
patchfile=$root/tests/rls-server/limitador-redis-only.patch
stamp=$patched/.tollgate-patch.sha256
cd "$root" # for rust-toolchain.toml

want=$( (echo "$sha"; cat "$patchfile") | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  command -v patch >/dev/null || "$root/scripts/deb-install.sh" patch
  # A one-dependency crate whose resolution makes cargo download and unpack limitador.
  fetch=$out/fetch-limitador
  rm -rf "$fetch"
  mkdir -p "$fetch/src"
  : >"$fetch/src/lib.rs"
  cat >"$fetch/Cargo.toml" <<EOF
[package]
name = "fetch-limitador"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

[dependencies]
limitador = { version = "=$ver", default-features = false }
EOF
  # The server's lock as a starting point, so the fetch resolves the same versions.
  if [ -f "$root/tests/rls-server/Cargo.lock" ]; then
    cp "$root/tests/rls-server/Cargo.lock" "$fetch/Cargo.lock"
  fi
  host=$(rustc -vV | sed -n 's/^host: //p')
  manifest=$(cargo metadata --format-version 1 --filter-platform "$host" --manifest-path "$fetch/Cargo.toml" |
    grep -o "\"manifest_path\":\"[^\"]*/limitador-$ver/Cargo.toml\"" | head -n1 | cut -d'"' -f4)
  [ -n "$manifest" ] || { echo "build-rls-server: cargo did not fetch limitador $ver" >&2; exit 1; }
  src=$(dirname "$manifest")                      # $CARGO_HOME/registry/src/<index>/limitador-<ver>
  crate=$(dirname "$(dirname "$(dirname "$src")")")/cache/$(basename "$(dirname "$src")")/limitador-$ver.crate
  tmp=$out/patched/.tmp
  rm -rf "$tmp"
  mkdir -p "$tmp"
  if [ -f "$crate" ]; then
    echo "$sha  $crate" | sha256sum -c --quiet - ||
      { echo "build-rls-server: $crate: checksum mismatch" >&2; exit 1; }
    tar -xzf "$crate" -C "$tmp"
  else # cargo's cache cleaning may drop the .crate and keep the unpacked source
    cp -R "$src" "$tmp/limitador-$ver"
    rm -f "$tmp/limitador-$ver/.cargo-ok"
  fi
  patch -p1 --forward --quiet -d "$tmp/limitador-$ver" <"$patchfile"
  echo "$want" >"$tmp/limitador-$ver/.tollgate-patch.sha256"
  rm -rf "$patched" "$fetch"
  mv "$tmp/limitador-$ver" "$patched"
  rmdir "$tmp"
fi

cargo build --locked --manifest-path "$root/tests/rls-server/Cargo.toml" \
  --target-dir "$out" --bins "$@"
