#!/usr/bin/env bash
# Build the stack's images: scripts/build-images.sh cpu|gpu|gateway|tools [...]
#   cpu     -> ${ENCODER_IMAGE:-sentence-encoder:cpu}      (CPU-only torch and OpenVINO)
#   gpu     -> ${ENCODER_GPU_IMAGE:-sentence-encoder:gpu}  (PyPI's CUDA 13 torch; with CUDA=12, CUDA 12 torch and the
#              default tag sentence-encoder:gpu-cu12: the image for NVIDIA drivers older than R580, README "GPU")
#   gateway -> ${GATEWAY_IMAGE:-sentence-gateway:3.33.1}   (jina, no torch)
#   tools   -> ${TOOLS_IMAGE:-sentence-tools:cpu}          (the CPU encoder + the packaged model: scripts/in-tools.sh)
# An image whose inputs (its Dockerfile and every file the Dockerfile copies) are those it was built from is left as it
# is, without Python or the network: `make up` on a host with current images needs only Docker. REBUILD=1 builds anyway.
# Online, `docker build` pulls the pinned base image and pip installs from PyPI. When the base image cannot be pulled
# (air-gapped, or these CI machines: OFFLINE=auto detects it, OFFLINE=1 forces it) the base is built locally with
# debootstrap and pip installs inside the build from a host-side wheelhouse (scripts/wheelhouse.sh, which needs the
# host's Python 3.11: `make install`), with no network.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[build] %s\n' "$*" >&2; }

# Decided once, and only when some image needs building.
base=""
offline=""
choose_base() {
  [ -z "$base" ] || return 0
  base=$(scripts/base-image.sh)
  offline=${OFFLINE:-auto}
  if [ "$offline" = auto ]; then
    [ "$base" = "${BASE_IMAGE:-python:3.11.14-slim-bookworm}" ] && offline=0 || offline=1
  fi
}

# What an image is built from, as one hash: the Dockerfile, the files its COPY lines name, the build arguments. It is
# stored in the image as a label; the same hash on an existing image means there is nothing to build.
INPUTS_LABEL=sentence-encoder.inputs
inputs_of() {
  local dockerfile=$1; shift
  local sources
  # Continued lines joined first: a COPY may span several.
  sources=$(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$dockerfile" \
    | awk '/^COPY / && !/--from/ { for (i = 2; i < NF; i++) print $i }')
  { printf '%s\n' "$@"; cat "$dockerfile" $sources; } | sha256sum | cut -c1-16
}
built_from() { docker image inspect -f "{{index .Config.Labels \"$INPUTS_LABEL\"}}" "$1" 2>/dev/null || true; }

# Serve a wheelhouse over HTTP on 127.0.0.1 while a build runs (pip's --find-links reads the listing). A fixed port:
# the URL is a build argument, and a new value each time would defeat the layer cache and reinstall torch.
wheel_port=${WHEELHOUSE_PORT:-3141}
wheel_server=""
serve_wheelhouse() {
  if curl -s -o /dev/null "http://127.0.0.1:$wheel_port/"; then
    log "port $wheel_port is taken; set WHEELHOUSE_PORT to a free one"; exit 1
  fi
  python3 -m http.server --bind 127.0.0.1 --directory "$1" "$wheel_port" >/dev/null 2>&1 &
  wheel_server=$!
  for _ in $(seq 1 50); do curl -sf -o /dev/null "http://127.0.0.1:$wheel_port/" && return; sleep 0.1; done
  log "the wheelhouse server did not start"; exit 1
}
stop_wheelhouse() { [ -z "$wheel_server" ] || kill "$wheel_server" 2>/dev/null || true; wheel_server=""; }
trap stop_wheelhouse EXIT

# The CUDA 13 image is sentence-encoder:gpu and also :gpu-cu13, the name compose.gpu.yml gives it under CUDA=13.
alias=""
tag_alias() { [ -z "$alias" ] || docker tag "$tag" "$alias"; }

for variant in "$@"; do
  alias=""
  encoder_id=""
  wheels=$variant
  case "$variant" in
    cpu) tag=${ENCODER_IMAGE:-sentence-encoder:cpu}; dockerfile=executor/Dockerfile; args=(--build-arg DEVICE=cpu) ;;
    gpu)
      cuda=${CUDA:-13}
      case "$cuda" in
        13) tag=${ENCODER_GPU_IMAGE:-sentence-encoder:gpu}; [ -n "${ENCODER_GPU_IMAGE:-}" ] || alias=sentence-encoder:gpu-cu13 ;;
        12) tag=${ENCODER_GPU_IMAGE:-sentence-encoder:gpu-cu12} ;;
        *) log "CUDA=$cuda: the GPU image is built for CUDA 12 or 13"; exit 2 ;;
      esac
      dockerfile=executor/Dockerfile; args=(--build-arg DEVICE=gpu --build-arg "CUDA=$cuda"); wheels=gpu-cu$cuda
      ;;
    gateway) tag=${GATEWAY_IMAGE:-sentence-gateway:3.33.1}; dockerfile=gateway/Dockerfile; args=() ;;
    tools)
      tag=${TOOLS_IMAGE:-sentence-tools:cpu}; dockerfile=executor/tools.Dockerfile
      encoder=${ENCODER_IMAGE:-sentence-encoder:cpu}
      encoder_id=$(docker image inspect -f '{{.Id}}' "$encoder" 2>/dev/null) || {
        log "the tools image starts from $encoder, which is not built: scripts/build-images.sh cpu tools"; exit 1; }
      args=(--build-arg "ENCODER_IMAGE=$encoder")
      ;;
    *) log "unknown image '$variant': use cpu, gpu, gateway or tools"; exit 2 ;;
  esac
  # The tools image is also as current as the encoder image under it.
  inputs=$(inputs_of "$dockerfile" "${args[@]}" "${encoder_id:-}" "${BASE_IMAGE:-}")
  if [ "${REBUILD:-0}" != 1 ] && [ "$(built_from "$tag")" = "$inputs" ]; then
    log "$tag is current (built from these sources; REBUILD=1 builds it anyway)"
    tag_alias
    continue
  fi
  choose_base
  args+=(--label "$INPUTS_LABEL=$inputs")
  network=()
  if [ "$offline" = 1 ]; then
    scripts/wheelhouse.sh "$wheels"
    serve_wheelhouse ".build/wheels-$wheels"
    args+=(--build-arg "WHEELHOUSE_URL=http://127.0.0.1:$wheel_port/")
    network=(--network host)  # so that the build reaches the host's 127.0.0.1
  fi
  log "building $tag from $dockerfile (base $base, offline=$offline)"
  started=$(date +%s)
  # The classic builder: Debian's docker.io has no buildx, and these Dockerfiles need nothing BuildKit-only.
  if ! output=$(DOCKER_BUILDKIT=0 docker build "${network[@]}" -f "$dockerfile" --build-arg "BASE_IMAGE=$base" \
      "${args[@]}" -t "$tag" . 2>&1); then
    printf '%s\n' "$output" | tail -40 >&2; log "building $tag failed"; exit 1
  fi
  log "built $tag in $(( $(date +%s) - started )) s"
  tag_alias
  stop_wheelhouse
done
