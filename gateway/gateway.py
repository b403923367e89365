"""The stack's gateway: Jina's own gRPC and HTTP gateways, with the HTTP one extended for OpenAI-style clients.

Jina's composite gateway serves one protocol per port. `EmbeddingGateway` is that composite gateway with one change:
its HTTP server is `EmbeddingHTTPGateway`, which keeps every route Jina makes (`POST /encode`, `/docs`, ...) and adds

- `POST /v1/embeddings` and `GET /v1/models`, in OpenAI's shapes (as TEI and Infinity serve them),
- `GET /health` (liveness) and `GET /ready` (an encoder replica answers the gRPC health check: its model is loaded),
- limits (413 for a body over MAX_BODY_BYTES; more texts or docs than MAX_INPUTS_PER_REQUEST: 400 on /v1, 422 on
  /encode) and an optional
  API key (API_KEY: every route but `/`, `/health` and `/ready` then needs `Authorization: Bearer <key>`),
- joining of concurrent HTTP requests into one encoder request (coalescer.py): `/v1/embeddings` always, and `/encode`
  for plain requests (docs with `id` and `text`, no `parameters`); other `/encode` requests take Jina's own route.

The gateway never runs the model: it reaches the encoder only through Jina's request schema (TextDoc in, TextDoc with
`embedding` out). For `usage.prompt_tokens` it reads the model's tokenizer (tokenizer.json only, no torch) from the
same Hugging Face cache the encoder uses.
"""

import asyncio
import base64
import hmac
import json
import os
import re
import uuid
from typing import Literal

import grpc
import numpy as np
import orjson
from coalescer import EncoderRefused, RequestCoalescer  # listed before gateway.py in config.yml's py_modules
from discovery import DISCOVERY_TARGET, ReplicaDiscovery
from docarray import DocList
from docarray.documents import TextDoc
from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jina.enums import ProtocolType
from jina.excepts import InternalNetworkError
from jina.parsers.helper import _get_gateway_class
from jina.proto import jina_pb2
from jina.serve.runtimes.gateway.gateway import BaseGateway
from jina.serve.runtimes.gateway.http import HTTPGateway
from jina.serve.runtimes.servers.composite import CompositeBaseServer
from pydantic import BaseModel, Field, StrictStr

MODEL_NAME = os.environ.get('ENCODER_MODEL', 'sentence-transformers/all-MiniLM-L6-v2')
MAX_INPUTS_PER_REQUEST = int(os.environ.get('MAX_INPUTS_PER_REQUEST', '2048'))
MAX_BODY_BYTES = int(os.environ.get('MAX_BODY_BYTES', str(8 * 1024 * 1024)))
MAX_TOKENS_PER_INPUT = int(os.environ.get('MAX_TOKENS_PER_INPUT', '256'))  # all-MiniLM-L6-v2's max_seq_length
# How long shutdown waits for requests in flight to finish. Keep it under compose's stop_grace_period (30 s), after
# which Docker SIGKILLs the container.
DRAIN_TIMEOUT_S = float(os.environ.get('DRAIN_TIMEOUT_S', '20'))
ENCODE_ENDPOINT = '/encode'
OPENAI_EMBEDDINGS = '/v1/embeddings'
EMBEDDING_ROUTES = (ENCODE_ENDPOINT, OPENAI_EMBEDDINGS)
OPENAI_REQUEST_FIELDS = {'input', 'model', 'encoding_format', 'user'}
# uvicorn's line per request: off unless ACCESS_LOG=1 (it cost ~5% of the gateway's CPU at a few hundred requests/s,
# and Docker's log driver more); jina's request metrics on the monitoring port count requests either way.
ACCESS_LOG = os.environ.get('ACCESS_LOG', '').strip().lower() in {'1', 'true', 'yes', 'on'}
# The encoder's /encode without its dynamic-batching wait (executor.py): joined HTTP requests are batches already.
UNBATCHED_ENDPOINT = '/encode_unbatched'
# Joining concurrent HTTP requests (coalescer.py; README, "Batching of HTTP requests"). A batch leaves at once while
# fewer than HTTP_BATCHES_IN_FLIGHT batches per encoder replica are out; otherwise requests gather until one comes
# back, HTTP_BATCH_MAX_DOCS texts wait, or the oldest has waited HTTP_BATCH_WAIT_MS. HTTP_BATCH_MAX_DOCS=1: no joining.
HTTP_BATCH_MAX_DOCS = int(os.environ.get('HTTP_BATCH_MAX_DOCS', '64'))
HTTP_BATCH_WAIT_MS = float(os.environ.get('HTTP_BATCH_WAIT_MS', '20'))
HTTP_BATCHES_IN_FLIGHT = int(os.environ.get('HTTP_BATCHES_IN_FLIGHT', '1'))
OPEN_PATHS = {'/', '/health', '/ready'}  # probes stay open when API_KEY is set


