#!/usr/bin/env bash
# Fail with a clear message unless Docker can hand a GPU to a container (NVIDIA Container Toolkit registered).
# Without it, compose's nvidia device reservation fails with an obscure "could not select device driver" error.
set -euo pipefail
if docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q nvidia || command -v nvidia-container-cli >/dev/null; then
  exit 0
fi
cat >&2 <<'MSG'
GPU stack: this host has no NVIDIA container runtime, so no container can be given a GPU.
Install the NVIDIA driver and the NVIDIA Container Toolkit, then register it with Docker:
  https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html
  sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker
Check with `nvidia-smi` on the host. Without a GPU, use `make up` (CPU).
MSG
exit 1
