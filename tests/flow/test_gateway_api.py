"""The gateway's HTTP API (gateway/gateway.py) in a real local Flow: OpenAI routes, health, limits, the API key."""

from __future__ import annotations

import base64
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from helpers import assert_same_embeddings, free_port, gateway_flow, metric_value

from executor import SentenceEncoder

API_KEY = 'test-key-not-a-secret'


def encoder_flow(http_port: int, metrics_port: int | None = None):
    uses_with = {'device': 'cpu', 'max_docs_per_request': 100}
    return gateway_flow(http_port, metrics_port, uses=SentenceEncoder, uses_with=uses_with)


GATEWAY_METRICS: dict[str, str] = {}  # the `api` fixture's URL -> its gateway's Prometheus page


@pytest.fixture(scope='module')
def api():
    port, metrics_port = free_port(), free_port()
    with encoder_flow(port, metrics_port):
        GATEWAY_METRICS[f'http://127.0.0.1:{port}'] = f'http://127.0.0.1:{metrics_port}/'
        yield f'http://127.0.0.1:{port}'


@pytest.fixture(scope='module')
def api_with_key():
    port = free_port()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('API_KEY', API_KEY)
        patch.setenv('MAX_INPUTS_PER_REQUEST', '4')
        patch.setenv('MAX_BODY_BYTES', '2000')
        patch.setenv('BODY_TIMEOUT_S', '2')
        patch.setenv('HEADER_TIMEOUT_S', '2')
        with encoder_flow(port):
            yield f'http://127.0.0.1:{port}'


def test_v1_embeddings_for_a_string_and_a_list(api, reference_model):
    one = requests.post(f'{api}/v1/embeddings', json={'input': 'hello world', 'model': 'x'}, timeout=30).json()
    assert one['object'] == 'list' and one['model'] == 'sentence-transformers/all-MiniLM-L6-v2'
    assert one['data'][0]['object'] == 'embedding' and one['data'][0]['index'] == 0
    assert_same_embeddings([one['data'][0]['embedding']], reference_model.encode(['hello world']))
    # [CLS] hello world [SEP]: the real tokenizer's count, not an estimate
    assert one['usage'] == {'prompt_tokens': 4, 'total_tokens': 4}

    texts = ['first text', 'the second, longer text', 'third']
    many = requests.post(f'{api}/v1/embeddings', json={'input': texts}, timeout=30).json()
    assert [item['index'] for item in many['data']] == [0, 1, 2]
    vectors = np.array([item['embedding'] for item in many['data']])
    assert_same_embeddings(vectors, reference_model.encode(texts))


def test_v1_embeddings_base64_is_little_endian_float32(api, reference_model):
    reply = requests.post(
        f'{api}/v1/embeddings', json={'input': ['hello world'], 'encoding_format': 'base64'}, timeout=30
    )
    vector = np.frombuffer(base64.b64decode(reply.json()['data'][0]['embedding']), dtype='<f4')
    assert vector.shape == (384,)
    assert_same_embeddings([vector], reference_model.encode(['hello world']))


def test_models_health_ready_and_docs(api):
    models = requests.get(f'{api}/v1/models', timeout=10).json()
    assert models['data'][0]['id'] == 'sentence-transformers/all-MiniLM-L6-v2'
    assert requests.get(f'{api}/health', timeout=10).json() == {'status': 'ok'}
    ready = requests.get(f'{api}/ready', timeout=10)
    # Counts only: the encoders' addresses go to callers with the key (there is none here).
    assert ready.status_code == 200 and ready.json() == {'ready': True, 'encoders': {'serving': 1, 'total': 1}}
    with ThreadPoolExecutor(max_workers=25) as pool:  # answered from the background check's state
        replies = list(pool.map(lambda _: requests.get(f'{api}/ready', timeout=30), range(100)))
    assert {(reply.status_code, reply.text) for reply in replies} == {(200, ready.text)}
    paths = requests.get(f'{api}/openapi.json', timeout=10).json()['paths']
    assert {'/encode', '/v1/embeddings', '/v1/models', '/health', '/ready'} <= set(paths)
    # Jina's debug routes leak the environment and run a request through the flow: not served.
    assert not {'/status', '/dry_run', '/encode_unbatched'} & set(paths)
    for path in ('/status', '/dry_run'):
        assert requests.get(f'{api}{path}', timeout=10).status_code == 404, path