# ---------------------------------------------------------------- OpenAI request and response shapes (pydantic 1)


class EmbeddingsRequest(BaseModel):
    input: StrictStr | list[StrictStr] = Field(
        ..., description='A text, or a list of texts, to embed. Token arrays are not accepted.'
    )
    model: StrictStr | None = Field(None, description='Accepted for compatibility; the served model answers.')
    encoding_format: Literal['float', 'base64'] = 'float'
    user: StrictStr | None = None

    class Config:
        extra = 'forbid'
        schema_extra = {
            'examples': [
                {'input': 'hello world', 'model': 'sentence-transformers/all-MiniLM-L6-v2'},
                {'input': ['first text', 'second text'], 'encoding_format': 'base64'},
            ]
        }


class Embedding(BaseModel):
    object: Literal['embedding'] = 'embedding'
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal['list'] = 'list'
    data: list[Embedding]
    model: str
    usage: Usage


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def openai_error(status: int, message: str, param: str | None = None, headers: dict | None = None) -> JSONResponse:
    kind = {401: 'authentication_error', 413: 'invalid_request_error', 503: 'service_unavailable'}.get(
        status, 'invalid_request_error' if status < 500 else 'server_error'
    )
    body = {'error': {'message': message, 'type': kind, 'param': param, 'code': None}}
    return JSONResponse(status_code=status, content=body, headers=headers)


# ---------------------------------------------------------------- token counting (tokenizer.json, no torch)


class TokenCounter:
    """Counts the tokens the encoder sees per text: with special tokens, truncated to the model's maximum."""

    def __init__(self, model: str) -> None:
        self._tokenizer = None
        try:
            from huggingface_hub import try_to_load_from_cache
            from tokenizers import Tokenizer

            path = model if os.path.isdir(model) else None
            found = os.path.join(path, 'tokenizer.json') if path else try_to_load_from_cache(model, 'tokenizer.json')
            if isinstance(found, str) and os.path.exists(found):
                self._tokenizer = Tokenizer.from_file(found)
                self._tokenizer.no_truncation()  # truncation and padding are applied by hand below
                self._tokenizer.no_padding()
        except Exception:  # noqa: BLE001 - usage then falls back to a whitespace count, logged by the caller
            self._tokenizer = None

    @property
    def exact(self) -> bool:
        return self._tokenizer is not None

    def count(self, texts: list[str]) -> int:
        if self._tokenizer is None:
            return sum(min(len(text.split()) + 2, MAX_TOKENS_PER_INPUT) for text in texts)
        encodings = self._tokenizer.encode_batch(texts)
        return sum(min(len(encoding.ids), MAX_TOKENS_PER_INPUT) for encoding in encodings)


# ---------------------------------------------------------------- the HTTP gateway


