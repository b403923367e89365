"""Every setting of the gateway, read once from the environment. Each default says why it is what it is; the table in
docs/reliability.md has the limits, what a client gets past each, and the memory they add up to."""

import os


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, str(default)))


MODEL_NAME = os.environ.get('ENCODER_MODEL', 'sentence-transformers/all-MiniLM-L6-v2')
# Tokens per text the model reads, only when its sentence_bert_config.json cannot be read (model_info.py reads the
# model's own limit, its dimension and its prompts from its files in the HF cache).
MAX_TOKENS_PER_INPUT = _int('MAX_TOKENS_PER_INPUT', 256)
# Texts longer than the model reads: cut (true, as TEI's --auto-truncate and sentence-transformers do), or refused
# naming each (false). TEI's /embed takes `truncate` per request.
AUTO_TRUNCATE = os.environ.get('AUTO_TRUNCATE', 'true').strip().lower() not in {'0', 'false', 'no', 'off'}
# The prompt put before every text when a request names none (one of the model's `prompts`; TEI's
# --default-prompt-name). Empty: the model's own default_prompt_name, or none.
DEFAULT_PROMPT_NAME = os.environ.get('ENCODER_DEFAULT_PROMPT_NAME', '').strip() or None
# Shorter embedding dimensions served on request (`dimensions`), for a model trained for them (Matryoshka), e.g.
# "256,128". Empty: only the model's own dimension.
MATRYOSHKA_DIMENSIONS = os.environ.get('MATRYOSHKA_DIMENSIONS', '')
# The encoder's compute dtype, as compose passes it to both (TEI's /info `model_dtype`); answers are float32 always.
MODEL_DTYPE = os.environ.get('ENCODER_DTYPE', 'float32')

# ---- what one request may hold
# OpenAI's limit of inputs per request (TEI: 32, configurable).
MAX_INPUTS_PER_REQUEST = _int('MAX_INPUTS_PER_REQUEST', 2048)
# 8 MiB: 2,048 texts of ~4 KB. TEI's default is 2 MB; OpenAI takes 2,048 x 8k tokens (~64 MB) but not on 2 cores.
MAX_BODY_BYTES = _int('MAX_BODY_BYTES', 8 * 1024 * 1024)
# One gRPC message to the gateway (a request of Jina's Client: `request_size` docs, 100 by default), as HTTP's body.
MAX_GRPC_MESSAGE_BYTES = _int('MAX_GRPC_MESSAGE_BYTES', MAX_BODY_BYTES)
# One gRPC answer from the gateway: the request's docs and their embeddings; the bound of the hop from the encoder
# (flow.yml's grpc_channel_options), so that whatever the encoder may answer, the gateway may pass on.
MAX_GRPC_ANSWER_BYTES = _int('MAX_GRPC_ANSWER_BYTES', 64 * 1024 * 1024)
# A request's head (request line + headers); past it: 431. uvicorn's h11 default for an incomplete head, also used
# for a head that arrives whole (h11 parses that at any size).
MAX_HEADER_BYTES = _int('MAX_HEADER_BYTES', 16 * 1024)

# ---- how many at once: past these, 429 (or 503 for connections) with Retry-After, at once
# Embedding requests being answered at once (TEI's --max-concurrent-requests default: 512).
MAX_CONCURRENT_REQUESTS = _int('MAX_CONCURRENT_REQUESTS', 512)
# Texts waiting to join an encoder batch (not yet sent). At ~1,400 texts/s (2 cores, OpenVINO) 4,096 is ~3 s of work:
# more waiting only makes every client's answer later.
MAX_QUEUED_TEXTS = _int('MAX_QUEUED_TEXTS', 4096)
# Request bodies held at once, all requests together. Memory, not CPU: a body costs up to ~5x its size while parsed
# and answered (bytes, the parsed texts, the reply echoing them), so 64 MiB keeps the gateway far under its 1 GiB.
MAX_BODY_BYTES_IN_FLIGHT = _int('MAX_BODY_BYTES_IN_FLIGHT', 64 * 1024 * 1024)
# Open HTTP connections; one past it is answered 503 and closed.
MAX_CONNECTIONS = _int('MAX_CONNECTIONS', 1024)
RETRY_AFTER_S = _int('RETRY_AFTER_S', 1)

# ---- time a client may take: a silent or slow client is cut off, not held for ever (408, or the connection closed)
# From connecting (or the end of the last reply's keep-alive) to the end of the request's head.
HEADER_TIMEOUT_S = _float('HEADER_TIMEOUT_S', 5)
# From the head to the end of the body: 8 MiB in 30 s is ~280 KB/s, far below any link that should send that much.
BODY_TIMEOUT_S = _float('BODY_TIMEOUT_S', 30)
# An idle keep-alive connection between requests (uvicorn's default).
KEEP_ALIVE_TIMEOUT_S = _float('KEEP_ALIVE_TIMEOUT_S', 5)

# ---- who may call (http_origin.py): the Host names answered ('*': any). Unset: without API_KEY, IP addresses,
# localhost, gateway and the container's hostname; with API_KEY, any.
ALLOWED_HOSTS = os.environ.get('ALLOWED_HOSTS', '')
# HTTPS on the HTTP port: a PEM certificate (chain) and its key, both or neither (the swarm's published port: a
# bearer key must not cross a network in clear). The gRPC port stays plaintext: it is not published there.
TLS_CERT_FILE = os.environ.get('TLS_CERT_FILE', '')
TLS_KEY_FILE = os.environ.get('TLS_KEY_FILE', '')

# How long shutdown waits for requests in flight to finish. Keep it under compose's stop_grace_period (30 s), after
# which Docker SIGKILLs the container.
DRAIN_TIMEOUT_S = _float('DRAIN_TIMEOUT_S', 20)
# uvicorn's line per request: off unless ACCESS_LOG=1 (it cost ~5% of the gateway's CPU at a few hundred requests/s,
# and Docker's log driver more); jina's request metrics on the monitoring port count requests either way.
ACCESS_LOG = os.environ.get('ACCESS_LOG', '').strip().lower() in {'1', 'true', 'yes', 'on'}

# ---- joining concurrent HTTP requests (coalescer.py; README, "Batching of HTTP requests"). A batch leaves at once
# while fewer than HTTP_BATCHES_IN_FLIGHT batches per encoder replica are out; otherwise requests gather until one
# comes back, HTTP_BATCH_MAX_DOCS texts wait, or the oldest has waited HTTP_BATCH_WAIT_MS. HTTP_BATCH_MAX_DOCS=1: none.
HTTP_BATCH_MAX_DOCS = _int('HTTP_BATCH_MAX_DOCS', 64)
HTTP_BATCH_WAIT_MS = _float('HTTP_BATCH_WAIT_MS', 20)
HTTP_BATCHES_IN_FLIGHT = _int('HTTP_BATCHES_IN_FLIGHT', 1)
# Texts of more characters than this in one request are cut and counted in a worker thread, off the event loop (a
# few ms of tokenising would stall every other request); shorter ones inline, where a thread hop costs more.
INLINE_TEXT_CHARS = _int('INLINE_TEXT_CHARS', 64 * 1024)
