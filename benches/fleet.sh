#!/usr/bin/env bash
# Whole-process figures for the fleet (BENCHMARKS.md, "Fleet"): tasks/s with 1, 2 and 4
# `runware worker` processes (64 in flight each, --no-download) against `runware serve` at
# 1 s per task, sharing one throwaway PostgreSQL cluster (default settings, fsync on,
# pg_stat_statements loaded); and what the database costs per task: statements and
# transactions (pg_stat_statements, pg_stat_database) and µs of worker CPU (user+sys from
# /usr/bin/time) against a local `runware batch` of the same lines in the same run.
#
#   bash benches/fleet.sh            # ROUNDS=15: each worker's share is 15 × 64 tasks
#
# Throughput is measured on the database's clock: from the first task's first delivery to
# the last task's finish (start-up and the idle exit are not counted). Latency-bound: an
# ideal worker finishes 64 tasks/s, so W workers ideally do 64·W.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-15}
cargo build --release --quiet -p runware-cli
bin="$(pwd)/${CARGO_TARGET_DIR:-target}/release/runware"
work=$(mktemp -d)
chmod 755 "$work"
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$pg_bin/initdb" ] || { echo "PostgreSQL's initdb is needed (apt-get install postgresql)"; exit 1; }
as_pg=()
[ "$(id -u)" = 0 ] && { chown postgres "$work"; as_pg=(runuser -u postgres --); }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/data" stop -m fast > /dev/null 2>&1 || true
  kill $(jobs -p) 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"${as_pg[@]}" "$pg_bin/initdb" -A trust -U postgres -D "$work/data" > /dev/null
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/data" -l "$work/pg.log" -w start \
  -o "-p $port -k $work -c listen_addresses=127.0.0.1 -c max_connections=50 -c shared_preload_libraries=pg_stat_statements" > /dev/null
queue="postgres://postgres@127.0.0.1:$port/postgres"
psql() { "$pg_bin/psql" -Atq -d "$queue" -c "$1"; }
psql "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" > /dev/null

"$bin" serve --port 0 --latency 1s --api-key bench-key --render-divisor 16 --json > "$work/serve.json" 2> "$work/serve.err" &
for _ in $(seq 100); do [ -s "$work/serve.json" ] && break; sleep 0.1; done
ws=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["wsUrl"])' "$work/serve.json")
export RUNWARE_API_KEY=bench-key

lines() { # lines N TAG > file
  python3 - "$1" "$2" <<'PY'
import json, sys
n, tag = int(sys.argv[1]), sys.argv[2]
for i in range(n):
    print(json.dumps({"positivePrompt": f"fleet bench {tag} {i}: repaint at dusk", "size": "1:1"}))
PY
}
cpu_us() { # sum of user+sys seconds in the given /usr/bin/time files, as µs
  cat "$@" | awk '{ s += $1 + $2 } END { printf "%.0f", s * 1e6 }'
}

# The baseline: one local batch of one worker's share, no database.
n1=$((64 * ROUNDS))
lines "$n1" local > "$work/local.jsonl"
/usr/bin/time -f "%U %S" -o "$work/local.time" "$bin" --url "$ws" batch "$work/local.jsonl" \
  --no-download --concurrency 64 --results "$work/local.results.jsonl" --quiet > /dev/null
local_us=$(( $(cpu_us "$work/local.time") / n1 ))

echo "| workers | tasks | span (s) | tasks/s | × 1 worker | of linear | statements/task | transactions/task | worker CPU µs/task | over local batch |"
echo "|---|---|---|---|---|---|---|---|---|---|"
base=""
for w in 1 2 4; do
  n=$((64 * w * ROUNDS))
  lines "$n" "w$w" > "$work/w$w.jsonl"
  id=$("$bin" --url "$ws" batch submit "$work/w$w.jsonl" --queue "$queue" --name "bench-$w" 2> /dev/null)
  psql "SELECT pg_stat_statements_reset()" > /dev/null
  x0=$(psql "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'postgres'")
  pids=()
  for i in $(seq "$w"); do
    /usr/bin/time -f "%U %S" -o "$work/w$w-$i.time" "$bin" --url "$ws" worker --queue "$queue" \
      --concurrency 64 --no-download --exit-when-idle > /dev/null 2> "$work/w$w-$i.err" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  x1=$(psql "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'postgres'")
  calls=$(psql "SELECT sum(calls) FROM pg_stat_statements WHERE query NOT ILIKE '%pg_stat%'")
  read -r done span < <(psql "SELECT count(*) FILTER (WHERE state = 'done'),
      extract(epoch FROM max(finished_at) - min(first_sent_at)) FROM runware_fleet_tasks WHERE batch_id = '$id'" | tr '|' ' ')
  [ "$done" = "$n" ] || { echo "batch bench-$w: only $done of $n done"; cat "$work"/w$w-*.err; exit 1; }
  cpu=$(( $(cpu_us "$work"/w$w-*.time) / n ))
  python3 - "$w" "$n" "$span" "$calls" "$((x1 - x0))" "$cpu" "$local_us" "${base:-}" <<'PY'
import sys
w, n, span, calls, xacts, cpu, local, base = sys.argv[1:]
w, n, span, calls, xacts, cpu, local = int(w), int(n), float(span), int(calls), int(xacts), int(cpu), int(local)
rate = n / span
b = float(base) if base else rate
print(f"| {w} | {n} | {span:.1f} | {rate:.1f} | {rate / b:.2f} | {rate / (b * w):.2f} | "
      f"{calls / n:.2f} | {xacts / n:.2f} | {cpu} | +{cpu - local} |")
PY
  [ -z "$base" ] && base=$(python3 -c "print($n / $span)")
done
echo
echo "local batch (no database), same engine and emulator: $local_us µs of CPU per task"
