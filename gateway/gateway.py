"""The stack's gateway: Jina's own gRPC and HTTP gateways, with the HTTP one extended for OpenAI-style clients.

Jina's composite gateway serves one protocol per port. `EmbeddingGateway` is that composite gateway with servers of
its own: its HTTP server is `EmbeddingHTTPGateway`, which keeps Jina's `/docs` and `/openapi.json` and adds

- `POST /v1/embeddings` and `GET /v1/models`, in OpenAI's shapes (as TEI and Infinity serve them),
- `GET /health` (liveness) and `GET /ready` (an encoder replica answers the gRPC health check: its model is loaded;
  readiness.py keeps the answer),
- one request path for `POST /encode` and `POST /v1/embeddings`, whatever their `parameters` or `header`: the guard
  (http_guard.py) bounds and reads the body, request_checks.py parses and checks it, long texts are cut to what the
  model reads (token_counting.py), and the coalescer (coalescer.py) joins the texts of concurrent requests into
  encoder requests. Every accepted doc comes back, in order, or the request fails as a whole saying why. Jina's own
  `/encode` route (which split a request into requests of 100 and answered with the first) is never reached,
- the bounds on connections and on the time a client takes (http_protocol.py), an optional API key, JSON bodies only
  and a Host allow-list without a key (http_origin.py); Jina's /status and /dry_run are not served.

Its gRPC port is Jina's, behind the same key and closed to the encoder's internal endpoint (grpc_guard.py).

The gateway never runs the model: it reaches the encoder only through Jina's request schema (TextDoc in, TextDoc with
`embedding` out). For `usage.prompt_tokens` and the cut it reads the model's tokenizer (tokenizer.json only, no torch)
from the same Hugging Face cache the encoder uses. Settings: settings.py.
"""

import asyncio
import base64
import dataclasses
import json
import uuid

import grpc
import numpy as np
import orjson
from api_key import bearer_matches, configured_api_key
from coalescer import EncoderRefused, RequestCoalescer  # listed before gateway.py in config.yml's py_modules
from discovery import DISCOVERY_TARGET, ReplicaDiscovery
from docarray import DocList
from docarray.documents import TextDoc
from encode_inputs import EncodeOptions
from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from grpc_guard import KeyAndEndpointGuard
from http_guard import HTTPGuard, RequestsInFlight
from http_protocol import BoundedH11Protocol
from jina.enums import ProtocolType
from jina.excepts import InternalNetworkError
from jina.parsers.helper import _get_gateway_class
from jina.proto import jina_pb2
from jina.serve.runtimes.gateway.gateway import BaseGateway
from jina.serve.runtimes.gateway.grpc import GRPCGateway
from jina.serve.runtimes.gateway.http import HTTPGateway
from jina.serve.runtimes.servers.composite import CompositeBaseServer
from model_info import ModelInfo, read_model_info
from openai_shapes import EmbeddingsRequest, EmbeddingsResponse, ErrorResponse, native_error, openai_error
from readiness import EncoderReadiness
from request_checks import (
    EncodeRequest,
    OpenAIRequest,
    RequestProblem,
    TEIRequest,
    check_encode_request,
    check_openai_request,
    check_prompt_name,
    check_tei_request,
    parse_and_check,
)
from settings import (
    ACCESS_LOG,
    AUTO_TRUNCATE,
    DEFAULT_PROMPT_NAME,
    DRAIN_TIMEOUT_S,
    HTTP_BATCH_MAX_DOCS,
    HTTP_BATCH_WAIT_MS,
    HTTP_BATCHES_IN_FLIGHT,
    INLINE_TEXT_CHARS,
    KEEP_ALIVE_TIMEOUT_S,
    MATRYOSHKA_DIMENSIONS,
    MAX_CONCURRENT_REQUESTS,
    MAX_GRPC_ANSWER_BYTES,
    MAX_GRPC_MESSAGE_BYTES,
    MAX_HEADER_BYTES,
    MAX_INPUTS_PER_REQUEST,
    MAX_QUEUED_TEXTS,
    MAX_TOKENS_PER_INPUT,
    MODEL_DTYPE,
    MODEL_NAME,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
)
from tei_shapes import TEI_ROUTES, EmbedRequest, SimpleToken, TEIError, TokenizeRequest, tei_error
from token_counting import TokenCounter

