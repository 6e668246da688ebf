#!/usr/bin/env python3
"""Side-by-side Envoy benchmark of tollgate (`make bench`; Python 3 standard library only).

Every variant is a listener, with a VM of its own, of one fresh Envoy started by this run
(`--concurrency 1`, pinned with taskset to CPU 0); wrk is pinned to CPU 1 and talks to it over
loopback only. One variant is driven at a time while the others stay idle; rounds are
interleaved (the order rotates every round) and the medians over rounds are reported. One
process for all variants, because two Envoy processes with identical configurations were
measured up to 17 µs per request apart (`PROCESS=each` gives every variant its own Envoy, as
runs before 2026-11-25 did).

Suites (`--suite`):
  main      (A) router only, (N) Envoy's native equivalent (local_ratelimit never tripping +
            cors + JSON file access log), (T) tollgate with a never-tripping throttle, CORS and
            the JSON access log, and tollgate with each feature alone and with `{}`.
  hostcalls the cost of single proxy-wasm host calls, measured with a probe module
            (bench/probe) that repeats one call N times per request; the per-call cost is
            (CPU per request - the probe doing nothing) / N.

Upstream (`UPSTREAM=same`, the default): a direct_response listener inside the same Envoy, so
each request makes two passes through the measured Envoy. That is the setup of the baseline
in issue 8 (so its ratios compare), it keeps CPU 1 for wrk alone (the client never becomes the
bottleneck), and the upstream pass costs the same in every variant, so differences between
variants are exactly the filters' cost. `UPSTREAM=separate` runs one upstream Envoy pinned
to CPU 1 beside wrk instead (one pass per request in the measured Envoy, but client and
upstream then share a CPU).

Environment: QUICK=1 (about a minute), PROCESS (one or each), REPLICAS (copies of each
variant, each with its own VM, pooled; default 2 for main, 1 for hostcalls), REPS (calls per
request in the host-call probes, default 20), ROUNDS, DURATION (seconds per round), CONNECTIONS,
VARIANTS (comma list of names), UPSTREAM, ENVOY, TOLLGATE_WASM, BENCH_OUT (output directory,
default target/bench), EXTRA_WASM=label=path,... (other builds of the module as more
variants, with the configuration of the variant EXTRA_BASE, default T: before/after a change;
EXTRA_BASE=T,T-empty runs each extra module with each configuration, as label@T, label@T-empty).
Results: a table on stdout, BENCH_OUT/<suite>.md and .json.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENVOY = os.environ.get("ENVOY") or os.path.join(ROOT, ".tools/bin/envoy")
WASM = os.environ.get("TOLLGATE_WASM") or os.path.join(
    ROOT, "target/wasm32-wasip1/release/tollgate.wasm")
PROBE_WASM = os.path.join(ROOT, "target/probe/wasm32-wasip1/release/tollgate_probe.wasm")
# The probe with the callbacks it does not implement removed from its exports, as tollgate's
# build does (scripts/trim-exports.py).
PROBE_TRIMMED_WASM = os.path.join(
    ROOT, "target/probe/wasm32-wasip1/release/tollgate_probe.trimmed.wasm")
ENVOY_CPU = "0"
CLIENT_CPU = "1"
ORIGIN = "http://localhost:3000"
PATH = "/pets/1"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# ---------------------------------------------------------------------------------------------
# Envoy configurations

UPSTREAM_BODY = '{"id":1,"name":"Rex","kind":"dog"}\n'

CORS_ORIGINS = [ORIGIN, "https://*.example.com"]
CORS_METHODS = ["GET", "POST", "PUT", "DELETE"]
CORS_HEADERS = ["content-type", "authorization", "x-api-key"]
CORS_EXPOSE = ["x-request-id", "ratelimit", "ratelimit-policy"]

# tollgate's sections. The throttle can never trip: 1e9 tokens per second, 4e9 burst.
TG_THROTTLE = {"rate": 1000000000, "burst": 4000000000}
TG_CORS = {
    "allow_origins": CORS_ORIGINS,
    "allow_methods": CORS_METHODS,
    "allow_headers": CORS_HEADERS,
    "expose_headers": CORS_EXPOSE,
    "max_age": 600,
    "allow_credentials": True,
}
TG_LOG = {"format": "json"}

# Envoy's JSON access log with the same 18 fields as tollgate's `json` format.
NATIVE_LOG_FORMAT = {
    "requestId": "%REQ(X-REQUEST-ID)%",
    "requestTime": "%START_TIME(%d/%b/%Y:%H:%M:%S %z)%",
    "requestTimeEpoch": "%START_TIME(%s%3f)%",
    "httpMethod": "%REQ(:METHOD)%",
    "resourcePath": "%ROUTE_NAME%",
    "path": "%REQ(:PATH)%",
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "responseLength": "%BYTES_SENT%",
    "responseLatency": "%DURATION%",
    "integrationLatency": "%RESPONSE_DURATION%",
    "identity.sourceIp": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "identity.userAgent": "%REQ(USER-AGENT)%",
    "identity.apiKeyId": "%DYNAMIC_METADATA(tollgate:apiKeyId)%",
    "stage": "bench",
    "error.message": "%RESPONSE_CODE_DETAILS%",
    "error.responseType": "%RESPONSE_FLAGS%",
    "cacheStatus": "%DYNAMIC_METADATA(tollgate:cacheStatus)%",
}

# The same line from Envoy's file access logger with tollgate's values taken from the filter
# state it exports (as envoy/envoy.yaml logs; docs/OBSERVABILITY.md): the T-envoylog variant.
TOLLGATE_FS_LOG_FORMAT = dict(
    NATIVE_LOG_FORMAT,
    **{k: f"%FILTER_STATE(wasm.tollgate.{k}:PLAIN)%" for k in (
        "resourcePath", "integrationLatency", "identity.apiKeyId", "stage", "error.message",
        "error.responseType", "cacheStatus")},
    path="%PATH(NQ)%",
)

ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


def wasm_filter(wasm_path, configuration, name="tollgate"):
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": name,
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration if isinstance(configuration, str)
                    else json.dumps(configuration),
                },
                "failure_policy": "FAIL_CLOSED",
                "vm_config": {
                    "vm_id": name,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm_path}},
                },
            },
        },
    }


def tollgate(configuration, wasm=None):
    return {"filters": [wasm_filter(wasm or WASM, configuration)], "tollgate": configuration}


# envoy/envoy.yaml's fail-closed guard (SECURITY.md, "A worker without a VM"): an RBAC filter
# after tollgate that passes only requests with the filter state tollgate sets on each it checks.
GUARD = {
    "name": "tollgate_guard",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules_stat_prefix": "tollgate_guard.",
        "rules": {"action": "ALLOW", "policies": {"checked_by_tollgate": {
            "permissions": [{"any": True}],
            "principals": [{"filter_state": {
                "key": "wasm.tollgate.stage",
                "string_match": {"safe_regex": {"regex": ".*"}}}}],
        }}},
    },
}


def guarded(spec):
    return dict(spec, filters=spec["filters"] + [GUARD])


def native_equivalent():
    local_ratelimit = {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "bench_ratelimit",
            # Never trips: a billion tokens, refilled every second.
            "token_bucket": {"max_tokens": 1000000000, "tokens_per_fill": 1000000000,
                             "fill_interval": "1s"},
            "filter_enabled": {"runtime_key": "rl_enabled",
                               "default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            "filter_enforced": {"runtime_key": "rl_enforced",
                                "default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            # tollgate sends RateLimit headers on every response; so does this.
            "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
        },
    }
    cors = {
        "name": "envoy.filters.http.cors",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"},
    }
    cors_policy = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
        "allow_origin_string_match": [{"exact": ORIGIN},
                                      {"safe_regex": {"regex": r"https://[^/]+\.example\.com"}}],
        "allow_methods": ", ".join(CORS_METHODS),
        "allow_headers": ", ".join(CORS_HEADERS),
        "expose_headers": ", ".join(CORS_EXPOSE),
        "max_age": "600",
        "allow_credentials": True,
    }
    return {
        "filters": [cors, local_ratelimit],
        "vhost_per_filter": {"envoy.filters.http.cors": cors_policy},
        "access_log": True,
    }


def probe(ops, wasm=PROBE_WASM):
    return {"filters": [wasm_filter(wasm, ops, name="probe")],
            "probe": True}


def large_route_table():
    """1,000 routes: 100 resources of ten routes each under /v1, as a large versioned API has,
    with the benchmark's GET /pets/{id} in the middle of the table."""
    shapes = ["GET /v1/res{i}", "POST /v1/res{i}", "GET /v1/res{i}/{id}", "PUT /v1/res{i}/{id}",
              "PATCH /v1/res{i}/{id}", "DELETE /v1/res{i}/{id}", "GET /v1/res{i}/{id}/items",
              "POST /v1/res{i}/{id}/items", "GET /v1/res{i}/{id}/items/{itemId}",
              "DELETE /v1/res{i}/{id}/items/{itemId}"]
    routes = [{"match": s.replace("{i}", str(i))} for i in range(100) for s in shapes]
    routes[500] = {"match": "GET /pets/{id}"}
    return routes


