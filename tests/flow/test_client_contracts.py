"""The edges of the contracts clients rely on, in a real local Flow (the project's gateway and encoder): TEI's routes
(/embed, /tokenize, /info) beside OpenAI's, `dimensions`, prompts, and the truncation policy. Every embedding is
compared with the in-process model's, element by element (helpers.assert_same_embeddings)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import requests
from conftest import MODEL_NAME
from helpers import assert_same_embeddings, free_port, gateway_flow

from executor import SentenceEncoder

LONG_TEXT = ' '.join(['word'] * 300)  # 302 tokens with [CLS] and [SEP]: over the model's 256


def encoder_flow(http_port: int, model: str = MODEL_NAME):
    uses_with = {'device': 'cpu', 'max_docs_per_request': 100, 'model': model}
    return gateway_flow(http_port, uses=SentenceEncoder, uses_with=uses_with)


@pytest.fixture(scope='module')
def api():
    port = free_port()
    with encoder_flow(port):
        yield f'http://127.0.0.1:{port}'


@pytest.fixture(scope='module')
def prompted_model(tmp_path_factory) -> str:
    """The same model's files (the OpenVINO IR included) in a directory, with prompts: no second model is
    downloadable here."""
    from huggingface_hub import snapshot_download

    folder = tmp_path_factory.mktemp('prompted') / 'model'
    shutil.copytree(snapshot_download(MODEL_NAME), folder)
    settings = {'prompts': {'query': 'query: ', 'passage': 'passage: '}}
    (folder / 'config_sentence_transformers.json').write_text(json.dumps(settings))
    return str(folder)


@pytest.fixture(scope='module')
def prompted_api(prompted_model):
    """A deployment of that model with a default prompt, shorter dimensions served, and no automatic truncation."""
    port = free_port()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('ENCODER_MODEL', prompted_model)
        patch.setenv('ENCODER_DEFAULT_PROMPT_NAME', 'passage')
        patch.setenv('MATRYOSHKA_DIMENSIONS', '128')
        patch.setenv('AUTO_TRUNCATE', 'false')
        with encoder_flow(port, prompted_model):
            yield f'http://127.0.0.1:{port}'


def post(url: str, body: dict) -> requests.Response:
    return requests.post(url, json=body, timeout=60)


# ---- TEI's routes


def test_tei_embed_for_a_text_and_a_list(api, reference_model):
    one = post(f'{api}/embed', {'inputs': 'hello world'})
    assert one.status_code == 200, one.text
    assert len(one.json()) == 1 and len(one.json()[0]) == 384
    assert_same_embeddings(one.json(), reference_model.encode(['hello world']))
    texts = ['first text', 'the second, longer text', 'third']
    many = post(f'{api}/embed', {'inputs': texts, 'normalize': True, 'truncate': False})
    assert_same_embeddings(many.json(), reference_model.encode(texts))


def test_tei_tokenize_gives_the_models_tokens(api, reference_model):
    answer = post(f'{api}/tokenize', {'inputs': ['Hello world', 'a']}).json()
    assert [[token['id'] for token in tokens] for tokens in answer] == [
        reference_model.tokenizer(text)['input_ids'] for text in ('Hello world', 'a')
    ]
    assert answer[0][1] == {'id': 7592, 'text': 'hello', 'special': False, 'start': 0, 'stop': 5}


def test_tei_info_tells_the_model_and_limits_from_its_files(api):
    info = requests.get(f'{api}/info', timeout=10).json()
    assert info['model_id'] == MODEL_NAME and info['max_input_length'] == 256 and info['dimension'] == 384
    assert info['model_type'] == {'embedding': {'pooling': 'mean'}} and info['auto_truncate'] is True
    assert info['max_client_batch_size'] == 2048 and info['prompts'] == {'query': '', 'document': ''}


@pytest.mark.parametrize(
    ('body', 'status', 'fragment'),
    [(b'{"inputs": ', 422, 'the body is not valid JSON'),
     (b'{"inputs": [1, 2]}', 422, '`inputs` holds token ids'),
     (b'{"inputs": "x", "dimensions": 64}', 422, '`dimensions` 64: sentence-transformers/all-MiniLM-L6-v2 gives 384'),
     (b'{"inputs": "x", "prompt_name": "passage"}', 422, '`prompt_name` \'passage\' is not a prompt of')],
)  # fmt: skip
def test_tei_refusals_come_in_teis_error_shape(api, body, status, fragment):
    answer = requests.post(f'{api}/embed', data=body, headers={'Content-Type': 'application/json'}, timeout=30)
    assert answer.status_code == status
    assert answer.json()['error_type'] == 'Validation' and fragment in answer.json()['error']


def test_tei_routes_refuse_in_teis_shape_before_the_body_too(api):
    too_large = requests.post(f'{api}/embed', data=b'x' * (9 * 1024 * 1024),
                              headers={'Content-Type': 'application/json'}, timeout=30)  # fmt: skip
    assert too_large.status_code == 413 and too_large.json()['error_type'] == 'Validation'
    not_json = requests.post(f'{api}/tokenize', data='{"inputs": "x"}', headers={'Content-Type': 'text/plain'},
                             timeout=30)  # fmt: skip
    assert not_json.status_code == 415 and 'application/json' in not_json.json()['error']


# ---- OpenAI's edges


def test_openai_dimensions_equal_to_the_models_is_served_and_others_refused(api, reference_model):
    same = post(f'{api}/v1/embeddings', {'input': ['a text'], 'dimensions': 384})
    assert_same_embeddings([same.json()['data'][0]['embedding']], reference_model.encode(['a text']))
    refused = post(f'{api}/v1/embeddings', {'input': ['a text'], 'dimensions': 256})
    assert refused.status_code == 400
    error = refused.json()['error']
    assert error['param'] == 'dimensions' and error['type'] == 'invalid_request_error'
    assert 'gives 384-dimensional embeddings and was not trained to give shorter ones' in error['message']


def test_openai_token_ids_are_refused_naming_the_client_setting(api):
    refused = post(f'{api}/v1/embeddings', {'input': [[2028, 374]]})
    assert refused.status_code == 400 and 'check_embedding_ctx_length=False' in refused.json()['error']['message']


# ---- a model with prompts, Matryoshka dimensions and AUTO_TRUNCATE=false


def test_the_default_prompt_and_a_named_one_are_put_before_the_text(prompted_api, reference_model):
    text = 'what is a sentence embedding'
    default = post(f'{prompted_api}/v1/embeddings', {'input': [text]}).json()
    assert_same_embeddings([default['data'][0]['embedding']], reference_model.encode([f'passage: {text}']))
    query = post(f'{prompted_api}/v1/embeddings', {'input': [text], 'prompt_name': 'query'}).json()
    assert_same_embeddings([query['data'][0]['embedding']], reference_model.encode([f'query: {text}']))
    # usage counts the prompt's tokens as the model sees them
    assert query['usage']['prompt_tokens'] == len(reference_model.tokenizer(f'query: {text}')['input_ids'])
    tei = post(f'{prompted_api}/embed', {'inputs': text, 'prompt_name': 'query'}).json()
    assert_same_embeddings(tei, reference_model.encode([f'query: {text}']))
    tokens = post(f'{prompted_api}/tokenize', {'inputs': text, 'prompt_name': 'query'}).json()
    assert [t['id'] for t in tokens[0]] == reference_model.tokenizer(f'query: {text}')['input_ids']


def test_an_unknown_prompt_is_refused_listing_the_models_prompts(prompted_api):
    refused = post(f'{prompted_api}/v1/embeddings', {'input': ['x'], 'prompt_name': 'doc'})
    assert (
        refused.status_code == 400
        and '(its prompts: `document`, `passage`, `query`)' in refused.json()['error']['message']
    )
    info = requests.get(f'{prompted_api}/info', timeout=10).json()
    assert (
        info['prompts'] == {'query': 'query: ', 'passage': 'passage: ', 'document': ''}
        and info['default_prompt_name'] == 'passage'
    )


def test_matryoshka_dimensions_are_the_first_values_normalised_again(prompted_api, reference_model):
    answer = post(f'{prompted_api}/v1/embeddings', {'input': ['a text'], 'dimensions': 128}).json()
    full = reference_model.encode(['passage: a text'])[:, :128]
    assert_same_embeddings([answer['data'][0]['embedding']], full / np.linalg.norm(full, axis=1, keepdims=True))
    assert len(post(f'{prompted_api}/embed', {'inputs': 'a text', 'dimensions': 128}).json()[0]) == 128


def test_without_auto_truncate_a_long_text_is_refused_by_index_and_count(prompted_api, reference_model):
    refused = post(f'{prompted_api}/v1/embeddings', {'input': ['short', LONG_TEXT]})
    assert refused.status_code == 400
    tokens = len(reference_model.tokenizer(f'passage: {LONG_TEXT}')['input_ids'])
    message = refused.json()['error']['message']
    assert f'texts [1] ({tokens} tokens) are longer than the 256 tokens the model reads' in message
    assert 'AUTO_TRUNCATE=false' in message
    tei = post(f'{prompted_api}/embed', {'inputs': ['short', LONG_TEXT]})
    assert tei.status_code == 413 and tei.json()['error_type'] == 'Validation'
    cut = post(f'{prompted_api}/embed', {'inputs': [LONG_TEXT], 'truncate': True})
    assert cut.status_code == 200
    assert_same_embeddings(cut.json(), reference_model.encode([f'passage: {LONG_TEXT}']))


def test_jinas_encode_route_takes_prompt_name_in_parameters(prompted_api, reference_model):
    text = 'what is a sentence embedding'
    body = {'data': [{'id': 'q', 'text': text}], 'parameters': {'prompt_name': 'query'}}
    answer = post(f'{prompted_api}/encode', body)
    assert answer.status_code == 200, answer.text
    assert answer.json()['data'][0]['text'] == text, 'the doc comes back as sent, without the prompt'
    assert answer.json()['parameters'] == {'prompt_name': 'query'}
    assert_same_embeddings([answer.json()['data'][0]['embedding']], reference_model.encode([f'query: {text}']))
    refused = post(f'{prompted_api}/encode', {'data': [{'text': text}], 'parameters': {'prompt_name': 'doc'}})
    assert refused.status_code == 422 and "`prompt_name` 'doc' is not a prompt of" in refused.json()['detail']
