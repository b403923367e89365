"""Benchmark the running stack against the ceiling, in-process `model.encode` at batch 32 on the same machine, in the
same run (ratios only mean something within one run: these machines are noisy). Workloads:

- the tutorial's: 10,000 copies of its sentence, request_size 32, over gRPC and over HTTP;
- varied texts (5 to 200 words, fixed seed), request_size 32, over gRPC;
- one-doc HTTP requests with 32 in flight, the way curl users send them.

    python scripts/bench.py [--docs 10000] [--varied-docs 2000] [--single-docs 2000] [--markdown docs/benchmarks.md]

Prints a table (docs/s, stack / in-process ratio, p50 and p99 request latency) and the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import threading
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


def varied_texts(count: int, seed: int = 42) -> list[str]:
    rng = random.Random(seed)
    words = 'the a vector search engine embeds documents queries into dense space for fast retrieval'.split()
    return [' '.join(rng.choice(words) for _ in range(rng.randint(5, 200))) for _ in range(count)]


def timed_batches(
    batches: list[list[str]], send: Callable[[list[str]], int], concurrency: int = 1, label: str = ''
) -> dict:
    """Send every batch, `concurrency` at a time, with a progress bar; return docs/s and request latencies."""
    from tqdm import tqdm

    latencies: list[float] = []

    def one(batch: list[str]) -> int:
        started = time.perf_counter()
        count = send(batch)
        latencies.append(time.perf_counter() - started)
        return count

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        returned = sum(tqdm(pool.map(one, batches), total=len(batches), desc=label, unit='req', leave=False))
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
    parser.add_argument('--docs', type=int, default=10_000, help="the tutorial workload's size")
    parser.add_argument('--varied-docs', type=int, default=2_000)
    parser.add_argument('--single-docs', type=int, default=2_000, help='one-doc HTTP requests, 32 in flight')
    parser.add_argument('--request-size', type=int, default=32)
    parser.add_argument('--grpc-port', type=int, default=int(os.environ.get('GRPC_PORT', 50051)))
    parser.add_argument('--http-port', type=int, default=int(os.environ.get('HTTP_PORT', 8080)))
    parser.add_argument('--markdown', help='also write the table, with the machine, to this file')
    args = parser.parse_args()

    from docarray import DocList
    from docarray.documents import TextDoc
    from jina import Client
    from sentence_transformers import SentenceTransformer

    def in_batches(texts: list[str], size: int) -> list[list[str]]:
        return [texts[i : i + size] for i in range(0, len(texts), size)]

    client = Client(host='127.0.0.1', port=args.grpc_port, protocol='grpc')
    sessions = threading.local()  # one keep-alive HTTP session per thread

    def via_grpc(batch: list[str]) -> int:
        docs = client.post('/encode', DocList[TextDoc]([TextDoc(text=t) for t in batch]), return_type=DocList[TextDoc])
        return len(docs)

    def via_http(batch: list[str]) -> int:
        session = getattr(sessions, 'session', None) or requests.Session()
        sessions.session = session
        reply = session.post(
            f'http://127.0.0.1:{args.http_port}/encode', json={'data': [{'text': t} for t in batch]}, timeout=120
        )
        reply.raise_for_status()
        return len(reply.json()['data'])

    model = SentenceTransformer('sentence-transformers/all-MiniLM-L6-v2', device='cpu')

    def in_process(batch: list[str]) -> int:
        return len(model.encode(batch, batch_size=args.request_size))

    tutorial = in_batches([SENTENCE] * args.docs, args.request_size)
    varied = in_batches(varied_texts(args.varied_docs), args.request_size)
    singles = in_batches([SENTENCE] * args.single_docs, 1)
    for warm_up in (via_grpc, via_http, in_process):  # connections, first-request costs
        warm_up(tutorial[0])

    # (workload, peer, result, the in-process run it is compared with)
    rows = []

    def run(workload: str, peer: str, batches, send, ceiling: dict | None, concurrency: int = 1) -> dict:
        result = timed_batches(batches, send, concurrency, label=f'{peer}: {workload}')
        rows.append((workload, peer, result, ceiling or result))
        return result

    ceiling = run('tutorial, batch 32', 'in-process (ceiling)', tutorial, in_process, None)
    run('tutorial, request_size 32', 'stack gRPC', tutorial, via_grpc, ceiling)
    run('tutorial, request_size 32', 'stack HTTP', tutorial, via_http, ceiling)
    run('one-doc requests, 32 in flight', 'stack HTTP', singles, via_http, ceiling, concurrency=32)
    ceiling = run('varied 5-200 words, batch 32', 'in-process (ceiling)', varied, in_process, None)
    run('varied 5-200 words, request_size 32', 'stack gRPC', varied, via_grpc, ceiling)

    header = '| workload | peer | docs/s | / in-process | p50 ms | p99 ms |\n| --- | --- | --- | --- | --- | --- |'
    lines = [
        f'| {workload} | {peer} | {result["docs_per_s"]:.0f} | {result["docs_per_s"] / ceiling["docs_per_s"]:.2f} '
        f'| {result["p50_ms"]:.1f} | {result["p99_ms"]:.1f} |'
        for workload, peer, result, ceiling in rows
    ]
    table = '\n'.join([header, *lines])
    where = f'Machine: {machine()}, no GPU used (CPU stack). Client and stack share the machine.'
    print(where)
    print(table)
    if args.markdown:
        with open(args.markdown, 'w') as out:
            out.write(f'# Benchmarks\n\nWritten by `make bench` ({time.strftime("%Y-%m-%d")}). {where}\n\n{table}\n')


if __name__ == '__main__':
    main()
