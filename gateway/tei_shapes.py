"""Text Embeddings Inference's (TEI's) request and error shapes, for its routes beside OpenAI's: POST /embed,
POST /tokenize, GET /info, as TEI's router serves them, so that TEI's clients (LlamaIndex's TextEmbeddingsInference,
LangChain's HuggingFaceEndpointEmbeddings, Haystack's TEI embedders, huggingface_hub's feature_extraction) work
unchanged. The models document the routes in /docs; the replies are written by the gateway (orjson)."""

from typing import Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictStr

TEI_ROUTES = ('/embed', '/tokenize')
# TEI's ErrorType names, by the status this gateway answers with.
ERROR_TYPES = {429: 'Overloaded', 503: 'Unhealthy', 401: 'Unauthorized'}


class EmbedRequest(BaseModel):
    inputs: StrictStr | list[StrictStr] = Field(..., description='A text, or a list of texts.')
    normalize: bool = Field(True, description='Unit-length vectors (the model may give them so either way).')
    truncate: bool | None = Field(
        None, description="Cut texts longer than the model reads; null: the server's AUTO_TRUNCATE (default true)."
    )
    truncation_direction: Literal['Right', 'right'] = 'Right'
    prompt_name: StrictStr | None = Field(None, description="One of the model's prompts (GET /info lists them).")
    dimensions: int | None = Field(None, description="The model's dimension, or one MATRYOSHKA_DIMENSIONS serves.")

    class Config:
        extra = 'forbid'


class TokenizeRequest(BaseModel):
    inputs: StrictStr | list[StrictStr]
    add_special_tokens: bool = True
    prompt_name: StrictStr | None = None

    class Config:
        extra = 'forbid'


class SimpleToken(BaseModel):
    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


class TEIError(BaseModel):
    error: str
    error_type: str


def tei_error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    kind = ERROR_TYPES.get(status, 'Validation' if status < 500 else 'Backend')
    return JSONResponse(status_code=status, content={'error': message, 'error_type': kind}, headers=headers)
