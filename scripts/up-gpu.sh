#!/usr/bin/env bash
# make up-gpu: choose the GPU image the host's driver runs, check Docker can hand a GPU to a container, build what is
# missing, start the stack. scripts/up-gpu.sh COMPOSE_FILE (compose.yml, or .build/replicas-N/compose.yml to export)
# One CUDA value, chosen once, goes to the build (a make argument: it beats a CUDA in make's own environment) and to
# compose (which names the image by it: compose.gpu.yml), so the image built is the image started.
set -euo pipefail
cd "$(dirname "$0")/.."
cuda=$(scripts/choose-gpu-image.sh)
scripts/check-gpu-runtime.sh
"${MAKE:-make}" --no-print-directory CUDA="$cuda" build-gpu model "$1"
CUDA=$cuda scripts/up.sh gpu