# name -> (description, builder). The order is the table's order.
MAIN_VARIANTS = {
    "A": ("router only", lambda: {"filters": []}),
    "N": ("native: local_ratelimit + cors + JSON file access log", native_equivalent),
    "T": ("tollgate: throttle + CORS + JSON access log",
          lambda: tollgate({"stage": "bench", "throttle": TG_THROTTLE, "cors": TG_CORS,
                            "access_log": TG_LOG})),
    "T-throttle": ("tollgate: throttle only",
                   lambda: tollgate({"stage": "bench", "throttle": TG_THROTTLE})),
    "T-cors": ("tollgate: CORS only", lambda: tollgate({"stage": "bench", "cors": TG_CORS})),
    "T-log": ("tollgate: JSON access log only",
              lambda: tollgate({"stage": "bench", "access_log": TG_LOG})),
    "T-empty": ("tollgate: {}", lambda: tollgate({})),
    "T-envoylog": ("tollgate: throttle + CORS, the JSON access log written by Envoy's file "
                   "access logger from tollgate's filter state",
                   lambda: dict(tollgate({"stage": "bench", "throttle": TG_THROTTLE,
                                          "cors": TG_CORS}),
                                access_log=TOLLGATE_FS_LOG_FORMAT)),
    "T-guard": ("tollgate: T followed by the examples' fail-closed guard (an RBAC filter)",
                lambda: guarded(tollgate({"stage": "bench", "throttle": TG_THROTTLE,
                                          "cors": TG_CORS, "access_log": TG_LOG}))),
    "T-nofs": ("tollgate: T with \"filter_state\": false (no exports for Envoy's loggers)",
               lambda: tollgate({"stage": "bench", "throttle": TG_THROTTLE, "cors": TG_CORS,
                                 "access_log": TG_LOG, "filter_state": False})),
    "T-routes": ("tollgate: T with 1,000 routes, the request's in the middle of the table",
                 lambda: tollgate({"stage": "bench", "throttle": TG_THROTTLE, "cors": TG_CORS,
                                   "access_log": TG_LOG, "routes": large_route_table()})),
    # A browser's CORS preflight (OPTIONS with Origin, Access-Control-Request-Method and
    # -Headers) instead of the GET: answered by the filter, never forwarded.
    "N-preflight": ("N, a CORS preflight", lambda: dict(native_equivalent(), preflight=True)),
    "T-preflight": ("T, a CORS preflight",
                    lambda: dict(MAIN_VARIANTS["T"][1](), preflight=True)),
}

