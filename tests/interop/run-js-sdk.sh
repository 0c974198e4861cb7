#!/usr/bin/env bash
# Interop: the official JS SDK @runware/sdk-js 1.3.2 against the emulator.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/interop/lib.sh
SDK_DIR="$INTEROP_DIR/js"
VERSION=1.3.2
if ! node -e "process.exit(require('./$SDK_DIR/node_modules/@runware/sdk-js/package.json').version === '$VERSION' ? 0 : 1)" 2>/dev/null; then
  rm -rf "$SDK_DIR"
  mkdir -p "$SDK_DIR"
  echo '{"name":"runware-interop","private":true}' > "$SDK_DIR/package.json"
  npm install --prefix "$SDK_DIR" --silent --no-audit --no-fund "@runware/sdk-js@$VERSION"
fi
start_emulator
timeout 180 node tests/interop/kontext_sdk_js.cjs "$WS_URL" "$SDK_DIR"
