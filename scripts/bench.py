"""Benchmark the running stack against in-process `model.encode` at batch 32 with both backends (torch, and OpenVINO
from the IR `make model` wrote) on the same machine, in the same run (ratios only mean something within one run: these
machines are noisy). The stack rows name the backend the stack runs (ENCODER_BACKEND, openvino by default). Workloads:

- the tutorial's: 10,000 copies of its sentence, request_size 32: over gRPC as the tutorial sends it (one
  `Client.post`, jina streaming the requests), and over HTTP (4 requests in flight);
- varied texts (5 to 200 words, fixed seed), request_size 32, over gRPC and HTTP;
- one-doc HTTP requests with 32 in flight, the way curl users send them.

HTTP rows use the OpenAI-style route (POST /v1/embeddings), which infinity-emb also serves: with --infinity, the same
HTTP workloads run against infinity-emb serving the same model files on the same machine (scripts/infinity_peer.py).

    python scripts/bench.py [--docs 10000] [--varied-docs 2000] [--single-docs 2000] [--infinity]
                            [--markdown docs/benchmarks.md] [--chart docs/benchmarks.png]

Prints a table (docs/s, ratios to both in-process rows, p50 and p99 request latency) and the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
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


def streamed_grpc(client, texts: list[str], request_size: int, label: str) -> dict:
    """The tutorial's way: one Client.post, jina keeping many requests in flight. Each request's latency is taken
    from when the client pulls its first doc from the input generator to when its response is done."""
    from docarray.documents import TextDoc
    from tqdm import tqdm

    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    progress = tqdm(total=len(texts), desc=label, unit='doc', leave=False)

    def inputs():
        for i, text in enumerate(texts):
            doc = TextDoc(text=text)
            if i % request_size == 0:
                sent_at[doc.id] = time.perf_counter()
            yield doc

    returned = 0

    def done(response):
        nonlocal returned
        docs = response.docs
        returned += len(docs)
        progress.update(len(docs))
        first = sent_at.get(docs[0].id) if len(docs) else None
        if first is not None:
            latencies.append(time.perf_counter() - first)

    started = time.perf_counter()
    client.post('/encode', inputs(), request_size=request_size, on_done=done)
    elapsed = time.perf_counter() - started
    progress.close()
    assert returned == len(texts), f'{len(texts) - returned} docs missing from the replies'
    return {
        'docs_per_s': len(texts) / elapsed,
        'p50_ms': 1000 * statistics.median(latencies),
        'p99_ms': 1000 * percentile(latencies, 0.99),
    }


def openai_sender(base_url: str, path: str, model: str) -> Callable[[list[str]], int]:
    """POST a batch to an OpenAI-style embeddings route; one keep-alive session per thread."""
    sessions = threading.local()

    def send(batch: list[str]) -> int:
        session = getattr(sessions, 'session', None) or requests.Session()
        sessions.session = session
        reply = session.post(f'{base_url}{path}', json={'input': batch, 'model': model}, timeout=300)
        reply.raise_for_status()
        return len(reply.json()['data'])

    return send


def write_chart(rows: list, path: str, where: str) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    labels = [f'{workload}\n{peer}' for workload, peer, _ in rows]
    values = [result['docs_per_s'] for _, _, result in rows]
    colours = [
        'grey' if peer.startswith('in-process') else 'tab:orange' if 'infinity' in peer else 'tab:blue'
        for _, peer, _ in rows
    ]
    figure, axes = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.5))
    axes.barh(labels[::-1], values[::-1], color=colours[::-1])
    for y, value in enumerate(values[::-1]):
        axes.text(value, y, f' {value:.0f}', va='center', fontsize=8)
    axes.set_xlabel('docs/s (higher is better)')
    axes.set_title(f'all-MiniLM-L6-v2: stack (blue), infinity-emb (orange), in-process (grey)\n{where}', fontsize=9)
    axes.tick_params(axis='y', labelsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--docs', type=int, default=10_000, help="the tutorial workload's size")
    parser.add_argument('--varied-docs', type=int, default=1_000)
    parser.add_argument('--single-docs', type=int, default=2_000, help='one-doc HTTP requests, 32 in flight')
    parser.add_argument('--request-size', type=int, default=32)
    parser.add_argument('--grpc-port', type=int, default=int(os.environ.get('GRPC_PORT', 50051)))
    parser.add_argument('--http-port', type=int, default=int(os.environ.get('HTTP_PORT', 8080)))
    parser.add_argument('--infinity', action='store_true', help='also measure infinity-emb (installs it once)')
    parser.add_argument('--infinity-port', type=int, default=7997)
    parser.add_argument('--markdown', help='also write the table, with the machine, to this file')
    parser.add_argument('--chart', help='also draw the docs/s of every row into this PNG')
    args = parser.parse_args()

    import torch
    from jina import Client
    from sentence_transformers import SentenceTransformer

    def in_batches(texts: list[str], size: int) -> list[list[str]]:
        return [texts[i : i + size] for i in range(0, len(texts), size)]

    model_name = 'sentence-transformers/all-MiniLM-L6-v2'
    client = Client(host='127.0.0.1', port=args.grpc_port, protocol='grpc')
    stack_http = openai_sender(f'http://127.0.0.1:{args.http_port}', '/v1/embeddings', model_name)
    model = SentenceTransformer(model_name, device='cpu')
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'executor'))
    from executor import load_model  # the encoder's own loading: the IR `make model` wrote, never a conversion

    openvino_model = load_model(model_name, 'cpu', torch.float32, 'openvino')
    stack_backend = os.environ.get('ENCODER_BACKEND', 'openvino')  # what compose.yml runs unless overridden

    def in_process(batch: list[str]) -> int:
        return len(model.encode(batch, batch_size=args.request_size))

    def in_process_openvino(batch: list[str]) -> int:
        return len(openvino_model.encode(batch, batch_size=args.request_size))

    workloads = {
        'tutorial, request_size 32': [SENTENCE] * args.docs,
        'varied 5-200 words, request_size 32': varied_texts(args.varied_docs),
    }
    workloads = {name: texts for name, texts in workloads.items() if texts}  # --varied-docs 0 skips that one
    one_doc = 'one-doc requests, 32 in flight'
    singles = in_batches([SENTENCE] * args.single_docs, 1)
    for warm_up in (stack_http, in_process, in_process_openvino):  # connections, first-request costs
        warm_up([SENTENCE] * args.request_size)

    # (workload, peer, result); every row is compared with both in-process rows of its workload.
    rows: list[tuple[str, str, dict]] = []
    torch_ceilings: dict[str, dict] = {}
    openvino_ceilings: dict[str, dict] = {}

    def record(workload: str, peer: str, result: dict) -> dict:
        rows.append((workload, peer, result))
        return result

    def http_rows(peer: str, send: Callable[[list[str]], int]) -> None:
        for workload, texts in workloads.items():
            record(workload, peer, timed_batches(in_batches(texts, args.request_size), send, 4, f'{peer}: {workload}'))
        record(one_doc, peer, timed_batches(singles, send, 32, f'{peer}: {one_doc}'))

    for workload, texts in workloads.items():
        batches = in_batches(texts, args.request_size)
        result = timed_batches(batches, in_process, 1, f'in-process torch: {workload}')
        torch_ceilings[workload] = record(workload, 'in-process torch batch 32', result)
        result = timed_batches(batches, in_process_openvino, 1, f'in-process OpenVINO: {workload}')
        openvino_ceilings[workload] = record(workload, 'in-process OpenVINO batch 32', result)
        result = streamed_grpc(client, texts, args.request_size, f'stack gRPC: {workload}')
        record(workload, f'stack gRPC (streamed, {stack_backend})', result)
    for ceilings in (torch_ceilings, openvino_ceilings):  # the same sentence, encoded in batches of 32
        ceilings[one_doc] = ceilings['tutorial, request_size 32']
    http_rows(f'stack HTTP /v1/embeddings ({stack_backend})', stack_http)
    if args.infinity:
        from infinity_peer import SERVED_NAME, infinity_server

        with infinity_server(args.infinity_port, batch_size=args.request_size) as url:
            infinity_http = openai_sender(url, '/embeddings', SERVED_NAME)
            infinity_http([SENTENCE] * args.request_size)
            http_rows('infinity-emb /embeddings (torch)', infinity_http)

    order = {workload: i for i, workload in enumerate([*workloads, one_doc])}
    rows.sort(key=lambda row: order[row[0]])  # stable: peers keep their order within a workload
    header = (
        '| workload | peer (backend) | docs/s | / in-process torch | / in-process OpenVINO | p50 ms | p99 ms |\n'
        '| --- | --- | --- | --- | --- | --- | --- |'
    )
    lines = [
        f'| {workload} | {peer} | {result["docs_per_s"]:.0f} '
        f'| {result["docs_per_s"] / torch_ceilings[workload]["docs_per_s"]:.2f} '
        f'| {result["docs_per_s"] / openvino_ceilings[workload]["docs_per_s"]:.2f} '
        f'| {result["p50_ms"]:.1f} | {result["p99_ms"]:.1f} |'
        for workload, peer, result in rows
    ]
    table = '\n'.join([header, *lines])
    where = f'Machine: {machine()}, no GPU used (CPU stack). Client, stack and peers share the machine.'
    print(where)
    print(table)
    if args.markdown:
        with open(args.markdown, 'w') as out:
            chart = f'\n![docs/s per workload and peer]({os.path.basename(args.chart)})\n' if args.chart else ''
            out.write(
                f'# Benchmarks\n\nWritten by `make bench` ({time.strftime("%Y-%m-%d")}). {where}\n\n{table}\n{chart}'
            )
    if args.chart:
        write_chart(rows, args.chart, where)


if __name__ == '__main__':
    main()