def extra_wasm_variants():
    """Other builds of the module side by side, e.g. before/after a change:
    EXTRA_WASM=old=/tmp/old.wasm,new=target/.../tollgate.wasm EXTRA_BASE=T-empty.
    EXTRA_BASE (default T) may name several tollgate variants (T,T-routes): each extra module
    then runs each of their configurations (and requests), as `label@variant`."""
    bases = os.environ.get("EXTRA_BASE", "T").split(",")
    variants = {}
    for item in filter(None, os.environ.get("EXTRA_WASM", "").split(",")):
        label, _, path = item.partition("=")
        if any(b not in MAIN_VARIANTS or b in ("A", "N", "N-preflight") for b in bases) \
                or not path:
            sys.exit("EXTRA_WASM is label=path,...; EXTRA_BASE names tollgate variants")
        for base in bases:
            name = label if len(bases) == 1 else f"{label}@{base}"

            def build(base=base, path=os.path.abspath(path)):
                spec = MAIN_VARIANTS[base][1]()
                module = tollgate(spec["tollgate"], path)
                if GUARD in spec["filters"]:
                    module = guarded(module)
                return dict(spec, **module, base=base)
            variants[name] = (f"{base} config, module {path}", build)
    return variants


# What a preflight variant sends instead of the GET.
PREFLIGHT_HEADERS = {"Access-Control-Request-Method": "PUT",
                     "Access-Control-Request-Headers": "content-type"}

# Host-call probes: each repeats one call REPS times per request (see bench/probe/src/lib.rs).
# REPS=1 measures a call made once per request, as tollgate makes most of them (one call among
# a request's others costs more than each of 20 in a row: caches and predictors are cold).
REPS = int(os.environ.get("REPS", 20))
HOSTCALL_VARIANTS = {
    "A": MAIN_VARIANTS["A"],
    "T": MAIN_VARIANTS["T"],
    "T-log": MAIN_VARIANTS["T-log"],
    "T-empty": MAIN_VARIANTS["T-empty"],
    "P-none": ("probe, no host call", lambda: probe("")),
    "P-trimmed": ("probe, no host call, without the callbacks it does not implement "
                  "(proxy_on_response_body, proxy_on_done, ...)",
                  lambda: probe("", PROBE_TRIMMED_WASM)),
    "P-mimic": ("probe making T's 22 host calls per request, nothing else",
                lambda: probe("mimic=1")),
    "P-lean": ("probe getting the same with 19 host calls", lambda: probe("lean=1")),
    # Lower bounds: the fewest host calls a filter doing T's job makes, nothing else (no clock,
    # no metrics, no filter state). P-floor: the request's headers (route, CORS, client), the
    # bucket's get and CAS, the six response headers N sends too (three RateLimit, three CORS),
    # the line left to Envoy's logger. P-floor-log: the line written by the filter, so the
    # response's map (status, length), the source address and protocol, and the line itself.
    "P-floor": ("probe: the fewest host calls for T's features, Envoy writing the line",
                lambda: probe("mapraw=1,cas=1,radd=6")),
    "P-floor-log": ("probe: the fewest host calls for T's features, the filter writing the line",
                    lambda: probe("mapraw=1,cas=1,radd=6,rmapraw=1,props2=1,log=1")),
    "P-hdr": (f"{REPS} x get_header_map_value (request, present)", lambda: probe(f"hdr={REPS}")),
    "P-hdrmiss": (f"{REPS} x get_header_map_value (request, absent)",
                  lambda: probe(f"hdrmiss={REPS}")),
    "P-map": (f"{REPS} x get_header_map_pairs (request, whole map)",
              lambda: probe(f"map={REPS}")),
    "P-mapraw": (f"{REPS} x get_header_map_pairs (request, read in place)",
                 lambda: probe(f"mapraw={REPS}")),
    "P-prop": (f"{REPS} x get_property(source.address)", lambda: probe(f"prop={REPS}")),
    "P-proto": (f"{REPS} x get_property(request.protocol)", lambda: probe(f"proto={REPS}")),
    "P-rcode": (f"{REPS} x get_property(response.code), in on_log",
                lambda: probe(f"rcode={REPS}")),
    "P-rsize": (f"{REPS} x get_property(response.size), in on_log",
                lambda: probe(f"rsize={REPS}")),
    "P-props3": (f"{REPS} x the access record's 3 properties (source.address, request.protocol, "
                 "response.size), in on_log", lambda: probe(f"props3={REPS}")),
    "P-expr": (f"{REPS} x one CEL expr_evaluate of the same 3 as a list, in on_log",
               lambda: probe(f"expr={REPS}")),
    "P-props2": (f"{REPS} x source.address and request.protocol, in on_log",
                 lambda: probe(f"props2={REPS}")),
    "P-expr2": (f"{REPS} x one CEL expr_evaluate of the same 2 as a list, in on_log",
                lambda: probe(f"expr2={REPS}")),
    "P-time": (f"{REPS} x get_current_time", lambda: probe(f"time={REPS}")),
    "P-cas": (f"{REPS} x shared data get + CAS set", lambda: probe(f"cas={REPS}")),
    "P-rset": (f"{REPS} x set response header", lambda: probe(f"rset={REPS}")),
    "P-rrm": (f"{REPS} x remove response header (absent)", lambda: probe(f"rrm={REPS}")),
    "P-radd": (f"{REPS} x add response header (absent)", lambda: probe(f"radd={REPS}")),
    "P-rpairs": (f"{REPS} x set_header_map_pairs (response: its map + T's 6 headers)",
                 lambda: probe(f"rpairs={REPS}")),
    "P-rmapraw": (f"{REPS} x get_header_map_pairs (response, read in place)",
                  lambda: probe(f"rmapraw={REPS}")),
    "P-rmap": (f"{REPS} x get_header_map_pairs (response)", lambda: probe(f"rmap={REPS}")),
    "P-log": (f"{REPS} x log at info, 400 bytes (written)", lambda: probe(f"log={REPS}")),
    "P-logdrop": (f"{REPS} x log at debug (dropped by the host)",
                  lambda: probe(f"logdrop={REPS}")),
    "P-level": (f"{REPS} x get_log_level", lambda: probe(f"level={REPS}")),
    "P-fs": (f"{REPS} x set_property (filter state)", lambda: probe(f"fs={REPS}")),
    "P-fslog": (f"{REPS} x set_property (filter state), in on_log",
                lambda: probe(f"fslog={REPS}")),
    "P-ctr": (f"{REPS} x increment_metric (counter)", lambda: probe(f"ctr={REPS}")),
    "P-hist": (f"{REPS} x record_metric (histogram)", lambda: probe(f"hist={REPS}")),
}


