"""The compose stack's HTTP API with real clients: the official OpenAI package, curl, and a schemathesis fuzz."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
from compose_stack import Stack
from helpers import assert_same_embeddings, metric_value
from openai import OpenAI

pytestmark = pytest.mark.e2e

MODEL = 'sentence-transformers/all-MiniLM-L6-v2'


@pytest.fixture(scope='module')
def openai_client(stack: Stack) -> OpenAI:
    return OpenAI(base_url=f'http://127.0.0.1:{stack.http_port}/v1', api_key='no-key-configured', max_retries=0)


def test_openai_client_string_input(openai_client, reference_model):
    reply = openai_client.embeddings.create(model=MODEL, input='hello world', encoding_format='float')
    assert reply.model == MODEL and reply.usage.prompt_tokens == 4
    assert_same_embeddings([reply.data[0].embedding], reference_model.encode(['hello world']))


def test_openai_client_list_input_keeps_order(openai_client, reference_model):
    texts = ['alpha beta', 'a somewhat longer sentence about embeddings', 'gamma']
    reply = openai_client.embeddings.create(model=MODEL, input=texts, encoding_format='float')
    assert [item.index for item in reply.data] == [0, 1, 2]
    vectors = np.array([item.embedding for item in reply.data])
    assert_same_embeddings(vectors, reference_model.encode(texts))


def test_openai_client_base64(openai_client, reference_model):
    explicit = openai_client.embeddings.create(model=MODEL, input=['hello world'], encoding_format='base64')
    vector = np.frombuffer(base64.b64decode(explicit.data[0].embedding), dtype='<f4')
    assert_same_embeddings([vector], reference_model.encode(['hello world']))
    # With no encoding_format the client asks for base64 itself and decodes it to floats.
    default = openai_client.embeddings.create(model=MODEL, input='hello world')
    assert_same_embeddings([default.data[0].embedding], [vector])


def test_curl_v1_embeddings(stack: Stack, reference_model):
    result = subprocess.run(
        ['curl', '-sS', '--max-time', '60', f'http://127.0.0.1:{stack.http_port}/v1/embeddings',
         '-H', 'Content-Type: application/json', '-d', '{"input": "hello world", "model": "all-MiniLM-L6-v2"}'],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    reply = json.loads(result.stdout)
    assert reply['object'] == 'list'
    assert_same_embeddings([reply['data'][0]['embedding']], reference_model.encode(['hello world']))


def test_fuzzing_the_openapi_spec_finds_no_5xx(stack: Stack, tmp_path):
    """schemathesis generates requests from the gateway's own OpenAPI spec; none may get a 5xx."""
    har = tmp_path / 'requests.har'
    result = subprocess.run(
        [str(Path(sys.executable).parent / 'schemathesis'), 'run', f'http://127.0.0.1:{stack.http_port}/openapi.json',
         '--checks', 'not_a_server_error', '--max-examples', '150', '--seed', '42', '--request-timeout', '60',
         '--report', 'har', '--report-har-path', str(har)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,  # its cache goes there, not into the checkout
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]
    entries = json.loads(har.read_text())['log']['entries']
    statuses = [entry['response']['status'] for entry in entries]
    print(f'schemathesis sent {len(entries)} requests; statuses {sorted(set(statuses))}')
    assert len(entries) >= 500
    assert not [status for status in statuses if status >= 500]
    assert stack.up().returncode == 0, 'the stack must still be healthy after the fuzz'


def test_prometheus_metrics_on_loopback(stack: Stack):
    ports = stack.env_overrides

    def pages() -> tuple[str, str]:
        encoder = requests.get(f'http://127.0.0.1:{ports["ENCODER_METRICS_PORT"]}/', timeout=10).text
        gateway = requests.get(f'http://127.0.0.1:{ports["GATEWAY_METRICS_PORT"]}/', timeout=10).text
        return encoder, gateway

    encoder_before, gateway_before = pages()
    reply = requests.post(
        f'http://127.0.0.1:{stack.http_port}/encode', json={'data': [{'text': 'count me'}] * 3}, timeout=30
    )
    assert reply.status_code == 200, reply.text
    encoder, gateway = pages()

    def grew(before: str, after: str, name: str) -> float:
        return metric_value(after, name) - metric_value(before, name)

    # The counts move by what this one request sent (the tests of this module run one at a time).
    assert grew(encoder_before, encoder, 'jina_sentence_encoder_docs_encoded_total') == 3
    assert grew(encoder_before, encoder, 'jina_sentence_encoder_request_docs_count') == 1
    assert grew(gateway_before, gateway, 'jina_gateway_joined_batch_texts_sum') == 3
    assert grew(gateway_before, gateway, 'jina_gateway_joined_batch_requests_count') == 1
    assert 'jina_process_request_seconds' in encoder  # jina's own per-endpoint latency
    assert 'jina_receiving_request_seconds' in gateway or 'jina_sending_request_seconds' in gateway
    assert metric_value(gateway, 'jina_gateway_http_embedding_requests_in_flight') == 0  # answered
    published = stack.compose('port', 'encoder', '9091').stdout.strip()
    assert published.startswith('127.0.0.1:'), published
