"""Joins the texts of concurrent HTTP requests into one encoder request, and hands each request its own vectors.

Why: curl and OpenAI clients send one text, or a few, per request. Sent one by one, each pays a Jina request (protobuf,
a gRPC hop, the executor's request handling) that costs more CPU than encoding its text, on the cores the model needs.
Joined, the encoder sees tens of texts per request (docs/benchmarks.md has the before and after).

The policy is continuous batching, as TEI and Infinity do it: a batch leaves as soon as the encoder has room for it,
so a lone request waits for nothing. The encoder "has room" while fewer than `max_batches_in_flight` batches are out
(two per replica: one encoding, one ready behind it). When it has none, requests gather until a batch leaves, which
is when one comes back, when `max_docs` texts are waiting, or when the oldest has waited `max_wait_ms`, whichever is
first. The only latency joining adds is that wait, and only while the encoder is busy anyway.

A request's texts are never split across batches, so its vectors come back together and in order. Requests join only
requests with the same options (per-request `parameters` of /encode: normalize, batch_size). A batch that fails for
any reason but the encoder being unavailable (the gateway validates every request first, so this should not happen)
is resent request by request, so that only the faulty one gets the error: a bad request never fails another.

At most `max_queued_texts` texts wait; a request that would pass it is refused at once (429 with Retry-After), as TEI
and Infinity refuse when their queue is full: waiting longer only makes every answer later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field


class EncoderRefused(Exception):
    """The encoder answered with an error. `input_fault`: it blamed the input (a 4xx for the caller), else a 5xx."""

    def __init__(self, message: str, input_fault: bool, status: int | None = None, headers: dict | None = None):
        super().__init__(message)
        self.input_fault = input_fault
        self.status = status or (400 if input_fault else 500)
        self.headers = headers


class QueueFull(EncoderRefused):
    def __init__(self, waiting: int, limit: int) -> None:
        super().__init__(
            f'the gateway has {waiting} texts waiting for the encoder, at its limit of {limit} (MAX_QUEUED_TEXTS): '
            'retry shortly', False, 429, {'Retry-After': '1'},
        )  # fmt: skip


# Sends texts with their options (and the names the encoder's errors call them by) to the encoder as one request;
# returns one vector per text, in order, or raises EncoderRefused.
SendBatch = Callable[[list[str], Hashable, list[str]], Awaitable[list]]


@dataclass
class _Waiting:
    texts: list[str]
    options: Hashable
    names: list[str]
    reply: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class RequestCoalescer:
    def __init__(
        self,
        send_batch: SendBatch,
        max_docs: int,
        max_wait_ms: float,
        max_batches_in_flight: int,
        on_batch: Callable[[int, int], None] | None = None,
        max_queued_texts: int | None = None,
    ) -> None:
        """`on_batch(requests, texts)` is told the size of each batch as it leaves (for the metrics)."""
        if max_docs < 1 or max_batches_in_flight < 1 or max_wait_ms < 0:
            raise ValueError('max_docs and max_batches_in_flight must be at least 1, max_wait_ms at least 0')
        self._send_batch = send_batch
        self._on_batch = on_batch
        self.max_docs = max_docs
        self.max_wait_s = max_wait_ms / 1000
        self.max_batches_in_flight = max_batches_in_flight
        self.max_queued_texts = max_queued_texts
        self._waiting: list[_Waiting] = []
        self._waiting_docs = 0
        self._batches_in_flight = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()  # batches being sent: referenced, so they are not garbage-collected

    async def encode(self, texts: list[str], options: Hashable = None, names: list[str] | None = None) -> list:
        """The vectors of `texts`, in order, encoded together with whatever other requests of the same `options`
        are waiting; QueueFull at once when the texts waiting would pass max_queued_texts. `names`: what the
        encoder's errors call each text (the caller's doc ids; by default #0, #1, ...)."""
        limit = self.max_queued_texts
        if limit is not None and self._waiting and self._waiting_docs + len(texts) > limit:
            raise QueueFull(self._waiting_docs, limit)
        waiting = _Waiting(texts, options, names or [f'#{i}' for i in range(len(texts))])
        self._waiting.append(waiting)
        self._waiting_docs += len(texts)
        # Decided on the next turn of the event loop, so that requests read in this turn join the batch; there, in
        # one place, a batch leaves or the max-wait timer is armed.
        asyncio.get_running_loop().call_soon(self._send_waiting)
        return await waiting.reply

    def _send_waiting(self, waited_enough: bool = False) -> None:
        """Send the waiting requests as batches of up to max_docs texts while the encoder has room (or while they
        have waited max_wait_ms, or a full batch is waiting)."""
        if waited_enough:
            self._timer = None
        while self._waiting and (
            waited_enough or self._batches_in_flight < self.max_batches_in_flight or self._waiting_docs >= self.max_docs
        ):
            batch = self._take_batch()
            self._batches_in_flight += 1
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if not self._waiting and self._timer is not None:
            self._timer.cancel()
            self._timer = None
        elif self._waiting and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.max_wait_s, self._send_waiting, True)

    def _take_batch(self) -> list[_Waiting]:
        """The oldest waiting request and those after it with the same options, up to max_docs texts (at least one
        request, however many texts it has). Requests with other options keep their places."""
        options = self._waiting[0].options
        batch, docs, left = [], 0, []
        for waiting in self._waiting:
            if waiting.options == options and (not batch or docs + len(waiting.texts) <= self.max_docs):
                batch.append(waiting)
                docs += len(waiting.texts)
            else:
                left.append(waiting)
        self._waiting = left
        self._waiting_docs -= docs
        return batch

    async def _send(self, batch: list[_Waiting]) -> None:
        if self._on_batch is not None:
            self._on_batch(len(batch), sum(len(waiting.texts) for waiting in batch))
        try:
            await self._answer(batch)
        finally:
            self._batches_in_flight -= 1
            self._send_waiting()

    async def _answer(self, batch: list[_Waiting]) -> None:
        texts = [text for waiting in batch for text in waiting.texts]
        try:
            names = [name for waiting in batch for name in waiting.names]
            vectors = await self._send_batch(texts, batch[0].options, names)
            if len(vectors) != len(texts):
                raise EncoderRefused(f'the encoder returned {len(vectors)} of {len(texts)} vectors', False)
        except Exception as error:  # noqa: BLE001 - every request of the batch must be answered, whatever happened
            if len(batch) > 1 and not _encoder_unavailable(error):
                # One at a time, within this batch's slot: only the faulty one fails, and the encoder that just
                # failed is not sent the batch's requests all at once. Callers that went away are skipped.
                for waiting in batch:
                    if not waiting.reply.done():
                        await self._answer([waiting])
            else:
                _settle(batch, error=as_refusal(error))
            return
        start = 0
        for waiting in batch:
            end = start + len(waiting.texts)
            if not waiting.reply.done():  # done: its caller went away (the client disconnected)
                waiting.reply.set_result(vectors[start:end])
            start = end


def as_refusal(error: Exception) -> EncoderRefused:
    """`error` as the EncoderRefused the routes answer (a 500 naming it, for what no code expected)."""
    if isinstance(error, EncoderRefused):
        return error
    return EncoderRefused(f'the encoder request failed ({type(error).__name__}: {error})', False)


def _encoder_unavailable(error: Exception) -> bool:
    """The encoder is down or restarting: every request would fail alone too, so resending them one by one would
    only multiply the load on it as it comes back."""
    return isinstance(error, EncoderRefused) and error.status == 503


def _settle(batch: list[_Waiting], error: BaseException) -> None:
    for waiting in batch:
        if not waiting.reply.done():
            waiting.reply.set_exception(error)
