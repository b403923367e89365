"""Device, dtype and backend resolution (executor/devices.py), on hosts with 0, 1 and 2 GPUs.

The GPU count is the one thing simulated (torch.cuda's two queries, patched): these machines have no GPU, and what is
under test is the decision made from the count, not CUDA.
"""

from __future__ import annotations

import pytest
import torch
from devices import StartupError, resolve_backend, resolve_device, resolve_dtype


@pytest.fixture
def gpus(monkeypatch):
    def with_count(count: int) -> None:
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: count > 0)
        monkeypatch.setattr(torch.cuda, 'device_count', lambda: count)

    return with_count


@pytest.mark.parametrize(
    ('count', 'requested', 'resolved'),
    [
        (0, 'auto', 'cpu'),
        (0, '', 'cpu'),
        (0, None, 'cpu'),
        (1, 'auto', 'cuda'),
        (1, ' AUTO ', 'cuda'),
        (0, 'cpu', 'cpu'),
        (2, 'CPU', 'cpu'),
        (1, 'cuda', 'cuda'),
        (1, 'cuda:0', 'cuda:0'),
        (2, 'cuda:1', 'cuda:1'),
        (2, 'Cuda:1', 'cuda:1'),
    ],
)
def test_a_device_that_exists_resolves(gpus, count, requested, resolved):
    gpus(count)
    assert resolve_device(requested) == resolved


@pytest.mark.parametrize(('cuda_build', 'shown'), [(None, 'none, this is a CPU-only torch'), ('13.0', '13.0')])
def test_a_gpu_asked_for_where_none_exists_names_the_fix(gpus, monkeypatch, cuda_build, shown):
    gpus(0)
    monkeypatch.setattr(torch.version, 'cuda', cuda_build)
    for requested in ('cuda', 'cuda:0'):
        with pytest.raises(StartupError) as refused:
            resolve_device(requested)
        assert str(refused.value) == (
            f"device='{requested}' was asked for but torch {torch.__version__} sees no CUDA GPU (CUDA build: {shown}). "
            "Use device='cpu' or 'auto', or run on a host with an NVIDIA GPU and driver "
            '(with Docker: nvidia-container-toolkit and `make up-gpu`).'
        )


@pytest.mark.parametrize('requested', ['cuda:2', 'cuda:9', 'cuda:x', 'cuda:-1'])
def test_a_gpu_index_past_the_last_is_refused_with_the_range(gpus, requested):
    gpus(2)
    with pytest.raises(StartupError) as refused:
        resolve_device(requested)
    assert str(refused.value) == (
        f"device='{requested}' does not exist: torch sees 2 CUDA GPU(s), cuda:0 to cuda:1. "
        "Use one of those, or 'cuda' for the first."
    )


@pytest.mark.parametrize('requested', ['gpu', 'mps', 'cudax', 'tpu'])
def test_an_unknown_device_is_refused_with_the_choices(gpus, requested):
    gpus(1)
    with pytest.raises(StartupError, match=rf"device='{requested}' is not one of 'auto', 'cpu', 'cuda', 'cuda:N'"):
        resolve_device(requested)


def test_dtypes_resolve_to_torch_types():
    assert resolve_dtype('float32', 'cpu') is torch.float32
    assert resolve_dtype('float32', 'cuda') is torch.float32
    assert resolve_dtype('float16', 'cuda') is torch.float16
    assert resolve_dtype('bfloat16', 'cuda:1') is torch.bfloat16


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_half_precision_on_the_cpu_is_refused(dtype):
    with pytest.raises(StartupError) as refused:
        resolve_dtype(dtype, 'cpu')
    assert str(refused.value) == (
        f"dtype='{dtype}' needs a CUDA device (device resolved to 'cpu'); use dtype='float32'."
    )


def test_an_unknown_dtype_is_refused_with_the_choices():
    with pytest.raises(StartupError) as refused:
        resolve_dtype('int8', 'cuda')
    assert str(refused.value) == "dtype='int8' is not one of float32, float16, bfloat16."


@pytest.mark.parametrize(
    ('requested', 'device', 'resolved'),
    [
        ('auto', 'cpu', 'openvino'),
        (None, 'cpu', 'openvino'),
        (' Auto ', 'cpu', 'openvino'),
        ('auto', 'cuda', 'torch'),
        ('auto', 'cuda:1', 'torch'),
        ('torch', 'cpu', 'torch'),
        ('TORCH', 'cuda', 'torch'),
        ('openvino', 'cpu', 'openvino'),
    ],
)
def test_backends_resolve(requested, device, resolved):
    assert resolve_backend(requested, device) == resolved


def test_openvino_on_cuda_is_refused_with_the_alternatives():
    with pytest.raises(StartupError) as refused:
        resolve_backend('openvino', 'cuda:0')
    assert str(refused.value) == (
        "backend='openvino' runs on the CPU only (OpenVINO has no NVIDIA GPU support), and device resolved to "
        "'cuda:0'. Use backend='torch' (or 'auto') with a CUDA device, or device='cpu' for OpenVINO."
    )


def test_an_unknown_backend_is_refused_with_the_choices():
    with pytest.raises(StartupError) as refused:
        resolve_backend('onnx', 'cpu')
    assert str(refused.value) == "backend='onnx' is not one of auto, torch, openvino."
