"""The shared input rules (executor/encode_inputs.py) in their own words: parameters, bad texts, and the helpers
that put values into messages. The gateway and the executor both answer with these strings, so they are compared
whole. (The cut of long texts, against the real tokenizer, is in test_request_checks.py.)"""

from __future__ import annotations

import pytest
from encode_inputs import (
    KNOWN_PARAMETERS,
    MAX_IDS_IN_ERROR,
    EncodeOptions,
    InputProblem,
    check_parameters,
    describe_bad_text,
    json_kind,
    listed,
    shown,
)


@pytest.mark.parametrize(
    ('value', 'kind'),
    [
        ({}, 'an object'),
        ([], 'a list'),
        ('', 'a string'),
        (True, 'a boolean'),  # not 'a number', although bool is an int
        (None, 'null'),
        (3, 'a number'),
        (2.5, 'a number'),
        (b'x', 'bytes'),
    ],
)
def test_json_kind_names_each_json_type(value, kind):
    assert json_kind(value) == kind


def test_shown_quotes_scalars_names_containers_and_cuts_at_40():
    assert shown('abc') == "'abc'"
    assert shown(7) == '7'
    assert shown([1, 2]) == 'a list' and shown({'a': 1}) == 'an object'
    assert shown('x' * 38) == repr('x' * 38)  # 40 characters with its quotes: whole
    assert shown('x' * 39) == repr('x' * 39)[:40] + '...'  # 41: cut
    assert shown('y' * 100) == "'" + 'y' * 39 + '...'


def test_listed_names_up_to_the_limit_then_counts_the_rest():
    names = [f'id{i}' for i in range(MAX_IDS_IN_ERROR + 3)]
    assert listed(names[:MAX_IDS_IN_ERROR]) == ', '.join(names[:MAX_IDS_IN_ERROR])
    assert listed(names) == ', '.join(names[:MAX_IDS_IN_ERROR]) + ' and 3 more'
    assert listed(['a']) == 'a'


@pytest.mark.parametrize(
    ('text', 'problem'),
    [
        (None, 'no text'),
        (5, 'text is not a string (int)'),
        (['a'], 'text is not a string (list)'),
        ('', 'empty text'),
        (' \n\t', 'empty text'),
        ('a \ud800 b', 'text is not valid Unicode'),
        ('fine', None),
        ('\U0001f600', None),
    ],
)
def test_describe_bad_text(text, problem):
    assert describe_bad_text(text) == problem


def test_parameters_left_out_mean_the_encoders_defaults():
    assert check_parameters(None) == EncodeOptions()
    assert check_parameters({}) == EncodeOptions()


def test_parameters_within_their_bounds_are_taken():
    assert check_parameters({'batch_size': 1}) == EncodeOptions(batch_size=1)
    assert check_parameters({'batch_size': 512, 'normalize': True}) == EncodeOptions(batch_size=512, normalize=True)
    assert check_parameters({'batch_size': 8}, max_batch_size=8) == EncodeOptions(batch_size=8)
    options = check_parameters({'batch_size': 8.0, 'normalize': False})  # gRPC's Struct: every number a float
    assert options == EncodeOptions(batch_size=8, normalize=False) and type(options.batch_size) is int


@pytest.mark.parametrize(
    ('parameters', 'limit', 'message'),
    [
        ([1], None, '`parameters` must be an object, not a list: e.g. {"normalize": true}'),
        ('x', None, '`parameters` must be an object, not a string: e.g. {"normalize": true}'),
        ({'zeta': 1, 'alpha': 2, 'batch_size': 4}, None,
         'unknown `parameters` alpha, zeta: this encoder takes batch_size, normalize, prompt_name'),
        ({3: 1}, None, 'unknown `parameters` 3: this encoder takes batch_size, normalize, prompt_name'),
        ({'batch_size': 0}, None, '`parameters.batch_size` must be an integer from 1 to 512 (texts per forward pass, '
         'MAX_BATCH_SIZE), not 0'),
        ({'batch_size': 513}, None, '`parameters.batch_size` must be an integer from 1 to 512 (texts per forward '
         'pass, MAX_BATCH_SIZE), not 513'),
        ({'batch_size': 9}, 8, '`parameters.batch_size` must be an integer from 1 to 8 (texts per forward pass, '
         'MAX_BATCH_SIZE), not 9'),
        ({'batch_size': True}, None, '`parameters.batch_size` must be an integer from 1 to 512 (texts per forward '
         'pass, MAX_BATCH_SIZE), not True'),
        ({'batch_size': 2.5}, None, '`parameters.batch_size` must be an integer from 1 to 512 (texts per forward '
         'pass, MAX_BATCH_SIZE), not 2.5'),
        ({'batch_size': '8'}, None, "`parameters.batch_size` must be an integer from 1 to 512 (texts per forward "
         "pass, MAX_BATCH_SIZE), not '8'"),
        ({'batch_size': None}, None, '`parameters.batch_size` must be an integer from 1 to 512 (texts per forward '
         'pass, MAX_BATCH_SIZE), not None'),
        ({'normalize': 'false'}, None,
         "`parameters.normalize` must be true or false (a JSON boolean), not 'false'"),
        ({'normalize': 0}, None, '`parameters.normalize` must be true or false (a JSON boolean), not 0'),
        # null is not "unset" (leaving the key out is): refused like any other non-boolean.
        ({'normalize': None}, None, '`parameters.normalize` must be true or false (a JSON boolean), not None'),
    ],
)  # fmt: skip
def test_bad_parameters_are_refused_in_words(parameters, limit, message):
    with pytest.raises(InputProblem) as refused:
        check_parameters(parameters, max_batch_size=limit)
    assert str(refused.value) == message


def test_many_or_long_unknown_parameters_are_named_cut_and_counted():
    with pytest.raises(InputProblem) as refused:
        check_parameters({f'p{i:04d}' + 'x' * 100: i for i in range(2000)})
    named = ', '.join(f'p{i:04d}' + 'x' * 35 for i in range(MAX_IDS_IN_ERROR))
    assert str(refused.value) == (
        f'unknown `parameters` {named} and {2000 - MAX_IDS_IN_ERROR} more: this encoder takes batch_size, normalize, '
        'prompt_name'
    )


def test_keys_jina_adds_are_ignored_only_when_named():
    assert check_parameters({'__results__': {}, 'normalize': True}, ignore=frozenset({'__results__'})).normalize
    with pytest.raises(InputProblem, match='unknown `parameters` __results__'):
        check_parameters({'__results__': {}})


def test_options_go_back_to_jina_parameters_without_the_unset_ones():
    assert EncodeOptions().as_parameters() == {}
    assert EncodeOptions(batch_size=4).as_parameters() == {'batch_size': 4}
    assert EncodeOptions(normalize=False).as_parameters() == {'normalize': False}
    assert EncodeOptions(batch_size=4, normalize=True).as_parameters() == {'batch_size': 4, 'normalize': True}
    assert EncodeOptions(prompt_name='query').as_parameters() == {'prompt_name': 'query'}
    assert KNOWN_PARAMETERS == ('batch_size', 'normalize', 'prompt_name')


@pytest.mark.parametrize('name', [7, 'x' * 129, ['query']])
def test_a_prompt_name_must_be_a_short_string(name):
    with pytest.raises(InputProblem, match=r"`parameters.prompt_name` must be the name of one of the model's prompts"):
        check_parameters({'prompt_name': name})
