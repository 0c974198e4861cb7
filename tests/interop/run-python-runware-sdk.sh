#!/usr/bin/env bash
# Interop: the official Python SDK `runware-sdk` 1.8.0 (sync and async delivery).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/interop/lib.sh
VENV="$INTEROP_DIR/py-runware-sdk"
python_venv "$VENV" runware-sdk 1.8.0
start_emulator
timeout 180 "$VENV/bin/python" tests/interop/kontext_runware_sdk.py "$WS_URL" "$HTTP_URL"
