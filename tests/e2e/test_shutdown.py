"""`docker compose stop` under load: every request the gateway had taken is answered in full before it exits, the stop
lasts as long as that work (not as long as the drain's budget), and when the budget runs out only the requests still
running then fail."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
import requests
from compose_stack import Stack, own_stack
from docarray import DocList
from docarray.documents import TextDoc
from helpers import cosine_rows
from jina import Client

pytestmark = pytest.mark.e2e

TEXT = 'a sentence long enough to keep the encoder busy for a while, about search and embeddings. '
# What `docker compose stop` takes with nothing in flight: gateway ~0.8 s, then encoder ~1.5 s on these machines.
# The bound allows several times that, for a machine kept busy by something else; a drain that waited out its budget
# (DRAIN_TIMEOUT_S, 20 s) instead of the work, as it once did, is well above it.
IDLE_STOP_ALLOWANCE_S = 8.0


@dataclass
class Outcome:
    ok: bool
    detail: str
    finished: float  # time.monotonic() when the reply (or the failure) arrived


@dataclass
class Load:
    """Concurrent requests of `docs_per_grpc` docs over gRPC (Jina's Client) and `docs_per_http` over HTTP /encode."""

    grpc_requests: int
    docs_per_grpc: int
    http_requests: int
    docs_per_http: int
    words: int  # of each text: sets how long the encoder works on the load

    @property
    def names(self) -> list[str]:
        return [f'grpc-{i}' for i in range(self.grpc_requests)] + [f'http-{i}' for i in range(self.http_requests)]


def pending_requests(stack: Stack) -> int:
    """Requests the gateway has taken and not yet answered, from its Prometheus gauge (HTTP and gRPC alike)."""
    metrics = requests.get(f'http://127.0.0.1:{stack.env_overrides["GATEWAY_METRICS_PORT"]}/', timeout=5).text
    lines = [line for line in metrics.splitlines() if line.startswith('jina_number_of_pending_requests')]
    return int(sum(float(line.split()[-1]) for line in lines))


def send_load(stack: Stack, load: Load, reference_model) -> tuple[dict[str, Outcome], list[threading.Thread]]:
    """Start the load in threads; outcomes fill in as replies arrive. Each reply is checked: every doc back, in order,
    and its first and last embedding equal to the in-process model's."""
    outcomes: dict[str, Outcome] = {}
    text = (TEXT * (load.words // len(TEXT.split()) + 1)).split()[: load.words]

    def texts_for(name: str, size: int) -> list[str]:
        return [f'{name} doc {i}: ' + ' '.join(text) for i in range(size)]

    def correct(sent: list[str], texts, embeddings) -> bool:
        ends = [0, len(sent) - 1]
        expected = reference_model.encode([sent[i] for i in ends])
        got = np.stack([np.asarray(embeddings[i]) for i in ends]) if len(embeddings) == len(sent) else None
        return list(texts) == sent and got is not None and cosine_rows(got, expected).min() >= 0.9999

    def over_grpc(names: list[str]) -> None:
        async def post(name: str) -> None:
            sent = texts_for(name, load.docs_per_grpc)
            client = Client(host='127.0.0.1', port=stack.grpc_port, protocol='grpc', asyncio=True)
            try:
                docs = DocList[TextDoc]()
                async for reply in client.post('/encode', DocList[TextDoc]([TextDoc(text=t) for t in sent]),
                                               request_size=len(sent), return_type=DocList[TextDoc]):  # fmt: skip
                    docs.extend(reply)
                ok = correct(sent, docs.text, docs.embedding)
                outcomes[name] = Outcome(ok, 'complete' if ok else 'wrong docs', time.monotonic())
            except Exception as error:  # noqa: BLE001 - every failure is reported by the test
                outcomes[name] = Outcome(False, f'{type(error).__name__}: {error}', time.monotonic())

        async def post_all() -> None:
            await asyncio.gather(*(post(name) for name in names))

        asyncio.run(post_all())  # Jina's asyncio Client (its sync Client is not for threads)

    def over_http(name: str) -> None:
        sent = texts_for(name, load.docs_per_http)
        try:
            reply = requests.post(f'http://127.0.0.1:{stack.http_port}/encode', timeout=120,
                                  json={'data': [{'text': t} for t in sent]})  # fmt: skip
            docs = reply.json().get('data', []) if reply.status_code == 200 else []
            ok = reply.status_code == 200 and correct(sent, [d['text'] for d in docs], [d['embedding'] for d in docs])
            outcomes[name] = Outcome(
                ok, 'complete' if ok else f'{reply.status_code}: {reply.text[:200]}', time.monotonic()
            )
        except Exception as error:  # noqa: BLE001
            outcomes[name] = Outcome(False, f'{type(error).__name__}: {error}', time.monotonic())

    grpc_names = [name for name in load.names if name.startswith('grpc')]
    clients = [threading.Thread(target=over_grpc, args=(grpc_names,))]
    clients += [threading.Thread(target=over_http, args=(name,)) for name in load.names if name.startswith('http')]
    for client in clients:
        client.start()
    # The encoder works through them a batch at a time, so most wait in the gateway when the stop comes. Return once
    # each was either answered or taken by the gateway (its pending gauge), so that none is sent during the stop.
    deadline = time.monotonic() + 60
    while pending_requests(stack) + len(outcomes) < len(load.names):
        assert time.monotonic() < deadline, f'requests never reached the gateway: {outcomes}'
        time.sleep(0.05)
    return outcomes, clients


def stop_under_load(stack: Stack, load: Load, reference_model):
    """Send the load, `docker compose stop` once the gateway holds it all, and send one late request during the stop.
    Returns the outcomes, when the stop began, how long it took, how many requests were in flight, and the late one."""
    outcomes, clients = send_load(stack, load, reference_model)
    in_flight = len(load.names) - len(outcomes)
    started = time.monotonic()
    stopping = threading.Thread(target=stack.compose, args=('stop',))
    stopping.start()
    time.sleep(0.5)
    try:  # a request that arrives during the drain is turned away with a clear 503 (or finds the port closed)
        late = requests.post(f'http://127.0.0.1:{stack.http_port}/encode', json={'data': [{'text': 'x'}]}, timeout=30)
        late_outcome = f'{late.status_code} {late.json()}'
    except requests.ConnectionError:
        late_outcome = 'connection refused'
    stopping.join()
    stop_took = time.monotonic() - started
    for client in clients:
        client.join()
    return outcomes, started, stop_took, in_flight, late_outcome


def assert_stopped_cleanly(stack: Stack) -> None:
    exit_codes = {service: stack.container_state(service)['ExitCode'] for service in ('gateway', 'encoder')}
    assert exit_codes == {'gateway': 0, 'encoder': 0}, f'a service was killed, not stopped: {exit_codes}'


def test_compose_stop_answers_every_request_in_flight_and_takes_as_long_as_the_work(
    images_built, filled_model_cache, reference_model
):
    # About 2 s of encoding on these 2 cores when they are otherwise idle (460 texts of 12 words): under the drain's
    # 20 s budget with a wide margin, also on a machine busy with other work.
    load = Load(grpc_requests=3, docs_per_grpc=100, http_requests=5, docs_per_http=32, words=12)
    with own_stack('stop', filled_model_cache) as stack:
        outcomes, started, stop_took, in_flight, late = stop_under_load(stack, load, reference_model)
        work_after_stop = max(outcome.finished for outcome in outcomes.values()) - started
        print(
            f'`docker compose stop` with {in_flight} requests in flight took {stop_took:.1f} s; the last reply came '
            f'{work_after_stop:.1f} s after the stop began; late request: {late}'
        )
        failed = {name: outcome.detail for name, outcome in outcomes.items() if not outcome.ok}
        assert not failed and len(outcomes) == len(load.names), failed
        assert in_flight >= 3, f'only {in_flight} requests were in flight when the stop began: the test proves little'
        assert stop_took <= work_after_stop + IDLE_STOP_ALLOWANCE_S, (
            f'the stop took {stop_took:.1f} s for {work_after_stop:.1f} s of work in flight: the drain waits for more '
            'than the requests'
        )
        assert_stopped_cleanly(stack)
        assert late == 'connection refused' or late.startswith('503') and 'shutting down' in late

        # `make up` (scripts/up.sh) brings a stopped stack back, and one with only its gateway stopped: the exits left
        # by the stop are not mistaken for a failure to start.
        for stopped in ('the whole stack', 'the gateway'):
            if stopped == 'the gateway':
                stack.compose('stop', 'gateway')
            result = stack.up()
            assert result.returncode == 0, f'make up after stopping {stopped} failed:\n{result.stderr}'
            reply = requests.post(f'http://127.0.0.1:{stack.http_port}/encode', json={'data': [{'text': 'x'}]})
            assert reply.status_code == 200 and len(reply.json()['data'][0]['embedding']) == 384


def test_when_the_drain_budget_runs_out_only_the_requests_still_running_fail(
    images_built, filled_model_cache, reference_model
):
    budget_s = 1.0
    # About 10 s of encoding (90-word texts): far more than the budget, so some requests are still running when it ends.
    load = Load(grpc_requests=3, docs_per_grpc=150, http_requests=5, docs_per_http=32, words=90)
    with own_stack('drain-budget', filled_model_cache, DRAIN_TIMEOUT_S=str(budget_s)) as stack:
        outcomes, started, stop_took, in_flight, _ = stop_under_load(stack, load, reference_model)
        report = {name: (outcome.ok, outcome.detail[:120], round(outcome.finished - started, 1))
                  for name, outcome in outcomes.items()}  # fmt: skip
        print(f'stop with a {budget_s} s budget and {in_flight} requests in flight took {stop_took:.1f} s: {report}')
        assert len(outcomes) == len(load.names), report
        failed = {name: outcome for name, outcome in outcomes.items() if not outcome.ok}
        assert failed, f'every request finished within the {budget_s} s budget: the load is too small to test it'
        for name, outcome in failed.items():
            assert outcome.finished - started >= budget_s, f'{name} failed before the budget ran out: {report}'
            # The only ways a request may fail: the gRPC call cancelled, or the HTTP connection ended, by the stop.
            assert (
                'UNAVAILABLE' in outcome.detail
                or 'Connection' in outcome.detail
                or 'shut down before' in outcome.detail
            ), f'{name} failed unclearly: {outcome.detail}'
        assert_stopped_cleanly(stack)
