#!/usr/bin/env python3
"""Envoy memory with tollgate (`make bench-memory`; Python 3 standard library only).

Starts Envoy with tollgate at `--concurrency 2` (client_throttle by ip, X-Forwarded-For trusted
for one hop, as in tests/memory.rs) and reports its RSS and heap idle, after 10,000 distinct
clients and after 1,000,000 distinct clients (wrk with bench/distinct_clients.lua: every
request has its own X-Forwarded-For address; all traffic is loopback); then, idle only,
tollgate with make bench's T-routes configuration (1,000 routes) and its start-up time. The same
is measured for an Envoy without tollgate (router only) as the reference. The upstream is a separate Envoy, so
the measured process holds nothing but the gateway.

Environment: CLIENTS (default 1000000), SLOTS (client_throttle.slots, default 4096),
REFERENCE=0 (skip the router-only Envoy), ENVOY, TOLLGATE_WASM, BENCH_OUT.
"""

import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the shared Envoy/config helpers)

LUA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distinct_clients.lua")
WRK_THREADS = 2


def gateway_bootstrap(plugin_config, front_port, upstream_port):
    spec = bench.tollgate(plugin_config) if plugin_config is not None else {"filters": []}
    cfg = bench.bootstrap(spec, front_port, upstream_port, False, "")
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]
    hcm["use_remote_address"] = True
    hcm["xff_num_trusted_hops"] = 1
    return cfg


def memory(envoy):
    stats = json.loads(envoy.admin("/memory"))
    return {"rss_kib": envoy.rss_kib(),
            "heap_allocated_kib": int(stats["allocated"]) // 1024,
            "heap_size_kib": int(stats["heap_size"]) // 1024}


def completed(envoy):
    text = envoy.admin("/stats?filter=^http\\.ingress\\.downstream_rq_completed$")
    m = re.search(r"downstream_rq_completed: (\d+)", text)
    return int(m.group(1)) if m else 0


def clients(envoy, first, total, out_path):
    """Sends `total` requests, each from its own address. wrk's threads stop at their share,
    but wrk itself waits out its duration: it is interrupted (SIGINT, which makes it report)
    once Envoy has completed them all."""
    cmd = ["wrk", f"-t{WRK_THREADS}", "-c32", "-d900s", "-s", LUA,
           f"http://127.0.0.1:{envoy.port}/", "--", str(first), str(total), str(WRK_THREADS)]
    target = completed(envoy) + total
    t0 = time.time()
    with open(out_path, "w") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            while p.poll() is None and completed(envoy) < target:
                time.sleep(0.5)
            time.sleep(0.5)
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
            p.wait(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    text = open(out_path).read()
    m = re.search(r"DISTINCT answered=(\d+) non200=(\d+)", text)
    if not m:
        raise RuntimeError(f"wrk output without a count:\n{text}")
    answered, bad = int(m.group(1)), int(m.group(2))
    if answered < total or bad:
        raise RuntimeError(f"{answered} answers for {total} clients, {bad} not 200:\n{text}")
    return time.time() - t0


def measure(name, plugin_config, work, up_port, total):
    front = bench.free_port()
    envoy = bench.Envoy(name, gateway_bootstrap(plugin_config, front, up_port), work, None,
                        front, log_level="wasm:warning", concurrency=2)
    try:
        envoy.wait_ready()
        status, _, _ = bench.get(envoy.port, "/", {"X-Forwarded-For": "192.0.2.1"})
        if status != 200:
            raise RuntimeError(f"{name}: GET / answered {status}")
        time.sleep(2)
        rows = [("idle (started, 1 request)", memory(envoy))]
        warm = min(10_000, total)
        secs = clients(envoy, 0, warm, os.path.join(work, name, "wrk-warm.txt"))
        rows.append((f"after {warm:,} distinct clients", memory(envoy)))
        secs += clients(envoy, warm, total - warm, os.path.join(work, name, "wrk-all.txt"))
        time.sleep(2)
        rows.append((f"after {total:,} distinct clients", memory(envoy)))
        print(f"  {name}: {total:,} clients in {secs:.0f} s", flush=True)
        return rows
    finally:
        envoy.stop()


def measure_idle(name, plugin_config, work, up_port):
    """Start-up time and idle memory of a configuration: started, one request, 2 s."""
    front = bench.free_port()
    started = time.monotonic()
    envoy = bench.Envoy(name, gateway_bootstrap(plugin_config, front, up_port), work, None,
                        front, log_level="wasm:warning", concurrency=2)
    try:
        envoy.wait_ready()
        ready = time.monotonic() - started
        bench.get(envoy.port, "/", {"X-Forwarded-For": "192.0.2.1"})
        time.sleep(2)
        m = memory(envoy)
        print(f"  {name}: ready in {ready:.1f} s", flush=True)
        return [(f"idle (ready in {ready:.1f} s, 1 request)", m)]
    finally:
        envoy.stop()


def main():
    total = int(os.environ.get("CLIENTS", 1_000_000))
    slots = int(os.environ.get("SLOTS", 4096))
    reference = os.environ.get("REFERENCE", "1") != "0"
    if not shutil.which("wrk"):
        sys.exit("wrk not found (`make bench-memory` installs it)")
    if not os.path.exists(bench.WASM):
        sys.exit(f"{bench.WASM} missing (`make bench-memory` builds it)")
    out_dir, work = bench.fresh_run_dir("memory")
    plugin = {"stage": "bench",
              "client_throttle": {"by": "ip", "rate": 100, "burst": 100, "slots": slots}}
    info = bench.machine()
    print(f"tollgate memory: Envoy {bench.envoy_version()} --concurrency 2, tollgate "
          f"{json.dumps(plugin)}; {total:,} distinct X-Forwarded-For clients")
    up_port = bench.free_port()
    upstream = bench.Envoy("upstream", bench.upstream_only_bootstrap(up_port), work, None,
                           up_port)
    results = {}
    try:
        upstream.wait_ready()
        results["tollgate"] = measure("tollgate", plugin, work, up_port, total)
        # A large configuration: make bench's T-routes (1,000 routes); memory then follows
        # the routes and methods requests use (their metric series), not the table.
        routes = bench.MAIN_VARIANTS["T-routes"][1]()["tollgate"]
        results["tollgate, T with 1,000 routes"] = measure_idle("tollgate-routes", routes, work,
                                                               up_port)
        if reference:
            results["router only"] = measure("router-only", None, work, up_port, total)
    finally:
        upstream.stop()

    when = datetime.datetime.now(datetime.timezone.utc)
    lines = [f"{info['vcpus']} vCPU {info['cpu']}, {when:%Y-%m-%d %H:%M} UTC; Envoy "
             f"{bench.envoy_version()} `--concurrency 2`, V8; client_throttle by ip, "
             f"{slots} slots; RSS from /proc, heap from the admin /memory endpoint.",
             "",
             "| Envoy | when | RSS | heap allocated | heap size |",
             "|---|---|---:|---:|---:|"]
    for envoy_name, rows in results.items():
        for when_name, m in rows:
            lines.append(f"| {envoy_name} | {when_name} | {m['rss_kib'] / 1024:.1f} MiB | "
                         f"{m['heap_allocated_kib'] / 1024:.1f} MiB | "
                         f"{m['heap_size_kib'] / 1024:.1f} MiB |")
    bench.report(out_dir, "memory", "\n".join(lines),
                 {"machine": info, "clients": total, "slots": slots, "results": results})


if __name__ == "__main__":
    main()
