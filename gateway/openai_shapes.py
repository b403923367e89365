"""OpenAI's embeddings request, reply and error shapes (pydantic 1, as Jina needs), for /docs and for the replies.

The replies are rendered with orjson, not through these models (see EmbeddingHTTPGateway.answer_openai): the models
document the contract in the OpenAPI schema, and `openai_error` writes every /v1 failure in OpenAI's error shape.
"""

from typing import Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictStr
from tei_shapes import TEI_ROUTES, tei_error


class EmbeddingsRequest(BaseModel):
    input: StrictStr | list[StrictStr] = Field(
        ..., description='A text, or a list of texts, to embed. Token arrays are not accepted.'
    )
    model: StrictStr | None = Field(None, description='Accepted for compatibility; the served model answers.')
    encoding_format: Literal['float', 'base64'] = 'float'
    user: StrictStr | None = None
    dimensions: int | None = Field(
        None, description="The model's dimension (GET /info), or one the deployment serves (MATRYOSHKA_DIMENSIONS)."
    )
    prompt_name: StrictStr | None = Field(
        None, description="Not OpenAI's: one of the model's prompts (e.g. query), put before each text."
    )

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


ERROR_TYPES = {401: 'authentication_error', 429: 'rate_limit_error', 503: 'service_unavailable'}


def openai_error(status: int, message: str, param: str | None = None, headers: dict | None = None) -> JSONResponse:
    kind = ERROR_TYPES.get(status, 'invalid_request_error' if status < 500 else 'server_error')
    body = {'error': {'message': message, 'type': kind, 'param': param, 'code': None}}
    return JSONResponse(status_code=status, content=body, headers=headers)


def native_error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """/encode's error shape: FastAPI's (and Jina's route's) `{"detail": ...}`."""
    return JSONResponse(status_code=status, content={'detail': message}, headers=headers)


def error_for(path: str, status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """An error in the shape of the route asked for: /encode's, TEI's on its routes, or OpenAI's for everything else."""
    if path == '/encode':
        return native_error(status, message, headers)
    return refusal_for(path, status, message, headers)


def refusal_for(path: str, status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """A refusal before any route (the key, draining): TEI's shape on TEI's routes, OpenAI's elsewhere."""
    if path in TEI_ROUTES:
        return tei_error(status, message, headers)
    return openai_error(status, message, headers=headers)
