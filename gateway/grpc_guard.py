"""The gateway's gRPC port behind the same API key as its HTTP port, and closed to the encoder's internal endpoint.

A grpc.aio server interceptor, installed through Jina's own hook for server interceptors (EmbeddingGRPCGateway in
gateway.py), so that it runs before any handler, for every method Jina registers (its data RPCs, `_status`, endpoint
discovery, dry run, server reflection) and for methods that do not exist:

- With API_KEY set, a call needs `authorization: Bearer <key>` metadata (compared in constant time, as on HTTP);
  otherwise it ends with UNAUTHENTICATED before its request is parsed (grpc reads a unary request's bytes, up to
  the message limit), whether the method exists or not.
  The standard health service (`grpc.health.v1.Health`) stays open, for probes, as /health does on HTTP.
- `/encode_unbatched` is the encoder endpoint the HTTP gateway sends its joined batches to, after its own checks: a
  gRPC client naming it gets INVALID_ARGUMENT saying to use `/encode` (it would skip the dynamic batching that keeps
  one client's large requests from starving the others).

Without API_KEY nothing is asked of a caller, as on HTTP: the port is published on 127.0.0.1 only (README, Security).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import grpc
from api_key import bearer_matches

HEALTH_SERVICE = '/grpc.health.v1.Health/'
UNAUTHENTICATED_MESSAGE = 'missing or wrong API key: send the metadata `authorization: Bearer <API_KEY>`'
# The RPCs that carry data requests (Jina's DataRequest or SingleDocumentRequest, each with a header naming its
# endpoint): the streaming Call of Jina's Client, the unary one, and the single-document stream.
DATA_METHODS = (
    '/jina.JinaRPC/Call',
    '/jina.JinaSingleDataRequestRPC/process_single_data',
    '/jina.JinaSingleDocumentRequestRPC/stream_doc',
)


class KeyAndEndpointGuard(grpc.aio.ServerInterceptor):
    def __init__(self, api_key: str, internal_endpoints: tuple[str, ...]) -> None:
        self.api_key = api_key
        self.internal_endpoints = internal_endpoints

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        open_to_all = details.method.startswith(HEALTH_SERVICE)
        if self.api_key and not open_to_all and not self._authorized(details):
            return refusing(handler, grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
        if handler is not None and details.method in DATA_METHODS:
            return checking_endpoints(handler, self.internal_endpoints)
        return handler

    def _authorized(self, details: grpc.HandlerCallDetails) -> bool:
        sent = next((value for key, value in details.invocation_metadata or () if key == 'authorization'), None)
        return bearer_matches(sent, self.api_key)


def refusing(handler: grpc.RpcMethodHandler | None, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` (unary or streaming, each way) that ends the call with `code`, without
    deserializing anything the caller sent. For a method that does not exist, a unary one: the caller learns
    nothing about which methods exist."""

    async def refuse(request_or_iterator, context: grpc.aio.ServicerContext):
        await context.abort(code, message)

    async def refuse_streaming(request_or_iterator, context: grpc.aio.ServicerContext):
        await context.abort(code, message)
        yield  # an async generator, as grpc.aio expects of a streaming-response behaviour

    if handler is None or not (handler.request_streaming or handler.response_streaming):
        return grpc.unary_unary_rpc_method_handler(refuse)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_streaming)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    return grpc.unary_stream_rpc_method_handler(refuse_streaming)


def checking_endpoints(handler: grpc.RpcMethodHandler, internal: tuple[str, ...]) -> grpc.RpcMethodHandler:
    """`handler` with each request's endpoint checked before Jina sees it: one naming an internal endpoint ends the
    call with INVALID_ARGUMENT."""

    def refusal(request) -> str | None:
        endpoint = request.header.exec_endpoint
        return f'`{endpoint}` is internal to the gateway: send your docs to `/encode`' if endpoint in internal else None

    async def check(request, context: grpc.aio.ServicerContext) -> None:
        message = refusal(request)
        if message:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

    if handler.request_streaming and handler.response_streaming:  # Jina Client's Call
        behaviour = handler.stream_stream

        async def call(request_iterator, context):
            refused: list[str] = []
            async for response in answered_until_refused(behaviour, request_iterator, context, refusal, refused):
                yield response
            if refused:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, refused[0])

        return grpc.stream_stream_rpc_method_handler(call, handler.request_deserializer, handler.response_serializer)
    if handler.response_streaming:  # stream_doc
        behaviour = handler.unary_stream

        async def stream(request, context):
            await check(request, context)
            async for response in behaviour(request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(stream, handler.request_deserializer, handler.response_serializer)
    behaviour = handler.unary_unary

    async def single(request, context):
        await check(request, context)
        return await behaviour(request, context)

    return grpc.unary_unary_rpc_method_handler(single, handler.request_deserializer, handler.response_serializer)


async def answered_until_refused(behaviour, request_iterator, context, refusal, refused: list[str]):
    """Jina's streaming `Call` (`behaviour`) over the caller's requests up to the first that `refusal` names (its
    message is appended to `refused`): every request before it is answered, then the responses end.

    Why not abort where the refused request is read: Jina reads the request stream in a task of its own, and an abort
    there left this handler waiting. Why not only end the request stream there: with `results_in_order` (Jina's
    Client's option), Jina waits for a next response for ever when the requests end after every response went out
    (it signals the end on the other of its two queues). So the responses are counted against the requests passed
    on, and once the requests have ended and each has its response, the call ends without waiting on Jina."""
    passed = answered = 0
    requests_ended = asyncio.Event()

    async def checked():
        nonlocal passed
        try:
            async for request in request_iterator:
                message = refusal(request)
                if message:
                    refused.append(message)
                    return
                passed += 1
                yield request
        finally:
            requests_ended.set()

    responses = behaviour(checked(), context).__aiter__()
    next_response = None
    try:
        while True:
            next_response = asyncio.ensure_future(responses.__anext__())
            if not requests_ended.is_set():
                ended = asyncio.ensure_future(requests_ended.wait())
                try:
                    await asyncio.wait({next_response, ended}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    ended.cancel()
            if not next_response.done() and requests_ended.is_set() and answered >= passed:
                return  # nothing more is owed; Jina might not say so
            try:
                response = await next_response
            except StopAsyncIteration:
                return
            answered += 1
            yield response
    finally:
        if next_response is not None and not next_response.done():
            next_response.cancel()
            with contextlib.suppress(BaseException):
                await next_response
