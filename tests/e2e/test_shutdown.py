"""`docker compose stop` under load: every request the gateway had taken is answered in full before it exits."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import requests
from compose_stack import Stack, own_stack
from docarray import DocList
from docarray.documents import TextDoc
from helpers import cosine_rows
from jina import Client

pytestmark = pytest.mark.e2e

TEXT = 'a sentence long enough to keep the encoder busy for a while, about search and embeddings. ' * 6


def pending_requests(stack: Stack) -> int:
    """Requests the gateway has taken and not yet answered, from its Prometheus gauge (HTTP and gRPC alike)."""
    metrics = requests.get(f'http://127.0.0.1:{stack.env_overrides["GATEWAY_METRICS_PORT"]}/', timeout=5).text
    lines = [line for line in metrics.splitlines() if line.startswith('jina_number_of_pending_requests')]
    return int(sum(float(line.split()[-1]) for line in lines))


def test_compose_stop_answers_every_request_in_flight(images_built, filled_model_cache, reference_model):
    with own_stack('stop', filled_model_cache) as stack:
        replies: dict[str, list[str] | str] = {}

        def over_grpc(names: list[str], size: int) -> None:
            """Jina's asyncio Client, one request per name, all at once (its sync Client is not for threads)."""

            async def post(name: str) -> None:
                texts = [f'{name} doc {i}: {TEXT}' for i in range(size)]
                client = Client(host='127.0.0.1', port=stack.grpc_port, protocol='grpc', asyncio=True)
                try:
                    docs = DocList[TextDoc]()
                    async for reply in client.post('/encode', DocList[TextDoc]([TextDoc(text=t) for t in texts]),
                                                   request_size=size, return_type=DocList[TextDoc]):  # fmt: skip
                        docs.extend(reply)
                    replies[name] = (
                        texts if list(docs.text) == texts and check_sample(docs.text, docs.embedding) else 'wrong docs'
                    )
                except Exception as error:  # noqa: BLE001 - the test reports every failure below
                    replies[name] = f'{type(error).__name__}: {error}'

            async def post_all() -> None:
                await asyncio.gather(*(post(name) for name in names))

            asyncio.run(post_all())

        def over_http(name: str, size: int) -> None:
            texts = [f'{name} doc {i}: {TEXT}' for i in range(size)]
            try:
                reply = requests.post(f'http://127.0.0.1:{stack.http_port}/encode', timeout=120,
                                      json={'data': [{'text': t} for t in texts]})  # fmt: skip
                docs = reply.json().get('data', []) if reply.status_code == 200 else []
                ok = [doc['text'] for doc in docs] == texts and check_sample(texts, [doc['embedding'] for doc in docs])
                replies[name] = texts if ok else f'{reply.status_code}: {reply.text[:200]}'
            except Exception as error:  # noqa: BLE001
                replies[name] = f'{type(error).__name__}: {error}'

        def check_sample(texts, embeddings) -> bool:
            """The first and last embedding of a reply equal the in-process model's."""
            ends = [0, len(texts) - 1]
            expected = reference_model.encode([texts[i] for i in ends])
            return cosine_rows(np.stack([np.asarray(embeddings[i]) for i in ends]), expected).min() >= 0.9999

        # The encoder takes requests one at a time, so most of these wait in the gateway when the stop comes. Stop once
        # each was either answered or taken by the gateway (its pending gauge), so none is sent during the stop.
        grpc_names, http_names = [f'grpc-{i}' for i in range(3)], [f'http-{i}' for i in range(5)]
        clients = [threading.Thread(target=over_grpc, args=(grpc_names, 150))]
        clients += [threading.Thread(target=over_http, args=(name, 32)) for name in http_names]
        for client in clients:
            client.start()
        deadline = time.monotonic() + 60
        while (in_flight := pending_requests(stack)) + len(replies) < len(grpc_names + http_names):
            assert time.monotonic() < deadline, f'requests never reached the gateway: {replies}'
            time.sleep(0.05)

        started = time.monotonic()
        stopping = threading.Thread(target=stack.compose, args=('stop',))
        stopping.start()
        time.sleep(1)
        try:  # a request that arrives during the drain is turned away with a clear 503 (or finds the port closed)
            late = requests.post(
                f'http://127.0.0.1:{stack.http_port}/encode', json={'data': [{'text': 'x'}]}, timeout=30
            )
            late_outcome = f'{late.status_code} {late.json()}'
        except requests.ConnectionError:
            late_outcome = 'connection refused'
        stopping.join()
        stop_took = time.monotonic() - started
        for client in clients:
            client.join()

        print(f'`docker compose stop` with {in_flight} requests in flight took {stop_took:.1f} s; late: {late_outcome}')
        failed = {name: outcome for name, outcome in replies.items() if isinstance(outcome, str)}
        assert not failed and len(replies) == len(grpc_names + http_names), failed
        exit_codes = {service: stack.container_state(service)['ExitCode'] for service in ('gateway', 'encoder')}
        assert exit_codes == {'gateway': 0, 'encoder': 0}, f'a service was killed, not stopped: {exit_codes}'
        assert (
            late_outcome == 'connection refused' or late_outcome.startswith('503') and 'shutting down' in late_outcome
        )
