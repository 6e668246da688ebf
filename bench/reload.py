#!/usr/bin/env python3
"""Configuration pushes under load (`make bench-reload`; Python 3 standard library only).

Envoy at `--concurrency 2` gets tollgate through ECDS from a file (a `path_config_source`, as a
control plane's push arrives) with a large configuration: KEYS API keys (default 20,000) on 50
usage plans, and make bench's 1,000 routes with `GET /pets/{id}` requiring a key. While wrk
sends a steady keyed load (limits that never trip) and a probe sends one request every 5 ms on
its own connection, timing each, PUSHES new configurations (default 6, GAP seconds apart,
default 6) are published, each adding one key.

Each worker compiles a pushed configuration in its own thread, between two requests: what the
probe (one connection, so one worker) and wrk (8 connections, both workers) show is how long
requests wait for that. Reported for each module: how long after a push every worker has it
(Envoy's `config_reload` counts a push once all workers load it; the new key is then checked);
the probe's slowest request in the 3 s after each push, against its slowest in the quiet
seconds before the first; wrk's p99 and slowest request over the whole run; and that no request
failed or timed out and no configuration was refused. The configurations are written out
before the run, so the script's own work does not compete with Envoy during a push.

Environment: KEYS, PUSHES, GAP, ENVOY, TOLLGATE_WASM, EXTRA_WASM=label=path,... (other builds of
the module, run after it in turn), BENCH_OUT.
"""

import datetime
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the shared Envoy/config helpers)

PLANS = 50
LOAD_KEY = "key-1"
QUIET_S = 8
AFTER_PUSH_S = 3.0
PROBE_EVERY_S = 0.005


def sha256(text):
    return hashlib.sha256(text.encode()).hexdigest()


def plugin_config(keys, push):
    """The configuration of push `push` (0: the first): `keys` keys, and one more per push."""
    plans = {f"plan{i}": {"throttle": {"rate": 1_000_000, "burst": 1_000_000},
                          "quota": {"limit": 1_000_000_000, "period": "DAY"}}
             for i in range(PLANS)}
    key_list = [{"id": f"k{i}", "sha256": sha256(f"key-{i}"), "usage_plan": f"plan{i % PLANS}"}
                for i in range(keys)]
    key_list += [{"id": f"new{n}", "sha256": sha256(f"new-{n}"), "usage_plan": "plan0"}
                 for n in range(1, push + 1)]
    routes = bench.large_route_table()
    for r in routes:
        if r["match"] == "GET /pets/{id}":
            r["api_key_required"] = True
    return {"stage": "bench", "api_key": {"header": "x-api-key", "keys": key_list},
            "usage_plans": plans, "throttle": {"rate": 1_000_000, "burst": 1_000_000},
            "cors": bench.TG_CORS, "access_log": bench.TG_LOG, "routes": routes}


def ecds_file(path, wasm, configuration):
    """Writes the ECDS document of `configuration` to `path` (not yet in place)."""
    doc = {"resources": [{
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": "tollgate",
        "typed_config": bench.wasm_filter(wasm, configuration)["typed_config"],
    }]}
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def publish(prepared, path):
    """Moves a written ECDS document into place: Envoy watches for the move."""
    os.rename(prepared, path)


def gateway_bootstrap(ecds_path, front_port, upstream_port):
    discovered = {"name": "tollgate", "config_discovery": {
        "config_source": {"resource_api_version": "V3",
                          "path_config_source": {"path": ecds_path}},
        "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"]}}
    cfg = bench.bootstrap({"filters": [discovered]}, front_port, upstream_port, False, "")
    cfg["node"] = {"id": "bench-reload", "cluster": "bench"}  # xDS subscriptions need both
    return cfg


