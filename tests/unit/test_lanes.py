"""EncodingLanes: several batches at once on OpenVINO's streams, a lone batch split across them (lanes.py).

The scheduling is tested with a stand-in model whose vectors name their texts and which records how many calls run
at once; thread safety with the real OpenVINO model (THROUGHPUT streams, one inference request per thread)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from helpers import assert_same_embeddings
from lanes import MIN_TEXTS_PER_PART, EncodingLanes, lanes_for


class RecordingModel:
    """encode(texts) -> one row per text holding the text's number; records the calls and how many overlapped."""

    def __init__(self, seconds_per_call: float = 0.0) -> None:
        self.seconds_per_call = seconds_per_call
        self.calls: list[list[str]] = []
        self.running = self.most_at_once = 0
        self._lock = threading.Lock()

    def encode(self, texts: list[str], **options) -> torch.Tensor:
        with self._lock:
            self.calls.append(list(texts))
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(self.seconds_per_call)
        with self._lock:
            self.running -= 1
        return torch.tensor([[float(text.removeprefix('t'))] for text in texts])


def texts(count: int, start: int = 0) -> list[str]:
    return [f't{number}' for number in range(start, start + count)]


def numbers(rows: torch.Tensor) -> list[int]:
    return [int(value) for value in rows[:, 0]]


def test_a_lone_batch_is_split_across_the_streams_and_comes_back_in_order():
    model = RecordingModel()
    lanes = EncodingLanes(model, streams=2)
    assert numbers(lanes.encode(texts(9))) == list(range(9))
    assert sorted(len(call) for call in model.calls) == [4, 5]


def test_a_batch_too_small_to_split_is_encoded_whole():
    model = RecordingModel()
    lanes = EncodingLanes(model, streams=2)
    small = texts(2 * MIN_TEXTS_PER_PART - 1)
    assert numbers(lanes.encode(small)) == list(range(len(small)))
    assert model.calls == [small]


