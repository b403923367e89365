"""Soak the running stack: N concurrent clients mixing gRPC and HTTP, one-doc and 32-doc requests, for a set time.

Every response is checked: as many docs as sent, in the same order, and every embedding equal to the in-process
model's (the texts come from a fixed pool encoded in-process up front, so each reply is compared in full, cheaply).
Each container's memory is read after a warm-up and at the end. Traffic goes to 127.0.0.1 only, and stops by itself.

    python scripts/soak.py [--clients 64] [--duration 300] [--project sentence-encoder] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import time
from dataclasses import dataclass, field

import numpy as np

# Memory is read once the allocators have seen the full load: after this share of the run (at least 10 s).
WARM_UP_SHARE = 0.3
CLIENT_TIMEOUT_S = 120.0
MIN_COSINE = 0.9999


@dataclass
class Tally:
    requests: int = 0
    docs: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def fail(self, message: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(message)
        else:
            self.errors.append('...')  # the count still rises


def text_pool(size: int = 200, seed: int = 7) -> list[str]:
    words = 'embedding vector search index jina docker gateway encoder query document sentence model'.split()
    rng = random.Random(seed)
    return [' '.join(rng.choice(words) for _ in range(rng.randint(3, 40))) + f' #{i}' for i in range(size)]


def container_memory(project: str) -> dict[str, float]:
    """MiB used per container of the compose project, from `docker stats`."""
    ids = subprocess.run(
        ['docker', 'ps', '-q', '--filter', f'label=com.docker.compose.project={project}'],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    if not ids:
        return {}
    stats = subprocess.run(
        ['docker', 'stats', '--no-stream', '--format', '{{.Name}} {{.MemUsage}}', *ids],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    usage = {}
    for line in stats.splitlines():
        name, used = line.split()[0], line.split()[1]
        number, unit = float(used.rstrip('KMGiB')), used.lstrip('0123456789.')
        usage[name] = number * {'KiB': 1 / 1024, 'MiB': 1, 'GiB': 1024}.get(unit, 1 / (1024 * 1024))
    return usage


def check_reply(tally: Tally, sent: list[int], vectors: list, reference: np.ndarray, pool: list[str], texts) -> None:
    if len(vectors) != len(sent):
        tally.fail(f'sent {len(sent)} docs, got {len(vectors)} back')
        return
    if texts is not None and list(texts) != [pool[i] for i in sent]:
        tally.fail('docs came back out of order')
        return
    got = np.asarray(vectors, dtype=np.float64)
    want = reference[sent]
    cosine = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    if cosine.min() < MIN_COSINE:
        tally.fail(f'embedding differs from the in-process model (cosine {cosine.min():.6f})')


async def http_client(args, pool, reference, tally, stop_at, rng):
    import aiohttp

    url = f'http://127.0.0.1:{args.http_port}/encode'
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < stop_at:
            sent = rng.sample(range(len(pool)), rng.choice((1, 32)))
            started = time.monotonic()
            try:
                async with session.post(url, json={'data': [{'text': pool[i]} for i in sent]}) as reply:
                    body = await reply.json(content_type=None)
                    if reply.status != 200:
                        tally.fail(f'HTTP {reply.status}: {str(body)[:200]}')
                        continue
            except Exception as error:  # noqa: BLE001 - every failure counts, whatever its kind
                tally.fail(f'HTTP {type(error).__name__}: {error}')
                continue
            tally.latencies.append(time.monotonic() - started)
            tally.requests += 1
            tally.docs += len(sent)
            docs = body['data']
            check_reply(tally, sent, [d['embedding'] for d in docs], reference, pool, [d['text'] for d in docs])


async def grpc_client(args, pool, reference, tally, stop_at, rng):
    from docarray import DocList
    from docarray.documents import TextDoc
    from jina import Client

    client = Client(host='127.0.0.1', port=args.grpc_port, protocol='grpc', asyncio=True)
    while time.monotonic() < stop_at:
        sent = rng.sample(range(len(pool)), rng.choice((1, 32)))
        started = time.monotonic()
        try:
            docs = DocList[TextDoc]()
            request = DocList[TextDoc]([TextDoc(text=pool[i]) for i in sent])
            async for batch in client.post('/encode', request, request_size=len(sent), return_type=DocList[TextDoc]):
                docs.extend(batch)
        except Exception as error:  # noqa: BLE001
            tally.fail(f'gRPC {type(error).__name__}: {str(error)[:200]}')
            continue
        tally.latencies.append(time.monotonic() - started)
        tally.requests += 1
        tally.docs += len(sent)
        check_reply(tally, sent, [d.embedding for d in docs], reference, pool, [d.text for d in docs])


async def soak(args) -> dict:
    from sentence_transformers import SentenceTransformer

    pool = text_pool()
    reference = SentenceTransformer('sentence-transformers/all-MiniLM-L6-v2', device='cpu').encode(pool)
    reference = np.asarray(reference, dtype=np.float64)
    tally = Tally()
    started = time.monotonic()
    stop_at = started + args.duration
    clients = [
        (http_client if i % 2 == 0 else grpc_client)(args, pool, reference, tally, stop_at, random.Random(i))
        for i in range(args.clients)
    ]
    tasks = [asyncio.create_task(client) for client in clients]
    await asyncio.sleep(max(10.0, WARM_UP_SHARE * args.duration))
    memory_after_warm_up = await asyncio.to_thread(container_memory, args.project)
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    memory_at_end = container_memory(args.project)
    latencies = sorted(tally.latencies) or [0.0]
    return {
        'clients': args.clients,
        'duration_s': round(elapsed, 1),
        'requests': tally.requests,
        'docs': tally.docs,
        'docs_per_s': round(tally.docs / elapsed, 1),
        'errors': len(tally.errors),
        'first_errors': tally.errors[:5],
        'p50_ms': round(1000 * statistics.median(latencies), 1),
        'p99_ms': round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1),
        'memory_mib_after_warm_up': memory_after_warm_up,
        'memory_mib_at_end': memory_at_end,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--clients', type=int, default=64)
    parser.add_argument('--duration', type=float, default=300)
    parser.add_argument('--http-port', type=int, default=int(os.environ.get('HTTP_PORT', 8080)))
    parser.add_argument('--grpc-port', type=int, default=int(os.environ.get('GRPC_PORT', 50051)))
    parser.add_argument('--project', default=os.environ.get('COMPOSE_PROJECT_NAME', 'sentence-encoder'))
    parser.add_argument('--json', help='also write the summary to this file')
    args = parser.parse_args()
    summary = asyncio.run(soak(args))
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        with open(args.json, 'w') as out:
            out.write(text)


if __name__ == '__main__':
    main()