TOKENIZE_AT_ONCE = 2  # POST /tokenize requests worked on at once (answer_tokenize)
ENCODE_ENDPOINT = '/encode'
OPENAI_EMBEDDINGS = '/v1/embeddings'
# The encoder's /encode without its dynamic-batching wait (executor.py): joined HTTP requests are batches already.
UNBATCHED_ENDPOINT = '/encode_unbatched'
CLOSED_ROUTES = (UNBATCHED_ENDPOINT, '/status', '/dry_run')


class EmbeddingHTTPGateway(HTTPGateway):
    """Jina's HTTP gateway plus the OpenAI-compatible, health and readiness routes, one request path, the bounds."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.uvicorn_kwargs.setdefault('access_log', ACCESS_LOG)
        self.uvicorn_kwargs.setdefault('http', BoundedH11Protocol)
        self.uvicorn_kwargs.setdefault('h11_max_incomplete_event_size', MAX_HEADER_BYTES)
        self.uvicorn_kwargs.setdefault('timeout_keep_alive', KEEP_ALIVE_TIMEOUT_S)
        self.uvicorn_kwargs.update(tls_files())
        self.in_flight = RequestsInFlight(self.logger)

    @property
    def app(self) -> FastAPI:
        app = super().app  # Jina builds a new app on each access; setup_server takes it once
        # The model's own limit, dimension and prompts, from its files; a default prompt or Matryoshka dimensions it
        # cannot serve stop the gateway here, saying why.
        self._model = getattr(self, '_model', None) or read_model_info(
            MODEL_NAME, MAX_TOKENS_PER_INPUT, DEFAULT_PROMPT_NAME, MATRYOSHKA_DIMENSIONS
        )
        self._token_counter = getattr(self, '_token_counter', None) or TokenCounter(MODEL_NAME, self._model.max_tokens)
        if not AUTO_TRUNCATE and not self._token_counter.exact:
            raise SystemExit(f'AUTO_TRUNCATE=false needs the tokenizer of {MODEL_NAME} in the gateway\'s model cache '
                             '(tokenizer.json) to tell which texts are too long: fill it (make model)')  # fmt: skip
        self._tokenizing = getattr(self, '_tokenizing', None) or asyncio.Semaphore(TOKENIZE_AT_ONCE)
        if not self._token_counter.exact:
            self.logger.warning(f'no tokenizer.json for {MODEL_NAME} in the HF cache: usage counts are estimates')
        self._coalescer = getattr(self, '_coalescer', None) or RequestCoalescer(
            self._send_batch,
            max_docs=HTTP_BATCH_MAX_DOCS,
            max_wait_ms=HTTP_BATCH_WAIT_MS,
            max_batches_in_flight=HTTP_BATCHES_IN_FLIGHT * max(1, len(self._encoder_addresses())),
            on_batch=self._register_metrics(),
            max_queued_texts=MAX_QUEUED_TEXTS,
        )
        self._api_key = configured_api_key()
        self._readiness = getattr(self, '_readiness', None) or EncoderReadiness(self._encoder_addresses(), self.logger)
        # Not public HTTP routes: the unbatched endpoint is for the coalescer, which validates first; Jina's /status
        # tells the platform, a MAC-derived id and the JINA_* environment (the topology), and /dry_run sends a
        # request through the whole flow, for anyone who asks.
        app.router.routes = [route for route in app.router.routes if getattr(route, 'path', '') not in CLOSED_ROUTES]
        self._add_routes(app)
        self._add_guards(app)
        return app

    # -- routes

    def _add_routes(self, app: FastAPI) -> None:
        @app.get('/health', tags=['health'], summary='Liveness: the gateway process answers')
        async def health() -> dict:
            return {'status': 'ok'}

        @app.get('/ready', tags=['health'], summary='Readiness: an encoder replica is up with its model loaded')
        async def ready(request: Request) -> JSONResponse:
            serving = await self._readiness.current()
            up = sum(serving.values())
            content = {'ready': up > 0, 'encoders': {'serving': up, 'total': len(serving)}}
            # The encoders' internal addresses, only to a caller that holds the key (/ready is open to probes).
            if bearer_matches(request.headers.get('authorization'), self._api_key):
                content['addresses'] = serving
            return JSONResponse(status_code=200 if content['ready'] else 503, content=content)

        @app.get('/v1/models', tags=['openai'], summary='The served model, in OpenAI list shape')
        async def models() -> dict:
            return {
                'object': 'list',
                'data': [{'id': self._model.name, 'object': 'model', 'owned_by': 'sentence-transformers'}],
            }

        @app.get('/info', tags=['tei'], summary="The served model and the server's limits, in TEI's shape")
        async def info() -> dict:
            return tei_info(self._model)

        @app.post('/embed', tags=['tei'], summary="Embeddings in TEI's shape", response_model=list[list[float]],
                  responses={413: {'model': TEIError}, 422: {'model': TEIError}, 429: {'model': TEIError}})  # fmt: skip
        async def embed(body: EmbedRequest):
            """Documents TEI's /embed in /docs; answered by the guard (answer_embedding_request)."""
            raise AssertionError('answered by HTTPGuard')

        @app.post('/tokenize', tags=['tei'], summary="The model's tokens of each text, in TEI's shape",
                  response_model=list[list[SimpleToken]], responses={422: {'model': TEIError}})  # fmt: skip
        async def tokenize(body: TokenizeRequest):
            """Documents TEI's /tokenize in /docs; answered by the guard (answer_embedding_request)."""
            raise AssertionError('answered by HTTPGuard')

        @app.post(
            OPENAI_EMBEDDINGS,
            tags=['openai'],
            summary='Embeddings, OpenAI-compatible',
            response_model=EmbeddingsResponse,
            responses={400: {'model': ErrorResponse}, 413: {'model': ErrorResponse}, 503: {'model': ErrorResponse}},
        )
        async def embeddings(body: EmbeddingsRequest):
            """Documents the shapes in /docs. Every POST here is answered by the guard (answer_embedding_request)
            before it reaches this route, as are those to Jina's /encode."""
            raise AssertionError('answered by HTTPGuard')

    # -- the one request path of POST /encode and POST /v1/embeddings

    async def answer_embedding_request(self, path: str, body: bytes) -> Response:
        model = self._model
        if path == OPENAI_EMBEDDINGS:
            try:
                request = parse_and_check(
                    body, lambda parsed: check_openai_request(parsed, MAX_INPUTS_PER_REQUEST, model)
                )
            except RequestProblem as problem:
                return openai_error(400, problem.message, problem.param)
            return await self.answer_openai(request)
        if path in TEI_ROUTES:
            try:
                request = parse_and_check(
                    body, lambda parsed: check_tei_request(parsed, path, MAX_INPUTS_PER_REQUEST, model)
                )
            except RequestProblem as problem:
                return tei_error(422, problem.message)
            if path == '/tokenize':
                return await self.answer_tokenize(request)
            return await self.answer_tei_embed(request)
        try:
            request = parse_and_check(
                body, lambda parsed: check_encode_request(parsed, MAX_INPUTS_PER_REQUEST, self._executor_names())
            )
        except RequestProblem as problem:
            return native_error(422, problem.message)
        return await self.answer_encode(request)

    async def answer_openai(self, request: OpenAIRequest) -> Response:
        try:
            texts, tokens = await self._prepare(request.texts, request.prompt, AUTO_TRUNCATE, count=True)
        except RequestProblem as problem:
            return openai_error(400, problem.message, 'input')
        try:
            vectors = await self._coalescer.encode(texts, EncodeOptions(), [f'input[{i}]' for i in range(len(texts))])
        except EncoderRefused as error:
            return openai_error(error.status, str(error), 'input' if error.input_fault else None, error.headers)
        vectors = shortened(vectors, request.dimensions, self._model.normalized)
        payload = {
            'object': 'list',
            'data': [
                {'index': i, 'object': 'embedding', 'embedding': encode_vector(vector, request.encoding_format)}
                for i, vector in enumerate(vectors)
            ],
            'model': self._model.name,
            'usage': {'prompt_tokens': tokens, 'total_tokens': tokens},
        }
        # Rendered here, not by FastAPI: checking and converting a response_model of 32 x 384 floats took 70% of
        # the gateway's CPU (py-spy), which the encoder, on the same cores, then lacked.
        return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type='application/json')

    async def answer_tei_embed(self, request: TEIRequest) -> Response:
        """POST /embed in TEI's shape: a list with one vector per text, in order."""
        truncate = AUTO_TRUNCATE if request.truncate is None else request.truncate
        try:
            texts, _ = await self._prepare(request.texts, request.prompt, truncate, count=False)
        except RequestProblem as problem:
            return tei_error(413, problem.message)  # TEI's status for an input over the model's limit
        try:
            names = [f'inputs[{i}]' for i in range(len(texts))]
            vectors = await self._coalescer.encode(texts, EncodeOptions(normalize=request.normalize), names)
        except EncoderRefused as error:
            return tei_error(422 if error.input_fault else error.status, str(error), error.headers)
        vectors = shortened(vectors, request.dimensions, request.normalize)  # TEI: cut, then normalise
        return Response(orjson.dumps(vectors, option=orjson.OPT_SERIALIZE_NUMPY), media_type='application/json')

    async def answer_tokenize(self, request: TEIRequest) -> Response:
        """POST /tokenize in TEI's shape: per text, its tokens (id, text, special, start, stop), the prompt's first."""
        counter = self._token_counter
        if not counter.exact:
            return tei_error(503, f'no tokenizer.json for {self._model.name} in the gateway\'s model cache: '
                             'fill it (make model)', {'Retry-After': '60'})  # fmt: skip
        texts = [request.prompt + text for text in request.texts]
        # A token costs an object in the answer (~100 bytes of JSON, a few hundred in memory) where an embedding's
        # size is fixed: few /tokenize requests are worked on at once, so that many cannot add up in memory.
        async with self._tokenizing:
            tokens = await asyncio.to_thread(lambda: [counter.tokens(t, request.add_special_tokens) for t in texts])
            return Response(orjson.dumps(tokens), media_type='application/json')

    async def answer_encode(self, request: EncodeRequest) -> Response:
        """POST /encode in Jina's reply shape: every doc as sent (id, text, url), with its embedding, in order."""
        docs = request.docs
        try:
            prompt = check_prompt_name(request.options.prompt_name, self._model)
            texts, _ = await self._prepare(request.texts, prompt, AUTO_TRUNCATE, count=False)
        except RequestProblem as problem:
            return native_error(422, problem.message)
        # The prompt is in the texts now: the encoder's /encode_unbatched never adds one.
        options = dataclasses.replace(request.options, prompt_name=None)
        try:
            names = [doc.get('id') or f'#{position}' for position, doc in enumerate(docs)]
            vectors = await self._coalescer.encode(texts, options, names) if texts else []
        except EncoderRefused as error:  # in /encode's error shape, as Jina's route answers: 422 for the input's fault
            return native_error(422 if error.input_fault else error.status, str(error), error.headers)
        payload = {
            'data': [
                {'id': doc.get('id'), 'text': doc['text'], 'bytes_': None, 'embedding': vector, 'url': doc.get('url')}
                for doc, vector in zip(docs, vectors, strict=True)
            ],
            'parameters': request.options.as_parameters(),
            'header': {'requestId': request.request_id or uuid.uuid4().hex, 'targetExecutor': ''},
        }
        return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type='application/json')

    async def _prepare(self, texts: list[str], prompt: str, truncate: bool, count: bool) -> tuple[list[str], int]:
        """The texts after the prompt, cut to what the model reads (truncate; else RequestProblem naming each text
        over the limit), and (count) their tokens for `usage`, the prompt's included. Long ones in a worker thread:
        tokenising even a cut 8 MB text's prefixes takes milliseconds the event loop cannot spare."""
        counter = self._token_counter
        if prompt:
            texts = [prompt + text for text in texts]

        def prepare() -> tuple[list[str], int]:
            if not truncate:
                refuse_texts_over_the_limit(counter, texts)
            cut = counter.cut(texts)
            return cut, counter.count(cut) if count else 0

        if sum(len(text) for text in texts) <= INLINE_TEXT_CHARS:
            return prepare()
        return await asyncio.to_thread(prepare)

    async def _send_batch(self, texts: list[str], options: EncodeOptions, names: list[str]) -> np.ndarray:
        """One encoder request for `texts`: their vectors in order, or EncoderRefused saying why not. The docs carry
        the caller's names for them (ids, or input[i]), so that the encoder's errors name what the caller sent."""
        docs = DocList[TextDoc]([TextDoc(id=name, text=text) for name, text in zip(names, texts, strict=True)])
        try:
            async for response in self.streamer.stream_docs(
                docs,
                request_size=len(docs),
                exec_endpoint=UNBATCHED_ENDPOINT,
                parameters=options.as_parameters() or None,
                return_results=True,
                return_type=DocList[TextDoc],
            ):
                status = response.header.status
                if status.code == jina_pb2.StatusProto.ERROR:
                    refused = status.exception.name in ('BadRequestError', 'ValidationError')  # the input's fault
                    raise EncoderRefused(status.description, input_fault=refused)
                if not len(response.docs):
                    return np.zeros((0, 0), dtype=np.float32)
                rows = np.stack([doc.embedding for doc in response.docs]).astype(np.float32, copy=False)
                if not np.isfinite(rows).all():  # the encoder checks this too (issue 28); a NaN is never served
                    raise EncoderRefused('the encoder returned a non-finite (NaN or inf) embedding', False)
                return rows
        except InternalNetworkError as error:
            raise EncoderRefused(
                f'the encoder is unavailable, retry shortly ({error.details()})', False, 503, {'Retry-After': '5'}
            ) from error
        raise EncoderRefused('the encoder sent no response', False)

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
        ).set_function(lambda: self.in_flight.embeddings)  # fmt: skip

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

    def _executor_names(self) -> tuple[str, ...]:
        """The names a `header.targetExecutor` may select (the flow's deployments), read once."""
        if getattr(self, '_names_of_executors', None) is None:
            self._names_of_executors = tuple(deployment_addresses(self.runtime_args)) or ('encoder',)
        return self._names_of_executors

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


