"""The HTTP gateway's front door: every request passes here before any route.

In order: draining (503), the head's size (431), the Host (400, http_origin.py), the API key (401), a body declared
JSON (415, http_origin.py), the declared body size (413), the embedding requests at once (429); then the body is
read, bounded in size (413), time (408) and, all requests together, in memory (503). POST /encode and
POST /v1/embeddings are answered here, whole, by the gateway's one request path (`answer_embedding_request`): they
never reach Jina's or FastAPI's route, which stay for /docs.

A plain ASGI middleware, not Starlette's BaseHTTPMiddleware: that one runs each request in a task group with memory
streams, which cost more CPU per one-text request than joining it into a batch saves (py-spy).
"""

from __future__ import annotations

import asyncio

from api_key import bearer_matches
from http_origin import declared_json, host_allow_list, host_name
from openai_shapes import error_for, refusal_for
from settings import (
    ALLOWED_HOSTS,
    BODY_TIMEOUT_S,
    DRAIN_TIMEOUT_S,
    MAX_BODY_BYTES,
    MAX_BODY_BYTES_IN_FLIGHT,
    MAX_CONCURRENT_REQUESTS,
    MAX_HEADER_BYTES,
    RETRY_AFTER_S,
)

# Answered here, whole, by the gateway's one request path (TEI's /tokenize too: it tokenises texts clients send).
EMBEDDING_ROUTES = ('/encode', '/v1/embeddings', '/embed', '/tokenize')
OPEN_PATHS = {'/', '/health', '/ready'}  # probes stay open when API_KEY is set, and under any Host
# RFC 6750: a 401 says which scheme it wants.
UNAUTHORIZED = {'WWW-Authenticate': 'Bearer'}
RETRY = {'Retry-After': str(RETRY_AFTER_S)}
# A reply sent before the body was read to its end closes the connection: h11 would otherwise go on reading (and
# throwing away) whatever the client sends, a declared 10 GB or a trickle, with no timer running.
CLOSE = {'Connection': 'close'}
# The first bytes of every body are not counted against MAX_BODY_BYTES_IN_FLIGHT: a few large bodies waiting on the
# encoder must not lock out one-text requests (512 of them at once hold at most 32 MiB).
UNCOUNTED_BODY_BYTES = 64 * 1024


class RequestsInFlight:
    """The HTTP requests being answered (the task of each), whether the gateway is draining, and the drain."""

    def __init__(self, logger) -> None:
        self.tasks: set[asyncio.Task] = set()
        self.embeddings = 0  # of them, POSTs to the embedding routes (a gauge in the metrics)
        self.draining = False
        self._logger = logger

    async def drain(self, timeout: float) -> None:
        """Refuse new requests (503) and wait, up to `timeout` seconds, for those in flight to be answered; then cut
        off those still running, which answer 503 at once (see HTTPGuard).

        Cut off, not left to Jina's shutdown: a request waiting on a stuck encoder (seen with the encoder paused) was
        not ended by closing the connections to it, and uvicorn waited for it until the stop's SIGKILL."""
        self.draining = True
        if await self._all_answered(within=timeout):
            return
        self._logger.warning(f'shutting down with {len(self.tasks)} HTTP requests unanswered after {timeout} s: 503')
        for task in list(self.tasks):
            task.cancel()
        await self._all_answered(within=2)  # they answer at once; this is only for the writing of the replies

    async def _all_answered(self, within: float) -> bool:
        deadline = asyncio.get_running_loop().time() + within
        while self.tasks and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        return not self.tasks


