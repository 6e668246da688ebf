#!/usr/bin/env python3
"""Envoy's instructions per request, variant by variant, counted by callgrind
(`make bench-envoy-instructions`; Python 3 standard library and valgrind).

`make bench` times Envoy's CPU per request, and on a shared VM its rounds spread by tens of
percent; changes of a few µs hide in that. This counts instead: one Envoy (`--concurrency 1`)
runs under `valgrind --tool=callgrind` with the variants of `make bench` as listeners (the same
configurations, built by bench/bench.py), and for each variant the counters are zeroed, N
requests are sent one after another on a keep-alive connection, and the counters are dumped:
the process's instructions over N. V8's compiled Wasm runs on valgrind's CPU too, so tollgate's
code and Envoy's work for its host calls are both counted. Repeats to within about 0.5%.

What it does not see: time in the kernel (the same syscalls in every variant here: the access
log lines go to files Envoy buffers), and what an instruction costs (cache misses, the stalls
of V8's calls in and out of the VM). So it ranks and sizes changes to tollgate's work per
request; `make bench` stays the measure of time.

Environment: VARIANTS (comma list; default A,N,T,T-empty,T-envoylog; the probe's P-* variants
of bench-hostcalls too, with REPS calls per request: A,P-none,P-mimic,T splits T's cost into
the VM's floor, its host calls and tollgate's own code), EXTRA_WASM=label=path,...
(other builds of the module with T's configuration, or EXTRA_BASE's, as in bench.py; valgrind
holds about four Wasm VMs), N (requests per round, default 500), ROUNDS (default 2, interleaved; the table gives
the median), BENCH_OUT (default target/bench: envoy-instructions.md and .json), KEEP=1 (keep
each round's callgrind profile as run-envoy-instructions/<variant>.round<r>.callgrind, for
`callgrind_annotate`; the PyPI Envoy is stripped, so only an Envoy built with symbols names its
functions there).
"""
import datetime
import glob
import http.client
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (bench/bench.py: the variants and the Envoy configuration)

DEFAULT_VARIANTS = "A,N,T,T-empty,T-envoylog"


def valgrind_pid(launcher_pid):
    """The tool process under Debian's `valgrind` wrapper script (its child), or the launcher."""
    for _ in range(50):
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                with open(stat) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == launcher_pid:
                return int(stat.split("/")[2])
        time.sleep(0.1)
    return launcher_pid