def upstream_listener(port):
    return {
        "name": "upstream",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "upstream",
                "route_config": {"virtual_hosts": [{
                    "name": "upstream", "domains": ["*"],
                    "routes": [{
                        "match": {"prefix": "/"},
                        "direct_response": {"status": 200,
                                            "body": {"inline_string": UPSTREAM_BODY}},
                        "response_headers_to_add": [{"header": {
                            "key": "content-type", "value": "application/json"}}],
                    }],
                }]},
                "http_filters": [ROUTER],
            },
        }]}],
    }


def front_listener(name, spec, port, access_log_path):
    """The measured listener of one variant: `spec`'s filters, then the router to `upstream`.
    Named `front_<name>`, stats under `http.ingress_<name>.`; with `name` None (an Envoy of
    one variant, as bench/memory.py starts) `front` and `http.ingress.`."""
    vhost = {
        "name": "all", "domains": ["*"],
        "routes": [{"match": {"prefix": "/"},
                    "route": {"cluster": "upstream", "timeout": "10s"}}],
    }
    if spec.get("vhost_per_filter"):
        vhost["typed_per_filter_config"] = spec["vhost_per_filter"]
    # The same connection manager settings as envoy/envoy.yaml, in every variant.
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress" if name is None else f"ingress_{name}",
        "use_remote_address": True,
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        "route_config": {"virtual_hosts": [vhost]},
        "http_filters": spec["filters"] + [ROUTER],
    }
    if spec.get("access_log"):
        hcm["access_log"] = [{
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": access_log_path,
                "log_format": {"json_format": NATIVE_LOG_FORMAT if spec["access_log"] is True
                               else spec["access_log"]},
            },
        }]
    return {
        "name": "front" if name is None else f"front_{name}",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": hcm,
        }]}],
    }


def bootstrap_fronts(fronts, upstream_port, with_upstream_listener):
    """One Envoy with a front listener per `(name, spec, port, access_log_path)` in `fronts`,
    all routing to the cluster `upstream` (and, with `with_upstream_listener`, the upstream's
    direct_response listener in the same Envoy)."""
    listeners = [front_listener(*f) for f in fronts]
    if with_upstream_listener:
        listeners.append(upstream_listener(upstream_port))
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": listeners,
            "clusters": [{
                "name": "upstream",
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [{
                    "endpoint": {"address": {"socket_address": {
                        "address": "127.0.0.1", "port_value": upstream_port}}}}]}]},
            }],
        },
    }


def bootstrap(spec, front_port, upstream_port, with_upstream_listener, access_log_path):
    """One Envoy for one variant."""
    return bootstrap_fronts([(None, spec, front_port, access_log_path)], upstream_port,
                            with_upstream_listener)


def own_vms(spec, name):
    """`spec` with a VM of its own for each wasm filter (vm_id suffixed with the variant's
    name), so that variants sharing one Envoy share neither a VM nor shared data."""
    for f in spec["filters"]:
        vm = f.get("typed_config", {}).get("config", {}).get("vm_config")
        if vm is not None:
            vm["vm_id"] = f"{vm['vm_id']}-{name}"
    return spec


def upstream_only_bootstrap(port):
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": [upstream_listener(port)]},
    }


