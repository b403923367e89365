"""The stack's gateway: Jina's own gRPC and HTTP gateways, with the HTTP one extended for OpenAI-style clients.

Jina's composite gateway serves one protocol per port. `EmbeddingGateway` is that composite gateway with one change:
its HTTP server is `EmbeddingHTTPGateway`, which keeps every route Jina makes (`POST /encode`, `/docs`, ...) and adds

- `POST /v1/embeddings` and `GET /v1/models`, in OpenAI's shapes (as TEI and Infinity serve them),
- `GET /health` (liveness) and `GET /ready` (an encoder replica answers the gRPC health check: its model is loaded),
- limits (413 for a body over MAX_BODY_BYTES; more texts or docs than MAX_INPUTS_PER_REQUEST: 400 on /v1, 422 on
  /encode) and an optional
  API key (API_KEY: every route but `/`, `/health` and `/ready` then needs `Authorization: Bearer <key>`).

The gateway never runs the model: it reaches the encoder only through Jina's request schema (TextDoc in, TextDoc with
`embedding` out). For `usage.prompt_tokens` it reads the model's tokenizer (tokenizer.json only, no torch) from the
same Hugging Face cache the encoder uses.
"""

import asyncio
import base64
import hmac
import json
import os
from typing import Literal

import grpc
import numpy as np
import orjson
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


class BodyTooLarge(Exception):
    pass


