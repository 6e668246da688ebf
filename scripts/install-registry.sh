#!/usr/bin/env bash
# Unpacks Debian's docker-registry (the CNCF Distribution registry) into .tools/registry for the
# OCI round-trip test. Unpacked rather than installed: the package's systemd unit would start a
# registry on :5000 on every interface, and the test only ever runs its own on 127.0.0.1.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dest="$here/.tools/registry"
bin="$dest/usr/bin/docker-registry"
[ -x "$bin" ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
echo "unpacking Debian docker-registry into $dest" >&2
if ! apt-get download -q docker-registry 2>/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  apt-get download -q docker-registry
fi
mkdir -p "$dest"
dpkg-deb -x docker-registry_*.deb "$dest"
"$bin" --version