# ---------------------------------------------------------------------------------------------
# Processes

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Envoy:
    """One Envoy process started by this run (killed by pid when the run ends)."""

    def __init__(self, name, config, workdir, cpu, port, log_level="wasm:info", concurrency=1,
                 wrapper=()):
        self.name = name
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.config_path = os.path.join(self.dir, "envoy.json")
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=1)
        self.log_path = os.path.join(self.dir, "envoy.log")
        self.admin_path = os.path.join(self.dir, "admin.txt")
        if os.path.exists(self.admin_path):
            os.remove(self.admin_path)  # a stale port from an earlier run
        self.port = port
        self.admin_port = None
        cmd = [ENVOY, "-c", self.config_path, "--concurrency", str(concurrency),
               "--disable-hot-restart", "-l", "warning", "--component-log-level", log_level,
               "--log-path", self.log_path, "--admin-address-path", self.admin_path]
        # `wrapper`: a command Envoy runs under (bench/envoy_instructions.py: valgrind).
        cmd = list(wrapper) + cmd
        if cpu is not None:
            cmd = ["taskset", "-c", cpu] + cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    @property
    def pid(self):
        return self.proc.pid

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Envoy {self.name} exited with {self.proc.returncode}:\n"
                                   + tail(self.log_path))
            if self.admin_port is None and os.path.exists(self.admin_path):
                text = open(self.admin_path).read().strip()
                if text:
                    self.admin_port = int(text.rsplit(":", 1)[1])
            if self.admin_port:
                try:
                    with urllib.request.urlopen(
                            f"http://127.0.0.1:{self.admin_port}/ready", timeout=2) as r:
                        if r.status == 200:
                            return
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"Envoy {self.name} not ready after {timeout}s:\n" + tail(self.log_path))

    def admin(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=10) as r:
            return r.read().decode()

    def cpu_ticks(self):
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15)

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Front:
    """One variant's listener in the run's shared Envoy (PROCESS=one): its port and its own
    directory, and the process's log, CPU and memory."""

    def __init__(self, name, envoy, port, workdir):
        self.name = name
        self.envoy = envoy
        self.port = port
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)

    @property
    def pid(self):
        return self.envoy.pid

    @property
    def log_path(self):
        return self.envoy.log_path

    def wait_ready(self, timeout=60):
        self.envoy.wait_ready(timeout)

    def cpu_ticks(self):
        return self.envoy.cpu_ticks()

    def rss_kib(self):
        return self.envoy.rss_kib()

    def stop(self):
        self.envoy.stop()


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


def cpu_busy_ticks():
    """Busy ticks per CPU from /proc/stat (everything but idle and iowait)."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+) (.*)", line)
            if m:
                v = [int(x) for x in m.group(2).split()]
                out[m.group(1)] = sum(v[:8]) - v[3] - v[4]
    return out


def foreign_cpu_ticks(ours):
    """CPU ticks used so far by user processes other than `ours` (this script, its Envoys and
    wrk): the other work on the machine that competes with the run. Kernel threads are left
    out (loopback softirqs and log writeback are the run's own); exited processes are counted
    through their parent's cutime/cstime."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) in ours:
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[6]) & 0x00200000:  # PF_KTHREAD
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total


