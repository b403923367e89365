#!/usr/bin/env bash
# One request through the running stack's HTTP gateway; fails unless a 384-dim embedding comes back.
set -euo pipefail
port=${HTTP_PORT:-8080}
reply=$(curl -sS --max-time 30 -X POST "http://127.0.0.1:${port}/encode" \
  -H 'Content-Type: application/json' -d '{"data":[{"text":"hello world"}]}')
dims=$(printf '%s' "$reply" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"][0]["embedding"]))') || {
  echo "smoke: unexpected reply: ${reply:0:300}" >&2; exit 1; }
[ "$dims" = 384 ] || { echo "smoke: expected 384 dims, got $dims" >&2; exit 1; }
echo "smoke: ok, POST /encode returned a ${dims}-dim embedding"
