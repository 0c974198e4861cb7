#!/usr/bin/env bash
# Whole-process CPU per task of `runware batch` against the bare loop and the
# library, on one zero-latency server that sends each result in its own frame
# (BENCHMARKS.md, "The batch"). Every process is timed with /usr/bin/time (user +
# sys, start-up included); the server runs in a process of its own.
#
#   bash benches/batch.sh [RUNS]      # default 3 runs per figure, median reported
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
cargo build --release --quiet -p runware-cli
cargo build --release --quiet --example batch_bench
target="${CARGO_TARGET_DIR:-target}/release"
bin="$target/runware"
peer="$target/examples/batch_bench"
work=$(mktemp -d)
trap 'rm -rf "$work"; kill $(jobs -p) 2>/dev/null || true' EXIT

"$peer" serve > "$work/url" &
for _ in $(seq 100); do [ -s "$work/url" ] && break; sleep 0.05; done
url=$(cat "$work/url")
inflight=500

for n in 2000 20000; do
  python3 - "$work/tasks-$n.jsonl" "$n" <<'PY'
import json, sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    for i in range(n):
        f.write(json.dumps({"positivePrompt": f"Repaint the courtyard at golden hour, variant {i}", "size": "1:1"}) + "\n")
PY
done

python3 - "$peer" "$bin" "$url" "$work" "$inflight" "$runs" <<'PY'
import os, subprocess, sys, time, statistics
peer, bin_, url, work, inflight, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])

def run(cmd):
    """CPU seconds (user + sys, from wait4's rusage: nanosecond-based) and wall seconds."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        sys.exit(f"{cmd[0]} failed: {status}")
    return ru.ru_utime + ru.ru_stime, wall

def cmd(mode, n):
    if mode in ("bare", "library"):
        return [peer, mode, url, str(n), inflight]
    results = f"{work}/r.jsonl"
    if os.path.exists(results):
        os.remove(results)
    return [bin_, "--url", url, "--api-key", "bench-key", "batch", f"{work}/tasks-{n}.jsonl",
            "--no-download", "--concurrency", inflight, "--results", results, "--quiet"]

print(f"server: one result per frame, zero latency; {inflight} in flight; median of {runs} runs, "
      f"interleaved; machine: {os.cpu_count()} cores, {os.uname().sysname} {os.uname().release}")
print()
print("| tasks | bare loop CPU/task (µs) | library (µs) | library / bare | runware batch (µs) | batch / bare | batch tasks/s |")
print("|---|---|---|---|---|---|---|")
for n in (2000, 20000):
    cpu = {m: [] for m in ("bare", "library", "batch")}
    wall = {m: [] for m in cpu}
    for _ in range(runs):
        for m in cpu:
            c, w = run(cmd(m, n))
            cpu[m].append(c)
            wall[m].append(w)
    med = {m: statistics.median(v) for m, v in cpu.items()}
    us = lambda s: s / n * 1e6
    print(f"| {n:,} | {us(med['bare']):.1f} | {us(med['library']):.1f} | {med['library'] / med['bare']:.2f}× "
          f"| {us(med['batch']):.1f} | {med['batch'] / med['bare']:.2f}× | {n / statistics.median(wall['batch']):,.0f} |")
PY
