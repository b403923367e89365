"""The one request path of POST /encode and POST /v1/embeddings (issue 23), and the guard against non-finite
embeddings (issue 28), in a real local Flow: the real gateway, the real encoder, the real model.

Embeddings are compared with the in-process torch model element by element and in norm (tests/helpers.py states the
tolerance for float32 and for bf16, OpenVINO's choice on Intel AMX), and every doc of every reply is checked.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import torch
from helpers import assert_same_embeddings, free_port, gateway_flow

from executor import SentenceEncoder

POISON_ONCE = 'poison once: the first encoding of this text is NaN'
POISON_ALWAYS = 'poison always: every encoding of this text is NaN'
ECHO_OPTIONS = 'echo options: this row is [batch_size, normalize, 0, ...] as the encoder was called'


class NaNInjectingLanes:
    """Wraps the encoder's lanes: rows of the poisoned texts come back NaN (once, or always), as the failing CI run saw
    from the real model, and the row of ECHO_OPTIONS says which options the encoder was called with (all-MiniLM-L6-v2
    normalises by itself, so `normalize` cannot be seen in its vectors). Everything else is the real encoder's."""

    def __init__(self, lanes) -> None:
        self._lanes = lanes
        self._poisoned_once = False

    def encode(self, texts, **options):
        embeddings = self._lanes.encode(texts, **options).clone()  # an inference tensor: not writable in place
        for row, text in enumerate(texts):
            if text == ECHO_OPTIONS:
                embeddings[row] = 0
                embeddings[row, 0] = options['batch_size']
                embeddings[row, 1] = float(options['normalize_embeddings'])
            if text == POISON_ALWAYS or (text == POISON_ONCE and not self._poisoned_once):
                self._poisoned_once = self._poisoned_once or text == POISON_ONCE
                embeddings[row] = torch.nan
        return embeddings


class NaNInjectingEncoder(SentenceEncoder):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lanes = NaNInjectingLanes(self.lanes)


@pytest.fixture(scope='module')
def api():
    port = free_port()
    with gateway_flow(port, name='encoder', uses=NaNInjectingEncoder, uses_with={'device': 'cpu'}):
        yield f'http://127.0.0.1:{port}'


def reference(model, texts, normalize=False):
    return model.encode(texts, batch_size=32, normalize_embeddings=normalize)


def assert_every_doc(reply, ids, texts, expected):
    assert reply.status_code == 200, reply.text[:500]
    data = reply.json()['data']
    assert [doc['id'] for doc in data] == ids
    assert [doc['text'] for doc in data] == texts
    got = np.array([doc['embedding'] for doc in data], dtype=np.float32)
    assert got.shape == expected.shape
    assert_same_embeddings(got, expected)


@pytest.mark.parametrize('count', [150, 2048])
@pytest.mark.parametrize(
    'extra', [{'parameters': {'normalize': True}}, {'header': {'requestId': 'mine'}}, {'parameters': {'batch_size': 7}}]
)
def test_encode_with_parameters_or_a_header_returns_every_doc_in_order(api, reference_model, count, extra):
    """Jina's route answered 50 of 150 such docs with a 200 (it split them into requests of 100 and answered with the
    first response back)."""
    texts = [f'doc number {i}: {"a longer text " * (i % 5)}' for i in range(count)]
    ids = [f'doc-{i}' for i in range(count)]
    body = {'data': [{'id': name, 'text': text} for name, text in zip(ids, texts, strict=True)], **extra}
    reply = requests.post(f'{api}/encode', json=body, timeout=300)
    assert_every_doc(reply, ids, texts, reference(reference_model, texts))
    if 'header' in extra:
        assert reply.json()['header']['requestId'] == 'mine'


@pytest.mark.parametrize(
    ('parameters', 'expected'),
    [
        ({}, [32, 0]),
        ({'batch_size': 5}, [5, 0]),
        ({'normalize': True}, [32, 1]),
        ({'batch_size': 7, 'normalize': False}, [7, 0]),
    ],
)
def test_parameters_reach_the_encoder(api, parameters, expected):
    """Each request's own parameters, also when requests of other parameters are joined at the same time."""
    bodies = [{'data': [{'text': ECHO_OPTIONS}], 'parameters': parameters}] * 4 + [
        {'data': [{'text': ECHO_OPTIONS}], 'parameters': {'batch_size': 3}}
    ] * 4
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda body: requests.post(f'{api}/encode', json=body, timeout=60), bodies))
    for reply, body in zip(replies, bodies, strict=True):
        assert reply.status_code == 200, reply.text[:300]
        echoed = reply.json()['data'][0]['embedding'][:2]
        assert echoed == (expected if body['parameters'] == parameters else [3, 0]), (body, echoed)