@pytest.mark.parametrize('path', ['/v1/embeddings', '/encode'])
@pytest.mark.parametrize(
    'content_type',
    [None, 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/jsonx'],
)
def test_a_body_not_declared_json_is_a_415_naming_the_header(api, path, content_type):
    """What a web page can post cross-site without a preflight (text/plain, form, multipart, or no type): refused
    before the body is read, whatever it holds."""
    body = b'{"input": "x", "data": [{"text": "x"}]}'
    headers = {'Content-Type': content_type} if content_type else {}
    reply = requests.post(f'{api}{path}', data=body, headers=headers, timeout=10)
    assert reply.status_code == 415, (reply.status_code, reply.text)
    message = reply.json()['error']['message'] if path.startswith('/v1') else reply.json()['detail']
    declared = content_type or 'none'
    assert message == f'the body must be JSON: send `Content-Type: application/json` (declared: {declared})'


@pytest.mark.parametrize('content_type', ['application/json; charset=utf-8', 'Application/JSON', 'application/x+json'])
def test_json_media_types_with_parameters_or_a_suffix_are_read(api, content_type):
    reply = requests.post(f'{api}/v1/embeddings', data=b'{"input": "x"}', headers={'Content-Type': content_type},
                          timeout=30)  # fmt: skip
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize('host', ['evil.example', 'evil.example:8080', 'localhost.evil.example', '127.0.0.1.nip.io'])
def test_without_a_key_dns_names_other_than_the_gateways_own_are_refused(api, host):
    """DNS rebinding: a page whose name now resolves to the gateway's address sends its own name as Host."""
    for method, path, body in (('POST', '/v1/embeddings', {'input': 'x'}), ('GET', '/v1/models', None)):
        reply = requests.request(method, f'{api}{path}', json=body, headers={'Host': host}, timeout=10)
        assert reply.status_code == 400, (path, reply.status_code, reply.text)
        message = reply.json()['error']['message']
        assert message.startswith(f'Host `{host.split(":")[0]}` is not served here without an API key: call the ')
        assert message.endswith(', or an IP address, or name it in ALLOWED_HOSTS'), message
    native = requests.post(f'{api}/encode', json={'data': [{'text': 'x'}]}, headers={'Host': host}, timeout=10)
    assert native.status_code == 400 and 'is not served here' in native.json()['detail']
    assert requests.get(f'{api}/health', headers={'Host': host}, timeout=10).status_code == 200  # probes stay open


@pytest.mark.parametrize(
    'host', ['localhost', 'LOCALHOST:1234', 'localhost.', '127.0.0.1', '127.0.0.2', '[::1]:80', '192.168.1.20:8080',
             'gateway'],
)  # fmt: skip
def test_without_a_key_ip_addresses_and_the_gateways_own_names_are_served(api, host):
    reply = requests.post(f'{api}/v1/embeddings', json={'input': 'x'}, headers={'Host': host}, timeout=30)
    assert reply.status_code == 200, (host, reply.text)


def test_two_host_headers_are_a_400(api):
    """RFC 9112; a proxy in front and the gateway could otherwise each read another one. (h11 answers it.)"""
    port = int(api.rsplit(':', 1)[1])
    with socket.create_connection(('127.0.0.1', port), timeout=10) as connection:
        connection.sendall(b'GET /v1/models HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n')
        reply = connection.recv(65536).decode()
    assert reply.startswith('HTTP/1.1 400'), reply


@pytest.mark.parametrize(
    ('body', 'param', 'fragment'),
    [
        ({'input': 5}, 'input', 'must be a text or a list of texts, not a number'),
        ({'input': [1, 2]}, 'input', 'token ids'),
        ({'input': ['ok', 3]}, 'input', 'token ids'),
        ({'input': ['ok', None]}, 'input', 'no text at index 1'),
        ({'input': []}, 'input', 'empty list'),
        ({'input': ['ok', '  ']}, 'input', 'empty text at index 1'),
        ({}, 'input', '`input` is required'),
        ({'input': 'x', 'encoding_format': 'int8'}, 'encoding_format', 'must be "float" or "base64"'),
        ({'input': 'x', 'dimensions': 3}, 'dimensions', '`dimensions` 3: sentence-transformers/all-MiniLM-L6-v2 gives'),
        ({'input': 'x', 'truncate': True}, 'truncate', 'unknown fields `truncate`'),
        ({'input': 'x', 'model': 7}, 'model', '`model` must be a string'),
    ],
)
def test_v1_bad_input_is_a_400_in_openai_shape_naming_the_field(api, body, param, fragment):
    reply = requests.post(f'{api}/v1/embeddings', json=body, timeout=30)
    assert reply.status_code == 400, reply.text
    error = reply.json()['error']
    assert error['type'] == 'invalid_request_error' and error['param'] == param and fragment in error['message']


def test_malformed_json_and_wrong_content_type_are_4xx(api):
    broken = requests.post(
        f'{api}/v1/embeddings', data='{"input": ', headers={'Content-Type': 'application/json'}, timeout=30
    )
    assert broken.status_code == 400 and 'not valid JSON' in broken.json()['error']['message']
    for path in ('/v1/embeddings', '/encode'):
        form = requests.post(f'{api}{path}', data='input=hello', timeout=10)
        assert form.status_code == 415, (path, form.status_code)
    native = requests.post(f'{api}/encode', data='{"data": [', headers={'Content-Type': 'application/json'}, timeout=30)
    assert native.status_code == 422


def test_native_route_refusals_are_422_and_the_next_request_works(api):
    for body, fragment in [
        ({'data': [{'text': ''}]}, 'empty text: ids #0'),
        ({'data': [{'id': 'a'}]}, 'no text: ids a'),
        ({'data': {'text': 'x', 'embedding': [{}]}}, 'carries `embedding`'),
        ({'data': [{'text': 'x', 'url': 'https://example.com/' + 'a' * 70_000}]}, 'at most 65536 characters'),
    ]:
        reply = requests.post(f'{api}/encode', json=body, timeout=30)
        assert reply.status_code == 422 and fragment in reply.json()['detail'], reply.text
    for body in ({'data': 'not a list'}, {'data': [{'text': ['a list']}]}, {'nothing': 1}):
        assert requests.post(f'{api}/encode', json=body, timeout=30).status_code == 422
    assert requests.post(f'{api}/encode', json={'data': [{'text': 'fine'}]}, timeout=30).status_code == 200


def test_the_api_key_guards_every_route_but_the_probes(api_with_key):
    api = api_with_key
    for path in ('/health', '/ready', '/'):
        assert requests.get(f'{api}{path}', timeout=10).status_code == 200, path
    refused = requests.get(f'{api}/v1/models', timeout=10)
    assert refused.status_code == 401 and refused.headers['WWW-Authenticate'] == 'Bearer'
    # A key set: any Host is answered (a page cannot send the key), and /ready names the encoders to the key only.
    assert requests.get(f'{api}/v1/models', headers={'Host': 'anything.example', 'Authorization': f'Bearer {API_KEY}'},
                        timeout=10).status_code == 200  # fmt: skip
    assert 'addresses' not in requests.get(f'{api}/ready', timeout=10).json()
    addresses = requests.get(f'{api}/ready', headers={'Authorization': f'Bearer {API_KEY}'}, timeout=10).json()
    assert list(addresses['addresses'].values()) == [True], addresses
    assert requests.post(f'{api}/encode', json={'data': [{'text': 'x'}]}, timeout=10).status_code == 401
    wrong = requests.post(
        f'{api}/v1/embeddings', json={'input': 'x'}, headers={'Authorization': 'Bearer nope'}, timeout=10
    )
    assert wrong.status_code == 401 and wrong.json()['error']['type'] == 'authentication_error'
    assert API_KEY not in wrong.text
    right = requests.post(
        f'{api}/v1/embeddings', json={'input': 'x'}, headers={'Authorization': f'Bearer {API_KEY}'}, timeout=30
    )
    assert right.status_code == 200


def test_configured_limits_answer_413_and_400_naming_the_limit(api_with_key):
    headers = {'Authorization': f'Bearer {API_KEY}'}
    too_big = requests.post(f'{api_with_key}/v1/embeddings', json={'input': 'x' * 3000}, headers=headers, timeout=10)
    assert too_big.status_code == 413 and 'MAX_BODY_BYTES' in too_big.json()['error']['message']
    chunked = (part.encode() for part in ('{"input": "', 'x' * 3000, '"}'))  # no Content-Length to refuse up front
    too_big = requests.post(f'{api_with_key}/v1/embeddings', data=chunked,
                            headers={**headers, 'Content-Type': 'application/json'}, timeout=10)  # fmt: skip
    assert too_big.status_code == 413 and 'MAX_BODY_BYTES' in too_big.json()['error']['message']
    too_many = requests.post(f'{api_with_key}/v1/embeddings', json={'input': ['a'] * 5}, headers=headers, timeout=10)
    assert too_many.status_code == 400 and 'limit of 4' in too_many.json()['error']['message']
    native = requests.post(f'{api_with_key}/encode', json={'data': [{'text': 'a'}] * 5}, headers=headers, timeout=10)
    assert native.status_code == 422 and 'limit of 4' in native.json()['detail']
    fits = requests.post(f'{api_with_key}/encode', json={'data': [{'text': 'a'}] * 4}, headers=headers, timeout=30)
    assert fits.status_code == 200 and len(fits.json()['data']) == 4


def test_a_trickled_body_gets_408_and_the_connection_is_closed(api_with_key):
    """A body sent a byte at a time held its connection for ever; now BODY_TIMEOUT_S (2 s here) ends it."""
    port = int(api_with_key.rsplit(':', 1)[1])
    head = (
        f'POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n'
        'Content-Type: application/json\r\nContent-Length: 500\r\n\r\n'
    )
    with socket.create_connection(('127.0.0.1', port), timeout=10) as connection:
        connection.sendall(head.encode())
        started = time.monotonic()
        answer = b''
        for byte in b'{"input": "' + b'x' * 20:
            try:
                connection.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.5)
            if time.monotonic() - started > 6:
                break
        try:
            while chunk := connection.recv(4096):
                answer += chunk
        except OSError:
            pass
    assert answer.startswith(b'HTTP/1.1 408'), answer[:200]
    assert b'BODY_TIMEOUT_S' in answer