class EmbeddingHTTPGateway(HTTPGateway):
    """Jina's HTTP gateway plus the OpenAI-compatible, health and readiness routes, limits and the API key."""

    draining = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.uvicorn_kwargs.setdefault('access_log', ACCESS_LOG)
        # Kept by the guard: the task answering each HTTP request in flight (for the drain to wait for, and to cut
        # off), and how many of them are POSTs to the embedding routes (a gauge in the metrics).
        self.requests_running: set[asyncio.Task] = set()
        self.embeddings_in_flight = 0

    @property
    def app(self) -> FastAPI:
        app = super().app  # Jina builds a new app on each access; setup_server takes it once
        self._token_counter = getattr(self, '_token_counter', None) or TokenCounter(MODEL_NAME)
        if not self._token_counter.exact:
            self.logger.warning(f'no tokenizer.json for {MODEL_NAME} in the HF cache: usage counts are estimates')
        self._coalescer = getattr(self, '_coalescer', None) or RequestCoalescer(
            self._send_batch,
            max_docs=HTTP_BATCH_MAX_DOCS,
            max_wait_ms=HTTP_BATCH_WAIT_MS,
            max_batches_in_flight=HTTP_BATCHES_IN_FLIGHT * max(1, len(self._encoder_addresses())),
            on_batch=self._register_metrics(),
        )
        # The unbatched endpoint is for the coalescer, which validates first: not a public HTTP route.
        app.router.routes = [route for route in app.router.routes if getattr(route, 'path', '') != UNBATCHED_ENDPOINT]
        self._add_routes(app)
        self._add_guards(app)
        return app

    # -- routes

    def _add_routes(self, app: FastAPI) -> None:
        @app.get('/health', tags=['health'], summary='Liveness: the gateway process answers')
        async def health() -> dict:
            return {'status': 'ok'}

        @app.get('/ready', tags=['health'], summary='Readiness: an encoder replica is up with its model loaded')
        async def ready() -> JSONResponse:
            serving, addresses = await self._encoders_serving()
            status = 200 if serving else 503
            return JSONResponse(status_code=status, content={'ready': bool(serving), 'encoders': addresses})

        @app.get('/v1/models', tags=['openai'], summary='The served model, in OpenAI list shape')
        async def models() -> dict:
            return {
                'object': 'list',
                'data': [{'id': MODEL_NAME, 'object': 'model', 'owned_by': 'sentence-transformers'}],
            }

        @app.post(
            OPENAI_EMBEDDINGS,
            tags=['openai'],
            summary='Embeddings, OpenAI-compatible',
            response_model=EmbeddingsResponse,
            responses={400: {'model': ErrorResponse}, 413: {'model': ErrorResponse}, 503: {'model': ErrorResponse}},
        )
        async def embeddings(body: EmbeddingsRequest):
            # Well-formed requests are answered by the guard before they get here (see HTTPGuard); this route answers
            # the others, with pydantic naming what is wrong, and documents the shapes in /docs.
            texts = [body.input] if isinstance(body.input, str) else list(body.input)
            return await self.openai_embeddings(texts, body.encoding_format)

    async def openai_embeddings(self, texts: list[str], encoding_format: str) -> Response:
        """POST /v1/embeddings for validated shapes: the limits, then the vectors in OpenAI's reply shape."""
        if not texts:
            return openai_error(400, '`input` is an empty list: send at least one text', 'input')
        if len(texts) > MAX_INPUTS_PER_REQUEST:
            return openai_error(
                400, f'`input` has {len(texts)} texts, over the limit of {MAX_INPUTS_PER_REQUEST} per request '
                '(MAX_INPUTS_PER_REQUEST): split it', 'input',
            )  # fmt: skip
        blank = [i for i, text in enumerate(texts) if not text.strip()]
        if blank:
            return openai_error(400, f'`input` has empty texts at index {blank[:10]}', 'input')
        try:
            result = await self._coalescer.encode(texts)
        except EncoderRefused as error:
            return openai_error(error.status, str(error), 'input' if error.input_fault else None, error.headers)
        data = [
            {'index': i, 'object': 'embedding', 'embedding': encode_vector(vector, encoding_format)}
            for i, vector in enumerate(result)
        ]
        tokens = self._token_counter.count(texts)
        payload = {
            'object': 'list',
            'data': data,
            'model': MODEL_NAME,
            'usage': {'prompt_tokens': tokens, 'total_tokens': tokens},
        }
        # Rendered here, not by FastAPI: checking and converting a response_model of 32 x 384 floats took 70% of
        # the gateway's CPU (py-spy), which the encoder, on the same cores, then lacked.
        return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type='application/json')

    async def answer_directly(self, path: str, body: bytes) -> Response | None:
        """Answer a well-formed POST /v1/embeddings or plain POST /encode here, without FastAPI's request parsing and
        pydantic models (half the gateway's CPU per one-text request). None: the route answers (and validates)."""
        parsed = read_json(body)
        if path == OPENAI_EMBEDDINGS:
            request = plain_openai_request(parsed)
            return None if request is None else await self.openai_embeddings(*request)
        problem = check_native_body(parsed)
        if problem:
            return JSONResponse(status_code=422, content={'detail': problem})
        docs = plain_native_docs(parsed)
        return None if docs is None else await self.encode_plain_native(docs)

    async def _send_batch(self, texts: list[str]) -> list:
        """One encoder request for `texts`: their vectors in order, or EncoderRefused saying why not."""
        docs = DocList[TextDoc]([TextDoc(text=text) for text in texts])
        try:
            async for response in self.streamer.stream_docs(
                docs,
                request_size=len(docs),
                exec_endpoint=UNBATCHED_ENDPOINT,
                return_results=True,
                return_type=DocList[TextDoc],
            ):
                status = response.header.status
                if status.code == jina_pb2.StatusProto.ERROR:
                    refused = status.exception.name in ('BadRequestError', 'ValidationError')  # the input's fault
                    raise EncoderRefused(status.description, input_fault=refused)
                if not len(response.docs):
                    return []
                return np.stack([doc.embedding for doc in response.docs]).astype(np.float32, copy=False)  # rows
        except InternalNetworkError as error:
            raise EncoderRefused(
                f'the encoder is unavailable, retry shortly ({error.details()})', False, 503, {'Retry-After': '5'}
            ) from error
        raise EncoderRefused('the encoder sent no response', False)

    async def encode_plain_native(self, docs: list[dict]) -> Response:
        """Answer a plain POST /encode (docs with `id` and `text` only) through the coalescer, in Jina's reply shape."""
        try:
            vectors = await self._coalescer.encode([doc['text'] for doc in docs])
        except EncoderRefused as error:  # in /encode's error shape, as Jina's route answers: 422 for the input's fault
            status = 422 if error.input_fault else error.status
            return JSONResponse(status_code=status, content={'detail': str(error)}, headers=error.headers)
        payload = {
            'data': [
                {'id': doc.get('id'), 'text': doc['text'], 'bytes_': None, 'embedding': vector, 'url': None}
                for doc, vector in zip(docs, vectors, strict=True)
            ],
            'parameters': {},
            'header': {'requestId': uuid.uuid4().hex, 'targetExecutor': ''},
        }
        return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type='application/json')

    def _register_metrics(self):
        """The HTTP side's Prometheus metrics, beside jina's own (which count encoder requests, so joined batches, not
        HTTP requests), when the gateway runs with monitoring: the embedding requests being answered (a gauge), and
        histograms of the joined batches (returns their observer for the coalescer)."""
        registry = getattr(self, 'metrics_registry', None)
        if registry is None:
            return None
        from prometheus_client import Gauge, Histogram

        Gauge(
            'gateway_http_embedding_requests_in_flight',
            'HTTP requests to /encode and /v1/embeddings taken and not yet answered (waiting to join, or encoding)',
            registry=registry, namespace='jina',
        ).set_function(lambda: self.embeddings_in_flight)  # fmt: skip

        buckets = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
        requests = Histogram(
            'gateway_joined_batch_requests', 'HTTP requests joined into one encoder request', buckets=buckets,
            registry=registry, namespace='jina',
        )  # fmt: skip
        texts = Histogram(
            'gateway_joined_batch_texts', 'Texts in one joined encoder request (their sum: texts sent over HTTP)',
            buckets=buckets, registry=registry, namespace='jina',
        )  # fmt: skip

        def observe(request_count: int, text_count: int) -> None:
            requests.observe(request_count)
            texts.observe(text_count)

        return observe

    def _encoder_addresses(self) -> list[str]:
        return [address for replicas in deployment_addresses(self.runtime_args).values() for address in replicas]

    async def _encoders_serving(self):
        flat = self._encoder_addresses()
        serving = []
        for address in flat:
            target = address.split('://')[-1]
            try:
                async with grpc.aio.insecure_channel(target) as channel:
                    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    serving.append(address)
            except grpc.RpcError:
                pass
        return serving, {address: address in serving for address in flat}

    async def drain(self, timeout: float) -> None:
        """Refuse new requests (503) and wait, up to `timeout` seconds, for those in flight to be answered; then cut
        off those still running, which answer 503 at once (see HTTPGuard).

        Cut off, not left to Jina's shutdown: a request waiting on a stuck encoder (seen with the encoder paused) was
        not ended by closing the connections to it, and uvicorn waited for it until the stop's SIGKILL."""
        self.draining = True
        if await self._all_answered(within=timeout):
            return
        unanswered = len(self.requests_running)
        self.logger.warning(f'shutting down with {unanswered} HTTP requests unanswered after {timeout} s: 503')
        for task in list(self.requests_running):
            task.cancel()
        await self._all_answered(within=2)  # they answer at once; this is only for the writing of the replies

    async def _all_answered(self, within: float) -> bool:
        deadline = asyncio.get_running_loop().time() + within
        while self.requests_running and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        return not self.requests_running

    # -- guards: draining, API key, body size, OpenAI-shaped validation errors

    def _add_guards(self, app: FastAPI) -> None:

        @app.exception_handler(RequestValidationError)
        async def validation_error(request: Request, error: RequestValidationError):
            if not request.url.path.startswith('/v1/'):
                return await request_validation_exception_handler(request, error)
            first = error.errors()[0] if error.errors() else {}
            if 'JSON' in str(first.get('msg', '')):
                return openai_error(400, 'the body is not valid JSON: send {"input": "...", "model": "..."}')
            field = '.'.join(str(part) for part in first.get('loc', ())[1:]) or None
            return openai_error(400, f'{field or "body"}: {first.get("msg", "invalid request")}', field)

        app.add_middleware(HTTPGuard, gateway=self, api_key=configured_api_key())


