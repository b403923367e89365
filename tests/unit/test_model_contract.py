"""What the gateway reads about the served model (gateway/model_info.py) and what it makes of it: `dimensions`,
`prompt_name`, TEI's request shapes (gateway/request_checks.py), texts over the limit and TEI's /tokenize
(gateway/token_counting.py), against the real model's files and tokenizer."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from conftest import MODEL_NAME
from helpers import REPO

sys.path.insert(0, str(REPO / 'gateway'))
from model_info import ModelInfo, read_model_info  # noqa: E402
from request_checks import RequestProblem, check_openai_request, check_tei_request  # noqa: E402
from token_counting import TokenCounter  # noqa: E402


@pytest.fixture(scope='module')
def minilm() -> ModelInfo:
    return read_model_info(MODEL_NAME, fallback_max_tokens=1)


@pytest.fixture
def prompted_model_dir(tmp_path, reference_model):
    """The same model's files in a directory of their own, with prompts and a default prompt."""
    from huggingface_hub import snapshot_download

    folder = tmp_path / 'model'
    shutil.copytree(snapshot_download(MODEL_NAME), folder)
    settings = {'prompts': {'query': 'query: ', 'passage': 'passage: '}, 'default_prompt_name': 'passage'}
    (folder / 'config_sentence_transformers.json').write_text(json.dumps(settings))
    return folder


def test_the_model_is_read_from_its_own_files(minilm):
    assert minilm.name == MODEL_NAME
    assert minilm.max_tokens == 256, 'sentence_bert_config.json, not the fallback'
    assert minilm.dimension == 384 and minilm.normalized is True and minilm.pooling == 'mean'
    assert minilm.prompts == {'query': '', 'document': ''}, "sentence-transformers' own prompt names, empty"
    assert minilm.prompt(None) == '' and minilm.prompt('query') == ''
    assert minilm.revision == 'c9745ed1d9f207416be6d2e6f8de32d1f16199bf'


def test_prompts_and_the_default_come_from_the_model_or_the_deployment(prompted_model_dir):
    model = read_model_info(str(prompted_model_dir), 1)
    assert model.prompts == {'query': 'query: ', 'passage': 'passage: ', 'document': ''}
    assert model.prompt(None) == 'passage: ' and model.prompt('query') == 'query: '
    assert read_model_info(str(prompted_model_dir), 1, default_prompt_name='query').prompt(None) == 'query: '
    with pytest.raises(
        SystemExit,
        match=r'ENCODER_DEFAULT_PROMPT_NAME=doc is not a prompt of .* \(its prompts: document, passage, query\)',
    ):
        read_model_info(str(prompted_model_dir), 1, default_prompt_name='doc')


def test_the_dimension_follows_the_modules(prompted_model_dir):
    """A Dense layer after pooling sets the output dimension; one after Normalize makes it no longer unit length."""
    modules = json.loads((prompted_model_dir / 'modules.json').read_text())
    (prompted_model_dir / '3_Dense').mkdir()
    (prompted_model_dir / '3_Dense' / 'config.json').write_text(json.dumps({'in_features': 384, 'out_features': 64}))
    modules.append({'idx': 3, 'name': '3', 'path': '3_Dense', 'type': 'sentence_transformers.models.Dense'})
    (prompted_model_dir / 'modules.json').write_text(json.dumps(modules))
    model = read_model_info(str(prompted_model_dir), 1)
    assert (model.dimension, model.normalized) == (64, False)


@pytest.mark.parametrize('listed', ['384', '0', 'x', '128,500'])
def test_matryoshka_dimensions_must_be_shorter_than_the_model(listed):
    with pytest.raises(
        SystemExit,
        match="MATRYOSHKA_DIMENSIONS: '.*' is not a whole number between 0 and the model's dimension \\(384\\)",
    ):
        read_model_info(MODEL_NAME, 1, matryoshka_dimensions=listed)