def send(port, n, preflight=False):
    """n GETs of bench.PATH as wrk sends them (or, for a preflight variant, CORS preflights),
    one after another on one connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    method = "OPTIONS" if preflight else "GET"
    headers = {"Origin": bench.ORIGIN, "User-Agent": "tollgate-bench"}
    if preflight:
        headers.update(bench.PREFLIGHT_HEADERS)
    try:
        for _ in range(n):
            conn.request(method, bench.PATH, headers=headers)
            r = conn.getresponse()
            r.read()
            if r.status not in ((200, 204) if preflight else (200,)):
                raise RuntimeError(f"port {port}: {method} {bench.PATH} answered {r.status}")
    finally:
        conn.close()


def control(pid, flag):
    subprocess.run(["callgrind_control", flag, str(pid)], check=True, capture_output=True)


def dumped_total(prefix, seen, keep_as=None):
    """The instruction total of the newest dump file (waits for callgrind to write it); the
    file is removed, or renamed to `keep_as`."""
    for _ in range(600):
        files = [f for f in glob.glob(prefix + ".*") if f not in seen]
        for path in files:
            with open(path) as f:
                for line in f:
                    if line.startswith(("totals:", "summary:")):
                        seen.add(path)
                        if keep_as:
                            os.replace(path, keep_as)
                        else:
                            os.remove(path)
                        return int(line.split()[1])
        time.sleep(0.1)
    raise RuntimeError("callgrind wrote no dump")


def main():
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found (make bench-envoy-instructions installs valgrind)")
    if not os.path.exists(bench.WASM):
        sys.exit(f"{bench.WASM} missing (make bench-envoy-instructions builds it)")
    n = int(os.environ.get("N", 500))
    rounds = int(os.environ.get("ROUNDS", 2))
    wanted = os.environ.get("VARIANTS", DEFAULT_VARIANTS).split(",")
    variants = {}
    known = {**bench.HOSTCALL_VARIANTS, **bench.MAIN_VARIANTS}
    for name in wanted:
        if name not in known:
            sys.exit(f"unknown variant {name}; known: {', '.join(known)}")
        variants[name] = known[name]
    variants.update(bench.extra_wasm_variants())

    out_dir, work = bench.fresh_run_dir("envoy-instructions")
    prefix = os.path.join(work, "callgrind.out")
    specs = {}
    for name, (_, build) in variants.items():
        spec = bench.own_vms(build(), name)
        spec.setdefault("base", name)
        specs[name] = spec
    fronts = [(name, spec, bench.free_port(), os.path.join(work, name, "access.log"))
              for name, spec in specs.items()]
    wrapper = ["valgrind", "--tool=callgrind", "--smc-check=all-non-file", "--dump-instr=no",
               f"--callgrind-out-file={prefix}"]
    print(f"tollgate Envoy instructions: Envoy {bench.envoy_version()} --concurrency 1 under "
          f"callgrind; {len(fronts)} variants, {rounds} rounds x {n} requests, interleaved",
          flush=True)
    envoy = bench.Envoy("envoy", bench.bootstrap_fronts(fronts, bench.free_port(), True), work,
                        None, None, wrapper=wrapper)
    started = datetime.datetime.now(datetime.timezone.utc)
    results = {name: [] for name in variants}
    try:
        fronts_by_name = {}
        for name, _, port, _ in fronts:
            fronts_by_name[name] = bench.Front(name, envoy, port, work)
        envoy.wait_ready(timeout=900)  # V8 compiles every module on valgrind's CPU: minutes
        pid = valgrind_pid(envoy.pid)
        for name, front in fronts_by_name.items():
            bench.sanity_check(name, front, specs[name])
            # Warm: V8's code, Envoy's connection pools.
            send(front.port, 20, specs[name].get("preflight", False))
        seen = set()
        names = list(variants)
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                control(pid, "-z")
                t0 = time.time()
                send(fronts_by_name[name].port, n, specs[name].get("preflight", False))
                control(pid, "-d")
                keep = (os.path.join(work, f"{name}.round{r + 1}.callgrind")
                        if os.environ.get("KEEP", "") not in ("", "0") else None)
                per_request = dumped_total(prefix, seen, keep) / n
                results[name].append(per_request)
                print(f"  round {r + 1}/{rounds} {name:<11} {per_request:>10,.0f} instructions "
                      f"per request ({time.time() - t0:.1f} s)", flush=True)
    finally:
        envoy.stop()

    summary = {name: bench.median(xs) for name, xs in results.items()}
    a, nat = summary.get("A"), summary.get("N")
    lines = ["| variant | instructions per request | vs A | vs N | +k vs A | +k vs N |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, (desc, _) in variants.items():
        x = summary[name]
        cells = [f"{x:,.0f}",
                 f"{a / x:.2f}x" if a else "-", f"{nat / x:.2f}x" if nat else "-",
                 f"{(x - a) / 1000:+.1f}" if a else "-", f"{(x - nat) / 1000:+.1f}" if nat else "-"]
        lines.append(f"| {name}: {desc} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    spread = max((max(xs) - min(xs)) * 100 / bench.median(xs) for xs in results.values())
    finished = datetime.datetime.now(datetime.timezone.utc)
    header = (f"Envoy {bench.envoy_version()} under callgrind (`--concurrency 1`, V8), "
              f"{finished:%Y-%m-%d %H:%M} UTC; `GET {bench.PATH}` with `Origin`, keep-alive, one "
              f"request at a time; {rounds} interleaved rounds x {n} requests, medians; the "
              f"whole process's instructions over the requests (vs A, vs N: the reference's "
              f"count over the variant's, as a throughput ratio would read; +k: thousands of "
              f"instructions more per request). Largest spread between rounds of one variant: "
              f"{spread:.1f}%.")
    bench.report(out_dir, "envoy-instructions", header + "\n\n" + table,
                 {"started": started.isoformat(), "finished": finished.isoformat(), "n": n,
                  "rounds": rounds, "summary": summary, "results": results})


if __name__ == "__main__":
    main()
