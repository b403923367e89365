"""SentenceEncoder: fills `.embedding` of each TextDoc with a sentence-transformers model, on CPU or GPU.

The Jina tutorial "How to run Executors on GPU", made fit to serve: the device is checked once at start-up (a GPU
that is not there fails the start, not the first request), the model comes from the Hugging Face cache (bind-mounted
by compose, so weights download once), and bad input is rejected with the offending doc ids instead of crashing.
"""

# No `from __future__ import annotations` here: Jina reads the schema from the real annotations of `encode`.
import asyncio
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

# Listed before executor.py in config.yml's py_modules; jina-free (the GPU benchmark imports devices where jina is not).
from devices import StartupError, cpu_fallback_warning, resolve_backend, resolve_device, resolve_dtype
from docarray import DocList
from docarray.documents import TextDoc
from encode_inputs import (
    VERIFY_SAMPLE,
    EncodeOptions,
    InputProblem,
    TextWindow,
    check_parameters,
    describe_bad_text,
    listed,
    over_the_limit,
    untruncated_copy,
)
from jina import Executor, dynamic_batching, requests
from jina.serve.runtimes.worker.batch_queue import BatchQueue
from lanes import lanes_for
from pydantic import validator
from sentence_transformers import SentenceTransformer

__all__ = [
    'BadRequestError',
    'NonFiniteEmbedding',
    'SentenceEncoder',
    'StartupError',
    'load_model',
    'resolve_backend',
    'resolve_device',
]

DEFAULT_MODEL = 'sentence-transformers/all-MiniLM-L6-v2'
# Dynamic batching (Jina's): docs of concurrent requests are encoded together, up to PREFERRED_BATCH_SIZE docs, after
# waiting at most BATCH_WAIT_MS for more to arrive. Overridable per deployment: `uses_dynamic_batching` in flow.yml.
PREFERRED_BATCH_SIZE = 32
BATCH_WAIT_MS = 10
# The same work without dynamic batching's wait, for callers whose requests are whole batches already: the gateway
# joins concurrent HTTP requests into one request here (gateway/coalescer.py); a lone one is not held BATCH_WAIT_MS.
UNBATCHED_ENDPOINT = '/encode_unbatched'


# Where `make model` writes the OpenVINO IR in the model's files (the backends: devices.py).
OPENVINO_IR = 'openvino/openvino_model.xml'
# OpenVINO's CPU plugin keeps compiled kernels for every input shape it has seen (batch size x token count), 5,000 by
# default at ~1 MiB each: with texts of varied lengths the encoder grew by ~35 MiB per 40 new shapes without end
# (the soak test caught it), towards GBs. Capped at 200 shapes it levels off ~200 MiB above its start, for ~10% of
# speed on never-seen shapes only (measured in-process, varied texts; repeated shapes stay cached). 0 disables it.
OPENVINO_SHAPE_CACHE = int(os.environ.get('OPENVINO_SHAPE_CACHE', '200'))
# OpenVINO's performance hint for the served encoder (OPENVINO_PERFORMANCE_HINT). THROUGHPUT: streams that encode
# batches side by side (lanes.py), the most docs/s under load. LATENCY: every core on each inference, one batch at a
# time: ~20% more one-text requests/s at 32 in flight and ~2 ms less for a lone request, ~20% fewer docs/s for bulk
# encoding (docs/benchmarks.md has the figures).
OPENVINO_PERFORMANCE_HINTS = ('THROUGHPUT', 'LATENCY')
# Encoded once before the executor reports ready, so that the first user request does not pay for compilation and
# first-call allocations (TEI and Infinity warm up too). Short and long texts: shapes differ with the length.
WARM_UP_TEXTS = ['warm up', 'a longer text to warm up the encoder with, so that it sees more than one shape ' * 8]


