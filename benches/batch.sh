#!/usr/bin/env bash
# The batch against the engine, whole processes (BENCHMARKS.md, "The batch"):
# CPU per task of `runware batch`, of the library and of the bare loop (the benches'
# baseline client) against one zero-latency server that sends each result in its
# own frame, in a process of its own; start-up included (user + sys from wait4).
# Also: runware batch on the embedded emulator at zero latency (tasks/s), and
# process start to first task on the wire.
#
#   bash benches/batch.sh [RUNS]      # default 3 runs per figure (interleaved), median
#
# With RUNWARE_BATCH_BEFORE=/path/to/an/older/runware, that binary's batch runs in
# the same interleaving (a same-run A/B of a change; build the older one from a
# worktree with its own CARGO_TARGET_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
cargo build --release --quiet -p runware-cli
cargo build --release --quiet --example batch_bench
target="${CARGO_TARGET_DIR:-target}/release"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$target/examples/batch_bench" "$target/runware" "$work" "$runs" "${RUNWARE_BATCH_BEFORE:-}" <<'PY'
import json, os, statistics, subprocess, sys, threading, time
peer, runware, work, runs, before = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
inflight = "500"

server = subprocess.Popen([peer, "serve"], stdout=subprocess.PIPE, text=True)
url = server.stdout.readline().strip()
first_tasks = []
def follow():
    for line in server.stdout:
        if line.startswith("first-task "):
            first_tasks.append(int(line.split()[1]))
threading.Thread(target=follow, daemon=True).start()

def lines(n):
    path = f"{work}/tasks-{n}.jsonl"
    if not os.path.exists(path):
        with open(path, "w") as f:
            for i in range(n):
                f.write(json.dumps({"positivePrompt": f"Repaint the courtyard at golden hour, variant {i}", "size": "1:1"}) + "\n")
    return path

def run(cmd, env=None):
    """CPU seconds (user + sys of the process, from wait4) and wall seconds."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        sys.exit(f"{cmd} failed: {status}")
    return ru.ru_utime + ru.ru_stime, wall

def batch(n, target_url=url, env=None, binary=None):
    results = f"{work}/r.jsonl"
    for p in (results,):
        if os.path.exists(p):
            os.remove(p)
    cmd = [binary or runware]
    if target_url:
        cmd += ["--url", target_url, "--api-key", "bench-key"]
    cmd += ["batch", lines(n), "--no-download", "--concurrency", inflight, "--results", results, "--quiet"]
    return run(cmd, env)

print(f"server: one result per frame, zero latency, own process; {inflight} in flight; median of {runs} "
      f"interleaved runs; {os.cpu_count()} cores, {os.uname().sysname} {os.uname().release}")
print()
print("| tasks | bare loop CPU/task (µs) | library (µs) | library / bare | jobs (µs) | jobs / library | runware batch (µs) | batch / bare | batch wall tasks/s |")
print("|---|---|---|---|---|---|---|---|---|")
ab = []
for n in (2000, 20000):
    cpu = {m: [] for m in ("bare", "library", "jobs", "batch")}
    wall = []
    for _ in range(runs):
        for m in ("bare", "library", "jobs"):
            cpu[m].append(run([peer, m, url, str(n), inflight])[0])
        c, w = batch(n)
        cpu["batch"].append(c)
        wall.append(w)
        if before:
            cpu.setdefault("before", []).append(batch(n, binary=before)[0])
    med = {m: statistics.median(v) for m, v in cpu.items()}
    us = lambda s: s / n * 1e6
    if before:
        ab.append(f"{n:,} lines: the older runware batch {us(med['before']):.1f} µs/task, this one "
                  f"{us(med['batch']):.1f} µs/task = {med['batch'] / med['before']:.2f}× (same run, interleaved)")
    print(f"| {n:,} | {us(med['bare']):.1f} | {us(med['library']):.1f} | {med['library'] / med['bare']:.2f}× "
          f"| {us(med['jobs']):.1f} | {med['jobs'] / med['library']:.2f}× "
          f"| {us(med['batch']):.1f} | {med['batch'] / med['bare']:.2f}× | {n / statistics.median(wall):,.0f} |")

for line in ab:
    print(line)

# Start to first task on the wire: one line, the process spawned -> the server's
# clock when that connection's first task arrived (same machine, same clock).
starts = []
for _ in range(max(runs, 5) * 2):
    before = len(first_tasks)
    t0 = time.time_ns()
    batch(1)
    for _ in range(200):
        if len(first_tasks) > before:
            break
        time.sleep(0.005)
    starts.append((first_tasks[-1] - t0) / 1e6)
print()
print(f"process start to first task on the wire (1 line): median {statistics.median(starts):.2f} ms, "
      f"min {min(starts):.2f} ms, max {max(starts):.2f} ms ({len(starts)} runs)")

# The embedded emulator at zero latency (the key-less default), 20,000 lines.
env = dict(os.environ, RUNWARE_EMULATOR_LATENCY="0ms")
env.pop("RUNWARE_API_KEY", None)
walls = [batch(20000, target_url=None, env=env)[1] for _ in range(runs)]
print(f"runware batch on the embedded emulator at zero latency, 20,000 lines: "
      f"{20000 / statistics.median(walls):,.0f} tasks/s (whole process wall, median of {runs})")
server.kill()
PY
