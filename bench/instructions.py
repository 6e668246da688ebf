#!/usr/bin/env python3
"""Instructions per call of the filter's hot path (benches/instructions.rs), counted by
callgrind: each case runs under `valgrind --tool=callgrind` with 0 and with N calls, and the
difference over N is printed. Repeatable to the instruction on one machine and toolchain, so a
change of a few percent shows, where the Envoy benchmark's noise hides several microseconds.

Environment: N (calls per case, default 2000), CASES (comma list, default all), BENCH_OUT
(output directory, default target/bench; writes instructions.md and instructions.json),
BASE (a git revision: the same cases are also counted at that revision, built in a worktree
under target/ with this harness copied in, and the table gets a column for it; the harness
must compile against that revision's library).
"""
import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the shared report writer)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(tree, target_dir):
    """Builds the harness in `tree`; returns the executable's path."""
    out = subprocess.run(
        ["cargo", "bench", "--profile", "instr", "--bench", "instructions", "--no-run",
         "--message-format", "json", "--target-dir", target_dir],
        cwd=tree, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "instructions" \
                and msg.get("executable"):
            return msg["executable"]
    sys.exit("instructions: the build named no executable")


HARNESS_TOML = """
[[bench]]
name = "instructions"
harness = false

[profile.instr]
inherits = "micro"
strip = false
debug = "line-tables-only"
"""


def copy_harness(tree):
    """Puts this checkout's harness into the worktree `tree` (an older revision may predate
    it or have another version of it), so that both columns count the same code paths."""
    shutil.copy(os.path.join(ROOT, "benches/instructions.rs"),
                os.path.join(tree, "benches/instructions.rs"))
    shutil.copytree(os.path.join(ROOT, "benches/common"), os.path.join(tree, "benches/common"),
                    dirs_exist_ok=True)
    toml = os.path.join(tree, "Cargo.toml")
    with open(toml) as f:
        text = f.read()
    if 'name = "instructions"' not in text:
        with open(toml, "a") as f:
            f.write(HARNESS_TOML)


def cases(exe):
    """The harness's cases, from its usage text: [(name, description)]."""
    p = subprocess.run([exe], capture_output=True, text=True)
    found = []
    for line in p.stderr.splitlines():
        m = re.match(r"^  (\S+)\s+(.*)$", line)
        if m:
            found.append((m.group(1), m.group(2)))
    if not found:
        sys.exit(f"instructions: {exe} listed no cases:\n{p.stderr}")
    return found


def count(exe, case, n):
    """Instructions of one run of the harness (whole process) with n calls of case."""
    p = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", exe, case, str(n)],
        capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"instructions: {case} {n} failed under valgrind:\n{p.stderr[-2000:]}")
    m = re.search(r"Collected : (\d+)", p.stderr)
    if not m:
        sys.exit(f"instructions: no count in callgrind's output for {case}:\n{p.stderr[-2000:]}")
    return int(m.group(1))


def per_call(exe, case, n):
    base = count(exe, case, 0)
    total = count(exe, case, n)
    return (total - base) / n


def main():
    if not shutil.which("valgrind"):
        sys.exit("instructions: valgrind is not installed (make bench-instructions installs it)")
    n = int(os.environ.get("N", 2000))
    out_dir = bench.output_dir()
    os.makedirs(out_dir, exist_ok=True)
    exe = build(ROOT, os.path.join(ROOT, "target"))
    listed = cases(exe)
    wanted = [c for c in os.environ.get("CASES", "").split(",") if c]
    unknown = set(wanted) - {name for name, _ in listed}
    if unknown:
        sys.exit(f"instructions: unknown cases {sorted(unknown)}; known: {[c for c, _ in listed]}")
    chosen = [(c, d) for c, d in listed if not wanted or c in wanted]

    base_rev = os.environ.get("BASE")
    base_exe = None
    if base_rev:
        tree = os.path.join(ROOT, "target/instructions-base")
        subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=ROOT,
                       capture_output=True)
        subprocess.run(["git", "worktree", "add", "--detach", "--force", tree, base_rev],
                       cwd=ROOT, check=True, capture_output=True)
        try:
            copy_harness(tree)
            base_exe = build(tree, os.path.join(ROOT, "target/instructions-base-target"))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=ROOT,
                           capture_output=True)

    rows = []
    for case, what in chosen:
        row = {"case": case, "what": what, "instructions": per_call(exe, case, n)}
        if base_exe:
            row["base"] = per_call(base_exe, case, n)
        rows.append(row)
        extra = f"  (base {row['base']:,.0f})" if base_exe else ""
        print(f"  {case:20} {row['instructions']:10,.0f} instructions per call{extra}",
              flush=True)

    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True).stdout.strip()
    lines = [f"Instructions per call (callgrind; {n} calls minus 0; {rustc}; opt-level \"z\", "
             f"native; commit {head}{', base ' + base_rev if base_rev else ''})", ""]
    if base_exe:
        lines += ["| case | what | instructions | base | change |", "|---|---|---:|---:|---:|"]
        for r in rows:
            change = (r["instructions"] - r["base"]) / r["base"] * 100 if r["base"] else 0
            lines.append(f"| {r['case']} | {r['what']} | {r['instructions']:,.0f} | "
                         f"{r['base']:,.0f} | {change:+.1f}% |")
    else:
        lines += ["| case | what | instructions |", "|---|---|---:|"]
        for r in rows:
            lines.append(f"| {r['case']} | {r['what']} | {r['instructions']:,.0f} |")
    bench.report(out_dir, "instructions", "\n".join(lines),
                 {"n": n, "commit": head, "base": base_rev, "rows": rows})


if __name__ == "__main__":
    main()