def openvino_performance_hint() -> str:
    """OPENVINO_PERFORMANCE_HINT, or a StartupError naming the values it takes. LATENCY unless set: in-process use is
    one caller (the stack sets THROUGHPUT in flow.yml), and a process that used the THROUGHPUT streams from several
    threads then forked a local Flow was seen to hang in the child's OpenVINO (OpenVINO is not fork-safe)."""
    hint = os.environ.get('OPENVINO_PERFORMANCE_HINT', 'LATENCY').strip().upper()
    if hint not in OPENVINO_PERFORMANCE_HINTS:
        raise StartupError(
            f'OPENVINO_PERFORMANCE_HINT={hint!r} is not one of {", ".join(OPENVINO_PERFORMANCE_HINTS)}: THROUGHPUT '
            'for the most docs/s under load, LATENCY for the fastest lone request.'
        )
    return hint


class BadRequestError(ValueError):
    """A request the executor refuses; the executor itself keeps serving."""


class NonFiniteEmbedding(RuntimeError):
    """The model gave a NaN or infinite embedding for a text, also when it was encoded again alone: the request fails
    (a 500 naming the doc) rather than answer a vector of nulls with a 200 (docs/reliability.md)."""


def hf_hub_cache() -> Path:
    """Where huggingface_hub reads models: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _offline() -> bool:
    return os.environ.get('HF_HUB_OFFLINE', '').strip().lower() in {'1', 'true', 'yes', 'on'}


def _missing_model_message(model: str, cause: str) -> str:
    return (
        f"model '{model}' could not be loaded from the Hugging Face cache at {hf_hub_cache()} ({cause}). "
        'Fill the cache on the host with `make model` (it writes ~/.cache/huggingface, which compose mounts), '
        'or pass a local model directory as `model`.'
    )


def _unreadable_cache_message() -> str | None:
    """The mounted cache exists but this (non-root) user cannot read it: say so, not "not cached"."""
    unreadable = [
        path
        for path in (hf_hub_cache().parent, hf_hub_cache())
        if path.exists() and not os.access(path, os.R_OK | os.X_OK)
    ]
    if not unreadable:
        return None
    return (
        f'the Hugging Face cache at {unreadable[0]} is not readable by this user (uid {os.getuid()}). '
        'On the host, make the cache readable: `chmod -R a+rX <MODEL_CACHE_DIR>` (make model does this), '
        'or `chown -R 1000 <MODEL_CACHE_DIR>`.'
    )


def openvino_model_dir(model: str, is_local_dir: bool) -> str:
    """The directory holding the model's files and its OpenVINO IR, or a StartupError naming `make model`.

    The IR is never made here: converting takes a torch trace, slow, and it hung inside a process Jina forked."""
    from huggingface_hub import try_to_load_from_cache

    if is_local_dir:
        directory = Path(model).expanduser()
        found = directory / OPENVINO_IR
    else:
        cached = try_to_load_from_cache(model, OPENVINO_IR)
        if not isinstance(cached, str) and not _offline():
            from huggingface_hub import hf_hub_download

            try:  # hub repositories that publish an IR (all-MiniLM-L6-v2's does) lay it out the same way
                for name in (OPENVINO_IR, OPENVINO_IR.replace('.xml', '.bin')):
                    cached = hf_hub_download(model, name)
            except Exception:  # noqa: BLE001 - none published, or no network: the message below says what to do
                cached = None
        found = Path(cached) if isinstance(cached, str) else None
        modules = try_to_load_from_cache(model, 'modules.json')
        directory = Path(modules).parent if isinstance(modules, str) else None
    if found is None or not found.is_file() or directory is None:
        where = directory or f'the Hugging Face cache at {hf_hub_cache()}'
        raise StartupError(
            f"model '{model}' has no OpenVINO IR ({OPENVINO_IR}) in {where}. Run `make model` on the host: it converts "
            "the cached weights and writes the IR beside them. Or set backend='torch' (ENCODER_BACKEND=torch)."
        )
    return str(directory)


def load_model(
    model: str, device: str, dtype: torch.dtype, backend: str = 'torch', performance_hint: str = 'LATENCY'
) -> SentenceTransformer:
    """Load from a local directory or the HF cache; with HF_HUB_OFFLINE=1 a missing model fails in seconds.

    `performance_hint` is OpenVINO's: LATENCY (all cores on each inference, the fastest for one caller) or THROUGHPUT
    (streams that infer side by side, for several callers at once: lanes.py)."""
    is_local_dir = Path(model).expanduser().is_dir()
    if not is_local_dir and (unreadable := _unreadable_cache_message()):
        raise StartupError(unreadable)
    if not is_local_dir and _offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(model, 'modules.json'), str):
            raise StartupError(_missing_model_message(model, 'not cached, and HF_HUB_OFFLINE=1 forbids downloading'))
    source = str(Path(model).expanduser()) if is_local_dir else model
    options: dict[str, Any] = {}
    if backend == 'openvino':
        # From the model's own directory, so that nothing asks the hub which files the repository has.
        source = openvino_model_dir(model, is_local_dir)
        ov_config = {'PERFORMANCE_HINT': performance_hint, 'CPU_RUNTIME_CACHE_CAPACITY': str(OPENVINO_SHAPE_CACHE)}
        # OPENVINO_INFERENCE_PRECISION=f32 makes OpenVINO compute in float32 where it would pick bf16 (Intel AMX):
        # a control for the non-finite hunt (scripts/stress_finite.py); unset, OpenVINO chooses.
        if os.environ.get('OPENVINO_INFERENCE_PRECISION', '').strip():
            ov_config['INFERENCE_PRECISION_HINT'] = os.environ['OPENVINO_INFERENCE_PRECISION'].strip()
        options = {'backend': 'openvino', 'model_kwargs': {'file_name': OPENVINO_IR, 'ov_config': ov_config}}
    try:
        encoder = SentenceTransformer(source, device=device, **options)
    except OSError as error:  # what transformers raises for a missing or unreadable model
        raise StartupError(_missing_model_message(model, str(error).splitlines()[0])) from error
    except Exception as error:  # truncated or corrupt weights: safetensors, json and torch each raise their own
        raise StartupError(
            f"model '{model}' in the Hugging Face cache at {hf_hub_cache()} is incomplete or corrupt "
            f'({str(error).splitlines()[0]}). On the host, delete its models--* folder in the cache and run '
            '`make model` again.'
        ) from error
    # transformers may keep the dtype the weights were stored in (float16 files load as float16): cast only then, as
    # a cast in a process forked after torch's thread pool started can hang.
    if backend == 'torch' and next(encoder.parameters()).dtype != dtype:
        encoder = encoder.to(dtype)
    return encoder.eval()


def _answer_empty_requests_at_once(push):
    """Jina 3.33's BatchQueue never answers a request with no docs (no batch ever holds it): the request, and its
    client, wait forever (schemathesis found it with `{"data": []}`). Answer it at once, unchanged.

    And refuse, alone, a request the executor would refuse for its own docs (a prompt_name the model lacks, a text
    over the limit with AUTO_TRUNCATE=false): raised inside the batch, the error would fail every request joined
    with it, naming another client's doc."""

    async def push_or_answer(self, request, http=False):
        if len(request.docs) == 0:
            answered = asyncio.Queue()
            answered.put_nowait(None)  # what the queue's consumer reads for "done, no error"
            return answered
        executor = getattr(getattr(self.func, 'func', None), '__self__', None)  # partial(executor.__acall__, ...)
        refusal = getattr(executor, 'refusal_before_batching', None)
        problem = refusal(request.docs, self.params) if refusal else None
        if problem is not None:
            refused = asyncio.Queue()
            refused.put_nowait(problem)  # the consumer raises an Exception it reads, for this request only
            return refused
        return await push(self, request, http=http)

    return push_or_answer


