#!/usr/bin/env bash
# Deploy swarm.yml to the swarm this Docker engine belongs to, and return once every task is running and healthy:
#   API_KEY=... scripts/swarm-up.sh            (make swarm-up; REPLICAS=N encoder tasks, spread over the nodes)
# An engine in no swarm becomes a single-node one first (docker swarm init), saying so. Swarm publishes the HTTP port
# on every interface of the gateway's node, so the stack does not deploy without an API key: API_KEY becomes the swarm
# secret the gateway reads (API_KEY_SECRET names it), and the port speaks HTTPS: TLS_CERT_FILE / TLS_KEY_FILE (PEM)
# become secrets too, or, without them, a self-signed certificate for this host is generated (its certificate, for
# clients' --cacert, is written to .build/swarm-tls/cert.pem). The images must be on every node (one host: they are; several:
# push them to your registry and set ENCODER_IMAGE / GATEWAY_IMAGE), and so must MODEL_CACHE_DIR, filled by
# `make model` (default ~/.cache/huggingface; an absolute path, the same on every node that can run an encoder).
set -euo pipefail
trap 'echo "scripts/swarm-up.sh: line $LINENO failed (exit $?)" >&2' ERR
cd "$(dirname "$0")/.."
stack=${STACK_NAME:-sentence-encoder}
secret=${API_KEY_SECRET:-sentence_encoder_api_key}
timeout=${WAIT_TIMEOUT:-300}
log() { printf '[swarm-up] %s\n' "$*" >&2; }

# The key from a file (API_KEY_FILE), as compose takes it, or from API_KEY.
if [ -n "${API_KEY_FILE:-}" ]; then
  [ -z "${API_KEY:-}" ] || { log "set one of API_KEY and API_KEY_FILE, not both"; exit 1; }
  [ -r "$API_KEY_FILE" ] || { log "API_KEY_FILE=$API_KEY_FILE cannot be read"; exit 1; }
  API_KEY=$(tr -d '[:space:]' < "$API_KEY_FILE")
fi
# The key guards a port open to the network: a short or placeholder one is refused before anything changes.
MIN_KEY_LENGTH=32
if [ -n "${API_KEY:-}" ] && [ "${#API_KEY}" -lt "$MIN_KEY_LENGTH" ]; then
  log "API_KEY has ${#API_KEY} characters: use at least $MIN_KEY_LENGTH, e.g. API_KEY=\$(openssl rand -hex 32)"
  exit 1
fi
case "${ENCRYPT_OVERLAY:-0}" in
  0|1) ;;
  *) log "ENCRYPT_OVERLAY is 0 or 1, not '$ENCRYPT_OVERLAY'"; exit 1 ;;
esac
if [ -n "${TLS_CERT_FILE:-}${TLS_KEY_FILE:-}" ]; then
  for file in "${TLS_CERT_FILE:-}" "${TLS_KEY_FILE:-}"; do
    [ -n "$file" ] && [ -r "$file" ] || { log "set both TLS_CERT_FILE and TLS_KEY_FILE to readable PEM files"; exit 1; }
  done
fi