def deployment_addresses(runtime_args) -> dict[str, list[str]]:
    """--deployments-addresses: {deployment: [host:port, ...]}."""
    addresses = runtime_args.deployments_addresses or {}
    return json.loads(addresses) if isinstance(addresses, str) else addresses  # the exported command passes JSON


def configured_api_key() -> str:
    """API_KEY, or the contents of the file API_KEY_FILE names (a Docker swarm secret: /run/secrets/...)."""
    path = os.environ.get('API_KEY_FILE', '')
    if not path:
        return os.environ.get('API_KEY', '')
    try:
        key = open(path).read().strip()
    except OSError as error:
        raise SystemExit(f'API_KEY_FILE={path} cannot be read ({error.strerror}): is the secret attached?') from None
    if not key:
        raise SystemExit(f'API_KEY_FILE={path} is empty: put the key in the secret (make swarm-up does, from API_KEY)')
    return key


class HTTPGuard:
    """Every HTTP request passes here first: draining, API key, body size, then the direct answer of the hot routes.

    A plain ASGI middleware, not Starlette's BaseHTTPMiddleware: that one runs each request in a task group with
    memory streams, which cost more CPU per one-text request than joining it into a batch saves (py-spy).
    """

    def __init__(self, app, gateway: 'EmbeddingHTTPGateway', api_key: str) -> None:
        self.app = app
        self.gateway = gateway
        self.expected_authorization = f'Bearer {api_key}'.encode() if api_key else None

    async def __call__(self, scope, receive, send) -> None:
        if scope['type'] != 'http':
            return await self.app(scope, receive, send)
        refusal = self._refusal(scope)
        if refusal is not None:
            return await refusal(scope, receive, send)
        gateway = self.gateway
        embedding = scope['method'] == 'POST' and scope['path'] in EMBEDDING_ROUTES
        task = asyncio.current_task()  # uvicorn answers each request in a task of its own
        gateway.requests_running.add(task)
        gateway.embeddings_in_flight += embedding
        started = False

        async def send_noting_the_start(message) -> None:
            nonlocal started
            if message['type'] == 'http.response.start':
                started = True
            await send(message)

        try:
            direct = None
            if embedding:
                body = await read_body(receive, MAX_BODY_BYTES)
                if body is None:
                    return await body_too_large(None)(scope, receive, send)
                direct = await gateway.answer_directly(scope['path'], body)
                receive = replay_body(body, receive)  # the route reads it again
            if direct is not None:
                if gateway.draining and direct.status_code == 500:
                    direct = unanswered_at_shutdown()
                return await direct(scope, receive, send)
            await self.app(scope, receive, send_noting_the_start)
        except (Exception, asyncio.CancelledError):
            if not gateway.draining or started:
                raise
            # Still running when the drain's budget ran out: cut off by the drain, or Jina's shutdown closed the
            # connection to the encoder under it. Say so, instead of a bare 500 or a closed connection.
            await unanswered_at_shutdown()(scope, receive, send)
        finally:
            gateway.requests_running.discard(task)
            gateway.embeddings_in_flight -= embedding

    def _refusal(self, scope) -> Response | None:
        """A response refusing the request before it is read, or None."""
        path = scope['path']
        if self.gateway.draining and path != '/health':
            return openai_error(503, 'the gateway is shutting down: retry shortly', headers={'Retry-After': '5'})
        headers = dict(scope['headers'])  # lower-case byte names, as ASGI gives them
        if self.expected_authorization and path not in OPEN_PATHS:
            if not hmac.compare_digest(headers.get(b'authorization', b''), self.expected_authorization):
                return openai_error(401, 'missing or wrong API key: send `Authorization: Bearer <API_KEY>`')
        declared = headers.get(b'content-length', b'')
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return body_too_large(int(declared))
        return None