def refuse_texts_over_the_limit(counter: TokenCounter, texts: list[str]) -> None:
    over = counter.over_limit(texts)
    if over:
        listed = ', '.join(
            f'[{index}] ({tokens} tokens)' if tokens else f'[{index}] (more than {counter.max_tokens} tokens)'
            for index, tokens in over[:10]
        ) + (f' and {len(over) - 10} more' if len(over) > 10 else '')
        raise RequestProblem(
            f'texts {listed} are longer than the {counter.max_tokens} tokens the model reads, and this server does '
            'not cut them (AUTO_TRUNCATE=false): shorten or split them, or ask for the cut (TEI: "truncate": true)'
        )


def shortened(vectors: np.ndarray, dimensions: int | None, normalized: bool) -> np.ndarray:
    """Matryoshka: the first `dimensions` values of each vector, made unit length again when the model's are."""
    if dimensions is None:
        return vectors
    vectors = np.ascontiguousarray(vectors[:, :dimensions], dtype=np.float32)
    if normalized:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, np.finfo(np.float32).tiny)
    return vectors


def tei_info(model: ModelInfo) -> dict:
    """GET /info: TEI's fields, from the model's files and this server's settings."""
    return {
        'model_id': model.name,
        'model_sha': model.revision,
        'model_dtype': MODEL_DTYPE,
        'model_type': {'embedding': {'pooling': model.pooling or 'unknown'}},
        'max_concurrent_requests': MAX_CONCURRENT_REQUESTS,
        'max_input_length': model.max_tokens,
        'max_batch_tokens': HTTP_BATCH_MAX_DOCS * model.max_tokens,
        'max_batch_requests': None,
        'max_client_batch_size': MAX_INPUTS_PER_REQUEST,
        'auto_truncate': AUTO_TRUNCATE,
        'tokenization_workers': 1,
        'version': 'sentence-encoder (Jina gateway)',
        'sha': None,
        'docker_label': None,
        # Beyond TEI's fields: what a client needs to choose `dimensions` and `prompt_name`.
        'dimension': model.dimension,
        'matryoshka_dimensions': list(model.matryoshka_dimensions),
        'prompts': model.prompts,
        'default_prompt_name': model.default_prompt_name,
    }


