# Shared by the interop scripts: build and start the emulator on a free loopback
# port, export WS_URL / HTTP_URL, and make sure it is stopped when the script exits.
# Usage: source tests/interop/lib.sh; start_emulator [extra emulator flags…]

INTEROP_DIR="target/interop"
mkdir -p "$INTEROP_DIR"

start_emulator() {
  cargo build --quiet --example emulator
  local out="$INTEROP_DIR/emulator-$$.out"
  local err="$INTEROP_DIR/emulator-$$.err"
  : > "$out"
  target/debug/examples/emulator --port 0 --latency-ms 50..300 "$@" < /dev/null > "$out" 2> "$err" &
  EMU_PID=$!
  trap 'stop_emulator' EXIT
  for _ in $(seq 1 200); do
    if [ "$(wc -l < "$out")" -ge 2 ]; then break; fi
    if ! kill -0 "$EMU_PID" 2>/dev/null; then
      echo "emulator exited early:"; cat "$err"; return 1
    fi
    sleep 0.05
  done
  WS_URL=$(sed -n 1p "$out")
  HTTP_URL=$(sed -n 2p "$out")
  if [ -z "$WS_URL" ]; then echo "emulator did not print its URL"; cat "$err"; return 1; fi
  export WS_URL HTTP_URL
  echo "emulator pid $EMU_PID at $WS_URL"
}

stop_emulator() {
  if [ -n "${EMU_PID:-}" ] && kill -0 "$EMU_PID" 2>/dev/null; then
    kill "$EMU_PID" 2>/dev/null || true
    wait "$EMU_PID" 2>/dev/null || true
  fi
  rm -f "$INTEROP_DIR/emulator-$$.out" "$INTEROP_DIR/emulator-$$.err"
}

# A venv at $1 with exactly package $2==$3 installed (reused when already there).
python_venv() {
  local venv="$1" pkg="$2" version="$3"
  if [ -x "$venv/bin/python" ] && \
     "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$pkg') != '$version')" 2>/dev/null; then
    return 0
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$pkg==$version"
}
