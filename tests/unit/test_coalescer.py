"""The gateway's joining of concurrent HTTP requests (gateway/coalescer.py), against a stand-in encoder.

The stand-in returns, for each text, a vector that names it, so every test can check that each request got its own
vectors, complete and in order. Served, the same code runs in the Flow and stack tests against the real encoder.
"""

from __future__ import annotations

import asyncio
import sys

import pytest
from helpers import REPO

sys.path.insert(0, str(REPO / 'gateway'))
from coalescer import EncoderRefused, RequestCoalescer  # noqa: E402

# Generous bounds on waits that must not happen (a lone request held for a timer): failures, not measurements.
NEVER_MS = 60_000
SETTLE_S = 10


class StandInEncoder:
    """Answers each batch after `delay_s` (and once `gate` is open, if given) with one vector per text: [hash of the
    text]. Records the batches."""

    def __init__(self, delay_s: float = 0.01, refuse: str | None = None, gate: asyncio.Event | None = None) -> None:
        self.delay_s = delay_s
        self.refuse = refuse  # a text it refuses as bad input, failing the whole batch, as the executor would
        self.gate = gate
        self.batches: list[list[str]] = []

    async def __call__(self, texts: list[str]) -> list:
        self.batches.append(list(texts))
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self.delay_s)
        if self.refuse in texts:
            raise EncoderRefused(f'refused {self.refuse!r}', input_fault=True)
        return [[float(hash(text))] for text in texts]


def vectors_of(texts: list[str]) -> list:
    return [[float(hash(text))] for text in texts]


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, SETTLE_S))


def test_concurrent_requests_are_joined_and_each_gets_its_own_vectors_in_order():
    requests = [[f'request {i} text {j}' for j in range(i % 3 + 1)] for i in range(40)]

    async def scenario():
        # The encoder holds its batches until every request has arrived: "while a batch is out" by construction,
        # not by how fast this machine runs the loop (timed sleeps made the batch count depend on it).
        encoder = StandInEncoder(gate=asyncio.Event())
        joiner = RequestCoalescer(encoder, max_docs=64, max_wait_ms=NEVER_MS, max_batches_in_flight=1)
        calls = []
        for texts in requests:  # arriving one after another, while batches are out
            calls.append(asyncio.ensure_future(joiner.encode(texts)))
            await asyncio.sleep(0)
        encoder.gate.set()
        return await asyncio.gather(*calls), encoder

    replies, encoder = run(scenario())
    assert replies == [vectors_of(texts) for texts in requests]
    # 40 requests of 79 texts: the first alone, a full batch of up to 64 texts while it is out, then the rest.
    assert len(encoder.batches) <= 3, [len(batch) for batch in encoder.batches]
    assert sorted(text for batch in encoder.batches for text in batch) == sorted(t for r in requests for t in r)


def test_a_lone_request_leaves_at_once():
    encoder = StandInEncoder(delay_s=0)

    async def scenario():
        joiner = RequestCoalescer(encoder, max_docs=64, max_wait_ms=NEVER_MS, max_batches_in_flight=1)
        return await joiner.encode(['alone'])

    assert run(scenario()) == vectors_of(['alone'])  # within SETTLE_S, so not held for the NEVER_MS wait


def test_batches_stay_within_max_docs_and_a_request_is_never_split():
    encoder = StandInEncoder()
    requests = [[f'r{i}-{j}' for j in range(3)] for i in range(10)] + [[f'big-{j}' for j in range(7)]]

    async def scenario():
        joiner = RequestCoalescer(encoder, max_docs=4, max_wait_ms=NEVER_MS, max_batches_in_flight=1)
        return await asyncio.gather(*(joiner.encode(texts) for texts in requests))

    assert run(scenario()) == [vectors_of(texts) for texts in requests]
    for batch in encoder.batches:
        assert len(batch) <= 4 or batch == requests[-1], batch  # only a request bigger than max_docs goes alone
    for texts in requests:
        assert any(batch[i : i + len(texts)] == texts for batch in encoder.batches for i in range(len(batch)))


def test_requests_waiting_longer_than_max_wait_leave_without_a_free_slot():
    encoder = StandInEncoder(delay_s=0.5)

    async def scenario():
        joiner = RequestCoalescer(encoder, max_docs=64, max_wait_ms=1, max_batches_in_flight=1)
        first = asyncio.ensure_future(joiner.encode(['first']))
        await asyncio.sleep(0.05)  # the first batch is out and encoding for 0.5 s
        second = await joiner.encode(['second'])
        return second, len(encoder.batches), await first

    second, batches_when_second_returned, first = run(scenario())
    assert (first, second) == (vectors_of(['first']), vectors_of(['second']))
    assert batches_when_second_returned == 2


def test_a_bad_request_in_a_joined_batch_fails_alone():
    encoder = StandInEncoder(refuse='bad text')
    requests = [['good 0'], ['good 1', 'good 2'], ['bad text'], ['good 3']]

    async def scenario():
        joiner = RequestCoalescer(encoder, max_docs=64, max_wait_ms=NEVER_MS, max_batches_in_flight=1)
        return await asyncio.gather(*(joiner.encode(texts) for texts in requests), return_exceptions=True)

    results = run(scenario())
    assert isinstance(results[2], EncoderRefused) and results[2].status == 400
    assert [results[i] for i in (0, 1, 3)] == [vectors_of(requests[i]) for i in (0, 1, 3)]
    assert any(len(batch) > 1 and 'bad text' in batch for batch in encoder.batches), 'the bad one was joined first'


def test_an_unreachable_encoder_fails_the_batch_and_the_next_batch_works():
    calls = {'count': 0}

    async def flaky(texts: list[str]) -> list:
        calls['count'] += 1
        if calls['count'] == 1:
            raise EncoderRefused('the encoder is unavailable', input_fault=False, status=503)
        return vectors_of(texts)

    async def scenario():
        joiner = RequestCoalescer(flaky, max_docs=64, max_wait_ms=NEVER_MS, max_batches_in_flight=1)
        failed = await asyncio.gather(joiner.encode(['a']), joiner.encode(['b']), return_exceptions=True)
        return failed, await joiner.encode(['c'])

    failed, after = run(scenario())
    assert all(isinstance(result, EncoderRefused) and result.status == 503 for result in failed)
    assert after == vectors_of(['c'])


def test_a_caller_that_goes_away_does_not_disturb_the_others():
    encoder = StandInEncoder(delay_s=0.05)

    async def scenario():
        joiner = RequestCoalescer(encoder, max_docs=64, max_wait_ms=NEVER_MS, max_batches_in_flight=1)
        leaving = asyncio.ensure_future(joiner.encode(['leaves']))
        staying = asyncio.ensure_future(joiner.encode(['stays']))
        await asyncio.sleep(0)
        leaving.cancel()
        return await staying

    assert run(scenario()) == vectors_of(['stays'])


def test_settings_out_of_range_are_refused():
    with pytest.raises(ValueError, match='at least 1'):
        RequestCoalescer(StandInEncoder(), max_docs=0, max_wait_ms=1, max_batches_in_flight=1)
