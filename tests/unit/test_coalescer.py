"""The gateway's joining of concurrent HTTP requests (gateway/coalescer.py), against a stand-in encoder.

The stand-in returns, for each text, a vector that names it, so every test can check that each request got its own
vectors, complete and in order. Served, the same code runs in the Flow and stack tests against the real encoder.
"""

from __future__ import annotations

import asyncio
import gc
import sys

import pytest
from helpers import REPO

sys.path.insert(0, str(REPO / 'gateway'))
from coalescer import EncoderRefused, QueueFull, RequestCoalescer, as_refusal  # noqa: E402

# Generous bounds on waits that must not happen (a lone request held for a timer): failures, not measurements.
NEVER_MS = 60_000
SETTLE_S = 10


class StandInEncoder:
    """Answers each batch after `delay_s` (and once `gate` is open, if given) with one vector per text: [hash of the
    text]. Records the batches."""

    def __init__(
        self,
        delay_s: float = 0.01,
        refuse: str | None = None,
        gate: asyncio.Event | None = None,
        failure: Exception | None = None,
    ) -> None:
        self.delay_s = delay_s
        self.refuse = refuse  # a text that fails the whole batch it is in
        # What a batch holding `refuse` raises: the executor's refusal by default, or any other exception (protobuf
        # raised UnicodeEncodeError for a lone surrogate, which failed 24 innocent requests joined with it).
        self.failure = failure or EncoderRefused(f'refused {refuse!r}', input_fault=True)
        self.gate = gate
        self.batches: list[list[str]] = []
        self.options: list = []

    async def __call__(self, texts: list[str], options=None, names=None) -> list:
        self.batches.append(list(texts))
        self.options.append(options)
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self.delay_s)
        if self.refuse in texts:
            raise self.failure
        return [[float(hash(text))] for text in texts]


def vectors_of(texts: list[str]) -> list:
    return [[float(hash(text))] for text in texts]


def run(coroutine):
    """Runs `coroutine` (within SETTLE_S) and fails the test if a callback or task of the loop raised: asyncio only
    logs those, so a coalescer that broke inside its own callbacks would otherwise pass."""
    raised: list[dict] = []

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: raised.append(context))
        return await asyncio.wait_for(coroutine, SETTLE_S)

    result = asyncio.run(main())
    gc.collect()  # a task's unretrieved exception is reported when the task is collected
    assert not raised, raised
    return result


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


def holding_encoder(release: asyncio.Event, holder: str):
    """An encoder that answers every batch at once but the one that is exactly [holder]: that one returns only once
    `release` is set, so it keeps the slot it took."""

    async def encoder(texts, options=None, names=None):
        if texts == [holder]:
            await release.wait()
        return vectors_of(texts)

    return encoder


def test_requests_waiting_longer_than_max_wait_leave_without_a_free_slot():
    """The first batch never returns until the second request has been answered: the second can only leave by the
    max_wait timer (without it this test times out), not because a slot came free."""
    first_may_return = asyncio.Event

    async def scenario():
        release = first_may_return()
        encoder = holding_encoder(release, 'first')
        joiner = RequestCoalescer(encoder, max_docs=64, max_wait_ms=50, max_batches_in_flight=1)
        first = asyncio.ensure_future(joiner.encode(['first']))
        await asyncio.sleep(0.01)  # the first batch is out, holding the only slot
        second = await joiner.encode(['second'])
        release.set()
        return second, await first

    second, first = run(scenario())
    assert (first, second) == (vectors_of(['first']), vectors_of(['second']))


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


def test_a_joined_batch_failing_with_any_exception_is_resent_one_request_at_a_time():
    failure = UnicodeEncodeError('utf-8', '\ud800', 0, 1, 'surrogates not allowed')
    encoder = StandInEncoder(refuse='bad text', failure=failure, gate=asyncio.Event())
    requests = [[f'innocent {i}'] for i in range(24)] + [['bad text']]

    async def scenario():
        joiner = RequestCoalescer(encoder, max_docs=64, max_wait_ms=NEVER_MS, max_batches_in_flight=1)
        calls = [asyncio.ensure_future(joiner.encode(texts)) for texts in requests]
        await asyncio.sleep(0)
        encoder.gate.set()
        return await asyncio.gather(*calls, return_exceptions=True)

    results = run(scenario())
    assert isinstance(results[-1], EncoderRefused) and results[-1].status == 500  # answered as a 500 naming it
    assert 'UnicodeEncodeError' in str(results[-1])
    assert results[:-1] == [vectors_of(texts) for texts in requests[:-1]]
    assert any(len(batch) > 1 and 'bad text' in batch for batch in encoder.batches), 'the bad one was joined first'


