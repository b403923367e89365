#!/usr/bin/env bash
# Which GPU encoder image this host's NVIDIA driver runs: prints the image's CUDA major (12 or 13) on stdout, and on
# stderr one line saying which image and why. Exits 1 with one line naming the driver needed when neither runs.
#   CUDA=12|13 scripts/choose-gpu-image.sh    # the override: no driver is read
# The rules are NVIDIA's (README "GPU"): CUDA 13 needs a driver of the R580 branch or newer and a GPU of compute
# capability 7.5 or more (CUDA 13 dropped Maxwell, Pascal and Volta); CUDA 12 runs on 525.60.13 and newer, by CUDA's
# minor-version compatibility (torch 2.10's CUDA 12.8 libraries on an older R525-R575 driver).
set -euo pipefail
say() { printf '[up-gpu] %s\n' "$*" >&2; }
refuse() { printf 'make up-gpu: %s\n' "$*" >&2; exit 1; }
image_for() { [ "$1" = 13 ] && echo "sentence-encoder:gpu" || echo "sentence-encoder:gpu-cu12"; }

CUDA13_DRIVER=580
CUDA12_DRIVER=525.60.13
CUDA13_COMPUTE=7.5
CUDA12_COMPUTE=7.0  # torch 2.10.0's CUDA 12.8 wheel: kernels from sm_70 (Volta) up
NEEDS="the CUDA 13 image needs a driver R580 or newer, the CUDA 12 one $CUDA12_DRIVER or newer (CUDA=12|13 chooses without reading the driver)"

if [ -n "${CUDA:-}" ]; then
  case "$CUDA" in
    12|13) say "CUDA=$CUDA given: $(image_for "$CUDA") (the host's driver is not read)"; echo "$CUDA"; exit 0 ;;
    *) shown=$(printf '%s' "$CUDA" | head -c 20 | tr -c '[:alnum:]._-' '?')  # one short line, whatever was set
       refuse "CUDA=$shown: the GPU images are CUDA 12 and CUDA 13 (CUDA=12 or CUDA=13, or unset to read the driver)" ;;
  esac
fi

command -v nvidia-smi >/dev/null || refuse "no NVIDIA driver found (nvidia-smi is not on PATH): $NEEDS. Without a GPU, make up (CPU)."
# stdout only (warnings go to stderr); one line per GPU, all with the same driver.
if ! drivers=$(timeout 30 nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null); then
  reason=$(timeout 30 nvidia-smi 2>&1 | head -n1 || true)
  refuse "nvidia-smi failed (${reason:-no output}): is the NVIDIA driver loaded? $NEEDS."
fi
driver=$(printf '%s\n' "$drivers" | tr -d ' ' | grep -m1 -E '^[0-9]+(\.[0-9]+)+$') \
  || refuse "nvidia-smi reported no GPU or no readable driver version ('$(printf '%s' "$drivers" | head -n1)'): $NEEDS."
# compute_cap is a query field since driver R510; older ones are too old for either image anyway. The lowest GPU counts.
compute=$(timeout 30 nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | tr -d ' ' \
  | grep -E '^[0-9]+\.[0-9]+$' | sort -V | head -n1) || compute=""

at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }  # at_least VERSION MINIMUM
gpu_ok() { [ -z "$compute" ] || at_least "$compute" "$1"; }

if at_least "$driver" "$CUDA13_DRIVER" && gpu_ok "$CUDA13_COMPUTE"; then
  say "NVIDIA driver $driver runs CUDA 13: $(image_for 13) (CUDA=12 for the CUDA 12 image)"
  echo 13
elif at_least "$driver" "$CUDA12_DRIVER" && gpu_ok "$CUDA12_COMPUTE"; then
  if at_least "$driver" "$CUDA13_DRIVER"; then
    why="the GPU's compute capability $compute is below CUDA 13's $CUDA13_COMPUTE"
  else
    why="CUDA 13 needs R580 or newer"
  fi
  say "NVIDIA driver $driver runs CUDA 12, not 13 ($why): $(image_for 12)"
  echo 12
elif ! gpu_ok "$CUDA12_COMPUTE"; then
  refuse "the GPU's compute capability $compute is below $CUDA12_COMPUTE, the oldest either image's torch has kernels for. Use make up (CPU)."
else
  refuse "NVIDIA driver $driver is too old for either GPU image: $NEEDS. Upgrade the driver, or make up (CPU)."
fi