class BodyBudget:
    """The bytes of request bodies held at once, all requests together, bounded by MAX_BODY_BYTES_IN_FLIGHT: what
    the connection and concurrency bounds allow (512 x 8 MiB) would not fit the gateway's memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size


class BodyRefused(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


class HTTPGuard:
    def __init__(self, app, gateway, api_key: str) -> None:
        self.app = app
        self.gateway = gateway
        self.in_flight: RequestsInFlight = gateway.in_flight
        self.budget = BodyBudget(MAX_BODY_BYTES_IN_FLIGHT)
        self.api_key = api_key
        self.hosts = host_allow_list(ALLOWED_HOSTS, api_key)

    async def __call__(self, scope, receive, send) -> None:
        if scope['type'] != 'http':
            return await self.app(scope, receive, send)
        refusal = self._refusal(scope)
        if refusal is not None:
            return await refusal(scope, receive, send)
        in_flight, path = self.in_flight, scope['path']
        embedding = scope['method'] == 'POST' and path in EMBEDDING_ROUTES
        if embedding and in_flight.embeddings >= MAX_CONCURRENT_REQUESTS:
            message = f'over {MAX_CONCURRENT_REQUESTS} embedding requests at once (MAX_CONCURRENT_REQUESTS): retry'
            return await error_for(path, 429, message, {**RETRY, **CLOSE})(scope, receive, send)
        task = asyncio.current_task()  # uvicorn answers each request in a task of its own
        in_flight.tasks.add(task)
        in_flight.embeddings += embedding
        held, started = 0, False

        async def send_noting_the_start(message) -> None:
            nonlocal started
            if message['type'] == 'http.response.start':
                started = True
            await send(message)

        try:
            if _has_body(scope):
                try:
                    body = await self._read_body(receive)
                except BodyRefused as refused:
                    headers = {**(refused.headers or {}), **CLOSE}
                    return await error_for(path, refused.status, refused.message, headers)(scope, receive, send)
                held = counted_bytes(len(body))
            else:
                body = b''
            if embedding:
                reply = await self.gateway.answer_embedding_request(path, body)
                if in_flight.draining and reply.status_code == 500:
                    reply = unanswered_at_shutdown(path)
                return await reply(scope, receive, send_noting_the_start)
            await self.app(scope, replay_body(body, receive), send_noting_the_start)
        except (Exception, asyncio.CancelledError):
            if not in_flight.draining or started:
                raise
            # Still running when the drain's budget ran out: cut off by the drain, or Jina's shutdown closed the
            # connection to the encoder under it. Say so, instead of a bare 500 or a closed connection.
            await unanswered_at_shutdown(path)(scope, receive, send)
        finally:
            self.budget.give_back(held)
            in_flight.tasks.discard(task)
            in_flight.embeddings -= embedding

    def _refusal(self, scope):
        """A response refusing the request before its body is read, or None."""
        path = scope['path']
        if self.in_flight.draining and path != '/health':
            return refusal_for(path, 503, 'the gateway is shutting down: retry shortly', {'Retry-After': '5', **CLOSE})
        head_size = len(scope.get('raw_path') or b'') + len(scope.get('query_string') or b'')
        head_size += sum(len(name) + len(value) + 4 for name, value in scope['headers'])
        if head_size > MAX_HEADER_BYTES:
            return error_for(path, 431, f'the request head is {head_size} bytes, over the limit of {MAX_HEADER_BYTES} '
                             '(MAX_HEADER_BYTES): send fewer or shorter headers', CLOSE)  # fmt: skip
        # One Host at most: h11 answers 400 to a request with two (RFC 9112), before it gets here.
        hosts = [value for name, value in scope['headers'] if name == b'host']
        if self.hosts is not None and path not in OPEN_PATHS and hosts:
            host = host_name(hosts[0])
            if not self.hosts.allows(host):
                return error_for(path, 400, f'Host `{host[:100]}` is not served here without an API key: call the '
                                 f'gateway as {self.hosts.describe()}, or name it in ALLOWED_HOSTS',
                                 CLOSE)  # fmt: skip
        headers = dict(scope['headers'])  # lower-case byte names, as ASGI gives them
        if self.api_key and path not in OPEN_PATHS:
            if not bearer_matches(headers.get(b'authorization'), self.api_key):
                return refusal_for(path, 401, 'missing or wrong API key: send `Authorization: Bearer <API_KEY>`',
                                   {**UNAUTHORIZED, **CLOSE})  # fmt: skip
        if scope['method'] in ('POST', 'PUT', 'PATCH') and _has_body(scope):
            content_type = headers.get(b'content-type')
            if not declared_json(content_type):
                declared = content_type.decode('latin-1')[:100] if content_type else 'none'
                return error_for(path, 415, f'the body must be JSON: send `Content-Type: application/json` '
                                 f'(declared: {declared})', CLOSE)  # fmt: skip
        declared = headers.get(b'content-length', b'')
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return error_for(path, 413, body_too_large_message(int(declared)), CLOSE)
        return None

    async def _read_body(self, receive) -> bytes:
        """The whole body, within MAX_BODY_BYTES, BODY_TIMEOUT_S and the shared BodyBudget, or BodyRefused."""
        chunks, size = [], 0
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):  # one timer for the whole body, not one per read
                while True:
                    message = await receive()
                    if message['type'] != 'http.request':
                        raise BodyRefused(400, 'the client went away before sending its body')
                    chunk = message.get('body', b'')
                    if size + len(chunk) > MAX_BODY_BYTES:
                        raise BodyRefused(413, body_too_large_message(None))
                    if not self.budget.take(counted_bytes(size + len(chunk)) - counted_bytes(size)):
                        raise BodyRefused(503, 'the gateway is reading too many large bodies at once '
                                          '(MAX_BODY_BYTES_IN_FLIGHT): retry shortly', RETRY)  # fmt: skip
                    size += len(chunk)
                    chunks.append(chunk)
                    if not message.get('more_body', False):
                        return b''.join(chunks)
        except TimeoutError:
            self.budget.give_back(counted_bytes(size))
            raise BodyRefused(408, f'the body did not arrive within {BODY_TIMEOUT_S:g} s (BODY_TIMEOUT_S): send it '
                              'at once, or in smaller requests') from None  # fmt: skip
        except BaseException:
            self.budget.give_back(counted_bytes(size))
            raise


def counted_bytes(size: int) -> int:
    """The part of a body of `size` bytes that counts against MAX_BODY_BYTES_IN_FLIGHT."""
    return max(0, size - UNCOUNTED_BODY_BYTES)


def _has_body(scope) -> bool:
    for name, value in scope['headers']:
        if name == b'content-length':
            return value != b'0'
        if name == b'transfer-encoding':
            return True
    return False


def replay_body(body: bytes, receive):
    """An ASGI `receive` that gives the body already read, then what the client sends next (a disconnect)."""
    replayed = False

    async def receive_again():
        nonlocal replayed
        if not replayed:
            replayed = True
            return {'type': 'http.request', 'body': body, 'more_body': False}
        return await receive()

    return receive_again


def body_too_large_message(size: int | None) -> str:
    what = f'body of {size} bytes' if size is not None else 'body'
    return f'{what} is over the limit of {MAX_BODY_BYTES} bytes (MAX_BODY_BYTES)'


def unanswered_at_shutdown(path: str):
    return refusal_for(
        path, 503, f'the gateway shut down before this request was answered (DRAIN_TIMEOUT_S={DRAIN_TIMEOUT_S:g} s '
        'ran out): retry it', {'Retry-After': '5'},
    )  # fmt: skip
