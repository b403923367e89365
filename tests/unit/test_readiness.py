"""gateway/readiness.py against a real grpc.aio health server: /ready's answers come from a background check, so
a hundred concurrent calls cost one round of health checks, not a hundred channels."""

from __future__ import annotations

import asyncio
import sys

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from helpers import REPO, free_port

sys.path.insert(0, str(REPO / 'gateway'))
from readiness import EncoderReadiness  # noqa: E402


class CountingCalls(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self.calls = 0

    async def intercept_service(self, continuation, details):
        self.calls += 1
        return await continuation(details)


async def health_server(status) -> tuple[grpc.aio.Server, int, CountingCalls]:
    counting = CountingCalls()
    server = grpc.aio.server(interceptors=[counting])
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port('127.0.0.1:0')
    await server.start()
    await servicer.set('', status)
    return server, port, counting


def test_a_hundred_concurrent_calls_cost_one_round_of_checks():
    async def scenario():
        serving, serving_port, serving_calls = await health_server(health_pb2.HealthCheckResponse.SERVING)
        loading, loading_port, _ = await health_server(health_pb2.HealthCheckResponse.NOT_SERVING)
        addresses = [f'127.0.0.1:{serving_port}', f'grpc://127.0.0.1:{loading_port}', f'127.0.0.1:{free_port()}']
        readiness = EncoderReadiness(addresses, interval_s=60)
        answers = await asyncio.gather(*(readiness.current() for _ in range(100)))
        await serving.stop(None)
        await loading.stop(None)
        return answers, serving_calls.calls

    answers, calls = asyncio.run(scenario())
    assert all(answer == answers[0] for answer in answers)
    assert list(answers[0].values()) == [True, False, False], answers[0]
    assert calls == 1, f'{calls} health checks for 100 calls to /ready'


def test_the_answer_follows_the_encoder_going_down():
    async def scenario():
        server, port, _ = await health_server(health_pb2.HealthCheckResponse.SERVING)
        readiness = EncoderReadiness([f'127.0.0.1:{port}'], interval_s=0.05)
        before = await readiness.current()
        await server.stop(None)
        for _ in range(200):
            await asyncio.sleep(0.05)
            if not any((await readiness.current()).values()):
                return before, False
        return before, True

    before, still_serving = asyncio.run(scenario())
    assert list(before.values()) == [True]
    assert not still_serving, 'the stopped encoder was still reported serving after 10 s'


def test_a_check_that_died_is_started_again_and_aclose_stops_it():
    async def scenario():
        server, port, _ = await health_server(health_pb2.HealthCheckResponse.SERVING)
        readiness = EncoderReadiness([f'127.0.0.1:{port}'], interval_s=60)
        real_check = EncoderReadiness._serving

        async def broken(channel):
            raise RuntimeError('a bug in the check')

        readiness._serving = broken
        first = await readiness.current()
        await asyncio.sleep(0.05)  # the task has died
        readiness._serving = real_check
        second = await readiness.current()
        task = readiness._task
        await readiness.aclose()
        await server.stop(None)
        return first, second, task.done()

    first, second, stopped = asyncio.run(scenario())
    assert list(first.values()) == [False]
    assert list(second.values()) == [True], 'the check was not started again'
    assert stopped