def test_requests_join_only_requests_with_the_same_options():
    encoder = StandInEncoder(gate=asyncio.Event())
    requests = [([f'text {i}'], ('normalize', i % 3 == 0)) for i in range(30)]

    async def scenario():
        joiner = RequestCoalescer(encoder, max_docs=64, max_wait_ms=NEVER_MS, max_batches_in_flight=1)
        calls = [asyncio.ensure_future(joiner.encode(texts, options)) for texts, options in requests]
        await asyncio.sleep(0)
        encoder.gate.set()
        return await asyncio.gather(*calls)

    assert run(scenario()) == [vectors_of(texts) for texts, _ in requests]
    sent_with = {text: options for texts, options in requests for text in texts}
    for batch, options in zip(encoder.batches, encoder.options, strict=True):
        assert {sent_with[text] for text in batch} == {options}, (batch, options)
    assert max(len(batch) for batch in encoder.batches) > 1, 'requests of the same options were joined'


def test_past_max_queued_texts_a_request_is_refused_at_once_with_retry_after():
    encoder = StandInEncoder(gate=asyncio.Event())

    async def scenario():
        joiner = RequestCoalescer(encoder, max_docs=64, max_wait_ms=NEVER_MS, max_batches_in_flight=1,
                                  max_queued_texts=5)  # fmt: skip
        out = asyncio.ensure_future(joiner.encode(['out']))  # sent at once: not waiting
        await asyncio.sleep(0)
        waiting = [asyncio.ensure_future(joiner.encode([f'w{i}', f'w{i}b'])) for i in range(2)]  # 4 texts waiting
        await asyncio.sleep(0)
        refused = await asyncio.gather(joiner.encode(['a', 'b']), return_exceptions=True)  # 6 > 5
        fits = asyncio.ensure_future(joiner.encode(['fits']))  # 5
        await asyncio.sleep(0)
        encoder.gate.set()
        return refused[0], await asyncio.gather(out, *waiting, fits)

    refused, answered = run(scenario())
    assert isinstance(refused, QueueFull) and refused.status == 429 and refused.headers['Retry-After']
    assert str(refused) == str(QueueFull(4, 5))  # the texts waiting when it was refused, and the limit
    assert answered == [vectors_of(['out']), vectors_of(['w0', 'w0b']), vectors_of(['w1', 'w1b']), vectors_of(['fits'])]


def test_an_unreachable_encoder_fails_the_batch_and_the_next_batch_works():
    calls = {'count': 0}

    async def flaky(texts: list[str], options=None, names=None) -> list:
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


@pytest.mark.parametrize(
    'setting', [{'max_docs': 0}, {'max_batches_in_flight': 0}, {'max_wait_ms': -1}], ids=lambda s: next(iter(s))
)
def test_settings_out_of_range_are_refused(setting):
    message = '^max_docs and max_batches_in_flight must be at least 1, max_wait_ms at least 0$'
    settings = {'max_docs': 1, 'max_wait_ms': 0, 'max_batches_in_flight': 1, **setting}
    with pytest.raises(ValueError, match=message):
        RequestCoalescer(StandInEncoder(), **settings)


def test_the_smallest_settings_are_accepted_and_serve():
    """One text per batch, one batch in flight, no wait: the edges of the ranges above, each a working joiner."""
    encoder = StandInEncoder()

    async def scenario():
        joiner = RequestCoalescer(encoder, max_docs=1, max_wait_ms=0, max_batches_in_flight=1)
        return await asyncio.gather(joiner.encode(['a']), joiner.encode(['b']))

    assert run(scenario()) == [vectors_of(['a']), vectors_of(['b'])]
    assert encoder.batches == [['a'], ['b']]


