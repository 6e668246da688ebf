#!/usr/bin/env python3
"""Configuration pushes under load (`make bench-reload`; Python 3 standard library only).

Envoy at `--concurrency 2` gets tollgate through ECDS from a file (a `path_config_source`, as a
control plane's push arrives) with a large configuration: KEYS API keys (default 20,000) on 50
usage plans, and make bench's 1,000 routes with `GET /pets/{id}` requiring a key. While wrk
sends a steady keyed load (limits that never trip) and a probe sends one request every 5 ms on
its own connection, timing each, PUSHES new configurations (default 6, GAP seconds apart,
default 6) are published, each adding one key.

Each worker compiles a pushed configuration in its own thread, between two requests: what the
probe shows is how long requests wait for that. Reported for each module: how long after a
push its new key is accepted; the probe's slowest request in the 3 s after each push, against
its slowest in the quiet seconds before the first; wrk's p99 over the pushes; and that no
request failed and no configuration was refused.

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


def publish(path, wasm, configuration):
    """Writes the ECDS file whole, then moves it into place (Envoy watches for the move)."""
    doc = {"resources": [{
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": "tollgate",
        "typed_config": bench.wasm_filter(wasm, configuration)["typed_config"],
    }]}
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f)
    os.rename(path + ".tmp", path)


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
            except OSError:
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


def accepted_after(port, key, since, timeout=30):
    """Seconds from `since` until a request with `key` is answered 200."""
    deadline = since + timeout
    while time.monotonic() < deadline:
        status, _, _ = bench.get(port, bench.PATH, {"x-api-key": key})
        if status == 200:
            return time.monotonic() - since
        time.sleep(0.01)
    raise RuntimeError(f"key {key} not accepted {timeout} s after its push")


def measure(label, wasm, keys, pushes, gap, work, up_port):
    d = os.path.join(work, label)
    os.makedirs(d, exist_ok=True)
    ecds = os.path.join(d, "tollgate-ecds.json")
    publish(ecds, wasm, plugin_config(keys, 0))
    size = os.path.getsize(ecds)
    front = bench.free_port()
    envoy = bench.Envoy(label, gateway_bootstrap(ecds, front, up_port), work, None, front,
                        log_level="wasm:warning", concurrency=2)
    probe = Probe(front)
    wrk = None
    try:
        envoy.wait_ready()
        accepted_after(front, LOAD_KEY, time.monotonic())
        seconds = QUIET_S + pushes * gap + 2
        wrk_out = open(os.path.join(d, "wrk.txt"), "w")
        wrk = subprocess.Popen(["wrk", "-t1", "-c8", f"-d{seconds:.0f}s", "--latency",
                                "-H", f"x-api-key: {LOAD_KEY}",
                                f"http://127.0.0.1:{front}{bench.PATH}"],
                               stdout=wrk_out, stderr=subprocess.STDOUT)
        probe.start()
        time.sleep(QUIET_S)
        quiet = probe.slowest_ms(time.monotonic() - QUIET_S + 1, time.monotonic())
        rows = []
        for n in range(1, pushes + 1):
            pushed = time.monotonic()
            publish(ecds, wasm, plugin_config(keys, n))
            visible = accepted_after(front, f"new-{n}", pushed)
            time.sleep(max(0.0, pushed + gap - time.monotonic()))
            rows.append({"accepted_s": visible,
                         "slowest_ms": probe.slowest_ms(pushed, pushed + AFTER_PUSH_S)})
        probe.done.set()
        probe.join(timeout=15)
        wrk.wait(timeout=seconds + 30)
        wrk_out.close()
        text = open(os.path.join(d, "wrk.txt")).read()
        p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        return {
            "ecds_bytes": size, "pushes": rows, "quiet_slowest_ms": quiet,
            "wrk_p99": p99.group(1) if p99 else "?",
            "wrk_non2xx": int(non2xx.group(1)) if non2xx else 0,
            "probe_failures": probe.failures(), "probe_requests": len(probe.rows),
            "config_reload": stat_sum(envoy, "extension_config_discovery.*config_reload$"),
            "config_fail": stat_sum(envoy, "extension_config_discovery.*config_fail$"),
        }
    finally:
        probe.done.set()
        if wrk is not None and wrk.poll() is None:
            wrk.kill()
        envoy.stop()


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


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
    out_dir = os.environ.get("BENCH_OUT") or os.path.join(bench.ROOT, "target/bench")
    work = os.path.join(out_dir, "run-reload")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
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
             "| module | new key accepted after, median (max) | slowest request in the 3 s "
             "after a push, median (max) | slowest request before the pushes | wrk p99 | "
             "failed requests | pushes refused |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for label, r in results.items():
        acc = [p["accepted_s"] for p in r["pushes"]]
        slow = [p["slowest_ms"] for p in r["pushes"] if p["slowest_ms"] is not None]
        lines.append(
            f"| {label} | {median(acc):.2f} s ({max(acc):.2f}) | "
            f"{median(slow):.0f} ms ({max(slow):.0f}) | {r['quiet_slowest_ms']:.0f} ms | "
            f"{r['wrk_p99']} | {r['wrk_non2xx'] + r['probe_failures']} | {r['config_fail']} |")
    table = "\n".join(lines)
    print()
    print(table)
    with open(os.path.join(out_dir, "reload.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(out_dir, "reload.json"), "w") as f:
        json.dump({"machine": info, "keys": keys, "results": results}, f, indent=1)
    bad = [label for label, r in results.items()
           if r["wrk_non2xx"] or r["probe_failures"] or r["config_fail"]
           or r["config_reload"] != pushes + 1]
    if bad:
        sys.exit(f"requests failed, or pushes were refused or not all loaded: {', '.join(bad)}")


if __name__ == "__main__":
    main()
