#!/usr/bin/env bash
# Whole-process figures for references sent once (BENCHMARKS.md, "References"):
# `runware batch` with 1,000 lines in flight that share one 1 MiB reference image,
# uploaded once vs inline (--inline-references), with and without a reconnect
# (the emulator drops every connection 2 s in). Reports the batch's peak RSS
# (/usr/bin/time) and the bytes the emulator received.
#
#   bash benches/references.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p runware-cli
bin="${CARGO_TARGET_DIR:-target}/release/runware"
work=$(mktemp -d)
trap 'rm -rf "$work"; kill $(jobs -p) 2>/dev/null || true' EXIT

python3 - "$work" <<'PY'
import json, os, struct, sys, zlib
work = sys.argv[1]
w = h = 600
rows = b"".join(b"\x00" + os.urandom(w * 3) for _ in range(h))
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) \
    + chunk(b"IDAT", zlib.compress(rows, 1)) + chunk(b"IEND", b"")
open(os.path.join(work, "ref.png"), "wb").write(png)
with open(os.path.join(work, "tasks.jsonl"), "w") as f:
    for i in range(1000):
        f.write(json.dumps({"positivePrompt": f"shared reference edit {i}", "size": "1:1",
                            "inputs": {"referenceImages": ["ref.png"]}}) + "\n")
print(f"reference: {len(png)} bytes")
PY

echo "| references | reconnect | batch peak RSS (MiB) | bytes received by the server (MiB) | uploads | wall (s) |"
echo "|---|---|---|---|---|---|"
for mode in uploaded inline; do
  for drop in no yes; do
    serve_args=(serve --port 0 --latency 4s --api-key bench-key --render-divisor 16 --json)
    [ "$drop" = yes ] && serve_args+=(--drop-every 2s)
    "$bin" "${serve_args[@]}" > "$work/serve.json" 2> "$work/serve.err" &
    serve_pid=$!
    for _ in $(seq 50); do [ -s "$work/serve.json" ] && break; sleep 0.1; done
    ws=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["wsUrl"])' "$work/serve.json")
    http=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["httpUrl"])' "$work/serve.json")
    flags=(--no-download --concurrency 1000 --results "$work/r-$mode-$drop.jsonl" --quiet)
    [ "$mode" = inline ] && flags+=(--inline-references)
    start=$(date +%s.%N)
    /usr/bin/time -f "%M" -o "$work/rss" "$bin" --url "$ws" --api-key bench-key batch "$work/tasks.jsonl" "${flags[@]}" > /dev/null
    end=$(date +%s.%N)
    stats=$(python3 -c 'import json,sys,urllib.request; print(urllib.request.urlopen(sys.argv[1] + "/stats").read().decode())' "$http")
    python3 - "$mode" "$drop" "$(cat "$work/rss")" "$stats" "$start" "$end" <<'PY'
import json, sys
mode, drop, rss_kib, stats, start, end = sys.argv[1:]
s = json.loads(stats)
get = lambda k: s.get(k, s.get(''.join(w.title() if i else w for i, w in enumerate(k.split('_'))), 0))
print(f"| {mode} | {drop} | {int(rss_kib) / 1024:.0f} | {get('bytes_in') / 2**20:.1f} | {get('uploads')} | {float(end) - float(start):.1f} |")
PY
    kill "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
  done
done