BatchQueue.push = _answer_empty_requests_at_once(BatchQueue.push)


class EncodeDoc(TextDoc):
    """The request schema of /encode: a TextDoc whose text must be a non-empty string.

    Jina checks it as it reads each request, before dynamic batching joins requests together: a bad request is
    refused alone (with Jina's batching, an error raised inside `encode` would fail every request in the batch).
    """

    # Restated (Jina rebuilds the schema from this class's own fields), as typing.Optional like docarray's own.
    text: Optional[str] = None  # noqa: UP045

    @validator('text', always=True)
    def text_is_not_blank(cls, text, values):  # noqa: N805 - pydantic's signature
        name = values.get('id')
        if text is None or not str(text).strip():
            problem = 'no text' if text is None else 'empty text'
            raise ValueError(
                f'{problem}: ids {name if name is not None else "(none)"}. Each doc needs a non-empty string in '
                '`text`; nothing in this request was encoded.'
            )
        return text


def find_bad_docs(docs: DocList[TextDoc]) -> str | None:
    """Describe the docs that cannot be encoded (no text, empty text, non-string text, invalid Unicode), or None."""
    problems: dict[str, list[str]] = {}
    for position, doc in enumerate(docs):
        # Jina's HTTP gateway passes docs sent without an id with id None: name those by position.
        name = str(doc.id) if doc.id is not None else f'#{position}'
        problem = describe_bad_text(doc.text)
        if problem:
            problems.setdefault(problem, []).append(name)
    if not problems:
        return None

    details = '; '.join(f'{problem}: ids {listed(found)}' for problem, found in problems.items())
    return f'{details}. Each doc needs a non-empty string in `text`; nothing in this request was encoded.'