REFUSED = [
    # (what, body bytes, status, fragment of the message)
    (
        'BOM + 2,049 docs',
        b'\xef\xbb\xbf' + json.dumps({'data': [{'text': 'x'}] * 2049}).encode(),
        422,
        'byte-order mark',
    ),
    ('UTF-16 + 2,049 docs', json.dumps({'data': [{'text': 'x'}] * 2049}).encode('utf-16'), 422, 'UTF-16'),
    ('2,049 docs', json.dumps({'data': [{'text': 'x'}] * 2049}).encode(), 422, 'MAX_INPUTS_PER_REQUEST'),
    ('BOM + bad target', b'\xef\xbb\xbf{"data":[{"text":"x"}],"header":{"targetExecutor":"["}}', 422, 'byte-order'),
    ('BOM + embedding', b'\xef\xbb\xbf{"data":[{"text":"x","embedding":[{}]}]}', 422, 'byte-order'),
    ('an embedding', b'{"data":[{"text":"x","embedding":[{}]}]}', 422, 'carries `embedding`'),
    ('NaN in parameters', b'{"data":[{"text":"x"}],"parameters":{"batch_size":NaN}}', 422, 'NaN'),
    ('Infinity in parameters', b'{"data":[{"text":"x"}],"parameters":{"x":Infinity}}', 422, 'NaN and Infinity'),
    (
        'nested parameters',
        ('{"data":[{"text":"x"}],"parameters":{"a":' + '[' * 150 + ']' * 150 + '}}').encode(),
        422,
        'unknown `parameters` a',
    ),
    ('batch_size 0', b'{"data":[{"text":"x"}],"parameters":{"batch_size":0}}', 422, 'integer from 1 to'),
    ('batch_size -1', b'{"data":[{"text":"x"}],"parameters":{"batch_size":-1}}', 422, 'integer from 1 to'),
    ('batch_size "abc"', b'{"data":[{"text":"x"}],"parameters":{"batch_size":"abc"}}', 422, 'integer from 1 to'),
    ('batch_size null', b'{"data":[{"text":"x"}],"parameters":{"batch_size":null}}', 422, 'integer from 1 to'),
    ('batch_size []', b'{"data":[{"text":"x"}],"parameters":{"batch_size":[]}}', 422, 'integer from 1 to'),
    ('batch_size 1e9', b'{"data":[{"text":"x"}],"parameters":{"batch_size":1e9}}', 422, 'MAX_BATCH_SIZE'),
    ('normalize "false"', b'{"data":[{"text":"x"}],"parameters":{"normalize":"false"}}', 422, 'true or false'),
    ('unknown parameter', b'{"data":[{"text":"x"}],"parameters":{"truncate":true}}', 422, 'batch_size, normalize'),
    ('target selecting nothing', b'{"data":[{"text":"x"}],"header":{"targetExecutor":"nothing"}}', 422, 'selects no'),
    ('lone surrogate', b'{"data":[{"id":"a","text":"ok"},{"id":"b","text":"\\ud800"}]}', 422, 'Unicode: ids b'),
    ('not UTF-8', b'{"data":[{"text":"\xff"}]}', 422, 'not valid UTF-8'),
    ('a list body', b'[1, 2]', 422, 'must be a JSON object'),
    ('an unknown field', b'{"data":[{"text":"x"}],"execEndpoint":"/x"}', 422, 'unknown fields `execEndpoint`'),
    ('an int id', b'{"data":[{"id":5,"text":"x"}]}', 422, '`id` must be a string'),
]


@pytest.mark.parametrize(('what', 'body', 'status', 'fragment'), REFUSED, ids=[row[0] for row in REFUSED])
def test_bad_encode_bodies_get_a_4xx_naming_the_problem(api, what, body, status, fragment):
    reply = requests.post(f'{api}/encode', data=body, headers={'Content-Type': 'application/json'}, timeout=60)
    assert reply.status_code == status, (what, reply.status_code, reply.text[:300])
    assert fragment in reply.json()['detail'], reply.text[:300]


@pytest.mark.parametrize(
    ('body', 'fragment'),
    [
        (b'\xef\xbb\xbf{"input": "x"}', 'byte-order mark'),
        ('{"input": "x"}'.encode('utf-16'), 'UTF-16'),
        (b'{"input": ["ok", "\\ud800"]}', 'not valid Unicode at index 1'),
        (b'{"input": NaN}', 'NaN'),
        (b'', 'empty'),
    ],
)
def test_bad_openai_bodies_get_a_400_in_openai_shape(api, body, fragment):
    reply = requests.post(f'{api}/v1/embeddings', data=body, headers={'Content-Type': 'application/json'}, timeout=60)
    assert reply.status_code == 400, reply.text[:300]
    assert fragment in reply.json()['error']['message'], reply.text[:300]


