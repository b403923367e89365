"""Device, dtype and backend resolution (executor/devices.py), on hosts with 0, 1 and 2 GPUs.

The GPU count is the one thing simulated (torch.cuda's two queries, patched): these machines have no GPU, and what is
under test is the decision made from the count, not CUDA.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import devices
import pytest
import torch
from devices import StartupError, resolve_backend, resolve_device, resolve_dtype, runs_on
from helpers import compile_fake_libcuda

EXECUTOR = Path(__file__).resolve().parents[2] / 'executor'


@pytest.fixture
def gpus(monkeypatch):
    def with_count(count: int) -> None:
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: count > 0)
        monkeypatch.setattr(torch.cuda, 'device_count', lambda: count)
        monkeypatch.setattr(devices, 'compiled_archs', list)  # kernels for every GPU: no architecture check

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


@pytest.mark.parametrize(
    ('cuda_build', 'driver', 'reason'),
    [
        (None, None, 'this torch is a CPU-only build (the CPU image): run the GPU image, `make up-gpu`'),
        (
            '13.0',
            None,
            'torch is built for CUDA 13.0, but no NVIDIA driver is visible here (no libcuda.so.1): the container was '
            'not given a GPU. Install the NVIDIA driver and the NVIDIA Container Toolkit on the host and use '
            '`make up-gpu` (the GPU overlay reserves the GPU), or `docker run --gpus all`',
        ),
        (
            '13.0',
            (12, 2),
            "the host's NVIDIA driver runs CUDA up to 12.2, too old for this image's CUDA 13.0 (it needs a driver R580 "
            'or newer). Use the image sentence-encoder:gpu-cu12 instead (`make up-gpu` picks it from the driver; '
            'CUDA=12 with docker compose), or upgrade the driver to R580',
        ),
        (
            '12.8',
            (11, 4),
            "the host's NVIDIA driver runs CUDA up to 11.4, too old for this image's CUDA 12.8 and for every GPU image "
            'of this project: upgrade the driver to 525.60.13 (R525) or newer (sentence-encoder:gpu-cu12), or to R580 '
            '(sentence-encoder:gpu)',
        ),
        (
            '12.8',
            (12, 2),
            "the host's NVIDIA driver (CUDA 12.2) runs this image's CUDA 12.8, yet torch finds no GPU: check "
            '`nvidia-smi` inside the container and NVIDIA_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES',
        ),
    ],
)
def test_a_gpu_asked_for_where_none_exists_says_why_and_names_the_fix(gpus, monkeypatch, cuda_build, driver, reason):
    gpus(0)
    monkeypatch.setattr(torch.version, 'cuda', cuda_build)
    monkeypatch.setattr(devices, 'driver_cuda_version', lambda: driver)
    for requested in ('cuda', 'cuda:0'):
        with pytest.raises(StartupError) as refused:
            resolve_device(requested)
        assert str(refused.value) == (
            f"device='{requested}' was asked for but torch {torch.__version__} sees no CUDA GPU: {reason}. "
            "Or use device='cpu' (ENCODER_DEVICE=cpu)."
        )


@pytest.fixture(scope='module')
def fake_libcuda(tmp_path_factory) -> Path:
    return compile_fake_libcuda(tmp_path_factory.mktemp('driver'))


@pytest.mark.parametrize(
    ('reported', 'read'), [('12020', (12, 2)), ('13000', (13, 0)), ('11080', (11, 8)), ('0', None)]
)
def test_the_driver_cuda_version_is_read_from_the_driver_library(fake_libcuda, reported, read):
    """driver_cuda_version() loads libcuda.so.1 as found on the library path (a stand-in here), in a fresh process."""
    probe = 'import json, devices; print(json.dumps(devices.driver_cuda_version()))'
    environment = {**os.environ, 'LD_LIBRARY_PATH': str(fake_libcuda), 'FAKE_CUDA': reported,
                   'PYTHONPATH': str(EXECUTOR)}  # fmt: skip
    done = subprocess.run([sys.executable, '-c', probe], env=environment, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == (list(read) if read else None)


def test_no_driver_library_reads_as_none(monkeypatch):
    def no_library(name):
        raise OSError(f'{name}: cannot open shared object file: No such file or directory')

    monkeypatch.setattr(devices.ctypes, 'CDLL', no_library)  # as in a container not given a GPU
    assert devices.driver_cuda_version() is None


CUDA13_ARCHS = ['sm_75', 'sm_80', 'sm_86', 'sm_90', 'sm_100', 'sm_120', 'compute_120']


@pytest.mark.parametrize(
    ('capability', 'runs'),
    [((7, 5), True), ((8, 9), True), ((9, 0), True), ((12, 1), True), ((13, 0), True), ((7, 0), False),
     ((6, 1), False), ((11, 0), False)],
)  # fmt: skip
def test_kernels_for_a_gpu_are_same_major_machine_code_or_older_ptx(capability, runs):
    assert runs_on(capability, CUDA13_ARCHS) is runs


@pytest.fixture
def cuda13_torch_with(gpus, monkeypatch):
    """Two GPUs of the given (capability, name), seen by a CUDA 13 torch with CUDA 13's kernels."""

    def with_gpus(*found: tuple[tuple[int, int], str]) -> None:
        gpus(len(found))
        monkeypatch.setattr(torch.version, 'cuda', '13.0')
        monkeypatch.setattr(devices, 'compiled_archs', lambda: CUDA13_ARCHS)
        monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda index: found[index][0])
        monkeypatch.setattr(torch.cuda, 'get_device_name', lambda index: found[index][1])

    return with_gpus