in_swarm=0; [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" = active ] && in_swarm=1
have_secret=0; [ "$in_swarm" = 1 ] && docker secret inspect "$secret" >/dev/null 2>&1 && have_secret=1
# Refuse before changing anything.
if [ "$have_secret" = 0 ] && [ -z "${API_KEY:-}" ]; then
  log "set API_KEY: in a swarm the HTTP port is reachable from the network, so it needs a key (README, Beyond one host)"
  exit 1
fi
if [ "$in_swarm" = 0 ]; then
  log "this engine is in no swarm: making it a single-node swarm (docker swarm init; docker swarm leave --force undoes it)"
  docker swarm init --advertise-addr "${SWARM_ADVERTISE_ADDR:-127.0.0.1}" >/dev/null
fi
if [ "$have_secret" = 0 ]; then
  printf '%s' "$API_KEY" | docker secret create "$secret" - >/dev/null
  log "stored API_KEY as the swarm secret $secret"
elif [ -n "${API_KEY:-}" ]; then
  log "the swarm secret $secret exists and is kept (secrets cannot change: make swarm-down removes it)"
fi

tls_cert_secret=${TLS_CERT_SECRET:-sentence_encoder_tls_cert}
tls_key_secret=${TLS_KEY_SECRET:-sentence_encoder_tls_key}
if ! docker secret inspect "$tls_cert_secret" >/dev/null 2>&1 || ! docker secret inspect "$tls_key_secret" >/dev/null 2>&1; then
  docker secret rm "$tls_cert_secret" "$tls_key_secret" >/dev/null 2>&1 || true  # a pair, or none
  if [ -n "${TLS_CERT_FILE:-}" ]; then  # both, readable: checked above
    cert=$TLS_CERT_FILE; key=$TLS_KEY_FILE
  else
    command -v openssl >/dev/null || { log "openssl is needed to make a certificate: install it, or set TLS_CERT_FILE and TLS_KEY_FILE"; exit 1; }
    mkdir -p .build/swarm-tls
    key=$(mktemp); cert=.build/swarm-tls/cert.pem
    trap 'rm -f "$key"' EXIT
    names="DNS:localhost,DNS:$(hostname),IP:127.0.0.1"
    advertised=${SWARM_ADVERTISE_ADDR:-127.0.0.1}; advertised=${advertised%:[0-9]*}  # an address, maybe with a port
    if [ "$advertised" != 127.0.0.1 ] && [[ $advertised =~ ^[0-9.]+$ ]]; then names="$names,IP:$advertised"; fi
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=$(hostname)" -addext "subjectAltName=$names" \
      -keyout "$key" -out "$cert" 2>"$key.log" || { log "openssl could not make a certificate:"; cat "$key.log" >&2; exit 1; }
    rm -f "$key.log"
    log "generated a self-signed certificate for $names (1 year): clients trust it with --cacert $cert"
  fi
  docker secret create "$tls_cert_secret" "$cert" >/dev/null
  docker secret create "$tls_key_secret" "$key" >/dev/null
  log "stored the HTTPS certificate and key as the swarm secrets $tls_cert_secret, $tls_key_secret"
  cacert=$cert
else
  cacert=${TLS_CERT_FILE:-.build/swarm-tls/cert.pem}
  log "the swarm secrets $tls_cert_secret, $tls_key_secret exist and are kept (make swarm-down removes them)"
fi

export MODEL_CACHE_DIR=${MODEL_CACHE_DIR:-$HOME/.cache/huggingface}
# Encoder tasks per node: unless set, the fewest that leave room for a rolling update's extra task (it starts before
# the old one stops): 1 when there are more nodes than replicas, so the replicas land on different nodes.
if [ -z "${ENCODER_REPLICAS_PER_NODE:-}" ]; then
  nodes=$(docker node ls --format '{{.Status}} {{.Availability}}' | grep -c '^Ready Active' || true)
  [ "$nodes" -ge 1 ] || nodes=1
  wanted=${REPLICAS:-$(awk '/^ *replicas: \$\{REPLICAS:-/ { gsub(/[^0-9]/, ""); print; exit }' swarm.yml)}
  export ENCODER_REPLICAS_PER_NODE=$(( (wanted + nodes) / nodes ))  # ceil((replicas + 1) / nodes)
fi
deployed_at=$(date +%s)
stack_files=(-c swarm.yml)
# ENCRYPT_OVERLAY=1: IPsec (ESP) between the nodes on the overlay, for the gateway-encoder hop and any container
# attached to it. Off by default: it needs ESP in every node's kernel (the CI nodes' kernel has none: the overlay
# would carry nothing), and it applies when the network is created (make swarm-down first to change it).
if [ "${ENCRYPT_OVERLAY:-0}" = 1 ]; then
  stack_files+=(-c swarm.encrypted.yml); log "the overlay network is encrypted (ENCRYPT_OVERLAY=1)"
fi
# A deploy keeps an existing network as it is: a change of ENCRYPT_OVERLAY would be silently ignored.
network="${stack}_jina-network"
existing=$(docker network inspect -f '{{.Name}} {{range $name, $value := .Options}}{{$name}} {{end}}' "$network" 2>/dev/null || true)
if [ -n "$existing" ]; then
  is_encrypted=0; [[ " $existing " == *" encrypted "* ]] && is_encrypted=1
  if [ "$is_encrypted" != "${ENCRYPT_OVERLAY:-0}" ]; then
    log "the network $network exists $([ "$is_encrypted" = 1 ] && echo encrypted || echo unencrypted); ENCRYPT_OVERLAY=${ENCRYPT_OVERLAY:-0} applies when it is created: make swarm-down first"
    exit 1
  fi
fi
docker stack deploy --prune --resolve-image never "${stack_files[@]}" "$stack" >/dev/null

# Converged: every service runs as many tasks as it wants, each created from the service's current spec (so a
# redeploy waits for the rolling update it started) and healthy (swarm counts a task with a healthcheck as running
# only once healthy). An update that failed and rolled back stops the wait.
CONTAINER_FIELDS='{{json .Image}}{{json .Args}}{{json .Env}}'
deadline=$(( $(date +%s) + timeout ))
while :; do
  pending=""
  while read -r name mode replicas _; do  # replicas: "2/2", maybe followed by "(max 1 per node)"
    wanted=${replicas##*/}
    # What a deploy changes: image, arguments, environment (the whole spec differs in fields the daemon fills in).
    spec=$(docker service inspect -f "{{with .Spec.TaskTemplate.ContainerSpec}}$CONTAINER_FIELDS{{end}}" "$name")
    current=0
    while read -r state task_spec; do
      [ "$state" = running ] && [ "$task_spec" = "$spec" ] && current=$((current + 1))
    done < <(docker service ps -q --filter desired-state=running "$name" |
             xargs -r docker inspect -f "{{.Status.State}} {{with .Spec.ContainerSpec}}$CONTAINER_FIELDS{{end}}")
    [ "$current" = "$wanted" ] || pending="$pending $name($current/$wanted current)"
    update_state=""; update_started=""
    read -r update_state update_started < <(docker service inspect \
      -f '{{if .UpdateStatus}}{{.UpdateStatus.State}} {{.UpdateStatus.StartedAt.Unix}}{{end}}' "$name") || true
    if [ -n "$update_started" ] && [ "$update_started" -ge "$((deployed_at - 1))" ]; then
      case "$update_state" in  # this deploy's update, not one before it
        rollback_started|rollback_completed|paused|rollback_paused)
          log "$name: the update failed and was rolled back ($update_state); its tasks that ended, and why:"
          docker service ps --no-trunc --filter desired-state=shutdown "$name" \
            --format '  {{.Name}} {{.Node}} {{.CurrentState}} {{.Error}}' | head -10 >&2 || true
          exit 1 ;;
      esac
    fi
  done < <(docker stack services "$stack" --format '{{.Name}} {{.Mode}} {{.Replicas}}')
  [ -n "$pending" ] || break
  if [ "$(date +%s)" -ge "$deadline" ]; then
    log "not converged after ${timeout} s (WAIT_TIMEOUT):$pending"
    docker stack ps "$stack" --no-trunc --format '{{.Name}} {{.Node}} {{.CurrentState}} {{.Error}}' | head -20 >&2
    exit 1
  fi
  sleep 2
done
cat <<MSG

Stack $stack is up on the swarm. HTTPS on port ${HTTP_PORT:-8080} of the node running the gateway (every interface):
  curl --cacert $cacert -X POST https://127.0.0.1:${HTTP_PORT:-8080}/encode -H "Authorization: Bearer \$API_KEY" -H 'Content-Type: application/json' -d '{"data":[{"text":"hello world"}]}'
MSG
