"""The frameworks people embed with, each through its own client from PyPI (locked in constraints-clients.txt,
installed into .venv-clients by `make install`), against the real compose stack with API_KEY set, each passing the
key the way that client does: OpenAI's SDK, LangChain's OpenAIEmbeddings, LlamaIndex's OpenAIEmbedding, Haystack's
OpenAI embedders (OpenAI's API), and LlamaIndex's TextEmbeddingsInference (TEI's API). Each must return the
in-process model's embeddings, for a list of texts and for a single query, in order."""

from __future__ import annotations

import json
import subprocess

import pytest
from compose_stack import KEYED_STACK_API_KEY
from helpers import REPO, assert_same_embeddings

pytestmark = pytest.mark.e2e

CLIENTS_PYTHON = REPO / '.venv-clients' / 'bin' / 'python'
TEXTS = ['A cat sits on the mat.', 'Embeddings map text to vectors.', 'ünïcödé ✓ 日本語', 'hello world']
QUERY = 'where does the cat sit?'


def embed_with(client: str, base_url: str, key: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLIENTS_PYTHON), str(REPO / 'tests' / 'clients' / 'embed_with.py'), client, base_url, key],
        input=json.dumps({'texts': TEXTS, 'query': QUERY}), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize('client', ['openai', 'langchain-openai', 'llama-index-openai', 'haystack', 'llama-index-tei'])
def test_each_framework_gets_the_models_embeddings_with_the_key(keyed_stack, reference_model, client):
    if not CLIENTS_PYTHON.exists():
        pytest.fail('the clients environment is missing: run `make install` (it creates .venv-clients)')
    base = f'http://127.0.0.1:{keyed_stack.http_port}'
    answered = embed_with(client, base, KEYED_STACK_API_KEY)
    assert answered.returncode == 0, answered.stderr[-3000:]
    vectors = json.loads(answered.stdout)
    assert_same_embeddings(vectors['texts'], reference_model.encode(TEXTS))
    assert_same_embeddings([vectors['query']], reference_model.encode([QUERY]))


@pytest.mark.parametrize('client', ['langchain-openai', 'llama-index-tei'])
def test_a_wrong_key_fails_the_framework_call(keyed_stack, client):
    """The key really is checked on the path each client takes (its retries end in the 401)."""
    answered = embed_with(client, f'http://127.0.0.1:{keyed_stack.http_port}', 'not-the-key')
    assert answered.returncode != 0
    # LangChain raises the 401; LlamaIndex's TEI client fails on the error body it was given (TEI's shape, whose
    # error_type it quotes): either way the refusal reached the caller.
    assert '401' in answered.stderr or "'Unauthorized'}" in answered.stderr, answered.stderr[-2000:]
