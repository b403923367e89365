"""Every refusal of the gateway's request checks (gateway/request_checks.py), word for word, with the field it names.

The message is what a client reads to fix its request, and `param` is what the OpenAI error object reports: both are
the contract, so both are compared whole. The limits are checked at their edges: the limit itself passes, one over
it is refused (an off-by-one either way fails a test here; mutation testing found both untested).
"""

from __future__ import annotations

import sys

import pytest
from helpers import REPO

sys.path.insert(0, str(REPO / 'gateway'))
from model_info import ModelInfo  # noqa: E402
from request_checks import (  # noqa: E402
    MAX_ID_CHARS,
    MAX_TARGET_CHARS,
    MAX_URL_CHARS,
    RequestProblem,
    check_encode_request,
    check_openai_request,
    parse_and_check,
)

MAX_INPUTS = 4
TOKEN_IDS = (
    '`input` holds token ids (numbers): this server takes text and tokenises it with its own model; ids from another '
    "tokenizer (tiktoken's, most likely) would give wrong vectors. Send the texts; with LangChain's OpenAIEmbeddings "
    'set check_embedding_ctx_length=False'
)


OPENAI_FIELDS_NAMED = '`input`, `model`, `encoding_format`, `user`, `dimensions`, `prompt_name`'
MODEL = ModelInfo(name='sentence-transformers/all-MiniLM-L6-v2', max_tokens=256, dimension=384, normalized=True)


def encode(body):
    return check_encode_request(body, max_inputs=MAX_INPUTS, executors=('encoder',))


def openai(body):
    return check_openai_request(body, max_inputs=MAX_INPUTS, model=MODEL)


ONE = [{'text': 'x'}]


def assert_refused(refuse, message: str, param: str | None) -> None:
    """`refuse()` raises the RequestProblem with exactly this message and param."""
    with pytest.raises(RequestProblem) as refused:
        refuse()
    assert str(refused.value) == message
    assert refused.value.param == param