def test_batches_arriving_together_are_encoded_side_by_side_and_bounded():
    model = RecordingModel(seconds_per_call=0.05)
    lanes = EncodingLanes(model, streams=2)
    assert lanes.batches_at_once == 3
    batches = [texts(16, start=100 * i) for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as callers:
        replies = list(callers.map(lanes.encode, batches))
    for batch, reply in zip(batches, replies, strict=True):
        assert numbers(reply) == [int(text[1:]) for text in batch]
    # Side by side, and bounded: streams + 1 batches, one of which may be a lone batch split into `streams` parts.
    assert 2 <= model.most_at_once <= lanes.batches_at_once + lanes.streams - 1


def test_one_stream_encodes_one_batch_at_a_time_unsplit():
    model = RecordingModel(seconds_per_call=0.02)
    lanes = EncodingLanes(model, streams=1)
    with ThreadPoolExecutor(max_workers=4) as callers:
        list(callers.map(lanes.encode, [texts(16)] * 4))
    assert model.most_at_once == 1 and all(len(call) == 16 for call in model.calls)


def test_a_failing_part_fails_the_batch_and_frees_its_slot():
    class FailingOnce(RecordingModel):
        def encode(self, texts, **options):
            if 't3' in texts and not getattr(self, 'failed', False):
                self.failed = True
                raise RuntimeError('boom')
            return super().encode(texts, **options)

    lanes = EncodingLanes(FailingOnce(), streams=2)
    with pytest.raises(RuntimeError, match='boom'):
        lanes.encode(texts(8))
    assert numbers(lanes.encode(texts(8))) == list(range(8))  # the slot came back


def test_openvino_streams_encode_concurrently_to_the_same_embeddings(reference_model):
    """Real model, THROUGHPUT hint: batches from several threads at once (each on its own inference request) and a
    lone batch split across the streams give the in-process model's embeddings, row for row."""
    from lanes import lanes_for

    from executor import load_model

    model = load_model('sentence-transformers/all-MiniLM-L6-v2', 'cpu', torch.float32, 'openvino', 'THROUGHPUT')
    lanes = lanes_for(model, 'openvino')
    words = 'a vector search engine embeds documents and queries into one dense space'.split()
    batches = [[' '.join(words[: 3 + (i + j) % 10]) + f' {i}.{j}' for j in range(12)] for i in range(12)]
    with ThreadPoolExecutor(max_workers=6) as callers:
        replies = list(callers.map(lambda batch: lanes.encode(batch, convert_to_tensor=True), batches))
    for batch, reply in zip(batches, replies, strict=True):
        expected = reference_model.encode(batch)
        assert_same_embeddings(reply.numpy(), expected)
    alone = lanes.encode(batches[0], convert_to_tensor=True)
    np.testing.assert_allclose(alone.numpy(), replies[0].numpy(), atol=1e-5)


def test_the_hint_comes_from_the_environment_and_a_bad_one_is_refused(monkeypatch):
    from executor import SentenceEncoder, StartupError

    monkeypatch.setenv('OPENVINO_PERFORMANCE_HINT', 'fastest')
    with pytest.raises(StartupError, match="OPENVINO_PERFORMANCE_HINT='FASTEST' is not one of THROUGHPUT, LATENCY"):
        SentenceEncoder(device='cpu')
    monkeypatch.setenv('OPENVINO_PERFORMANCE_HINT', 'latency')
    assert SentenceEncoder(device='cpu').lanes.batches_at_once == 1  # one batch at a time, every core on it
    monkeypatch.setenv('OPENVINO_PERFORMANCE_HINT', 'THROUGHPUT')
    streams = SentenceEncoder(device='cpu').lanes
    assert streams.batches_at_once == streams.streams + 1 if streams.streams > 1 else streams.batches_at_once == 1


class OptionsModel(RecordingModel):
    """Records the options of each call too."""

    def __init__(self) -> None:
        super().__init__()
        self.options: list[dict] = []

    def encode(self, texts: list[str], **options) -> torch.Tensor:
        self.options.append(options)
        return super().encode(texts)


def test_options_reach_every_part_of_a_split_batch_and_a_whole_one():
    model = OptionsModel()
    lanes = EncodingLanes(model, streams=2)
    lanes.encode(texts(4 * MIN_TEXTS_PER_PART), normalize_embeddings=True, batch_size=8)
    lanes.encode(texts(1), normalize_embeddings=True, batch_size=8)
    assert len(model.options) == 3
    assert model.options == [{'normalize_embeddings': True, 'batch_size': 8}] * 3


def test_a_batch_of_exactly_streams_times_the_minimum_is_split():
    model = RecordingModel()
    lanes = EncodingLanes(model, streams=2)
    lanes.encode(texts(2 * MIN_TEXTS_PER_PART))
    assert sorted(len(call) for call in model.calls) == [MIN_TEXTS_PER_PART, MIN_TEXTS_PER_PART]


def test_after_a_batch_the_next_lone_batch_is_split_again():
    """The count of batches being encoded goes back to zero: a later lone batch is alone again, and split."""
    model = RecordingModel()
    lanes = EncodingLanes(model, streams=2)
    for _ in range(3):
        model.calls.clear()
        lanes.encode(texts(2 * MIN_TEXTS_PER_PART))
        assert len(model.calls) == 2


def test_one_lane_by_default_and_for_torch():
    assert EncodingLanes(RecordingModel()).streams == 1
    assert lanes_for(RecordingModel(), 'torch').streams == 1


class StandInCompiledModel:
    """What InferRequestPerThread needs of OpenVINO's compiled model: create_infer_request() and properties. Each
    request records the thread that created it and answers infer() with what it was given."""

    def __init__(self, streams: int = 2) -> None:
        self.streams = streams
        self.created: list[int] = []  # the thread of each request created
        self.compiled = False

    def create_infer_request(self):
        self.created.append(threading.get_ident())
        number = len(self.created)

        class Request:
            def infer(self, inputs, *args, **kwargs):
                return number, threading.get_ident(), inputs, args, kwargs

        return Request()

    def get_property(self, name: str):
        return {'OPTIMAL_NUMBER_OF_INFER_REQUESTS': str(self.streams)}[name]


def test_each_thread_infers_on_a_request_of_its_own_and_keeps_it():
    from lanes import InferRequestPerThread

    compiled = StandInCompiledModel()
    per_thread = InferRequestPerThread(compiled)
    here = threading.get_ident()
    assert per_thread({'ids': 1}, 'shared', flag=True) == (1, here, {'ids': 1}, ('shared',), {'flag': True})
    assert per_thread({'ids': 2})[0] == 1  # the same thread: the same request, not a new one
    with ThreadPoolExecutor(max_workers=1) as other:
        number, thread, *_ = other.submit(per_thread, {'ids': 3}).result()
    assert number == 2 and thread != here
    assert len(compiled.created) == 2
    assert per_thread.get_property('OPTIMAL_NUMBER_OF_INFER_REQUESTS') == '2'  # everything else is the model's


def test_an_openvino_model_gets_per_thread_requests_and_its_streams_as_lanes():
    """The wiring into optimum-intel's OVModel (model[0].auto_model): compiled first, its `request` replaced, and
    the streams read from the compiled model. The real model's version is the concurrency test above."""
    from types import SimpleNamespace

    from lanes import InferRequestPerThread

    compiled = StandInCompiledModel(streams=3)
    openvino_model = SimpleNamespace(request=None)
    openvino_model.compile = lambda: setattr(openvino_model, 'request', compiled)
    model = [SimpleNamespace(auto_model=openvino_model)]
    lanes = lanes_for(model, 'openvino')
    assert isinstance(openvino_model.request, InferRequestPerThread)
    assert (lanes.streams, lanes.batches_at_once, lanes.model) == (3, 4, model)


def test_the_parts_of_a_split_batch_run_on_the_callers_thread_and_a_named_lane_thread():
    """Thread names show in stack dumps (py-spy, faulthandler): a lane's thread says what it is."""
    seen: list[str] = []

    class NamingModel(RecordingModel):
        def encode(self, texts, **options):
            seen.append(threading.current_thread().name)
            return super().encode(texts, **options)

    EncodingLanes(NamingModel(), streams=2).encode(texts(2 * MIN_TEXTS_PER_PART))
    caller = threading.current_thread().name
    assert len(seen) == 2 and seen.count(caller) == 1
    assert [name for name in seen if name != caller][0].startswith('lane_')
