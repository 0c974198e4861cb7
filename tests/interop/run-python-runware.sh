#!/usr/bin/env bash
# Interop: the official Python SDK `runware` 0.5.24 against the emulator.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/interop/lib.sh
VENV="$INTEROP_DIR/py-runware"
python_venv "$VENV" runware 0.5.24
start_emulator
timeout 120 "$VENV/bin/python" tests/interop/kontext_runware.py "$WS_URL"
