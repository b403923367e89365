"""The checks of every embedding request body, before anything is encoded (jina-free: unit-tested on their own).

One parser reads every body (orjson): what it refuses is refused, with what is wrong, and no check is ever skipped
because a parser failed (a BOM, UTF-16, NaN or a lone surrogate made the gateway hand the body, unchecked, to Jina's
route, which lost docs and answered 500s). Then the shape is checked field by field, and everything a client controls
is bounded: the number of texts, what each text is, the per-request `parameters`, the `header`.

`RequestProblem` carries the message and the field; the route picks the status and the error shape (400 in
OpenAI's shape on /v1, 422 with `detail` on /encode).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import orjson
from encode_inputs import EncodeOptions, InputProblem, check_parameters, describe_bad_text, json_kind, listed, shown
from model_info import ModelInfo

# OpenAI's fields, and prompt_name (not OpenAI's; as TEI and sentence-transformers name it).
OPENAI_FIELDS = ('input', 'model', 'encoding_format', 'user', 'dimensions', 'prompt_name')
EMBED_FIELDS = ('inputs', 'normalize', 'truncate', 'truncation_direction', 'prompt_name', 'dimensions')
TOKENIZE_FIELDS = ('inputs', 'add_special_tokens', 'prompt_name')
# The characters one POST /tokenize may hold, all texts together: its answer holds an object per token (~100 bytes
# of JSON, several hundred in memory), unlike an embedding's fixed size.
MAX_TOKENIZE_CHARS = 32_768
ENCODING_FORMATS = ('float', 'base64')
ENCODE_FIELDS = ('data', 'parameters', 'header')
# A TextDoc's fields. `embedding` and `bytes_` are the encoder's to fill (or unused): sent, they are refused.
DOC_FIELDS = ('id', 'text', 'url', 'bytes_', 'embedding')
HEADER_FIELDS = {'requestId': 'request_id', 'request_id': 'request_id',
                 'targetExecutor': 'target_executor', 'target_executor': 'target_executor'}  # fmt: skip
MAX_ID_CHARS = 1024
MAX_URL_CHARS = 65_536  # docarray's own bound on a TextDoc's url
MAX_TARGET_CHARS = 128  # a regular expression matched against executor names: short, and cheap to compile


class RequestProblem(ValueError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass
class OpenAIRequest:
    texts: list[str]
    encoding_format: str = 'float'
    dimensions: int | None = None  # None: the model's own
    prompt: str = ''  # put before each text, as sentence-transformers does with a prompt


@dataclass
class TEIRequest:
    """A POST /embed or /tokenize body (TEI's shapes)."""

    texts: list[str]
    prompt: str = ''
    normalize: bool = True
    truncate: bool | None = None  # None: the server's AUTO_TRUNCATE
    dimensions: int | None = None
    add_special_tokens: bool = True


@dataclass
class EncodeRequest:
    docs: list[dict]  # as sent: the reply echoes their id, text and url
    options: EncodeOptions = field(default_factory=EncodeOptions)
    request_id: str | None = None

    @property
    def texts(self) -> list[str]:
        return [doc['text'] for doc in self.docs]


def parse_json(body: bytes):
    """The body as JSON (strict UTF-8, no byte-order mark, no NaN or Infinity, at most 1,024 levels deep), or a
    RequestProblem saying what it is instead."""
    if not body.strip():
        return _refuse('the body is empty: send a JSON object')
    if body.startswith((b'\xff\xfe', b'\xfe\xff')) or b'\x00' in body[:4]:
        return _refuse('the body is not UTF-8 JSON: it looks like UTF-16 or UTF-32; send it as UTF-8')
    if body.startswith(b'\xef\xbb\xbf'):
        return _refuse('the body is not UTF-8 JSON as sent: it starts with a byte-order mark (BOM); send it without')
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        reason = str(error)
        if 'surrogate' in reason and 'not valid UTF-8' not in reason:
            raise LoneSurrogate(reason) from None
        if 'not valid UTF-8' in reason:
            return _refuse(f'the body is not valid UTF-8 ({reason}): send JSON encoded as UTF-8')
        # Only where the parser stopped: "NaN" inside a string of a body broken elsewhere is no NaN number.
        if body[error.pos :].startswith((b'NaN', b'Infinity')):
            return _refuse(f'the body is not valid JSON ({reason}): NaN and Infinity are not JSON numbers')
        return _refuse(f'the body is not valid JSON ({reason})')


class LoneSurrogate(RequestProblem):
    """A `\\ud800`-style escape with no pair: valid JSON syntax, but no Unicode text (see parse_and_check)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f'the body holds a string that is not valid Unicode ({reason}): a lone surrogate escape')


def parse_and_check(body: bytes, check):
    """`check(parse_json(body))`. A lone surrogate escape is refused by the parser for the whole body; to name the
    text that holds it, the body is read again by Python's json (which keeps lone surrogates) and checked: the check
    then refuses that text by its index or id. Whatever that second reading finds, the body is refused."""
    try:
        parsed = parse_json(body)
    except LoneSurrogate as problem:
        try:
            check(json.loads(body))
        except RequestProblem as named:
            raise named from None
        except Exception:  # noqa: BLE001 - the second reading only names the text; the refusal stands either way
            pass
        raise problem from None
    return check(parsed)


def check_openai_request(body, max_inputs: int, model: ModelInfo) -> OpenAIRequest:
    """A /v1/embeddings body: {"input": text or [texts], "model"?, "encoding_format"?, "user"?, "dimensions"?,
    "prompt_name"?}."""
    _check_object(body, '/v1/embeddings', OPENAI_FIELDS, '{"input": "...", "model": "..."}')
    for name in ('model', 'user'):
        if body.get(name) is not None and not isinstance(body[name], str):
            return _refuse(f'`{name}` must be a string, not {json_kind(body[name])}', name)
    encoding_format = body.get('encoding_format') or 'float'
    if encoding_format not in ENCODING_FORMATS:
        return _refuse(f'`encoding_format` must be "float" or "base64", not {shown(encoding_format)}',
                       'encoding_format')  # fmt: skip
    if 'input' not in body:
        return _refuse('`input` is required: a text, or a list of texts', 'input')
    texts = _check_texts(body['input'], 'input', max_inputs)
    return OpenAIRequest(
        texts=texts,
        encoding_format=encoding_format,
        dimensions=check_dimensions(body.get('dimensions'), model),
        prompt=check_prompt_name(body.get('prompt_name'), model),
    )


def check_tei_request(body, route: str, max_inputs: int, model: ModelInfo) -> TEIRequest:
    """A TEI body: POST /embed {"inputs", "normalize"?, "truncate"?, "truncation_direction"?, "prompt_name"?,
    "dimensions"?} or POST /tokenize {"inputs", "add_special_tokens"?, "prompt_name"?}."""
    _check_object(body, route, EMBED_FIELDS if route == '/embed' else TOKENIZE_FIELDS, '{"inputs": "..."}')
    if 'inputs' not in body:
        return _refuse('`inputs` is required: a text, or a list of texts', 'inputs')
    direction = body.get('truncation_direction')
    if direction is not None and str(direction).lower() != 'right':
        return _refuse(f'`truncation_direction` {shown(direction)}: this server keeps the start of a text (Right), '
                       'as the model was trained to read it', 'truncation_direction')  # fmt: skip
    texts = _check_texts(body['inputs'], 'inputs', max_inputs)
    if route == '/tokenize' and sum(len(text) for text in texts) > MAX_TOKENIZE_CHARS:
        return _refuse(f'`inputs` hold {sum(len(text) for text in texts)} characters, over the {MAX_TOKENIZE_CHARS} '
                       'one /tokenize request takes: send fewer or shorter texts', 'inputs')  # fmt: skip
    return TEIRequest(
        texts=texts,
        prompt=check_prompt_name(body.get('prompt_name'), model),
        normalize=_flag(body, 'normalize', True),
        truncate=_flag(body, 'truncate', None),
        dimensions=check_dimensions(body.get('dimensions'), model),
        add_special_tokens=_flag(body, 'add_special_tokens', True),
    )


def _check_object(body, route: str, fields: tuple[str, ...], example: str) -> None:
    """A body must be a JSON object of the route's fields only."""
    if not isinstance(body, dict):
        _refuse(f'the body must be a JSON object, not {json_kind(body)}: {example}')
    unknown = [name for name in body if name not in fields]
    if unknown:
        _refuse(f'unknown fields {_names(unknown)}: {route} takes {_names(fields)}', unknown[0])


def _flag(body: dict, name: str, default: bool | None) -> bool | None:
    """A true/false field; left out or null: `default`."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        _refuse(f'`{name}` must be true or false, not {shown(value)}', name)
    return value


def _check_texts(texts, name: str, max_inputs: int) -> list[str]:
    """`input` / `inputs`: a text or a list of 1 to max_inputs texts, each a non-empty string of valid Unicode."""
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list):
        return _refuse(f'`{name}` must be a text or a list of texts, not {json_kind(texts)}', name)
    if not texts:
        return _refuse(f'`{name}` is an empty list: send at least one text', name)
    if len(texts) > max_inputs:
        return _refuse(f'`{name}` has {len(texts)} texts, over the limit of {max_inputs} per request '
                       '(MAX_INPUTS_PER_REQUEST): split it', name)  # fmt: skip
    if any(isinstance(text, int) and not isinstance(text, bool) for text in texts) or (
        any(isinstance(text, list) for text in texts)
    ):
        return _refuse(
            f'`{name}` holds token ids (numbers): this server takes text and tokenises it with its own model; ids '
            "from another tokenizer (tiktoken's, most likely) would give wrong vectors. Send the texts; with "
            "LangChain's OpenAIEmbeddings set check_embedding_ctx_length=False", name,
        )  # fmt: skip
    problems = {}
    for index, text in enumerate(texts):
        problem = describe_bad_text(text)
        if problem:
            problems.setdefault(problem, []).append(str(index))
    if problems:
        details = '; '.join(f'{problem} at index {listed(found)}' for problem, found in problems.items())
        return _refuse(f'`{name}` has {details}: each text must be a non-empty string of valid Unicode', name)
    return texts


def check_dimensions(value, model: ModelInfo) -> int | None:
    """`dimensions`: None for the model's own (left out, or equal to it), or a shorter one the deployment serves
    (MATRYOSHKA_DIMENSIONS). Any other is refused: a model not trained for shortened vectors loses quality when
    they are cut, and vLLM refuses as this does (TEI and Infinity cut without a word)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return _refuse(f'`dimensions` must be a positive integer, not {shown(value)}', 'dimensions')
    if value == model.dimension:
        return None
    if value in model.matryoshka_dimensions:
        return value
    if not model.dimension:
        return _refuse(f'`dimensions` {value}: the files of {model.name} do not state its dimension, so this server '
                       'cannot check it: leave `dimensions` out', 'dimensions')  # fmt: skip
    served = ', '.join(str(d) for d in model.matryoshka_dimensions)
    also = f'; this deployment also serves {served} (MATRYOSHKA_DIMENSIONS)' if served else ''
    return _refuse(
        f'`dimensions` {value}: {model.name} gives {model.dimension}-dimensional embeddings and was not trained to '
        f'give shorter ones (Matryoshka), so a cut vector would lose quality: leave `dimensions` out or send '
        f'{model.dimension}{also}', 'dimensions',
    )  # fmt: skip


def check_prompt_name(name, model: ModelInfo) -> str:
    """The text of the prompt `prompt_name` names (null: the deployment's default prompt, or none)."""
    if name is not None and not isinstance(name, str):
        return _refuse(f'`prompt_name` must be a string, not {json_kind(name)}', 'prompt_name')
    try:
        return model.prompt(name)
    except KeyError:
        if name in model.prompts:
            return _refuse(f'`prompt_name` {shown(name)}: {model.name} pools without the prompt\'s tokens '
                           '(include_prompt: false), which this server does not do: leave it out',
                           'prompt_name')  # fmt: skip
        known = _names(sorted(model.prompts)) if model.prompts else 'none'
        return _refuse(f'`prompt_name` {shown(name)} is not a prompt of {model.name} (its prompts: {known}): '
                       'send one of those, or leave it out', 'prompt_name')  # fmt: skip


def check_encode_request(body, max_inputs: int, executors: tuple[str, ...]) -> EncodeRequest:
    """A POST /encode body, Jina's shape: {"data": [docs] or a doc, "parameters"?, "header"?}. `executors`: the
    names a `header.targetExecutor` may select."""
    _check_object(body, '/encode', ENCODE_FIELDS, '{"data": [{"text": "..."}]}')
    if 'data' not in body:
        return _refuse('`data` is required: a list of docs, e.g. {"data": [{"text": "hello world"}]}', 'data')
    data = body['data']
    if not isinstance(data, (list, dict)):
        return _refuse(f'`data` must be a list of docs (or one doc), not {json_kind(data)}: '
                       '{"data": [{"text": "hello world"}]}', 'data')  # fmt: skip
    docs = data if isinstance(data, list) else [data]
    if len(docs) > max_inputs:
        return _refuse(f'`data` has {len(docs)} docs, over the limit of {max_inputs} per request '
                       '(MAX_INPUTS_PER_REQUEST): send them in smaller requests', 'data')  # fmt: skip
    _check_docs(docs)
    try:
        options = check_parameters(body.get('parameters'))
    except InputProblem as problem:
        return _refuse(str(problem), 'parameters')
    return EncodeRequest(docs=docs, options=options, request_id=_check_header(body.get('header'), executors))


def _check_docs(docs: list) -> None:
    problems: dict[str, list[str]] = {}
    for position, doc in enumerate(docs):
        if not isinstance(doc, dict):
            return _refuse(f'`data` #{position} must be an object with a `text`, not {json_kind(doc)}', 'data')
        unknown = [name for name in doc if name not in DOC_FIELDS]
        if unknown:
            return _refuse(f'`data` #{position} has unknown fields {_names(unknown)}: a doc takes `id` and `text` '
                           '(and `url`)', 'data')  # fmt: skip
        name = doc.get('id')
        if name is not None and (not isinstance(name, str) or len(name) > MAX_ID_CHARS):
            return _refuse(f'`data` #{position}: `id` must be a string of at most {MAX_ID_CHARS} characters, not '
                           f'{shown(name)}', 'data')  # fmt: skip
        url = doc.get('url')
        if url is not None and (not isinstance(url, str) or len(url) > MAX_URL_CHARS):
            return _refuse(f'`data` #{position}: `url` must be a string of at most {MAX_URL_CHARS} characters',
                           'data')  # fmt: skip
        for output in ('embedding', 'bytes_'):
            if doc.get(output) is not None:
                return _refuse(f'`data` #{position} carries `{output}`: leave it out, the encoder fills '
                               '`embedding` and does not read `bytes_`', 'data')  # fmt: skip
        problem = describe_bad_text(doc.get('text'))
        if problem:
            problems.setdefault(problem, []).append(name if name is not None else f'#{position}')
    if problems:
        details = '; '.join(f'{problem}: ids {listed(found)}' for problem, found in problems.items())
        _refuse(f'{details}. Each doc needs a non-empty string of valid Unicode in `text`; nothing in this request '
                'was encoded.', 'data')  # fmt: skip


def _check_header(header, executors: tuple[str, ...]) -> str | None:
    """The client's request id (echoed in the reply; never used as the encoder request's id, so ids chosen by
    clients cannot collide), after checking `targetExecutor` selects the encoder."""
    if header is None:
        return None
    if not isinstance(header, dict):
        return _refuse(f'`header` must be an object, not {json_kind(header)}', 'header')
    unknown = [name for name in header if name not in HEADER_FIELDS]
    if unknown:
        return _refuse(f'unknown `header` fields {_names(unknown)}: it takes requestId and targetExecutor', 'header')
    for name, value in header.items():  # named as the client sent them (requestId), not as Jina's fields
        if value is not None and (not isinstance(value, str) or len(value) > MAX_ID_CHARS):
            return _refuse(f'`header.{name}` must be a string of at most {MAX_ID_CHARS} characters', 'header')
    values = {HEADER_FIELDS[name]: value for name, value in header.items()}
    target = values.get('target_executor')
    if target:
        if len(target) > MAX_TARGET_CHARS:
            return _refuse(f'header.targetExecutor is over {MAX_TARGET_CHARS} characters: it selects executors by '
                           f'name; leave it out, or send "{executors[0]}"', 'header')  # fmt: skip
        try:
            pattern = re.compile(target)
        except (re.error, RecursionError, OverflowError) as error:
            message = f'header.targetExecutor {target!r} is not a valid regular expression ({error})'
            return _refuse(f'{message}: it selects executors by name; leave it out, or send "{executors[0]}"', 'header')
        if not any(pattern.match(name) for name in executors):
            return _refuse(f'header.targetExecutor {target!r} selects no executor (this flow has '
                           f'{_names(executors)}): nothing would be encoded; leave it out', 'header')  # fmt: skip
    return values.get('request_id')


def _refuse(message: str, param: str | None = None):
    raise RequestProblem(message, param)


def _names(names) -> str:
    return ', '.join(f'`{str(name)[:40]}`' for name in list(names)[:10])