def test_a_silent_connection_is_closed_after_the_header_timeout(api_with_key):
    port = int(api_with_key.rsplit(':', 1)[1])
    with socket.create_connection(('127.0.0.1', port), timeout=10) as connection:
        started = time.monotonic()
        answer = connection.recv(4096)
        waited = time.monotonic() - started
    assert answer.startswith(b'HTTP/1.1 408') and 1.5 < waited < 4, (answer[:100], waited)  # 2 s here, 5 by default


def test_one_text_requests_joined_into_batches_each_get_their_own_embedding(api, reference_model):
    """The gateway joins concurrent HTTP requests into one encoder request (gateway/coalescer.py): /v1/embeddings and
    /encode alike, mixed. Bad ones among them are refused alone, each with its own 4xx, before anything is joined."""
    texts = [f'one text per request, number {i}' for i in range(48)]
    metrics_before = requests.get(GATEWAY_METRICS[api], timeout=10).text

    def good(i: int) -> tuple[str, dict]:
        if i % 2:
            return '/v1/embeddings', {'input': texts[i], 'model': 'x'}
        return '/encode', {'data': [{'id': f'doc-{i}', 'text': texts[i]}]}

    bad = [
        ('/v1/embeddings', {'input': ''}, 400, 'empty text at index 0'),
        ('/v1/embeddings', {'input': 7}, 400, 'input'),
        ('/encode', {'data': [{'id': 'blank', 'text': ' '}]}, 422, 'empty text: ids blank'),
        ('/encode', {'data': [{'id': 'number', 'text': 5}]}, 422, 'text is not a string (int): ids number'),
    ]
    sent = [good(i) for i in range(len(texts))]
    for position, (path, body, _, _) in zip((5, 17, 30, 41), bad, strict=True):
        sent.insert(position, (path, body))

    def post(request: tuple[str, dict]) -> requests.Response:
        path, body = request
        return requests.post(f'{api}{path}', json=body, timeout=60)

    with ThreadPoolExecutor(max_workers=len(sent)) as pool:
        replies = list(pool.map(post, sent))
    for position, (_, _, status, message) in zip((41, 30, 17, 5), reversed(bad), strict=True):
        refused = replies.pop(position)
        assert refused.status_code == status and message in refused.text, refused.text
    assert [reply.status_code for reply in replies] == [200] * len(texts)
    vectors = []
    for i, reply in enumerate(replies):
        body = reply.json()
        if i % 2:
            assert body['usage']['prompt_tokens'] > 0
            vectors.append(body['data'][0]['embedding'])
        else:
            assert (body['data'][0]['id'], body['data'][0]['text']) == (f'doc-{i}', texts[i])
            vectors.append(body['data'][0]['embedding'])
    assert_same_embeddings(np.array(vectors), reference_model.encode(texts))
    # Joined: the 48 texts reached the encoder in fewer encoder requests than there were HTTP requests.
    metrics = requests.get(GATEWAY_METRICS[api], timeout=10).text

    def grew(name: str) -> float:
        return metric_value(metrics, name) - metric_value(metrics_before, name)

    joined_batches, joined_requests = (
        grew('jina_gateway_joined_batch_requests_count'),
        grew('jina_gateway_joined_batch_requests_sum'),
    )
    assert grew('jina_gateway_joined_batch_texts_sum') == len(texts) and joined_requests == len(texts)
    assert joined_batches < len(texts) / 2, f'{len(texts)} requests went to the encoder in {joined_batches} batches'


def test_encode_with_a_target_executor_that_is_not_a_regex_is_a_422(api):
    """Jina matches executors against `header.targetExecutor` as a regular expression; one that does not compile was a
    500 (schemathesis found it)."""
    body = {'data': [{'text': 'hello'}], 'header': {'targetExecutor': '[unclosed'}}
    reply = requests.post(f'{api}/encode', json=body, timeout=30)
    assert reply.status_code == 422 and 'targetExecutor' in reply.json()['detail']
    fine = requests.post(f'{api}/encode', json={**body, 'header': {'targetExecutor': 'executor.*'}}, timeout=30)
    assert fine.status_code == 200
