#!/usr/bin/env bash
# Remove what scripts/swarm-up.sh deployed: the stack's services, its network and the API key secret; returns once
# they are gone. The swarm itself stays (`docker swarm leave --force` on a single-node swarm undoes `make swarm-up`'s
# `docker swarm init`).
set -euo pipefail
stack=${STACK_NAME:-sentence-encoder}
secret=${API_KEY_SECRET:-sentence_encoder_api_key}
docker stack rm "$stack" >/dev/null 2>&1 || true
# The network goes only after every task has stopped; the secret only once no service uses it.
for _ in $(seq 1 60); do
  leftover=$(docker network ls -q --filter "label=com.docker.stack.namespace=$stack")
  leftover+=$(docker service ls -q --filter "label=com.docker.stack.namespace=$stack")
  [ -n "$leftover" ] || break
  sleep 1
done
tls_secrets="${TLS_CERT_SECRET:-sentence_encoder_tls_cert} ${TLS_KEY_SECRET:-sentence_encoder_tls_key}"
# shellcheck disable=SC2086
docker secret rm "$secret" $tls_secrets >/dev/null 2>&1 || true
echo "[swarm-down] removed the stack $stack and the secrets $secret $tls_secrets"
