#!/usr/bin/env bash
# Run one of the checkout's Python scripts in the tools image (executor/tools.Dockerfile) instead of a host venv, so
# that `make model` and `make up REPLICAS=N` need only Docker on the host:
#   scripts/in-tools.sh scripts/fill_model_cache.py [ARGS...]
# It runs as the host user, so what it writes (the model cache, .build/) is theirs to delete. The checkout and the
# model cache (MODEL_CACHE_DIR, default ~/.cache/huggingface, the directory compose mounts into the encoder) are
# mounted at their host paths, so the paths in its messages are the host's.
set -euo pipefail
cd "$(dirname "$0")/.."
image=${TOOLS_IMAGE:-sentence-tools:cpu}
docker image inspect "$image" >/dev/null 2>&1 || {
  echo "the tools image $image is missing: make build (scripts/build-images.sh cpu tools) builds it" >&2; exit 1; }
cache=${MODEL_CACHE_DIR:-$HOME/.cache/huggingface}
# Made here, by the host user: a bind-mount source that does not exist is created by the engine, as root.
mkdir -p "$cache"
cache=$(cd "$cache" && pwd -P)
checkout=$(pwd -P)
exec docker run --rm --user "$(id -u):$(id -g)" \
  -v "$checkout:$checkout" -w "$checkout" -v "$cache:$cache" \
  -e HF_HOME="$cache" -e HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-0}" -e PYTHONDONTWRITEBYTECODE=1 \
  "$image" "$@"