def test_a_partial_batch_waits_for_the_one_slot_and_then_leaves_joined():
    """max_batches_in_flight=1: while the first batch is out, later requests wait (the timer is NEVER_MS), then
    leave together the moment it returns. A second batch sent early (an in-flight bound off by one) fails this."""
    encoder = StandInEncoder(gate=asyncio.Event())

    async def scenario():
        joiner = RequestCoalescer(encoder, max_docs=64, max_wait_ms=NEVER_MS, max_batches_in_flight=1)
        first = asyncio.ensure_future(joiner.encode(['r0']))
        await asyncio.sleep(0.01)
        later = [asyncio.ensure_future(joiner.encode([f'r{i}'])) for i in (1, 2, 3)]
        await asyncio.sleep(0.05)
        sent_while_busy = [list(batch) for batch in encoder.batches]
        encoder.gate.set()
        return sent_while_busy, await asyncio.gather(first, *later)

    sent_while_busy, answered = run(scenario())
    assert sent_while_busy == [['r0']]
    assert encoder.batches == [['r0'], ['r1', 'r2', 'r3']]
    assert answered == [vectors_of([f'r{i}']) for i in range(4)]


def test_two_slots_send_two_batches_and_hold_the_rest():
    encoder = StandInEncoder(gate=asyncio.Event())

    async def scenario():
        joiner = RequestCoalescer(encoder, max_docs=64, max_wait_ms=NEVER_MS, max_batches_in_flight=2)
        requests = []
        for i in range(4):
            requests.append(asyncio.ensure_future(joiner.encode([f'r{i}'])))
            await asyncio.sleep(0.01)  # each on a turn of its own: no joining of r0 and r1
        sent_while_busy = [list(batch) for batch in encoder.batches]
        encoder.gate.set()
        return sent_while_busy, await asyncio.gather(*requests)

    sent_while_busy, answered = run(scenario())
    assert sent_while_busy == [['r0'], ['r1']]
    assert sorted(map(tuple, encoder.batches)) == [('r0',), ('r1',), ('r2', 'r3')]
    assert answered == [vectors_of([f'r{i}']) for i in range(4)]


def test_a_full_batch_leaves_at_once_although_the_slot_is_taken():
    """max_docs texts waiting make a full batch: it leaves without waiting for a slot or the timer."""
    encoder = StandInEncoder(gate=asyncio.Event())

    async def scenario():
        joiner = RequestCoalescer(encoder, max_docs=3, max_wait_ms=NEVER_MS, max_batches_in_flight=1)
        first = asyncio.ensure_future(joiner.encode(['r0']))
        await asyncio.sleep(0.01)
        full = asyncio.ensure_future(joiner.encode(['a', 'b', 'c']))
        await asyncio.sleep(0.05)
        sent_while_busy = [list(batch) for batch in encoder.batches]
        encoder.gate.set()
        return sent_while_busy, await asyncio.gather(first, full)

    sent_while_busy, answered = run(scenario())
    assert sent_while_busy == [['r0'], ['a', 'b', 'c']]
    assert answered == [vectors_of(['r0']), vectors_of(['a', 'b', 'c'])]


def test_requests_that_fill_max_docs_exactly_share_one_batch():
    encoder = StandInEncoder()
    requests = [['a1', 'a2'], ['b1', 'b2'], ['c1']]

    async def scenario():
        joiner = RequestCoalescer(encoder, max_docs=4, max_wait_ms=NEVER_MS, max_batches_in_flight=1)
        return await asyncio.gather(*(joiner.encode(texts) for texts in requests))

    assert run(scenario()) == [vectors_of(texts) for texts in requests]
    assert encoder.batches == [['a1', 'a2', 'b1', 'b2'], ['c1']]


def test_each_batch_is_reported_as_it_leaves_with_its_requests_and_texts():
    encoder = StandInEncoder()
    reported = []

    async def scenario():
        joiner = RequestCoalescer(encoder, max_docs=64, max_wait_ms=NEVER_MS, max_batches_in_flight=1,
                                  on_batch=lambda requests, texts: reported.append((requests, texts)))  # fmt: skip
        return await asyncio.gather(joiner.encode(['a', 'b']), joiner.encode(['c']))

    run(scenario())
    assert reported == [(2, 3)]


def test_the_queue_full_refusal_says_how_many_wait_and_the_limit():
    refusal = QueueFull(7, 5)
    assert str(refusal) == (
        'the gateway has 7 texts waiting for the encoder, at its limit of 5 (MAX_QUEUED_TEXTS): retry shortly'
    )
    assert (refusal.status, refusal.input_fault, refusal.headers) == (429, False, {'Retry-After': '1'})


