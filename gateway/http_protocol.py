"""uvicorn's HTTP/1.1 protocol (h11) with the bounds it lacks: a time limit on a request's head and a cap on
connections. Without them a client that connects and sends nothing, or its headers a byte a second, holds a
connection (and its memory) for ever: 200 such connections were all still open after 15 s.

- A connection must send a whole request head within HEADER_TIMEOUT_S of connecting, and of starting each next
  request on a kept-alive connection; otherwise it gets 408 and is closed. (uvicorn's own keep-alive timeout only
  runs between a reply and the next request's first byte.)
- Past MAX_CONNECTIONS open connections, a new one gets 503 with Retry-After and is closed.
- The head's size: h11 refuses an incomplete head over MAX_HEADER_BYTES (uvicorn answers 400 and closes); a head that
  arrives whole is measured by HTTPGuard (431).

The body's time limit is HTTPGuard's (it reads every body).
"""

from __future__ import annotations

import asyncio

import h11
from settings import HEADER_TIMEOUT_S, MAX_CONNECTIONS, RETRY_AFTER_S
from uvicorn.protocols.http.h11_impl import H11Protocol


def raw_response(status: int, reason: str, message: str, extra_headers: str = '') -> bytes:
    body = message.encode()
    return (
        f'HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {len(body)}\r\n'
        f'connection: close\r\n{extra_headers}\r\n'
    ).encode() + body


class BoundedH11Protocol(H11Protocol):
    """Pass as uvicorn's `http` protocol class (EmbeddingHTTPGateway does, through Jina's uvicorn_kwargs)."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > MAX_CONNECTIONS:
            message = f'over {MAX_CONNECTIONS} open connections (MAX_CONNECTIONS): retry shortly'
            transport.write(raw_response(503, 'Service Unavailable', message, f'retry-after: {RETRY_AFTER_S}\r\n'))
            transport.close()
            return
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and self.conn.their_state is h11.IDLE:
            self._arm_head_timer()  # the first bytes of a next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_head_timer()  # the head is in

    def connection_lost(self, exc) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a reply is still being written (pipelining): its own cycle ends the connection if need be
        message = f'the request head did not arrive within {HEADER_TIMEOUT_S:g} s (HEADER_TIMEOUT_S)'
        self.transport.write(raw_response(408, 'Request Timeout', message))
        self.transport.close()
