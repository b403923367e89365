"""Encoding several batches at once on OpenVINO's streams (jina-free, like devices.py).

OpenVINO's THROUGHPUT hint splits the cores into streams (2 streams of one core each on the 2-core CI machines) that
infer side by side, without the threads of one inference waiting on each other at every layer, which is what a
LATENCY inference does: measured in the stack (docs/benchmarks.md), the tutorial's gRPC workload ran ~25% faster.
Two things make that work here:
- each thread that encodes needs an inference request of its own (InferRequestPerThread), and Jina must call the
  encoder from several threads at once (flow.yml's `allow_concurrent`), at most `streams + 1` batches at a time: the
  extra one is tokenized and pooled (Python) while the streams infer the others;
- a batch that arrives while nothing else is being encoded would leave all streams but one idle: it is split into one
  part per stream (EncodingLanes.encode), so that a lone request still uses every core.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import torch

# A lone batch is split across the streams only when each part gets at least this many texts: below that an extra
# pass (tokenizing, pooling, its share of the request's Python) costs about what the second core saves.
MIN_TEXTS_PER_PART = 4


class InferRequestPerThread:
    """Stands in for the compiled model that optimum-intel calls to infer (`OVModel.request`), giving each calling
    thread an inference request of its own: the compiled model's own call reuses one request, which two threads must
    not use at once. Everything else is the compiled model's."""

    def __init__(self, compiled_model: Any) -> None:
        self._compiled_model = compiled_model
        self._own = threading.local()

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        request = getattr(self._own, 'request', None)
        if request is None:
            request = self._own.request = self._compiled_model.create_infer_request()
        return request.infer(inputs, *args, **kwargs)  # outputs copied out, as the compiled model's call does

    def __getattr__(self, name: str) -> Any:
        return getattr(self._compiled_model, name)


def give_each_thread_its_own_infer_request(model: Any) -> int:
    """Make an OpenVINO SentenceTransformer safe to call from several threads; return its number of streams."""
    openvino_model = model[0].auto_model
    openvino_model.compile()
    openvino_model.request = InferRequestPerThread(openvino_model.request)
    return int(openvino_model.request.get_property('OPTIMAL_NUMBER_OF_INFER_REQUESTS'))


def lanes_for(model: Any, backend: str) -> EncodingLanes:
    """The lanes to encode with `model`: OpenVINO's streams (each thread its own inference request), else one."""
    return EncodingLanes(model, give_each_thread_its_own_infer_request(model) if backend == 'openvino' else 1)


class EncodingLanes:
    """Encodes batches with `model.encode`, up to `streams + 1` at once (callers beyond that wait their turn), and
    splits a batch across the streams when it is the only one being encoded. With one stream (torch, or OpenVINO's
    LATENCY hint) batches are encoded one at a time, as they were before."""

    def __init__(self, model: Any, streams: int = 1) -> None:
        self.model = model
        self.streams = max(1, streams)
        self.batches_at_once = self.streams + 1 if self.streams > 1 else 1
        self._slots = threading.BoundedSemaphore(self.batches_at_once)
        self._lock = threading.Lock()
        self._encoding = 0  # batches being encoded now
        # The parts of a split batch beyond the first, which the caller's own thread encodes.
        self._helpers = ThreadPoolExecutor(max_workers=self.streams, thread_name_prefix='lane')

    def encode(self, texts: list[str], **options: Any) -> torch.Tensor:
        """`model.encode(texts, **options)` as one tensor, one row per text, in order (options: convert_to_tensor)."""
        with self._slots:
            with self._lock:
                self._encoding += 1
                alone = self._encoding == 1
            try:
                parts = self.streams if alone and len(texts) >= self.streams * MIN_TEXTS_PER_PART else 1
                if parts == 1:
                    return self.model.encode(texts, **options)
                size = -(-len(texts) // parts)
                chunks = [texts[start : start + size] for start in range(0, len(texts), size)]
                rest = [self._helpers.submit(self.model.encode, chunk, **options) for chunk in chunks[1:]]
                try:
                    first = self.model.encode(chunks[0], **options)
                finally:
                    wait(rest)  # no part outlives its slot, also when one fails
                return torch.cat([first, *(part.result() for part in rest)])
            finally:
                with self._lock:
                    self._encoding -= 1