def test_an_encoder_answering_too_few_vectors_fails_the_request_as_a_server_error():
    async def short_encoder(texts, options=None, names=None):
        return vectors_of(texts)[:-1]

    async def scenario():
        joiner = RequestCoalescer(short_encoder, max_docs=64, max_wait_ms=NEVER_MS, max_batches_in_flight=1)
        return await asyncio.gather(joiner.encode(['a', 'b']), return_exceptions=True)

    (failed,) = run(scenario())
    assert isinstance(failed, EncoderRefused) and str(failed) == 'the encoder returned 1 of 2 vectors'
    assert (failed.status, failed.input_fault) == (500, False)


def test_an_unexpected_exception_becomes_a_500_that_names_it():
    failure = RuntimeError('boom')
    assert str(as_refusal(failure)) == 'the encoder request failed (RuntimeError: boom)'
    assert (as_refusal(failure).status, as_refusal(failure).input_fault) == (500, False)
    refusal = EncoderRefused('kept', input_fault=True)
    assert as_refusal(refusal) is refusal


def test_each_request_leaves_by_the_max_wait_timer_again_and_again_while_the_slot_stays_taken():
    """The slot is held throughout: requests arriving while the timer runs leave with it; the timer is armed again
    for a request after that. A timer cancelled or never re-armed leaves a request waiting for the slot (a timeout)."""

    async def scenario():
        release = asyncio.Event()
        encoder = holding_encoder(release, 'holds the slot')
        joiner = RequestCoalescer(encoder, max_docs=64, max_wait_ms=100, max_batches_in_flight=1)
        holder = asyncio.ensure_future(joiner.encode(['holds the slot']))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(joiner.encode(['second']))
        await asyncio.sleep(0.01)  # within the second's wait: the third joins the timer's batch
        third = await joiner.encode(['third'])
        fourth = await joiner.encode(['fourth'])  # after the timer fired: armed again
        release.set()
        return await second, third, fourth, await holder

    assert list(run(scenario())) == [vectors_of([text]) for text in ('second', 'third', 'fourth', 'holds the slot')]


def test_after_a_batch_returns_its_slot_is_counted_free_once():
    """One slot: the batch after the first returned goes out, the next one waits for it (never two out at once)."""
    encoder = StandInEncoder(gate=asyncio.Event())

    async def scenario():
        encoder.gate.set()
        joiner = RequestCoalescer(encoder, max_docs=64, max_wait_ms=NEVER_MS, max_batches_in_flight=1)
        await joiner.encode(['first'])
        encoder.gate.clear()
        held = asyncio.ensure_future(joiner.encode(['held']))
        await asyncio.sleep(0.01)
        behind = asyncio.ensure_future(joiner.encode(['behind']))
        await asyncio.sleep(0.05)
        out_while_held = list(encoder.batches)
        encoder.gate.set()
        return out_while_held, await held, await behind

    out_while_held, held, behind = run(scenario())
    assert out_while_held == [['first'], ['held']]
    assert (held, behind) == (vectors_of(['held']), vectors_of(['behind']))


def test_a_bad_request_joined_with_one_other_fails_alone():
    encoder = StandInEncoder(refuse='bad text')

    async def scenario():
        joiner = RequestCoalescer(encoder, max_docs=64, max_wait_ms=NEVER_MS, max_batches_in_flight=1)
        return await asyncio.gather(joiner.encode(['good']), joiner.encode(['bad text']), return_exceptions=True)

    good, bad = run(scenario())
    assert good == vectors_of(['good']) and isinstance(bad, EncoderRefused)
    assert encoder.batches == [['good', 'bad text'], ['good'], ['bad text']]


def test_the_encoder_is_told_each_texts_name_in_the_joined_order():
    """The names the encoder's errors call texts by (the callers' doc ids): joined in the same order as the texts."""
    names_seen = []

    async def encoder(texts, options=None, names=None):
        names_seen.append(names)
        return vectors_of(texts)

    async def scenario():
        joiner = RequestCoalescer(encoder, max_docs=64, max_wait_ms=NEVER_MS, max_batches_in_flight=1)
        return await asyncio.gather(joiner.encode(['a', 'b'], names=['doc-a', 'doc-b']), joiner.encode(['c']))

    assert run(scenario()) == [vectors_of(['a', 'b']), vectors_of(['c'])]
    assert names_seen == [['doc-a', 'doc-b', '#0']]