def get(port, path=PATH, headers=None, method="GET"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {},
                                 method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict((k.lower(), v) for k, v in e.headers.items()), e.read()


# ---------------------------------------------------------------------------------------------
# wrk

UNITS = {"us": 1.0, "ms": 1000.0, "s": 1e6, "m": 60e6}


def parse_latency(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")


def run_wrk(port, seconds, connections, out_path, preflight=False):
    cmd = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
           "--latency", "-H", f"Origin: {ORIGIN}", "-H", "User-Agent: tollgate-bench",
           f"http://127.0.0.1:{port}{PATH}"]
    if preflight:
        for name, value in PREFLIGHT_HEADERS.items():
            cmd[-1:-1] = ["-H", f"{name}: {value}"]
        cmd[-1:-1] = ["-s", os.path.join(ROOT, "bench", "options.lua")]
    with open(out_path, "w") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    text = open(out_path).read()
    if p.returncode != 0:
        raise RuntimeError(f"wrk failed ({p.returncode}):\n{text}")
    res = {"client_cpu_s": usage.ru_utime + usage.ru_stime}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    res["requests"] = int(m.group(1))
    res["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", text, re.M)
        res[f"p{pct}_us"] = parse_latency(m.group(1)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", text)
    res["socket_errors"] = m.group(1).strip() if m else ""
    return res


# ---------------------------------------------------------------------------------------------
# The run

def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu": model, "vcpus": os.cpu_count(), "kernel": platform.release(),
            "loadavg": open("/proc/loadavg").read().split()[:3]}


def envoy_version():
    out = subprocess.run([ENVOY, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"/(\d+\.\d+\.\d+)/", out)
    return m.group(1) if m else out.strip()


def sanity_check(name, envoy, spec):
    name = spec.get("base", name)
    if spec.get("preflight"):
        status, headers, _ = get(envoy.port, headers={"Origin": ORIGIN, **PREFLIGHT_HEADERS},
                                 method="OPTIONS")
        # Envoy's CORS filter answers 200, tollgate 204.
        if status not in (200, 204) or headers.get("access-control-allow-origin") != ORIGIN:
            raise RuntimeError(f"{name}: the preflight answered {status} {headers}")
        return
    status, headers, _ = get(envoy.port, headers={"Origin": ORIGIN})
    if status != 200:
        raise RuntimeError(f"{name}: GET {PATH} answered {status}")
    if (name in ("N", "T", "T-cors", "T-nofs", "T-envoylog", "T-routes", "T-guard")
            and headers.get("access-control-allow-origin") != ORIGIN):
        raise RuntimeError(f"{name}: no CORS headers in {headers}")
    if (name in ("T", "T-throttle", "T-nofs", "T-envoylog", "T-routes", "T-guard")
            and "ratelimit" not in headers):
        raise RuntimeError(f"{name}: no RateLimit header in {headers}")
    if name == "N" and "x-ratelimit-limit" not in headers:
        raise RuntimeError(f"{name}: no X-RateLimit headers in {headers}")


def log_files(envoy, spec):
    files = [envoy.log_path]
    if spec.get("access_log"):
        files.append(os.path.join(envoy.dir, "access.log"))
    return files


def count_log_lines(envoy, spec, name):
    """Access log lines written so far (tollgate's go to Envoy's log, Envoy's to access.log)."""
    name = spec.get("base", name)
    if name == "T-envoylog":
        # Envoy's line, with tollgate's values from the filter state.
        path, needle = os.path.join(envoy.dir, "access.log"), b'"stage":"bench"'
    elif spec.get("access_log"):
        path, needle = os.path.join(envoy.dir, "access.log"), b'"requestId"'
    elif name in ("T", "T-log", "T-nofs", "T-routes", "T-guard"):
        path, needle = envoy.log_path, b'"requestId"'
    else:
        return None
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if needle in line)
    except OSError:
        return 0


def output_dir():
    """Where the scripts write their tables: BENCH_OUT, else target/bench."""
    return os.environ.get("BENCH_OUT") or os.path.join(ROOT, "target/bench")


def fresh_run_dir(name):
    """The output directory and, inside it, an emptied `run-<name>` for a run's Envoy files."""
    out_dir = output_dir()
    work = os.path.join(out_dir, f"run-{name}")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    return out_dir, work


def report(out_dir, name, text, data):
    """Prints a run's table and writes it to `<name>.md`, its data to `<name>.json`."""
    print()
    print(text)
    with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(data, f, indent=1)
    print(f"\n(written to {os.path.relpath(out_dir, ROOT)}/{name}.md and .json)")


def median(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def fmt_us(us):
    if us != us:
        return "-"
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", choices=["main", "hostcalls"], default="main")
    args = ap.parse_args()

    quick = os.environ.get("QUICK", "") not in ("", "0")
    # wrk takes whole seconds. The host-call suite has three times as many variants.
    main_suite = args.suite == "main"
    # Many short rounds beat a few long ones on a shared machine: the medians shrug off a
    # disturbed round.
    rounds = int(os.environ.get("ROUNDS", 3 if quick else 7 if main_suite else 5))
    duration = int(os.environ.get("DURATION", 1 if quick else 2))
    warmup = int(os.environ.get("WARMUP", 1 if quick else 2))
    connections = int(os.environ.get("CONNECTIONS", 16))
    upstream_mode = os.environ.get("UPSTREAM", "same")
    process_mode = os.environ.get("PROCESS", "one")
    # The host-call suite's ~30 variants each run once (its figures are differences of many
    # calls, or of single calls repeated over more rounds).
    replicas = int(os.environ.get("REPLICAS", 1 if quick or not main_suite else 2))
    if process_mode not in ("one", "each"):
        sys.exit("PROCESS must be `one` or `each`")
    if upstream_mode not in ("same", "separate"):
        sys.exit("UPSTREAM must be `same` or `separate`")
    variants = dict(MAIN_VARIANTS if args.suite == "main" else HOSTCALL_VARIANTS)
    # Other builds of the module side by side, e.g. before/after a change:
    # EXTRA_WASM=old=/tmp/old.wasm,new=target/.../tollgate.wasm EXTRA_BASE=T-empty
    # EXTRA_BASE may name several variants (T,T-empty): each extra module then runs each of
    # their configurations, as `label@variant`.
    extra = extra_wasm_variants()
    variants.update(extra)
    extras = set(extra)
    if os.environ.get("VARIANTS"):
        wanted = os.environ["VARIANTS"].split(",")
        unknown = [v for v in wanted if v not in variants]
        if unknown:
            sys.exit(f"unknown variants {unknown}; known: {', '.join(variants)}")
        variants = {k: v for k, v in variants.items() if k in wanted or k in extras}
    if os.cpu_count() < 2:
        sys.exit("needs 2 CPUs (Envoy on CPU 0, wrk on CPU 1)")
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found (`make bench` installs wrk)")
    needed = PROBE_WASM if args.suite == "hostcalls" else WASM
    if not os.path.exists(needed):
        sys.exit(f"{needed} missing (`make bench` builds it)")

    out_dir, work = fresh_run_dir(args.suite)

    info = machine()
    started = datetime.datetime.now(datetime.timezone.utc)
    print(f"tollgate bench ({args.suite}): Envoy {envoy_version()} --concurrency 1 on CPU "
          f"{ENVOY_CPU}, wrk -t1 -c{connections} on CPU {CLIENT_CPU}, upstream {upstream_mode}; "
          f"{rounds} rounds x {duration:g} s per variant, interleaved")
    print(f"machine: {info['vcpus']} vCPU {info['cpu']}, kernel {info['kernel']}, "
          f"load average {' '.join(info['loadavg'])}")

    envoys = {}
    upstream = None
    results = {}
    noise = []
    try:
        if upstream_mode == "separate":
            up_port = free_port()
            upstream = Envoy("upstream", upstream_only_bootstrap(up_port), work, CLIENT_CPU,
                             up_port)
            upstream.wait_ready()
        # REPLICAS > 1: each variant several times over, each copy a listener and VM of its own
        # (`T#2`), and the rounds of all copies pooled: two VMs of one module and configuration
        # were measured several µs per request apart, in one process as in two.
        specs = {}
        for name, (_, build) in variants.items():
            for k in range(replicas):
                key = name if replicas == 1 else f"{name}#{k + 1}"
                spec = own_vms(build(), key.replace("#", "-"))
                spec.setdefault("base", name)
                specs[key] = spec
        if process_mode == "one":
            # Every variant a listener (with its own VM) of one Envoy: no variant gets a
            # faster or slower process than another.
            up = up_port if upstream else free_port()
            fronts = [(name, spec, free_port(), os.path.join(work, name, "access.log"))
                      for name, spec in specs.items()]
            shared = Envoy("envoy", bootstrap_fronts(fronts, up, upstream is None), work,
                           ENVOY_CPU, None)
            for name, _, port, _ in fronts:
                envoys[name] = Front(name, shared, port, work)
        else:
            for name, spec in specs.items():
                front = free_port()
                up = up_port if upstream else free_port()
                cfg = bootstrap(spec, front, up, upstream is None,
                                os.path.join(work, name, "access.log"))
                envoys[name] = Envoy(name, cfg, work, ENVOY_CPU, front)
        for name, e in envoys.items():
            e.wait_ready()
            sanity_check(name, e, specs[name]) if args.suite == "main" else None
        print(f"{len(envoys)} variants ready "
              + ("as listeners of one Envoy" if process_mode == "one" else "in their own Envoys")
              + f"; warming up {warmup:g} s each")
        for name, e in envoys.items():
            before = count_log_lines(e, specs[name], name)
            run_wrk(e.port, warmup, connections, os.path.join(work, name, "warmup.txt"),
                    preflight=specs[name].get("preflight", False))
            # The access log really is written, one JSON line per request.
            if before is not None and count_log_lines(e, specs[name], name) <= before:
                time.sleep(1.5)
                if count_log_lines(e, specs[name], name) <= before:
                    raise RuntimeError(f"{name}: no access log lines after the warm-up")
        names = list(envoys)
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                e = envoys[name]
                for path in log_files(e, specs[name]):
                    if os.path.exists(path):
                        os.truncate(path, 0)  # keeps the disk small; Envoy appends
                time.sleep(0.3)
                ours = {os.getpid()} | {x.pid for x in envoys.values()}
                if upstream:
                    ours.add(upstream.pid)
                busy0, foreign0, cpu0 = cpu_busy_ticks(), foreign_cpu_ticks(ours), e.cpu_ticks()
                t0 = time.time()
                res = run_wrk(e.port, duration, connections,
                              os.path.join(work, name, f"round{r}.txt"),
                              preflight=specs[name].get("preflight", False))
                elapsed = time.time() - t0
                cpu1, foreign1, busy1 = e.cpu_ticks(), foreign_cpu_ticks(ours), cpu_busy_ticks()
                envoy_s = (cpu1 - cpu0) / CLK_TCK
                res["envoy_cpu_s"] = envoy_s
                res["cpu_us_per_req"] = envoy_s * 1e6 / max(res["requests"], 1)
                res["cpu_busy_pct"] = {c: (busy1[c] - busy0[c]) * 100 / CLK_TCK / elapsed
                                       for c in busy1}
                # Other processes' CPU time (other people's builds and tests), in % of 2 CPUs.
                res["other_load_pct"] = max(foreign1 - foreign0, 0) * 100 / CLK_TCK / (
                    elapsed * 2)
                res["elapsed_s"] = elapsed
                if res["non2xx"] or res["socket_errors"]:
                    print(f"  warning: {name} round {r}: {res['non2xx']} non-2xx, "
                          f"socket errors {res['socket_errors'] or 'none'}")
                results.setdefault(name, []).append(res)
                noise.append(res["other_load_pct"])
                print(f"  round {r + 1}/{rounds} {name:<11} {res['rps']:>9.0f} req/s  "
                      f"p50 {fmt_us(res['p50_us']):>8}  p99 {fmt_us(res['p99_us']):>8}  "
                      f"{res['cpu_us_per_req']:6.1f} µs CPU/req  other load "
                      f"{res['other_load_pct']:4.1f}%", flush=True)
        rss = {name: e.rss_kib() for name, e in envoys.items()}
        # The copies' rounds pooled per variant, in the same (round, copy) order for every
        # variant, so that per-round differences compare runs made side by side.
        instances = results
        results = {name: [] for name in variants}
        for r in range(rounds):
            for k in range(replicas):
                for name in variants:
                    key = name if replicas == 1 else f"{name}#{k + 1}"
                    results[name].append(instances[key][r])
        rss = {name: rss[name if replicas == 1 else f"{name}#1"] for name in variants}
    finally:
        for e in {id(x.envoy if isinstance(x, Front) else x): x for x in envoys.values()}.values():
            e.stop()
        if upstream:
            upstream.stop()

    summary = {}
    for name, rs in results.items():
        summary[name] = {
            "rps": median([r["rps"] for r in rs]),
            "p50_us": median([r["p50_us"] for r in rs]),
            "p99_us": median([r["p99_us"] for r in rs]),
            "cpu_us_per_req": median([r["cpu_us_per_req"] for r in rs]),
            "rps_spread_pct": (max(r["rps"] for r in rs) - min(r["rps"] for r in rs)) * 100
            / median([r["rps"] for r in rs]),
            "rss_kib": rss.get(name),
        }
    # Added CPU against a reference: the median over rounds of the difference within a round
    # (the variants of one round run back to back), steadier than a difference of medians when
    # the machine's speed drifts.
    for name, rs in results.items():
        for ref in ("A", "N", "P-none"):
            if ref in results:
                diffs = [r["cpu_us_per_req"] - q["cpu_us_per_req"]
                         for r, q in zip(rs, results[ref])]
                summary[name][f"plus_us_vs_{ref}"] = median(diffs)
    finished = datetime.datetime.now(datetime.timezone.utc)
    loadavg = open("/proc/loadavg").read().split()[:3]
    table = render(args.suite, variants, summary)
    header = (f"{info['vcpus']} vCPU {info['cpu']} (kernel {info['kernel']}), "
              f"{finished:%Y-%m-%d %H:%M} UTC; Envoy {envoy_version()}, V8, `--concurrency 1` "
              + ("(one process, a listener and VM per variant) " if process_mode == "one"
                 else "(a process per variant) ")
              + f"on CPU {ENVOY_CPU}, wrk `-t1 -c{connections}` on CPU {CLIENT_CPU}, "
              f"`GET {PATH}` with `Origin`, keep-alive"
              + ("" if not any(s.get("preflight") for s in specs.values()) else
                 " (the *-preflight rows: `OPTIONS` with `Origin`, "
                 "`Access-Control-Request-Method: PUT` and `-Headers: content-type`, answered "
                 "in one pass; compare them with each other)")
              + "; upstream: "
              + ("a direct_response listener in the same Envoy (two passes per request)"
                 if upstream_mode == "same" else "a separate Envoy on CPU 1")
              + f"; {rounds} interleaved rounds x {duration:g} s"
              + (f" x {replicas} copies of each variant (own listener and VM), pooled"
                 if replicas > 1 else "")
              + ", medians (+µs: median of the "
              f"per-round differences). Load average "
              f"{' '.join(info['loadavg'])} before, {' '.join(loadavg)} after; other load "
              f"on the 2 CPUs during rounds: median {median(noise):.1f}%, max "
              f"{max(noise):.1f}%.")
    print()
    print(header)
    print()
    print(table)
    if args.suite == "hostcalls":
        print()
        print(hostcall_costs(summary))
    with open(os.path.join(out_dir, f"{args.suite}.md"), "w") as f:
        f.write(header + "\n\n" + table + "\n")
        if args.suite == "hostcalls":
            f.write("\n" + hostcall_costs(summary) + "\n")
    with open(os.path.join(out_dir, f"{args.suite}.json"), "w") as f:
        json.dump({"started": started.isoformat(), "finished": finished.isoformat(),
                   "machine": info, "rounds": rounds, "replicas": replicas,
                   "process": process_mode, "duration_s": duration,
                   "connections": connections, "upstream": upstream_mode,
                   "summary": summary, "results": results}, f, indent=1)
    print(f"\n(written to {os.path.relpath(out_dir, ROOT)}/{args.suite}.md and .json; "
          f"Envoy configs in {os.path.relpath(work, ROOT)}/*/envoy.json)")
    spread = max(s["rps_spread_pct"] for s in summary.values())
    print(f"largest req/s spread between the rounds of one variant: {spread:.0f}%")
    if median(noise) > 5:
        print(f"note: other processes used a median {median(noise):.1f}% of the CPUs during the "
              f"rounds; rerun when the machine is idle for firm numbers")


def render(suite, variants, s):
    a = s.get("A")
    n = s.get("N")
    rows = ["| variant | req/s | vs A | vs N | p50 | p99 | Envoy CPU µs/req | +µs vs A |"
            " +µs vs N |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    if suite == "hostcalls":
        rows = ["| variant | req/s | p50 | p99 | Envoy CPU µs/req | +µs vs P-none |",
                "|---|---:|---:|---:|---:|---:|"]
    base = s.get("P-none")
    for name, (desc, _) in variants.items():
        x = s[name]
        if suite == "hostcalls":
            plus = f"{x['plus_us_vs_P-none']:+.1f}" if base else "-"
            rows.append(f"| {name}: {desc} | {x['rps']:.0f} | {fmt_us(x['p50_us'])} | "
                        f"{fmt_us(x['p99_us'])} | {x['cpu_us_per_req']:.1f} | {plus} |")
            continue

        def ratio(ref):
            return f"{x['rps'] / ref['rps']:.2f}x" if ref else "-"

        def plus(ref):
            key = f"plus_us_vs_{ref}"
            return f"{x[key]:+.1f}" if key in x else "-"
        rows.append(f"| {name}: {desc} | {x['rps']:.0f} | {ratio(a)} | {ratio(n)} | "
                    f"{fmt_us(x['p50_us'])} | {fmt_us(x['p99_us'])} | "
                    f"{x['cpu_us_per_req']:.1f} | {plus('A')} | {plus('N')} |")
    return "\n".join(rows)


def hostcall_costs(s):
    base = s.get("P-none")
    if not base:
        return ""
    lines = ["| host call | µs each (Envoy CPU, (variant - P-none) / " + str(REPS) + ") |",
             "|---|---:|"]
    for name, (desc, _) in HOSTCALL_VARIANTS.items():
        if (not name.startswith("P-") or name in ("P-none", "P-trimmed", "P-mimic", "P-lean")
                or name not in s):
            continue
        per = s[name]["plus_us_vs_P-none"] / REPS
        lines.append(f"| {desc.split(' x ', 1)[-1]} | {per:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