def test_dimensions_equal_to_the_models_are_its_own_and_others_are_refused_saying_why(minilm):
    assert check_openai_request({'input': 'x', 'dimensions': 384}, 4, minilm).dimensions is None
    with pytest.raises(RequestProblem) as refused:
        check_openai_request({'input': 'x', 'dimensions': 128}, 4, minilm)
    assert refused.value.message == (
        f'`dimensions` 128: {MODEL_NAME} gives 384-dimensional embeddings and was not trained to give shorter ones '
        '(Matryoshka), so a cut vector would lose quality: leave `dimensions` out or send 384'
    )
    assert refused.value.param == 'dimensions'
    for bad in (0, -1, 1.5, True, '384'):
        with pytest.raises(RequestProblem, match='`dimensions` must be a positive integer'):
            check_openai_request({'input': 'x', 'dimensions': bad}, 4, minilm)
    served = read_model_info(MODEL_NAME, 1, matryoshka_dimensions='256, 128')
    assert check_openai_request({'input': 'x', 'dimensions': 128}, 4, served).dimensions == 128
    with pytest.raises(RequestProblem, match=r'this deployment also serves 256, 128 \(MATRYOSHKA_DIMENSIONS\)'):
        check_openai_request({'input': 'x', 'dimensions': 64}, 4, served)


def test_an_unknown_prompt_name_lists_the_models_prompts(prompted_model_dir, minilm):
    model = read_model_info(str(prompted_model_dir), 1)
    assert check_openai_request({'input': 'x', 'prompt_name': 'query'}, 4, model).prompt == 'query: '
    assert check_openai_request({'input': 'x'}, 4, model).prompt == 'passage: '
    with pytest.raises(RequestProblem) as refused:
        check_tei_request({'inputs': 'x', 'prompt_name': 'doc'}, '/embed', 4, model)
    assert refused.value.message == (
        f"`prompt_name` 'doc' is not a prompt of {prompted_model_dir} (its prompts: `document`, `passage`, `query`): "
        'send one of those, or leave it out'
    )
    with pytest.raises(RequestProblem, match=r'\(its prompts: `document`, `query`\)'):
        check_openai_request({'input': 'x', 'prompt_name': 'passage'}, 4, minilm)


def test_tei_requests_take_teis_fields_and_defaults(minilm):
    request = check_tei_request({'inputs': 'one'}, '/embed', 4, minilm)
    assert (request.texts, request.normalize, request.truncate, request.dimensions) == (['one'], True, None, None)
    request = check_tei_request(
        {'inputs': ['a', 'b'], 'normalize': False, 'truncate': True, 'truncation_direction': 'Right'},
        '/embed',
        4,
        minilm,
    )
    assert (request.texts, request.normalize, request.truncate) == (['a', 'b'], False, True)
    assert (
        check_tei_request({'inputs': 'x', 'add_special_tokens': False}, '/tokenize', 4, minilm).add_special_tokens
        is False
    )


@pytest.mark.parametrize(
    ('route', 'body', 'message'),
    [('/embed', {'input': 'x'}, 'unknown fields `input`: /embed takes `inputs`, `normalize`, `truncate`, '
      '`truncation_direction`, `prompt_name`, `dimensions`'),
     ('/embed', {}, '`inputs` is required: a text, or a list of texts'),
     ('/embed', {'inputs': [[101, 2023]]}, '`inputs` holds token ids (numbers)'),
     ('/embed', {'inputs': 'x', 'normalize': 'yes'}, "`normalize` must be true or false, not 'yes'"),
     ('/embed', {'inputs': 'x', 'truncation_direction': 'Left'}, "`truncation_direction` 'Left': this server keeps"),
     ('/embed', {'inputs': ['a'] * 5}, '`inputs` has 5 texts, over the limit of 4 per request'),
     ('/tokenize', {'inputs': 'x', 'normalize': True}, 'unknown fields `normalize`: /tokenize takes'),
     ('/tokenize', {'inputs': ['x' * 16_384, 'y' * 16_385]}, '`inputs` hold 32769 characters, over the 32768')],
)  # fmt: skip
def test_tei_refusals_name_the_field_and_the_fix(minilm, route, body, message):
    with pytest.raises(RequestProblem) as refused:
        check_tei_request(body, route, 4, minilm)
    assert refused.value.message.startswith(message)