def warm_up(model: SentenceTransformer, batch_size: int) -> None:
    """Encode WARM_UP_TEXTS once, in a thread of its own: in a process forked after its parent used torch's OpenMP
    pool (a local Flow in a process that encoded before), OpenMP work on the child's main thread hangs for good,
    while a new thread gets a pool of its own (Jina runs requests in threads too)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix='warm-up') as pool:
        pool.submit(model.encode, WARM_UP_TEXTS, batch_size=batch_size, show_progress_bar=False).result()


class SentenceEncoder(Executor):
    """Encode `TextDoc.text` into `TextDoc.embedding` with a sentence-transformers model."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        device: str = 'auto',
        batch_size: int = 32,
        normalize: bool = False,
        dtype: str = 'float32',
        max_docs_per_request: int = 10_000,
        backend: str = 'auto',
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if batch_size < 1 or max_docs_per_request < 1:
            raise StartupError('batch_size and max_docs_per_request must be at least 1.')
        try:
            self.device = resolve_device(str(device))
            fallback = cpu_fallback_warning(str(device), self.device)
            if fallback:
                self.logger.warning(fallback)
            self.dtype = resolve_dtype(str(dtype), self.device)
            self.backend = resolve_backend(str(backend), self.device)
            self.model = load_model(model, self.device, self.dtype, self.backend, openvino_performance_hint())
            self.default_prompt_name = checked_default_prompt(self.model, os.environ.get('ENCODER_DEFAULT_PROMPT_NAME'))
        except StartupError as error:
            # One unwrapped line in the container log (jina's logger wraps at 80 columns), above jina's traceback.
            print(f'SentenceEncoder cannot start: {error}', file=sys.stderr, flush=True)
            raise
        self.model_name = model
        # Prompts are put before the texts here, once: sentence-transformers would put its default before texts the
        # gateway has already prompted (the gateway's joined batches, /encode_unbatched).
        self.model.default_prompt_name = None
        self.auto_truncate = auto_truncate()
        self._init_encoder_metrics()
        self.batch_size = batch_size
        self.normalize = normalize
        self.max_docs_per_request = max_docs_per_request
        self.text_window = text_window_for(self.model, self.logger)
        self.count_tokens = token_counter_for(self.model)
        # flow.yml's `allow_concurrent` lets Jina call encode from several threads at once; the lanes bound how many.
        self.lanes = lanes_for(self.model, self.backend)
        warm_up(self.model, batch_size)
        self.logger.info(
            f'loaded {model} with the {self.backend} backend on {self.device} ({dtype}), {self.dimensions} dims, '
            f'max {self.model.max_seq_length} tokens per text (longer texts are truncated), {self.lanes.streams} '
            f'stream(s), up to {self.lanes.batches_at_once} batch(es) encoded at once; warmed up'
        )

    def _init_encoder_metrics(self) -> None:
        """Prometheus metrics beside jina's own (request counts and latencies), when the Flow runs with monitoring."""
        registry = getattr(self.runtime_args, 'metrics_registry', None)
        self._docs_encoded = self._docs_per_request = self._non_finite = None
        if registry is None:
            return
        from prometheus_client import Counter, Histogram

        self._docs_encoded = Counter(
            'sentence_encoder_docs_encoded', 'Docs given an embedding', registry=registry, namespace='jina'
        )
        self._docs_per_request = Histogram(
            'sentence_encoder_request_docs',
            'Docs per request reaching the encoder (the batch it encodes, in chunks of batch_size)',
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 10_000),
            registry=registry,
            namespace='jina',
        )
        self._non_finite = Counter(
            'sentence_encoder_non_finite_embeddings',
            'Embeddings with a NaN or inf value: outcome=reencoded (finite when encoded again alone, served) or '
            'failed (non-finite again: the request failed with a 500)',
            labelnames=('outcome',),
            registry=registry,
            namespace='jina',
        )

    @property
    def dimensions(self) -> int:
        return self.model.get_embedding_dimension()

    @dynamic_batching(preferred_batch_size=PREFERRED_BATCH_SIZE, timeout=BATCH_WAIT_MS)
    @requests(on='/encode')
    def encode(self, docs: DocList[EncodeDoc], parameters: dict | None = None, **kwargs: Any) -> DocList[TextDoc]:
        """Fill each doc's embedding; the docs go back as they came: same ids, same order, none dropped.

        Served, `docs` is a dynamic batch (docs of one or more requests, in order); called in-process, the docs given.
        `parameters` may override `batch_size` and `normalize` for one request (requests are batched only with
        others of the same parameters).
        `parameters.prompt_name` (else ENCODER_DEFAULT_PROMPT_NAME, or the model's default) puts one of the model's
        prompts before each text; with AUTO_TRUNCATE=false a text longer than the model reads is refused.
        """
        return self._encode_docs(docs, parameters or {}, from_client=True)

    @requests(on=UNBATCHED_ENDPOINT)
    def encode_unbatched(
        self, docs: DocList[EncodeDoc], parameters: dict | None = None, **kwargs: Any
    ) -> DocList[TextDoc]:
        """`encode`, at once: each request is encoded as it comes, not held for others to join it. For the gateway
        only (its gRPC port refuses it to clients), which has put the prompt before the texts and applied the
        truncation policy already."""
        return self._encode_docs(docs, parameters or {}, from_client=False)

    def _encode_docs(self, docs: DocList[TextDoc], parameters: dict, from_client: bool) -> DocList[TextDoc]:
        if len(docs) > self.max_docs_per_request:
            raise BadRequestError(
                f'{len(docs)} docs in one request is over the limit of {self.max_docs_per_request} '
                '(max_docs_per_request); send them in smaller requests, e.g. Client.post(..., request_size=32).'
            )
        problem = find_bad_docs(docs)
        if problem:
            raise BadRequestError(problem)
        options = self._options(parameters)
        if not docs:
            return docs
        texts = [doc.text for doc in docs]
        if from_client:
            texts = self._prompted(texts, options.prompt_name)
            if not self.auto_truncate:
                self._refuse_texts_over_the_limit(texts, [doc.id for doc in docs])
        texts = [self.text_window.cut(text) for text in texts] if self.text_window else texts
        embeddings = self._encode_finite(texts, [doc.id for doc in docs], options)
        for doc, embedding in zip(docs, embeddings, strict=True):
            doc.embedding = embedding
        if self._docs_encoded is not None:
            self._docs_encoded.inc(len(docs))
            self._docs_per_request.observe(len(docs))
        return docs

    def refusal_before_batching(self, docs: DocList[TextDoc], parameters: dict | None) -> BadRequestError | None:
        """What `encode` would refuse in this request alone, before dynamic batching joins it with others."""
        try:
            options = self._options(parameters or {})
            texts = self._prompted([doc.text for doc in docs], options.prompt_name)
            if not self.auto_truncate:
                self._refuse_texts_over_the_limit(texts, [doc.id for doc in docs])
        except BadRequestError as refused:
            return refused
        return None

    def _prompted(self, texts: list[str], prompt_name: str | None) -> list[str]:
        """The texts after the prompt `prompt_name` names (None: the default prompt, or none)."""
        name = prompt_name if prompt_name is not None else self.default_prompt_name
        if name is None:
            return texts
        if name not in self.model.prompts:
            known = ', '.join(sorted(self.model.prompts)) or 'none'
            raise BadRequestError(f'`parameters.prompt_name` {name!r} is not a prompt of {self.model_name} (its '
                                  f'prompts: {known}): send one of those, or leave it out')  # fmt: skip
        prompt = self.model.prompts[name] or ''
        if prompt and not pools_prompts(self.model):
            raise BadRequestError(f'`parameters.prompt_name` {name!r}: the model pools without the prompt\'s tokens '
                                  '(include_prompt: false), which this encoder does not do: leave it out')  # fmt: skip
        return [prompt + text for text in texts] if prompt else texts

    def _refuse_texts_over_the_limit(self, texts: list[str], ids: list) -> None:
        """AUTO_TRUNCATE=false: a text longer than the model reads is refused, named, with its token count."""
        limit = self.model.max_seq_length
        if not limit:
            return  # a model that states no limit reads whole texts

        over = []
        for position, text in enumerate(texts):
            found, tokens = over_the_limit(text, limit, self.count_tokens, self.text_window)
            if found:
                name = ids[position] if ids[position] is not None else f'#{position}'
                over.append(f'{name} ({tokens} tokens)' if tokens else f'{name} (more than {limit} tokens)')
        if over:
            raise BadRequestError(
                f'docs {listed(over)} are longer than the {limit} tokens the model reads, and this encoder does not '
                'cut them (AUTO_TRUNCATE=false): shorten or split them'
            )

    def _options(self, parameters: dict) -> EncodeOptions:
        """`parameters` checked as the gateway checks them (encode_inputs.py): gRPC callers reach the executor
        directly. Jina adds `__results__`; parameters a caller addressed to the executor by name (its class name, or
        its deployment's: `{"encoder": {...}}`) Jina has merged into the others, and leaves the name's key in."""
        deployment = str(getattr(self.runtime_args, 'name', '') or '').split('/')[0]
        try:
            return check_parameters(parameters, ignore=frozenset({'__results__', self.metas.name, deployment}))
        except InputProblem as problem:
            raise BadRequestError(str(problem)) from None

    def _encode(self, texts: list[str], options: EncodeOptions) -> torch.Tensor:
        return self.lanes.encode(
            texts,
            batch_size=options.batch_size or self.batch_size,
            normalize_embeddings=self.normalize if options.normalize is None else options.normalize,
            convert_to_tensor=True,
            show_progress_bar=False,
        )

    def _encode_finite(self, texts: list[str], ids: list, options: EncodeOptions):
        """The embeddings of `texts` as float32 numpy rows, every value finite.

        A row with a NaN or inf is encoded again, alone, once (issue 28: a vector of NaNs was served once, and could
        not be made to happen again); still non-finite, the request fails with NonFiniteEmbedding naming the doc.
        float32 on the wire whatever the compute dtype: numpy has no bfloat16, and clients expect one type."""
        embeddings = self._encode(texts, options).float().cpu().numpy()
        finite = np.isfinite(embeddings).all(axis=1)
        if finite.all():
            return embeddings
        for row in np.flatnonzero(~finite):
            again = self._encode([texts[row]], options).float().cpu().numpy()
            recovered = bool(np.isfinite(again).all())
            name = ids[row] if ids[row] is not None else f'#{row}'
            self.logger.warning(
                f'non-finite embedding for doc {name} (text {texts[row][:60]!r}, {len(texts[row])} chars, in a batch '
                f'of {len(texts)}; backend {self.backend} on {self.device}, {self.dtype}): '
                + ('finite when encoded again alone, served' if recovered else 'non-finite again, request failed')
            )
            if self._non_finite is not None:
                self._non_finite.labels(outcome='reencoded' if recovered else 'failed').inc()
            if not recovered:
                raise NonFiniteEmbedding(
                    f'the model gave a non-finite (NaN or inf) embedding for doc {name}, also when encoded again '
                    f'alone ({self.backend} backend on {self.device}, {self.dtype}): nothing in this request was '
                    'answered; the encoder log has the text'
                )
            embeddings[row] = again[0]
        return embeddings