async def read_body(receive, limit: int) -> bytes | None:
    """The whole request body, or None once it passes `limit` bytes (a chunked body declares no length)."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message['type'] != 'http.request':
            break  # the client went away: the route reads the disconnect itself
        chunk = message.get('body', b'')
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        more = message.get('more_body', False)
    return b''.join(chunks)


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


def body_too_large(size: int | None) -> JSONResponse:
    what = f'body of {size} bytes' if size is not None else 'body'
    return openai_error(413, f'{what} is over the limit of {MAX_BODY_BYTES} bytes (MAX_BODY_BYTES)')


def unanswered_at_shutdown() -> JSONResponse:
    return openai_error(
        503, f'the gateway shut down before this request was answered (DRAIN_TIMEOUT_S={DRAIN_TIMEOUT_S:g} s ran '
        'out): retry it', headers={'Retry-After': '5'},
    )  # fmt: skip


def plain_openai_request(body) -> tuple[list[str], str] | None:
    """(texts, encoding_format) of a /v1/embeddings body in EmbeddingsRequest's shape, or None for anything else
    (the route's pydantic model then names the problem)."""
    if not isinstance(body, dict) or body.keys() - OPENAI_REQUEST_FIELDS:
        return None
    texts = body.get('input')
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        return None
    if not all(body.get(name) is None or isinstance(body[name], str) for name in ('model', 'user')):
        return None
    encoding_format = body.get('encoding_format', 'float')
    return (texts, encoding_format) if encoding_format in ('float', 'base64') else None


def read_json(body: bytes):
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None  # FastAPI's validation answers with a 422 naming the problem


def check_native_body(body) -> str | None:
    """Refuse, up front, what Jina's /encode route would otherwise accept and fail on deeper in (as a 500):

    - more than MAX_INPUTS_PER_REQUEST docs (the route splits any number into requests of 100 and encodes them all);
    - docs that carry an `embedding`: it is the output, and arbitrary JSON there breaks docarray's deserialisation;
    - docs without a non-empty string `text`, named by id (or #position): the encoder would refuse them too, but
      only per request of 100 after the route's split, and with pydantic's wording.
    """
    if not isinstance(body, dict):
        return None  # not JSON or not an object: FastAPI's validation answers with a 422 naming the problem
    data = body.get('data')
    docs = data if isinstance(data, list) else [data]
    if len(docs) > MAX_INPUTS_PER_REQUEST:
        return (
            f'`data` has {len(docs)} docs, over the limit of {MAX_INPUTS_PER_REQUEST} per request '
            '(MAX_INPUTS_PER_REQUEST): send them in smaller requests'
        )
    carrying = [i for i, doc in enumerate(docs) if isinstance(doc, dict) and doc.get('embedding') is not None]
    if carrying:
        return f'docs at index {carrying[:10]} carry an `embedding`: leave it out, the encoder fills it'
    return describe_bad_target(body.get('header')) or describe_bad_texts(docs)


def describe_bad_target(header) -> str | None:
    """Jina reads `header.targetExecutor` as a regular expression and answered one that does not compile with a 500
    (schemathesis found it)."""
    if not isinstance(header, dict):
        return None
    target = header.get('targetExecutor', header.get('target_executor'))
    if not isinstance(target, str) or not target:
        return None
    try:
        re.compile(target)
    except re.error as error:
        return (
            f'header.targetExecutor {target!r} is not a valid regular expression ({error}): it selects executors by '
            'name; leave it out, or send e.g. "encoder"'
        )
    return None


# Fields of a TextDoc a plain /encode request may send (the reply's own fields, null): anything more takes Jina's route.
PLAIN_DOC_FIELDS = {'id', 'text', 'url', 'bytes_', 'embedding'}


def plain_native_docs(body) -> list[dict] | None:
    """The docs of an /encode body the coalescer can answer as Jina's route would (checked by check_native_body
    first): `data` only (no `parameters`, no `header`), docs with a string `text`, a string or no `id`, nothing else."""
    if not isinstance(body, dict) or body.keys() - {'data', 'parameters', 'header'}:
        return None
    if body.get('parameters') or body.get('header') is not None:
        return None
    data = body.get('data')
    docs = data if isinstance(data, list) else [data]
    for doc in docs:
        if not isinstance(doc, dict) or doc.keys() - PLAIN_DOC_FIELDS or not isinstance(doc.get('text'), str):
            return None
        if not isinstance(doc.get('id'), (str, type(None))) or doc.get('url') is not None or doc.get('bytes_'):
            return None
    return docs or None


def describe_bad_texts(docs: list) -> str | None:
    problems: dict[str, list[str]] = {}
    for position, doc in enumerate(docs):
        if not isinstance(doc, dict):
            continue  # not an object: FastAPI's validation names it
        text = doc.get('text')
        if text is None:
            problem = 'no text'
        elif not isinstance(text, str):
            problem = f'text is not a string ({type(text).__name__})'
        elif not text.strip():
            problem = 'empty text'
        else:
            continue
        problems.setdefault(problem, []).append(str(doc['id']) if doc.get('id') is not None else f'#{position}')
    if not problems:
        return None
    details = '; '.join(f'{problem}: ids {", ".join(names[:10])}' for problem, names in problems.items())
    return f'{details}. Each doc needs a non-empty string in `text`; nothing in this request was encoded.'


def encode_vector(vector, encoding_format: str):
    values = np.ascontiguousarray(vector, dtype=np.float32)
    if encoding_format == 'base64':
        return base64.b64encode(values.tobytes()).decode('ascii')  # little-endian float32, as OpenAI sends it
    return values  # orjson writes each float32 in its shortest exact form


# ---------------------------------------------------------------- the composite gateway Jina loads


class EmbeddingGateway(CompositeBaseServer, BaseGateway):
    """Jina's CompositeGateway, with EmbeddingHTTPGateway serving the HTTP port."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.servers = []
        for server_kwargs in self._server_kwargs:
            protocol = server_kwargs['runtime_args']['protocol']
            if protocol == ProtocolType.HTTP:
                server_class = EmbeddingHTTPGateway
            else:
                server_class = _get_gateway_class(protocol, works_as_load_balancer=self.works_as_load_balancer)
            server = server_class(**server_kwargs)
            # Jina keeps the Prometheus registry on this composite server only (the sub-servers share its handler).
            server.metrics_registry = getattr(self, 'metrics_registry', None)
            self.servers.append(server)
        self.gateways = self.servers  # jina's name for them, kept for compatibility

    async def setup_server(self):
        await super().setup_server()
        self.discovery_task = None
        if DISCOVERY_TARGET:  # a swarm: the encoder's replicas come and go at addresses found by DNS (discovery.py)
            addresses = deployment_addresses(self.runtime_args)
            (deployment, configured), *others = addresses.items()
            if others:
                raise ValueError(f'ENCODER_DISCOVERY serves one deployment; this flow has {sorted(addresses)}')
            discovery = ReplicaDiscovery(
                self.streamer._connection_pool, deployment, DISCOVERY_TARGET, configured, self.logger,
                on_change=self._replicas_changed,
            )  # fmt: skip
            self.discovery_task = asyncio.create_task(discovery.run())

    def _replicas_changed(self, replicas: int) -> None:
        """The joined HTTP batches out at once scale with the replicas, as with a fixed list of addresses."""
        for server in self.servers:
            if getattr(server, '_coalescer', None):
                server._coalescer.max_batches_in_flight = HTTP_BATCHES_IN_FLIGHT * max(1, replicas)

    async def shutdown(self):
        """Drain, then close.

        Jina's composite shutdown closes at once the streamer its servers share (from the gRPC server's shutdown), so
        under `docker compose stop` every HTTP request in flight failed with a 500. Here each server first stops
        taking requests and lets those in flight finish, for up to DRAIN_TIMEOUT_S; then Jina's shutdown runs.
        """
        await asyncio.gather(*(drain(server, DRAIN_TIMEOUT_S) for server in self.servers))
        if getattr(self, 'discovery_task', None):
            self.discovery_task.cancel()
        await super().shutdown()


async def drain(server, timeout: float) -> None:
    if isinstance(server, EmbeddingHTTPGateway):
        await server.drain(timeout)
    elif isinstance(getattr(server, 'server', None), grpc.aio.Server):
        await server.server.stop(grace=timeout)  # refuses new RPCs, waits for those in flight up to `timeout`