REFUSALS = [
    # /v1/embeddings
    (openai, ['x'], 'the body must be a JSON object, not a list: {"input": "...", "model": "..."}', None),
    (openai, {'input': 'x', 'extra': 1, 'more': 2},
     'unknown fields `extra`, `more`: /v1/embeddings takes ' + OPENAI_FIELDS_NAMED, 'extra'),
    (openai, {'input': 'x', 'model': 3}, '`model` must be a string, not a number', 'model'),
    (openai, {'input': 'x', 'user': [1]}, '`user` must be a string, not a list', 'user'),
    (openai, {'input': 'x', 'encoding_format': 'int8'},
     "`encoding_format` must be \"float\" or \"base64\", not 'int8'", 'encoding_format'),
    (openai, {'model': 'm'}, '`input` is required: a text, or a list of texts', 'input'),
    (openai, {'input': None}, '`input` must be a text or a list of texts, not null', 'input'),
    (openai, {'input': {'a': 1}}, '`input` must be a text or a list of texts, not an object', 'input'),
    (openai, {'input': []}, '`input` is an empty list: send at least one text', 'input'),
    (openai, {'input': ['a'] * (MAX_INPUTS + 1)},
     '`input` has 5 texts, over the limit of 4 per request (MAX_INPUTS_PER_REQUEST): split it', 'input'),
    (openai, {'input': [1, 2, 3]}, TOKEN_IDS, 'input'),
    (openai, {'input': [[1, 2]]}, TOKEN_IDS, 'input'),
    (openai, {'input': ['a', 7]}, TOKEN_IDS, 'input'),
    # /encode
    (encode, 'x', 'the body must be a JSON object, not a string: {"data": [{"text": "..."}]}', None),
    (encode, {'data': ONE, 'extra': 1},
     'unknown fields `extra`: /encode takes `data`, `parameters`, `header`', 'extra'),
    (encode, {'parameters': {}},
     '`data` is required: a list of docs, e.g. {"data": [{"text": "hello world"}]}', 'data'),
    (encode, {'data': 'x'}, '`data` must be a list of docs (or one doc), not a string: {"data": [{"text": "hello '
     'world"}]}', 'data'),
    (encode, {'data': ONE * (MAX_INPUTS + 1)},
     '`data` has 5 docs, over the limit of 4 per request (MAX_INPUTS_PER_REQUEST): send them in smaller requests',
     'data'),
    (encode, {'data': ONE, 'parameters': {'batch_size': 0}},
     '`parameters.batch_size` must be an integer from 1 to 512 (texts per forward pass, MAX_BATCH_SIZE), not 0',
     'parameters'),
    (encode, {'data': ['x']}, '`data` #0 must be an object with a `text`, not a string', 'data'),
    (encode, {'data': [{'text': 'x'}, {'text': 'y', 'foo': 1}]},
     '`data` #1 has unknown fields `foo`: a doc takes `id` and `text` (and `url`)', 'data'),
    (encode, {'data': [{'text': 'x', 'id': 5}]},
     '`data` #0: `id` must be a string of at most 1024 characters, not 5', 'data'),
    (encode, {'data': [{'text': 'x', 'url': 'u' * (MAX_URL_CHARS + 1)}]},
     '`data` #0: `url` must be a string of at most 65536 characters', 'data'),
    (encode, {'data': [{'text': 'x', 'url': 3}]}, '`data` #0: `url` must be a string of at most 65536 characters',
     'data'),
    (encode, {'data': [{'text': 'x', 'embedding': [1]}]},
     '`data` #0 carries `embedding`: leave it out, the encoder fills `embedding` and does not read `bytes_`', 'data'),
    (encode, {'data': [{'text': 'x', 'bytes_': 'AA=='}]},
     '`data` #0 carries `bytes_`: leave it out, the encoder fills `embedding` and does not read `bytes_`', 'data'),
    (encode, {'data': [{'text': 'x'}, {'text': ''}, {'id': 'c'}]},
     'empty text: ids #1; no text: ids c. Each doc needs a non-empty string of valid Unicode in `text`; nothing in '
     'this request was encoded.', 'data'),
    (encode, {'data': ONE, 'header': [1]}, '`header` must be an object, not a list', 'header'),
    (encode, {'data': ONE, 'header': {'foo': 1}},
     'unknown `header` fields `foo`: it takes requestId and targetExecutor', 'header'),
    (encode, {'data': ONE, 'header': {'requestId': 'r' * (MAX_ID_CHARS + 1)}},
     '`header.requestId` must be a string of at most 1024 characters', 'header'),
    (encode, {'data': ONE, 'header': {'request_id': 7}},
     '`header.request_id` must be a string of at most 1024 characters', 'header'),
    (encode, {'data': ONE, 'header': {'targetExecutor': 'e' * (MAX_TARGET_CHARS + 1)}},
     'header.targetExecutor is over 128 characters: it selects executors by name; leave it out, or send "encoder"',
     'header'),
    (encode, {'data': ONE, 'header': {'targetExecutor': '('}},
     "header.targetExecutor '(' is not a valid regular expression (missing ), unterminated subpattern at position "
     '0): it selects executors by name; leave it out, or send "encoder"', 'header'),
    (encode, {'data': ONE, 'header': {'targetExecutor': 'other'}},
     "header.targetExecutor 'other' selects no executor (this flow has `encoder`): nothing would be encoded; leave "
     'it out', 'header'),
]  # fmt: skip


@pytest.mark.parametrize(('check', 'body', 'message', 'param'), REFUSALS)
def test_each_refusal_names_the_problem_the_fix_and_the_field(check, body, message, param):
    assert_refused(lambda: check(body), message, param)


def test_an_id_over_the_limit_is_shown_cut():
    with pytest.raises(RequestProblem) as refused:
        encode({'data': [{'text': 'x', 'id': 'i' * (MAX_ID_CHARS + 1)}]})
    message = str(refused.value)
    assert message.startswith("`data` #0: `id` must be a string of at most 1024 characters, not 'iii")
    assert len(message) < 200, 'the id is shown cut, not whole'


def test_at_each_limit_the_request_passes():
    assert openai({'input': ['a'] * MAX_INPUTS}).texts == ['a'] * MAX_INPUTS
    request = encode(
        {
            'data': [
                {'text': 'a', 'id': 'i' * MAX_ID_CHARS, 'url': 'u' * MAX_URL_CHARS},
                *[{'text': 'b'}] * (MAX_INPUTS - 1),
            ],
            'header': {'requestId': 'r' * MAX_ID_CHARS, 'targetExecutor': 'e' * (MAX_TARGET_CHARS - 8) + '|encoder'},
        }
    )
    assert len(request.docs) == MAX_INPUTS and request.request_id == 'r' * MAX_ID_CHARS


def test_one_doc_without_a_list_is_one_doc():
    assert encode({'data': {'text': 'alone'}}).docs == [{'text': 'alone'}]


def test_what_a_good_openai_request_keeps():
    request = openai({'input': 'one text', 'model': 'm', 'user': 'u', 'encoding_format': 'base64'})
    assert (request.texts, request.encoding_format) == (['one text'], 'base64')
    assert openai({'input': ['t'], 'encoding_format': None}).encoding_format == 'float'