def checked_default_prompt(model: SentenceTransformer, configured: str | None) -> str | None:
    """ENCODER_DEFAULT_PROMPT_NAME, else the model's own default_prompt_name; one the model lacks, or a non-empty
    one a model pooling without its prompt's tokens would get wrong, stops the start."""
    name = (configured or '').strip() or model.default_prompt_name
    if name is not None and name not in (model.prompts or {}):
        known = ', '.join(sorted(model.prompts or {})) or 'none'
        raise StartupError(f'ENCODER_DEFAULT_PROMPT_NAME={name} is not a prompt of the model (its prompts: {known})')
    if name is not None and model.prompts[name] and not pools_prompts(model):
        raise StartupError(
            f"the default prompt {name} cannot be served: the model pools without the prompt's "
            'tokens (include_prompt: false), which this encoder does not do; set no default prompt'
        )
    return name


def pools_prompts(model: SentenceTransformer) -> bool:
    """Whether the model pools a prompt's tokens with the text's (every Pooling module's include_prompt, True by
    default). This encoder puts a prompt before the text; sentence-transformers can also leave its tokens out."""
    return all(getattr(module, 'include_prompt', True) is not False for module in model)


def auto_truncate() -> bool:
    """AUTO_TRUNCATE (default true): texts longer than the model reads are cut; false: refused."""
    return os.environ.get('AUTO_TRUNCATE', 'true').strip().lower() not in {'0', 'false', 'no', 'off'}


