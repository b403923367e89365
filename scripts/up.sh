#!/usr/bin/env bash
# Start the stack and return once every service is healthy: scripts/up.sh cpu|gpu
# Fails fast, with the reason, when the encoder cannot start (a missing model, a GPU that is not there): compose's own
# `up --wait` would sit through the restart loop, since a container that keeps restarting is never "unhealthy" for long.
# Honours compose's environment (COMPOSE_PROJECT_NAME, ports, images: see the README's configuration table) and
# COMPOSE_DIR, where the compose files are (. by default; .build/replicas-N for `make up REPLICAS=N`).
set -euo pipefail
trap 'echo "scripts/up.sh: line $LINENO failed (exit $?)" >&2' ERR  # never fail without a word
cd "$(dirname "$0")/.."
variant=${1:-cpu}
timeout=${WAIT_TIMEOUT:-300}
dir=${COMPOSE_DIR:-.}
files=(-f "$dir/compose.yml")
if [ "$variant" = gpu ]; then
  scripts/check-gpu-runtime.sh
  files+=(-f "$dir/compose.gpu.yml")
fi
compose() { docker compose "${files[@]}" "$@"; }

explain_failure() {
  echo "The stack did not become healthy: $1" >&2
  # The executor prints one line saying what is wrong and what to do; show it first, then the context.
  mapfile -t encoders < <(compose config --services | grep '^encoder')
  compose logs --no-color "${encoders[@]}" 2>/dev/null | grep -m1 'cannot start:' | sed 's/^[^|]*| *//' >&2 || true
  echo "Last encoder log lines (make logs for all):" >&2
  compose logs --no-color --tail 8 "${encoders[@]}" >&2 || true
  exit 1
}

# `up -d` itself blocks until the gateway's dependency (the encoder) is healthy, so it runs in the background while
# this loop watches for the failure it would wait out.
up_started=$(date +%s%N)
compose up -d --remove-orphans --quiet-pull 2>&1 | grep -v -E ' (Creat|Start|Wait|Running|Recreat)' &
up_pid=$!
trap 'kill $up_pid 2>/dev/null || true' EXIT
services=$(compose config --services)
deadline=$(( $(date +%s) + timeout ))
while :; do
  unhealthy=0
  for service in $services; do
    # A failed look counts as "not ready yet" and the loop looks again: under `set -e` it would end this script
    # without a word (a CI run on a busy machine saw up.sh exit 1 with nothing printed and no container created).
    container=$(compose ps -a -q "$service" 2>/dev/null) || container=""
    [ -n "$container" ] || { unhealthy=1; continue; }
    read -r status health restarts started < <(docker inspect -f \
      '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.RestartCount}} {{.State.StartedAt}}' \
      "$container" 2>/dev/null) || { unhealthy=1; continue; }
    # A container being recreated can answer without its counts: not ready yet, as a failed look.
    [[ "$restarts" =~ ^[0-9]+$ ]] || { unhealthy=1; continue; }
    # A container left exited by an earlier `docker compose stop` keeps that exit until compose starts it again, which
    # for the gateway is only once the encoder is healthy: one last started before this `up` is "not started yet".
    if [ "$status" = exited ] && [ "$(date -d "$started" +%s%N)" -lt "$up_started" ]; then
      unhealthy=1; continue
    fi
    # A restart before becoming healthy is a crash loop (a container that restarted long ago and is healthy is not).
    if { [ "$restarts" -gt 0 ] && [ "$health" != healthy ]; } || [ "$status" = exited ] || [ "$status" = dead ]; then
      explain_failure "$service failed to start (container $status, restarted $restarts times; make down stops it)"
    fi
    [ "$health" = healthy ] || unhealthy=1
  done
  [ "$unhealthy" = 0 ] && { wait $up_pid || true; break; }
  [ "$(date +%s)" -lt "$deadline" ] || explain_failure "not healthy after ${timeout} s (WAIT_TIMEOUT)"
  sleep 2
done

cat <<MSG

Stack is up ($variant). HTTP on 127.0.0.1:${HTTP_PORT:-8080}, gRPC on 127.0.0.1:${GRPC_PORT:-50051}. Try:
  curl -X POST http://127.0.0.1:${HTTP_PORT:-8080}/encode -H 'Content-Type: application/json' -d '{"data":[{"text":"hello world"}]}'
MSG