class EmbeddingHTTPGateway(HTTPGateway):
    """Jina's HTTP gateway plus the OpenAI-compatible, health and readiness routes, limits and the API key."""

    in_flight = 0  # HTTP requests being answered, counted by the guard for the drain at shutdown
    draining = False

    @property
    def app(self) -> FastAPI:
        app = super().app  # Jina builds a new app on each access; setup_server takes it once
        self._token_counter = getattr(self, '_token_counter', None) or TokenCounter(MODEL_NAME)
        if not self._token_counter.exact:
            self.logger.warning(f'no tokenizer.json for {MODEL_NAME} in the HF cache: usage counts are estimates')
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
            '/v1/embeddings',
            tags=['openai'],
            summary='Embeddings, OpenAI-compatible',
            response_model=EmbeddingsResponse,
            responses={400: {'model': ErrorResponse}, 413: {'model': ErrorResponse}, 503: {'model': ErrorResponse}},
        )
        async def embeddings(body: EmbeddingsRequest):
            texts = [body.input] if isinstance(body.input, str) else list(body.input)
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
            result = await self._encode(texts)
            if isinstance(result, JSONResponse):
                return result
            data = [
                {'index': i, 'object': 'embedding', 'embedding': encode_vector(vector, body.encoding_format)}
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

    async def _encode(self, texts: list[str]):
        """Send the texts to the encoder as one request; return their vectors in order, or an OpenAI error."""
        docs = DocList[TextDoc]([TextDoc(text=text) for text in texts])
        try:
            async for response in self.streamer.stream_docs(
                docs,
                request_size=len(docs),
                exec_endpoint=ENCODE_ENDPOINT,
                return_results=True,
                return_type=DocList[TextDoc],
            ):
                status = response.header.status
                if status.code == jina_pb2.StatusProto.ERROR:
                    refused = status.exception.name in ('BadRequestError', 'ValidationError')  # the input's fault
                    return openai_error(400 if refused else 500, status.description, 'input' if refused else None)
                returned = response.docs
                if len(returned) != len(texts):
                    return openai_error(500, f'the encoder returned {len(returned)} of {len(texts)} embeddings')
                return [doc.embedding for doc in returned]
        except InternalNetworkError as error:
            return openai_error(
                503, f'the encoder is unavailable, retry shortly ({error.details()})', headers={'Retry-After': '5'}
            )
        return openai_error(500, 'the encoder sent no response')

    async def _encoders_serving(self):
        addresses = self.runtime_args.deployments_addresses or {}
        if isinstance(addresses, str):  # the exported command passes it as JSON
            addresses = json.loads(addresses)
        flat = [address for replicas in addresses.values() for address in replicas]
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
        """Refuse new requests (503) and wait, up to `timeout` seconds, for those in flight to be answered."""
        self.draining = True
        deadline = asyncio.get_running_loop().time() + timeout
        while self.in_flight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        if self.in_flight:
            self.logger.warning(f'shutting down with {self.in_flight} HTTP requests unanswered after {timeout} s')

    # -- guards: draining, API key, body size, OpenAI-shaped validation errors

    def _add_guards(self, app: FastAPI) -> None:
        api_key = os.environ.get('API_KEY', '')

        @app.exception_handler(RequestValidationError)
        async def validation_error(request: Request, error: RequestValidationError):
            if not request.url.path.startswith('/v1/'):
                return await request_validation_exception_handler(request, error)
            first = error.errors()[0] if error.errors() else {}
            if 'JSON' in str(first.get('msg', '')):
                return openai_error(400, 'the body is not valid JSON: send {"input": "...", "model": "..."}')
            field = '.'.join(str(part) for part in first.get('loc', ())[1:]) or None
            return openai_error(400, f'{field or "body"}: {first.get("msg", "invalid request")}', field)

        @app.middleware('http')
        async def guard(request: Request, call_next):
            if self.draining and request.url.path != '/health':
                return openai_error(503, 'the gateway is shutting down: retry shortly', headers={'Retry-After': '5'})
            if api_key and request.url.path not in OPEN_PATHS:
                supplied = request.headers.get('authorization', '')
                if not hmac.compare_digest(supplied.encode(), f'Bearer {api_key}'.encode()):
                    return openai_error(401, 'missing or wrong API key: send `Authorization: Bearer <API_KEY>`')
            declared = request.headers.get('content-length')
            if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
                return openai_error(
                    413, f'body of {declared} bytes is over the limit of {MAX_BODY_BYTES} (MAX_BODY_BYTES)'
                )
            if request.method == 'POST' and request.url.path == ENCODE_ENDPOINT:
                problem = await check_native_body(request)
                if problem:
                    return JSONResponse(status_code=422, content={'detail': problem})
            self.in_flight += 1
            try:
                response = await call_next(request)
            except Exception:
                if not self.draining:
                    raise
                response = None
            finally:
                self.in_flight -= 1
            if self.draining and (response is None or response.status_code == 500):
                # Still running when the drain's budget ran out: Jina's shutdown closed the connection to the encoder
                # under it. Say so, instead of a bare 500.
                return openai_error(
                    503, f'the gateway shut down before this request was answered (DRAIN_TIMEOUT_S={DRAIN_TIMEOUT_S:g} '
                    's ran out): retry it', headers={'Retry-After': '5'},
                )  # fmt: skip
            return response


async def check_native_body(request: Request) -> str | None:
    """Refuse, up front, what Jina's /encode route would otherwise accept and fail on deeper in (as a 500):

    - more than MAX_INPUTS_PER_REQUEST docs (the route splits any number into requests of 100 and encodes them all);
    - docs that carry an `embedding`: it is the output, and arbitrary JSON there breaks docarray's deserialisation;
    - docs without a non-empty string `text`, named by id (or #position): the encoder would refuse them too, but
      only per request of 100 after the route's split, and with pydantic's wording.
    Starlette caches the body, so the route still reads it afterwards.
    """
    try:
        data = json.loads(await request.body()).get('data')
    except (ValueError, AttributeError):
        return None  # not JSON or not an object: FastAPI's validation answers with a 422 naming the problem
    docs = data if isinstance(data, list) else [data]
    if len(docs) > MAX_INPUTS_PER_REQUEST:
        return (
            f'`data` has {len(docs)} docs, over the limit of {MAX_INPUTS_PER_REQUEST} per request '
            '(MAX_INPUTS_PER_REQUEST): send them in smaller requests'
        )
    carrying = [i for i, doc in enumerate(docs) if isinstance(doc, dict) and doc.get('embedding') is not None]
    if carrying:
        return f'docs at index {carrying[:10]} carry an `embedding`: leave it out, the encoder fills it'
    return describe_bad_texts(docs)


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
            self.servers.append(server_class(**server_kwargs))
        self.gateways = self.servers  # jina's name for them, kept for compatibility

    async def shutdown(self):
        """Drain, then close.

        Jina's composite shutdown closes at once the streamer its servers share (from the gRPC server's shutdown), so
        under `docker compose stop` every HTTP request in flight failed with a 500. Here each server first stops
        taking requests and lets those in flight finish, for up to DRAIN_TIMEOUT_S; then Jina's shutdown runs.
        """
        await asyncio.gather(*(drain(server, DRAIN_TIMEOUT_S) for server in self.servers))
        await super().shutdown()


async def drain(server, timeout: float) -> None:
    if isinstance(server, EmbeddingHTTPGateway):
        await server.drain(timeout)
    elif isinstance(getattr(server, 'server', None), grpc.aio.Server):
        await server.server.stop(grace=timeout)  # refuses new RPCs, waits for those in flight up to `timeout`
