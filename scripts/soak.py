"""Soak the running stack: N concurrent clients mixing gRPC and HTTP, one-doc and 32-doc requests, for a set time.

Every response is checked: as many docs as sent, in the same order, and every embedding equal to the in-process
model's (the texts come from a fixed pool encoded in-process up front, so each reply is compared in full, cheaply).
Memory: each container's anonymous resident memory (RssAnon of its processes: the heap, where a leak shows; not the
page cache or the mapped model file, which come and go) is sampled every 0.5 s. After a warm-up the run is cut into
equal phases of steady load; a leak grows the same amount in every phase, an allocator that is still settling grows
less and less. `memory_growth` reports, per container, the growth between the last two phases per 1,000 requests.
Traffic goes to 127.0.0.1 only, and stops by itself.

    python scripts/soak.py [--clients 64] [--duration 300] [--project sentence-encoder] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

# Memory is judged after the allocators have seen the full load: the first WARM_UP_SHARE of the run is left out, and
# the rest is cut into PHASES equal phases.
WARM_UP_SHARE = 0.4
PHASES = 3
SAMPLE_EVERY_S = 0.5
# A phase's growth is a leak above all of: this many standard errors of the samples' noise, this many MiB, and this
# many KB per request served in between. The last: the gateway grew ~1.5-3 KB per request in every clean 90 s run
# (jina's request path; it may still be settling), which a fixed floor would not tell from a leak as load rises.
NOISE_SIGMAS = 6
LEAK_FLOOR_MIB = 1.0
LEAK_ALLOWANCE_KB_PER_REQUEST = 4.0
# Docs per request: mostly one (many requests, so that memory kept per request adds up), some full batches.
REQUEST_SIZES = (1, 1, 1, 1, 1, 1, 1, 32)
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


def container_memory(client, project: str) -> dict[str, float]:
    """MiB of anonymous resident memory per running container of the compose project (summed over its processes),
    through a docker SDK client. Read from /proc on the host, so the soak must run where the engine runs (it does:
    traffic is to 127.0.0.1)."""
    usage = {}
    for container in client.containers.list(filters={'label': f'com.docker.compose.project={project}'}):
        top = container.top(ps_args='-o pid')
        total_kib = 0
        for (pid,) in top['Processes']:
            try:
                with open(f'/proc/{pid}/status') as status:
                    total_kib += next(int(line.split()[1]) for line in status if line.startswith('RssAnon:'))
            except (OSError, StopIteration):
                continue  # the process ended between `top` and now
        usage[container.name] = round(total_kib / 1024, 1)
    return usage


def memory_growth(samples: list[tuple[float, int, dict[str, float]]], duration: float) -> dict[str, dict]:
    """Per container: the median memory of each steady phase after the warm-up, the growth between the last two, and
    whether that growth is a leak.

    A leak grows memory in every phase by about the same amount; an allocator that is still settling grows it less and
    less; batches in flight move single samples by tens of MiB either way (the encoder's activations). So the last
    growth counts as a leak only when it is above the noise of the samples (NOISE_SIGMAS standard errors of a
    difference of two phase medians), above LEAK_FLOOR_MIB and LEAK_ALLOWANCE_KB_PER_REQUEST, and the phase before grew
    too."""
    start = WARM_UP_SHARE * duration
    length = (duration - start) / PHASES
    phases = [[s for s in samples if start + i * length <= s[0] < start + (i + 1) * length] for i in range(PHASES)]
    if any(len(phase) < 3 for phase in phases):
        return {}
    containers = set.intersection(*(set(sample[2]) for phase in phases for sample in phase))
    requests_between = statistics.median(s[1] for s in phases[-1]) - statistics.median(s[1] for s in phases[-2])
    growth = {}
    for container in sorted(containers):
        values = [[sample[2][container] for sample in phase] for phase in phases]
        medians = [statistics.median(phase) for phase in values]
        # The spread of samples around their phase's median (MAD, scaled to a standard deviation).
        spread = 1.4826 * statistics.median(abs(v - m) for phase, m in zip(values, medians, strict=True) for v in phase)
        per_phase = min(len(phase) for phase in values)
        bound = max(
            LEAK_FLOOR_MIB,
            NOISE_SIGMAS * 1.2533 * spread * (2 / per_phase) ** 0.5,
            LEAK_ALLOWANCE_KB_PER_REQUEST * requests_between / 1024,
        )
        last, before = medians[-1] - medians[-2], medians[-2] - medians[-3]
        growth[container] = {
            'phase_medians_mib': [round(m, 1) for m in medians],
            'last_phase_growth_mib': round(last, 2),
            'leak_bound_mib': round(bound, 2),
            'mib_per_1k_requests': round(1000 * last / max(requests_between, 1), 2),
            'leak': last > bound and before > 0,
        }
    return growth


async def sample_memory(project: str, started: float, stop_at: float, tally: Tally, samples: list) -> None:
    import docker

    client = docker.from_env()  # one client for the run: a sample every 0.5 s
    while time.monotonic() < stop_at:
        usage = await asyncio.to_thread(container_memory, client, project)
        samples.append((time.monotonic() - started, tally.requests, usage))
        await asyncio.sleep(SAMPLE_EVERY_S)


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
            sent = rng.sample(range(len(pool)), rng.choice(REQUEST_SIZES))
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
        sent = rng.sample(range(len(pool)), rng.choice(REQUEST_SIZES))
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
    samples: list[tuple[float, int, dict[str, float]]] = []
    tasks = [asyncio.create_task(client) for client in clients]
    tasks.append(asyncio.create_task(sample_memory(args.project, started, stop_at, tally, samples)))
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
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
        'memory_growth': memory_growth(samples, args.duration),
        'memory_samples': [(round(t, 1), n, usage) for t, n, usage in samples],
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
    print(json.dumps({key: value for key, value in summary.items() if key != 'memory_samples'}, indent=2))
    if args.json:
        with open(args.json, 'w') as out:
            json.dump(summary, out)


if __name__ == '__main__':
    main()