class Probe(threading.Thread):
    """One request every 5 ms on one keep-alive connection: (start, seconds, status)."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.rows = []
        self.done = threading.Event()

    def run(self):
        conn = None
        while not self.done.is_set():
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", bench.PATH, headers={"x-api-key": LOAD_KEY})
                r = conn.getresponse()
                r.read()
                self.rows.append((t0, time.monotonic() - t0, r.status))
            except (OSError, http.client.HTTPException):
                self.rows.append((t0, time.monotonic() - t0, -1))
                conn = None
            time.sleep(max(0.0, PROBE_EVERY_S - (time.monotonic() - t0)))

    def slowest_ms(self, start, end):
        lat = [s for t, s, _ in self.rows if start <= t < end]
        return max(lat) * 1000 if lat else None

    def failures(self):
        return sum(1 for _, _, status in self.rows if status != 200)


def stat_sum(envoy, pattern):
    text = envoy.admin(f"/stats?filter={pattern}")
    return sum(int(v) for v in re.findall(r": (\d+)$", text, re.M))


RELOADS = "extension_config_discovery.*config_reload$"


def loaded_after(envoy, reloads, since, timeout=30):
    """Seconds from `since` until Envoy counts `reloads` configuration loads (a push counts
    once every worker has it)."""
    deadline = since + timeout
    while time.monotonic() < deadline:
        if stat_sum(envoy, RELOADS) >= reloads:
            return time.monotonic() - since
        time.sleep(0.01)
    raise RuntimeError(f"load {reloads} not counted {timeout} s after its push")


def accepted(port, key):
    status, _, _ = bench.get(port, bench.PATH, {"x-api-key": key})
    return status == 200


def measure(label, wasm, keys, pushes, gap, work, up_port):
    d = os.path.join(work, label)
    os.makedirs(d, exist_ok=True)
    ecds = os.path.join(d, "tollgate-ecds.json")
    publish(ecds_file(ecds + ".0", wasm, plugin_config(keys, 0)), ecds)
    size = os.path.getsize(ecds)
    prepared = [ecds_file(f"{ecds}.{n}", wasm, plugin_config(keys, n))
                for n in range(1, pushes + 1)]
    front = bench.free_port()
    envoy = bench.Envoy(label, gateway_bootstrap(ecds, front, up_port), work, None, front,
                        log_level="wasm:warning", concurrency=2)
    probe = Probe(front)
    wrk = None
    step = max(gap, AFTER_PUSH_S + 0.5)
    try:
        envoy.wait_ready()
        if not accepted(front, LOAD_KEY):
            raise RuntimeError(f"{label}: the load's key is refused")
        # wrk runs past the last push; it is interrupted (SIGINT: it reports) once done.
        wrk_path = os.path.join(d, "wrk.txt")
        wrk_out = open(wrk_path, "w")
        wrk = subprocess.Popen(["wrk", "-t1", "-c8", f"-d{QUIET_S + pushes * step + 60:.0f}s",
                                "--latency", "-H", f"x-api-key: {LOAD_KEY}",
                                f"http://127.0.0.1:{front}{bench.PATH}"],
                               stdout=wrk_out, stderr=subprocess.STDOUT)
        probe.start()
        time.sleep(QUIET_S)
        quiet = probe.slowest_ms(time.monotonic() - QUIET_S + 1, time.monotonic())
        rows = []
        for n, path in enumerate(prepared, start=1):
            pushed = time.monotonic()
            publish(path, ecds)
            loaded = loaded_after(envoy, n + 1, pushed)
            if not accepted(front, f"new-{n}"):
                raise RuntimeError(f"{label}: push {n} loaded but its key is refused")
            time.sleep(max(0.0, pushed + step - time.monotonic()))
            rows.append({"loaded_s": loaded,
                         "slowest_ms": probe.slowest_ms(pushed, pushed + AFTER_PUSH_S)})
        probe.done.set()
        probe.join(timeout=15)
        wrk.send_signal(signal.SIGINT)
        wrk.wait(timeout=30)
        wrk_out.close()
        text = open(wrk_path).read()
        p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
        slowest = re.search(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)", text, re.M)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                           r"timeout (\d+)", text)
        if not p99:
            raise RuntimeError(f"{label}: wrk gave no latency:\n{text}")
        return {
            "ecds_bytes": size, "pushes": rows, "quiet_slowest_ms": quiet,
            "wrk_p99": p99.group(1), "wrk_max": slowest.group(1) if slowest else "?",
            "wrk_failed": (int(non2xx.group(1)) if non2xx else 0)
            + (sum(int(x) for x in errors.groups()) if errors else 0),
            "probe_failures": probe.failures(), "probe_requests": len(probe.rows),
            "config_reload": stat_sum(envoy, RELOADS),
            "config_fail": stat_sum(envoy, "extension_config_discovery.*config_fail$"),
        }
    finally:
        probe.done.set()
        if wrk is not None and wrk.poll() is None:
            wrk.kill()
        envoy.stop()


def main():
    keys = int(os.environ.get("KEYS", 20_000))
    pushes = int(os.environ.get("PUSHES", 6))
    gap = float(os.environ.get("GAP", 6))
    if not shutil.which("wrk"):
        sys.exit("wrk not found (`make bench-reload` installs it)")
    modules = [("tollgate", bench.WASM)]
    for item in filter(None, os.environ.get("EXTRA_WASM", "").split(",")):
        label, _, path = item.partition("=")
        modules.append((label, os.path.abspath(path)))
    for label, path in modules:
        if not os.path.exists(path):
            sys.exit(f"{label}: {path} missing (`make bench-reload` builds the module)")
    out_dir, work = bench.fresh_run_dir("reload")
    info = bench.machine()
    print(f"tollgate reload: Envoy {bench.envoy_version()} --concurrency 2; {keys:,} keys, "
          f"{PLANS} plans, 1,000 routes; {pushes} pushes {gap:g} s apart under load", flush=True)
    up_port = bench.free_port()
    upstream = bench.Envoy("upstream", bench.upstream_only_bootstrap(up_port), work, None,
                           up_port)
    results = {}
    try:
        upstream.wait_ready()
        for label, path in modules:
            results[label] = measure(label, path, keys, pushes, gap, work, up_port)
            print(f"  {label}: done", flush=True)
    finally:
        upstream.stop()

    when = datetime.datetime.now(datetime.timezone.utc)
    lines = [f"{info['vcpus']} vCPU {info['cpu']}, {when:%Y-%m-%d %H:%M} UTC; Envoy "
             f"{bench.envoy_version()} `--concurrency 2`, V8; configuration of "
             f"{next(iter(results.values()))['ecds_bytes'] / 1e6:.1f} MB ({keys:,} keys, "
             f"{PLANS} plans, 1,000 routes) pushed through ECDS {pushes} times under load.",
             "",
             "| module | loaded by every worker after, median (max) | probe's slowest request "
             "in the 3 s after a push, median (max) | probe's slowest before the pushes | "
             "wrk p99 (slowest) | failed requests | pushes refused |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    ms = lambda v: "-" if v is None or v != v else f"{v:.0f} ms"  # noqa: E731
    for label, r in results.items():
        loaded = [p["loaded_s"] for p in r["pushes"]]
        slow = [p["slowest_ms"] for p in r["pushes"] if p["slowest_ms"] is not None]
        lines.append(
            f"| {label} | {bench.median(loaded):.2f} s ({max(loaded):.2f}) | "
            f"{ms(bench.median(slow))} ({ms(max(slow, default=None))}) | "
            f"{ms(r['quiet_slowest_ms'])} | {r['wrk_p99']} ({r['wrk_max']}) | "
            f"{r['wrk_failed'] + r['probe_failures']} | {r['config_fail']} |")
    bench.report(out_dir, "reload", "\n".join(lines),
                 {"machine": info, "keys": keys, "results": results})
    bad = [label for label, r in results.items()
           if r["wrk_failed"] or r["probe_failures"] or r["config_fail"]
           or r["config_reload"] != pushes + 1]
    if bad:
        sys.exit(f"requests failed, or pushes were refused or not all loaded: {', '.join(bad)}")


if __name__ == "__main__":
    main()
