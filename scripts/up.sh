#!/usr/bin/env bash
# Start the stack and return once it is healthy: scripts/up.sh cpu|gpu
# On failure, show why (the encoder's last log lines) instead of leaving a restart loop to guess at.
set -euo pipefail
cd "$(dirname "$0")/.."
variant=${1:-cpu}
files=(-f compose.yml)
if [ "$variant" = gpu ]; then
  scripts/check-gpu-runtime.sh
  files+=(-f compose.gpu.yml)
fi

if ! docker compose "${files[@]}" up -d --wait --wait-timeout "${WAIT_TIMEOUT:-300}"; then
  echo >&2; echo "The stack did not become healthy. Last encoder log lines:" >&2
  docker compose "${files[@]}" logs --no-color --tail 15 encoder >&2 || true
  exit 1
fi
port=${HTTP_PORT:-8080}
cat <<MSG

Stack is up ($variant). HTTP on 127.0.0.1:${port}, gRPC on 127.0.0.1:${GRPC_PORT:-50051}. Try:
  curl -X POST http://127.0.0.1:${port}/encode -H 'Content-Type: application/json' -d '{"data":[{"text":"hello world"}]}'
MSG
