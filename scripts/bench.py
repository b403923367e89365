"""Benchmark the running stack against in-process `model.encode` at batch 32 with both backends (torch, and OpenVINO
from the IR `make model` wrote) on the same machine, in the same run (ratios only mean something within one run: these
machines are noisy). The in-process OpenVINO row is one caller at a time with OpenVINO's LATENCY hint (all cores on each
call: the fastest for one caller); a second OpenVINO row runs the stack's settings (THROUGHPUT streams, several batches
at once) in-process, for context. The stack rows name the backend the stack runs (ENCODER_BACKEND, openvino by
default). Workloads:

- the tutorial's: 10,000 copies of its sentence, request_size 32: over gRPC as the tutorial sends it (one
  `Client.post`, jina streaming the requests), and over HTTP (4 requests in flight);
- varied texts (5 to 200 words, fixed seed), request_size 32, over gRPC and HTTP;
- one-doc HTTP requests, the way curl and OpenAI-client users send them: 32 in flight, 128 in flight, and one at a
  time (its p50 is the latency of a lone request), on /v1/embeddings and on /encode (the README's curl route).

HTTP rows use the OpenAI-style route (POST /v1/embeddings), which infinity-emb also serves: with --infinity, the same
HTTP workloads run against infinity-emb serving the same model files on the same machine (scripts/infinity_peer.py).
The HTTP load comes from one asyncio client (aiohttp, keep-alive connections, one per request in flight): a client of
threads spent more CPU on the shared cores than the gateway it measured, for the stack and infinity-emb alike.

    python scripts/bench.py [--docs 10000] [--varied-docs 2000] [--single-docs 2000] [--infinity]
                            [--baseline GRPC_PORT:HTTP_PORT] [--markdown docs/benchmarks.md]
                            [--chart docs/benchmarks.png]

--baseline measures a second running stack (e.g. one built from the code before a change, `docker compose -p
baseline` on other ports) in the same rounds, row by row beside the first: an A/B within one run on one machine.

Prints a table (docs/s, ratios to both in-process rows, p50 and p99 request latency) and the machine it ran on.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

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
    return {'docs': sent, 'seconds': elapsed, 'latencies': latencies}


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
    return {'docs': len(texts), 'seconds': elapsed, 'latencies': latencies}


def http_load(
    url: str, body: Callable[[list[str]], dict], batches: list[list[str]], in_flight: int, label: str
) -> dict:
    """POST every batch (as JSON `body(batch)`) to `url`, `in_flight` at a time, each on its own keep-alive
    connection; check every reply holds one vector per text; return docs/s and request latencies."""
    import asyncio

    import aiohttp
    import orjson
    from tqdm import tqdm

    latencies: list[float] = []
    pending = iter(batches)
    progress = tqdm(total=len(batches), desc=label, unit='req', leave=False)

    async def client(session) -> int:
        returned = 0
        for batch in pending:
            started = time.perf_counter()
            async with session.post(url, json=body(batch), timeout=aiohttp.ClientTimeout(total=300)) as reply:
                reply.raise_for_status()
                vectors = orjson.loads(await reply.read())['data']  # a C parser: the client's CPU is the stack's
            latencies.append(time.perf_counter() - started)
            assert len(vectors) == len(batch) and all(vector['embedding'] for vector in vectors), 'incomplete reply'
            returned += len(batch)
            progress.update()
        return returned

    async def run() -> tuple[int, float]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight)) as session:
            await client_warm_up(session)
            started = time.perf_counter()
            returned = sum(await asyncio.gather(*(client(session) for _ in range(in_flight))))
            return returned, time.perf_counter() - started

    async def client_warm_up(session) -> None:  # opens the connections before the clock starts
        async def one() -> None:
            async with session.post(url, json=body(batches[0])) as reply:
                reply.raise_for_status()
                await reply.read()

        await asyncio.gather(*(one() for _ in range(in_flight)))

    returned, elapsed = asyncio.run(run())
    progress.close()
    sent = sum(len(batch) for batch in batches)
    assert returned == sent, f'{sent - returned} docs missing from the replies'
    return {'docs': sent, 'seconds': elapsed, 'latencies': latencies}


TORCH_ROW = 'in-process torch batch 32'
OPENVINO_ROW = 'in-process OpenVINO batch 32'
# The same engine with the stack's settings (THROUGHPUT streams, batches side by side: executor/lanes.py), fed by as
# many callers as the encoder takes batches at once: what the stack could reach without Jina, the network and the
# client sharing the cores. Context, not the ratios' ceiling: those stay one caller at a time, as the tutorial encodes.
OPENVINO_STREAMS_ROW = 'in-process OpenVINO streams, as the stack runs it'


def summary(results: list[dict]) -> dict:
    """docs/s over all rounds, and latency percentiles over all requests."""
    latencies = [latency for result in results for latency in result['latencies']]
    return {
        'docs_per_s': sum(result['docs'] for result in results) / sum(result['seconds'] for result in results),
        'p50_ms': 1000 * statistics.median(latencies),
        'p99_ms': 1000 * percentile(latencies, 0.99),
    }


def both_halves(before: dict, after: dict) -> dict:
    """One measurement made of two runs of the same batches."""
    return {key: before[key] + after[key] for key in ('docs', 'seconds', 'latencies')}


def median_ratio(results: list[dict], ceilings: list[dict]) -> float:
    """The median over rounds of this row's docs/s divided by the ceiling row's docs/s in the same round."""
    rate = [result['docs'] / result['seconds'] for result in results]
    ceiling = [result['docs'] / result['seconds'] for result in ceilings]
    return statistics.median(mine / theirs for mine, theirs in zip(rate, ceiling, strict=True))


def openai_body(model: str) -> Callable[[list[str]], dict]:
    return lambda batch: {'input': batch, 'model': model}


def native_body(batch: list[str]) -> dict:
    return {'data': [{'text': text} for text in batch]}


# What follows this line in the markdown file is written by hand (profiles, findings): a new run keeps it.
NOTES_MARKER = '<!-- notes: written by hand, kept by make bench -->'


def kept_notes(path: str) -> str:
    try:
        text = open(path).read()
    except FileNotFoundError:
        return ''
    return '\n' + text[text.index(NOTES_MARKER) :] if NOTES_MARKER in text else ''


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
    parser.add_argument('--single-docs', type=int, default=2_000, help='one-doc HTTP requests per in-flight level')
    parser.add_argument('--request-size', type=int, default=32)
    parser.add_argument('--rounds', type=int, default=5, help='each row measured this many times, rows in turn')
    parser.add_argument('--grpc-port', type=int, default=int(os.environ.get('GRPC_PORT', 50051)))
    parser.add_argument('--http-port', type=int, default=int(os.environ.get('HTTP_PORT', 8080)))
    parser.add_argument('--infinity', action='store_true', help='also measure infinity-emb (installs it once)')
    parser.add_argument('--infinity-port', type=int, default=7997)
    parser.add_argument('--markdown', help='also write the table, with the machine, to this file')
    parser.add_argument('--chart', help='also draw the docs/s of every row into this PNG')
    parser.add_argument('--baseline', help='GRPC_PORT:HTTP_PORT of a second stack to measure beside (an A/B)')
    args = parser.parse_args()

    import torch
    from jina import Client
    from sentence_transformers import SentenceTransformer

    def in_batches(texts: list[str], size: int) -> list[list[str]]:
        return [texts[i : i + size] for i in range(0, len(texts), size)]

    model_name = 'sentence-transformers/all-MiniLM-L6-v2'
    client = Client(host='127.0.0.1', port=args.grpc_port, protocol='grpc')
    stack_url = f'http://127.0.0.1:{args.http_port}'
    model = SentenceTransformer(model_name, device='cpu')
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'executor'))
    from executor import load_model  # the encoder's own loading: the IR `make model` wrote, never a conversion

    openvino_model = load_model(model_name, 'cpu', torch.float32, 'openvino', performance_hint='LATENCY')
    from lanes import lanes_for

    streams_model = load_model(model_name, 'cpu', torch.float32, 'openvino', performance_hint='THROUGHPUT')
    lanes = lanes_for(streams_model, 'openvino')
    stack_backend = os.environ.get('ENCODER_BACKEND', 'openvino')  # what compose.yml runs unless overridden

    def in_process(batch: list[str]) -> int:
        return len(model.encode(batch, batch_size=args.request_size))

    def in_process_openvino(batch: list[str]) -> int:
        return len(openvino_model.encode(batch, batch_size=args.request_size))

    def in_process_streams(batch: list[str]) -> int:
        return len(lanes.encode(batch, batch_size=args.request_size, convert_to_tensor=True))

    workloads = {
        'tutorial, request_size 32': [SENTENCE] * args.docs,
        'varied 5-200 words, request_size 32': varied_texts(args.varied_docs),
    }
    workloads = {name: texts for name, texts in workloads.items() if texts}  # --varied-docs 0 skips that one
    # One-doc requests: (workload, requests in flight, how many requests in all).
    one_doc_loads = [
        ('one-doc requests, 32 in flight', 32, args.single_docs),
        ('one-doc requests, 128 in flight', 128, args.single_docs),
        ('one-doc requests, 1 in flight (p50 = lone-request latency)', 1, max(args.single_docs // 8, 50)),
    ]
    for warm_up in (in_process, in_process_openvino, in_process_streams):  # first-call costs
        warm_up([SENTENCE] * args.request_size)

    openai = openai_body(model_name)
    http_peers = [  # (peer, url, request body, whether it runs the batched workloads)
        (f'stack HTTP /v1/embeddings ({stack_backend})', f'{stack_url}/v1/embeddings', openai, True),
        (f'stack HTTP /encode ({stack_backend})', f'{stack_url}/encode', native_body, False),
    ]
    grpc_peers = [(f'stack gRPC (streamed, {stack_backend})', client)]
    if args.baseline:
        baseline_grpc, baseline_http = args.baseline.split(':')
        baseline_url = f'http://127.0.0.1:{baseline_http}'
        grpc_peers.append(('baseline gRPC (streamed)', Client(host='127.0.0.1', port=int(baseline_grpc))))
        http_peers += [
            ('baseline HTTP /v1/embeddings', f'{baseline_url}/v1/embeddings', openai, True),
            ('baseline HTTP /encode', f'{baseline_url}/encode', native_body, False),
        ]
    # Every row is measured once per round, rows in turn, a 1/rounds share of each workload per round: these machines
    # drift by 20% and more within minutes, so each ratio is taken within a round and the median of the rounds kept.
    measured: dict[tuple[str, str], list[dict]] = {}
    ceiling_drift: list[float] = []  # per round and workload: the ceiling's second run's time over its first's

    def measure(workload: str, peer: str, result: dict) -> None:
        measured.setdefault((workload, peer), []).append(result)

    with contextlib.ExitStack() as running:
        if args.infinity:
            from infinity_peer import SERVED_NAME, infinity_server

            url = running.enter_context(infinity_server(args.infinity_port, batch_size=args.request_size))
            http_peers.append(('infinity-emb /embeddings (torch)', f'{url}/embeddings', openai_body(SERVED_NAME), True))
        for _, url, body, _ in http_peers:  # connections, first-request costs
            http_load(url, body, [[SENTENCE] * args.request_size], 1, 'warm-up')
        for round_ in range(args.rounds):
            tag = f'round {round_ + 1}/{args.rounds}'
            for workload, texts in workloads.items():
                share = texts[round_ :: args.rounds]
                batches = in_batches(share, args.request_size)
                measure(workload, TORCH_ROW, timed_batches(batches, in_process, 1, f'{tag} in-process torch'))
                openvino_before = timed_batches(batches, in_process_openvino, 1, f'{tag} OpenVINO')
                streams = timed_batches(batches, in_process_streams, lanes.batches_at_once, f'{tag} OpenVINO streams')
                measure(workload, OPENVINO_STREAMS_ROW, streams)
                for peer, grpc_client in grpc_peers:
                    measure(workload, peer, streamed_grpc(grpc_client, share, args.request_size, f'{tag} {peer}'))
                for peer, url, body, batched in http_peers:
                    if batched:
                        measure(workload, peer, http_load(url, body, batches, 4, f'{tag} {peer}: {workload}'))
                # The ceiling again after the rows it divides: this round's OpenVINO row is both runs together, so a
                # drift during the round moves the ceiling with the rows measured between its two halves.
                openvino_after = timed_batches(batches, in_process_openvino, 1, f'{tag} OpenVINO again')
                measure(workload, OPENVINO_ROW, both_halves(openvino_before, openvino_after))
                ceiling_drift.append(openvino_after['seconds'] / openvino_before['seconds'])
            for workload, in_flight, count in one_doc_loads:
                singles = in_batches([SENTENCE] * max(count // args.rounds, 1), 1)
                for peer, url, body, _ in http_peers:
                    measure(workload, peer, http_load(url, body, singles, in_flight, f'{tag} {peer}: {workload}'))

    def ceiling_of(workload: str) -> str:  # one-doc requests send the tutorial's sentence
        return workload if workload in workloads else 'tutorial, request_size 32'

    rows = [(workload, peer, summary(results)) for (workload, peer), results in measured.items()]
    order = {workload: i for i, workload in enumerate([*workloads, *(load[0] for load in one_doc_loads)])}
    in_process_first = [TORCH_ROW, OPENVINO_ROW, OPENVINO_STREAMS_ROW]  # then the servers, in the order measured
    rows.sort(key=lambda row: (order[row[0]], in_process_first.index(row[1]) if row[1] in in_process_first else 3))
    for workload, peer, result in rows:
        for name, ceiling in (('torch', TORCH_ROW), ('openvino', OPENVINO_ROW)):
            result[f'per_{name}'] = median_ratio(measured[workload, peer], measured[ceiling_of(workload), ceiling])
    header = (
        '| workload | peer (backend) | docs/s | / in-process torch | / in-process OpenVINO | p50 ms | p99 ms |\n'
        '| --- | --- | --- | --- | --- | --- | --- |'
    )
    lines = [
        f'| {workload} | {peer} | {result["docs_per_s"]:.0f} '
        f'| {result["per_torch"]:.2f} | {result["per_openvino"]:.2f} '
        f'| {result["p50_ms"]:.1f} | {result["p99_ms"]:.1f} |'
        for workload, peer, result in rows
    ]
    table = '\n'.join([header, *lines])
    where = (
        f'Machine: {machine()}, no GPU used (CPU stack). Client, stack and peers share the machine. Each row was '
        f'measured in {args.rounds} rounds, every row in turn in each (the in-process OpenVINO row twice per round, '
        'before and after the rows divided by it; its second run took '
        f'{statistics.median(ceiling_drift):.2f}x the time of its first, median over rounds and workloads); docs/s and '
        'latencies are over all rounds, the ratios the median of the per-round ratios.'
    )
    print(where)
    print(table)
    if args.markdown:
        chart = f'\n![docs/s per workload and peer]({os.path.basename(args.chart)})\n' if args.chart else ''
        notes = kept_notes(args.markdown)  # read before the file is rewritten
        today = time.strftime('%Y-%m-%d')
        with open(args.markdown, 'w') as out:
            out.write(f'# Benchmarks\n\nWritten by `make bench` ({today}). {where}\n\n{table}\n{chart}{notes}')
    if args.chart:
        write_chart(rows, args.chart, where)


if __name__ == '__main__':
    main()
