"""The tutorial's experiment against the running stack: 10,000 docs, request_size 32, over gRPC and HTTP, beside the
ceiling, in-process `model.encode` at batch 32 on the same machine, in the same run (ratios only mean something
within one run: these machines are noisy).

    python scripts/bench.py [--docs 10000] [--request-size 32] [--grpc-port 50051] [--http-port 8080]

Prints a table (docs/s, stack / in-process ratio, p50 and p99 request latency) and the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import requests

SENTENCE = 'On CPU or GPU, Jina serves the same executor.'


def machine() -> str:
    cpu = platform.processor() or 'unknown CPU'
    try:
        with open('/proc/cpuinfo') as cpuinfo:
            cpu = next(line.split(':', 1)[1].strip() for line in cpuinfo if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return f'{cpu}, {os.cpu_count()} cores'


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def timed_batches(batches: list[list[str]], send: Callable[[list[str]], int], concurrency: int = 1) -> dict:
    """Send every batch, `concurrency` at a time; return docs/s and request latencies."""
    latencies: list[float] = []

    def one(batch: list[str]) -> int:
        started = time.perf_counter()
        count = send(batch)
        latencies.append(time.perf_counter() - started)
        return count

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        returned = sum(pool.map(one, batches))
    elapsed = time.perf_counter() - started
    sent = sum(len(batch) for batch in batches)
    assert returned == sent, f'{sent - returned} docs missing from the replies'
    return {
        'docs_per_s': sent / elapsed,
        'p50_ms': 1000 * statistics.median(latencies),
        'p99_ms': 1000 * percentile(latencies, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--docs', type=int, default=10_000)
    parser.add_argument('--request-size', type=int, default=32)
    parser.add_argument('--grpc-port', type=int, default=int(os.environ.get('GRPC_PORT', 50051)))
    parser.add_argument('--http-port', type=int, default=int(os.environ.get('HTTP_PORT', 8080)))
    args = parser.parse_args()

    from docarray import DocList
    from docarray.documents import TextDoc
    from jina import Client
    from sentence_transformers import SentenceTransformer

    texts = [SENTENCE] * args.docs
    batches = [texts[i : i + args.request_size] for i in range(0, len(texts), args.request_size)]
    client = Client(host='127.0.0.1', port=args.grpc_port, protocol='grpc')
    http = requests.Session()

    def via_grpc(batch: list[str]) -> int:
        docs = client.post('/encode', DocList[TextDoc]([TextDoc(text=t) for t in batch]), return_type=DocList[TextDoc])
        return len(docs)

    def via_http(batch: list[str]) -> int:
        reply = http.post(
            f'http://127.0.0.1:{args.http_port}/encode', json={'data': [{'text': t} for t in batch]}, timeout=120
        )
        reply.raise_for_status()
        return len(reply.json()['data'])

    model = SentenceTransformer('sentence-transformers/all-MiniLM-L6-v2', device='cpu')

    def in_process(batch: list[str]) -> int:
        return len(model.encode(batch, batch_size=args.request_size))

    via_grpc(batches[0])  # warm-up: connections, first-request costs
    via_http(batches[0])
    in_process(batches[0])
    print(f'{args.docs} docs, request_size {args.request_size}, on {machine()}')
    results = {
        'in-process batch 32 (ceiling)': timed_batches(batches, in_process),
        'stack over gRPC': timed_batches(batches, via_grpc),
        'stack over HTTP': timed_batches(batches, via_http),
    }
    ceiling = results['in-process batch 32 (ceiling)']['docs_per_s']
    print(f'{"workload":32} {"docs/s":>8} {"ratio":>6} {"p50 ms":>8} {"p99 ms":>8}')
    for name, result in results.items():
        print(
            f'{name:32} {result["docs_per_s"]:8.0f} {result["docs_per_s"] / ceiling:6.2f} '
            f'{result["p50_ms"]:8.1f} {result["p99_ms"]:8.1f}'
        )


if __name__ == '__main__':
    main()