@pytest.fixture(scope='module')
def counter(minilm) -> TokenCounter:
    return TokenCounter(MODEL_NAME, minilm.max_tokens)


def test_texts_over_the_limit_are_found_with_their_token_count(counter, reference_model):
    at_limit = ' '.join(['word'] * 254)  # 254 + [CLS] + [SEP] = 256
    over = at_limit + ' word'
    huge = 'word ' * 30_000
    assert len(reference_model.tokenizer(at_limit)['input_ids']) == 256
    assert counter.over_limit(['short', at_limit, over, huge]) == [(2, 257), (3, None)]


def test_tokenize_gives_the_models_tokens_with_their_spans(counter, reference_model):
    tokens = counter.tokens('Hello world', add_special_tokens=True)
    assert [t['id'] for t in tokens] == reference_model.tokenizer('Hello world')['input_ids']
    assert tokens[0] == {'id': 101, 'text': '[CLS]', 'special': True, 'start': None, 'stop': None}
    assert tokens[1] == {'id': 7592, 'text': 'hello', 'special': False, 'start': 0, 'stop': 5}
    assert [t['text'] for t in counter.tokens('Hello world', add_special_tokens=False)] == ['hello', 'world']


def test_a_model_pooling_without_its_prompt_gets_no_non_empty_prompt(prompted_model_dir):
    """INSTRUCTOR-style models leave the prompt's tokens out of pooling (include_prompt: false); a prompt put before
    the text would change their embeddings, so such prompts are refused, and such a default stops the start."""
    pooling = prompted_model_dir / '1_Pooling' / 'config.json'
    pooling.write_text(json.dumps({**json.loads(pooling.read_text()), 'include_prompt': False}))
    with pytest.raises(SystemExit, match=r'the default prompt passage cannot be served: .* \(include_prompt: false\)'):
        read_model_info(str(prompted_model_dir), 1)
    settings = prompted_model_dir / 'config_sentence_transformers.json'
    settings.write_text(json.dumps({'prompts': {'query': 'query: '}}))
    model = read_model_info(str(prompted_model_dir), 1)
    assert model.prompt_pooled is False
    with pytest.raises(RequestProblem, match=r"`prompt_name` 'query': .* pools without the prompt's tokens"):
        check_openai_request({'input': 'x', 'prompt_name': 'query'}, 4, model)
    assert check_openai_request({'input': 'x', 'prompt_name': 'document'}, 4, model).prompt == ''


def test_sentence_transformers_6_pooling_configs_and_unknown_modules(prompted_model_dir):
    pooling = prompted_model_dir / '1_Pooling' / 'config.json'
    pooling.write_text(json.dumps({'embedding_dimension': 384, 'pooling_mode': 'cls', 'include_prompt': True}))
    model = read_model_info(str(prompted_model_dir), 1)
    assert (model.dimension, model.pooling) == (384, 'cls')
    modules = json.loads((prompted_model_dir / 'modules.json').read_text())
    modules.insert(1, {'idx': 9, 'name': '9', 'path': '', 'type': 'sentence_transformers.models.Router'})
    (prompted_model_dir / 'modules.json').write_text(json.dumps(modules))
    unknown = read_model_info(str(prompted_model_dir), 1)
    assert unknown.dimension is None
    with pytest.raises(RequestProblem) as refused:
        check_openai_request({'input': 'x', 'dimensions': 384}, 4, unknown)
    assert refused.value.message == (
        f'`dimensions` 384: the files of {prompted_model_dir} do not state its dimension, so this server cannot check '
        'it: leave `dimensions` out'
    )