def test_more_than_ten_unknown_fields_are_listed_up_to_ten():
    fields = {f'field{i:02d}': i for i in range(12)}
    with pytest.raises(RequestProblem) as refused:
        openai({'input': 'x', **fields})
    listed = ', '.join(f'`field{i:02d}`' for i in range(10))
    assert str(refused.value) == f'unknown fields {listed}: /v1/embeddings takes {OPENAI_FIELDS_NAMED}'


UTF16 = 'the body is not UTF-8 JSON: it looks like UTF-16 or UTF-32; send it as UTF-8'
BODY = '{"data": [{"text": "x"}]}'
NOT_UTF8 = (
    'the body is not valid UTF-8 (str is not valid UTF-8: surrogates not allowed: line 1 column 1 (char 0)): send '
    'JSON encoded as UTF-8'
)

PARSER_REFUSALS = [
    (encode, b'', 'the body is empty: send a JSON object', None),
    (encode, b' \n\t', 'the body is empty: send a JSON object', None),
    (encode, BODY.encode('utf-16'), UTF16, None),  # with its BOM, little-endian
    (encode, ('\ufeff' + BODY).encode('utf-16-be'), UTF16, None),
    (encode, BODY.encode('utf-16-le'), UTF16, None),  # no BOM: the zero bytes tell
    (encode, BODY.encode('utf-16-be'), UTF16, None),
    (encode, b'\xef\xbb\xbf' + BODY.encode(),
     'the body is not UTF-8 JSON as sent: it starts with a byte-order mark (BOM); send it without', None),
    (encode, b'{"data": [{"text": NaN}]}',
     'the body is not valid JSON (unexpected character, expected a JSON value: line 1 column 20 (char 19)): NaN and '
     'Infinity are not JSON numbers', None),
    (encode, b'{"data": [{"text": -Infinity}]}',
     'the body is not valid JSON (no digit after sign: line 1 column 21 (char 20)): NaN and Infinity are not JSON '
     'numbers', None),
    # "NaN" in a string of a body broken elsewhere: no NaN hint.
    (encode, b'{"data": [{"text": "NaN"}] x}',
     "the body is not valid JSON (unexpected character, expected ',' or '}': line 1 column 28 (char 27))", None),
    (encode, b'{"data": [{"text": "x"}]',
     'the body is not valid JSON (unexpected end of data: line 1 column 25 (char 24))', None),
    (encode, b'{"data": [{"text": "\xc3"}]}', NOT_UTF8, None),
    (encode, b'{"data": [{"text": "\xed\xa0\x80"}]}', NOT_UTF8, None),  # a surrogate encoded as UTF-8 bytes
    # Lone surrogate escapes: named by index (/v1) or id (/encode), other problems beside them.
    (openai, b'{"input": ["a", "\\ud800", "b", "\\udc00"]}',
     '`input` has text is not valid Unicode at index 1, 3: each text must be a non-empty string of valid Unicode',
     'input'),
    (openai, b'{"input": ["a", "", "\\ud800"]}',
     '`input` has empty text at index 1; text is not valid Unicode at index 2: each text must be a non-empty string '
     'of valid Unicode', 'input'),
    (encode, b'{"data": [{"text": "\\ud800"}]}',
     'text is not valid Unicode: ids #0. Each doc needs a non-empty string of valid Unicode in `text`; nothing in '
     'this request was encoded.', 'data'),
]  # fmt: skip


@pytest.mark.parametrize(('check', 'body', 'message', 'param'), PARSER_REFUSALS)
def test_each_body_the_parser_refuses_is_named_with_the_fix(check, body, message, param):
    assert_refused(lambda: parse_and_check(body, check), message, param)


def test_a_lone_surrogate_the_second_reading_cannot_place_is_refused_for_the_body():
    """Python's json reads the body again to name the text; when the check passes on that reading (the surrogate
    sits in a field no check reads), the parser's own refusal stands."""
    with pytest.raises(RequestProblem) as refused:
        parse_and_check(b'{"input": "fine", "user": "\\ud800"}', openai)
    assert str(refused.value) == (
        'the body holds a string that is not valid Unicode (no low surrogate in string: line 1 column 28 (char 27)): '
        'a lone surrogate escape'
    )


def test_a_long_field_name_is_shown_cut_to_40_characters():
    with pytest.raises(RequestProblem) as refused:
        openai({'input': 'x', 'f' * 50: 1})
    assert str(refused.value).startswith(f'unknown fields `{"f" * 40}`: ')
    assert refused.value.param == 'f' * 50
