"""Hunt for non-finite embeddings (issue 28): run the encoder the way the failing CI test did, for minutes, and count.

The failing case: a local Flow forked from a process that had run torch (the tests' reference model), Jina's route
with `normalize: true`, on a 2-core Intel Xeon with AMX. This harness does the same: it encodes with torch in this
process first (--no-torch-first to skip), starts a local Flow (the project's gateway and SentenceEncoder, OpenVINO),
then sends, from several threads, a mix of POST /encode with and without `parameters` and POST /v1/embeddings (the
joined path), 1 to 64 texts of 1 to 300 words each (many shapes), until --minutes pass.

It counts what the encoder itself saw (its metric jina_sentence_encoder_non_finite_embeddings_total: rows re-encoded
finite, and rows that stayed non-finite) and what clients got (200s with a non-finite value: must be 0; 500s naming a
non-finite embedding). Controls: --hint LATENCY|THROUGHPUT (OPENVINO_PERFORMANCE_HINT), --precision f32|bf16
(OPENVINO_INFERENCE_PRECISION), --backend torch. Prints one JSON line with the machine, the settings and the counts.

    .venv/bin/python scripts/stress_finite.py --minutes 5 --precision f32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / 'executor'))
sys.path.insert(0, str(REPO / 'tests'))

WORDS = ('the quick brown fox jumps over a lazy dog while embeddings map sentences to vectors in a space where '
         'similar meanings lie close together ünïcödé 日本語 numbers 42 and punctuation , . ! ?').split()  # fmt: skip


def cpu_model() -> str:
    for line in Path('/proc/cpuinfo').read_text().splitlines():
        if line.startswith('model name'):
            return line.split(':', 1)[1].strip()
    return platform.processor() or 'unknown'


def cpu_flags() -> list[str]:
    text = Path('/proc/cpuinfo').read_text()
    return sorted({flag for flag in ('amx_bf16', 'amx_tile', 'avx512_bf16', 'avx512f') if f' {flag}' in text})


def texts_for(rng: random.Random) -> list[str]:
    return [' '.join(rng.choice(WORDS) for _ in range(rng.randint(1, 300))) for _ in range(rng.randint(1, 64))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--minutes', type=float, default=5)
    parser.add_argument('--clients', type=int, default=6)
    parser.add_argument('--hint', default='LATENCY', choices=('LATENCY', 'THROUGHPUT'))
    parser.add_argument(
        '--precision', default='', help='OpenVINO INFERENCE_PRECISION_HINT (f32, bf16); default: its own'
    )
    parser.add_argument('--backend', default='openvino', choices=('openvino', 'torch'))
    parser.add_argument(
        '--no-torch-first', action='store_true', help='do not run torch in this process before the fork'
    )
    args = parser.parse_args()

    import conftest  # noqa: F401 - the tests' private, offline HF cache, filled as make model fills it
    import requests
    from helpers import free_port, gateway_flow

    from executor import SentenceEncoder

    os.environ['OPENVINO_PERFORMANCE_HINT'] = args.hint
    if args.precision:
        os.environ['OPENVINO_INFERENCE_PRECISION'] = args.precision
    if not args.no_torch_first:
        from sentence_transformers import SentenceTransformer

        SentenceTransformer(conftest.MODEL_NAME, device='cpu').encode(['torch runs in the parent first'] * 8)

    http_port, metrics_port = free_port(), free_port()
    flow = gateway_flow(http_port, name='encoder', uses=SentenceEncoder, allow_concurrent=True,
                        uses_with={'device': 'cpu', 'backend': args.backend}, monitoring=True,
                        port_monitoring=metrics_port)  # fmt: skip
    api = f'http://127.0.0.1:{http_port}'
    counts = {'requests': 0, 'texts': 0, 'non_finite_200': 0, 'non_finite_500': 0, 'other_errors': 0}
    lock = threading.Lock()
    deadline = time.monotonic() + args.minutes * 60

    def client(seed: int) -> None:
        rng = random.Random(seed)
        session = requests.Session()
        while time.monotonic() < deadline:
            texts = texts_for(rng)
            kind = rng.choice(('encode-normalize', 'encode-plain', 'v1'))
            if kind == 'v1':
                reply = session.post(f'{api}/v1/embeddings', json={'input': texts}, timeout=120)
                vectors = [item['embedding'] for item in reply.json().get('data', [])] if reply.ok else []
            else:
                body = {'data': [{'text': text} for text in texts]}
                if kind == 'encode-normalize':
                    body['parameters'] = {'normalize': rng.random() < 0.5}
                reply = session.post(f'{api}/encode', json=body, timeout=120)
                vectors = [doc['embedding'] for doc in reply.json().get('data', [])] if reply.ok else []
            with lock:
                counts['requests'] += 1
                counts['texts'] += len(texts)
                if reply.status_code == 200:
                    counts['non_finite_200'] += sum(any(v is None for v in vector) for vector in vectors)
                elif 'non-finite' in reply.text:
                    counts['non_finite_500'] += 1
                else:
                    counts['other_errors'] += 1

    started = time.monotonic()
    with flow:
        threads = [threading.Thread(target=client, args=(seed,)) for seed in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        metrics = requests.get(f'http://127.0.0.1:{metrics_port}/', timeout=10).text
    encoder_saw = {
        outcome: float(value)
        for outcome, value in re.findall(r'non_finite_embeddings_total\{outcome="(\w+)"\} ([0-9.e+]+)', metrics)
    }
    print(json.dumps({
        'cpu': cpu_model(), 'flags': cpu_flags(), 'cores': os.cpu_count(),
        'minutes': round((time.monotonic() - started) / 60, 1),
        'hint': args.hint, 'precision': args.precision or 'default', 'backend': args.backend,
        'torch_first': not args.no_torch_first, **counts, 'encoder_non_finite_rows': encoder_saw,
    }))  # fmt: skip


if __name__ == '__main__':
    main()