def token_counter_for(model: SentenceTransformer):
    """A function counting a text's tokens as the model's tokenizer makes them (special tokens included), for
    AUTO_TRUNCATE=false. It runs beside the threads that tokenise and encode batches, so not with their tokenizer
    (calling that with truncation=False failed batches of other requests: encode_inputs.untruncated_copy)."""
    backend_tokenizer = getattr(getattr(model, 'tokenizer', None), 'backend_tokenizer', None)
    if backend_tokenizer is None:
        # A slow (Python) tokenizer takes its settings per call and keeps none.
        return lambda text: len(model.tokenizer(text, truncation=False)['input_ids'])
    private = untruncated_copy(backend_tokenizer)
    return lambda text: len(private.encode(text).ids)


def text_window_for(model: SentenceTransformer, logger) -> TextWindow | None:
    """A TextWindow for the model's own tokenizer, or None (texts then reach the model whole) when the tokenizer is
    not a fast one or does not split words the way the cut assumes (checked on a sample: encode_inputs.py)."""
    backend_tokenizer = getattr(getattr(model, 'tokenizer', None), 'backend_tokenizer', None)
    if backend_tokenizer is None:
        logger.warning('the model has no fast tokenizer: long texts are tokenised whole')
        return None
    window = TextWindow(backend_tokenizer, model.max_seq_length)
    if not window.verified(VERIFY_SAMPLE):
        logger.warning("the model's tokenizer does not keep a cut text's first tokens: long texts are tokenised whole")
        return None
    return window