def deployment_addresses(runtime_args) -> dict[str, list[str]]:
    """--deployments-addresses: {deployment: [host:port, ...]}."""
    addresses = runtime_args.deployments_addresses or {}
    return json.loads(addresses) if isinstance(addresses, str) else addresses  # the exported command passes JSON


def tls_files() -> dict[str, str]:
    """uvicorn's ssl_certfile / ssl_keyfile from TLS_CERT_FILE / TLS_KEY_FILE, checked readable at start: both or
    neither, else the gateway does not start, saying which is missing."""
    files = {'ssl_certfile': TLS_CERT_FILE, 'ssl_keyfile': TLS_KEY_FILE}
    if not any(files.values()):
        return {}
    for setting, path in (('TLS_CERT_FILE', TLS_CERT_FILE), ('TLS_KEY_FILE', TLS_KEY_FILE)):
        if not path:
            raise SystemExit(f'{setting} is not set: HTTPS needs both TLS_CERT_FILE and TLS_KEY_FILE (PEM files)')
        try:
            open(path, 'rb').close()
        except OSError as error:
            raise SystemExit(f'{setting}={path} cannot be read ({error.strerror}): is the secret attached?') from None
    return files


def encode_vector(vector, encoding_format: str):
    values = np.ascontiguousarray(vector, dtype=np.float32)
    if encoding_format == 'base64':
        return base64.b64encode(values.tobytes()).decode('ascii')  # little-endian float32, as OpenAI sends it
    return values  # orjson writes each float32 in its shortest exact form