def test_innocent_requests_joined_with_a_bad_one_all_get_their_embeddings(api, reference_model):
    """A lone surrogate failed protobuf's serialisation of the joined batch, and every request in it (24 x 500)."""
    texts = [f'an innocent request, number {i}' for i in range(24)]
    bad = b'{"input": "\\ud800 and more"}'

    def post(i: int) -> requests.Response:
        if i == 12:
            return requests.post(f'{api}/v1/embeddings', data=bad, headers={'Content-Type': 'application/json'},
                                 timeout=60)  # fmt: skip
        return requests.post(f'{api}/v1/embeddings', json={'input': texts[i - (i > 12)]}, timeout=60)

    with ThreadPoolExecutor(max_workers=25) as pool:
        replies = list(pool.map(post, range(25)))
    assert replies.pop(12).status_code == 400
    assert [reply.status_code for reply in replies] == [200] * 24
    got = np.array([reply.json()['data'][0]['embedding'] for reply in replies], dtype=np.float32)
    assert_same_embeddings(got, reference(reference_model, texts))


def test_innocent_requests_joined_with_one_the_encoder_fails_all_get_their_embeddings(api, reference_model):
    """A request that passes every check but fails in the encoder (its text's embedding stays NaN): the joined batch
    fails, is resent one request at a time, and only that one gets the error (a 500 naming it)."""
    texts = [f'an innocent request beside a failing one, number {i}' for i in range(24)]
    sent = texts[:12] + [POISON_ALWAYS] + texts[12:]
    with ThreadPoolExecutor(max_workers=25) as pool:
        replies = list(
            pool.map(lambda text: requests.post(f'{api}/v1/embeddings', json={'input': text}, timeout=60), sent)
        )
    failed = replies.pop(12)
    assert failed.status_code == 500 and 'input[0]' in failed.json()['error']['message'], failed.text[:300]
    assert [reply.status_code for reply in replies] == [200] * 24
    got = np.array([reply.json()['data'][0]['embedding'] for reply in replies], dtype=np.float32)
    assert_same_embeddings(got, reference(reference_model, texts))


def test_concurrent_requests_sharing_a_request_id_all_succeed(api, reference_model):
    """Jina's request metrics keyed requests by the client's id: 1 x 200 and 7 x 500."""
    body = {'data': [{'text': 'same id'}], 'header': {'requestId': 'shared'}, 'parameters': {'batch_size': 4}}
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda _: requests.post(f'{api}/encode', json=body, timeout=60), range(8)))
    for reply in replies:
        assert_every_doc(reply, [None], ['same id'], reference(reference_model, ['same id']))
        assert reply.json()['header']['requestId'] == 'shared'


def test_a_huge_text_is_answered_as_the_model_reads_it(api, reference_model):
    """8.4 MB of text: the model reads its first 256 tokens; the gateway cuts it before tokenising (the whole text,
    tokenised for `usage`, OOM-killed it). The reply equals the model's embedding of the full text."""
    text = 'the quick brown fox jumps over the lazy dog ' * 190_000
    reply = requests.post(f'{api}/v1/embeddings', json={'input': [text, 'short']}, timeout=120)
    assert reply.status_code == 200, reply.text[:300]
    body = reply.json()
    assert body['usage']['prompt_tokens'] == 256 + 3  # the cut text at the model's limit, plus [CLS] short [SEP]
    got = np.array([item['embedding'] for item in body['data']], dtype=np.float32)
    assert_same_embeddings(got, reference(reference_model, [text, 'short']))


def test_a_non_finite_row_is_encoded_again_and_served_finite(api, reference_model):
    texts = ['before', POISON_ONCE, 'after']
    reply = requests.post(f'{api}/encode', json={'data': [{'text': text} for text in texts]}, timeout=60)
    assert_every_doc(reply, [None] * 3, texts, reference(reference_model, texts))


def test_a_row_that_stays_non_finite_fails_the_request_with_a_500_naming_the_doc(api):
    body = {'data': [{'id': 'fine', 'text': 'fine'}, {'id': 'poisoned', 'text': POISON_ALWAYS}]}
    for path, sent in (('/encode', body), ('/v1/embeddings', {'input': ['fine', POISON_ALWAYS]})):
        reply = requests.post(f'{api}{path}', json=sent, timeout=60)
        assert reply.status_code == 500, reply.text[:300]
        assert 'non-finite' in reply.text and 'data' not in reply.json()  # no vectors at all, not nulls
    assert 'doc poisoned' in requests.post(f'{api}/encode', json=body, timeout=60).json()['detail']