def test_auto_on_a_gpu_older_than_this_torch_stops_the_start_too(cuda13_torch_with):
    cuda13_torch_with(((7, 0), 'Tesla V100-SXM2-16GB'))
    with pytest.raises(StartupError, match=r'^cuda:0 \(Tesla V100-SXM2-16GB, compute capability 7.0\) is older'):
        resolve_device('auto')


def test_a_gpu_older_than_both_images_is_told_the_cpu(cuda13_torch_with):
    cuda13_torch_with(((6, 1), 'Tesla P4'))
    with pytest.raises(StartupError) as refused:
        resolve_device('cuda')
    assert str(refused.value).endswith(f'has kernels for ({", ".join(CUDA13_ARCHS)}). Use device=cpu.')


def test_a_gpu_older_than_this_torch_stops_the_start_naming_the_cuda_12_image(cuda13_torch_with):
    cuda13_torch_with(((8, 0), 'A100'), ((7, 0), 'Tesla V100-SXM2-16GB'))
    assert resolve_device('cuda:0') == 'cuda:0'
    with pytest.raises(StartupError) as refused:
        resolve_device('cuda:1')
    assert str(refused.value) == (
        f'cuda:1 (Tesla V100-SXM2-16GB, compute capability 7.0) is older than every GPU this torch {torch.__version__} '
        f'(CUDA 13.0) has kernels for ({", ".join(CUDA13_ARCHS)}). Use the image sentence-encoder:gpu-cu12 (CUDA=12) '
        'instead, or device=cpu.'
    )


def test_auto_falling_back_to_the_cpu_in_a_gpu_image_says_why(gpus, monkeypatch):
    gpus(0)
    monkeypatch.setattr(torch.version, 'cuda', '13.0')
    monkeypatch.setattr(devices, 'driver_cuda_version', lambda: (12, 2))
    assert resolve_device('auto') == 'cpu'
    assert devices.cpu_fallback_warning('auto', 'cpu') == (
        "device='auto' runs on the CPU, though this torch is built for CUDA 13.0: "
        + devices.why_no_gpu('13.0', (12, 2))
    )
    assert devices.cpu_fallback_warning('cpu', 'cpu') is None  # asked for
    assert devices.cpu_fallback_warning('auto', 'cuda') is None
    monkeypatch.setattr(torch.version, 'cuda', None)
    assert devices.cpu_fallback_warning('auto', 'cpu') is None  # a CPU torch: the CPU is all there is


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
    assert resolve_backend(requested, device, has_openvino=True) == resolved


@pytest.mark.parametrize('device', ['cpu', 'cuda'])
def test_auto_is_torch_where_openvino_is_left_out(device):
    """The GPU images have no OpenVINO: `auto` there is torch on the CPU too (`device=cpu` in a GPU image)."""
    assert resolve_backend('auto', device, has_openvino=False) == 'torch'


def test_openvino_asked_for_in_an_image_without_it_names_the_cpu_image():
    with pytest.raises(StartupError) as refused:
        resolve_backend('openvino', 'cpu', has_openvino=False)
    assert str(refused.value) == (
        "backend='openvino' is not in this image (the GPU images leave OpenVINO out: it has no NVIDIA GPU support). "
        "Use backend='torch' (ENCODER_BACKEND=torch), or the CPU image sentence-encoder:cpu (`make up`)."
    )


def test_this_environment_has_openvino():
    assert devices.openvino_installed()  # the dev environment: the unit tier's OpenVINO tests need it


def test_openvino_on_cuda_is_refused_with_the_alternatives():
    with pytest.raises(StartupError) as refused:
        resolve_backend('openvino', 'cuda:0', has_openvino=True)
    assert str(refused.value) == (
        "backend='openvino' runs on the CPU only (OpenVINO has no NVIDIA GPU support), and device resolved to "
        "'cuda:0'. Use backend='torch' (or 'auto') with a CUDA device, or device='cpu' for OpenVINO."
    )


def test_an_unknown_backend_is_refused_with_the_choices():
    with pytest.raises(StartupError) as refused:
        resolve_backend('onnx', 'cpu')
    assert str(refused.value) == "backend='onnx' is not one of auto, torch, openvino."
