#!/usr/bin/env bash
# The OCI image end to end: rebuilds it (under another umask) and requires the same manifest
# digest; pushes it with skopeo to a registry on 127.0.0.1 (Debian docker-registry, temporary
# storage), requires the registry to serve the same digest with the compat annotation, pulls it
# back into a fresh layout, and requires the one layer's plugin.wasm to be the built module byte
# for byte. Prints one PASS or FAIL line; exits non-zero on failure; stops what it started.
#
# Usage: scripts/test-oci.sh MODULE.wasm LAYOUT_DIR VERSION     (make test-oci)
set -euo pipefail
[ "$#" -eq 3 ] || { echo "usage: $0 MODULE.wasm LAYOUT_DIR VERSION" >&2; exit 2; }
wasm=$1 layout=$2 version=$3
here=$(cd "$(dirname "$0")/.." && pwd)
registry_bin="$here/.tools/registry/usr/bin/docker-registry"
tmp=$(mktemp -d)
reg_pid=""
cleanup() {
  if [ -n "$reg_pid" ]; then kill "$reg_pid" 2>/dev/null || true; wait "$reg_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "FAIL: OCI image: $*"
  exit 1
}
manifest_digest() { skopeo inspect --raw "oci:$1:$version" | sha256sum | cut -d' ' -f1; }
# Prints the manifest's value at a Python expression over `m` (the parsed manifest).
manifest_get() { skopeo inspect --raw "oci:$1:$version" | python3 -c "import json,sys; m=json.load(sys.stdin); print($2)"; }

[ -f "$wasm" ] || fail "$wasm missing (run make dist)"
[ -d "$layout" ] || fail "$layout missing (run make oci)"
[ -x "$registry_bin" ] || fail "$registry_bin missing (run scripts/install-registry.sh)"
digest=$(manifest_digest "$layout")

# 1. Reproducible: the same source builds the same image, whatever the umask or the time.
(umask 077 && "$here/scripts/build-oci.sh" "$wasm" "$tmp/rebuilt" "$version" >/dev/null)
again=$(manifest_digest "$tmp/rebuilt")
[ "$again" = "$digest" ] || fail "not reproducible: rebuilt sha256:$again, dist has sha256:$digest"

# 2. Shape: the compat variant of the Wasm image specification.
[ "$(manifest_get "$layout" "m['annotations']['module.wasm.image/variant']")" = compat ] \
  || fail "manifest lacks module.wasm.image/variant=compat"
[ "$(manifest_get "$layout" "len(m['layers'])")" = 1 ] || fail "expected exactly one layer"
[ "$(manifest_get "$layout" "m['layers'][0]['mediaType']")" = application/vnd.oci.image.layer.v1.tar+gzip ] \
  || fail "layer is not application/vnd.oci.image.layer.v1.tar+gzip"

# 3. A registry on loopback with temporary storage; it picks its own port and logs it.
mkdir "$tmp/storage"
cat >"$tmp/registry.yml" <<YAML
version: 0.1
log: {level: info, formatter: text, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $tmp/storage}
http:
  addr: 127.0.0.1:0
  secret: tollgate-test-only
YAML
"$registry_bin" serve "$tmp/registry.yml" >"$tmp/registry.log" 2>&1 &
reg_pid=$!
addr=""
for _ in $(seq 100); do
  addr=$(sed -n 's/.*msg="listening on \(127\.0\.0\.1:[0-9]*\)".*/\1/p' "$tmp/registry.log" | head -n1)
  [ -n "$addr" ] && break
  kill -0 "$reg_pid" 2>/dev/null || fail "registry exited: $(cat "$tmp/registry.log")"
  sleep 0.1
done
[ -n "$addr" ] || fail "registry did not start: $(cat "$tmp/registry.log")"
ref="docker://$addr/tollgate:$version"

# 4. Push, check what the registry serves, pull back into a fresh layout.
skopeo --insecure-policy copy --quiet --preserve-digests --dest-tls-verify=false \
  "oci:$layout:$version" "$ref" || fail "push to $ref failed"
served=$(skopeo inspect --raw --tls-verify=false "$ref" | sha256sum | cut -d' ' -f1)
[ "$served" = "$digest" ] || fail "registry serves manifest sha256:$served, pushed sha256:$digest"
skopeo --insecure-policy copy --quiet --src-tls-verify=false "$ref" "oci:$tmp/pulled:$version" \
  || fail "pull from $ref failed"
[ "$(manifest_get "$tmp/pulled" "m['annotations']['module.wasm.image/variant']")" = compat ] \
  || fail "pulled manifest lost the compat annotation"

# 5. The layer holds exactly plugin.wasm, and it is the module.
layer=$(manifest_get "$tmp/pulled" "m['layers'][0]['digest'].split(':')[1]")
blob="$tmp/pulled/blobs/sha256/$layer"
entries=$(tar -tzf "$blob")
[ "$entries" = plugin.wasm ] || fail "layer entries are [$entries], expected [plugin.wasm]"
mkdir "$tmp/x"
tar -xzf "$blob" -C "$tmp/x"
cmp -s "$tmp/x/plugin.wasm" "$wasm" || fail "pulled plugin.wasm differs from $wasm"

echo "PASS: OCI image $layout:$version (sha256:$digest) is reproducible, round-trips through a registry on $addr, and carries $(stat -c %s "$wasm")-byte plugin.wasm"
