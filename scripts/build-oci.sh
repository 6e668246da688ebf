#!/usr/bin/env bash
# Packs a tollgate module as an OCI image in the Wasm image specification's compat variant: one
# gzip tar layer holding /plugin.wasm, manifest annotation module.wasm.image/variant=compat. The
# result is an OCI image layout directory (tag = the version), written with umoci, no daemon.
#
# Reproducible: the same module gives the same manifest digest. The tar entry has a fixed mtime,
# uid/gid 0, mode 0444 and no user names or pax times; umoci compresses without a gzip timestamp;
# every date (image created, history) is SOURCE_DATE_EPOCH, else the last commit's time.
#
# Usage: scripts/build-oci.sh MODULE.wasm LAYOUT_DIR VERSION
set -euo pipefail
[ "$#" -eq 3 ] || { echo "usage: $0 MODULE.wasm LAYOUT_DIR VERSION" >&2; exit 2; }
wasm=$1 layout=$2 version=$3
[ -f "$wasm" ] || { echo "$wasm: no such module (run make dist)" >&2; exit 1; }
here=$(cd "$(dirname "$0")/.." && pwd)
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct 2>/dev/null || echo 0)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/root"
cp "$wasm" "$tmp/root/plugin.wasm"
tar --create --file "$tmp/layer.tar" --directory "$tmp/root" \
  --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --mode=0444 \
  plugin.wasm

image="$tmp/oci:$version"
umoci init --layout "$tmp/oci"
umoci new --image "$image"
umoci raw add-layer --image "$image" \
  --history.created "$created" --history.created_by "scripts/build-oci.sh (tollgate $version)" \
  "$tmp/layer.tar"
umoci config --image "$image" --no-history \
  --created "$created" --os wasip1 --architecture wasm \
  --manifest.annotation module.wasm.image/variant=compat \
  --manifest.annotation org.opencontainers.image.title=tollgate \
  --manifest.annotation "org.opencontainers.image.version=$version" \
  --manifest.annotation "org.opencontainers.image.created=$created"
umoci gc --layout "$tmp/oci"

rm -rf "$layout"
mkdir -p "$(dirname "$layout")"
mv "$tmp/oci" "$layout"
chmod -R a+rX "$layout"
digest=$(skopeo inspect --raw "oci:$layout:$version" | sha256sum | cut -d' ' -f1)
echo "built OCI image $layout:$version  manifest sha256:$digest  (created $created)"