# ---------------------------------------------------------------- the gRPC port


class EmbeddingGRPCGateway(GRPCGateway):
    """Jina's gRPC gateway behind the API key, closed to /encode_unbatched (grpc_guard.py), its messages bounded."""

    def __init__(self, **kwargs):
        options = dict(kwargs.pop('grpc_server_options', None) or {})
        # Jina's default is unlimited (-1) both ways: a client could make the gateway hold any message it sends.
        options.setdefault('grpc.max_receive_message_length', MAX_GRPC_MESSAGE_BYTES)
        options.setdefault('grpc.max_send_message_length', MAX_GRPC_ANSWER_BYTES)
        super().__init__(grpc_server_options=options, **kwargs)

    def aio_tracing_server_interceptors(self):
        """Jina builds its grpc.aio server with these interceptors (its tracing one, when tracing is on)."""
        guard = KeyAndEndpointGuard(configured_api_key(), internal_endpoints=(UNBATCHED_ENDPOINT,))
        return [*(super().aio_tracing_server_interceptors() or []), guard]


# ---------------------------------------------------------------- the composite gateway Jina loads


class EmbeddingGateway(CompositeBaseServer, BaseGateway):
    """Jina's CompositeGateway, with EmbeddingHTTPGateway on the HTTP port and EmbeddingGRPCGateway on the gRPC one."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.servers = []
        for server_kwargs in self._server_kwargs:
            protocol = server_kwargs['runtime_args']['protocol']
            if protocol == ProtocolType.HTTP:
                server_class = EmbeddingHTTPGateway
            elif protocol == ProtocolType.GRPC:
                server_class = EmbeddingGRPCGateway
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
        await server.in_flight.drain(timeout)
        if getattr(server, '_readiness', None):
            await server._readiness.aclose()
    elif isinstance(getattr(server, 'server', None), grpc.aio.Server):
        await server.server.stop(grace=timeout)  # refuses new RPCs, waits for those in flight up to `timeout`
